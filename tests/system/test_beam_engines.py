"""The Beam steps on real engines other than the DirectRunner, all started and stopped here on 127.0.0.1:
  * a dask.distributed cluster (`dask scheduler` and 2 `dask worker` processes). The first tests use plain
    Beam transforms only (each covers one gap of Beam 2.77's DaskRunner that engines/dask/ closes, written so
    they could go upstream);
  * Beam's portable path (a job service and an external SDK worker pool): the protocol Flink, Spark and
    Dataflow use to run Python code.
The pipeline's ingest -> transform runs on each, on the committed sample, and every output byte is compared
with the DirectRunner's."""
from __future__ import annotations

import collections
import contextlib
import datetime
import json
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from distributed import Client
from support.beam import (
    START_SECONDS,
    UNTIL_TRANSFORM,
    free_port,
    read_json,
    step_files,
    stop_processes,
    write_sorted,
)
from support.cli import agnews_in_process
from support.paths import CLI, PROJECT, SAMPLE_DIR

from engines.dask.runner import DaskClusterRunner

CLUSTER_LOGS: list[Path | None] = [None]  # the module's cluster writes its logs here (fixture `scheduler`)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory) -> str:
    """tcp://127.0.0.1:PORT of a dask scheduler with 2 single-threaded worker processes that can import the
    project (the pipeline's functions travel to them by reference)."""
    logs = tmp_path_factory.mktemp("dask-logs")
    CLUSTER_LOGS[0] = logs
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT), str(PROJECT / "tests"), str(PROJECT / "tests" / "system")]
        ),
        "CUDA_VISIBLE_DEVICES": "-1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    processes = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=open(logs / "scheduler.log", "w"), env=env)]
    try:
        for index in range(2):
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-dashboard",
                        "--name",
                        f"w{index}",
                        "--host",
                        "127.0.0.1",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=open(logs / f"worker{index}.log", "w"),
                    env=env,
                    cwd=PROJECT,
                )
            )
        with Client(address, timeout=START_SECONDS) as client:
            client.wait_for_workers(2, timeout=START_SECONDS)
        yield address
    finally:
        stop_processes(processes[1:])
        stop_processes(processes[:1])


def run_on_dask(build, address: str, *flags: str) -> None:
    """Builds a pipeline with build(pipeline) and runs it on the cluster at `address`."""
    options = PipelineOptions(flags=[f"--dask_client_address={address}", *flags])
    with beam.Pipeline(runner=DaskClusterRunner(), options=options) as pipeline:
        build(pipeline)


# ---------------------------------------------------------------------------------------------- plain Beam


class _EvenOdd(beam.DoFn):
    def process(self, number):
        if number % 2:
            yield beam.pvalue.TaggedOutput("odd", number)
        else:
            yield number


def test_each_tagged_output_reaches_only_its_own_consumers(scheduler, tmp_path):
    def build(pipeline):
        numbers = pipeline | beam.Create(range(20)) | beam.Reshuffle()
        split = numbers | beam.ParDo(_EvenOdd()).with_outputs("odd", main="even")
        write_sorted(split.even, tmp_path / "even", "Even")
        write_sorted(split.odd, tmp_path / "odd", "Odd")
        thirds = numbers | beam.Partition(lambda n, _: n % 3, 3)
        for index, part in enumerate(thirds):
            write_sorted(part, tmp_path / f"third{index}", f"Third{index}")

    run_on_dask(build, scheduler)
    assert read_json(tmp_path / "even") == list(range(0, 20, 2))
    assert read_json(tmp_path / "odd") == list(range(1, 20, 2))
    for index in range(3):
        assert read_json(tmp_path / f"third{index}") == list(range(index, 20, 3))


def test_every_sink_of_a_branching_pipeline_runs(scheduler, tmp_path):
    def build(pipeline):
        words = pipeline | beam.Create(["a", "b", "c"])
        for index in range(3):
            write_sorted(words | f"Upper{index}" >> beam.Map(lambda w, i: w * (i + 1), index),
                         tmp_path / f"sink{index}", f"Sink{index}")

    run_on_dask(build, scheduler)
    assert [read_json(tmp_path / f"sink{index}") for index in range(3)] == [
        ["a", "b", "c"], ["aa", "bb", "cc"], ["aaa", "bbb", "ccc"]]


class _CountInFinishBundle(beam.DoFn):
    def start_bundle(self):
        self.count = 0

    def process(self, element):
        self.count += 1

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue
        yield WindowedValue(self.count, 0, [GlobalWindow()])


def test_elements_emitted_in_finish_bundle_are_kept(scheduler, tmp_path):
    def build(pipeline):
        counts = (pipeline | beam.Create(range(100)) | beam.Reshuffle()
                  | beam.ParDo(_CountInFinishBundle()) | beam.CombineGlobally(sum))
        write_sorted(counts, tmp_path / "total", "Total")

    run_on_dask(build, scheduler, "--dask_reshuffle_partitions=4")
    assert read_json(tmp_path / "total") == [100]


def _make_marker(_, folder: str) -> str:
    import uuid
    path = Path(folder) / uuid.uuid4().hex
    path.touch()
    return str(path)


def test_a_side_input_is_computed_once_and_seen_by_every_consumer(scheduler, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()

    def build(pipeline):
        marker = pipeline | "Once" >> beam.Create([None]) | beam.Map(_make_marker, str(markers))
        numbers = pipeline | beam.Create(range(10)) | beam.Reshuffle()
        for index in range(3):
            write_sorted(
                numbers
                | f"Use{index}" >> beam.Map(lambda n, m: Path(m).name, beam.pvalue.AsSingleton(marker)),
                tmp_path / f"seen{index}",
                f"Seen{index}",
            )

    run_on_dask(build, scheduler)
    [made] = [path.name for path in markers.iterdir()]
    for index in range(3):
        assert read_json(tmp_path / f"seen{index}") == [made] * 10


def test_group_by_key_gathers_each_key_once_across_workers(scheduler, tmp_path):
    def build(pipeline):
        pairs = (
            pipeline
            | beam.Create([(f"k{n % 7}", n) for n in range(700)])
            | beam.Reshuffle()
            | beam.GroupByKey()
            | beam.MapTuple(lambda key, values: [key, len(list(values)), sum(values)])
        )
        write_sorted(pairs, tmp_path / "groups", "Groups")

    run_on_dask(build, scheduler, "--dask_reshuffle_partitions=8")
    expected = [[f"k{k}", 100, sum(range(k, 700, 7))] for k in range(7)]
    assert read_json(tmp_path / "groups") == expected


def test_read_from_text_reads_every_file(scheduler, tmp_path):
    for index in range(3):
        (tmp_path / f"in{index}.txt").write_text("".join(f"{index}-{line}\n" for line in range(50)))

    def build(pipeline):
        lines = pipeline | beam.io.ReadFromText(str(tmp_path / "in*.txt"))
        write_sorted(lines, tmp_path / "lines", "Lines")

    run_on_dask(build, scheduler)
    assert read_json(tmp_path / "lines") == sorted(f"{i}-{line}" for i in range(3) for line in range(50))


def _children() -> list:
    """Running child processes, except multiprocessing's resource tracker (it lives as long as this
    process)."""
    import psutil
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_without_an_address_a_local_cluster_runs_the_pipeline_and_is_shut_down(tmp_path):
    children_before = {child.pid for child in _children()}
    options = PipelineOptions(flags=["--dask_workers=2"])
    with beam.Pipeline(runner=DaskClusterRunner(), options=options) as pipeline:
        write_sorted(pipeline | beam.Create([3, 1, 2]), tmp_path / "out", "Out")
    assert read_json(tmp_path / "out") == [1, 2, 3]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the workers exit shortly after the cluster closes
        alive = [c for c in _children() if c.pid not in children_before]
        if not alive:
            break
        time.sleep(0.5)
    assert not alive, f"worker processes left running: {alive}"


# ---------------------------------------------------------------------------------------------- the pipeline


def agnews(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=PROJECT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "-1"})


def cluster_state(address: str) -> tuple[int, dict[str, str]]:
    """(the scheduler's count of task state transitions, {worker name: worker id}) now. Also starts the
    scheduler's task-stream recorder, which tasks_per_worker() reads."""
    with Client(address, timeout=START_SECONDS) as client:
        transitions = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
        workers = client.run(lambda dask_worker: (dask_worker.name, dask_worker.id))
        client.get_task_stream(count=1)
    return transitions, dict(workers.values())


def step_windows(stdout: str) -> dict[str, tuple[float, float]]:
    """{step: (started, done) in seconds since the epoch} from a run's --log-format json lines."""
    windows: dict[str, list[float]] = {}
    for line in stdout.splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("event") in ("step_started", "step_done"):
            moment = datetime.datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
            windows.setdefault(entry["step"], [0.0, 0.0])[entry["event"] == "step_done"] = moment
    return {step: (started, done) for step, (started, done) in windows.items()}


def tasks_per_step(address: str, since: float, windows: dict[str, tuple[float, float]]) -> dict:
    """{step: {worker address: tasks it computed}}: the scheduler's task stream since `since` (time.time()),
    each task given to the step during which it started computing. A worker that died or was restarted in
    between keeps what it did."""
    with Client(address, timeout=START_SECONDS) as client:
        records = client.get_task_stream(start=since)
    per_step = {step: collections.Counter() for step in windows}
    for record in records:
        for part in record["startstops"]:
            for step, (started, done) in windows.items():
                if part["action"] == "compute" and started <= part["start"] <= done:
                    per_step[step][record["worker"]] += 1
    return per_step


def warn_if_a_worker_was_lost(before: dict[str, str], after: dict[str, str]) -> None:
    """Dask recomputes a lost worker's results by design, so a worker that died or was restarted during a run
    is survived, not a failure; the warning keeps the workers' log tails in view to find out why."""
    if before != after:
        tails = "".join(f"--- {log.name}:\n" + "".join(log.read_text().splitlines(True)[-40:])
                        for log in sorted(CLUSTER_LOGS[0].glob("worker*.log")))
        warnings.warn(f"dask workers changed during the run: {before} -> {after}\n{tails}", stacklevel=2)


@pytest.mark.e2e
def test_ingest_to_transform_on_the_cluster_is_byte_identical_to_the_direct_runner(scheduler, direct_files,
                                                                                    tmp_path):
    transitions_before, workers_before = cluster_state(scheduler)
    started = time.time()
    on_dask = agnews(*UNTIL_TRANSFORM, "--pipeline-root", str(tmp_path / "dask"), "--beam-runner", "dask",
                     "--dask-address", scheduler, "--log-format", "json")
    assert on_dask.returncode == 0, on_dask.stderr[-3000:]
    assert step_files(tmp_path / "dask") == direct_files
    # Identical bytes are also what a silent fallback to the DirectRunner would give: the cluster did the
    # work, in each step (a step run by the DirectRunner would leave its time on the task stream empty).
    transitions_after, workers_after = cluster_state(scheduler)
    warn_if_a_worker_was_lost(workers_before, workers_after)
    windows = step_windows(on_dask.stdout)
    assert sorted(windows) == ["ingest", "transform", "validate"], on_dask.stdout[-3000:]
    per_step = tasks_per_step(scheduler, started, windows)
    assert all(sum(per_step[step].values()) >= 5 for step in windows), per_step
    computed = sum(per_step.values(), collections.Counter())
    assert len(computed) >= 2 and sum(computed.values()) >= 200, per_step
    assert transitions_after - transitions_before >= 3 * sum(computed.values())  # waiting, processing, memory


# ---------------------------------------------------------------------------------------------- portable
# runner


def _wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited with {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{what} did not listen on port {port} within {START_SECONDS}s")


@contextlib.contextmanager
def job_service_and_worker_pool(logs: Path, python_dir: Path):
    """(job endpoint, worker pool endpoint) of a local job service and an external SDK worker pool whose
    workers are the `python` found first in `python_dir`; PYTHONPATH lets the workers import the project."""
    job_port, pool_port = free_port(), free_port()
    env = {**os.environ, "PATH": os.pathsep.join([str(python_dir), os.environ.get("PATH", "")]),
           "PYTHONPATH": str(PROJECT), "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    job = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                            "--port", str(job_port)], stdout=subprocess.DEVNULL,
                           stderr=open(logs / "job_service.log", "w"), env=env, cwd=PROJECT)
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             "--service_port", str(pool_port)], stdout=subprocess.DEVNULL,
                            stderr=open(logs / "worker_pool.log", "w"), env=env, cwd=PROJECT)
    try:
        _wait_for_port(job_port, job, "the job service")
        _wait_for_port(pool_port, pool, "the worker pool")
        yield f"localhost:{job_port}", f"localhost:{pool_port}"
    finally:
        stop_processes([pool, job])


@pytest.fixture(scope="module")
def portable_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("portable-logs")


@pytest.fixture(scope="module")
def portable_service(portable_logs):
    """The pool starts each SDK worker as a bare `python`, so this venv's bin leads its PATH."""
    with job_service_and_worker_pool(portable_logs, Path(sys.executable).parent) as ends:
        yield ends


def job_workers_started(logs: Path) -> list[str]:
    """The ids of the SDK workers the pool started for jobs (not for the pipeline's own start-up probe)."""
    starts = [line for line in (logs / "worker_pool.log").read_text().splitlines()
              if "Starting worker with command" in line]
    return [line.split("worker_id=")[1].split(",")[0].strip("'\"") for line in starts
            if "agnews-pipeline-probe-" not in line]


def portable_args(job_endpoint: str, pool_endpoint: str) -> list[str]:
    return ["--beam-arg=--runner=PortableRunner", f"--beam-arg=--job_endpoint={job_endpoint}",
            "--beam-arg=--environment_type=EXTERNAL", f"--beam-arg=--environment_config={pool_endpoint}"]


@pytest.mark.e2e
def test_ingest_to_transform_on_the_portable_runner_is_byte_identical_to_the_direct_runner(
        portable_service, portable_logs, direct_files, tmp_path):
    workers_before = job_workers_started(portable_logs)
    completed = agnews(*UNTIL_TRANSFORM, "--pipeline-root", str(tmp_path / "portable"),
                       *portable_args(*portable_service))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert step_files(tmp_path / "portable") == direct_files
    # The job service ran the jobs on SDK workers it asked the external pool for: at least one per Beam step.
    started = job_workers_started(portable_logs)[len(workers_before):]
    assert len(started) >= 3, started


def test_a_portable_job_may_run_longer_than_beams_default_job_server_timeout():
    """Beam's --job_server_timeout (300 s by default) is also the deadline of the job's state and message
    streams: a healthy job still running at 300 s failed with DEADLINE_EXCEEDED (seen with
    --job_server_timeout=4 on a 7 s ingest). Unless the user sets it, a job service endpoint gets a week."""
    from apache_beam.options.pipeline_options import PortableOptions

    from library.beam_options import pipeline_options
    with socket.socket() as listener:  # something answers at the job endpoint
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        endpoint = f"--job_endpoint=localhost:{listener.getsockname()[1]}"
        default = pipeline_options(["--runner=PortableRunner", endpoint, "--environment_type=LOOPBACK"])
        chosen = pipeline_options(["--runner=PortableRunner", endpoint, "--job_server_timeout=60"])
    assert default.view_as(PortableOptions).job_server_timeout >= 24 * 3600
    assert chosen.view_as(PortableOptions).job_server_timeout == 60
    # no job service: Beam's default
    assert pipeline_options([]).view_as(PortableOptions).job_server_timeout == 300


def test_an_unreachable_job_service_fails_the_run_in_seconds_with_one_line(tmp_path):
    root = tmp_path / "root"
    started = time.monotonic()
    completed = agnews(
        "run",
        "--data",
        f"csv:{SAMPLE_DIR}",
        "--until",
        "ingest",
        "--pipeline-root",
        str(root),
        *portable_args(f"localhost:{free_port()}", f"localhost:{free_port()}"),
        timeout=120,
    )
    assert completed.returncode == 1
    assert time.monotonic() - started < 60
    [line] = [text for text in completed.stderr.splitlines() if "job service" in text]
    assert line.startswith("ERROR: ingest: no Beam job service answers at localhost:")
    assert "Traceback" not in completed.stderr + completed.stdout
    [run_dir] = (root / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not (run_dir / "ingest").exists()


def test_a_worker_pool_whose_python_lacks_beam_fails_the_run_in_seconds_with_one_line(tmp_path):
    """The pool's bare `python` is an interpreter without Beam: its workers die before connecting. Without the
    check the job waited minutes for them."""
    wrong = tmp_path / "wrong-bin"
    wrong.mkdir()
    system_python = Path("/usr/bin/python3")
    if system_python.exists() and subprocess.run([system_python, "-c", "import apache_beam"],
                                                 capture_output=True).returncode != 0:
        (wrong / "python").symlink_to(system_python)
    else:  # this venv's interpreter without site-packages: no Beam either
        (wrong / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "$@"\n')
        (wrong / "python").chmod(0o755)
    root = tmp_path / "root"
    with job_service_and_worker_pool(tmp_path, wrong) as (job, pool):
        started = time.monotonic()
        completed = agnews(
            "run",
            "--data",
            f"csv:{SAMPLE_DIR}",
            "--until",
            "ingest",
            "--pipeline-root",
            str(root),
            *portable_args(job, pool),
            timeout=120,
        )
        seconds = time.monotonic() - started
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert seconds < 60
    [line] = [text for text in completed.stderr.splitlines() if "worker pool" in text]
    assert line.startswith(
        f"ERROR: ingest: the Beam SDK worker pool at {pool} cannot start Beam workers (no SDK "
        "worker connected within 20s)"
    )
    assert f"restart the pool with {Path(sys.executable).parent} first on PATH" in line
    assert "Traceback" not in completed.stderr + completed.stdout
    [run_dir] = (root / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not (run_dir / "ingest").exists()  # nothing published


def test_an_unreachable_scheduler_fails_the_run_in_seconds_with_one_line(tmp_path):
    root = tmp_path / "root"
    started = time.monotonic()
    completed = agnews(
        "run",
        "--data",
        f"csv:{SAMPLE_DIR}",
        "--until",
        "ingest",
        "--pipeline-root",
        str(root),
        "--beam-runner",
        "dask",
        "--dask-address",
        f"tcp://127.0.0.1:{free_port()}",
        timeout=120,
    )
    assert completed.returncode == 1
    assert time.monotonic() - started < 60
    [line] = [text for text in completed.stderr.splitlines() if "dask scheduler" in text]
    assert line.startswith("ERROR: ingest: no dask scheduler answers at tcp://127.0.0.1:")
    assert "Traceback" not in completed.stderr + completed.stdout
    [run_dir] = (root / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not (run_dir / "ingest").exists()  # nothing published


@pytest.mark.parametrize("flags, message", [
    (["--beam-arg=--runner=NoSuchRunner"], "Beam cannot use --runner=NoSuchRunner"),
    (["--beam-arg=--no_such_beam_flag=1"], "Beam does not know the flag(s) --no_such_beam_flag"),
    (["--dask-address", "tcp://127.0.0.1:8786"], "--dask-address needs --beam-runner dask"),
    # Beam's own DaskRunner: with its full name, ingest used to fail with "too many values to unpack".
    (["--beam-arg=--runner=DaskRunner"], "Beam's own DaskRunner cannot run these steps"),
    (["--beam-arg=--runner=apache_beam.runners.dask.dask_runner.DaskRunner"],
     "Beam's own DaskRunner cannot run these steps (it mixes the outputs of multi-output transforms); use "
     "--beam-runner dask"),
])
def test_a_bad_runner_choice_is_one_line_before_anything_runs(tmp_path, flags, message):
    root = tmp_path / "root"
    completed = agnews_in_process("run", "--data", f"csv:{SAMPLE_DIR}", "--pipeline-root", root, *flags,
                                  check_code=2)
    assert message in completed.stderr and "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    assert not (root / "runs").exists()
