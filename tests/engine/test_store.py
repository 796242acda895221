from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from quotas.engine import Limit, Policy, QuotaEngine, connect, embedded
from quotas.engine.store import DEFAULT_TIMEOUT


@pytest.fixture
def embedded_engine():
    engine = QuotaEngine(connect(None), prefix="store-test")
    yield engine
    for key in engine.client.scan_iter(match="store-test:*"):
        engine.client.delete(key)


@pytest.mark.parametrize("url", [None, ""])
def test_no_url_gives_the_embedded_store(url):
    client = connect(url)
    assert "fakeredis" in type(client).__module__
    assert client.ping()


def test_the_embedded_store_is_shared_within_the_process(embedded_engine):
    embedded_engine.client.set("store-test:shared", "1")
    assert embedded().get("store-test:shared") == b"1"


def test_the_engine_runs_on_the_embedded_store(embedded_engine):
    policy = Policy((Limit("rpm", "rr", 60, burst=2), Limit("tokens per day", "dt", 100)))
    now = 1_718_186_400.0
    first = embedded_engine.reserve("u", policy, tokens=60, lease=True, now=now)
    assert first.allowed
    assert not embedded_engine.reserve("u", policy, tokens=60, now=now).allowed
    assert embedded_engine.settle(first.reservation, tokens=20, spend=0)
    assert embedded_engine.reserve("u", policy, tokens=60, now=now).allowed
    denied = embedded_engine.reserve("u", policy, now=now)
    assert denied.denied_by == "rpm"
    assert denied.retry_after == 1.0
    assert embedded_engine.peek("u", policy, now=now).state("dt").used == 80


def test_redis_url_gives_a_client_with_short_timeouts():
    client = connect("redis://db.example:6380/3")
    assert isinstance(client, redis.Redis)
    options = client.connection_pool.connection_kwargs
    assert (options["host"], options["port"], options["db"]) == ("db.example", 6380, 3)
    assert options["socket_timeout"] == DEFAULT_TIMEOUT
    assert options["socket_connect_timeout"] == DEFAULT_TIMEOUT


def test_timeouts_in_the_url_win():
    client = connect("redis://localhost/0?socket_timeout=5&socket_connect_timeout=2")
    options = client.connection_pool.connection_kwargs
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (5.0, 2.0)


def test_rediss_and_unix_urls():
    tls = connect("rediss://:secret@cache.example:6379/0")
    assert isinstance(tls, redis.Redis)
    assert tls.connection_pool.connection_class is redis.SSLConnection
    sock = connect("unix:///run/redis.sock?db=2")
    assert sock.connection_pool.connection_class is redis.UnixDomainSocketConnection
    assert sock.connection_pool.connection_kwargs["path"] == "/run/redis.sock"


@pytest.mark.parametrize(
    ("url", "plain"),
    [
        ("redis+cluster://node1.example:7000/0", "redis://node1.example:7000/0"),
        ("rediss+cluster://:pw@node1.example:7000", "rediss://:pw@node1.example:7000"),
    ],
)
def test_cluster_url_gives_a_cluster_client(monkeypatch, url, plain):
    calls = []

    def from_url(cls, url, **options):
        calls.append((url, options))
        return cls.__new__(cls)

    monkeypatch.setattr(RedisCluster, "from_url", classmethod(from_url))
    assert isinstance(connect(url), RedisCluster)
    assert calls == [
        (plain, {"socket_timeout": DEFAULT_TIMEOUT, "socket_connect_timeout": DEFAULT_TIMEOUT})
    ]


def test_cluster_url_really_asks_for_a_cluster():
    # Nothing listens on port 1: the cluster client fails while discovering its nodes.
    with pytest.raises(RedisClusterException, match="Redis Cluster cannot be connected"):
        connect("redis+cluster://127.0.0.1:1")


@pytest.mark.parametrize("url", ["http://localhost:6379", "memcached://localhost", "localhost"])
def test_unsupported_scheme(url):
    with pytest.raises(ValueError, match=r"Unsupported Redis URL scheme .*redis\+cluster://"):
        connect(url)
