"""The Beam steps (ingest, validate, transform) on the DaskRunner adapter (a LocalCluster of 2 single-threaded
worker processes) against the DirectRunner in_memory, on the same data in the same process: wall time per
step, every output file compared byte for byte, each dask worker's peak RSS against its memory limit, the
worker log lines that announce memory trouble, and the elements entering each shuffle (after combiner
lifting).

    python benchmarks/generate_data.py --source ../shared/data/ag_news --rows 120000 --out /tmp/ag_news_120k
    python benchmarks/bench_dask_scale.py --data /tmp/ag_news_120k --repeats 5 --out
    benchmarks/results/dask_scale_127k_fused.json

The reference (in_memory) runs first, then the dask runs one after the other; a JSON line per run is printed
as it finishes, so an interrupted benchmark still leaves its finished runs in the log. `--no-lifting` adds one
dask run without combiner lifting (what every CombinePerKey shuffled before), for small data only.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_ingest_transform import PeakTreeRss

from components.ingest import executor as ingest
from components.transform import executor as transform
from components.validate import executor as validate
from contract.artifacts import Runtime
from contract.data_config import IngestConfig, TransformConfig, ValidateConfig
from library.layouts import SPLITS

IN_MEMORY = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
MULTI_PROCESSING = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")
DASK = ("--runner=engines.dask.runner.DaskClusterRunner", "--dask_workers=2")
TROUBLE = ("Pausing worker", "gc.collect() took", "Event loop was unresponsive")


@contextlib.contextmanager
def stderr_to(path: Path):
    """File descriptor 2 (this process's and every worker process started meanwhile) goes to `path`."""
    saved = os.dup(2)
    with open(path, "w") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class ShuffleCounts(logging.Handler):
    """Collects the adapter's "shuffle LABEL: N elements from P partitions" lines."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.shuffles: list[tuple[str, int, int]] = []

    def emit(self, record):
        match = re.fullmatch(r"shuffle (.+): (\d+) elements from (\d+) partitions", record.getMessage())
        if match:
            self.shuffles.append((match[1], int(match[2]), int(match[3])))


def run_steps(data: Path, beam_args: tuple[str, ...], work: Path) -> dict:
    runtime = Runtime(beam_args=beam_args, seed=42, log=lambda message: None)
    seconds, shuffles = {}, {}
    counter = ShuffleCounts()
    logger = logging.getLogger("engines.dask.runner")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    try:
        started = time.perf_counter()
        examples = ingest.run({}, work / "ingest", IngestConfig(data=f"csv:{data}"), runtime)["examples"]
        seconds["ingest"], shuffles["ingest"] = time.perf_counter() - started, counter.shuffles
        counter.shuffles, started = [], time.perf_counter()
        schema = validate.run({"examples": examples}, work / "validate", ValidateConfig(), runtime)["schema"]
        seconds["validate"], shuffles["validate"] = time.perf_counter() - started, counter.shuffles
        counter.shuffles, started = [], time.perf_counter()
        transform.run(
            {"examples": examples, "schema": schema}, work / "transform", TransformConfig(), runtime
        )
        seconds["transform"], shuffles["transform"] = time.perf_counter() - started, counter.shuffles
    finally:
        logger.removeHandler(counter)
    rows = (
        sum(examples.properties[f"{split}_rows"] for split in SPLITS)
        + examples.properties["quarantined_rows"]
    )
    return {"rows": rows, "seconds": seconds, "shuffles": shuffles}


def file_hashes(work: Path) -> dict[str, str]:
    return {str(path.relative_to(work)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(work.rglob("*")) if path.is_file()}


def one_run(data: Path, name: str, beam_args: tuple[str, ...], logs: Path) -> tuple[dict, dict[str, str]]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-dask-{name}-"))
    log = logs / f"{name}.stderr.log"
    load = os.getloadavg()[0]
    try:
        with PeakTreeRss() as rss, stderr_to(log):
            result = run_steps(data, beam_args, work)
        hashes = file_hashes(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = log.read_text(errors="replace")
    workers = sorted((peak for pid, peak in rss.each.items() if pid != os.getpid()), reverse=True)
    result.update(
        name=name,
        load_at_start=round(load, 1),
        load_at_end=round(os.getloadavg()[0], 1),
        main_peak_rss_mb=round(rss.each[os.getpid()] / 2**20),
        tree_peak_rss_mb=round(rss.peak / 2**20),
        worker_peak_rss_mb=[round(value / 2**20) for value in workers[:2]],
        trouble={line: text.count(line) for line in TROUBLE},
        files=len(hashes),
    )
    return result, hashes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="csv folder (train.csv, test.csv)")
    parser.add_argument("--repeats", type=int, default=5, help="dask runs")
    parser.add_argument(
        "--no-lifting", action="store_true", help="one more dask run without combiner lifting"
    )
    parser.add_argument(
        "--multi-processing",
        action="store_true",
        help="one DirectRunner multi_processing run with 2 workers too (the cost-growth table)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import psutil
    machine = harness.machine(f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM")
    logs = args.out.with_suffix("")
    logs = logs.parent / f"{logs.name}_logs"
    logs.mkdir(parents=True, exist_ok=True)
    report = {"command": harness.command_line(), "machine": machine, "data": str(args.data),
              "worker_memory_limit_mb": round(psutil.virtual_memory().total / 2 / 2**20), "runs": []}

    def save():
        harness.write_results(args.out, report, markdown(report))

    reference, reference_hashes = one_run(args.data, "in_memory", IN_MEMORY, logs)
    report["runs"].append(reference)
    print(json.dumps(reference), flush=True)
    save()
    runs = [("multi_processing_2", MULTI_PROCESSING)] if args.multi_processing else []
    runs += [(f"dask_2_run{index + 1}", DASK) for index in range(args.repeats)]
    if args.no_lifting:
        runs.append(("dask_2_unlifted", (*DASK, "--dask_no_combiner_lifting")))
    for name, beam_args in runs:
        result, hashes = one_run(args.data, name, beam_args, logs)
        result["identical_to_in_memory"] = hashes == reference_hashes
        result["differing_files"] = sorted(path for path in set(hashes) | set(reference_hashes)
                                           if hashes.get(path) != reference_hashes.get(path))[:20]
        report["runs"].append(result)
        print(json.dumps(result), flush=True)
        save()


def markdown(report: dict) -> str:
    runs = report["runs"]
    reference = runs[0]["seconds"]
    lines = [
        *harness.provenance(report),
        f"Data: {report['data']} ({runs[0]['rows']} rows read). Worker memory limit (LocalCluster default, "
        f"machine / 2 workers): {report['worker_memory_limit_mb']} MB.",
        "",
        "| run | ingest s | validate s | transform s | total s | x in_memory | load at start / end | "
        "worker peak RSS MB (% of limit) | main process peak RSS MB | files identical to in_memory | "
        "Pausing / gc.collect / unresponsive lines |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        seconds = run["seconds"]
        total = sum(seconds.values())
        workers = ", ".join(f"{mb} ({100 * mb / report['worker_memory_limit_mb']:.0f}%)"
                            for mb in run["worker_peak_rss_mb"]) or "-"
        identical = run.get("identical_to_in_memory")
        identical = ("(reference)" if identical is None else f"yes ({run['files']} files)" if identical
                     else f"NO: {run['differing_files']}")
        trouble = " / ".join(str(run["trouble"][line]) for line in TROUBLE)
        lines.append(
            f"| {run['name']} | {seconds['ingest']:.1f} | {seconds['validate']:.1f} | "
            f"{seconds['transform']:.1f} | {total:.1f} | {total / sum(reference.values()):.2f} | "
            f"{run['load_at_start']} / {run['load_at_end']} | {workers} | {run['main_peak_rss_mb']} | "
            f"{identical} | {trouble} |"
        )
    lines += [
        "",
        "Elements entering each shuffle (per step: the sum over its GroupByKeys, and the largest):",
        "",
        "| run | step | shuffles | elements, all shuffles | largest shuffle (elements from partitions) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        for step, shuffles in run["shuffles"].items():
            if shuffles:
                label, elements, partitions = max(shuffles, key=lambda item: item[1])
                lines.append(f"| {run['name']} | {step} | {len(shuffles)} | {sum(s[1] for s in shuffles)} | "
                             f"{label}: {elements} from {partitions} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
