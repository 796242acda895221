"""`Authorization: Bearer <key>` authentication with the users' hashed API keys."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any, cast

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework_api_key.permissions import KeyParser

from . import policy
from .models import APIKey

LAST_USED_PRECISION = timedelta(seconds=60)
KEY_RECHECK_SECONDS = 30.0


class BearerKeyParser(KeyParser):
    keyword = "Bearer"


class APIKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates the key's owner; a revoked, expired or unknown key is refused."""

    key_parser = BearerKeyParser()
    model = APIKey

    def authenticate(self, request: Any) -> tuple[Any, APIKey] | None:
        key = self.key_parser.get(request)
        if not key:
            return None
        if "." not in key:
            # Not one of ours (a session or another scheme may still apply).
            raise exceptions.AuthenticationFailed("Incorrect API key provided.")
        key = key.strip()
        # A known key is kept with the quotas (dropped with them when a key or a user is
        # saved, and read again after KEY_RECHECK_SECONDS in case of a change Django did
        # not signal): a call on it costs no query and no hashing.
        digest = hashlib.sha256(key.encode()).hexdigest()
        api_key: APIKey = policy.cache.get(
            ("api-key", digest), lambda: self._lookup(key), max_age=KEY_RECHECK_SECONDS
        )
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        if not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("This API key's user is inactive.")
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_PRECISION:
            policy.needs_io()
            self.model.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key.last_used_at = now
        return api_key.user, api_key

    def _lookup(self, key: str) -> APIKey:
        try:
            # The library's manager is typed with its abstract model.
            found = cast(APIKey, self.model.objects.get_from_key(key))
        except self.model.DoesNotExist:
            raise exceptions.AuthenticationFailed("Incorrect API key provided.") from None
        return found

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


def request_key(request: Any) -> APIKey | None:
    """The API key a request authenticated with, if any (its own limits apply to the call)."""
    key = getattr(request, "auth", None)
    return key if isinstance(key, APIKey) else None
