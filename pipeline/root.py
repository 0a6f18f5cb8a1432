"""The pipeline root's policy while a command uses it: one pipeline process per root at a time (root_lock,
LockBusy), the run's temporary folder inside the root (scratch_tempdir: tempfile's and every child process's
TMPDIR, removed after the run), and the free space a step needs before it starts (FreeSpacePolicy,
pipeline.min_free_space), with the one line a full disk or a refused write becomes (fault_message)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from contract.config import Config
from contract.disk import (
    disk_full,
    disk_full_message,
    error_paths,
    filesystem_line,
    free_bytes,
    full_path,
    not_writable,
    not_writable_message,
)
from contract.units import format_size, parse_size
from pipeline import dag


class LockBusy(RuntimeError):
    """Another pipeline process holds the pipeline root's lock."""


@contextlib.contextmanager
def root_lock(root: Path, timeout: float = 0.0) -> Iterator[None]:
    """One pipeline process per pipeline root at a time. Waits up to `timeout` seconds, then raises LockBusy.

    flock is released by the kernel when the process dies, so a killed run never leaves a stale lock."""
    root.mkdir(parents=True, exist_ok=True)
    handle = open(root / ".lock", "a+")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(f"another agnews-pipeline process is using {root} "
                                   f"(lock {root / '.lock'})") from None
                time.sleep(0.5)
        handle.seek(0), handle.truncate(), handle.write(f"{os.getpid()}\n"), handle.flush()
        yield
    finally:
        handle.close()


SCRATCH_PREFIX = "scratch-"


# Libraries that keep a cache or a configuration in the home folder, and the variable that moves it: Keras
# writes ~/.keras/keras.json when it is first imported (and reads it: a user's backend or floatx there would
# change the run), matplotlib (the reports' figures) builds a font cache in ~/.cache/matplotlib.
HOME_FOLDER_VARIABLES = ("KERAS_HOME", "MPLCONFIGDIR")


@contextlib.contextmanager
def scratch_tempdir(root: Path) -> Iterator[Path]:
    """Python's and every child process's temporary folder (tempfile, TMPDIR) inside the pipeline root while a
    run lasts, removed after it: Beam, TensorFlow's autograph, dask's worker space and the libraries under
    them otherwise leave folders in /tmp on every run. The libraries' home-folder files go there too
    (library_home). The caller holds root_lock, so any other scratch folder is one a killed run left behind,
    and is removed first."""
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for stale in tmp.glob(f"{SCRATCH_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=tmp))
    saved_tempdir = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        with _environment({"TMPDIR": str(scratch)}), library_home(scratch):
            yield scratch
    finally:
        tempfile.tempdir = saved_tempdir
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def library_home(folder: Path | None = None) -> Iterator[None]:
    """The libraries' home-folder files (HOME_FOLDER_VARIABLES) in `folder` while the block runs, or, with no
    folder (the commands that have no pipeline root: predict, serve), in a temporary folder removed after it.
    TensorFlow loading a SavedModel imports Keras and matplotlib, so even `predict` wrote under ~."""
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="agnews-pipeline-home-") as temporary:
            with library_home(Path(temporary)):
                yield
        return
    with _environment({name: str(folder / name.lower()) for name in HOME_FOLDER_VARIABLES}):
        yield


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` while the block runs, as it was after it."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# pipeline.min_free_space "auto": the free space a step needs before it starts, from the rows of the
# pipeline's input data. A whole default run on the 9,351-row shared AG News wrote 22 MB here (13 MB of it the
# trainer's models, which do not grow with the data; ingest and transform about 0.25 KB per row), plus Beam's
# and the tuner's temporary files while it ran: 64 MB and 2 KB per row is a margin over that, not an exact
# need.
AUTO_FREE_BASE_BYTES = 64 << 20
AUTO_FREE_BYTES_PER_ROW = 2048


def fault_message(error: BaseException, path: Path, what: str) -> str | None:
    """The one line for a full disk or a refused write (None for any other error): the filesystem that is
    full, with the path the error names if it names one."""
    if disk_full(error):
        return disk_full_message(full_path(error, path), what)
    if not_writable(error):
        return not_writable_message(next(iter(error_paths(error)), path), what, error)
    return None


class FreeSpacePolicy:
    """pipeline.min_free_space for the steps of one pipeline root: how much free space a step needs before it
    starts ("auto": from the rows of the input data; "0": no check)."""

    def __init__(self, config: Config, steps: tuple[dag.Step, ...], root: Path):
        self.config = config
        self.steps = steps
        self.root = root

    def shortage(self, step: dag.Step) -> str | None:
        """The line that fails `step` before it starts when the pipeline root's filesystem has less free space
        than pipeline.min_free_space, instead of an hour into training; None when there is enough."""
        needed = self.min_free_bytes()
        if needed <= 0 or free_bytes(self.root) >= needed:
            return None
        return (f"{step.name}: not started, too little free space: {filesystem_line(self.root)}, less than "
                f"the {format_size(needed)} pipeline.min_free_space asks for; free some space there (or set "
                "pipeline.min_free_space lower, 0 = no check) and run again")

    def min_free_bytes(self) -> int:
        setting = self.config.pipeline.min_free_space
        if setting != "auto":
            return parse_size(setting)
        # counted once per run (it reads the source data)
        if not hasattr(self, "_auto_free_bytes"):
            source = dag.source_step(self.steps)
            rows = None
            count = source.spec.hook("input_rows") if source is not None else None
            if count is not None:
                # an uncountable source only lowers the minimum
                with contextlib.suppress(Exception):
                    rows = count(dag.step_config(self.config, source))
            self._auto_free_bytes = AUTO_FREE_BASE_BYTES + AUTO_FREE_BYTES_PER_ROW * (rows or 0)
        return self._auto_free_bytes
