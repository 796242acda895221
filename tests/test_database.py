"""ORM calls from async code: on sync_to_async, or in the shared threads of the ASGI views."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from quotas import policy
from quotas.database import THREADS, in_orm_thread, use_orm_threads, without_io_if_cached
from quotas.models import Tier
from tests.event_loop import run_in_fresh_loop


def where() -> tuple[str, bool]:
    """The thread's name, and whether it has a database connection open after a query."""
    Tier.objects.count()
    return threading.current_thread().name, connection.connection is not None


@pytest.mark.django_db(transaction=True)
def test_a_request_using_the_threads_runs_there_and_leaves_no_connection_open():
    async def run():
        use_orm_threads()
        seen = []
        for _ in range(10):  # one after the other: the threads that queried are reused
            seen.append(await in_orm_thread(lambda: connection.connection is not None)())
            seen.append(await in_orm_thread(where)())
        return seen

    seen = run_in_fresh_loop(run())
    assert all(name.startswith("quotas-orm") and opened for name, opened in seen[1::2])
    assert not any(seen[0::2]), "a connection was left open after a call"


@pytest.mark.django_db(transaction=True)
def test_elsewhere_the_calls_stay_on_sync_to_async():
    async def run():
        return await in_orm_thread(where)()

    name, _ = run_in_fresh_loop(run())
    assert not name.startswith("quotas-orm")


@pytest.mark.django_db(transaction=True)
def test_many_concurrent_calls_share_a_few_threads():
    import asyncio

    async def run():
        use_orm_threads()
        names = await asyncio.gather(*(in_orm_thread(where)() for _ in range(50)))
        return {name for name, _ in names}

    assert len(run_in_fresh_loop(run())) <= THREADS


def catalogue_size() -> tuple[int, str]:
    return len(policy.model_catalogue()), threading.current_thread().name


@pytest.mark.django_db(transaction=True)
def test_a_lookup_the_cache_answers_runs_on_the_event_loop():
    policy.cache.clear()

    async def run():
        use_orm_threads()
        cold = await without_io_if_cached(catalogue_size)
        warm = await without_io_if_cached(catalogue_size)
        return cold, warm, threading.current_thread().name

    (_, cold), (_, warm), loop = run_in_fresh_loop(run())
    assert cold.startswith("quotas-orm")  # the first one queried, in a pool thread
    assert warm == loop


@pytest.mark.django_db(transaction=True)
def test_a_query_outside_the_cache_goes_to_a_thread(monkeypatch):
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)  # as a server runs

    async def run():
        use_orm_threads()
        return await without_io_if_cached(where)

    name, _ = run_in_fresh_loop(run())
    assert name.startswith("quotas-orm")
