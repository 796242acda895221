"""The deployment project's own page: where to go from `/`."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    base_url = f"{request.scheme}://{request.get_host()}"
    return render(request, "quotaproject/home.html", {"base_url": base_url})
