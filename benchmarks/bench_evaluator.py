"""The evaluator's TFMA pass, timed with and without a fixed extraction batch size, in one process.

    python benchmarks/bench_evaluator.py --run ROOT/runs/RUN --baseline-model ROOT/runs/OTHER/trainer/model \
        --out benchmarks/results/evaluator_tfma_batch.json

RUN is a finished run (its ingest examples' test split and its trainer's model are read); the baseline model
is any other run's. Each setting runs TFMA over the same bucketed test examples with the candidate and the
baseline, as the evaluator does, `--repeats` times, alternating, so both settings see the same machine load.
The metrics of every pass are kept: the batch size must change the time, never a number.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import harness


def tfma_pass(examples: Path, candidate: Path, baseline: Path, batch_size: int | None, out: Path) -> dict:
    """One TFMA run of the evaluator's (components/evaluator/tfma_metrics.run_tfma) with `batch_size` rows per
    call: its seconds and both models' overall accuracy and loss."""
    from components.evaluator import tfma_metrics
    from contract.config import EvaluatorConfig
    from library.export import TF_EXAMPLE_SIGNATURE

    # the signature measured when these results were taken (the evaluator now uses batch_tf_example)
    config = tfma_metrics.make_eval_config(EvaluatorConfig(), TF_EXAMPLE_SIGNATURE, TF_EXAMPLE_SIGNATURE)
    started = time.monotonic()
    tfma_metrics.run_tfma(examples, candidate, baseline, config, out, (), batch_size=batch_size)
    seconds = time.monotonic() - started
    slices = tfma_metrics.read_tfma_metrics(out)
    overall = {name: slices[name][tfma_metrics.OVERALL] for name in (tfma_metrics.CANDIDATE,
                                                                     tfma_metrics.BASELINE)}
    return {"seconds": round(seconds, 1),
            "metrics": {name: {k: overall[name][k] for k in ("accuracy", "loss")} for name in overall}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--baseline-model", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from components.evaluator import executor
    from components.evaluator.tfma_metrics import TFMA_BATCH_SIZE
    from library.layouts import EXAMPLE_FILE_SUFFIX, existing_serving_model_dir, read_model_input

    candidate = existing_serving_model_dir(args.run / "trainer" / "model")
    baseline = existing_serving_model_dir(args.baseline_model)
    test_files = executor._test_files(args.run / "ingest" / "examples")
    bounds = list(read_model_input(args.run / "trainer" / "model").bucket_upper_bounds)
    work = Path(tempfile.mkdtemp(prefix="bench-evaluator-"))
    examples = work / f"test{EXAMPLE_FILE_SUFFIX}"
    loaded = executor.load_serving_model(candidate)
    rows = sum(executor.write_bucketed_eval_examples(test_files, loaded, bounds, examples).values())
    report = {"command": harness.command_line(), "machine": harness.machine(), "rows": rows,
              "run": str(args.run), "baseline_model": str(args.baseline_model), "passes": []}
    for repeat in range(args.repeats):
        for batch_size in (None, TFMA_BATCH_SIZE):
            result = tfma_pass(examples, candidate, baseline, batch_size, work / f"{repeat}-{batch_size}")
            report["passes"].append({"batch_size": batch_size, **result})
            print(report["passes"][-1], flush=True)
    report["load_after"] = round(os.getloadavg()[0], 1)
    harness.write_results(args.out, report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = ["# The evaluator's TFMA pass: extraction batch size", "", *harness.provenance(report),
             f"Data: the test split of `{report['run']}` ({report['rows']:,} rows), candidate = its model, "
             f"baseline = `{report['baseline_model']}`  ",
             f"Load average (1 min) after: {report['load_after']}  ", "",
             *harness.table_head("pass", "batch size", "seconds", "candidate accuracy", "candidate loss",
                                 "baseline accuracy")]
    for index, item in enumerate(report["passes"], 1):
        metrics = item["metrics"]
        lines.append(f"| {index} | {item['batch_size'] or 'unset (BatchElements)'} | {item['seconds']} | "
                     f"{metrics['candidate']['accuracy']:.6f} | {metrics['candidate']['loss']:.6f} | "
                     f"{metrics['baseline']['accuracy']:.6f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
