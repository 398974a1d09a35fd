"""Measuring a real process tree, and the machine's memory through an injected reader."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO, NamedTuple

import psutil
import pytest

from llamactl.instance import memory_probe
from llamactl.instance.memory_probe import MeasuredMemory, SystemMemory, measure_process_tree, system_memory

MIB = 1024 * 1024
ALLOCATION = 50 * MIB

# The grandchild: says it is up, allocates ALLOCATION touched bytes when told, then holds them until EOF.
GRANDCHILD = f"""
import sys
print("ready", flush=True)
sys.stdin.readline()
block = b"x" * {ALLOCATION}
print("allocated", flush=True)
sys.stdin.readline()
"""
# The child: starts the grandchild on its own stdin and stdout, so the test talks to the grandchild.
CHILD = f"""
import subprocess, sys
sys.exit(subprocess.call([sys.executable, "-c", {GRANDCHILD!r}]))
"""


def read_line(stream: IO[str], timeout: float = 30.0) -> str:
    readable, _, _ = select.select([stream], [], [], timeout)
    if not readable:
        raise TimeoutError(f"no line in {timeout} s")
    return stream.readline().strip()


@contextmanager
def child_with_grandchild() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    tree = [psutil.Process(process.pid)]
    try:
        assert process.stdout is not None
        assert read_line(process.stdout) == "ready"
        tree += tree[0].children()
        yield process
    finally:
        for member in tree:
            with suppress(psutil.NoSuchProcess):
                member.kill()
        process.wait(timeout=30)
        psutil.wait_procs(tree, timeout=30)


def test_the_tree_figure_grows_by_what_a_grandchild_allocates() -> None:
    with child_with_grandchild() as child:
        assert child.stdin is not None and child.stdout is not None
        before = measure_process_tree(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert read_line(child.stdout) == "allocated"
        after = measure_process_tree(child.pid)
    assert before.processes == after.processes == 2
    assert before.pss_bytes is not None and after.pss_bytes is not None
    assert before.uss_bytes is not None and after.uss_bytes is not None
    for grown in (
        after.rss_bytes - before.rss_bytes,
        after.pss_bytes - before.pss_bytes,
        after.uss_bytes - before.uss_bytes,
    ):
        assert 0.95 * ALLOCATION <= grown <= 1.1 * ALLOCATION


def test_a_process_gone_before_it_is_read_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    short_lived = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    listed = psutil.Process(short_lived.pid)
    short_lived.kill()
    short_lived.wait(timeout=30)
    # The tree as listed just before that process exited: it is skipped, the live one counted.
    monkeypatch.setattr(memory_probe, "_process_tree", lambda pid: [psutil.Process(pid), listed])
    measured = measure_process_tree(os.getpid())
    assert measured.processes == 1
    assert measured.rss_bytes == pytest.approx(psutil.Process().memory_info().rss, rel=0.1)


def test_a_tree_whose_root_has_exited_measures_nothing() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    assert measure_process_tree(gone.pid) == MeasuredMemory(
        rss_bytes=0, pss_bytes=None, uss_bytes=None, processes=0
    )


def test_admission_uses_pss_and_falls_back_to_rss() -> None:
    assert MeasuredMemory(rss_bytes=300, pss_bytes=200, uss_bytes=100, processes=2).admission_bytes == 200
    assert MeasuredMemory(rss_bytes=300, pss_bytes=None, uss_bytes=100, processes=2).admission_bytes == 300


class FakeVirtualMemory(NamedTuple):
    total: int
    available: int
    percent: float


def test_system_memory_reads_the_injected_reader() -> None:
    reading = FakeVirtualMemory(total=24 * 1024 * MIB, available=6 * 1024 * MIB, percent=75.0)
    assert system_memory(lambda: reading) == SystemMemory(
        total_bytes=24 * 1024 * MIB, available_bytes=6 * 1024 * MIB, used_percent=75.0
    )


def test_system_memory_of_this_machine() -> None:
    memory = system_memory()
    assert 0 < memory.available_bytes <= memory.total_bytes
    assert 0.0 <= memory.used_percent <= 100.0
