"""Sizes and durations as people write them in a configuration file or a flag, and durations as people read
them. One grammar each, used by every setting and flag:

- a size is a number of bytes with an optional unit: SI units are powers of 1000 (kB, MB, GB, TB, PB; k, M,
  G, T, P alone too) and IEC units powers of 1024 (KiB, MiB, GiB, TiB, PiB), as dask and the standards read
  them; "2GB" is 2,000,000,000 bytes, "2GiB" 2,147,483,648;
- a duration is a number of seconds with an optional unit: us, ms, s, sec, m, min, h, d, w ("90", "10s",
  "45m", "90min", "2h", "30d", "2w", "5ms"). "m" is minutes, "ms" milliseconds.

Case does not matter and a space may stand between the number and its unit. Standard library only (the
configuration validates with it). format_size and format_duration write them back for people."""
from __future__ import annotations

import re

_NUMBER_AND_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_SI = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_SIZE_UNITS = {"": 1, "b": 1, "bytes": 1,
               **{letter: factor for letter, factor in _SI.items()},
               **{f"{letter}b": factor for letter, factor in _SI.items()},
               **{f"{letter}ib": 1 << (10 * (i + 1)) for i, letter in enumerate(_SI)}}
_DURATION_UNITS = {"": 1, "us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400,
                   "w": 7 * 86400}


def _number_and_factor(text: str | int | float, units: dict[str, float]) -> float | None:
    match = _NUMBER_AND_UNIT.match(str(text))
    if not match or match.group(2).lower() not in units:
        return None
    return float(match.group(1)) * units[match.group(2).lower()]


def parse_size(text: str | int) -> int:
    """'500MB', '2 GB' (10^9), '4GiB' (2^30), '1048576' (bytes) -> bytes; ValueError for anything else."""
    size = _number_and_factor(text, _SIZE_UNITS)
    if size is None:
        raise ValueError(f"{text!r} is not a size like 500MB, 2GB (10^9 bytes), 4GiB (2^30 bytes) or 1048576")
    return int(size)


def parse_duration(text: str | int | float) -> float:
    """'90' (seconds), '10s', '45m', '90min', '2h', '30d', '2w', '5ms' -> seconds; ValueError for anything
    else."""
    seconds = _number_and_factor(text, _DURATION_UNITS)
    if seconds is None:
        raise ValueError(f"{text!r} is not a duration like 600 (seconds), 10s, 90min, 2h, 30d, 2w or 5ms")
    return seconds


def format_size(count: float) -> str:
    """512 bytes, 12.0 KiB, 66.1 MiB, 1.5 GiB: in IEC units, which say they are powers of 1024."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def format_duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m: whole seconds, rounded; a negative duration reads 0s."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
