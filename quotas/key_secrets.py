"""A new API key's secret, shown once on a page of its own and never put in a cookie.

The secret waits in the staff member's server-side session between the add form and
that page, which takes it out as it shows it.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

SESSION_KEY = "quotas_new_api_keys"
GONE = "This key's secret was shown once already; only its hash is stored. Revoke the key "
GONE += "and create another if it was lost."


def keep(request: HttpRequest, key_id: str, secret: str) -> None:
    waiting = dict(request.session.get(SESSION_KEY, {}))
    waiting[str(key_id)] = secret
    request.session[SESSION_KEY] = waiting


def take(request: HttpRequest, key_id: str) -> str | None:
    waiting = dict(request.session.get(SESSION_KEY, {}))
    secret: str | None = waiting.pop(str(key_id), None)
    if secret is not None:
        request.session[SESSION_KEY] = waiting
    return secret


def secret_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    key = model_admin.get_object(request, object_id)
    if key is None or not model_admin.has_view_permission(request, key):
        return HttpResponseRedirect(reverse("admin:quotas_apikey_changelist"))
    secret = take(request, key.pk)
    if secret is None:
        messages.warning(request, GONE)
        return HttpResponseRedirect(reverse("admin:quotas_apikey_change", args=[key.pk]))
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Your new API key",
        "opts": model_admin.model._meta,
        "original": key,
        "secret": secret,
    }
    response = TemplateResponse(request, "admin/quotas/apikey/secret.html", context)
    response["Cache-Control"] = "no-store"
    return response
