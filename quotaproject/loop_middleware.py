"""Django's own middleware, with their hooks run on the event loop under ASGI.

Django runs a sync middleware's hooks for an async request each in a thread of that request
(`sync_to_async`): the project's seven would cost every ASGI request fourteen thread
switches and a thread of its own before its view starts. These classes are Django's, with
the hooks that do no I/O (headers, cookies, lazy objects) called inline under ASGI; under
WSGI they are Django's classes unchanged. A hook that would reach the database (saving a
changed session, messages stored in the session, a CSRF token kept in the session) still
runs in the request's thread, as Django runs it.

`asgi.py` swaps them in for Django's (`on_event_loop(settings.MIDDLEWARE)`), so the
settings keep naming Django's classes, which `check --deploy` looks for by name.

Written here because Django ships these only as sync middleware; each class is its Django
parent plus `InlineHooks`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.middleware import clickjacking, common, csrf, security


class InlineHooks:
    """`process_request`, `process_view` and `process_response` called on the event loop
    when the request is async; `needs_thread` says when one of them must not be."""

    async_mode: bool
    get_response: Callable[[HttpRequest], Any]

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)  # type: ignore[call-arg]
        view_hook = getattr(self, "process_view", None)
        if self.async_mode and view_hook is not None:
            # Django adapts a sync `process_view` to a thread switch; a coroutine it awaits.
            async def process_view(request: HttpRequest, *args: Any) -> Any:
                if self.needs_thread(request):
                    return await sync_to_async(view_hook)(request, *args)
                return view_hook(request, *args)

            self.process_view = process_view

    def needs_thread(self, request: HttpRequest, response: Any = None) -> bool:
        return False

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        process_request = getattr(self, "process_request", None)
        if process_request is not None:
            if self.needs_thread(request):
                response = await sync_to_async(process_request)(request)
            else:
                response = process_request(request)
        response = response or await self.get_response(request)
        process_response = getattr(self, "process_response", None)
        if process_response is not None:
            if self.needs_thread(request, response):
                response = await sync_to_async(process_response)(request, response)
            else:
                response = process_response(request, response)
        return response  # type: ignore[no-any-return]


class SecurityMiddleware(InlineHooks, security.SecurityMiddleware):
    pass


class CommonMiddleware(InlineHooks, common.CommonMiddleware):
    pass


class XFrameOptionsMiddleware(InlineHooks, clickjacking.XFrameOptionsMiddleware):
    pass


class AuthenticationMiddleware(InlineHooks, auth.AuthenticationMiddleware):
    """Sets the lazy `request.user` and `request.auser`; reading them is the view's I/O."""


class SessionMiddleware(InlineHooks, sessions.SessionMiddleware):
    """Opens the session lazily; saves a changed one (or every one, with
    SESSION_SAVE_EVERY_REQUEST) in the request's thread."""

    def needs_thread(self, request: HttpRequest, response: Any = None) -> bool:
        if response is None:
            return False
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class MessageMiddleware(InlineHooks, messages.MessageMiddleware):
    """Stores messages added or read (which may write the session) in the request's thread."""

    def needs_thread(self, request: HttpRequest, response: Any = None) -> bool:
        if response is None:
            return False
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class CsrfViewMiddleware(InlineHooks, csrf.CsrfViewMiddleware):
    """With CSRF_USE_SESSIONS the token lives in the session: Django's thread switches."""

    def needs_thread(self, request: HttpRequest, response: Any = None) -> bool:
        return bool(settings.CSRF_USE_SESSIONS)


# Django's dotted name -> this module's class of the same name (its last base is Django's).
REPLACING = {
    f"{own.__bases__[-1].__module__}.{own.__name__}": f"{__name__}.{own.__name__}"
    for own in (
        SecurityMiddleware,
        CommonMiddleware,
        XFrameOptionsMiddleware,
        AuthenticationMiddleware,
        SessionMiddleware,
        MessageMiddleware,
        CsrfViewMiddleware,
    )
}


def on_event_loop(middleware: list[str]) -> list[str]:
    """`MIDDLEWARE` with Django's classes replaced by these (the others unchanged)."""
    return [REPLACING.get(name, name) for name in middleware]
