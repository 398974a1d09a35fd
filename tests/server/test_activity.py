"""The activity log: records kept at once and written in batches, and ``GET /api/v1/activity``.

The owner is tested over a real database; the API through a real `llamactl
serve` whose database holds records before it starts (tests/activity_helpers.py).
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from llamactl.server.activity import ActivityLog
from llamactl.store import MAX_ACTIVITY_TEXT, ActivityRecord, Store
from tests.activity_helpers import activity_record, proxied_request, serve_with_activity
from tests.serve_process import Serve

DEADLINE = 10.0


async def eventually(condition: Callable[[], bool], what: str) -> None:
    ends = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > ends:
            raise AssertionError(f"no {what} within {DEADLINE} s")
        await asyncio.sleep(0.01)


def stored(store: Store) -> list[ActivityRecord]:
    return store.activity(None, None, 1000)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "llamactl.db")
    yield opened
    opened.close()


# --- the owner ---


def test_a_full_batch_is_written_at_once_and_the_rest_within_the_interval(store: Store) -> None:
    async def scenario() -> None:
        log = ActivityLog(store, retention=1000, flush_seconds=60, batch_size=10)
        log.open()
        for _ in range(9):
            log.record(proxied_request())
        await asyncio.sleep(0.2)
        assert stored(store) == []  # fewer than a batch, and the minute is not over
        log.record(proxied_request())
        await eventually(lambda: len(stored(store)) == 10, "batch of 10 written")
        await log.close()

        quick = ActivityLog(store, retention=1000, flush_seconds=0.05, batch_size=10)
        quick.open()
        quick.record(proxied_request("beta"))
        await eventually(lambda: len(stored(store)) == 11, "lone record written after the interval")
        await quick.close()

    asyncio.run(scenario())
    assert [record.id for record in stored(store)] == list(range(1, 12))


def test_close_writes_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    store = Store(path)

    async def scenario() -> None:
        log = ActivityLog(store, retention=1000, flush_seconds=60)
        log.open()
        for number in range(3):
            log.record(proxied_request(status=500 + number))
        await log.close()

    asyncio.run(scenario())
    store.close()
    reopened = Store(path)
    assert [record.status for record in stored(reopened)] == [500, 501, 502]
    reopened.close()


def test_the_records_not_yet_written_are_read_with_the_stored_ones(store: Store) -> None:
    earlier = [activity_record(store, "alpha" if number % 2 else "beta") for number in range(4)]
    store.insert_activity(earlier, keep=1000).result(timeout=10)

    async def scenario() -> None:
        log = ActivityLog(store, retention=1000, flush_seconds=60)
        log.open()
        for number in range(4):
            log.record(proxied_request("alpha" if number % 2 else "beta"))
        everything = await log.activity(None, None, 100)
        assert [record.id for record in everything] == list(range(1, 9))
        assert stored(store) == earlier  # the last four are still in the buffer
        assert [r.id for r in await log.activity(None, None, 3)] == [6, 7, 8]
        assert [r.id for r in await log.activity("alpha", None, 100)] == [2, 4, 6, 8]
        assert [r.id for r in await log.activity(None, 2, 3)] == [3, 4, 5]  # across the boundary
        assert [r.id for r in await log.activity("beta", 4, 100)] == [5, 7]
        assert await log.activity(None, 8, 100) == []
        assert await log.activity(None, None, 0) == []
        await log.close()
        assert await log.activity(None, None, 100) == everything  # the same, once written

    asyncio.run(scenario())


def test_reads_while_batches_are_written_see_every_record_once(store: Store) -> None:
    """A batch written while a read runs is in the store, the buffer the read took, or both: never neither."""

    async def scenario() -> None:
        log = ActivityLog(store, retention=100_000, flush_seconds=0.001, batch_size=3)
        log.open()
        for recorded in range(1, 301):
            log.record(proxied_request())
            ids = [record.id for record in await log.activity(None, None, 1000)]
            assert ids == list(range(1, recorded + 1))
        await log.close()

    asyncio.run(scenario())


def test_record_is_plain_and_costs_nothing_while_the_database_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "llamactl.db"
    store = Store(path)
    assert not inspect.iscoroutinefunction(ActivityLog.record)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # every write waits for this lock, off the event loop

    async def scenario() -> float:
        log = ActivityLog(store, retention=1000, flush_seconds=0.01, batch_size=100)
        log.open()
        began = time.monotonic()
        for number in range(2000):
            log.record(proxied_request())
            if number % 100 == 0:
                await asyncio.sleep(0)  # let the batches go to the writer, which waits for the lock
        took = time.monotonic() - began
        await log.close()
        return took

    took = asyncio.run(scenario())
    locker.execute("COMMIT")
    locker.close()
    store.close()
    assert took < 0.5, f"2000 records took {took:.3f} s with the database locked"
    reopened = Store(path)
    assert len(reopened.activity(None, None, 1000)) == 1000  # the retention is counted in rows
    reopened.close()


def test_the_log_keeps_the_last_retention_rows(store: Store) -> None:
    async def scenario() -> None:
        log = ActivityLog(store, retention=5, flush_seconds=60, batch_size=4)
        log.open()
        for _ in range(12):
            log.record(proxied_request())
        await log.close()

    asyncio.run(scenario())
    assert [record.id for record in stored(store)] == [8, 9, 10, 11, 12]


def test_a_long_model_and_endpoint_are_cut_to_the_limit(store: Store) -> None:
    async def scenario() -> ActivityRecord:
        log = ActivityLog(store, retention=5, flush_seconds=60)
        log.record(proxied_request(model="m" * 10_000, endpoint="/v1/" + "e" * 10_000))
        [record] = await log.activity(None, None, 1)
        return record

    record = asyncio.run(scenario())
    assert record.model == "m" * MAX_ACTIVITY_TEXT
    assert record.endpoint == ("/v1/" + "e" * 10_000)[:MAX_ACTIVITY_TEXT]


# --- GET /api/v1/activity through a real serve ---


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, list[ActivityRecord]]]:
    with serve_with_activity(
        tmp_path_factory.mktemp("serve"), ["alpha", "beta", "alpha", "gamma"]
    ) as running:
        yield running


def ids(serve: Serve, **params: str) -> list[int]:
    answer = serve.client.get("/api/v1/activity", params=params)
    assert answer.status_code == 200, answer.text
    return [record["id"] for record in answer.json()["activity"]]


def test_the_api_answers_the_records_with_every_field(served: tuple[Serve, list[ActivityRecord]]) -> None:
    serve, records = served
    answer = serve.client.get("/api/v1/activity")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert msgspec.convert(answer.json(), dict[str, list[ActivityRecord]]) == {"activity": records}


def test_the_api_filters_by_instance_since_and_limit(served: tuple[Serve, list[ActivityRecord]]) -> None:
    serve, records = served
    first, second, third, fourth = (record.id for record in records)
    assert ids(serve, limit="2") == [third, fourth]
    assert ids(serve, instance="alpha") == [first, third]
    assert ids(serve, since=str(first), limit="2") == [second, third]
    assert ids(serve, since=str(first), instance="alpha") == [third]
    assert ids(serve, since=str(fourth)) == []
    assert ids(serve, instance="") == [first, second, third, fourth]  # empty: no filter
    assert ids(serve, limit="0") == []
    assert ids(serve, instance="nobody") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "abc"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "1e3"}, "limit"),
        ({"limit": "²"}, "limit"),
        ({"since": "-1"}, "since"),
        ({"since": "9" * 5000}, "since"),
        ({"since": ""}, "since"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(
    served: tuple[Serve, list[ActivityRecord]], params: dict[str, str], field: str
) -> None:
    serve, _ = served
    answer = serve.client.get("/api/v1/activity", params=params)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert (body["error"], body["field"]) == ("invalid_parameter", field)
    assert body["details"].startswith(f"{field} must be a whole number from 0 to ")


def test_the_api_wants_a_management_key(served: tuple[Serve, list[ActivityRecord]]) -> None:
    serve, _ = served
    assert httpx.get(serve.base_url + "/api/v1/activity", timeout=DEADLINE).status_code == 401
