"""Activity records for the tests, and a `llamactl serve` whose database holds some before it starts.

Until the proxy records real requests, a serve's activity log is prepared
here: the records are written through the store into the data dir the serve
then opens, so the API and the CLI read them over real HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from llamactl.store import ActivityRecord, Store
from tests.serve_process import Serve, serve_process

START = 1_700_000_000.5


def proxied_request(instance: str = "alpha", **changes: Any) -> ActivityRecord:
    """A record as the proxy hands it to the log, without an id, with ``changes``."""
    fields: dict[str, Any] = {
        "time": START,
        "instance": instance,
        "model": instance,
        "key_name": "app",
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "status": 200,
        "queue_wait_seconds": 0.25,
        "ttft_seconds": 0.5,
        "duration_seconds": 1.5,
        "prompt_tokens": 12,
        "completion_tokens": 34,
        **changes,
    }
    return msgspec.convert(fields, ActivityRecord)


def activity_record(store: Store, instance: str = "alpha", **changes: Any) -> ActivityRecord:
    """A record of a request to ``instance``, its id given by ``store``."""
    return msgspec.structs.replace(proxied_request(instance, **changes), id=store.allocate_activity_id())


@contextmanager
def serve_with_activity(workdir: Path, instances: list[str]) -> Iterator[tuple[Serve, list[ActivityRecord]]]:
    """`llamactl serve` over a database holding one record per name in ``instances``, a second apart."""
    store = Store(workdir / "data" / "llamactl.db")
    records = [
        activity_record(store, name, time=START + number, status=200 + number)
        for number, name in enumerate(instances)
    ]
    store.insert_activity(records, keep=len(records)).result(timeout=10)
    store.close()
    with serve_process(workdir) as serve:
        yield serve, records
