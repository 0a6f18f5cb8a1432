"""SIGINT and SIGTERM end a run the same way: one line, the run marked `interrupted`, exit 130 / 143.

The handler records which signal arrived before raising, because libraries between the signal and the runner
may wrap the exception (Beam turns a KeyboardInterrupt inside a pipeline into a RuntimeError); the runner asks
`received()` instead of trusting the exception's type."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

from contract.units import format_duration

# 128 + signal number, what shells report
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
# The run's deadline (pipeline.deadline, --deadline) arrives as SIGALRM and ends the run the same way; exit
# 124 is what timeout(1) reports.
EXIT_DEADLINE = 124
EXIT_CODES[signal.SIGALRM] = EXIT_DEADLINE
# If the clean stop has not ended the process this long after the deadline (an engine stuck in native code
# that never returns to Python), the process exits anyway: the store then shows the run as running, and the
# next run marks it interrupted, as after a kill.
DEADLINE_GRACE_SECONDS = 60.0
_received: int | None = None
_deadline: float | None = None


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGINT or SIGTERM arrives."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _handler(signum, frame) -> None:
    global _received
    # a second signal while the first is being handled: let the cleanup finish
    if _received is not None:
        return
    _received = signum
    # Libraries log the exception this raises with its traceback (Beam does, at ERROR) before the runner
    # can report it; the process is stopping, and the CLI prints the one line that matters.
    logging.disable(logging.CRITICAL)
    raise Interrupted(signum)


def install() -> None:
    """Installs the handlers (main thread only; the CLI calls this)."""
    for signum in EXIT_CODES:
        signal.signal(signum, _handler)


def set_deadline(seconds: float) -> None:
    """Ends the process like SIGTERM after `seconds` (main thread; after install()), and hard after the
    grace."""
    global _deadline
    _deadline = seconds
    signal.signal(signal.SIGALRM, _handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    backstop = threading.Timer(seconds + DEADLINE_GRACE_SECONDS, _hard_stop)
    backstop.daemon = True
    backstop.start()


def _hard_stop() -> None:
    with contextlib.suppress(OSError):
        os.write(
            2,
            (
                f"interrupted by {name()}; the run did not stop within {DEADLINE_GRACE_SECONDS:.0f}s, so the "
                "process ends now; completed steps are kept\n"
            ).encode(),
        )
    os._exit(EXIT_DEADLINE)


def deadline_exceeded() -> bool:
    return _received == signal.SIGALRM


def received() -> int | None:
    """The signal that interrupted this process, if any."""
    return _received


def stop_if_received() -> None:
    """Raises Interrupted if a signal or the deadline was recorded: the runner calls this after every step and
    before each publish, because the handler's exception can be lost (a component that catches and swallows
    it, or a handler that ran inside a weakref callback or __del__, where Python prints and discards
    exceptions)."""
    if _received is not None:
        raise Interrupted(_received)


def exit_code(error: BaseException | None = None) -> int:
    signum = getattr(error, "signum", None) or _received or signal.SIGINT
    return EXIT_CODES.get(signum, 130)


def name() -> str:
    if _received == signal.SIGALRM:
        return f"the deadline (pipeline.deadline / --deadline {format_duration(_deadline or 0)})"
    return signal.Signals(_received).name if _received else "SIGINT"
