"""The instance log never blocks the backend, stays bounded on disk and in memory, and reads back fast."""

import asyncio
import logging
import os
import re
import stat
import sys
import tracemalloc
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from llamactl.instance.log_file import FOLLOW_QUEUE_LINES, RING_LINES, InstanceLog, read_tail

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


async def drain_chunks(log: InstanceLog, *chunks: bytes) -> None:
    """Feed ``chunks`` to ``log.drain`` one read at a time, then EOF."""
    reader = asyncio.StreamReader()
    draining = asyncio.create_task(log.drain(reader, "stdout"))
    for chunk in chunks:
        reader.feed_data(chunk)
        await asyncio.sleep(0)  # let drain take this chunk alone
    reader.feed_eof()
    await draining


def drained(tmp_path: Path, *chunks: bytes, max_line_bytes: int = 64 * 1024) -> list[str]:
    log = InstanceLog(tmp_path / "a.log", max_bytes=0, backups=0, max_line_bytes=max_line_bytes)
    run(drain_chunks(log, *chunks))
    log.close()
    return (tmp_path / "a.log").read_text().splitlines()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def numbered(count: int, start: int = 0) -> bytes:
    return b"".join(b"line %05d\n" % number for number in range(start, start + count))


def test_a_child_flooding_both_pipes_without_newlines_exits_promptly(tmp_path: Path) -> None:
    child = (
        "import sys\n"
        "sys.stdout.buffer.write(b'x' * (10 << 20)); sys.stdout.flush()\n"
        "sys.stderr.buffer.write(b'y' * (1 << 20) + b'\\nafter\\n')\n"
    )
    log = InstanceLog(tmp_path / "a.log", max_bytes=0, backups=0)

    async def supervise() -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", child, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        drains = asyncio.gather(log.drain(process.stdout, "stdout"), log.drain(process.stderr, "stderr"))
        code = await asyncio.wait_for(process.wait(), timeout=10)
        await asyncio.wait_for(drains, timeout=10)
        return code

    assert run(supervise()) == 0
    log.close()
    lines = (tmp_path / "a.log").read_text().splitlines()
    assert sorted(lines) == sorted(
        [
            "x" * 65536 + f" …[truncated {(10 << 20) - 65536} bytes]",
            "y" * 65536 + f" …[truncated {(1 << 20) - 65536} bytes]",
            "after",
        ]
    )


def test_carriage_returns_end_lines_and_crlf_is_one_line_end_even_split_across_reads(tmp_path: Path) -> None:
    lines = drained(tmp_path, b"10%\r20%\r", b"\ndone\r\n", b"next\r", b"\n", b"last")
    assert lines == ["10%", "20%", "done", "next", "last"]


def test_lines_are_truncated_with_the_count_of_bytes_cut(tmp_path: Path) -> None:
    lines = drained(tmp_path, b"abc", b"defgh", b"ij\nshort\n", max_line_bytes=4)
    assert lines == ["abcd …[truncated 6 bytes]", "shor …[truncated 1 bytes]"]


def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    assert drained(tmp_path, b"ok \xff\xfe bad\n", "é\n".encode()) == ["ok \ufffd\ufffd bad", "é"]


def test_markers_name_the_event_and_time_on_one_line(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path / "a.log", max_bytes=0, backups=0)
    log.write_marker("started: llama-server -m 'a\nb.gguf'")
    log.write_marker("stopped: exit code 0")
    log.close()
    first, second = (tmp_path / "a.log").read_text().splitlines()
    time = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
    assert re.fullmatch(rf"=== llamactl: started: llama-server -m 'a b.gguf' at {time} ===", first)
    assert re.fullmatch(rf"=== llamactl: stopped: exit code 0 at {time} ===", second)


def test_rotation_keeps_at_most_backups_files_each_within_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = InstanceLog(path, max_bytes=1000, backups=3)
    run(drain_chunks(log, numbered(1000)))
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log", "a.log.1", "a.log.2", "a.log.3"]
    # Lines are 11 bytes: a file is rotated before the line that would take it past 1000.
    assert all(990 <= (tmp_path / f"a.log.{n}").stat().st_size <= 1000 for n in (1, 2, 3))
    assert path.stat().st_size <= 1000
    kept = [
        line
        for name in ("a.log.3", "a.log.2", "a.log.1", "a.log")
        for line in (tmp_path / name).read_text().splitlines()
    ]
    assert kept == numbered(len(kept), start=1000 - len(kept)).decode().splitlines()


def test_without_max_bytes_nothing_rotates(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path / "a.log", max_bytes=0, backups=3)
    run(drain_chunks(log, numbered(5000)))
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["a.log"]
    assert len((tmp_path / "a.log").read_text().splitlines()) == 5000


def test_without_backups_the_full_file_is_dropped(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path / "a.log", max_bytes=100, backups=0)
    run(drain_chunks(log, numbered(50)))
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["a.log"]
    assert (tmp_path / "a.log").read_text().splitlines()[-1] == "line 00049"


def test_tail_reads_across_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log = InstanceLog(path, max_bytes=1000, backups=5)
    run(drain_chunks(log, numbered(300)))
    log.close()
    expected = numbered(300).decode().splitlines()
    assert len(path.read_text().splitlines()) < 100
    assert read_tail(path, 150) == expected[-150:]
    assert read_tail(path, 1) == expected[-1:]
    assert read_tail(path, 0) == []
    assert read_tail(tmp_path / "missing.log", 10) == []


def test_tail_after_reopening_reads_the_file_end(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    first = InstanceLog(path, max_bytes=0, backups=0)
    run(drain_chunks(first, numbered(2 * RING_LINES)))
    first.close()

    second = InstanceLog(path, max_bytes=0, backups=0)
    second.write_marker("started: again")
    tail = second.tail(3)
    assert tail[:2] == ["line 01998", "line 01999"]
    assert tail[2].startswith("=== llamactl: started: again")
    assert len(second.tail(3 * RING_LINES)) == 2 * RING_LINES + 1
    second.close()


def test_tail_serves_recent_lines_from_memory_even_when_the_disk_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a.log").mkdir()  # opening the log file fails on every write
    log = InstanceLog(tmp_path / "a.log", max_bytes=0, backups=0)
    with caplog.at_level(logging.WARNING):
        run(drain_chunks(log, numbered(RING_LINES + 10), b"partial"))
    assert log.tail(2) == ["line 01009", "partial"]
    assert len(log.tail(5 * RING_LINES)) == RING_LINES
    assert len(caplog.records) == 1  # one report for the failing stretch, not one per line
    log.close()


def test_tail_does_not_read_a_large_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    with path.open("wb") as file:
        file.truncate(100 << 20)  # sparse: 100 MB of NUL bytes, no line ends
        file.seek(0, 2)
        file.write(numbered(20))
    tracemalloc.start()
    try:
        lines = read_tail(path, 5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == numbered(20).decode().splitlines()[-5:]
    assert peak < 1 << 20


def test_follow_yields_new_lines_live_and_ends_on_close(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path / "a.log", max_bytes=0, backups=0)
    log.write_marker("before following")

    async def scenario() -> list[str]:
        received: list[str] = []

        async def follow() -> None:
            async for line in log.follow():
                received.append(line)

        following = asyncio.create_task(follow())
        await asyncio.sleep(0)
        await drain_chunks(log, b"one\n", b"two\n")
        await asyncio.sleep(0)
        assert received == ["one", "two"]  # delivered while the log is still open
        log.close()
        await following
        return received

    assert run(scenario()) == ["one", "two"]


def test_a_slow_follower_loses_lines_with_one_notice_and_never_blocks_the_writer(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path / "a.log", max_bytes=0, backups=0)
    extra = 3000

    async def scenario() -> list[str]:
        lines = log.follow()
        first = asyncio.ensure_future(anext(lines))  # subscribed, then never scheduled while drain runs
        await asyncio.sleep(0)
        await drain_chunks(log, numbered(FOLLOW_QUEUE_LINES + extra))
        received = [await first]
        received += [await anext(lines) for _ in range(FOLLOW_QUEUE_LINES)]
        await drain_chunks(log, b"caught up\n")
        log.close()
        received += [line async for line in lines]
        return received

    received = run(scenario())
    assert received[:FOLLOW_QUEUE_LINES] == numbered(FOLLOW_QUEUE_LINES).decode().splitlines()
    assert received[FOLLOW_QUEUE_LINES:] == [f"[… {extra} lines dropped]", "caught up"]
    assert len((tmp_path / "a.log").read_text().splitlines()) == FOLLOW_QUEUE_LINES + extra + 1


def test_follow_after_close_ends_at_once(tmp_path: Path) -> None:
    log = InstanceLog(tmp_path / "a.log", max_bytes=0, backups=0)
    log.close()

    async def follow() -> list[str]:
        return [line async for line in log.follow()]

    assert run(follow()) == []


def test_ended_follows_end_and_refuse_new_ones_while_the_file_goes_on(tmp_path: Path) -> None:
    """llamactl stopping: the follows end (no client holds the shutdown), the backend's output is kept."""
    log = InstanceLog(tmp_path / "a.log", max_bytes=0, backups=0)

    async def scenario() -> tuple[list[str], list[str]]:
        lines = log.follow()
        first = asyncio.ensure_future(anext(lines))
        await asyncio.sleep(0)
        await drain_chunks(log, b"one\n")
        log.end_follows()
        following = [await first] + [line async for line in lines]
        later = [line async for line in log.follow()]  # asked for during the shutdown
        await drain_chunks(log, b"two\n")
        return following, later

    assert run(scenario()) == (["one"], [])
    assert (tmp_path / "a.log").read_text().splitlines() == ["one", "two"]


def test_log_files_are_0600_in_0700_directories_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        log = InstanceLog(tmp_path / "logs" / "deeper" / "a.log", max_bytes=1000, backups=2)
        run(drain_chunks(log, numbered(300)))
        log.close()
    finally:
        os.umask(previous)
    assert {mode(tmp_path / "logs"), mode(tmp_path / "logs" / "deeper")} == {0o700}
    files = sorted((tmp_path / "logs" / "deeper").iterdir())
    assert [path.name for path in files] == ["a.log", "a.log.1", "a.log.2"]  # rotated ones too
    assert {mode(path) for path in files} == {0o600}


def test_an_existing_world_readable_log_is_made_0600_before_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_text("from an older llamactl\n")
    path.chmod(0o644)
    tmp_path.chmod(0o755)
    log = InstanceLog(path, max_bytes=0, backups=0)
    log.write_marker("starting: llama-server --api-key '***'")
    log.close()
    assert (mode(path), mode(tmp_path)) == (0o600, 0o755)  # the directory was not ours to change
    assert path.read_text().startswith("from an older llamactl\n=== llamactl: starting")
