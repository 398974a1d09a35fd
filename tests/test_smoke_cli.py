"""`llamactl smoke NAME` and `llamactl history NAME` against a running `llamactl serve`, as typed."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.serve_process import Serve, run_cli, serve_process, standin_backends

DEADLINE = 60.0


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    workdir = tmp_path_factory.mktemp("serve")
    pids = workdir / "pids"
    config = standin_backends((18490, 18499))
    with serve_process(workdir, config, environment={"STANDIN_PIDS": str(pids)}) as running:
        running.create("tiny")
        running.create("broken", faults="exit_at_start=3", start=False)
        yield running


def llamactl(serve: Serve, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(serve, *args, timeout=DEADLINE)


def test_smoke_prints_the_answer_and_the_timings(serve: Serve) -> None:
    done = llamactl(serve, "smoke", "tiny")
    assert done.returncode == 0, done.stderr
    outcome, answer, timings = done.stdout.splitlines()
    assert outcome == "tiny: ok (model tiny)"
    assert answer == "answer: hello"
    steps = [step.split() for step in timings.split(", ")]
    assert [label for label, _ in steps] == ["ready", "listed", "chat", "total"]
    assert all(re.fullmatch(r"\d+ms|\d+\.\d\ds", duration) for _, duration in steps)


def test_a_failed_smoke_says_why_shows_the_log_and_exits_1(serve: Serve) -> None:
    done = llamactl(serve, "smoke", "broken", "--timeout", "30")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "broken: failed (model tiny): the smoke run exited with code 3 while starting"
    assert lines[1].startswith("total ")  # it got no further than the start
    assert lines[2] == "last log lines:"
    assert "  standin: exiting at start as asked" in lines[3:]


def test_smoke_of_an_unknown_instance_or_a_bad_name_is_an_error_on_stderr(serve: Serve) -> None:
    missing = llamactl(serve, "smoke", "missing")
    assert missing.returncode == 2 and "404" in missing.stderr and "missing" in missing.stderr
    bad = llamactl(serve, "history", "../auth/keys")
    assert bad.returncode == 2 and "invalid instance name" in bad.stderr


def test_history_shows_starts_with_their_version_and_smoke_checks(serve: Serve) -> None:
    assert llamactl(serve, "smoke", "tiny").returncode == 0
    deadline = time.monotonic() + DEADLINE
    while " start " not in (shown := llamactl(serve, "history", "tiny").stdout):
        assert time.monotonic() < deadline, shown  # a start's entry is written once --version answered
        time.sleep(0.1)
    header, *rows = shown.splitlines()
    assert header.split() == ["TIME", "KIND", "RESULT", "DURATION", "DETAIL"]
    starts = [row for row in rows if row.split()[2] == "start"]
    smokes = [row for row in rows if row.split()[2] == "smoke"]
    assert len(starts) == 1 and starts[0].split()[3:6] == ["by", "API", "-"]
    assert f"{sys.executable}: Python 3." in starts[0]
    assert smokes and all(row.split()[3] == "ok" and row.endswith("hello") for row in smokes)


def test_history_of_an_instance_that_has_none_says_so(serve: Serve) -> None:
    serve.create("quiet", start=False)
    done = llamactl(serve, "history", "quiet")
    assert done.returncode == 0 and done.stdout == "no history recorded for quiet\n"
