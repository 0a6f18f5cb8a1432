"""Beam pipeline options from the user's pass-through arguments (`--beam-arg`)."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


def pipeline_options(beam_args: tuple[str, ...] | list[str]) -> PipelineOptions:
    # flags=... stops PipelineOptions from parsing sys.argv (the CLI's own flags) as Beam flags.
    return PipelineOptions(flags=list(beam_args), save_main_session=False)
