"""The quota engine on `redis.asyncio`: the same scripts, keys and decisions, awaited."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from . import store
from .engine import (
    DEFAULT_LEASE_SECONDS,
    EngineLayout,
    Seeder,
    _lua,
    unavailable_on_error,
)
from .limits import Decision, Level, Policy, Reservation, Usage, Window

MAX_CONNECTIONS = 100
POOL_WAIT_SECONDS = 10.0


def connect_async(url: str | None) -> Any:
    """A `redis.asyncio` client for `url` (schemes as `connect`); no URL: the embedded store."""
    if not url:
        return store.embedded_async()
    scheme, _, rest = url.partition("://")
    options = store.timeouts(url)
    if scheme in ("redis+cluster", "rediss+cluster"):
        return RedisCluster.from_url(f"{scheme.split('+', 1)[0]}://{rest}", **options)
    # Requests beyond the pool's connections wait for one instead of failing at once: a
    # thousand concurrent streams share them. (A Redis that is down fails at connect.)
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS, **options
    )
    return redis.asyncio.Redis(connection_pool=pool)


class AsyncQuotaEngine(EngineLayout):
    """`QuotaEngine`'s reserve, settle and refund for event loops (one client per loop).

    A seeder reads the ledger: it runs in a worker thread, only when a window is missing.
    """

    def __init__(self, client: Any, prefix: str = "quotas") -> None:
        self.client = client
        self.prefix = prefix
        self._reserve = client.register_script(_lua("reserve.lua"))
        self._settle = client.register_script(_lua("settle.lua"))
        self._seed = client.register_script(_lua("seed.lua"))
        self._initialized = not isinstance(client, RedisCluster)
        self._initializing = asyncio.Lock()

    async def _ready(self) -> None:
        """Learn a cluster's slots before the first commands: commands racing the
        client's own first discovery can fail on half-made connections."""
        if self._initialized:
            return
        async with self._initializing:
            if not self._initialized:
                with unavailable_on_error():
                    await self.client.initialize()
                self._initialized = True

    async def reserve(
        self,
        subject: str,
        policy: Policy,
        *,
        requests: int = 1,
        tokens: int = 0,
        spend: int = 0,
        lease: bool = False,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        now: float | None = None,
        seeder: Seeder | None = None,
        watch: tuple[str, ...] = (),
        levels: tuple[Level, ...] = (),
    ) -> Decision:
        """As `QuotaEngine.reserve`."""
        await self._ready()
        member = self._member(lease, requests, tokens, spend)
        watched = tuple(self.key(other, "hold") for other in watch) if watch else ()
        ask = self._first(
            subject, policy, "charge", member, requests, tokens, spend, lease_seconds, now, levels
        )
        reply: Any = await self._call_reserve(ask.keys, ask.args, watched)
        if reply[0][0] >= 0:  # decided: nothing to seed
            return ask.decision(reply[0], reply[1], ask.day, ask.month)
        steps = self._steps(ask, reply)
        reply = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if step[0] == "reserve":
                reply = await self._call_reserve(step[1], step[2], watched)
            else:
                _, each, window, now_us = step
                if seeder is None:
                    usage = Usage()
                else:
                    usage = await asyncio.to_thread(seeder, each, window)
                await self.seed(each, window, usage, now_us=now_us)
                reply = None

    async def _call_reserve(
        self, keys: list[str], args: list[Any], watched: tuple[str, ...]
    ) -> tuple[list[int], int | None]:
        with unavailable_on_error():
            if not watched:
                return await self._reserve(keys=keys, args=args), 0
            if not isinstance(self.client, redis.asyncio.Redis):  # a cluster: after it
                reply = await self._reserve(keys=keys, args=args)
                return reply, await self._holds(watched)
            script = self._reserve
            for _attempt in range(2):
                pipe = self.client.pipeline(transaction=False)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                for key in watched:
                    pipe.pttl(key)
                reply, *ttls = await pipe.execute(raise_on_error=False)
                if isinstance(reply, redis.exceptions.NoScriptError):
                    script.sha = await self.client.script_load(script.script)
                    continue
                if isinstance(reply, Exception):
                    raise reply
                if any(isinstance(ttl, Exception) for ttl in ttls):
                    return reply, None
                return reply, max(ttls)
        raise redis.exceptions.NoScriptError("reserve.lua could not be loaded")

    async def _holds(self, watched: tuple[str, ...]) -> int | None:
        try:
            return max([int(await self.client.pttl(key)) for key in watched])
        except redis.RedisError:
            return None

    async def seed(
        self, subject: str, window: Window, usage: Usage, now_us: int | None = None
    ) -> bool:
        keys, args = self._seed_call(subject, window, usage, now_us)
        await self._ready()
        with unavailable_on_error():
            return bool(await self._seed(keys=keys, args=args))

    async def settle(
        self,
        reservation: Reservation,
        *,
        tokens: int,
        spend: int,
        requests: int | None = None,
    ) -> bool:
        """As `QuotaEngine.settle`."""
        keys, args = self._settle_call(reservation, tokens, spend, requests)
        await self._ready()
        with unavailable_on_error():
            return bool(await self._settle(keys=keys, args=args))

    async def refund(self, reservation: Reservation) -> bool:
        return await self.settle(reservation, tokens=0, spend=0, requests=0)

    async def close(self) -> None:
        await self.client.aclose()
