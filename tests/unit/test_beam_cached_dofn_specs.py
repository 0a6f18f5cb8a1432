"""Beam's state and timer specs of a DoFn are found once per DoFn class in every Beam step
(library/beam_cached_dofn_specs.py, installed by library/beam_options.pipeline_options): Beam read every
method's signature again each time it asked, several times per DoFn (a fifth of a retrain on the sample). The
answers must stay Beam's: a stateful DoFn is still stateful and runs as one, a DoFn holding a bound method of
its own is read each time, and a malformed DoFn is refused each time."""
from __future__ import annotations

import inspect

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from library.beam_options import pipeline_options


class AddOne(beam.DoFn):
    def process(self, element):
        yield element + 1


TOTAL = ReadModifyWriteStateSpec("total", VarIntCoder())
TOTAL_STATE = beam.DoFn.StateParam(TOTAL)


class RunningTotal(beam.DoFn):
    def process(self, element, total=TOTAL_STATE):
        key, value = element
        now = (total.read() or 0) + value
        total.write(now)
        yield key, now


def test_a_pipeline_reads_each_dofn_class_once_and_runs_as_before(monkeypatch):
    options = pipeline_options(["--runner=DirectRunner", "--direct_num_workers=1"])
    signatures = []
    real_signature = inspect.signature

    def counting_signature(*args, **kwargs):
        signatures.append(1)
        return real_signature(*args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting_signature)
    pipeline = beam.Pipeline(options=options)
    numbers = pipeline | beam.Create(range(10))
    for step in range(20):
        numbers = numbers | f"add one {step}" >> beam.ParDo(AddOne())
    # Measured: 347 signatures read with the cache, 1,758 without it (each answer reads every method of the
    # DoFn again).
    assert len(signatures) < 700, len(signatures)
    monkeypatch.undo()
    assert_that(numbers, equal_to(list(range(20, 30))))
    pipeline.run().wait_until_finish()


def test_a_stateful_dofn_is_still_stateful_and_keeps_its_state():
    options = pipeline_options(["--runner=DirectRunner", "--direct_num_workers=1"])
    assert userstate.is_stateful_dofn(RunningTotal()) and userstate.is_stateful_dofn(RunningTotal())
    assert not userstate.is_stateful_dofn(AddOne())
    with beam.Pipeline(options=options) as pipeline:
        totals = (pipeline | beam.Create([("a", 1), ("a", 2), ("a", 3)])
                  | beam.ParDo(RunningTotal()) | beam.Map(lambda kv: kv[1]) | beam.combiners.Top.Largest(1))
        assert_that(totals, equal_to([[6]]))


def test_a_dofn_holding_a_bound_method_is_read_each_time():
    pipeline_options([])
    holder = AddOne()
    assert not userstate.is_stateful_dofn(holder)
    holder.process = RunningTotal().process  # now its process uses state, though its class's does not
    assert userstate.is_stateful_dofn(holder)


def test_a_malformed_dofn_is_refused_every_time():
    pipeline_options([])

    class TwiceTheSameState(beam.DoFn):
        def process(self, element, a=TOTAL_STATE, b=TOTAL_STATE):
            yield element

    for _ in range(2):
        with pytest.raises(ValueError, match="duplicate"):
            userstate.get_dofn_specs(TwiceTheSameState())
