"""Training on several workers with tf.distribute.MultiWorkerMirroredStrategy (trainer.strategy:
multi_worker_mirrored, trainer.workers: ["HOST:PORT", ...], index 0 the chief).

The trainer step writes a job description into the (shared) pipeline root, starts the chief as a child process
(`agnews-pipeline train-worker --index 0`) and waits for it; every other machine runs `agnews-pipeline
train-worker --index I`, which waits for that job and trains the same model on the same inputs. Every worker
runs components.trainer.executor.train (passed in by the trainer's worker entry, its worker_main),
the trainer's one training code path; only the chief writes results.

Facts this shape follows (measured with Keras 3.15 and TensorFlow 2.21, two processes on 127.0.0.1):
- the strategy must be created before TensorFlow initializes its runtime in the process ("Collective ops must
  be configured at program startup"), and the pipeline process has already run TensorFlow in ingest and
  transform: hence a fresh child process for the chief;
- while a worker has not joined, the strategy's constructor blocks (minutes, not bounded by TensorFlow) and
  SIGTERM does not stop it (TensorFlow's preemption notifier catches it): the run bounds the wait itself and
  kills the chief with SIGKILL;
- a worker that dies after joining makes the others fail with UnavailableError naming its task: within about
  1 s when the next collective finds its port closed, 8 s through the heartbeats (both measured);
- Keras 3's fit does not run under this strategy as released (keras-team/keras#20585), see
  _patch_keras_for_multi_worker;
- the loss and metrics Keras reports are synchronized across workers, so EarlyStopping takes the same decision
  on every worker; only the chief saves (Keras 3's save needs no collective);
- with the DATA auto-shard policy each global batch is split between the workers (23 steps on each worker for
  the sample's 23 batches, 575 + 573 examples), and 2 workers give the losses and weights of 1 process when
  the split is even and the order fixed (a small model, SGD).
"""
from __future__ import annotations

import json
import os
import queue
import re
import site
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from contract.artifacts import ComponentError
from contract.config import address_problem
from contract.config_loading import build_config
from library.folder_layouts import multi_worker_job_file, read_multi_worker_job, write_multi_worker_job

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# TensorFlow is loaded, the strategy starts
WAITING_LINE = "train-worker: waiting for every worker to join"
# the strategy exists
JOINED_LINE = "train-worker: every worker joined"
# the longest the chief may take to load TensorFlow before it starts waiting
STARTUP_SECONDS = 120
# the one line a failed worker prints
ERROR_PREFIX = "train-worker failed: "
# TensorFlow's C++ logging and the gRPC details it appends to a collective's error: not progress lines
_TF_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} |^WARNING: All log messages before absl|^Additional GRPC error|^:UNKNOWN:"
)
# The chief's own lines (the trainer's plan, epochs with an ETA, warnings), passed on to the run's output.
_PROJECT_LINE = re.compile(r"^(trainer|train-worker|WARNING): ")
_TASK = re.compile(r"/job:worker/(?:replica:0/)?task:(\d+)")


def parse_workers(text: str) -> tuple[str, ...]:
    """"H0:P0,H1:P1" -> ("H0:P0", "H1:P1"); ValueError with one line if an entry is not HOST:PORT."""
    workers = tuple(part.strip() for part in text.split(",") if part.strip())
    if not workers:
        raise ValueError("--workers needs HOST:PORT of every worker, the chief first, e.g. "
                         "--workers 10.0.0.1:23456,10.0.0.2:23456")
    for address in workers:
        if problem := address_problem(address):
            raise ValueError(f"--workers: {problem}")
    return workers


def tf_config(workers: tuple[str, ...] | list[str], index: int) -> str:
    """The TF_CONFIG of worker `index`: TensorFlow's cluster description, read when the strategy is
    created."""
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})


def worker_command(root: Path, workers: tuple[str, ...] | list[str], index: int | str) -> str:
    return (
        f"agnews-pipeline train-worker --pipeline-root {root} --workers {','.join(workers)} --index {index}"
    )


# ----------------------------------------------------------------------------------------------------------
# The trainer step's side: the job, the chief process, the bounded wait


def train_on_workers(job: dict[str, Any], root: Path, log: Callable[[str], None]) -> None:
    """Writes the job into the pipeline root, runs the chief (worker 0) in a child process until it has
    written the trained model into job["output_dir"], and removes the job whatever happens. A worker that does
    not join within job["worker_timeout"] seconds, or a chief that fails, raises ComponentError with one
    line."""
    workers, timeout = job["workers"], job["worker_timeout"]
    write_multi_worker_job(root, job)
    log(
        f"trainer: multi-worker training on {len(workers)} workers ({', '.join(workers)}); this "
        "machine runs the "
        f"chief, worker 0; on each other machine I (1, 2, ...) run: {worker_command(root, workers, 'I')}"
    )
    # An installed project (site-packages) is already on the child's path; a checkout used without installing
    # it is not.
    installed = PROJECT_ROOT in (Path(path).resolve() for path in site.getsitepackages())
    pythonpath = os.pathsep.join(filter(None, [None if installed else str(PROJECT_ROOT),
                                               os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "train-worker", "--pipeline-root", str(root),
         # this wait ends first
         "--workers", ",".join(workers), "--index", "0", "--timeout", str(timeout + 60)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        # Ctrl-C reaches the run only
        env={**os.environ, "PYTHONPATH": pythonpath}, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        joined, errors, deadline = False, [], time.monotonic() + STARTUP_SECONDS + timeout
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                line = ""
            # the chief closed its output: it has ended
            if line is None:
                break
            if line == WAITING_LINE:
                deadline = time.monotonic() + timeout
            elif line == JOINED_LINE:
                joined = True
            elif line.startswith(ERROR_PREFIX):
                errors.append(line[len(ERROR_PREFIX):])
            elif _PROJECT_LINE.match(line) and not _TF_LOG_LINE.match(line):
                log(line)
            # the libraries' output (Keras's epoch lines, TensorFlow's): to the step's log file
            elif line:
                print(line, flush=True)
            if not joined and time.monotonic() > deadline:
                raise ComponentError(_not_joined(root, workers, timeout))
        code = process.wait(timeout=60)
        if code != 0:
            raise ComponentError(f"multi-worker training failed: {errors[-1]}" if errors else
                                 f"multi-worker training failed: the chief exited with code {code}")
    finally:
        if process.poll() is None:
            # SIGKILL: a chief waiting for a worker ignores SIGTERM
            process.kill()
            process.wait(timeout=60)
        multi_worker_job_file(root).unlink(missing_ok=True)


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _not_joined(root: Path, workers: list[str], timeout: float) -> str:
    """Which workers did not join and what to do: a worker whose port accepts no connection was not
    started."""
    silent = []
    for index, address in enumerate(workers[1:], start=1):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError:
            silent.append(index)
    if silent:
        names = ", ".join(f"worker {i} ({workers[i]})" for i in silent)
        return (
            f"{names} did not join within {timeout:g} s: start `{worker_command(root, workers, silent[0])}` "
            f"on that machine (the pipeline root must be shared), or raise trainer.worker_timeout"
        )
    return (f"the workers did not all join within {timeout:g} s although every port answers: check that each "
            f"runs `agnews-pipeline train-worker` with --workers {','.join(workers)} and its own --index")


# ----------------------------------------------------------------------------------------------------------
# The worker's side: `agnews-pipeline train-worker` (the chief is index 0, started by the trainer step)


class WorkerUsageError(ValueError):
    """This worker's flags do not match the job: exit 2."""


def wait_for_job(root: Path, workers: tuple[str, ...], index: int, timeout: float) -> dict[str, Any]:
    """The job whose worker list is `workers`, waiting up to `timeout` seconds for the run to write it."""
    if not 0 <= index < len(workers):
        raise WorkerUsageError(f"--index {index} is not a position in --workers (0 to {len(workers) - 1})")
    deadline = time.monotonic() + timeout
    while True:
        job = read_multi_worker_job(root)
        if job is not None:
            if tuple(job["workers"]) != workers:
                raise WorkerUsageError(
                    f"the training job in {root} is for workers {','.join(job['workers'])}, this "
                    "worker was given "
                    f"{','.join(workers)}: start it with --workers {','.join(job['workers'])}"
                )
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no training job for workers {','.join(workers)} in {root} after {timeout:g} s: start "
                "the run "
                f"(agnews-pipeline run --set trainer.strategy=multi_worker_mirrored --set "
                f"trainer.workers=[{','.join(workers)}]) with this --pipeline-root, shared with this machine"
            )
        time.sleep(0.5)


def run_worker(
    job: dict[str, Any], index: int, train: Callable[..., Any], log: Callable[[str], None] = print
) -> None:
    """Trains as worker `index` of the job with the trainer's `train` (components/trainer/executor.py, passed
    in: this library never imports a component); the chief (index 0) writes the results into
    job["output_dir"]."""
    workers, timeout = job["workers"], float(job["worker_timeout"])
    # before TensorFlow starts: it reads it once
    os.environ["TF_CONFIG"] = tf_config(workers, index)
    import tensorflow as tf
    print(WAITING_LINE, flush=True)
    # A worker whose peers never join would wait in the strategy's constructor forever: bounded here.
    watchdog = threading.Timer(timeout, _give_up, args=(workers, index, timeout))
    watchdog.daemon = True
    watchdog.start()
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout))
    watchdog.cancel()
    print(JOINED_LINE, flush=True)
    _patch_keras_for_multi_worker()

    config = build_config({"trainer": job["trainer"]}).trainer
    try:
        train(
            Path(job["examples_dir"]),
            Path(job["transform_graph_dir"]),
            job["hyperparameters"],
            Path(job["output_dir"]) if index == 0 else None,
            config,
            int(job["seed"]),
            log,
            strategy,
            Path(job["base_model_dir"]) if job.get("base_model_dir") else None,
            job.get("base_model_label", ""),
        )
    except tf.errors.OpError as error:
        peers = _peers_named(error, workers, index)
        if not peers and not isinstance(
            error,
            (
                tf.errors.UnavailableError,
                tf.errors.DeadlineExceededError,
                tf.errors.CancelledError,
                tf.errors.AbortedError,
            ),
        ):
            # this worker's own failure, not a lost peer
            raise
        raise ComponentError(
            f"{peers or 'another worker'} stopped answering during training (worker {index} saw "
            f"{type(error).__name__}); nothing was published: start the run and every "
            f"`agnews-pipeline train-worker` again"
        ) from None


def _peers_named(error: Exception, workers: list[str], index: int) -> str:
    """"worker 1 (HOST:PORT)" for each other task TensorFlow's error message names."""
    tasks = sorted({int(task) for task in _TASK.findall(str(error))} - {index})
    return ", ".join(f"worker {t} ({workers[t]})" for t in tasks if t < len(workers))


def _give_up(workers: list[str], index: int, timeout: float) -> None:
    others = ", ".join(f"{i} ({address})" for i, address in enumerate(workers) if i != index)
    print(
        f"{ERROR_PREFIX}the other workers ({others}) did not all join within {timeout:g} s: check that each "
        f"one runs with the same --workers and its own --index (worker 0 is started by the run)",
        flush=True,
    )
    os._exit(1)


def _patch_keras_for_multi_worker() -> None:
    """Two fixes to Keras 3.15's TensorFlow trainer under MultiWorkerMirroredStrategy, for this process only
    (a worker process trains nothing else), until keras-team/keras#20585 is fixed upstream:
    - fit() builds the model from the first batch averaged over the workers (`strategy.reduce("MEAN",
      batch)`), which fails for an (inputs, labels) tuple and could not average padded batches of different
      lengths: build from this worker's own first batch instead (shapes are all the build needs);
    - each step reduces the scalar loss and metrics with `strategy.reduce("MEAN", value, axis=0)`, which fails
      on a scalar ("Invalid reduction dimension 0"): the values are already synchronized across workers (Keras
      metrics are mirrored variables updated by all-reduce), so this worker's copy is the global value, as
      with a single-worker strategy."""
    import keras
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def build_from_local_batch(model, iterator=None, data_batch=None):
        if model._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
        strategy = model.distribute_strategy
        local = keras.tree.map_structure(
            lambda value: strategy.experimental_local_results(value)[0]
            if isinstance(value, tf.distribute.DistributedValues) else value, data_batch)
        with strategy.scope():
            model._symbolic_build(data_batch=local)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_local_batch
    tf_trainer._collective_all_reduce_multi_worker = lambda strategy: False


def worker_main(
    root: Path, workers: tuple[str, ...], index: int, timeout: float, train: Callable[..., Any]
) -> int:
    """`agnews-pipeline train-worker` (components/trainer/executor.worker_main): 0 trained, 1 failed or timed
    out, 2 flags that do not match the job."""
    try:
        job = wait_for_job(root, workers, index, timeout)
        print(
            f"train-worker: worker {index} of {len(workers)} ({workers[index]}): job found, joining",
            flush=True,
        )
        run_worker(job, index, train)
    except WorkerUsageError as error:
        print(f"{ERROR_PREFIX}{error}", file=sys.stderr, flush=True)
        return 2
    except (TimeoutError, ComponentError) as error:
        print(f"{ERROR_PREFIX}{error}", file=sys.stderr, flush=True)
        return 1
    # one line for the run's error message, not a traceback wall
    except Exception as error:
        first_line = next(iter(str(error).strip().splitlines()), "")
        print(f"{ERROR_PREFIX}{type(error).__name__}: {first_line}", file=sys.stderr, flush=True)
        return 1
    print(f"train-worker: worker {index} done", flush=True)
    return 0
