"""The smoke check's pure rule: the line of the answer it keeps (runs: tests/server/test_smoke_api.py)."""

from __future__ import annotations

import pytest

from llamactl.instance.smoke import first_line


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        ("Hello! How can I help?", "Hello! How can I help?"),
        ("\n\n  Hi there.  \nSecond line", "Hi there."),  # blank lines and padding skipped
        ("\r\n\t\r\nCRLF line\r\nnext", "CRLF line"),
        ("one\u2028two", "one"),  # any line break str.splitlines knows
        ("", None),
        (" \n\t\n", None),  # white space only: no line to keep
    ],
)
def test_the_first_line_with_text_is_kept_stripped(answer: str, kept: str | None) -> None:
    assert first_line(answer) == kept
