"""Durations as people read them. No TensorFlow here: the runner's heartbeat prints them too."""
from __future__ import annotations


def duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
