from __future__ import annotations

import logging
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse
from django.test import AsyncRequestFactory, RequestFactory

from quotaproject.static_files import StaticFilesMiddleware
from tests.event_loop import run_in_fresh_loop

CSS = "/static/admin/css/base.css"


@pytest.fixture(autouse=True)
def finders(settings: Any) -> None:
    settings.WHITENOISE_USE_FINDERS = True  # the suite runs no collectstatic


def test_under_asgi_it_serves_static_files_and_passes_the_rest_on() -> None:
    async def view(request: object) -> HttpResponse:
        return HttpResponse("the view")

    middleware = StaticFilesMiddleware(view)
    factory = AsyncRequestFactory()

    assert iscoroutinefunction(middleware)
    static = run_in_fresh_loop(middleware(factory.get(CSS)))
    other = run_in_fresh_loop(middleware(factory.get("/v1/models")))
    assert static.status_code == 200
    assert static["Content-Type"].startswith("text/css")
    assert other.content == b"the view"


def test_under_wsgi_it_is_whitenoise() -> None:
    middleware = StaticFilesMiddleware(lambda request: HttpResponse("the view"))
    factory = RequestFactory()

    assert not iscoroutinefunction(middleware)
    assert middleware(factory.get(CSS))["Content-Type"].startswith("text/css")
    assert middleware(factory.get("/v1/models")).content == b"the view"


def test_under_asgi_no_middleware_of_the_project_needs_a_thread(
    caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.DEBUG = True  # Django logs each adapted middleware then
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        ASGIHandler()

    adapted = [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()]
    assert adapted == []
