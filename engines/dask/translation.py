"""Beam transforms as dask bags, one bag per PCollection (items 1, 4, 6, 8 and 9 of the package docstring):
the overrides applied before translating (combiner lifting; GroupByKey in the global window as one shuffle of
the (key, value) pairs; then Beam's own for Create, Reshuffle, Read, Flatten), and the visitor that translates
each leaf transform: a ParDo into a fused chain (fusion.py), Read, Create, Impulse, the GroupByKey shuffle,
Reshuffle, and Beam's translations (Flatten, ...) for the rest."""
from __future__ import annotations

import collections
import typing as t

import apache_beam as beam
import dask.bag as db
from apache_beam import pvalue
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor, PTransformOverride
from apache_beam.runners.dask import overrides
from apache_beam.runners.dask import transform_evaluator as beam_ops
from apache_beam.transforms.combiners import LiftedCombinePerKey

from engines.dask.fusion import FusedStep, concat, run_bundle, step_of, task_name, values_with_tag

# desired size of one split of a file source (one partition)
READ_BUNDLE_BYTES = 64 << 20


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
        # 10 side inputs or more: Beam's DirectRunner keeps the transform too
        except NotImplementedError:
            return transform


class _GroupByKeyInGlobalWindow(PTransformOverride):
    """GroupByKey in the global window as one dask shuffle of the (key, value) pairs themselves. Beam's
    DaskRunner translation (ReifyWindows, GroupByKeyOnly, GroupAlsoByWindow) wraps every element in a
    WindowedValue for the shuffle and runs one more ParDo after it, which only the global window makes
    unnecessary."""

    def matches(self, applied: AppliedPTransform) -> bool:
        return applied.transform.__class__ == beam.GroupByKey and _in_global_window(applied)

    def get_replacement_transform_for_applied_ptransform(self, applied: AppliedPTransform):
        return overrides._GroupByKeyOnly()


def adapter_overrides(lift_combiners: bool = True) -> list[PTransformOverride]:
    """Applied in this order: a lifted CombinePerKey contains a GroupByKey, replaced next; Beam's own
    overrides (Create, Reshuffle, Read, Flatten, and GroupByKey in other windows) last."""
    lifting = [_LiftCombinePerKey()] if lift_combiners else []
    return [*lifting, _GroupByKeyInGlobalWindow(), *overrides.dask_overrides()]


# ---------------------------------------------------------------------------------------------- other
# primitives


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
    # on the client: for file sources, a listing of the files
    splits = list(source.split(READ_BUNDLE_BYTES))
    if not splits:
        return db.from_sequence([], npartitions=1)
    return db.from_sequence(splits, npartitions=len(splits)).map_partitions(lambda parts: concat(
        [_read_split(split) for split in parts]))


def _create(values, bag_kwargs: dict) -> db.Bag:
    """Beam's translation, without its warning on every Create: `--dask_npartitions` or
    `--dask_partition_size`, else 128 elements per partition (Reshuffle spreads them over the workers)."""
    values = list(values)
    if bag_kwargs.get("npartitions"):
        return db.from_sequence(values, npartitions=bag_kwargs["npartitions"])
    return db.from_sequence(values, partition_size=bag_kwargs.get("partition_size") or 128)


def _reshuffle(input_bag: db.Bag, partitions: int) -> db.Bag:
    return input_bag.repartition(npartitions=partitions) if input_bag.npartitions < partitions else input_bag


# ---------------------------------------------------------------------------------------------- the visitors


class ConsumerCount(PipelineVisitor):
    """How many transforms read each PCollection, as a main or a side input."""

    def __init__(self):
        self.consumers: collections.Counter = collections.Counter()

    def visit_transform(self, applied: AppliedPTransform) -> None:
        self.consumers.update(value for value in applied.inputs if not isinstance(value, pvalue.PBegin))
        self.consumers.update(side.pvalue for side in applied.side_inputs)


class PerPCollectionVisitor(PipelineVisitor):
    """Translates each leaf transform into dask bags, one bag per output PCollection."""

    def __init__(self, bag_kwargs: dict, reshuffle_partitions: int):
        self.bag_kwargs = bag_kwargs
        self.reshuffle_partitions = reshuffle_partitions
        self.bags: dict[pvalue.PCollection, db.Bag] = {}
        self.consumed: set[pvalue.PCollection] = set()
        # Transforms reading each PCollection (main or side input), counted before translating
        # (ConsumerCount).
        self.consumers: collections.Counter = collections.Counter()
        # PCollection -> (bag, steps, side items): the fused chain of ParDos that produces it from that bag.
        self.chains: dict[pvalue.PCollection, tuple[db.Bag, list[FusedStep], list]] = {}
        # (label, input partitions, input elements)
        self.shuffles: list[tuple[str, int, db.Item]] = []

    def visit_transform(self, applied: AppliedPTransform) -> None:
        transform = applied.transform
        inputs = [value for value in applied.inputs if not isinstance(value, pvalue.PBegin)]
        self.consumed.update(inputs)
        self.consumed.update(side.pvalue for side in applied.side_inputs)
        input_bags = [self.bags[value] for value in inputs]
        outputs = {
            tag: value for tag, value in applied.outputs.items() if isinstance(value, pvalue.PCollection)
        }

        if isinstance(transform, beam.ParDo):
            step, side_items = step_of(applied, [self.bags[side.pvalue] for side in applied.side_inputs])
            # Fused into the chain that produced its input when it is that input's only consumer.
            chain = self.chains.get(inputs[0]) if self.consumers[inputs[0]] == 1 else None
            base, steps, chain_sides = chain or (input_bags[0], [], [])
            steps, side_items = [*steps, step], [*chain_sides, *side_items]
            name = task_name(applied.full_label)
            # one output: no tag on every element
            if not transform.output_tags and len(outputs) == 1:
                [pcollection] = outputs.values()
                self.bags[pcollection] = base.map_partitions(
                    run_bundle, steps, False, *side_items, token=name
                )
                self.chains[pcollection] = (base, steps, side_items)
                return
            pairs = base.map_partitions(run_bundle, steps, True, *side_items, token=name)
            for tag, pcollection in outputs.items():
                # the DoFn emits its main output untagged
                wanted = tag if tag in transform.output_tags else None
                self.bags[pcollection] = pairs.map_partitions(values_with_tag, wanted)
            return
        if isinstance(transform, overrides._Read):
            bag = _read(applied)
        elif isinstance(transform, overrides._Create):
            bag = _create(transform.values, self.bag_kwargs)
        elif isinstance(transform, beam.Impulse):
            bag = db.from_sequence([b""], npartitions=1)
        elif isinstance(transform, overrides._GroupByKeyOnly):
            # "tasks": dask's default for a graph built before a client exists is "disk" (partd), which is
            # local to one process and loses groups across worker processes. Keys are hashed with dask's
            # tokenize.
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
        # Beam's DaskRunner treats every other leaf as the identity, too
        elif len(input_bags) == 1:
            bag = input_bags[0]
        else:
            raise NotImplementedError(f"DaskRunner: no translation for {type(transform).__name__} "
                                      f"({applied.full_label})")
        for pcollection in outputs.values():
            self.bags[pcollection] = bag

    def leaves(self) -> list[db.Bag]:
        return [bag for pcollection, bag in self.bags.items() if pcollection not in self.consumed]
