"""Bounded disk: with a retention policy the pipeline root stops growing over weekly retrains, and the kept
versions can still be rolled back to, through the real `agnews-pipeline` command on the committed sample
cut into weekly spans (a system test; the tiny model of support.streams). What is observed is the size of
the pipeline root on disk, the serving folder's bytes and the metadata store's artifacts."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support import streams
from support.cli import agnews_in_process
from support.e2e import agnews  # the real command in a subprocess, checking its exit code
from support.streams import PUSHING_CONFIG, arrive, make_stream, root_args

from library import folder_layouts

pytestmark = pytest.mark.e2e

CONFIG = PUSHING_CONFIG
RETENTION = "retention: {served_versions: 2, runs: 2, apply_after_retrain: true}\n"


def du_bytes(folder: Path) -> int:
    """Disk use of a folder as `du` counts it (hard-linked files once)."""
    return int(subprocess.run(["du", "-s", "-B1", str(folder)], check=True, capture_output=True,
                              text=True).stdout.split()[0])


@pytest.mark.timeout(3600)  # twelve retrains (about half a minute each on 2 idle cores)
def test_with_retention_the_root_stops_growing_and_kept_versions_can_be_rolled_back_to(tmp_path):
    full, live, names = make_stream(tmp_path, 12, CONFIG + RETENTION)
    root, serving = tmp_path / "root", tmp_path / "root" / "serving" / "agnews"
    sizes = {}
    for week, name in enumerate(names, 1):
        arrive(full, live, name)
        # In this process: no TensorFlow import per week; rollback and gc below run as the real command.
        agnews_in_process("retrain", *streams.args(tmp_path))
        sizes[week] = du_bytes(root)
        print(f"week {week}: root {sizes[week]:,} bytes", flush=True)
        # The policy holds the root where it was after four retrains, the first week it is full (without it
        # the root grows by one retrain's artifacts every week; 52 weeks: benchmarks/bench_year.py).
        if week > 4:
            assert sizes[week] <= 1.3 * sizes[4], sizes
    assert folder_layouts.serving_versions(serving) == [11, 12]  # older versions left the serving folder

    rolled = agnews("rollback", "11", *root_args(tmp_path))  # a kept version: everything it needs is there
    assert "served again as version 13" in rolled.stdout
    assert (serving / "13" / "saved_model.pb").read_bytes() == (
        serving / "11" / "saved_model.pb").read_bytes()
    gone = agnews("rollback", "3", *root_args(tmp_path), check_code=1)
    assert (
        "not a model this pipeline root keeps" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1
    )
    agnews("gc", *root_args(tmp_path))  # the same policy (no --keep): 12 and 13 stay served
    assert folder_layouts.serving_versions(serving) == [12, 13]
    with streams.opened_store(root) as store:
        for version in (12, 13):
            for artifact in streams.pusher_inputs(store, version).values():
                assert not artifact.deleted and artifact.uri.exists()
