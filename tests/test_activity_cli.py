"""`llamactl activity` against a running `llamactl serve`, as a user types it.

The serve's database holds records before it starts (tests/activity_helpers.py);
for ``-f``, more are written into it by another connection while the command
follows, as rows the serve then reads.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from llamactl.store import ActivityRecord
from tests.activity_helpers import START, serve_with_activity
from tests.serve_process import Serve, cli_environment, run_cli

DEADLINE = 30.0
TIMINGS = ["250ms", "500ms", "1.50s", "12/34"]
"""WAIT, TTFT, DURATION and TOKENS of every record the helper writes."""
HEADER = ["TIME", "INSTANCE", "MODEL", "KEY", "ENDPOINT", "STATUS", "WAIT", "TTFT", "DURATION", "TOKENS"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, list[ActivityRecord], Path]]:
    workdir = tmp_path_factory.mktemp("serve")
    with serve_with_activity(workdir, ["alpha", "beta", "alpha"]) as (serve, records):
        yield serve, records, workdir / "data" / "llamactl.db"


def llamactl(serve: Serve, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(serve, *args, timeout=DEADLINE)


def rows(text: str) -> list[list[str]]:
    """The table's lines split at spaces (TIME is two words: a date and a time)."""
    return [line.split() for line in text.splitlines()]


def shown_time(offset: int) -> list[str]:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(START + offset)).split()


def test_activity_shows_the_last_requests_as_a_table(
    served: tuple[Serve, list[ActivityRecord], Path],
) -> None:
    serve, _, _ = served
    shown = llamactl(serve, "activity")
    assert shown.returncode == 0, shown.stderr
    header, *lines = rows(shown.stdout)
    assert header == HEADER
    assert lines == [
        [*shown_time(number), name, name, "app", "/v1/chat/completions", str(200 + number), *TIMINGS]
        for number, name in enumerate(["alpha", "beta", "alpha"])
    ]


def test_activity_narrows_to_an_instance_and_a_count(
    served: tuple[Serve, list[ActivityRecord], Path],
) -> None:
    serve, _, _ = served
    last = llamactl(serve, "activity", "-n", "1")
    assert [line[3] for line in rows(last.stdout)[1:]] == ["alpha"] and last.returncode == 0
    betas = llamactl(serve, "activity", "--instance", "beta")
    assert [line[3] for line in rows(betas.stdout)[1:]] == ["beta"]
    nobody = llamactl(serve, "activity", "--instance", "nobody")
    assert (nobody.returncode, nobody.stdout) == (0, "no request recorded for instance nobody\n")
    too_many = llamactl(serve, "activity", "-n", "5000")
    assert too_many.returncode == 2
    assert "limit must be a whole number from 0 to 1000" in too_many.stderr


def test_activity_follow_shows_new_requests_until_ctrl_c(
    served: tuple[Serve, list[ActivityRecord], Path],
) -> None:
    serve, records, database = served
    follower = subprocess.Popen(
        [sys.executable, "-m", "llamactl", "activity", "-f", "--instance", "gamma"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_environment(serve),
    )
    lines: list[str] = []
    arrived = threading.Condition()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            with arrived:
                lines.append(line)
                arrived.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait_for_lines(count: int) -> list[str]:
        with arrived:
            if not arrived.wait_for(lambda: len(lines) >= count, DEADLINE):
                raise AssertionError(f"the follower printed {lines} within {DEADLINE} s, not {count} lines")
            return list(lines)

    try:
        assert rows(wait_for_lines(1)[0]) == [HEADER]  # nothing of gamma yet: the header, then it waits
        new = [
            msgspec.structs.replace(records[0], id=records[-1].id + number, instance=instance, status=status)
            for number, (instance, status) in enumerate([("gamma", 201), ("alpha", 500), ("gamma", 404)], 1)
        ]
        with sqlite3.connect(database) as db:  # as the serve's own batches would land
            db.executemany(
                f"INSERT INTO activity VALUES ({', '.join('?' for _ in ActivityRecord.__struct_fields__)})",
                [msgspec.structs.astuple(record) for record in new],
            )
        followed = wait_for_lines(3)
        assert [line.split()[2:3] + line.split()[6:7] for line in followed[1:]] == [
            ["gamma", "201"],
            ["gamma", "404"],
        ]
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=DEADLINE) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    reader.join(DEADLINE)
    assert follower.stderr is not None and follower.stderr.read() == ""
    assert len(lines) == 3
