"""The one grammar for sizes and for durations (contract/units.py), and every setting that uses it: what
either of the two former parsers accepted is still accepted, with the meaning the units have elsewhere (GB =
10^9)."""
from __future__ import annotations

import pytest

from contract.config import PipelineConfig, TunerConfig
from contract.config_checks import ConfigError
from contract.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize("text, seconds", [
    ("600", 600), (600, 600), (2.5, 2.5), ("10s", 10), ("10 sec", 10), ("45m", 2700), ("90min", 5400),
    ("2h", 7200), ("30d", 30 * 86400), ("2w", 14 * 86400), ("1.5h", 5400), (" 2H ", 7200), ("5ms", 0.005),
    ("250us", 0.00025)])
def test_a_duration_is_seconds_or_a_number_with_a_unit(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "2 hours", "2y", "-5s", "1e3", "2h30m", "soon"])
def test_anything_else_is_not_a_duration(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("text, size", [
    ("1048576", 1 << 20), (4096, 4096), ("500B", 500), ("500 bytes", 500), ("2kB", 2000), ("2KB", 2000),
    ("2k", 2000), ("500MB", 500 * 10**6), ("2GB", 2 * 10**9), ("2 gb", 2 * 10**9), ("1TB", 10**12),
    ("2KiB", 2048), ("500MiB", 500 << 20), ("4GiB", 4 << 30), ("1.5GiB", 3 << 29), ("1TiB", 1 << 40)])
def test_a_size_is_si_for_kb_mb_gb_and_iec_for_kib_mib_gib(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "auto", "GB", "2 gigabytes", "-1GB", "2XB"])
def test_anything_else_is_not_a_size(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0s"), (-3, "0s"), (42.4, "42s"), (185, "3m05s"), (3720, "1h02m"), (90000, "25h00m")],
)
def test_durations_read_as_seconds_minutes_or_hours(seconds, text):
    assert format_duration(seconds) == text


def test_the_deadline_takes_the_one_grammar():
    assert PipelineConfig(deadline="90min").deadline_seconds() == 5400
    assert PipelineConfig(deadline="2w").deadline_seconds() == 14 * 86400
    assert PipelineConfig(deadline=30).deadline_seconds() == 30
    assert PipelineConfig().deadline_seconds() is None
    with pytest.raises(ConfigError, match="pipeline.deadline"):
        PipelineConfig(deadline="tomorrow")


@pytest.mark.parametrize(
    "retune, every",
    [
        ("every 30d", 30 * 86400),
        ("every 2w", 14 * 86400),
        ("every 90min", 5400),
        ("every 12 h", 43200),
        ("every 3600", 3600),
    ],
)
def test_retune_every_duration_takes_the_one_grammar(retune, every):
    assert TunerConfig(retune=retune).retune_policy() == ("seconds", every)


@pytest.mark.parametrize("retune", ["every 0d", "every", "every soon", "every 0 retrains", "weekly"])
def test_a_bad_retune_policy_is_a_config_error(retune):
    with pytest.raises(ConfigError, match="tuner.retune"):
        TunerConfig(retune=retune)


def test_both_size_settings_take_the_one_grammar():
    PipelineConfig(min_free_space="2GiB", dask_worker_memory="2GiB")
    PipelineConfig(min_free_space="auto", dask_worker_memory="auto")
    for key in ("min_free_space", "dask_worker_memory"):
        with pytest.raises(ConfigError, match=f"pipeline.{key}"):
            PipelineConfig(**{key: "lots"})


def test_min_free_space_and_the_dask_memory_limit_read_gb_alike(tmp_path):
    """The two settings the former parsers disagreed on: 2GB was 2^31 bytes of free space but 2*10^9 of
    memory."""
    from contract.config import Config
    from engines.dask.runner import worker_memory_limit
    from pipeline import dag
    from pipeline.root import FreeSpacePolicy
    config = Config(pipeline=PipelineConfig(min_free_space="2GB"))
    assert FreeSpacePolicy(config, dag.STEPS, tmp_path).min_free_bytes() == 2 * 10**9
    assert worker_memory_limit("2GB") == 2 * 10**9
    assert (
        worker_memory_limit("2GiB")
        == FreeSpacePolicy(
            Config(pipeline=PipelineConfig(min_free_space="2GiB")), dag.STEPS, tmp_path
        ).min_free_bytes()
        == 2 << 30
    )
    assert worker_memory_limit("auto") == "auto"


@pytest.mark.parametrize("count, text", [(0, "0 bytes"), (512, "512 bytes"), (12 * 1024, "12.0 KiB"),
                                         (int(66.1 * 2**20), "66.1 MiB"), (3 << 29, "1.5 GiB"),
                                         (5 << 40, "5.0 TiB")])
def test_sizes_read_in_iec_units(count, text):
    assert format_size(count) == text
    assert parse_size(text.replace(" bytes", "").replace(" ", "")) == pytest.approx(count, rel=1e-3)
