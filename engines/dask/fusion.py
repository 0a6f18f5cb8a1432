"""ParDo fusion and the bundle a ParDo runs in (items 3, 5, 9 and 11 of the package docstring): a chain of
ParDos, each the only reader of the one before, runs in one dask task per partition (run_bundle), each step's
main output handed element by element to the next DoFn; every bundle gets fresh receivers, read after
finish_bundle; side inputs are computed once on the cluster and broadcast; a DoFn with one output returns bare
values, one with several (tag, value) pairs."""
from __future__ import annotations

import dataclasses
import itertools
import typing as t

import apache_beam as beam
import dask.bag as db
from apache_beam.pipeline import AppliedPTransform
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue


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
    """tag -> receiver; every receiver appends to one list: (tag, value), or bare values if `tagged` is
    False."""

    def __init__(self, tagged: bool):
        super().__init__()
        self.outputs: list = []
        self._receiver = _ListReceiver if tagged else _ValueReceiver

    def __missing__(self, tag):
        # Without tags, an output the transform did not declare has no consumer: it goes to a list read by no
        # one.
        self[tag] = self._receiver(
            tag, self.outputs if self._receiver is _ListReceiver or tag is None else []
        )
        return self[tag]


# One instance for every element: GlobalWindow() parses a proto for its end timestamp each time it is built,
# which was a quarter of a worker's time in transform (dask's profiler, 123,800 rows).
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
class FusedStep:
    """One ParDo of a fused chain: its DoFn and what a bundle of it needs besides its input."""
    fn: beam.DoFn
    label: str
    args: tuple
    kwargs: dict
    window_fn: t.Any
    # (view class, view options) of each side input
    side_views: tuple


def _invoker(step: FusedStep, receivers: dict, side_values: list) -> DoFnInvoker:
    side_inputs = [SideInputMap(view_class, view_options, [_windowed(v) for v in values])
                   for (view_class, view_options), values in zip(step.side_views, side_values)]
    handler = _OutputHandler(
        window_fn=step.window_fn,
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    return DoFnInvoker.create_invoker(
        DoFnSignature(step.fn), handler, context=DoFnContext(step.label, state=None), side_inputs=side_inputs,
        input_args=list(step.args), input_kwargs=step.kwargs, user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())


def run_bundle(items, steps: list[FusedStep], tagged: bool, *side_values) -> list:
    """Runs a chain of DoFns over one partition (a bundle). Each step's main output goes, element by element,
    into the next step (Beam's fusion: nothing between two steps is held as a list or moved between workers);
    returns every output of the last step as (tag, value), main output tag None, or, if not `tagged` (the DoFn
    has one output), the bare values. `side_values`: the side inputs of every step, in step order."""
    offsets = list(itertools.accumulate(len(step.side_views) for step in steps))
    # fresh per bundle: nothing leaks from one bundle into the next
    receivers = _Receivers(tagged)
    invokers: list[DoFnInvoker] = []
    # the last step first: each earlier one feeds the one after it
    for index in reversed(range(len(steps))):
        step_receivers = receivers
        if invokers:
            # an undeclared output of a chained DoFn has no consumer
            step_receivers = _Receivers(tagged=False)
            step_receivers[None] = _Forward(invokers[0])
        start = offsets[index] - len(steps[index].side_views)
        invokers.insert(0, _invoker(steps[index], step_receivers, list(side_values[start:offsets[index]])))
    for invoker in invokers:
        invoker.invoke_setup()
    # a consumer is ready before its producer emits from start_bundle
    for invoker in reversed(invokers):
        invoker.invoke_start_bundle()
    first = invokers[0]
    for item in items:
        first.invoke_process(_windowed(item))
    # file sinks emit their results here, which the next step then receives
    for invoker in invokers:
        invoker.invoke_finish_bundle()
    for invoker in invokers:
        invoker.invoke_teardown()
    return receivers.outputs


def concat(parts: list[list]) -> list:
    return list(itertools.chain.from_iterable(parts))


def step_of(applied: AppliedPTransform, side_bags: list[db.Bag]) -> tuple[FusedStep, list]:
    """The ParDo as a FusedStep, and its side inputs, each computed once as one Item and broadcast to every
    partition that reads it. (As a Delayed: dask re-keys the whole upstream graph of an Item argument, which
    computes it again.)"""
    transform = t.cast(beam.ParDo, applied.transform)
    args, kwargs = transform.raw_side_inputs
    main_input = next(iter(applied.main_inputs.values()))
    window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
    side_views = tuple((type(side), side._view_options()) for side in applied.side_inputs)
    side_items = [bag.reduction(list, concat).to_delayed(optimize_graph=False) for bag in side_bags]
    return FusedStep(transform.fn, transform.label, tuple(args), kwargs, window_fn, side_views), side_items


def task_name(label: str) -> str:
    """A ParDo's label as the name of its dask tasks (seen in the dashboard, the task stream, a state
    dump)."""
    return "".join(c if c.isalnum() or c in "_[]" else "_" for c in label)[-60:].strip("_") or "ParDo"


def values_with_tag(pairs, tag) -> list:
    return [value for pair_tag, value in pairs if pair_tag == tag]
