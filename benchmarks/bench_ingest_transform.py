"""Wall time, rows/s and peak memory of ingest, validate and transform: DirectRunner in-memory, DirectRunner
multi_processing on 2 workers, and the DaskRunner adapter on a local dask.distributed cluster of 2 worker
processes (`dask_2`, needs the dask extra); plus the padding ratio of bucketed versus per-batch-longest
batches (batch size 64, train split).

    python benchmarks/generate_data.py --source ../shared/data/ag_news --rows 120000 --out /tmp/ag_news_120k
    python benchmarks/bench_ingest_transform.py --data ../shared/data/ag_news --data /tmp/ag_news_120k

Each configuration runs the real components in this process, one after the other, so ratios between rows of
one table were measured on the same machine in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from components.ingest import executor as ingest
from components.transform import executor as transform
from components.validate import executor as validate
from contract.artifacts import Runtime
from contract.data_config import IngestConfig, TransformConfig, ValidateConfig
from library.layouts import SPLITS

MODES = {
    "in_memory": ("--direct_running_mode=in_memory", "--direct_num_workers=1"),
    "multi_processing_2": ("--direct_running_mode=multi_processing", "--direct_num_workers=2"),
    "dask_2": ("--runner=engines.dask.runner.DaskClusterRunner", "--dask_workers=2"),
}
RSS_SAMPLE_SECONDS = 0.5


class PeakTreeRss:
    """Peak of the summed resident memory of this process and all its descendants (Beam or dask workers),
    sampled every RSS_SAMPLE_SECONDS on a thread; also the peak of each process alone ({pid: bytes},
    `each`)."""

    def __enter__(self):
        import threading

        import psutil
        self.peak, self.each, self._stop = 0, {}, threading.Event()

        def sample():
            me = psutil.Process()
            while not self._stop.is_set():
                total = 0
                for process in [me, *me.children(recursive=True)]:
                    try:
                        rss = process.memory_info().rss
                    except psutil.Error:
                        continue
                    total += rss
                    self.each[process.pid] = max(self.each.get(process.pid, 0), rss)
                self.peak = max(self.peak, total)
                self._stop.wait(RSS_SAMPLE_SECONDS)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bench(data: Path, mode: str, work: Path) -> dict:
    runtime = Runtime(beam_args=MODES[mode], seed=42, log=lambda message: None)
    started = time.perf_counter()
    examples = ingest.run({}, work / "ingest", IngestConfig(data=f"csv:{data}"), runtime)["examples"]
    ingest_seconds = time.perf_counter() - started
    started = time.perf_counter()
    schema = validate.run({"examples": examples}, work / "validate", ValidateConfig(), runtime)["schema"]
    validate_seconds = time.perf_counter() - started
    started = time.perf_counter()
    outputs = transform.run(
        {"examples": examples, "schema": schema}, work / "transform", TransformConfig(), runtime
    )
    transform_seconds = time.perf_counter() - started
    rows = sum(examples.properties[f"{split}_rows"] for split in SPLITS)
    rows_read = rows + examples.properties["quarantined_rows"]
    transformed = outputs["transformed_examples"].properties
    return {"data": str(data), "mode": mode, "rows": rows_read,
            "ingest_s": ingest_seconds, "ingest_rows_per_s": rows_read / ingest_seconds,
            "validate_s": validate_seconds,
            "transform_s": transform_seconds, "transform_rows_per_s": rows / transform_seconds,
            "padding_bucketed": transformed["padding_ratio_bucketed"]["train"],
            "padding_unbucketed": transformed["padding_ratio_unbucketed"]["train"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, action="append", required=True, help="csv folder; repeatable")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "ingest_transform.json"
    )
    args = parser.parse_args()
    machine = harness.machine()  # the load before this benchmark adds its own
    results = []
    for data in args.data:
        for mode in args.modes:
            work = Path(tempfile.mkdtemp(prefix="bench-"))
            try:
                with PeakTreeRss() as rss:
                    result = bench(data, mode, work)
                result["peak_tree_rss_mb"] = round(rss.peak / 2**20)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            results.append(result)
            print(json.dumps(result), flush=True)

    report = {"command": harness.command_line(), "machine": machine, "results": results}
    lines = [*harness.provenance(report), "",
             *harness.table_head("data", "mode", "rows", "ingest s", "ingest rows/s", "validate s",
                                 "transform s", "transform rows/s", "peak RSS, all processes (MB)")]
    for r in results:
        lines.append(f"| {Path(r['data']).name} | {r['mode']} | {r['rows']} | {r['ingest_s']:.1f} | "
                     f"{r['ingest_rows_per_s']:.0f} | {r['validate_s']:.1f} | {r['transform_s']:.1f} | "
                     f"{r['transform_rows_per_s']:.0f} | {r['peak_tree_rss_mb']} |")
    lines += ["", "Padding (padded positions / real tokens) at batch size 64, train split, default buckets:"]
    lines += [
        f"- {Path(r['data']).name}: bucketed {r['padding_bucketed']:.3f}, "
        f"per-batch-longest {r['padding_unbucketed']:.3f}"
        for r in results
        if r["mode"] == args.modes[0]
    ]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    harness.write_results(args.out, report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
