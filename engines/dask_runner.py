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
Only the global window is supported, as in Beam's DaskRunner (timestamps and windows are not carried).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import typing as t

import apache_beam as beam
import dask.bag as db
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask import dask_runner, overrides
from apache_beam.runners.dask import transform_evaluator as beam_ops
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

READ_BUNDLE_BYTES = 64 << 20  # desired size of one split of a file source (one partition)


class DaskAdapterOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--dask_workers", type=int, default=2,
                            help="Without --dask_client_address: worker processes of the LocalCluster started "
                                 "for the pipeline (1 thread each).")
        parser.add_argument("--dask_reshuffle_partitions", type=int, default=8,
                            help="Reshuffle splits its input into at least this many partitions.")


# ---------------------------------------------------------------------------------------------- ParDo


@dataclasses.dataclass
class _ListReceiver(Receiver):
    tag: str | None
    values: list

    def receive(self, windowed_value: WindowedValue):
        self.values.append((self.tag, windowed_value.value))


class _Receivers(dict):
    """tag -> receiver; every receiver appends (tag, value) to one list."""

    def __init__(self):
        super().__init__()
        self.outputs: list = []

    def __missing__(self, tag):
        self[tag] = _ListReceiver(tag, self.outputs)
        return self[tag]


def _windowed(value) -> WindowedValue:
    return value if isinstance(value, WindowedValue) else WindowedValue(value, 0, (GlobalWindow(),))


def _run_bundle(items, fn, label, args, kwargs, window_fn, side_views, *side_values) -> list[tuple]:
    """Runs a DoFn over one partition (a bundle); returns every output as (tag, value), main output tag None."""
    receivers = _Receivers()  # fresh per bundle: nothing leaks from one bundle into the next
    side_inputs = [SideInputMap(view_class, view_options, [_windowed(v) for v in values])
                   for (view_class, view_options), values in zip(side_views, side_values)]
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                             per_element_output_counter=None, output_batch_converter=None,
                             process_yields_batches=False, process_batch_yields_elements=False)
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn), handler, context=DoFnContext(label, state=None), side_inputs=side_inputs,
        input_args=list(args), input_kwargs=kwargs, user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(_windowed(item))
    invoker.invoke_finish_bundle()  # file sinks emit their results here
    invoker.invoke_teardown()
    return receivers.outputs


def _concat(parts: list[list]) -> list:
    return list(itertools.chain.from_iterable(parts))


def _pardo(applied: AppliedPTransform, input_bag: db.Bag, side_bags: list[db.Bag]) -> db.Bag:
    transform = t.cast(beam.ParDo, applied.transform)
    args, kwargs = transform.raw_side_inputs
    main_input = next(iter(applied.main_inputs.values()))
    window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
    side_views = [(type(side), side._view_options()) for side in applied.side_inputs]
    # A side input is computed once, as one Item, and broadcast to every partition that reads it.
    # (As a Delayed: dask re-keys the whole upstream graph of an Item argument, which computes it again.)
    side_items = [bag.reduction(list, _concat).to_delayed(optimize_graph=False) for bag in side_bags]
    return input_bag.map_partitions(_run_bundle, transform.fn, transform.label, args, kwargs, window_fn,
                                    side_views, *side_items)


def _values_with_tag(pairs, tag) -> list:
    return [value for pair_tag, value in pairs if pair_tag == tag]


# ---------------------------------------------------------------------------------------------- other primitives


def _group_values(key_and_pairs):
    """(key, [(key, windowed value), ...]) -> (key, [windowed value, ...]); Beam's GroupByKey translation strips the
    windows that the GroupAlsoByWindow step after it reads."""
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


class _PerPCollectionVisitor(PipelineVisitor):
    """Translates each leaf transform into dask bags, one bag per output PCollection."""

    def __init__(self, bag_kwargs: dict, reshuffle_partitions: int):
        self.bag_kwargs = bag_kwargs
        self.reshuffle_partitions = reshuffle_partitions
        self.bags: dict[pvalue.PCollection, db.Bag] = {}
        self.consumed: set[pvalue.PCollection] = set()

    def visit_transform(self, applied: AppliedPTransform) -> None:
        transform = applied.transform
        inputs = [value for value in applied.inputs if not isinstance(value, pvalue.PBegin)]
        self.consumed.update(inputs)
        self.consumed.update(side.pvalue for side in applied.side_inputs)
        input_bags = [self.bags[value] for value in inputs]
        outputs = {tag: value for tag, value in applied.outputs.items() if isinstance(value, pvalue.PCollection)}

        if isinstance(transform, beam.ParDo):
            pairs = _pardo(applied, input_bags[0], [self.bags[side.pvalue] for side in applied.side_inputs])
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


class DaskRunnerResult(dask_runner.DaskRunnerResult):
    """Waits for every leaf, then closes the client and the LocalCluster started for the pipeline."""

    def __init__(self, client, futures, cluster=None):
        super().__init__(client, futures)
        self._cluster = cluster

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            if self._state in (PipelineState.DONE, PipelineState.FAILED):
                self.close()

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


class DaskRunner(dask_runner.DaskRunner):
    """Beam's DaskRunner, with every output of a multi-output ParDo in its own bag and every leaf computed."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist
        dask_options = options.view_as(dask_runner.DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = dask_runner.DaskOptions._extract_bag_kwargs(dask_options)
        adapter = options.view_as(DaskAdapterOptions)

        pipeline.replace_all(overrides.dask_overrides())
        visitor = _PerPCollectionVisitor(bag_kwargs, adapter.dask_reshuffle_partitions)
        pipeline.visit(visitor)
        leaves = [bag.count() for bag in visitor.leaves()]  # only a number per leaf comes back

        logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines drown the pipeline's output
        cluster = None
        if not dask_options.get("address") and not dask_options.get("scheduler_file"):
            cluster = ddist.LocalCluster(n_workers=adapter.dask_workers, threads_per_worker=1, processes=True,
                                         dashboard_address=":0")
            dask_options["address"] = cluster
        try:
            client = ddist.Client(**dask_options)
        except BaseException:
            if cluster is not None:
                cluster.close()
            raise
        futures = client.compute(leaves)
        return DaskRunnerResult(client, futures, cluster)
