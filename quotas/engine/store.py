"""Connecting to the counters' Redis: a URL, a cluster URL, or an in-process store."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import redis
from redis.exceptions import RedisClusterException

from .engine import CountersUnavailable

_embedded_server: Any = None

DEFAULT_TIMEOUT = 1.0


class ClusterUnreachable(CountersUnavailable, RedisClusterException):
    """No cluster node answered: unlike `redis.Redis`, a cluster client connects at once."""


def connect(url: str | None) -> Any:
    """A redis-py client for `url`.

    `redis://` and `rediss://` give `redis.Redis`; `redis+cluster://` and
    `rediss+cluster://` give `redis.cluster.RedisCluster`; no URL gives the embedded
    in-process store (fakeredis), which is shared by the threads of one process only.
    """
    if not url:
        return embedded()
    scheme, _, rest = url.partition("://")
    options = timeouts(url)
    if scheme in ("redis+cluster", "rediss+cluster"):
        from redis.cluster import RedisCluster

        plain = scheme.split("+", 1)[0]
        try:
            return RedisCluster.from_url(f"{plain}://{rest}", **options)
        except (RedisClusterException, redis.ConnectionError, redis.TimeoutError) as exc:
            # redis-py 7 (which the bench extra installs) leaves this __init__ unannotated.
            raise ClusterUnreachable(str(exc)) from exc  # type: ignore[no-untyped-call, unused-ignore]
    if scheme in ("redis", "rediss", "unix"):
        return redis.Redis.from_url(url, **options)
    raise ValueError(
        f"Unsupported Redis URL scheme {scheme!r}: use redis://, rediss://, unix://, "
        "redis+cluster:// or rediss+cluster://."
    )


def timeouts(url: str) -> dict[str, Any]:
    """Socket timeouts of DEFAULT_TIMEOUT seconds, unless the URL's query sets its own."""
    params = dict(parse_qsl(urlsplit(url).query))
    return {
        name: DEFAULT_TIMEOUT
        for name in ("socket_timeout", "socket_connect_timeout")
        if name not in params
    }


def embedded() -> Any:
    """A client of this process's in-memory Redis-compatible store."""
    fakeredis = _fakeredis()
    return fakeredis.FakeRedis(server=_embedded_server)


def embedded_async() -> Any:
    """A `redis.asyncio` client of the same in-memory store."""
    fakeredis = _fakeredis()
    return fakeredis.FakeAsyncRedis(server=_embedded_server)


def _fakeredis() -> Any:
    """The fakeredis module, with this process's one server created."""
    global _embedded_server
    try:
        import fakeredis
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RuntimeError(
            "No Redis URL is configured and the embedded store is not installed: "
            "set REDIS_URL or install django-ai-quotas[embedded]."
        ) from exc
    if _embedded_server is None:
        _embedded_server = fakeredis.FakeServer()
    return fakeredis
