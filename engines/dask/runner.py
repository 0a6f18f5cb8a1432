"""The runner of --beam-runner dask (DaskClusterRunner, a subclass of Beam's DaskRunner) and its result (items
2, 7 and 10 of the package docstring): it checks its options, translates the pipeline (translation.py), starts
a LocalCluster for the pipeline unless --dask_client_address names a scheduler, and computes every leaf (only
its count comes back) and every shuffle's input size at once; the result waits for them, watched by the
watchdog, then closes the client and the cluster."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import dask
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.dask import dask_runner
from apache_beam.runners.runner import PipelineState

from contract.artifacts import ComponentError
from contract.units import parse_size
from engines.dask.translation import ConsumerCount, PerPCollectionVisitor, adapter_overrides
from engines.dask.watchdog import PAUSED_SECONDS, Watchdog, scheduler_probe
from library.folder_layouts import DASK_STATE_DUMP

# how often the client checks the computation's progress
POLL_SECONDS = 5
# how long it waits for the scheduler's answer (then counts it as no progress)
PROBE_SECONDS = 30
# how long a stalled step waits for the cluster state dump
DUMP_SECONDS = 60
# For the LocalCluster started for a pipeline. A worker whose event loop is blocked (a long garbage collection
# on a loaded machine) used to drop transfers after dask's default 30 s, which recovery then deadlocked on.
LOCAL_CLUSTER_CONFIG = {"distributed.comm.timeouts.tcp": "300s", "distributed.comm.timeouts.connect": "120s"}


def _lenient(number_type: type):
    """An argparse type that keeps a value it cannot convert as text, for _check_adapter_options to refuse in
    one line (argparse itself would print its whole usage text)."""
    def convert(text: str):
        try:
            return number_type(text)
        except ValueError:
            return text
    convert.__name__ = number_type.__name__
    return convert


class DaskAdapterOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--dask_workers",
            type=_lenient(int),
            default=2,
            help="Without --dask_client_address: worker processes of the LocalCluster started "
            "for the pipeline (1 thread each).",
        )
        parser.add_argument("--dask_reshuffle_partitions", type=_lenient(int), default=8,
                            help="Reshuffle splits its input into at least this many partitions.")
        parser.add_argument("--dask_no_combiner_lifting", action="store_true",
                            help="Shuffle every element of a CombinePerKey (to measure what lifting saves).")
        parser.add_argument(
            "--dask_worker_memory",
            default="auto",
            help="Without --dask_client_address: memory limit of each worker of the LocalCluster "
            "(e.g. 4GiB; auto: the machine's memory divided by the workers). A worker spills "
            "to disk at 70%% of it and pauses at 80%%.",
        )
        parser.add_argument("--dask_stall_seconds", type=_lenient(float), default=600,
                            help="Fail the pipeline when no task starts or finishes for this long, or every "
                                 "worker is paused for min(this, --dask_paused_seconds); 0: wait forever.")
        parser.add_argument("--dask_paused_seconds", type=_lenient(float), default=PAUSED_SECONDS,
                            help="Fail the pipeline when every worker has been paused (memory) for this long "
                                 "(at most --dask_stall_seconds).")
        parser.add_argument("--dask_log_dir", default=None,
                            help="Where a stalled pipeline writes the cluster's state.")


def worker_memory_limit(setting: str) -> str | int:
    """--dask_worker_memory for LocalCluster: 'auto' or bytes, read with the project's one size grammar
    (contract/units.py: 4GB = 4*10^9, 4GiB = 4*2^30, as dask reads them too)."""
    if setting == "auto":
        return "auto"
    return parse_size(setting)


class DaskClusterRunnerResult(dask_runner.DaskRunnerResult):
    """Waits for every leaf, watched by a Watchdog, then closes the client and the LocalCluster started for
    the pipeline. After it finishes, `shuffles` lists (label, input partitions, elements) of every
    GroupByKey."""

    def __init__(self, client, futures, cluster=None, shuffles=(), stall_seconds: float = 0,
                 log_dir: str | None = None, paused_seconds: float = PAUSED_SECONDS):
        super().__init__(client, futures)
        self._cluster = cluster
        self._shuffle_futures = list(shuffles)
        self._stall_seconds, self._paused_seconds = stall_seconds, paused_seconds
        self._log_dir = log_dir
        # address -> name of every worker seen while waiting
        self._workers_seen: dict[str, str] = {}
        self.shuffles: list[tuple[str, int, int]] = []

    def wait_until_finish(self, duration=None) -> str:
        try:
            self._wait(None if duration is None else duration / 1000)
            self.shuffles = [(label, partitions, future.result()) for label, partitions, future in
                             self._shuffle_futures]
            for label, partitions, elements in self.shuffles:
                logging.getLogger(__name__).info(
                    "shuffle %s: %d elements from %d partitions", label, elements, partitions
                )
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            if self._state in (PipelineState.DONE, PipelineState.FAILED):
                self.close()
        return self._state

    def _wait(self, duration: float | None) -> None:
        import dask.distributed as ddist
        deadline = None if duration is None else time.monotonic() + duration
        watchdog = Watchdog(self._stall_seconds, self._paused_seconds) if self._stall_seconds > 0 else None
        pending = [*self.futures, *(future for _, _, future in self._shuffle_futures)]
        self._note_workers(self._probe())
        while pending:
            try:
                done, not_done = ddist.wait(pending, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done, not_done = (), pending
            for future in done:
                self._result(future)
            pending = list(not_done)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the dask computation did not finish within {duration:.0f}s")
            answer = self._probe() if pending else None
            self._note_workers(answer)
            problem = watchdog.check(answer) if watchdog and pending else None
            if problem:
                raise ComponentError(
                    f"{problem}; stopped the step{self._dump_state()} (pipeline.dask_stall_seconds "
                    f"is {self._stall_seconds:g}s)"
                )

    def _note_workers(self, answer: tuple[int, dict] | None) -> None:
        if answer is not None:
            self._workers_seen.update({address: name for address, (name, _) in answer[1].items()})

    def _result(self, future) -> None:
        """A finished future's result; a task's error is raised here, on the client. When a worker left the
        cluster during the computation (killed, or restarted by its nanny over its memory limit), dask
        recomputed its results, and an error then is most likely that recomputation's: the error says so, in
        one line."""
        try:
            future.result()
        except Exception as error:
            answer = self._probe()
            lost = sorted(
                {
                    str(name)
                    for address, name in self._workers_seen.items()
                    if answer is not None and address not in answer[1]
                }
            )
            if not lost:
                raise
            reason = (str(error).strip().splitlines() or [""])[0][:300]
            raise ComponentError(
                f"dask worker {', '.join(lost)} left the cluster during the step (killed, or restarted "
                "by its nanny "
                "above its memory limit: the step's log says which), and a task failed after dask "
                "recomputed its "
                f"results ({type(error).__name__}: {reason}); nothing was published. Run it again, "
                "with more memory "
                f"per worker (pipeline.dask_worker_memory) if the log shows a memory restart"
            ) from None

    def _probe(self) -> tuple[int, dict] | None:
        try:
            return self.client.sync(self.client._run_on_scheduler, scheduler_probe(),
                                    callback_timeout=PROBE_SECONDS)
        except (TimeoutError, OSError):
            return None

    def _dump_state(self) -> str:
        """Writes the cluster's state into the step's log folder, if the step gave one; the clause naming
        it."""
        if not self._log_dir:
            return ""
        path = Path(self._log_dir) / DASK_STATE_DUMP
        done = threading.Event()

        # the scheduler or a worker may be too busy to answer: bounded, on a thread
        def dump():
            try:
                self.client.dump_cluster_state(str(path), format="yaml")
            # a diagnosis that fails must not hide the stall
            except Exception:
                pass
            finally:
                done.set()

        threading.Thread(target=dump, daemon=True).start()
        done.wait(DUMP_SECONDS)
        written = path.with_name(path.name + ".yaml")
        return f"; cluster state in {written}" if written.exists() else ""

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _check_adapter_options(adapter: DaskAdapterOptions) -> None:
    """One line for a value that cannot work (before any cluster starts)."""
    for name, number_type in (("dask_workers", int), ("dask_reshuffle_partitions", int),
                              ("dask_stall_seconds", float), ("dask_paused_seconds", float)):
        if not isinstance(getattr(adapter, name), (int, float)):
            kind = "a whole number" if number_type is int else "a number of seconds"
            raise ComponentError(f"--{name} must be {kind}, got {getattr(adapter, name)!r}")
    for name, value, works, wanted in (
        ("dask_workers", adapter.dask_workers, adapter.dask_workers >= 1, "at least 1"),
        (
            "dask_reshuffle_partitions",
            adapter.dask_reshuffle_partitions,
            adapter.dask_reshuffle_partitions >= 1,
            "at least 1",
        ),
        (
            "dask_stall_seconds",
            adapter.dask_stall_seconds,
            adapter.dask_stall_seconds >= 0,
            "0 (wait forever) or more",
        ),
        ("dask_paused_seconds", adapter.dask_paused_seconds, adapter.dask_paused_seconds > 0, "more than 0"),
    ):
        if not works:
            raise ComponentError(f"--{name} must be {wanted}, got {value:g}")


class DaskClusterRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner, with every output of a multi-output ParDo in its own bag and every leaf computed."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist

        dask_options = options.view_as(dask_runner.DaskOptions).get_all_options(
            drop_default=True, current_only=True
        )
        bag_kwargs = dask_runner.DaskOptions._extract_bag_kwargs(dask_options)
        adapter = options.view_as(DaskAdapterOptions)
        _check_adapter_options(adapter)

        pipeline.replace_all(adapter_overrides(lift_combiners=not adapter.dask_no_combiner_lifting))
        counter = ConsumerCount()
        pipeline.visit(counter)
        visitor = PerPCollectionVisitor(bag_kwargs, adapter.dask_reshuffle_partitions)
        visitor.consumers = counter.consumers
        pipeline.visit(visitor)
        # only a number per leaf comes back
        leaves = [bag.count() for bag in visitor.leaves()]

        # its INFO lines drown the pipeline's output
        logging.getLogger("distributed").setLevel(logging.WARNING)
        cluster = None
        if not dask_options.get("address") and not dask_options.get("scheduler_file"):
            # Set in this process before the cluster starts: its workers (started by nannies) inherit it.
            dask.config.set(LOCAL_CLUSTER_CONFIG)
            cluster = ddist.LocalCluster(
                n_workers=adapter.dask_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                memory_limit=worker_memory_limit(adapter.dask_worker_memory),
            )
            dask_options["address"] = cluster
        try:
            client = ddist.Client(**dask_options)
        except BaseException:
            if cluster is not None:
                cluster.close()
            raise
        # One computation, so the shuffles' inputs that the counts read are computed once.
        futures = client.compute([*leaves, *(count for _, _, count in visitor.shuffles)])
        shuffles = [(label, partitions, future) for (label, partitions, _), future in
                    zip(visitor.shuffles, futures[len(leaves):])]
        futures = futures[:len(leaves)]
        return DaskClusterRunnerResult(client, futures, cluster, shuffles, adapter.dask_stall_seconds,
                                       adapter.dask_log_dir, adapter.dask_paused_seconds)
