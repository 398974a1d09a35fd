"""Byte sizes as people write them (``"48GiB"``, ``"512 MB"``, ``"85%"``) and as messages show them."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[a-z]*)\s*", re.IGNORECASE)
_PERCENT = re.compile(r"\s*(?P<number>\d+(?:\.\d+)?)\s*%\s*")


def parse_size(text: str) -> int:
    """``"48GiB"`` -> 51539607552; a bare number is bytes. ValueError names what is wrong."""
    match = _SIZE.fullmatch(text)
    if match is None or match["unit"].lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size: write bytes, or a number with KiB, MiB, GiB, MB, GB, ...")
    return int(float(match["number"]) * _UNITS[match["unit"].lower()])


def parse_percent(text: str) -> float | None:
    """``"85%"`` -> 85.0; None when the text is not a percentage."""
    match = _PERCENT.fullmatch(text)
    return None if match is None else float(match["number"])


def format_bytes(count: float) -> str:
    """1.5 GiB, 300 MiB, 12 KiB, 7 B: one decimal from GiB up, so estimates do not look exact."""
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3)):
        if abs(count) >= size:
            return f"{count / size:.1f} {unit}"
    for unit, size in (("MiB", 1024**2), ("KiB", 1024)):
        if abs(count) >= size:
            return f"{count / size:.0f} {unit}"
    return f"{count:.0f} B"
