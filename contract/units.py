"""Sizes and durations as people write them in a configuration file or a flag: "500MB", "2GB", "90m", "2h".
Standard library only (the configuration validates with it)."""
from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|bytes|k|kb|m|mb|g|gb|t|tb)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "bytes": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
               "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_size(text: str | int) -> int:
    """'500MB', '2 GB', '1024' (bytes) -> bytes (units of 1024); ValueError for anything else."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size like 500MB, 2GB or 1048576")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])


def parse_duration(text: str | int | float) -> float:
    """'90s', '30m', '2h', '1d', '600' (seconds) -> seconds; ValueError for anything else."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 2h or 600")
    return float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "").lower()]
