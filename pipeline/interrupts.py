"""SIGINT and SIGTERM end a run the same way: one line, the run marked `interrupted`, exit 130 / 143.

The handler records which signal arrived before raising, because libraries between the signal and the runner
may wrap the exception (Beam turns a KeyboardInterrupt inside a pipeline into a RuntimeError); the runner asks
`received()` instead of trusting the exception's type."""
from __future__ import annotations

import logging
import signal

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, what shells report
_received: int | None = None


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGINT or SIGTERM arrives."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _handler(signum, frame) -> None:
    global _received
    if _received is not None:  # a second signal while the first is being handled: let the cleanup finish
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


def received() -> int | None:
    """The signal that interrupted this process, if any."""
    return _received


def exit_code(error: BaseException | None = None) -> int:
    signum = getattr(error, "signum", None) or _received or signal.SIGINT
    return EXIT_CODES.get(signum, 130)


def name() -> str:
    return signal.Signals(_received).name if _received else "SIGINT"
