"""The curated mutations of tools/mutants.py (its docstring says how to add one): each breaks one behaviour a
user relies on, and the tests listed with it must fail."""
from __future__ import annotations

from dataclasses import dataclass

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
XLA_CHUNKS_TEST = ("tests/system/test_export.py::"
                   "test_a_large_batch_runs_in_chunks_sorted_by_length_each_cut_to_its_own_bucket")

WORKERS_TEST = "tests/system/test_serve_workers.py::"
WORKERS_RESTART_TEST = (WORKERS_TEST + "test_a_killed_worker_is_started_again_while_the_other_answers_"
                        "and_later_than_before")

MUTATIONS: list[Mutation] = [
    # ------------------------------------------------------------------------------------------ ingest
    Mutation(
        name="ingest_ignores_beam_args",
        file="components/ingest/executor.py",
        old="with beam.Pipeline(options=pipeline_options(runtime.beam_args)) as pipeline:\n"
        "        if from_csv:",
        new="with beam.Pipeline(options=pipeline_options(())) as pipeline:\n        if from_csv:",
        breaks="--direct_running_mode=multi_processing (any --beam-arg) silently runs ingest in_memory",
        tests=(
            "tests/system/test_determinism.py::"
            "test_ingest_twice_in_either_runner_mode_gives_identical_examples",
        ),
    ),
    Mutation(
        name="split_hash_salted_per_process",
        file="components/ingest/executor.py",
        old='digest = hashlib.sha256(f"{label}\\x1f{title}\\x1f{description}".encode("utf-8")).digest()\n'
        '    return int.from_bytes(digest[:8], "big") / 2.0 ** 64',
        new="return (hash((label, title, description)) % 2 ** 32) / 2.0 ** 32",
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
        tests=(
            "tests/unit/test_ingest.py::test_every_kind_of_bad_row_is_quarantined_and_every_good_row_arrives",
        ),
        fast=True,
    ),
    Mutation(
        name="unchanged_span_is_reread",
        file="components/ingest/span_reuse.py",
        old='if earlier and earlier["reuse_key"] == key and (kept / COUNTS_FILE).is_file():',
        new="if False:",
        breaks="every retrain re-reads every span of the window instead of linking the unchanged ones",
        tests=(
            "tests/system/test_spans.py::"
            "test_ingest_reuses_unchanged_spans_as_hard_links_and_metrics_keep_the_last_success",
        ),
    ),
    Mutation(
        name="default_engine_tries_prism_first",
        file="engines/local.py",
        old="    _is_interactive = True",
        new="    _is_interactive = False",
        breaks="each Beam step first tries to fetch Prism from GitHub into ~/.apache_beam (outside the root)",
        tests=("tests/unit/test_local_runner.py",),
        fast=True,
    ),
    Mutation(
        name="steps_run_on_beams_direct_runner",
        file="library/beam_options.py",
        old='        args.append(f"--runner={LOCAL_RUNNER}")',
        new="        pass",
        breaks="a step with no --runner runs on Beam's DirectRunner, which tries Prism before every pipeline",
        tests=("tests/unit/test_local_runner.py",),
        fast=True,
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
        old="(train_transformed, transformed_metadata), transform_fn = (\n"
        '                raw["train"],\n'
        '                sources["train"].TensorAdapterConfig(),\n'
        '            ) | "AnalyzeAndTransformTrain" >> tft_beam.AnalyzeAndTransformDataset(\n'
        "                make_preprocessing_fn(config)\n"
        "            )",
        new="transform_fn = (\n"
        '                ((raw["train"], raw["eval"], raw["test"]) | "AllSplits" >> beam.Flatten(),\n'
        '                 sources["train"].TensorAdapterConfig())\n'
        '                | "AnalyzeAll" >> tft_beam.AnalyzeDataset(make_preprocessing_fn(config)))\n'
        "            train_transformed, transformed_metadata = (\n"
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
    Mutation(
        name="evaluation_batches_run_the_xla_signature",
        file="library/export.py",
        old="    if BATCH_TF_EXAMPLE_SIGNATURE in signature_names:",
        new="    if False:",
        breaks="the evaluator and validate feed offline batches through XLA: ~5 s of compiles per model load",
        tests=("tests/system/test_export.py::"
               "test_the_evaluators_batches_compile_nothing_and_match_the_served_signature",),
    ),
    # ------------------------------------------------------------------------------------------ tuner
    Mutation(
        name="tuner_scores_on_train",
        file="components/tuner/executor.py",
        old=(
            "scored = bucketed_batches(\n"
            '                examples_dir, "eval", EVAL_BATCH_SIZE, shuffle=False, examples=evaluation\n'
            "            )"
        ),
        new=(
            'scored = bucketed_batches(examples_dir, "train", EVAL_BATCH_SIZE, shuffle=False, examples=train)'
        ),
        breaks="trials are scored on the rows they trained on: the search picks the model that overfits most",
        tests=(
            "tests/system/test_tuner_trainer.py::test_random_search_scores_on_eval_and_writes_its_outputs",
        ),
        fast=True,
    ),
    # ------------------------------------------------------------------------------------------ trainer
    Mutation(
        name="embedding_trainable_while_frozen",
        file="components/trainer/starting_point.py",
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
        tests=(
            "tests/system/test_retune_warm_start.py::"
            "test_a_warm_started_run_ends_after_its_own_patience_where_a_fresh_run_goes_on",
        ),
        fast=True,
    ),
    Mutation(
        name="early_stopping_ignores_min_delta",
        file="components/trainer/fitting.py",
        old="patience=patience, min_delta=min_delta, restore_best_weights=True",
        new="patience=patience, restore_best_weights=True",
        breaks="an epoch that lowers the eval loss by less than trainer.early_stopping_min_delta counts, "
        "so a model that already fits trains on (at 120k rows, one more epoch of about 37 s)",
        tests=("tests/unit/test_fitting.py",),
        fast=True,
    ),
    Mutation(
        name="kept_epoch_is_the_lowest_loss",
        file="components/trainer/fitting.py",
        old="    return history.history, early_stopping.best_epoch - initial_epoch + 1",
        new="    return history.history, 1 + history.history['val_loss'].index(\n"
        "        min(history.history['val_loss']))",
        breaks="history.json names as the model's epoch (and its val_loss) one whose weights early stopping "
        "did not keep",
        tests=("tests/unit/test_fitting.py",),
        fast=True,
    ),
    # ------------------------------------------------------------------------------- evaluator, pusher
    Mutation(
        name="min_accuracy_not_enforced",
        # The bar is checked twice (TFMA's validation, library/paired_gate.py): breaking one alone changes no
        # outcome, so the mutation takes the bar out of the evaluator's configuration.
        file="components/evaluator/executor.py",
        old="    output_dir = Path(output_dir)\n    candidate_dir = ",
        new="    output_dir = Path(output_dir)\n"
        "    config = __import__('dataclasses').replace(config, min_accuracy=0.0)\n    candidate_dir = ",
        breaks="a model below evaluator.min_accuracy is blessed (and pushed)",
        tests=("tests/system/test_evaluator_pusher.py::test_below_min_accuracy_is_not_blessed",),
    ),
    Mutation(
        name="newest_span_baseline_scored_with_the_candidate",
        file="components/evaluator/executor.py",
        old="baseline = served_accuracy_and_loss(files, baseline_model) if baseline_model else None",
        new="baseline = served_accuracy_and_loss(files, candidate_model) if baseline_model else None",
        breaks="the newest span's baseline accuracy is the candidate's: report.md shows no change on it",
        tests=("tests/system/test_spans.py::"
               "test_retrain_ingests_only_a_new_span_skips_an_unchanged_stream_and_writes_metrics",),
    ),
    Mutation(
        name="push_duplicates_the_same_model",
        file="components/pusher/executor.py",
        old="adopted = served_version_of(serving_dir, model_fingerprint)",
        new="adopted = None",
        breaks="pushing the model the newest version already holds publishes it again as a new version",
        tests=(
            "tests/system/test_evaluator_pusher.py::"
            "test_a_model_is_published_once_however_often_it_is_pushed",
        ),
        fast=True,
    ),
    # ------------------------------------------------------------------------------------------ runner
    Mutation(
        name="run_writes_keras_and_matplotlib_files_in_home",
        file="pipeline/root.py",
        old='HOME_FOLDER_VARIABLES = ("KERAS_HOME", "MPLCONFIGDIR")',
        new="HOME_FOLDER_VARIABLES = ()",
        breaks="a run writes ~/.keras/keras.json and ~/.cache/matplotlib, outside its pipeline root",
        tests=("tests/system/test_e2e.py::test_a_run_writes_no_temporary_file_outside_its_root",),
    ),
    Mutation(
        name="predict_writes_keras_and_matplotlib_files_in_home",
        file="apps/cli/main.py",
        old="            with library_output(args, console), library_home():",
        new="            with library_output(args, console):",
        breaks="`predict` writes ~/.keras/keras.json and ~/.cache/matplotlib (the model load imports them)",
        tests=("tests/system/test_e2e.py::test_retrain_is_locked_skips_unchanged_data_and_predict_works",),
    ),
    Mutation(
        name="cache_key_ignores_step_config",
        file="pipeline/step_execution.py",
        old='"config": json.loads(json.dumps(dataclasses.asdict(step_cfg), default=str)),',
        new='"config": None,',
        breaks="changing a step's configuration section reuses its cached output instead of re-running it",
        tests=(
            "tests/unit/test_runner.py::"
            "test_second_run_reuses_every_step_and_config_change_reruns_only_downstream",
        ),
        fast=True,
    ),
    Mutation(
        name="corrupted_span_not_checked",
        file="components/validate/span_checks.py",
        old='bad_rows=span_counts.get(span, {}).get("quarantined_rows"))',
        new="bad_rows=None)",
        breaks="a stream's span full of bad rows is trained on instead of quarantined",
        tests=(
            "tests/unit/test_span_states.py::"
            "test_a_corrupted_span_of_a_stream_is_refused_by_validate_not_failed_by_ingest",
        ),
        fast=True,
    ),
    # ------------------------------------------------------------------------------------------ serving
    Mutation(
        name="batch_answers_not_split_back",
        file="apps/serving/batching.py",
        old="array[start : start + task.rows]",
        new="array[:task.rows]",
        breaks="requests merged into one model call each get the batch's first rows instead of their own",
        tests=(
            "tests/system/test_serve_batching.py::"
            "test_concurrent_requests_are_merged_into_one_model_call_and_split_back",
        ),
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
        name="serve_intra_op_threads_left_to_tensorflow",
        file="apps/cli/serve.py",
        old="return max(1, cores // batch_threads)",
        new="return 0",
        breaks="every batch thread's model call asks for all the cores (TensorFlow's choice): 2 calls at "
               "once oversubscribe 2 cores",
        tests=("tests/unit/test_cli_seams.py::"
               "test_serve_gives_each_batch_thread_its_share_of_the_cores_by_default",),
        fast=True,
    ),
    Mutation(
        name="trainer_ignores_export_xla",
        file="components/trainer/executor.py",
        old="xla=config.export_xla)",
        new="xla=False)",
        breaks="the pipeline's default XLA export (trainer.export_xla) never reaches the exported model",
        tests=("tests/system/test_install.py::test_the_installed_wheel_runs_from_another_directory",),
    ),
    Mutation(
        name="xla_chunks_run_in_arrival_order",
        file="library/xla_buckets.py",
        old="order = tf.argsort(lengths, stable=True)",
        new="order = tf.range(tf.shape(lengths)[0])",
        breaks="a batch of more than 64 texts runs its chunks unsorted: every chunk holding one long text is "
               "padded to the long bucket (256 real texts: about half the rows per second)",
        tests=(XLA_CHUNKS_TEST,),
    ),
    Mutation(
        name="xla_chunk_answers_left_in_length_order",
        file="library/xla_buckets.py",
        old="num_classes]), tf.argsort(order))",
        new="num_classes]), tf.range(tf.shape(order)[0]))",
        breaks="a batch of more than 64 texts gets its answers in length order, not in the order it was sent",
        tests=(XLA_CHUNKS_TEST,),
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
        breaks="serve --port 99999 is not refused in one line (JSON with --log-format json): uvloop's bind() "
        "wraps it to port 34463 and serves there",
        tests=("tests/unit/test_cli_seams.py::test_serve_errors_honour_log_format_json",),
        fast=True,
    ),
    Mutation(
        name="each_worker_takes_every_core",
        file="apps/cli/serve.py",
        old="    return max(1, cores // workers)",
        new="    return cores",
        breaks="serve --workers N starts N x cores concurrent model calls by default: under overload "
        "accepted requests wait far longer",
        tests=("tests/unit/test_cli_seams.py::test_serve_workers_share_the_cores_out_by_default",),
        fast=True,
    ),
    Mutation(
        name="second_serve_with_workers_shares_the_port",
        file="apps/serving/workers.py",
        old="    if port:\n",
        new="    if False:\n",
        breaks="a second `serve --workers N` on a port one already holds starts without a word and the two "
        "split the connections",
        tests=("tests/unit/test_serve_port.py",),
        fast=True,
    ),
    Mutation(
        name="second_supervisor_shares_a_port_while_workers_load",
        file="apps/serving/workers.py",
        old="return PortReservation(reserved, _claim(reserved.getsockname()[1]))",
        new="return PortReservation(reserved, socket.socket(socket.AF_UNIX))",
        breaks="a second `serve --workers N` started while the first one's workers load their model takes "
        "the same port, and the two split the connections",
        tests=("tests/unit/test_serve_port.py",),
        fast=True,
    ),
    Mutation(
        name="worker_page_shows_only_its_own_series",
        file="apps/serving/metrics.py",
        old="        if self.shared is not None:\n",
        new="        if False:\n",
        breaks="with serve --workers N a scrape shows only the worker that answered it, so every scrape "
        "counts other requests",
        tests=(WORKERS_TEST + "test_two_workers_answer_on_one_port_and_one_page_counts_both",),
    ),
    Mutation(
        name="merged_worker_page_unlabelled",
        file="apps/serving/worker_pages.py",
        old='sample._replace(labels={**sample.labels, "worker": str(index)})',
        new="sample",
        breaks="the workers' series on the merged metrics page are not told apart (duplicate series)",
        tests=("tests/unit/test_worker_pages.py",),
        fast=True,
    ),
    Mutation(
        name="killed_worker_not_started_again",
        file="apps/serving/workers.py",
        old="if due is not None and not self.stopping and time.monotonic() >= due:",
        new="if False:",
        breaks="a worker killed (say by the OOM killer) is gone for good: the server runs on fewer workers",
        tests=(WORKERS_RESTART_TEST,),
    ),
    Mutation(
        name="crashing_worker_restarted_at_once",
        file="apps/serving/workers.py",
        old="self.restart_at[index] = None, time.monotonic() + self.delays[index]",
        new="self.restart_at[index] = None, time.monotonic()",
        breaks="a worker that crashes soon after each start is started again at once, every time: the "
        "supervisor loads the model in a loop, taking the cores from the worker that answers",
        tests=(WORKERS_RESTART_TEST,),
    ),
    Mutation(
        name="restart_delay_never_grows",
        file="apps/serving/workers.py",
        old="return min(MAX_RESTART_SECONDS, max(FIRST_RESTART_SECONDS, 2 * previous))",
        new="return FIRST_RESTART_SECONDS",
        breaks="a worker crashing soon after each start is started again every second, forever",
        tests=("tests/unit/test_worker_restarts.py::test_quick_exits_double_the_delay_up_to_the_cap",),
        fast=True,
    ),
    Mutation(
        name="restart_delay_never_resets",
        file="apps/serving/workers.py",
        old="    if uptime >= STABLE_SECONDS:\n        return 0.0\n",
        new="",
        breaks="a worker that served for days and then crashed waits the long delay of its early crashes",
        tests=("tests/unit/test_worker_restarts.py::"
               "test_a_worker_that_ran_long_enough_is_started_at_once_and_its_delays_begin_again",),
        fast=True,
    ),
    Mutation(
        name="sigterm_while_workers_load_exits_1",
        file="apps/serving/workers.py",
        old="stopped = (0, -signal.SIGTERM)",
        new="stopped = (0,)",
        breaks="stopping `serve --workers N` while its workers still load their model exits 1, as if it "
        "failed, so a service manager reports a failure for a requested stop",
        tests=(WORKERS_TEST + "test_sigterm_while_the_workers_load_their_model_stops_them_and_exits_0",),
    ),
    Mutation(
        name="sigterm_not_passed_to_the_workers",
        file="apps/serving/workers.py",
        old="                worker.send_signal(signal.SIGTERM)",
        new="                pass",
        breaks="SIGTERM to `serve --workers N` never stops it: the workers keep serving",
        tests=(WORKERS_TEST + "test_sigterm_stops_every_worker_and_the_supervisor_exits_0",),
    ),
    Mutation(
        name="workers_outlive_their_supervisor",
        file="apps/serving/http.py",
        old="while os.getppid() == supervisor:",
        new="while True:",
        breaks="after the supervisor is killed its workers keep the port and serve on, with nothing to stop "
        "them",
        tests=(WORKERS_TEST + "test_workers_stop_when_their_supervisor_is_killed",),
    ),
    Mutation(
        name="worker_that_never_listened_started_again",
        file="apps/serving/workers.py",
        old="                if not self.pages.published(index):",
        new="                if False:",
        breaks="a worker that cannot start is restarted forever instead of stopping serve with its error",
        tests=(WORKERS_TEST + "test_a_worker_that_cannot_start_stops_the_supervisor_with_exit_1",),
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
    # ------------------------------------------------------------------------------- rollback, backfill
    Mutation(
        name="rollback_republishes_under_the_same_version",
        file="pipeline/rollback.py",
        old="new_version, path = publish_version(source, serving_dir, fingerprint(source))",
        new="new_version, path = version, serving_version_dir(serving_dir, version)",
        breaks="`rollback 1` records version 1 as pushed again but publishes no new highest version: TF "
        "Serving "
        "keeps serving the newer model",
        tests=(
            "tests/unit/test_backfill.py::"
            "test_rollback_publishes_the_old_model_as_a_new_version_and_makes_it_the_next_baseline",
        ),
        fast=True,
    ),
    Mutation(
        name="rollback_leaves_the_baseline_on_the_newer_model",
        file="pipeline/rollback.py",
        old="inputs = {MODEL: model.id, **",
        new="inputs = {MODEL: served.id if served is not None else model.id, **",
        breaks="after a rollback the next retrain compares with (and warm-starts from) the model rolled back "
        "from, not the one served",
        tests=(
            "tests/unit/test_backfill.py::"
            "test_rollback_publishes_the_old_model_as_a_new_version_and_makes_it_the_next_baseline",
        ),
        fast=True,
    ),
    Mutation(
        name="backfill_runs_and_pushes_anyway",
        file="apps/cli/run.py",
        old="refusal = _backfill_refusal(runner, config, only or until)",
        new="refusal = None",
        breaks="a retrain pinned to a span older than the served model's newest trains, warm-starts from the "
        "newer model and may push older data over it",
        tests=(
            "tests/unit/test_backfill.py::test_a_pinned_retrain_older_than_the_served_model_runs_nothing",
        ),
        fast=True,
    ),
    Mutation(
        name="beam_views_made_per_transform",
        file="library/beam_cached_views.py",
        old="view = views.get(cls)",
        new="view = None",
        breaks="every transform Beam applies parses the flags again with new argparse parsers: a retrain of "
        "the sample takes about 10% longer",
        tests=("tests/unit/test_beam_cached_views.py",),
        fast=True,
    ),
    Mutation(
        name="dofn_specs_read_at_every_question",
        file="library/beam_cached_dofn_specs.py",
        old="specs = _BY_CLASS.get(type(dofn))",
        new="specs = None",
        breaks="Beam reads every method's signature of a DoFn again each time it asks for its state and "
        "timer specs: a retrain of the sample takes about 20% longer",
        tests=("tests/unit/test_beam_cached_dofn_specs.py",),
        fast=True,
    ),
    Mutation(
        name="dofn_specs_kept_for_a_dofn_holding_a_bound_method",
        file="library/beam_cached_dofn_specs.py",
        old="any(isinstance(v, types.MethodType) for v in attributes.values())",
        new="False",
        breaks="a DoFn whose own process is a bound method (Beam's Map of a method) gets its class's answer: "
        "a stateful one is run as stateless",
        tests=("tests/unit/test_beam_cached_dofn_specs.py",),
        fast=True,
    ),
    # ------------------------------------------------------------------------------- retention, gc
    Mutation(
        name="gc_keeps_the_pages_of_collected_runs",
        file="pipeline/gc.py",
        old="if os.path.lexists(page):",
        new="if False:",
        breaks="every run leaves its report.html (about 100 KB of embedded figures) behind for ever: the "
        "root never levels off",
        tests=("tests/unit/test_gc_retention.py::test_a_run_that_is_not_kept_keeps_its_record_but_not_its_page",),
        fast=True,
    ),
    Mutation(
        name="gc_deletes_the_lineage_of_kept_versions",
        file="pipeline/gc.py",
        old="needed = _with_lineage(store, published | newest_roots, cut) | referenced | older_referenced",
        new="needed = published | newest_roots | referenced | older_referenced",
        breaks="gc with a retention policy deletes the model, data and blessing behind a kept served "
        "version: "
        "it can no longer be rolled back to",
        tests=(
            "tests/unit/test_gc_retention.py::"
            "test_policy_keeps_the_last_served_versions_lineage_and_cuts_the_warm_start_chain",
        ),
        fast=True,
    ),
    Mutation(
        name="retention_keeps_everything",
        file="pipeline/gc.py",
        old="kept = set(serving_versions(serving_dir)[-served_versions:]) if served_versions and serving_dir "
        "else None",
        new="kept = None",
        breaks="with retention.served_versions K every pushed model stays (each keeps the one it "
        "warm-started from): the pipeline root grows without bound",
        tests=(
            "tests/unit/test_gc_retention.py::"
            "test_policy_keeps_the_last_served_versions_lineage_and_cuts_the_warm_start_chain",
        ),
        fast=True,
    ),
    Mutation(
        name="retention_keeps_the_refused_models_of_every_kept_run",
        file="pipeline/gc.py",
        old="return needed | (older - candidates if kept is not None else older)",
        new="return needed | older",
        breaks="while the gate refuses week after week, each of the retention.runs newest runs keeps its "
        "trained model: the root swings up by that many models and does not level off",
        tests=(
            "tests/unit/test_gc_retention.py::test_policy_keeps_a_model_nothing_published_only_in_the_newest_run",
        ),
        fast=True,
    ),
    Mutation(
        name="gc_without_a_policy_deletes_refused_models",
        file="pipeline/gc.py",
        old="return needed | (older - candidates if kept is not None else older)",
        new="return needed | (older - candidates)",
        breaks="`gc --keep N` without a retention policy deletes the trained models of the kept runs",
        tests=("tests/unit/test_gc_retention.py::test_without_a_policy_the_kept_runs_keep_their_refused_models",),
        fast=True,
    ),
    Mutation(
        name="gc_counts_failed_runs_among_the_kept",
        file="pipeline/gc.py",
        old='succeeded += run["status"] == "succeeded"',
        new="succeeded += 1",
        breaks="each failed run takes the place of a trained one among the kept runs: after an incident the "
        "root drops a model, then grows back, and never levels off",
        tests=(
            "tests/unit/test_gc_retention.py::test_failed_runs_do_not_push_a_trained_run_out_of_the_kept_ones",
        ),
        fast=True,
    ),
    # ------------------------------------------------------------------------------- evaluator's gate
    Mutation(
        name="gate_ignores_the_anchor_versions",
        file="library/paired_gate.py",
        old="same_rows = {name: r for name, r in anchors.items() if r.rows == candidate.rows}",
        new="same_rows = {}",
        breaks="the gate compares with the served model only: candidates each 0.4 points worse are all "
        "blessed, accuracy ratchets down push after push",
        tests=(
            "tests/unit/test_paired_gate.py::"
            "test_ten_candidates_each_slightly_worse_are_refused_after_the_first_by_the_anchor",
        ),
        fast=True,
    ),
    # ------------------------------------------------------------------------------- serving admission
    Mutation(
        name="admission_ignores_max_queue_delay",
        file="apps/serving/batching.py",
        old="if bound and (delay := self.estimated_delay()) > bound:",
        new="if False:",
        breaks="under overload every request is queued (no 503): waits grow with the backlog, far past "
        "--max-queue-delay-ms",
        tests=(
            "tests/system/test_serve_overload.py::"
            "test_under_2x_overload_refusals_are_fast_and_accepted_waits_stay_bounded",
        ),
    ),
    Mutation(
        name="admission_prices_each_row_as_a_batch",
        file="apps/serving/admission.py",
        old="seconds = full * cost.seconds(batch_rows) + (cost.seconds(rest) if rest else 0.0)",
        new="seconds = queued_rows * cost.seconds(1)",
        breaks="a short queue that one batch takes is priced as one batch per row: during a hot reload "
        "(a warm-up sharing the cores) requests were refused at a fraction of the load the server drains",
        tests=("tests/unit/test_admission.py",),
        fast=True,
    ),
    Mutation(
        name="admission_refuses_a_queue_the_next_round_takes",
        file="apps/serving/admission.py",
        old="if cost.sums is None or (queued_rows if merge else queued_requests) <= next_round:",
        new="if cost.sums is None or (queued_rows if merge else queued_requests) <= 0:",
        breaks="a short queue that the next round of batches takes whole is priced as a wait: when batches "
        "are slow (a warm-up sharing the cores) requests are refused during a hot reload at light load",
        tests=("tests/unit/test_admission.py",),
        fast=True,
    ),
    Mutation(
        name="admission_leaves_out_the_running_and_own_batches",
        file="apps/serving/admission.py",
        old="return (seconds + running_left) / threads + own",
        new="return seconds / threads",
        breaks="admission prices only the queue ahead of a request: under a 2x overload accepted requests "
        "answered in 144 ms (p99) with --max-queue-delay-ms 100",
        tests=("tests/unit/test_admission.py",),
        fast=True,
    ),
    Mutation(
        name="serve_on_the_asyncio_loop",
        file="apps/serving/http.py",
        old="        uvloop.run(main)",
        new="        asyncio.run(main)",
        breaks="the server runs on asyncio's event loop although uvloop is installed: 16 connections x 1 "
        "text answered 0.88x the texts/s",
        tests=("tests/unit/test_serve_event_loop.py",),
        fast=True,
    ),
    Mutation(
        name="batch_waits_out_the_timeout_with_every_client_in",
        file="apps/serving/batching.py",
        old="                    or all_in\n",
        new="",
        breaks="a batch waits for the timeout although every client seen lately is already waiting: 16 "
        "clients of one text each are cut into batches of about 7 rows by the timeout",
        tests=("tests/unit/test_batching_all_in.py",),
        fast=True,
    ),
    Mutation(
        name="running_batches_left_out_of_the_waiting_clients",
        file="apps/serving/batching.py",
        old="        return self.queued_requests() + running >= clients",
        new="        return self.queued_requests() >= clients",
        breaks="requests in running batches do not count as waiting, so the next batch waits for clients "
        "that are already being answered",
        tests=("tests/unit/test_batching_all_in.py",),
        fast=True,
    ),
    Mutation(
        name="predict_compiles_xla_from_its_first_row",
        file="apps/predict.py",
        old="        if self.batch is None or self.rows > XLA_AFTER_ROWS:",
        new="        if True:",
        breaks="`predict` in a fresh process compiles every batch shape it meets: 4.5 s against 0.95 s on "
        "the 3,800 test rows",
        tests=("tests/system/test_export.py::"
               "test_predict_compiles_nothing_for_its_first_rows_then_switches_to_xla_with_the_same_answers",),
    ),
    Mutation(
        name="predict_dies_on_sigterm_without_cleaning_up",
        file="apps/cli/main.py",
        old='    if args.command in ("run", "retrain", "predict"):',
        new='    if args.command in ("run", "retrain"):',
        breaks="a `predict` stopped with SIGTERM leaves its partial output beside the output file and its "
        "temporary home folder in TMPDIR",
        tests=("tests/system/test_export.py::"
               "test_predict_stopped_by_sigterm_exits_143_and_leaves_no_file_behind",),
    ),
    Mutation(
        name="serve_never_answers_expect_100_continue",
        file="apps/serving/http.py",
        old='            if request.version == HttpVersion11 and expect.lower() == "100-continue":',
        new="            if False:",
        breaks="a client that sends its body only after 100 Continue (curl with a large body) waits a "
        "second for nothing on every request",
        tests=("tests/system/test_serve.py::"
               "test_a_client_that_expects_100_continue_is_told_to_send_its_body",),
    ),
    Mutation(
        name="serve_routes_a_get_to_predict",
        file="apps/serving/routes.py",
        old='    if method != "POST":\n        return NO_ROUTE\n',
        new="",
        breaks="GET /v1/models/agnews:predict runs the predict handler (TF Serving answers it 404)",
        tests=("tests/unit/test_serve_routes.py",),
        fast=True,
    ),
    Mutation(
        name="server_does_not_tell_the_batcher_its_requests",
        file="apps/serving/http.py",
        old="    batcher.requests_held = lambda: server.requests_in_flight\n",
        new="",
        breaks="the batcher never learns how many clients there are: every batch under load waits out the "
        "timeout (a closed loop of 8 clients at the median: 96 ms against 8-10)",
        tests=("tests/system/test_serve_adaptive.py",),
    ),
    # ------------------------------------------------------------------------------- stops, spans, metrics
    Mutation(
        name="swallowed_stop_still_publishes_the_step",
        file="pipeline/step_execution.py",
        old="        interrupts.stop_if_received()\n        # the publish: one rename",
        new="        # the publish: one rename",
        breaks="a SIGTERM that a component swallowed lets that step publish its outputs before the run ends",
        tests=(
            "tests/system/test_stops.py::"
            "test_a_swallowed_sigterm_still_ends_the_run_with_143_and_publishes_nothing",
        ),
        fast=True,
    ),
    Mutation(
        name="stop_lost_after_a_step_is_ignored",
        file="pipeline/runner.py",
        old="if interrupts.received():",
        new="if False:",
        breaks="a SIGTERM whose exception was lost after a step's publish does not end the run: it goes on "
        "to the next step and exits 0",
        tests=(
            "tests/system/test_stops.py::"
            "test_a_sigterm_lost_after_a_publish_ends_the_run_before_the_next_step",
        ),
        fast=True,
    ),
    Mutation(
        name="quarantined_span_enters_the_next_window",
        file="pipeline/span_states.py",
        old="if state in HELD_OUT)",
        new='if state == "rejected")',
        breaks="a span validate refused (quarantined) is ingested and trained on by the next run without "
        "`spans accept`",
        tests=(
            "tests/unit/test_span_states.py::"
            "test_a_quarantined_span_is_left_out_of_the_next_ingest_until_its_file_changes",
        ),
        fast=True,
    ),
    Mutation(
        name="refused_run_writes_no_drift_gauges",
        file="apps/job_metrics.py",
        old='if output in step.get("facts", {}):',
        new="if False:",
        breaks="a retrain refused for drift (exit 8) writes no agnews_retrain_drift gauges: the drift alert "
        "never fires on the run that found it",
        tests=("tests/unit/test_outcomes.py::test_a_refused_runs_metrics_hold_the_drift_its_check_measured",),
        fast=True,
    ),
    Mutation(
        name="deadline_outcome_labelled_failed",
        file="apps/job_metrics.py",
        old='124: "timed_out"',
        new='124: "failed"',
        breaks="a run that ran out of time (exit 124) is reported as outcome failed, not timed_out",
        tests=(
            "tests/unit/test_outcomes.py::"
            "test_every_exit_code_has_an_outcome_label_and_the_deadline_is_timed_out",
        ),
        fast=True,
    ),
    Mutation(
        name="deadline_run_recorded_as_interrupted",
        file="pipeline/runner.py",
        old='status = "timed_out" if interrupts.deadline_exceeded() else "interrupted"',
        new='status = "interrupted"',
        breaks="a run stopped by pipeline.deadline is stored as interrupted (a stop by hand), not timed_out",
        tests=(
            "tests/system/test_stops.py::"
            "test_a_swallowed_deadline_still_ends_the_run_with_124_and_publishes_nothing",
        ),
    ),
    Mutation(
        name="read_only_command_creates_a_missing_root",
        file="apps/cli/main.py",
        old="        existing_root(config.pipeline_root())\n",
        new="",
        breaks="rollback (or gc, spans accept) on a mistyped --pipeline-root creates it (.lock, "
        "metadata.sqlite)",
        tests=(
            "tests/unit/test_cli_seams.py::"
            "test_a_command_on_a_root_that_does_not_exist_refuses_and_creates_nothing",
        ),
        fast=True,
    ),
    Mutation(
        name="history_hides_quarantines",
        file="pipeline/history.py",
        old="    quarantines = quarantine_rows(store)\n",
        new="    quarantines = []\n",
        breaks="history.html no longer lists the spans validate refused, with their state and reason",
        tests=(
            "tests/unit/test_outcomes.py::test_history_shows_the_quarantines_with_their_state_and_reason",
        ),
        fast=True,
    ),
    Mutation(
        name="drift_reference_not_the_served_window",
        file="components/validate/span_checks.py",
        old="    served = reference.served(inputs)\n",
        new="    served = None\n",
        breaks="new spans are compared with the rest of the window, not with what the served model learned",
        tests=(SERVED_DRIFT_TEST,),
    ),
    Mutation(
        name="span_profile_cache_not_read",
        file="library/span_profiles.py",
        old="    cached = cached_profile(examples_uri, span, sha256) if sha256 else None\n",
        new="    cached = None\n",
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
        old="_vocabulary(Path(model.uri)), predicted or None)",
        new="None, predicted or None)",
        breaks="vocab_oov_share is never measured against the served model's vocabulary",
        tests=(SERVED_DRIFT_TEST,),
    ),
    Mutation(
        name="served_prediction_mix_not_recorded",
        file="components/trainer/executor.py",
        old='    predicted = predicted_class_counts(model, examples_dir, "eval", EVAL_BATCH_SIZE) if spans '
        "else None\n",
        new="    predicted = None\n",
        breaks="the shift of the served model's predicted-class mix on a new span is never measured",
        tests=(SERVED_DRIFT_TEST,),
    ),
    Mutation(
        name="served_examples_not_the_served_models_own",
        file="pipeline/dag.py",
        old='        return store.artifacts_of(producer["id"], "input").get(self.via) if producer is not '
        "None else None",
        new="        return artifact",
        breaks="validate's reference profiles are looked up in the wrong artifact, not the served model's "
        "examples",
        tests=(
            "tests/unit/test_dag.py::"
            "test_validate_resolves_the_served_model_and_its_examples_but_not_one_trained_"
            "on_its_own_examples",
        ),
        fast=True,
    ),
    Mutation(
        name="anchor_keeps_the_version_rolled_away_from",
        file="pipeline/dag.py",
        old="if version in rolled_away or not has_saved_model(",
        new="if not has_saved_model(",
        breaks="after a rollback the gate's anchor still holds the version rolled away from, so every later "
        "candidate is held to the model the operator took out of service (bench_year: 17 weeks refused)",
        tests=("tests/unit/test_backfill.py::"
               "test_rollback_publishes_the_old_model_as_a_new_version_and_makes_it_the_next_baseline",),
        fast=True,
    ),
    Mutation(
        name="episode_searches_every_week_while_unserved",
        file="components/tuner/spec.py",
        old="if not recorded or not (is_served or exhausted):",
        new="if not recorded or not is_served:",
        breaks="a drift episode whose searched models are never blessed searches again every week "
        "(bench_year: a lasting shift with no push would run ~25 searches), not at most 2",
        tests=("tests/unit/test_retune_episode.py::"
               "test_an_episode_whose_models_are_never_served_searches_at_most_twice",),
        fast=True,
    ),
    Mutation(
        name="adopted_version_reported_as_pushed",
        file="apps/job_metrics.py",
        old='fresh = states.get("pusher") == "ran" and not pushed.get("adopted")',
        new='fresh = states.get("pusher") == "ran"',
        breaks="a run whose pusher adopted the version already served (serving/ unchanged) is labelled "
        "pushed in the metrics, as if a new model went out",
        tests=("tests/unit/test_outcomes.py::"
               "test_a_pusher_that_adopted_the_served_version_is_already_pushed_not_pushed",),
        fast=True,
    ),
    Mutation(
        name="run_summary_says_pushed_after_adopting",
        file="pipeline/runner.py",
        old='fresh = result.state == "ran" and not delivered.properties.get("adopted")',
        new='fresh = result.state == "ran"',
        breaks="the run's summary says (pushed) when the pusher adopted the version already served",
        tests=("tests/system/test_faults.py::"
               "test_kill_9_inside_the_pusher_loses_nothing_and_never_pushes_twice",),
    ),
    # ------------------------------------------------------------------------------------ the harness
    Mutation(
        name="stopped_harness_leaves_its_pytest_running",
        file="tools/mutants.py",
        old="                os.killpg(group, signal.SIGKILL)",
        new="                pass",
        breaks="a `make mutants` stopped with Ctrl-C or SIGTERM leaves its pytest run (and the servers and "
        "workers that run started) going",
        tests=("tests/unit/test_mutants_stop.py",),
        fast=True,
    ),
]
