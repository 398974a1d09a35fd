"""The download progress `llamactl models pull` shows: a bar on a terminal, lines in a log."""

from __future__ import annotations

import io

from llamactl.progress_bar import PLAIN_INTERVAL, ProgressReport, progress_line

MIB = 1024**2


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_line_shows_the_share_the_bytes_and_the_file() -> None:
    assert progress_line(0, 0, "queued") == "queued"
    assert progress_line(3 * MIB, 0, "a.gguf") == "3 MiB  a.gguf"
    half = progress_line(512 * MIB, 1024 * MIB, "model-Q4_K_M.gguf")
    assert half == f"[{'#' * 15}{'.' * 15}]  50%  512 MiB / 1.0 GiB  model-Q4_K_M.gguf"
    assert progress_line(2 * MIB, MIB, "x").startswith(f"[{'#' * 30}] 100%")  # never past the end


def test_a_terminal_gets_one_line_redrawn_in_place() -> None:
    stream = Terminal()
    report = ProgressReport(stream)
    report.update(0, 10 * MIB, "a-long-file-name.gguf")
    report.update(10 * MIB, 10 * MIB, "b.gguf")
    report.finish()
    first = progress_line(0, 10 * MIB, "a-long-file-name.gguf")
    last = progress_line(10 * MIB, 10 * MIB, "b.gguf")
    # the shorter line covers what is left of the longer one with spaces
    assert stream.getvalue() == f"\r{first}\r{last.ljust(len(first))}\n"


def test_a_log_gets_a_line_per_file_now_and_then_and_the_last_state() -> None:
    stream, clock = io.StringIO(), Clock()
    report = ProgressReport(stream, clock)
    report.update(0, 4 * MIB, "a.gguf")
    clock.now = 1.0
    report.update(MIB, 4 * MIB, "a.gguf")  # too soon after the last line
    clock.now = 1.0 + PLAIN_INTERVAL
    report.update(2 * MIB, 4 * MIB, "a.gguf")
    report.update(3 * MIB, 4 * MIB, "b.gguf")  # another file: a line at once
    report.update(4 * MIB, 4 * MIB, "b.gguf")
    report.finish()
    assert stream.getvalue().splitlines() == [
        progress_line(0, 4 * MIB, "a.gguf"),
        progress_line(2 * MIB, 4 * MIB, "a.gguf"),
        progress_line(3 * MIB, 4 * MIB, "b.gguf"),
        progress_line(4 * MIB, 4 * MIB, "b.gguf"),
    ]


def test_finishing_shows_nothing_new_when_the_last_state_was_written() -> None:
    stream = io.StringIO()
    report = ProgressReport(stream)
    report.update(0, 0, "failed")
    report.finish()
    assert stream.getvalue() == "failed\n"
    silent = Terminal()
    ProgressReport(silent).finish()
    assert silent.getvalue() == ""
