"""The pipeline options every Beam step runs with (library/beam_options.pipeline_options) hand out one view
per options class: Beam asks for a view at every transform it applies, and a new view parses the flags again
(about a second of a retrain on the sample). A view must still behave as Beam's own: it shares its values
with the options, and the options survive pickling (they travel with a pipeline)."""
from __future__ import annotations

import argparse
import pickle

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions, TypeOptions
from apache_beam.testing.util import assert_that, equal_to

from library.beam_options import pipeline_options


def test_views_are_made_once_and_share_the_options_values(monkeypatch):
    options = pipeline_options(["--runner=DirectRunner", "--direct_num_workers=1"])
    parsers = []
    real_init = argparse.ArgumentParser.__init__

    def counting_init(self, *args, **kwargs):
        parsers.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "__init__", counting_init)
    pipeline = beam.Pipeline(options=options)
    numbers = pipeline | beam.Create(range(10))
    for step in range(20):
        numbers = numbers | f"add one {step}" >> beam.Map(lambda x: x + 1)
    # One parser per options class viewed, not several per transform applied (measured: 13 with the cache,
    # 110 without it).
    assert len(parsers) < 30, len(parsers)
    monkeypatch.undo()
    assert_that(numbers, equal_to(list(range(20, 30))))  # and the pipeline runs as before
    pipeline.run().wait_until_finish()
    assert options.view_as(TypeOptions) is options.view_as(TypeOptions)
    options.view_as(StandardOptions).runner = "SomethingElse"
    assert options.get_all_options()["runner"] == "SomethingElse"


def test_options_pickle_with_their_values():
    options = pipeline_options(["--direct_num_workers=3"])
    options.view_as(DirectOptions)
    copy = pickle.loads(pickle.dumps(options))
    assert copy.view_as(DirectOptions).direct_num_workers == 3
    assert "_views" not in vars(copy) or copy.view_as(DirectOptions) is not options.view_as(DirectOptions)
