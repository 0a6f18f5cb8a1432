"""What a fresh load of an XLA export costs before its first offline batch is answered, through the served
tf.Example signature (XLA: one compilation per batch shape) and through batch_tf_example (the same graph and
weights without XLA), as the evaluator (twice per model) and validate's drift predictions pay it.

    python benchmarks/bench_batch_signature.py --run ROOT/runs/RUN --repeats 3 \
        --out benchmarks/results/batch_signature.json

RUN is a finished run with the default export (trainer.export_xla true): its trainer's serving model answers
its ingest's test split in batches of 512 rows (the evaluator's). Each pass is a fresh process (compilations
do not outlive it), the two signatures alternating; a pass reports the load and the answering seconds and the
probabilities' checksum, which must agree within 1e-6 x rows.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import harness

from library.layouts import serving_model_dir

SIGNATURES = ("serving_tf_example", "batch_tf_example")
PASS = """
import json, sys, time
started = time.monotonic()
import tensorflow as tf
model_dir, signature_name, files = sys.argv[1], sys.argv[2], sys.argv[3:]
imported = time.monotonic()
signature = tf.saved_model.load(model_dir).signatures[signature_name]
loaded = time.monotonic()
total, rows = 0.0, 0
for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(512):
    probabilities = signature(examples=batch)["probabilities"].numpy()
    # each class's probabilities weighted by its rank: a change of any class's answers shows
    total += float(probabilities.sum(axis=0) @ range(1, probabilities.shape[1] + 1))
    rows += len(probabilities)
print(json.dumps({"load_s": loaded - imported, "answer_s": time.monotonic() - loaded, "rows": rows,
                  "checksum": total}))
"""


def one_pass(model_dir: Path, signature: str, files: list[str]) -> dict:
    return harness.run_json([sys.executable, "-c", PASS, str(model_dir), signature, *files])


def markdown(report: dict) -> str:
    lines = ["# A fresh load's first offline batches: the served tf.Example signature (XLA) against "
             "batch_tf_example", "", *harness.provenance(report), f"Data: {report['data']}", "",
             *harness.table_head("signature", "passes", "load s", "answer s (median)", "answer s (each)")]
    for name in SIGNATURES:
        passes = report["passes"][name]
        answers = sorted(p["answer_s"] for p in passes)
        median = answers[len(answers) // 2]
        lines.append(f"| {name} | {len(passes)} | {passes[0]['load_s']:.2f} | {median:.2f} | "
                     + ", ".join(f"{p['answer_s']:.2f}" for p in passes) + " |")
    lines += ["", f"Ratio of medians (batch / served): {report['ratio']:.2f}x; checksums agree: "
              f"{report['checksums_agree']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model_dir = serving_model_dir(args.run / "trainer" / "model")
    files = sorted(str(p) for p in (args.run / "ingest" / "examples" / "test").glob("*"))
    passes: dict[str, list] = {name: [] for name in SIGNATURES}
    for repeat in range(args.repeats):
        for name in SIGNATURES if repeat % 2 == 0 else reversed(SIGNATURES):
            passes[name].append(one_pass(model_dir, name, files))
            print(name, passes[name][-1], flush=True)
    medians = {name: sorted(p["answer_s"] for p in passes[name])[args.repeats // 2] for name in SIGNATURES}
    checksums = [p["checksum"] for name in SIGNATURES for p in passes[name]]
    rows = passes[SIGNATURES[0]][0]["rows"]
    report = {"command": harness.command_line(), "machine": harness.machine(),
              "data": f"{rows} test rows of {args.run}", "passes": passes,
              "ratio": medians["batch_tf_example"] / medians["serving_tf_example"],
              "checksums_agree": max(checksums) - min(checksums) <= 1e-6 * rows}
    harness.write_results(args.out, report, markdown(report))


if __name__ == "__main__":
    main()
