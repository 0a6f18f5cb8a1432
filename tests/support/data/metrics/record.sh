#!/usr/bin/env bash
# Records the metrics files in this folder: real `agnews-pipeline` runs on the committed sample cut into weekly
# spans (benchmarks/make_spans.py), each writing --metrics-file. tests/unit/test_outcomes.py feeds them to promtool
# to test monitoring/alerts.yml. Run from the repository root after a change to apps/job_metrics.py:
#     bash tests/support/data/metrics/record.sh
set -euo pipefail
out=tests/support/data/metrics
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cli() { python -m apps.cli "$@" || true; }  # each run ends with the exit code it is recorded for
cat > "$work/config.yaml" <<'YAML'
transform: {vocab_size: 5000, max_length: 64, bucket_boundaries: [8, 16, 32, 64]}
tuner: {enabled: false}
evaluator: {min_accuracy: 0.0, max_accuracy_drop: 1.0}
validate: {drift: {length_min_rows: 100}}
YAML
today=$(date -u +%F)
# Fresh data: 4 weekly spans, the newest dated today.
python benchmarks/make_spans.py --data tests/support/data/ag_news_sample --out "$work/fresh" --spans 4 \
    --start "$(date -u -d "$today - 21 days" +%F)"
# Old data with a label shift in its newest span (dated 2026-11-02).
python benchmarks/make_spans.py --data tests/support/data/ag_news_sample --out "$work/shifted" --spans 4 \
    --shift-span 4 --shift label
run() { cli retrain --config "$work/config.yaml" "$@"; }
# pushed.prom: a retrain that trains 3 epochs and pushes version 1 (exit 0).
run --data "csv:$work/fresh" --pipeline-root "$work/root" --set trainer.epochs=3 --metrics-file "$out/pushed.prom"
# not_blessed.prom: a 1-epoch model trained from scratch, held to the served model (max drop 0.01): exit 4.
run --data "csv:$work/fresh" --pipeline-root "$work/root" --force --set trainer.epochs=1 \
    --set trainer.warm_start=false --set evaluator.max_accuracy_drop=0.01 --metrics-file "$out/not_blessed.prom"
# drift.prom: the shifted span refused with validate.on_drift=fail (exit 8).
run --data "csv:$work/shifted" --pipeline-root "$work/drift-root" --set validate.on_drift=fail \
    --metrics-file "$out/drift.prom"
# timed_out.prom: a retrain ended by its deadline (exit 124).
run --data "csv:$work/fresh" --pipeline-root "$work/slow-root" --deadline 20s --set trainer.epochs=200 \
    --metrics-file "$out/timed_out.prom"
# too_few_spans.prom: a window that cannot be formed (exit 6).
run --data "csv:$work/fresh" --pipeline-root "$work/root" --set ingest.window.min_spans=9 \
    --metrics-file "$out/too_few_spans.prom"
