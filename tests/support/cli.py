"""The `agnews-pipeline` command run in this process through apps.cli.main.main(argv): for the cheap checks
(runs, show, diff, help, usage and bad-input errors) a subprocess would only add an interpreter start and,
for predict, a TensorFlow import. What needs a process of its own (signals, kill -9, a mount namespace, a
fresh serving process, the installed wheel) keeps running `python -m apps.cli` in a subprocess."""
from __future__ import annotations

import contextlib
import io
import signal
import subprocess

from apps.cli.main import main
from pipeline import interrupts


def agnews_in_process(*args, check_code: int | None = 0) -> subprocess.CompletedProcess:
    """main([*args]) with its stdout and stderr captured, as a CompletedProcess: returncode is main's value,
    or the code of the SystemExit argparse raises for --help and usage errors. The signal handlers `run` and
    `retrain` install are put back afterwards. Another exit code than check_code (None: any) fails the
    test."""
    argv = [str(arg) for arg in args]
    saved = {signum: signal.getsignal(signum) for signum in interrupts.EXIT_CODES}
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    completed = subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())
    if check_code is not None and code != check_code:
        raise AssertionError(
            f"exit {code} (wanted {check_code}) for {argv}\n--- stdout\n{completed.stdout[-6000:]}"
            f"\n--- stderr\n{completed.stderr[-6000:]}"
        )
    return completed
