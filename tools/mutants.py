"""A curated mutation harness: each mutation breaks one important behaviour of the product, and the tests
listed with it must notice. `make mutants` runs them all, `make mutants-fast` (CI) the ones marked fast.

For each mutation the harness copies the repository (the files `git ls-files` lists, tracked or new and not
ignored) into a temporary folder, replaces the mutation's `old` snippet by its `new` one in that copy, and
runs only the mutation's tests there (cwd and PYTHONPATH set to the copy, with a timeout). The working tree is
never touched. One line per mutation:

    caught     split_hash_salted_per_process         14.2s
    SURVIVED   push_duplicates_the_same_model        61.0s   <- its tests pass with the behaviour broken

A mutation is `caught` only when one of its tests fails or errs (read from pytest's JUnit XML report: TF and
Beam sometimes crash the interpreter on exit, so the exit code cannot tell). A run where no test ran (a test
id that no longer exists, a collection error), a timeout, or a `new` snippet that does not compile is an
ERROR, not a catch. The exit code is non-zero if any mutation survives or errs, or if an `old` snippet is not
found exactly once in its file (checked for every selected mutation before anything runs).

    python tools/mutants.py                 all mutations
    python tools/mutants.py --fast          those marked fast (each test under ~20 s; CI, under 3 minutes)
    python tools/mutants.py --only NAME     one mutation (repeatable)
    python tools/mutants.py --list          the table: name, fast, file, what breaks, tests
    python tools/mutants.py --baseline      the selected mutations' tests on the unmutated copy: all must pass

Adding a mutation
-----------------
1. Pick one behaviour a user relies on (not a line of code): "an unchanged span is reused, not re-read".
2. Break it the way a plausible bug would, with the smallest edit: append a `Mutation` to MUTATIONS with a
   `name` (snake_case, says what is now wrong), the `file` (relative to the repository root), an `old` snippet
   that occurs exactly once in that file (long enough to stay unique; when a refactor moves the code, the
   harness fails loudly and only `file` or `old` needs updating), its `new` replacement, `breaks` (one line:
   what a user would see), and `tests` (pytest node ids, as few as catch it).
3. Run `python tools/mutants.py --only NAME`: it must say `caught`. If it says SURVIVED, strengthen a test so
   that it observes the effect (weights, bytes, rows, processes, files), not what the code reports about
   itself (a property, a log line, a history field written from the same variable).
4. Run `python tools/mutants.py --only NAME --baseline`: the listed tests must pass without the mutation.
5. Mark it `fast=True` if each listed test takes under ~20 s, so CI runs it (`make mutants-fast`, < 3 min).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT = 900  # seconds per mutation (its tests together)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    breaks: str
    tests: tuple[str, ...]
    fast: bool = False
    timeout: int = DEFAULT_TIMEOUT


SERVED_DRIFT_TEST = ("tests/system/test_served_drift.py::"
                     "test_new_spans_are_compared_with_the_served_models_window_from_cached_profiles")
XLA_EXPORT_TEST = ("tests/system/test_export.py::"
                   "test_xla_export_compiles_each_bucket_shape_at_warm_up_and_matches_keras")

MUTATIONS: list[Mutation] = [
    # ------------------------------------------------------------------------------------------ ingest
    Mutation(
        name="ingest_ignores_beam_args",
        file="components/ingest/executor.py",
        old="with beam.Pipeline(options=pipeline_options(runtime.beam_args)) as pipeline:\n"
            "        if from_csv:",
        new="with beam.Pipeline(options=pipeline_options(())) as pipeline:\n        if from_csv:",
        breaks="--direct_running_mode=multi_processing (any --beam-arg) silently runs ingest in_memory",
        tests=("tests/system/test_determinism.py::"
               "test_ingest_twice_in_either_runner_mode_gives_identical_examples",),
    ),
    Mutation(
        name="split_hash_salted_per_process",
        file="components/ingest/executor.py",
        old='digest = hashlib.sha256(f"{label}\\x1f{title}\\x1f{description}".encode("utf-8")).digest()\n'
            '    return int.from_bytes(digest[:8], "big") / 2.0 ** 64',
        new='return (hash((label, title, description)) % 2 ** 32) / 2.0 ** 32',
        breaks="a row's eval/train split depends on the process (Python's salted hash): eval changes per run",
        tests=("tests/unit/test_ingest.py::test_a_row_lands_in_the_same_split_in_every_process",),
        fast=True,
    ),
    Mutation(
        name="out_of_range_class_not_quarantined",
        file="library/ag_news_csv.py",
        old="if not 1 <= class_id <= NUM_CLASSES:",
        new="if class_id < 1:",
        breaks="a row of class 5 or 9 is ingested with label 4 or 8 instead of being quarantined",
        tests=("tests/unit/test_ingest.py::"
               "test_every_kind_of_bad_row_is_quarantined_and_every_good_row_arrives",),
        fast=True,
    ),
    Mutation(
        name="unchanged_span_is_reread",
        file="components/ingest/span_reuse.py",
        old='if earlier and earlier["reuse_key"] == key and (kept / COUNTS_FILE).is_file():',
        new="if False:",
        breaks="every retrain re-reads every span of the window instead of linking the unchanged ones",
        tests=("tests/system/test_spans.py::"
               "test_ingest_reuses_unchanged_spans_as_hard_links_and_metrics_keep_the_last_success",),
    ),
    # ------------------------------------------------------------------------------------------ validate
    Mutation(
        name="drift_threshold_read_as_percent",
        file="library/drift.py",
        old="values[name] > thresholds[name]",
        new="values[name] > thresholds[name] * 100",
        breaks="a span whose label shares moved by 0.4 (threshold 0.1) is not flagged as drifted",
        tests=("tests/system/test_spans.py::test_drift_measures",),
        fast=True,
    ),
    Mutation(
        name="drift_only_warns_when_asked_to_fail",
        file="components/validate/span_checks.py",
        old='if any(row["drift"] for row in checks) and config.on_drift == "fail":',
        new='if any(row["drift"] for row in checks) and config.on_drift == "never":',
        breaks="with validate.on_drift=fail a drifted span only warns; the retrain trains and pushes on it",
        tests=("tests/system/test_spans.py::test_a_drifted_newest_span_warns_or_fails_as_configured",),
    ),
    # ------------------------------------------------------------------------------------------ transform
    Mutation(
        name="vocabulary_from_all_splits",
        file="components/transform/executor.py",
        old='(train_transformed, transformed_metadata), transform_fn = (\n'
            '                (raw["train"], sources["train"].TensorAdapterConfig())\n'
            '                | "AnalyzeAndTransformTrain" >> '
            'tft_beam.AnalyzeAndTransformDataset(make_preprocessing_fn(config)))',
        new='transform_fn = (\n'
            '                ((raw["train"], raw["eval"], raw["test"]) | "AllSplits" >> beam.Flatten(),\n'
            '                 sources["train"].TensorAdapterConfig())\n'
            '                | "AnalyzeAll" >> tft_beam.AnalyzeDataset(make_preprocessing_fn(config)))\n'
            '            train_transformed, transformed_metadata = (\n'
            '                ((raw["train"], sources["train"].TensorAdapterConfig()), transform_fn)\n'
            '                | "TransformTrain" >> tft_beam.TransformDataset())',
        breaks="the vocabulary is built from eval and test too: held-out words leak into the model's input",
        tests=("tests/unit/test_transform.py::test_vocabulary_is_built_from_the_train_split_only",),
    ),
    Mutation(
        name="no_length_bucketing",
        file="components/transform/executor.py",
        old="return bucket_of(encoded[0], upper_bounds), encoded[2]",
        new="return bucket_of(upper_bounds[-1], upper_bounds), encoded[2]",
        breaks="every example is written to the last (longest) bucket: batches pad short texts to max_length",
        tests=("tests/unit/test_transform.py::test_examples_are_in_the_bucket_of_their_length",),
    ),
    Mutation(
        name="bucket_upper_bound_exclusive",
        file="library/layouts.py",
        old="bisect.bisect_left(upper_bounds, length)",
        new="bisect.bisect_right(upper_bounds, length)",
        breaks="a text of exactly a bucket's bound (8 tokens) lands in the next bucket and is padded to 16",
        tests=("tests/unit/test_transform.py::test_bucket_index_uses_inclusive_upper_bounds",),
        fast=True,
    ),
    # ------------------------------------------------------------------------------------------ tuner
    Mutation(
        name="tuner_scores_on_train",
        file="components/tuner/executor.py",
        old=('scored = bucketed_batches(examples_dir, "eval", EVAL_BATCH_SIZE, shuffle=False, '
             'examples=evaluation)'),
        new=('scored = bucketed_batches(examples_dir, "train", EVAL_BATCH_SIZE, shuffle=False, '
             'examples=train)'),
        breaks="trials are scored on the rows they trained on: the search picks the model that overfits most",
        tests=("tests/system/test_tuner_trainer.py::"
               "test_random_search_scores_on_eval_and_writes_its_outputs",),
        fast=True,
    ),
    # ------------------------------------------------------------------------------------------ trainer
    Mutation(
        name="embedding_trainable_while_frozen",
        file="components/trainer/executor.py",
        old='chosen_values["embedding_trainable"] = frozen_epochs == 0',
        new='chosen_values["embedding_trainable"] = frozen_epochs < config.epochs',
        breaks="with embeddings_trainable='after_epochs N' the pretrained vectors are tuned from epoch 1",
        tests=("tests/system/test_embeddings.py::test_fine_tuned_and_unfrozen_after_epochs",),
    ),
    Mutation(
        name="warm_start_ignores_its_patience",
        file="components/trainer/executor.py",
        old="patience = config.warm_start_patience if warm else config.early_stopping_patience",
        new="patience = config.early_stopping_patience",
        breaks="a warm-started run trains on for early_stopping_patience epochs after its best instead of "
               "warm_start_patience",
        tests=("tests/system/test_retune_warm_start.py::"
               "test_a_warm_started_run_ends_after_its_own_patience_where_a_fresh_run_goes_on",),
        fast=True,
    ),
    # ------------------------------------------------------------------------------- evaluator, pusher
    Mutation(
        name="min_accuracy_not_enforced",
        file="components/evaluator/tfma_metrics.py",
        old="lower_bound=wrappers_pb2.DoubleValue(value=config.min_accuracy)",
        new="lower_bound=wrappers_pb2.DoubleValue(value=0.0)",
        breaks="a model below evaluator.min_accuracy is blessed (and pushed)",
        tests=("tests/system/test_evaluator_pusher.py::test_below_min_accuracy_is_not_blessed",),
    ),
    Mutation(
        name="push_duplicates_the_same_model",
        file="components/pusher/executor.py",
        old="adopted = served_version_of(serving_dir, model_fingerprint)",
        new="adopted = None",
        breaks="pushing the model the newest version already holds publishes it again as a new version",
        tests=("tests/system/test_evaluator_pusher.py::"
               "test_a_model_is_published_once_however_often_it_is_pushed",),
        fast=True,
    ),
    # ------------------------------------------------------------------------------------------ runner
    Mutation(
        name="cache_key_ignores_step_config",
        file="pipeline/step_execution.py",
        old='"config": json.loads(json.dumps(dataclasses.asdict(step_cfg), default=str)),',
        new='"config": None,',
        breaks="changing a step's configuration section reuses its cached output instead of re-running it",
        tests=("tests/unit/test_runner.py::"
               "test_second_run_reuses_every_step_and_config_change_reruns_only_downstream",),
        fast=True,
    ),
    Mutation(
        name="corrupted_span_not_checked",
        file="components/validate/span_checks.py",
        old='bad_rows=span_counts.get(span, {}).get("quarantined_rows"))',
        new="bad_rows=None)",
        breaks="a stream's span full of bad rows is trained on instead of quarantined",
        tests=("tests/unit/test_span_states.py::"
               "test_a_corrupted_span_of_a_stream_is_refused_by_validate_not_failed_by_ingest",),
        fast=True,
    ),
    # ------------------------------------------------------------------------------------------ serving
    Mutation(
        name="batch_answers_not_split_back",
        file="apps/serving/batching.py",
        old="array[start:start + task.rows]",
        new="array[:task.rows]",
        breaks="requests merged into one model call each get the batch's first rows instead of their own",
        tests=("tests/system/test_serve_batching.py::"
               "test_concurrent_requests_are_merged_into_one_model_call_and_split_back",),
    ),
    Mutation(
        name="read_only_command_creates_a_missing_root",
        file="apps/cli/main.py",
        old="        existing_root(config.pipeline_root())\n",
        new="",
        breaks="rollback (or gc, spans accept) on a mistyped --pipeline-root creates it (.lock, metadata.sqlite)",
        tests=("tests/unit/test_cli_seams.py::"
               "test_a_command_on_a_root_that_does_not_exist_refuses_and_creates_nothing",),
        fast=True,
    ),
    Mutation(
        name="history_hides_quarantines",
        file="pipeline/history.py",
        old="    quarantines = quarantine_rows(store)\n",
        new="    quarantines = []\n",
        breaks="history.html no longer lists the spans validate refused, with their state and reason",
        tests=("tests/unit/test_outcomes.py::test_history_shows_the_quarantines_with_their_state_and_reason",),
        fast=True,
    ),
    Mutation(
        name="drift_reference_not_the_served_window",
        file="components/validate/span_checks.py",
        old='    served = reference.served(inputs)\n',
        new='    served = None\n',
        breaks="new spans are compared with the rest of the window, not with what the served model learned",
        tests=(SERVED_DRIFT_TEST,),
    ),
    Mutation(
        name="span_profile_cache_not_read",
        file="library/span_profiles.py",
        old='    cached = cached_profile(examples_uri, span, sha256) if sha256 else None\n',
        new='    cached = None\n',
        breaks="every reference span's rows are read again each week (no drift measured once they are gone)",
        tests=(SERVED_DRIFT_TEST,),
    ),
    Mutation(
        name="span_profile_not_keyed_by_sha256",
        file="library/layouts.py",
        old='return span_dir(examples_uri, span) / f"profile-{sha256}.json"',
        new='return span_dir(examples_uri, span) / "profile.json"',
        breaks="a corrected span's profile is not told apart from the old bytes' profile",
        tests=(SERVED_DRIFT_TEST,),
    ),
    Mutation(
        name="vocab_oov_not_against_the_served_vocabulary",
        file="components/validate/reference.py",
        old='_vocabulary(Path(model.uri)), predicted or None)',
        new='None, predicted or None)',
        breaks="vocab_oov_share is never measured against the served model's vocabulary",
        tests=(SERVED_DRIFT_TEST,),
    ),
    Mutation(
        name="served_prediction_mix_not_recorded",
        file="components/trainer/executor.py",
        old='    predicted = predicted_class_counts(model, examples_dir, "eval", EVAL_BATCH_SIZE) if spans else None\n',
        new='    predicted = None\n',
        breaks="the shift of the served model's predicted-class mix on a new span is never measured",
        tests=(SERVED_DRIFT_TEST,),
    ),
    Mutation(
        name="served_examples_not_the_served_models_own",
        file="pipeline/dag.py",
        old='        return store.artifacts_of(producer["id"], "input").get(self.via) if producer is not None else None',
        new="        return artifact",
        breaks="validate's reference profiles are looked up in the wrong artifact, not the served model's examples",
        tests=("tests/unit/test_dag.py::"
               "test_validate_resolves_the_served_model_and_its_examples_but_not_one_trained_on_its_own_examples",),
        fast=True,
    ),
    Mutation(
        name="xla_padding_rows_returned_to_the_client",
        file="library/xla_buckets.py",
        old="return tf.ensure_shape(probabilities[:rows], [None, num_classes])",
        new="return tf.ensure_shape(probabilities, [None, num_classes])",
        breaks="a request of 3 texts gets 4 answers: the rows padding its batch to a bucket size come back",
        tests=(XLA_EXPORT_TEST,),
    ),
    Mutation(
        name="xla_bucket_padding_changes_outputs",
        file="library/xla_buckets.py",
        old="padded = tf.pad(token_ids, [[0, padded_rows - rows], [0, width - steps]])",
        new="padded = tf.pad(token_ids, [[0, padded_rows - rows], [0, width - steps]], constant_values=1)",
        breaks="the steps padding a text to its length bucket are read as a word: answers change by padding",
        tests=(XLA_EXPORT_TEST,),
    ),
    Mutation(
        name="xla_warm_up_misses_a_bucket_shape",
        file="library/xla_buckets.py",
        old="for rows, steps in shapes]",
        new="for rows, steps in shapes][:-1]",
        breaks="a request of the last bucket shape compiles while its client waits (seconds) after warm-up",
        tests=(XLA_EXPORT_TEST,),
    ),
    Mutation(
        name="serve_port_unchecked",
        file="apps/cli/serve.py",
        old="if not 0 <= args.port <= 65535:",
        new="if False:",
        breaks="serve --port 99999 ends in a traceback from bind() instead of one line (JSON with --log-format "
               "json)",
        tests=("tests/unit/test_cli_seams.py::test_serve_errors_honour_log_format_json",),
        fast=True,
    ),
    # ---------------------------------------------------------------------------------------------- cli
    Mutation(
        name="listing_columns_not_aligned",
        file="apps/cli/utils.py",
        old='print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())',
        new='print("  ".join(row).rstrip())',
        breaks="`runs` and `spans` print ragged columns",
        tests=("tests/unit/test_cli_seams.py::test_a_listing_is_json_a_line_when_empty_or_an_aligned_table",),
        fast=True,
    ),
]


def check_snippets(mutations: list[Mutation], root: Path = ROOT) -> list[str]:
    """One problem line per mutation whose `old` snippet is not found exactly once in its file."""
    problems = []
    names = [m.name for m in MUTATIONS]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{name}: the name is used by more than one mutation")
    for mutation in mutations:
        path = root / mutation.file
        if not path.is_file():
            problems.append(f"{mutation.name}: {mutation.file} does not exist (moved? update `file`)")
            continue
        count = path.read_text(encoding="utf-8").count(mutation.old)
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times"
            problems.append(f"{mutation.name}: the `old` snippet is {where} in {mutation.file} "
                            f"(code moved or changed? update the mutation): {mutation.old[:80]!r}")
        if mutation.old == mutation.new:
            problems.append(f"{mutation.name}: `new` equals `old`")
    return problems


def project_files(root: Path = ROOT) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                            check=True, capture_output=True).stdout.decode().split("\0")
    return [name for name in listed if name and (root / name).is_file()]


def copy_project(destination: Path, files: list[str], root: Path = ROOT) -> None:
    for name in files:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def run_tests(copy: Path, tests: tuple[str, ...],
              timeout: int) -> tuple[dict[str, int] | None, str, float, str]:
    """(counts, exit, seconds, output tail): counts of the run's tests ({"tests", "failed", "skipped"})
    read from pytest's JUnit XML report, None when pytest wrote none (a usage error, a timeout). The report,
    not the exit code, decides: TensorFlow and Beam sometimes crash the interpreter on its way out (exit -11)
    after the tests have run and been reported."""
    import xml.etree.ElementTree as ElementTree
    report = copy / ".mutant-report.xml"
    report.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--no-header",
               f"--junitxml={report}", *tests]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        exit_text = f"exit {process.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)  # the test run and whatever it started (servers, Beam workers)
        output, _ = process.communicate()
        exit_text = f"timed out after {timeout}s"
    seconds = time.monotonic() - started
    counts = None
    if report.is_file() and exit_text.startswith("exit"):
        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {"tests": int(suite.get("tests", 0)),
                  "failed": int(suite.get("failures", 0)) + int(suite.get("errors", 0)),
                  "skipped": int(suite.get("skipped", 0))}
    return counts, exit_text, seconds, output[-4000:]


def mutate(copy: Path, mutation: Mutation) -> str | None:
    """Applies the mutation in the copy; why it cannot be tested, or None."""
    path = copy / mutation.file
    text = path.read_text(encoding="utf-8").replace(mutation.old, mutation.new, 1)
    path.write_text(text, encoding="utf-8")
    if path.suffix == ".py":
        try:
            compile(text, str(path), "exec")
        except SyntaxError as error:  # a broken mutation would be "caught" by any test that imports the file
            return f"the mutated {mutation.file} does not compile: {error}"
    return None


def run_mutation(mutation: Mutation, files: list[str], verbose: bool) -> str:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutation.name}-") as folder:
        copy = Path(folder)
        copy_project(copy, files)
        problem = mutate(copy, mutation)
        if problem:
            counts, exit_text, seconds, output = None, problem, 0.0, ""
        else:
            counts, exit_text, seconds, output = run_tests(copy, mutation.tests, mutation.timeout)
    if counts is None or counts["tests"] == 0:
        status = f"ERROR ({exit_text}, no test ran)"
    elif counts["failed"]:
        status = "caught"
    else:
        status = "SURVIVED" + (f" ({counts['skipped']} skipped)" if counts["skipped"] else "")
    print(f"{status.split(' (')[0]:<10} {mutation.name:<40} {seconds:6.1f}s"
          + (f"   {status}" if status.startswith(("ERROR", "SURVIVED (")) else ""), flush=True)
    if verbose or status != "caught":
        print("    " + "\n    ".join(output.rstrip().splitlines()[-25:]), flush=True)
    return status


def run_baseline(mutations: list[Mutation], files: list[str]) -> bool:
    tests = tuple(dict.fromkeys(test for m in mutations for test in m.tests))
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as folder:
        copy_project(Path(folder), files)
        counts, exit_text, seconds, output = run_tests(Path(folder), tests, DEFAULT_TIMEOUT * 2)
    ok = (counts is not None and counts["tests"] >= len(tests) and not counts["failed"]
          and not counts["skipped"])
    print(f"{'passes' if ok else 'FAILS':<10} {'baseline (' + str(len(tests)) + ' tests, no mutation)':<40} "
          f"{seconds:6.1f}s   {counts} {exit_text}", flush=True)
    if not ok:
        print("    " + "\n    ".join(output.rstrip().splitlines()[-40:]), flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="only the mutations marked fast (CI)")
    parser.add_argument("--only", action="append", metavar="NAME", help="only this mutation (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--baseline", action="store_true",
                        help="run the selected mutations' tests without any mutation; they must all pass")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the pytest output of every mutation")
    args = parser.parse_args(argv)

    selected = [m for m in MUTATIONS if (not args.fast or m.fast) and (not args.only or m.name in args.only)]
    unknown = sorted(set(args.only or ()) - {m.name for m in MUTATIONS})
    if unknown:
        print(f"unknown mutation(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    if args.list:
        for m in selected:
            print(f"{m.name}  [{'fast' if m.fast else 'slow'}]  {m.file}\n    breaks: {m.breaks}")
            for test in m.tests:
                print(f"    test:   {test}")
        return 0
    problems = check_snippets(selected)
    if problems:
        print("mutations that no longer apply:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    files = project_files()
    if args.baseline:
        return 0 if run_baseline(selected, files) else 1
    started = time.monotonic()
    statuses = [run_mutation(m, files, args.verbose) for m in selected]
    caught = statuses.count("caught")
    print(f"{caught} of {len(statuses)} mutations caught in {time.monotonic() - started:.0f}s", flush=True)
    return 0 if caught == len(statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
