"""What lets the Beam steps run at size on dask (engines/dask/), on real dask.distributed clusters
started and stopped here on 127.0.0.1: combiner lifting bounds what a CombinePerKey shuffles; the watchdog
fails a stalled step in bounded time with one line and a cluster state dump; a worker killed during
transform's shuffle is survived (or the step fails in bounded time), never a hang."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import apache_beam as beam
import distributed  # noqa: F401 (a [dev] dependency: a broken install fails these tests, never skips them)
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from support.beam import (
    START_SECONDS,
    UNTIL_TRANSFORM,
    free_port,
    read_json,
    step_files,
    stop_processes,
    write_sorted,
)
from support.paths import PROJECT

from engines.dask.runner import DaskClusterRunner


@contextlib.contextmanager
def dask_cluster(logs: Path, workers: int, *worker_args: str):
    """(address, worker processes) of a `dask scheduler` and `workers` single-threaded `dask worker` processes
    without nannies (a killed worker stays dead), all ended by their ids when the block exits."""
    logs.mkdir(parents=True, exist_ok=True)
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT), str(PROJECT / "tests"), str(PROJECT / "tests" / "system")]
        ),
        "CUDA_VISIBLE_DEVICES": "-1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=open(logs / "scheduler.log", "w"), env=env)
    processes = []
    try:
        for index in range(workers):
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        "--no-dashboard",
                        "--name",
                        f"w{index}",
                        "--host",
                        "127.0.0.1",
                        *worker_args,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=open(logs / f"worker{index}.log", "w"),
                    env=env,
                    cwd=PROJECT,
                )
            )
        from distributed import Client
        with Client(address, timeout=START_SECONDS) as client:
            client.wait_for_workers(workers, timeout=START_SECONDS)
        yield address, processes
    finally:
        stop_processes(processes)
        stop_processes([scheduler])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> str:
    with dask_cluster(tmp_path_factory.mktemp("dask-logs"), 2) as (address, _):
        yield address


def run_pipeline(build, runner, *flags: str):
    """Builds a pipeline with build(pipeline), runs it to the end; the runner's result."""
    pipeline = beam.Pipeline(runner=runner, options=PipelineOptions(flags=list(flags)))
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    return result


# ---------------------------------------------------------------------------------------------- lifting

WORDS = [f"w{(index * 7919) % 50}" for index in range(20_000)]  # 50 distinct keys, 400 occurrences each


def _counts_and_sums(tmp_path: Path):
    def build(pipeline):
        words = pipeline | beam.Create(WORDS)
        write_sorted(words | beam.combiners.Count.PerElement(), tmp_path / "counts", "Counts")
        sums = (words | beam.Map(lambda word: (word, int(word[1:]))) | "SumPerKey" >> beam.CombinePerKey(sum))
        write_sorted(sums, tmp_path / "sums", "Sums")
    return build


def test_a_lifted_combine_shuffles_at_most_partitions_times_distinct_keys(cluster, tmp_path):
    """Count.PerElement and CombinePerKey(sum) over 20,000 elements in 4 partitions, 50 distinct keys: at most
    4 x 50 elements enter each shuffle (unlifted: all 20,000), and the results equal the DirectRunner's."""
    result = run_pipeline(
        _counts_and_sums(tmp_path / "dask"),
        DaskClusterRunner(),
        f"--dask_client_address={cluster}",
        "--dask_npartitions=4",
    )
    shuffles = {label: (partitions, elements) for label, partitions, elements in result.shuffles}
    [count] = [value for label, value in shuffles.items() if "CountCombineFn" in label]
    [summed] = [value for label, value in shuffles.items() if label.startswith("SumPerKey")]
    for partitions, elements in (count, summed):
        assert partitions == 4
        assert 50 <= elements <= partitions * 50  # every key at least once, at most once per partition
    # The sorted lists written at the end (ToList, a CombineGlobally: one key) shuffle one element per
    # partition.
    assert all(
        elements <= partitions for label, (partitions, elements) in shuffles.items() if "List" in label
    )

    run_pipeline(_counts_and_sums(tmp_path / "direct"), beam.runners.DirectRunner())
    for name in ("counts", "sums"):
        assert read_json(tmp_path / "dask" / name) == read_json(tmp_path / "direct" / name)
    assert read_json(tmp_path / "dask" / "counts") == [[f"w{key}", 400] for key in sorted(range(50), key=str)]


def test_without_lifting_every_element_is_shuffled(cluster, tmp_path):
    """The measurement the bound above is compared with (and proof that the count is of the shuffle's
    input)."""
    result = run_pipeline(_counts_and_sums(tmp_path), DaskClusterRunner(), f"--dask_client_address={cluster}",
                          "--dask_npartitions=4", "--dask_no_combiner_lifting")
    [(_, count_elements)] = [(p, e) for label, p, e in result.shuffles if "CountCombineFn" in label]
    assert count_elements == len(WORDS)


# thread -> _Explode.process calls in its current bundle (in a worker process)
_EXPLODE_CALLS: dict[int, int] = {}


class _Explode(beam.DoFn):
    def start_bundle(self):
        _EXPLODE_CALLS[threading.get_ident()] = 0

    def process(self, number):
        _EXPLODE_CALLS[threading.get_ident()] += 1
        yield from [number % 13] * 50


class _CallsSoFar(beam.DoFn):
    """Emits how many elements _Explode had processed in this bundle when this one arrived: 1 for the first if
    the two are fused (each output passed on at once), the partition's size if _Explode's outputs were
    collected first."""

    def process(self, number):
        yield _EXPLODE_CALLS[threading.get_ident()]


def test_a_chain_of_pardos_runs_fused_and_equals_the_direct_runner(cluster, tmp_path):
    """A DoFn that multiplies its elements by 50, a ParDo and the lifted Count's pre-combining ParDo, each the
    only reader of the one before, run as one chain: every output goes on to the next DoFn at once, so the 50x
    lists between them are never held or moved (Beam's fusion). A PCollection read twice (`numbers`) is not
    fused: both of its readers get all of it."""
    def build(out: Path):
        def pipeline_of(pipeline):
            numbers = pipeline | beam.Create(list(range(400)))
            exploded = numbers | "Explode" >> beam.ParDo(_Explode())
            write_sorted(
                exploded | "CallsSoFar" >> beam.ParDo(_CallsSoFar()) | beam.combiners.Count.PerElement(),
                out / "calls",
                "Calls",
            )
            write_sorted(numbers | "Halve" >> beam.Map(lambda n: n // 2) | "Distinct" >> beam.Distinct(),
                         out / "halves", "Halves")
        return pipeline_of

    run_pipeline(build(tmp_path / "direct"), "DirectRunner")
    run_pipeline(build(tmp_path / "dask"), DaskClusterRunner(), f"--dask_client_address={cluster}",
                 "--dask_npartitions=4")
    assert read_json(tmp_path / "dask" / "halves") == read_json(tmp_path / "direct" / "halves")
    calls = dict(map(tuple, read_json(tmp_path / "dask" / "calls")))
    assert sum(calls.values()) == 400 * 50
    # unfused, the first value seen would be a partition's size: 100
    assert min(calls) == 1, sorted(calls)[:5]


# ---------------------------------------------------------------------------------------------- watchdog

class _BlockUntil(beam.DoFn):
    """Blocks its task until `release` exists (or 180 s pass): a stalled pipeline with a bounded lifetime."""

    def __init__(self, release: str):
        self.release = release

    def process(self, element):
        deadline = time.monotonic() + 180
        while not Path(self.release).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield element


STALL_SECONDS = 10


def test_the_watchdog_fails_a_stalled_pipeline_within_its_bound_with_one_line_and_a_state_dump(
    cluster, tmp_path
):
    from contract.artifacts import ComponentError
    release = tmp_path / "release"

    def build(pipeline):
        _ = (
            pipeline
            | beam.Create([1, 2, 3])
            | beam.ParDo(_BlockUntil(str(release)))
            | beam.combiners.Count.Globally()
        )

    started = time.monotonic()
    try:
        with pytest.raises(ComponentError) as raised:
            run_pipeline(build, DaskClusterRunner(), f"--dask_client_address={cluster}",
                         f"--dask_stall_seconds={STALL_SECONDS}", f"--dask_log_dir={tmp_path}")
        seconds = time.monotonic() - started
    finally:
        release.touch()  # the blocked task ends, the cluster is free for the next test
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"no dask task started or finished for {STALL_SECONDS}s (workers w0 running, "
                              "w1 running)"), message
    dump = tmp_path / "dask_cluster_state.yaml"
    assert f"cluster state in {dump}" in message and "pipeline.dask_stall_seconds" in message
    assert "processing" in dump.read_text()  # the scheduler's and workers' task states
    # The stall limit, one poll and one probe of the scheduler, the dump, and the pipeline's own start.
    assert STALL_SECONDS <= seconds < STALL_SECONDS + 60, seconds


class _HoldMemory(beam.DoFn):
    """Fills its worker to 88% of its memory limit (above dask's pause threshold, 80%, below terminate, 95%)
    and holds it until `release` exists (or 180 s pass)."""

    def __init__(self, release: str):
        self.release = release

    def process(self, element):
        import psutil
        from distributed import get_worker
        limit = get_worker().memory_manager.memory_limit
        # written: resident
        ballast = b"\x01" * max(0, int(0.88 * limit) - psutil.Process().memory_info().rss)
        deadline = time.monotonic() + 180
        while not Path(self.release).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield len(ballast)


def test_the_watchdog_fails_the_pipeline_when_every_worker_stays_paused(tmp_path):
    from contract.artifacts import ComponentError
    release = tmp_path / "release"
    with dask_cluster(tmp_path / "logs", 2, "--memory-limit", "2GB") as (address, _):
        def build(pipeline):
            _ = (pipeline | beam.Create([1, 2]) | beam.ParDo(_HoldMemory(str(release)))
                 | beam.combiners.Count.Globally())

        started = time.monotonic()
        try:
            with pytest.raises(ComponentError) as raised:
                run_pipeline(
                    build,
                    DaskClusterRunner(),
                    f"--dask_client_address={address}",
                    "--dask_npartitions=2",
                    "--dask_stall_seconds=300",
                    "--dask_paused_seconds=15",
                )
            seconds = time.monotonic() - started
        finally:
            release.touch()
    message = str(raised.value)
    assert re.match(r"every dask worker \(w0, w1\) has been paused for (1[5-9]|2\d)s", message), message
    assert seconds < 300, seconds  # the paused rule, not the stall limit


def _stalled_beam_step(inputs, output_dir: Path, config, runtime):
    """A Beam step (as the real ones: pipeline_options(runtime.beam_args)) whose one task blocks."""
    from library.beam_options import pipeline_options
    (output_dir / "partial.txt").write_text("written before the stall")
    with beam.Pipeline(options=pipeline_options(runtime.beam_args)) as pipeline:
        _ = pipeline | beam.Create([1]) | beam.ParDo(_BlockUntil(os.environ["STALL_RELEASE"]))
    raise AssertionError("the stalled pipeline finished")


def test_a_stalled_step_fails_the_run_in_bounded_time_and_publishes_nothing(cluster, tmp_path, monkeypatch):
    from contract.component_spec import ComponentSpec
    from contract.config_loading import load_config
    from pipeline.dag import Step
    from pipeline.metadata import MetadataStore
    from pipeline.runner import Runner
    monkeypatch.setenv("STALL_RELEASE", str(tmp_path / "release"))
    (tmp_path / "data").mkdir()
    root = tmp_path / "root"
    config = load_config(flags={"pipeline.root": str(root), "ingest.data": f"csv:{tmp_path / 'data'}",
                                "pipeline.beam_runner": "dask", "pipeline.dask_address": cluster,
                                "pipeline.dask_stall_seconds": STALL_SECONDS})
    lines: list[str] = []
    stalled = ComponentSpec(__name__, executor=f"{__name__}:_stalled_beam_step", outputs=("examples",),
                            config_section="ingest")
    runner = Runner(config, log=lines.append, steps=(Step("ingest", stalled),))
    started = time.monotonic()
    try:
        result = runner.run()
    finally:
        runner.close()
        (tmp_path / "release").touch()
    assert time.monotonic() - started < STALL_SECONDS + 60
    assert result.status == "failed"
    failed_dir = result.run_dir / "ingest.failed"
    assert result.error.startswith(
        f"ingest: no dask task started or finished for {STALL_SECONDS}s (workers "
    ), result.error
    assert f"cluster state in {failed_dir / 'dask_cluster_state.yaml'}" in result.error
    assert (failed_dir / "dask_cluster_state.yaml").stat().st_size > 0
    assert not (result.run_dir / "ingest").exists()  # nothing published
    store = MetadataStore(root / "metadata.sqlite")
    assert store.run(result.run_id)["status"] == "failed"
    store.close()


# ---------------------------------------------------------------------------------------------- killed worker

KILLED_RUN_SECONDS = 900  # the sample's ingest -> transform on this loaded 2-core machine, plus recomputation


def _shuffle_holders():
    """A function for the scheduler (nested, so it travels by value): {worker name: shuffle results it
    holds}."""
    def shuffle_results_per_worker(dask_scheduler) -> dict:
        held: dict = {}
        for key, task in dask_scheduler.tasks.items():
            if "shuffle" in str(key) and task.state == "memory":
                for worker in task.who_has:
                    held[worker.name] = held.get(worker.name, 0) + 1
        return held
    return shuffle_results_per_worker


@pytest.mark.e2e
def test_a_worker_killed_in_transforms_shuffle_is_survived_byte_identical_or_fails_in_bounded_time(
        direct_files, tmp_path):
    """SIGKILL one of 3 workers (no nanny: it stays dead) while it holds shuffle results of the transform
    step: dask recomputes what was lost on the other two, and every output byte equals the DirectRunner's; or
    the run fails with one line. It never hangs: the run is bounded (and the watchdog stands behind it)."""
    from distributed import Client
    with dask_cluster(tmp_path / "logs", 3) as (address, workers):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "PYTHONUNBUFFERED": "1"}
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apps.cli",
                *UNTIL_TRANSFORM,
                "--pipeline-root",
                str(tmp_path / "dask"),
                "--beam-runner",
                "dask",
                "--dask-address",
                address,
                "--set",
                "pipeline.dask_stall_seconds=180",
            ],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(run.stdout), daemon=True)
        reader.start()
        started = time.monotonic()
        killed = None
        try:
            with Client(address, timeout=START_SECONDS) as client:
                while (
                    killed is None and run.poll() is None and time.monotonic() - started < KILLED_RUN_SECONDS
                ):
                    if any("transform" in line and "running" in line for line in lines):
                        held = client.run_on_scheduler(_shuffle_holders())
                        if held:
                            killed = max(held, key=held.get)
                            workers[int(killed[1:])].send_signal(signal.SIGKILL)
                            transform_done_at_kill = any(
                                "transform" in line and "done" in line for line in lines
                            )
                            break
                    time.sleep(0.1)
            assert killed is not None, "transform's shuffle was never seen on the cluster:\n" + "".join(lines)
            assert not transform_done_at_kill
            run.wait(timeout=KILLED_RUN_SECONDS - (time.monotonic() - started))
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        stderr = run.stderr.read()
        reader.join(timeout=10)
        assert workers[int(killed[1:])].wait(timeout=30) == -signal.SIGKILL
    if run.returncode == 0:
        assert step_files(tmp_path / "dask") == direct_files
    else:
        assert run.returncode == 1 and "Traceback" not in stderr, stderr[-3000:]
        assert len([line for line in stderr.splitlines() if line.startswith("ERROR:")]) == 1, stderr[-3000:]


class _FailOnceFlagged(beam.DoFn):
    """Slow (0.5 s an element); raises once `flag` exists, as a recomputation that went wrong would
    (tf.Transform's assertion that a recomputed side input names the folder its graph was loaded from)."""

    def __init__(self, flag: str):
        self.flag = flag

    def process(self, element):
        time.sleep(0.5)
        if Path(self.flag).exists():
            raise AssertionError("the recomputed side input differs")
        yield element


def test_a_task_failing_after_a_worker_left_fails_the_step_with_one_line_naming_the_worker(tmp_path):
    from distributed import Client

    from contract.artifacts import ComponentError
    flag = tmp_path / "flag"
    with dask_cluster(tmp_path / "logs", 2) as (address, workers):
        def kill_w1_then_flag():
            with Client(address, timeout=START_SECONDS) as client:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:  # until w1 computes a task of the pipeline
                    names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
                    if any(names.get(a) == "w1" and keys for a, keys in client.processing().items()):
                        break
                    time.sleep(0.1)
                workers[1].send_signal(signal.SIGKILL)
                while time.monotonic() < deadline and len(client.scheduler_info()["workers"]) > 1:
                    time.sleep(0.1)
                flag.touch()

        killer = threading.Thread(target=kill_w1_then_flag, daemon=True)
        killer.start()

        def build(pipeline):
            _ = (
                pipeline
                | beam.Create(list(range(80)))
                | beam.Reshuffle()
                | beam.ParDo(_FailOnceFlagged(str(flag)))
                | beam.combiners.Count.Globally()
            )

        with pytest.raises(ComponentError) as raised:
            run_pipeline(build, DaskClusterRunner(), f"--dask_client_address={address}")
        killer.join(timeout=60)
    message = str(raised.value)
    assert flag.exists() and "\n" not in message, message
    assert message.startswith(
        "dask worker w1 left the cluster during the step (killed, or restarted by its nanny "
        "above its memory limit"
    ), message
    assert "(AssertionError: the recomputed side input differs); nothing was published" in message, message


# ---------------------------------------------------------------------------------------------- settings

@pytest.mark.parametrize(
    "overrides, message",
    [
        (["pipeline.dask_stall_seconds=0"], "pipeline.dask_stall_seconds must be > 0, got 0"),
        (
            ["pipeline.dask_worker_memory=lots"],
            "pipeline.dask_worker_memory must be auto or a size: 'lots' is not a size like 500MB, 2GB",
        ),
        (["pipeline.dask_worker_memory=4 parsecs"], "pipeline.dask_worker_memory must be auto or a size"),
    ],
)
def test_bad_dask_settings_fail_before_any_work(overrides, message):
    from contract.config_checks import ConfigError
    from contract.config_loading import load_config
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


class _WhereAmI(beam.DoFn):
    """Each element becomes what the dask worker running it is, read from the worker itself: [its process id,
    its memory limit, its threads, whether a nanny started it, the workers the scheduler knows]."""

    def setup(self):
        from distributed import get_client
        self.workers = len(get_client().scheduler_info()["workers"])

    def process(self, element):
        from distributed import get_worker
        worker = get_worker()
        yield [
            os.getpid(),
            worker.memory_manager.memory_limit,
            worker.state.nthreads,
            worker.nanny is not None,
            self.workers,
        ]


@pytest.mark.parametrize("memory, limit", [("1.5 GB", 1_500_000_000), ("3GiB", 3 * 2**30)])
def test_the_local_cluster_has_the_configured_workers_and_memory_limit(memory, limit, tmp_path):
    """From the configuration to the workers: pipeline.dask_workers processes (not threads of this one), each
    started by a nanny with 1 thread and pipeline.dask_worker_memory as its limit (GB: 10^9, GiB: 2^30)."""
    from contract.config_loading import load_config
    from library.beam_options import all_beam_args, pipeline_options
    config = load_config(None, ["pipeline.beam_runner=dask", f"pipeline.dask_worker_memory={memory}",
                                "pipeline.dask_workers=2"])
    with beam.Pipeline(options=pipeline_options(all_beam_args(config.pipeline))) as pipeline:
        facts = (pipeline | beam.Create(range(40)) | beam.Reshuffle() | beam.ParDo(_WhereAmI())
                 | beam.Map(tuple) | beam.Distinct())
        write_sorted(facts, tmp_path / "workers", "Workers")
    seen = read_json(tmp_path / "workers")
    assert seen and all(pid != os.getpid() for pid, *_ in seen), seen
    assert {tuple(facts) for _, *facts in seen} == {(limit, 1, True, 2)}, seen


@pytest.mark.parametrize("flag, message", [
    ("--dask_paused_seconds=-5", "--dask_paused_seconds must be more than 0, got -5"),
    ("--dask_paused_seconds=0", "--dask_paused_seconds must be more than 0, got 0"),
    ("--dask_stall_seconds=-1", "--dask_stall_seconds must be 0 (wait forever) or more, got -1"),
    ("--dask_workers=0", "--dask_workers must be at least 1, got 0"),
    ("--dask_paused_seconds=soon", "--dask_paused_seconds must be a number of seconds, got 'soon'"),
    ("--dask_workers=two", "--dask_workers must be a whole number, got 'two'"),
])
def test_an_adapter_option_that_cannot_work_fails_with_one_line_before_a_cluster_starts(flag, message):
    from contract.artifacts import ComponentError
    started = time.monotonic()
    with pytest.raises(ComponentError) as raised:
        run_pipeline(lambda pipeline: pipeline | beam.Create([1]), DaskClusterRunner(), flag)
    assert str(raised.value) == message
    assert time.monotonic() - started < 5  # no LocalCluster was started
