#!/bin/bash
# What a weekly retrain of a 120k-row window costs once its root has a year of history (issue 28's goal: at most
# 3 minutes at week 52 as at week 8). The weeks in FULL_WEEKS run with the default config; the others with a
# cheap trainer (1 epoch of 5,000 rows: they only build the history: runs, store, served versions, spans).
#
# Inputs (made beforehand):
#   SPANS_A  12 weekly spans of 15,000 generated rows and test.csv:
#            generate_data.py --rows 180000 --out /tmp/ag_news_180k; make_spans.py --spans 12 --out /tmp/stream_180k
#   SPANS_B  40 more: generate_data.py --rows 600000 --seed 1 --out /tmp/gen600k;
#            make_spans.py --data /tmp/gen600k --out /tmp/stream_more --spans 40 --start 2027-01-04
#   START    a root after week 10 (bench_retrain_schedule.py --stream <first 10 spans> --first-spans 7 ...,
#            benchmarks/results/retrain_120k_weeks8_10.md: its roots/retune_default_warm_start), the year going
#            on at week 11; or empty: week 7 is the first run, on spans 1-7 (the search included), then 8-52
#   CODE     the checkout whose `apps.cli retrain` runs
#   FIRST    the first week to run when START is set (default 11: START is the root after week 10)
#   CHEAP_SPANS  spans a cheap week adds at once (default 1; 2 halves the cheap weeks' time, and their runs)
# Output: WORK/weeks.log, one line a week (exit code, wall seconds, root MB, load average); WORK/weekN.log.
set -u
SPANS_A=${SPANS_A:-/tmp/stream_180k}; SPANS_B=${SPANS_B:-/tmp/stream_more}
START=${START-/tmp/r120k_s36/roots/retune_default_warm_start}; CODE=${CODE:-$(cd "$(dirname "$0")/.." && pwd)}
WORK=${WORK:-/tmp/y120}; PY=${PY:-python}; FULL_WEEKS=${FULL_WEEKS:-"7 8 9 10 52"}; CHEAP_SPANS=${CHEAP_SPANS:-1}
ROOT=$WORK/root; STREAM=$WORK/stream; LOG=$WORK/weeks.log
FLAGS="--min-accuracy 0.5 --set ingest.window.num_spans=8 --set retention.served_versions=5 --set retention.runs=3"
FLAGS="$FLAGS --set retention.apply_after_retrain=true"
CHEAP="--set trainer.epochs=1 --set trainer.max_rows_per_epoch=5000"
mkdir -p "$WORK" && rm -rf "$ROOT" "$STREAM" && mkdir -p "$STREAM"
if [ -n "$START" ]; then cp -a "$START" "$ROOT"; first=${FIRST:-11}; else first=7; fi
ln -s "$SPANS_A/test.csv" "$STREAM/test.csv"
SPANS=( $(ls -d "$SPANS_A"/20* "$SPANS_B"/20*) )
for i in $(seq 0 $((first-2))); do ln -s "${SPANS[$i]}" "$STREAM/"; done
week=$first
while [ "$week" -le 52 ]; do
  extra="$CHEAP"; spans=$CHEAP_SPANS; [[ " $FULL_WEEKS " == *" $week "* ]] && extra="" && spans=1
  # a cheap week stops before the next full week and at week 52
  for j in $(seq 1 $((spans - 1))); do
    if [ $((week + j)) -gt 52 ] || [[ " $FULL_WEEKS " == *" $((week + j)) "* ]]; then spans=$j; break; fi
  done
  for i in $(seq "$week" $((week + spans - 1))); do ln -s "${SPANS[$((i-1))]}" "$STREAM/"; done
  week=$((week + spans - 1))
  start=$(date +%s.%N)
  (cd "$CODE" && CUDA_VISIBLE_DEVICES=-1 PYTHONPATH="$CODE" $PY -m apps.cli retrain --data "csv:$STREAM" \
     --pipeline-root "$ROOT" $FLAGS $extra > "$WORK/week$week.log" 2>&1)
  code=$?
  end=$(date +%s.%N)
  echo "week $week span $(basename "${SPANS[$((week-1))]}") exit $code wall $(echo "$end - $start" | bc)" \
       "root $(du -sm "$ROOT" | cut -f1)MB load $(cut -d' ' -f1 /proc/loadavg)" >> "$LOG"
  week=$((week + 1))
done
echo done >> "$LOG"
