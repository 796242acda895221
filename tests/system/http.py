"""A minimal HTTP client for the system tests (stdlib only, one connection per call)."""

from __future__ import annotations

import http.client
import json as jsonlib
from typing import Any
from urllib.parse import urlsplit


def call(
    url: str,
    *,
    json_body: Any = None,
    json: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET, or a POST when a JSON body is given."""
    payload = json if json is not None else json_body
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        body = None if payload is None else _dumps(payload)
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Type"] = "application/json"
        conn.request("GET" if body is None else "POST", parts.path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _dumps(payload: Any) -> bytes:
    return jsonlib.dumps(payload).encode()
