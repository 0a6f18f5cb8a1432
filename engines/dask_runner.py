"""A thin adapter over Beam's DaskRunner (apache_beam.runners.dask, Beam 2.77) that closes its gaps, so a pipeline
with several outputs and sinks runs on a dask.distributed cluster. Dask stays the engine: every Beam transform
becomes dask bag operations, scheduled by dask.distributed.

What Beam's DaskRunner lacks, and what this class does instead (each is covered by tests/test_beam_engines.py,
on plain Beam transforms):
  1. One bag per transform: every tagged output of a multi-output ParDo (`with_outputs`, `Partition`) lands in
     the same bag, so each consumer receives the mixture. Here bags are kept per PCollection: a ParDo emits
     (tag, value) pairs and each output PCollection is the bag filtered to its tag.
  2. Only the last visited bag is computed, so in a pipeline with several sinks the other branches silently
     never run. Here every leaf PCollection (one no transform consumes) is computed, reduced to its count so
     nothing but a number travels back to the client.
  3. Elements a DoFn emits in finish_bundle are dropped (results are read before finish_bundle runs), and the
     receiver list is shared by every bundle run from the same deserialized task. Here each bundle gets fresh
     receivers, read after finish_bundle. Beam's file sinks (WriteToText, ...) emit their results there.
  4. `Read` (and `Impulse`) become no-ops, so ReadFromText / ReadFromTFRecord produce nothing. Here `Read` splits
     its bounded source on the client and reads one split per partition; `Impulse` is a one-element bag.
  5. Side inputs are recomputed inside every task that uses them (with dask's default scheduler for bags, not
     the cluster). Here a side input is a dask Item computed once on the cluster and broadcast to the tasks.
  6. `Reshuffle` is an identity, and `Create` puts up to 128 elements into one partition, so a pipeline that
     starts from a short list (e.g. a list of file chunks) runs on one worker. Here `Reshuffle` splits its
     input into at least `--dask_reshuffle_partitions` partitions.
  7. The client (and the LocalCluster it may start) is never closed. Here the result closes both when the
     pipeline finishes or fails; without --dask_client_address a LocalCluster of --dask_workers processes is
     started for the pipeline.
What makes it hold at size (tests/test_dask_scale.py):
  8. No combiner lifting: CombinePerKey runs as a GroupByKey of every element (a vocabulary's every token
     occurrence). Here, as in Beam's DirectRunner, each partition pre-combines per key before the shuffle
     (LiftedCombinePerKey); the result lists each GroupByKey's input size (`shuffles`, also logged).
  9. Per-element wrappers: in the global window, GroupByKey shuffles the (key, value) pairs themselves (no
     WindowedValue, no GroupAlsoByWindow step), and a ParDo with one output returns bare values, not (tag, value).
     The WindowedValue a DoFn needs is built around one shared GlobalWindow.
 11. Every ParDo materialized its whole output as a list before the next ParDo read it (and moved it to another
     worker when dask placed the next task there). Here, as in Beam's own runners (fusion), a chain of ParDos
     each the only reader of the one before runs in one task per partition, each output passed on at once: a
     tokenizer's list of every token occurrence of a partition, for instance, never exists.
 10. A stuck computation waits forever. Here a watchdog fails the pipeline with one line when no task starts or
     finishes for --dask_stall_seconds, or every worker stays paused (memory), after writing the cluster's state
     to --dask_log_dir. The LocalCluster gets longer comm timeouts and --dask_worker_memory as its limit.
A ParDo's dask tasks are named after its Beam label (the dashboard, task stream and state dump show which step
runs). Only the global window is supported, as in Beam's DaskRunner (timestamps and windows are not carried).
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
import typing as t
from pathlib import Path

import apache_beam as beam
import dask
import dask.bag as db
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor, PTransformOverride
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask import dask_runner, overrides
from apache_beam.runners.dask import transform_evaluator as beam_ops
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.combiners import LiftedCombinePerKey
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from contract.artifacts import ComponentError
from library.layouts import DASK_STATE_DUMP

READ_BUNDLE_BYTES = 64 << 20  # desired size of one split of a file source (one partition)
POLL_SECONDS = 5  # how often the client checks the computation's progress
PROBE_SECONDS = 30  # how long it waits for the scheduler's answer (then counts it as no progress)
PAUSED_SECONDS = 60  # default of --dask_paused_seconds: every worker paused this long fails the step
DUMP_SECONDS = 60  # how long a stalled step waits for the cluster state dump
# For the LocalCluster started for a pipeline. A worker whose event loop is blocked (a long garbage collection on
# a loaded machine) used to drop transfers after dask's default 30 s, which recovery then deadlocked on.
LOCAL_CLUSTER_CONFIG = {"distributed.comm.timeouts.tcp": "300s", "distributed.comm.timeouts.connect": "120s"}


def _lenient(number_type: type):
    """An argparse type that keeps a value it cannot convert as text, for _check_adapter_options to refuse in one
    line (argparse itself would print its whole usage text)."""
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
        parser.add_argument("--dask_workers", type=_lenient(int), default=2,
                            help="Without --dask_client_address: worker processes of the LocalCluster started "
                                 "for the pipeline (1 thread each).")
        parser.add_argument("--dask_reshuffle_partitions", type=_lenient(int), default=8,
                            help="Reshuffle splits its input into at least this many partitions.")
        parser.add_argument("--dask_no_combiner_lifting", action="store_true",
                            help="Shuffle every element of a CombinePerKey (to measure what lifting saves).")
        parser.add_argument("--dask_worker_memory", default="auto",
                            help="Without --dask_client_address: memory limit of each worker of the LocalCluster "
                                 "(e.g. 4GiB; auto: the machine's memory divided by the workers). A worker spills "
                                 "to disk at 70%% of it and pauses at 80%%.")
        parser.add_argument("--dask_stall_seconds", type=_lenient(float), default=600,
                            help="Fail the pipeline when no task starts or finishes for this long, or every "
                                 "worker is paused for min(this, --dask_paused_seconds); 0: wait forever.")
        parser.add_argument("--dask_paused_seconds", type=_lenient(float), default=PAUSED_SECONDS,
                            help="Fail the pipeline when every worker has been paused (memory) for this long "
                                 "(at most --dask_stall_seconds).")
        parser.add_argument("--dask_log_dir", default=None,
                            help="Where a stalled pipeline writes the cluster's state.")


# ---------------------------------------------------------------------------------------------- overrides


def _in_global_window(applied: AppliedPTransform) -> bool:
    return applied.inputs[0].windowing.is_default()


class _LiftCombinePerKey(PTransformOverride):
    """CombinePerKey as Beam's DirectRunner runs it (LiftedCombinePerKey): each bundle, here one partition,
    combines its values per key before the shuffle, which then moves at most partitions x distinct keys
    accumulators instead of every element (Count.PerElement over a vocabulary's token occurrences, ToList,
    CombineGlobally, Count.PerKey all are CombinePerKeys)."""

    def matches(self, applied: AppliedPTransform) -> bool:
        return isinstance(applied.transform, beam.CombinePerKey) and _in_global_window(applied)

    def get_replacement_transform_for_applied_ptransform(self, applied: AppliedPTransform):
        transform = applied.transform
        try:
            return LiftedCombinePerKey(transform.fn, transform.args, transform.kwargs)
        except NotImplementedError:  # 10 side inputs or more: Beam's DirectRunner keeps the transform too
            return transform


class _GroupByKeyInGlobalWindow(PTransformOverride):
    """GroupByKey in the global window as one dask shuffle of the (key, value) pairs themselves. Beam's DaskRunner
    translation (ReifyWindows, GroupByKeyOnly, GroupAlsoByWindow) wraps every element in a WindowedValue for
    the shuffle and runs one more ParDo after it, which only the global window makes unnecessary."""

    def matches(self, applied: AppliedPTransform) -> bool:
        return applied.transform.__class__ == beam.GroupByKey and _in_global_window(applied)

    def get_replacement_transform_for_applied_ptransform(self, applied: AppliedPTransform):
        return overrides._GroupByKeyOnly()


def adapter_overrides(lift_combiners: bool = True) -> list[PTransformOverride]:
    """Applied in this order: a lifted CombinePerKey contains a GroupByKey, replaced next; Beam's own overrides
    (Create, Reshuffle, Read, Flatten, and GroupByKey in other windows) last."""
    lifting = [_LiftCombinePerKey()] if lift_combiners else []
    return [*lifting, _GroupByKeyInGlobalWindow(), *overrides.dask_overrides()]


# ---------------------------------------------------------------------------------------------- ParDo


@dataclasses.dataclass
class _ListReceiver(Receiver):
    tag: str | None
    values: list

    def receive(self, windowed_value: WindowedValue):
        self.values.append((self.tag, windowed_value.value))


class _ValueReceiver(_ListReceiver):
    """For a DoFn with one output: bare values, no (tag, value) tuple per element."""

    def receive(self, windowed_value: WindowedValue):
        self.values.append(windowed_value.value)


class _Receivers(dict):
    """tag -> receiver; every receiver appends to one list: (tag, value), or bare values if `tagged` is False."""

    def __init__(self, tagged: bool):
        super().__init__()
        self.outputs: list = []
        self._receiver = _ListReceiver if tagged else _ValueReceiver

    def __missing__(self, tag):
        # Without tags, an output the transform did not declare has no consumer: it goes to a list read by no one.
        self[tag] = self._receiver(tag, self.outputs if self._receiver is _ListReceiver or tag is None else [])
        return self[tag]


# One instance for every element: GlobalWindow() parses a proto for its end timestamp each time it is built, which
# was a quarter of a worker's time in transform (dask's profiler, 123,800 rows).
_GLOBAL_WINDOWS = (GlobalWindow(),)


def _windowed(value) -> WindowedValue:
    return value if isinstance(value, WindowedValue) else WindowedValue(value, 0, _GLOBAL_WINDOWS)


class _Forward(Receiver):
    """The main output of one step of a fused chain, handed element by element to the next step's DoFn."""

    def __init__(self, invoker):
        self.invoker = invoker

    def receive(self, windowed_value: WindowedValue):
        self.invoker.invoke_process(windowed_value)


@dataclasses.dataclass(frozen=True)
class _Step:
    """One ParDo of a fused chain: its DoFn and what a bundle of it needs besides its input."""
    fn: beam.DoFn
    label: str
    args: tuple
    kwargs: dict
    window_fn: t.Any
    side_views: tuple  # (view class, view options) of each side input


def _invoker(step: _Step, receivers: dict, side_values: list) -> DoFnInvoker:
    side_inputs = [SideInputMap(view_class, view_options, [_windowed(v) for v in values])
                   for (view_class, view_options), values in zip(step.side_views, side_values)]
    handler = _OutputHandler(window_fn=step.window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                             per_element_output_counter=None, output_batch_converter=None,
                             process_yields_batches=False, process_batch_yields_elements=False)
    return DoFnInvoker.create_invoker(
        DoFnSignature(step.fn), handler, context=DoFnContext(step.label, state=None), side_inputs=side_inputs,
        input_args=list(step.args), input_kwargs=step.kwargs, user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())


def _run_bundle(items, steps: list[_Step], tagged: bool, *side_values) -> list:
    """Runs a chain of DoFns over one partition (a bundle). Each step's main output goes, element by element,
    into the next step (Beam's fusion: nothing between two steps is held as a list or moved between workers);
    returns every output of the last step as (tag, value), main output tag None, or, if not `tagged` (the DoFn
    has one output), the bare values. `side_values`: the side inputs of every step, in step order."""
    offsets = list(itertools.accumulate(len(step.side_views) for step in steps))
    receivers = _Receivers(tagged)  # fresh per bundle: nothing leaks from one bundle into the next
    invokers: list[DoFnInvoker] = []
    for index in reversed(range(len(steps))):  # the last step first: each earlier one feeds the one after it
        step_receivers = receivers
        if invokers:
            step_receivers = _Receivers(tagged=False)  # an undeclared output of a chained DoFn has no consumer
            step_receivers[None] = _Forward(invokers[0])
        start = offsets[index] - len(steps[index].side_views)
        invokers.insert(0, _invoker(steps[index], step_receivers, list(side_values[start:offsets[index]])))
    for invoker in invokers:
        invoker.invoke_setup()
    for invoker in reversed(invokers):  # a consumer is ready before its producer emits from start_bundle
        invoker.invoke_start_bundle()
    first = invokers[0]
    for item in items:
        first.invoke_process(_windowed(item))
    for invoker in invokers:  # file sinks emit their results here, which the next step then receives
        invoker.invoke_finish_bundle()
    for invoker in invokers:
        invoker.invoke_teardown()
    return receivers.outputs


def _concat(parts: list[list]) -> list:
    return list(itertools.chain.from_iterable(parts))


def _step_of(applied: AppliedPTransform, side_bags: list[db.Bag]) -> tuple[_Step, list]:
    """The ParDo as a _Step, and its side inputs, each computed once as one Item and broadcast to every partition
    that reads it. (As a Delayed: dask re-keys the whole upstream graph of an Item argument, which computes it
    again.)"""
    transform = t.cast(beam.ParDo, applied.transform)
    args, kwargs = transform.raw_side_inputs
    main_input = next(iter(applied.main_inputs.values()))
    window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
    side_views = tuple((type(side), side._view_options()) for side in applied.side_inputs)
    side_items = [bag.reduction(list, _concat).to_delayed(optimize_graph=False) for bag in side_bags]
    return _Step(transform.fn, transform.label, tuple(args), kwargs, window_fn, side_views), side_items


def _task_name(label: str) -> str:
    """A ParDo's label as the name of its dask tasks (seen in the dashboard, the task stream, a state dump)."""
    return "".join(c if c.isalnum() or c in "_[]" else "_" for c in label)[-60:].strip("_") or "ParDo"


def _values_with_tag(pairs, tag) -> list:
    return [value for pair_tag, value in pairs if pair_tag == tag]


# ---------------------------------------------------------------------------------------------- other primitives


def _group_values(key_and_pairs):
    """(key, [(key, value), ...]) -> (key, [value, ...]). (In a window other than the global one, Beam's
    translation sends windowed values, which the GroupAlsoByWindow step after this one reads.)"""
    key, pairs = key_and_pairs
    return key, [value for _, value in pairs]


def _key(pair):
    return pair[0]


def _read_split(split):
    return list(split.source.read(split.source.get_range_tracker(split.start_position, split.stop_position)))


def _read(applied: AppliedPTransform) -> db.Bag:
    source = t.cast(overrides._Read, applied.transform).source
    splits = list(source.split(READ_BUNDLE_BYTES))  # on the client: for file sources, a listing of the files
    if not splits:
        return db.from_sequence([], npartitions=1)
    return db.from_sequence(splits, npartitions=len(splits)).map_partitions(lambda parts: _concat(
        [_read_split(split) for split in parts]))


def _create(values, bag_kwargs: dict) -> db.Bag:
    """Beam's translation, without its warning on every Create: `--dask_npartitions` or `--dask_partition_size`,
    else 128 elements per partition (Reshuffle spreads them over the workers)."""
    values = list(values)
    if bag_kwargs.get("npartitions"):
        return db.from_sequence(values, npartitions=bag_kwargs["npartitions"])
    return db.from_sequence(values, partition_size=bag_kwargs.get("partition_size") or 128)


def _reshuffle(input_bag: db.Bag, partitions: int) -> db.Bag:
    return input_bag.repartition(npartitions=partitions) if input_bag.npartitions < partitions else input_bag


# ---------------------------------------------------------------------------------------------- the runner


class _ConsumerCount(PipelineVisitor):
    """How many transforms read each PCollection, as a main or a side input."""

    def __init__(self):
        self.consumers: collections.Counter = collections.Counter()

    def visit_transform(self, applied: AppliedPTransform) -> None:
        self.consumers.update(value for value in applied.inputs if not isinstance(value, pvalue.PBegin))
        self.consumers.update(side.pvalue for side in applied.side_inputs)


class _PerPCollectionVisitor(PipelineVisitor):
    """Translates each leaf transform into dask bags, one bag per output PCollection."""

    def __init__(self, bag_kwargs: dict, reshuffle_partitions: int):
        self.bag_kwargs = bag_kwargs
        self.reshuffle_partitions = reshuffle_partitions
        self.bags: dict[pvalue.PCollection, db.Bag] = {}
        self.consumed: set[pvalue.PCollection] = set()
        # Transforms reading each PCollection (main or side input), counted before translating (_ConsumerCount).
        self.consumers: collections.Counter = collections.Counter()
        # PCollection -> (bag, steps, side items): the fused chain of ParDos that produces it from that bag.
        self.chains: dict[pvalue.PCollection, tuple[db.Bag, list[_Step], list]] = {}
        self.shuffles: list[tuple[str, int, db.Item]] = []  # (label, input partitions, input elements)

    def visit_transform(self, applied: AppliedPTransform) -> None:
        transform = applied.transform
        inputs = [value for value in applied.inputs if not isinstance(value, pvalue.PBegin)]
        self.consumed.update(inputs)
        self.consumed.update(side.pvalue for side in applied.side_inputs)
        input_bags = [self.bags[value] for value in inputs]
        outputs = {tag: value for tag, value in applied.outputs.items() if isinstance(value, pvalue.PCollection)}

        if isinstance(transform, beam.ParDo):
            step, side_items = _step_of(applied, [self.bags[side.pvalue] for side in applied.side_inputs])
            # Fused into the chain that produced its input when it is that input's only consumer.
            chain = self.chains.get(inputs[0]) if self.consumers[inputs[0]] == 1 else None
            base, steps, chain_sides = chain or (input_bags[0], [], [])
            steps, side_items = [*steps, step], [*chain_sides, *side_items]
            name = _task_name(applied.full_label)
            if not transform.output_tags and len(outputs) == 1:  # one output: no tag on every element
                [pcollection] = outputs.values()
                self.bags[pcollection] = base.map_partitions(_run_bundle, steps, False, *side_items, token=name)
                self.chains[pcollection] = (base, steps, side_items)
                return
            pairs = base.map_partitions(_run_bundle, steps, True, *side_items, token=name)
            for tag, pcollection in outputs.items():
                wanted = tag if tag in transform.output_tags else None  # the DoFn emits its main output untagged
                self.bags[pcollection] = pairs.map_partitions(_values_with_tag, wanted)
            return
        if isinstance(transform, overrides._Read):
            bag = _read(applied)
        elif isinstance(transform, overrides._Create):
            bag = _create(transform.values, self.bag_kwargs)
        elif isinstance(transform, beam.Impulse):
            bag = db.from_sequence([b""], npartitions=1)
        elif isinstance(transform, overrides._GroupByKeyOnly):
            # "tasks": dask's default for a graph built before a client exists is "disk" (partd), which is local to
            # one process and loses groups across worker processes. Keys are hashed with dask's tokenize.
            bag = input_bags[0].groupby(_key, shuffle="tasks").map(_group_values)
            self.shuffles.append((applied.full_label, input_bags[0].npartitions, input_bags[0].count()))
        elif isinstance(transform, overrides._Reshuffle):
            bag = _reshuffle(input_bags[0], self.reshuffle_partitions)
        elif type(transform) in beam_ops.TRANSLATIONS:
            op = beam_ops.TRANSLATIONS[type(transform)](applied, bag_kwargs=dict(self.bag_kwargs))
            if isinstance(transform, overrides._Flatten):
                bag = op.apply(input_bags) if input_bags else db.from_sequence([], npartitions=1)
            else:
                bag = op.apply(input_bags[0] if input_bags else None)
        elif len(input_bags) == 1:  # Beam's DaskRunner treats every other leaf as the identity, too
            bag = input_bags[0]
        else:
            raise NotImplementedError(f"DaskRunner: no translation for {type(transform).__name__} "
                                      f"({applied.full_label})")
        for pcollection in outputs.values():
            self.bags[pcollection] = bag

    def leaves(self) -> list[db.Bag]:
        return [bag for pcollection, bag in self.bags.items() if pcollection not in self.consumed]


def _scheduler_probe():
    """A function run on the scheduler (defined in here so that it travels by value: a scheduler need not import
    this project): its count of task transitions (it grows whenever a task starts, finishes or is lost) and
    the status of each worker."""
    def probe(dask_scheduler):
        return dask_scheduler.transition_counter, {address: (worker.name, worker.status.name)
                                                   for address, worker in dask_scheduler.workers.items()}
    return probe


class _Watchdog:
    """Decides, from the scheduler's answers, that a computation is stuck: no task transition for
    `stall_seconds` (a blocked task, a deadlocked transfer, no workers left), or every worker paused (above its
    memory limit's pause fraction) for min(stall_seconds, paused_seconds)."""

    def __init__(self, stall_seconds: float, paused_seconds: float = PAUSED_SECONDS):
        self.stall_seconds = stall_seconds
        self.paused_seconds = min(stall_seconds, paused_seconds)
        self._transitions, self._progress_at = -1, time.monotonic()
        self._paused_since: float | None = None

    def check(self, answer: tuple[int, dict] | None) -> str | None:
        """What is wrong (one clause), or None. `answer`: the probe's, None if the scheduler did not answer."""
        now = time.monotonic()
        transitions, workers = answer if answer is not None else (self._transitions, None)
        if transitions != self._transitions:
            self._transitions, self._progress_at = transitions, now
        if workers and all(status == "paused" for _, status in workers.values()):
            self._paused_since = self._paused_since or now
            if now - self._paused_since >= self.paused_seconds:
                names = ", ".join(sorted(str(name) for name, _ in workers.values()))
                return (f"every dask worker ({names}) has been paused for {now - self._paused_since:.0f}s: their "
                        "memory is above the pause threshold (distributed.worker.memory.pause) of their limit")
        else:
            self._paused_since = None
        if now - self._progress_at >= self.stall_seconds:
            if answer is None:
                seen = "the scheduler did not answer"
            elif not workers:
                seen = "no worker is connected to the scheduler"
            else:
                seen = "workers " + ", ".join(f"{name} {status}" for name, status in sorted(
                    (str(name), status) for name, status in workers.values()))
            return f"no dask task started or finished for {now - self._progress_at:.0f}s ({seen})"
        return None


class DaskRunnerResult(dask_runner.DaskRunnerResult):
    """Waits for every leaf, watched by a _Watchdog, then closes the client and the LocalCluster started for the
    pipeline. After it finishes, `shuffles` lists (label, input partitions, elements) of every GroupByKey."""

    def __init__(self, client, futures, cluster=None, shuffles=(), stall_seconds: float = 0,
                 log_dir: str | None = None, paused_seconds: float = PAUSED_SECONDS):
        super().__init__(client, futures)
        self._cluster = cluster
        self._shuffle_futures = list(shuffles)
        self._stall_seconds, self._paused_seconds = stall_seconds, paused_seconds
        self._log_dir = log_dir
        self._workers_seen: dict[str, str] = {}  # address -> name of every worker seen while waiting
        self.shuffles: list[tuple[str, int, int]] = []

    def wait_until_finish(self, duration=None) -> str:
        try:
            self._wait(None if duration is None else duration / 1000)
            self.shuffles = [(label, partitions, future.result()) for label, partitions, future in
                             self._shuffle_futures]
            for label, partitions, elements in self.shuffles:
                logging.getLogger(__name__).info("shuffle %s: %d elements from %d partitions", label, elements,
                                                 partitions)
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
        watchdog = _Watchdog(self._stall_seconds, self._paused_seconds) if self._stall_seconds > 0 else None
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
                raise ComponentError(f"{problem}; stopped the step{self._dump_state()} (pipeline.dask_stall_seconds "
                                     f"is {self._stall_seconds:g}s)")

    def _note_workers(self, answer: tuple[int, dict] | None) -> None:
        if answer is not None:
            self._workers_seen.update({address: name for address, (name, _) in answer[1].items()})

    def _result(self, future) -> None:
        """A finished future's result; a task's error is raised here, on the client. When a worker left the cluster
        during the computation (killed, or restarted by its nanny over its memory limit), dask recomputed its
        results, and an error then is most likely that recomputation's: the error says so, in one line."""
        try:
            future.result()
        except Exception as error:
            answer = self._probe()
            lost = sorted({str(name) for address, name in self._workers_seen.items()
                           if answer is not None and address not in answer[1]})
            if not lost:
                raise
            reason = (str(error).strip().splitlines() or [""])[0][:300]
            raise ComponentError(
                f"dask worker {', '.join(lost)} left the cluster during the step (killed, or restarted by its nanny "
                f"above its memory limit: the step's log says which), and a task failed after dask recomputed its "
                f"results ({type(error).__name__}: {reason}); nothing was published. Run it again, with more memory "
                f"per worker (pipeline.dask_worker_memory) if the log shows a memory restart") from None

    def _probe(self) -> tuple[int, dict] | None:
        try:
            return self.client.sync(self.client._run_on_scheduler, _scheduler_probe(),
                                    callback_timeout=PROBE_SECONDS)
        except (TimeoutError, OSError):
            return None

    def _dump_state(self) -> str:
        """Writes the cluster's state into the step's log folder, if the step gave one; the clause naming it."""
        if not self._log_dir:
            return ""
        path = Path(self._log_dir) / DASK_STATE_DUMP
        done = threading.Event()

        def dump():  # the scheduler or a worker may be too busy to answer: bounded, on a thread
            try:
                self.client.dump_cluster_state(str(path), format="yaml")
            except Exception:  # a diagnosis that fails must not hide the stall
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
            ("dask_reshuffle_partitions", adapter.dask_reshuffle_partitions, adapter.dask_reshuffle_partitions >= 1,
             "at least 1"),
            ("dask_stall_seconds", adapter.dask_stall_seconds, adapter.dask_stall_seconds >= 0,
             "0 (wait forever) or more"),
            ("dask_paused_seconds", adapter.dask_paused_seconds, adapter.dask_paused_seconds > 0, "more than 0")):
        if not works:
            raise ComponentError(f"--{name} must be {wanted}, got {value:g}")


class DaskRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner, with every output of a multi-output ParDo in its own bag and every leaf computed."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist
        dask_options = options.view_as(dask_runner.DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = dask_runner.DaskOptions._extract_bag_kwargs(dask_options)
        adapter = options.view_as(DaskAdapterOptions)
        _check_adapter_options(adapter)

        pipeline.replace_all(adapter_overrides(lift_combiners=not adapter.dask_no_combiner_lifting))
        counter = _ConsumerCount()
        pipeline.visit(counter)
        visitor = _PerPCollectionVisitor(bag_kwargs, adapter.dask_reshuffle_partitions)
        visitor.consumers = counter.consumers
        pipeline.visit(visitor)
        leaves = [bag.count() for bag in visitor.leaves()]  # only a number per leaf comes back

        logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines drown the pipeline's output
        cluster = None
        if not dask_options.get("address") and not dask_options.get("scheduler_file"):
            # Set in this process before the cluster starts: its workers (started by nannies) inherit it.
            dask.config.set(LOCAL_CLUSTER_CONFIG)
            cluster = ddist.LocalCluster(n_workers=adapter.dask_workers, threads_per_worker=1, processes=True,
                                         dashboard_address=":0", memory_limit=adapter.dask_worker_memory)
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
        return DaskRunnerResult(client, futures, cluster, shuffles, adapter.dask_stall_seconds, adapter.dask_log_dir,
                                adapter.dask_paused_seconds)
