"""What every benchmark result states about how it was produced: the command line and the machine.
Standard library only, so the TensorFlow-only serving benchmark can use it too."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from contract.files import write_text_atomic


def command_line() -> str:
    """The invocation as a person would retype it, with the CUDA_VISIBLE_DEVICES it ran under."""
    return ("CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)") + " python "
            + " ".join(shlex.quote(a) for a in sys.argv))


def machine(extra: str = "") -> str:
    """Architecture, cores, the load other jobs put on them when the benchmark started, Python, and `extra`."""
    load = os.getloadavg()[0]
    text = (f"{platform.machine()}, {os.cpu_count()} cores (1-minute load average {load:.1f} at start), "
            f"Python {platform.python_version()}")
    return f"{text}, {extra}" if extra else text


def write_results(out: Path, report: dict[str, Any], markdown: str) -> None:
    """Writes `out` (the report as JSON) and its .md twin, each through a temporary file renamed into place."""
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    write_text_atomic(out.with_suffix(".md"), markdown)
