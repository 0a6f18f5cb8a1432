"""Cost of the Beam steps as the data grows: reads bench_dask_scale.py results at several sizes (each run with
--multi-processing) and writes a table (per step: seconds, microseconds per row, peak memory of all processes)
and a plot of per-row cost against rows for DirectRunner in_memory, multi_processing(2) and dask(2).

    python benchmarks/cost_growth.py benchmarks/results/dask_scale_12k_fused.json \
        benchmarks/results/dask_scale_127k_fused.json benchmarks/results/dask_scale_1200k_for_cost_growth.json
        \ --out benchmarks/results/cost_growth
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

MODES = {"in_memory": "DirectRunner in_memory", "multi_processing_2": "DirectRunner multi_processing (2)",
         "dask_2_run1": "dask (2 workers)"}
STEPS = ("ingest", "validate", "transform")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, nargs="+", help="bench_dask_scale.py .json files, one per size")
    parser.add_argument("--out", type=Path, required=True, help="OUT.md and OUT.png are written")
    args = parser.parse_args()
    rows = []
    for path in args.results:
        report = json.loads(path.read_text())
        for run in report["runs"]:
            if run["name"] in MODES:
                total = sum(run["seconds"][s] for s in STEPS)
                rows.append({"file": path.name, "mode": run["name"], "rows": run["rows"], "total": total,
                             "seconds": run["seconds"], "peak_mb": run.get("tree_peak_rss_mb"),
                             "load": f"{run['load_at_start']} / {run['load_at_end']}"})
    rows.sort(key=lambda r: (list(MODES).index(r["mode"]), r["rows"]))
    lines = [
        "# Cost of ingest + validate + transform as the data grows",
        "",
        "From: " + ", ".join(f"`{p}`" for p in args.results) + " (commands and machine in each).",
        "",
        "| engine | rows | ingest s | validate s | transform s | total s | µs per row | peak RSS, all "
        "processes "
        "(MB) | load at start / end |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {MODES[r['mode']]} | {r['rows']:,} | "
            + " | ".join(f"{r['seconds'][s]:.1f}" for s in STEPS)
            + f" | {r['total']:.1f} | {1e6 * r['total'] / r['rows']:.0f} | {r['peak_mb'] or '-'} | "
            f"{r['load']} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + f"\n\n![per-row cost]({args.out.name}.png)\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, label in MODES.items():
        points = [r for r in rows if r["mode"] == mode]
        if points:
            left.plot(
                [p["rows"] for p in points], [1e6 * p["total"] / p["rows"] for p in points], "o-", label=label
            )
            right.plot([p["rows"] for p in points], [p["total"] for p in points], "o-", label=label)
    for axis, title in ((left, "µs per row (ingest + validate + transform)"), (right, "seconds")):
        axis.set_xscale("log")
        axis.set_xlabel("rows")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    right.set_yscale("log")
    left.legend()
    figure.tight_layout()
    figure.savefig(args.out.with_suffix(".png"), dpi=100)


if __name__ == "__main__":
    main()
