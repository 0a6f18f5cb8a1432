"""The tuner and trainer components, on tiny data and tiny models.

The tuner tests use transform-shaped TFRecords written by support.datasets.write_transformed_examples; the
trainer test runs on the real transform of the committed sample (`transformed_sample`), because its serving
export needs a real transform graph.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from support.datasets import shift_eval_labels, write_transformed_examples

from components.trainer import executor as trainer
from components.tuner import executor as tuner
from contract.artifacts import Artifact, ComponentError, Runtime
from contract.config import TrainerConfig, TunerConfig
from library import dataset, layouts, models

RUNTIME = Runtime(seed=7, log=lambda message: None)
TINY = ("embedding_dim=8", "units=8")


@pytest.fixture(scope="module")
def tuner_inputs(tmp_path_factory):
    """Train and eval splits only: the test split is deleted, so a tuner that opened it would fail."""
    graph, examples, _ = write_transformed_examples(tmp_path_factory.mktemp("tuner_data"),
                                                    {"train": 120, "eval": 40, "test": 40})
    shutil.rmtree(Path(examples.uri) / "test")
    return {"transformed_examples": examples, "transform_graph": graph}


def _trials(out: Path) -> list[dict[str, str]]:
    with open(out / "best_hyperparameters" / layouts.TRIALS_CSV_FILE, newline="") as handle:
        return list(csv.DictReader(handle))


def _result(out: Path) -> dict:
    return layouts.read_best_hyperparameters(out / "best_hyperparameters")


def test_random_search_scores_on_eval_and_writes_its_outputs(tuner_inputs, tmp_path):
    config = TunerConfig(architecture="rnn", algorithm="random", max_trials=2, max_epochs=3,
                         fixed_hyperparameters=(*TINY, "learning_rate=0.02", "batch_size=16"))
    outputs = tuner.run(tuner_inputs, tmp_path, config, RUNTIME)

    # The same search (same seed, same trials) on a copy whose eval labels contradict the train split:
    # training is the same and only the eval labels changed, so each trial's score must be clearly worse
    # there. A search scored on its train rows would give the same scores twice. (Learning rate and batch size
    # are fixed so that three epochs on 120 rows learn enough to tell.)
    shifted = tmp_path / "shifted_examples"
    shutil.copytree(tuner_inputs["transformed_examples"].uri, shifted)
    shift_eval_labels(shifted)
    tuner.run({**tuner_inputs, "transformed_examples": Artifact("transformed_examples", shifted)},
              tmp_path / "shifted", config, RUNTIME)
    scores = [float(t["score"]) for t in _trials(tmp_path)]
    shifted_scores = [float(t["score"]) for t in _trials(tmp_path / "shifted")]
    assert len(scores) == len(shifted_scores) == 2
    for score, shifted_score in zip(scores, shifted_scores):  # measured: 0.97 / 1.37 and 0.89 / 1.35
        assert shifted_score > score + 0.2, (scores, shifted_scores)

    artifact = outputs["best_hyperparameters"]
    assert artifact.uri == tmp_path / "best_hyperparameters"
    result = _result(tmp_path)
    assert result["architecture"] == "rnn" and result["tuned"] is True and result["objective"] == "val_loss"
    assert sorted(result["values"]) == models.hyperparameter_names("rnn")
    assert result["values"]["embedding_dim"] == 8 and result["values"]["units"] == 8  # fixed, not searched

    trials = _trials(tmp_path)
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    scores = [float(t["score"]) for t in trials]
    assert result["best_score"] == pytest.approx(min(scores))
    best_row = trials[scores.index(min(scores))]
    assert int(best_row["batch_size"]) == result["values"]["batch_size"]
    assert float(best_row["learning_rate"]) == pytest.approx(result["values"]["learning_rate"])
    assert artifact.properties["best_score"] == result["best_score"]
    assert artifact.properties["tuned"] is True and artifact.properties["completed_trials"] == 2

    table = (tmp_path / "best_hyperparameters" / layouts.TRIALS_MARKDOWN_FILE).read_text()
    assert table.count("| COMPLETED |") == 2 and "(best)" in table

    # TensorBoard's HParams view: per trial, event files holding the trial's hyperparameters and its curves.
    from tensorboard.plugins.hparams import plugin_data_pb2

    for trial in trials:
        trial_dir = layouts.tensorboard_dir(tmp_path) / trial["trial_id"] / "execution0"
        hparams, tags = {}, set()
        for event_file in trial_dir.rglob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(event_file)):
                for value in event.summary.value:
                    tags.add(value.tag)
                    if value.metadata.plugin_data.plugin_name == "hparams":
                        data = plugin_data_pb2.HParamsPluginData.FromString(
                            value.metadata.plugin_data.content
                        )
                        if data.HasField("session_start_info"):
                            hparams = {k: v.number_value if v.HasField("number_value") else v.string_value
                                       for k, v in data.session_start_info.hparams.items()}
        assert hparams["batch_size"] == int(trial["batch_size"])
        assert hparams["learning_rate"] == pytest.approx(float(trial["learning_rate"]))
        assert hparams["embedding_dim"] == 8
        assert "epoch_loss" in tags  # the trial's training curve is beside its hyperparameters


def test_random_search_varies_each_searched_value_across_trials(tuner_inputs, tmp_path):
    """Read from KerasTuner's own trial files (not from what the tuner reports): every hyperparameter the
    search is meant to explore took more than one value over the trials. Fixed here: embedding_dim and units
    (TINY); batch_size is not searched (library/models.py says why); rnn searches all the others."""
    config = TunerConfig(architecture="rnn", algorithm="random", max_trials=5, max_epochs=1,
                         fixed_hyperparameters=TINY)
    tuner.run(tuner_inputs, tmp_path, config, RUNTIME)
    trial_files = sorted((tmp_path / "tuner_state" / "rnn").glob("trial_*/trial.json"))
    tried = [json.loads(path.read_text())["hyperparameters"]["values"] for path in trial_files]
    assert len(tried) == 5, trial_files
    searched = set(models.hyperparameter_names("rnn")) - {"embedding_dim", "units", "batch_size"}
    assert searched == {"num_layers", "bidirectional", "dropout", "recurrent_dropout", "learning_rate"}
    for name in sorted(searched):
        assert len({values[name] for values in tried}) > 1, (name, tried)
    assert all((values["embedding_dim"], values["units"]) == (8, 8) for values in tried)  # fixed means fixed


def test_the_trials_of_a_search_read_the_files_once_and_score_on_a_capped_eval_subsample(
    tuner_inputs, tmp_path
):
    # Once the first trial has ended, the transformed examples move away: the later trials can only run on the
    # examples the first one cached in memory (train subsample and eval subsample alike).
    examples = Path(tuner_inputs["transformed_examples"].uri)
    moved = tmp_path / "moved"
    lines = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("tuner: trial 1 "):
            examples.rename(moved)

    config = TunerConfig(architecture="rnn", algorithm="random", max_trials=3, max_epochs=2,
                         train_subsample_rows=30, fixed_hyperparameters=TINY)
    try:
        tuner.run(tuner_inputs, tmp_path / "out", config, Runtime(seed=7, log=log))
    finally:
        if moved.exists():
            moved.rename(examples)
    assert examples.is_dir()
    assert [t["status"] for t in _trials(tmp_path / "out")] == ["COMPLETED"] * 3
    assert sum(line.startswith("tuner: trial ") for line in lines) == 3
    [plan] = [line for line in lines if line.startswith("tuner: plan:")]
    assert "on 30 of 120 train rows, scored on 30 of 40 eval rows" in plan


def test_interrupted_search_resumes_without_redoing_finished_trials(tuner_inputs, tmp_path, monkeypatch):
    config = TunerConfig(architecture="rnn", algorithm="random", max_trials=2, max_epochs=1,
                         fixed_hyperparameters=TINY)
    real_batches = dataset.bucketed_batches
    trained = []

    def interrupt_second_trial(examples_dir, split, *args, **kwargs):
        if split == "train":
            trained.append(1)
            if len(trained) == 2:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C during trial 1
        return real_batches(examples_dir, split, *args, **kwargs)

    monkeypatch.setattr(dataset, "bucketed_batches", interrupt_second_trial)  # the tuner imports it in run()
    with pytest.raises(KeyboardInterrupt):
        tuner.run(tuner_inputs, tmp_path, config, RUNTIME)
    first_trial = tmp_path / "tuner_state" / "rnn" / "trial_0" / "trial.json"
    finished = first_trial.read_text()
    assert json.loads(finished)["status"] == "COMPLETED"

    trained.clear()
    monkeypatch.setattr(
        dataset,
        "bucketed_batches",
        lambda folder, split, *args, **kwargs: (
            (trained.append(1) if split == "train" else None) or real_batches(folder, split, *args, **kwargs)
        ),
    )
    tuner.run(tuner_inputs, tmp_path, config, RUNTIME)
    assert len(trained) == 1, "only the interrupted trial should be trained again"
    assert first_trial.read_text() == finished
    assert [t["status"] for t in _trials(tmp_path)] == ["COMPLETED", "COMPLETED"]
    result = _result(tmp_path)

    trained.clear()
    tuner.run(tuner_inputs, tmp_path, config, RUNTIME)  # a finished search: nothing left to train
    assert trained == []
    assert _result(tmp_path) == result


def test_hyperband_respects_max_trials_and_can_maximise_val_accuracy(tuner_inputs, tmp_path):
    config = TunerConfig(architecture="lstm", algorithm="hyperband", max_trials=2, max_epochs=2,
                         objective="val_accuracy", fixed_hyperparameters=TINY + ("num_layers=1",))
    outputs = tuner.run(tuner_inputs, tmp_path, config, RUNTIME)
    trials = _trials(tmp_path)
    assert len(trials) == 2
    result = _result(tmp_path)
    assert result["objective"] == "val_accuracy"
    assert result["best_score"] == pytest.approx(max(float(t["score"]) for t in trials))
    # The label shows in 60% of a text's tokens: a search that trained anything beats chance (0.25) by far.
    assert result["best_score"] >= 0.5, trials
    assert outputs["best_hyperparameters"].properties["architecture"] == "lstm"


def test_no_tune_outputs_the_architecture_defaults(tuner_inputs, tmp_path):
    config = TunerConfig(architecture="bilstm", enabled=False)
    outputs = tuner.run(tuner_inputs, tmp_path, config, RUNTIME)
    result = _result(tmp_path)
    assert result == {"architecture": "bilstm", "values": models.default_hyperparameters("bilstm"),
                      "tuned": False, "objective": "val_loss", "best_score": None,
                      "search_fingerprint": tuner.search_fingerprint(config), "reused": False}
    assert outputs["best_hyperparameters"].properties["tuned"] is False
    assert not (tmp_path / "tuner_state").exists()
    assert _trials(tmp_path) == []

    fixed = TunerConfig(architecture="rnn", enabled=False, fixed_hyperparameters=("batch_size=16",))
    tuner.run(tuner_inputs, tmp_path / "fixed", fixed, RUNTIME)
    assert _result(tmp_path / "fixed")["values"] == {
        **models.default_hyperparameters("rnn"),
        "batch_size": 16,
    }


def test_tuner_errors_are_clear(tuner_inputs, tmp_path):
    bad = TunerConfig(architecture="bilstm", enabled=False, fixed_hyperparameters=("bidirectional=false",))
    with pytest.raises(ComponentError, match="bilstm has no hyperparameter 'bidirectional'"):
        tuner.run(tuner_inputs, tmp_path, bad, RUNTIME)
    no_eval = dict(tuner_inputs)
    copy = tmp_path / "examples"
    shutil.copytree(tuner_inputs["transformed_examples"].uri, copy)
    shutil.rmtree(copy / "eval")
    no_eval["transformed_examples"] = Artifact("transformed_examples", copy)
    with pytest.raises(ComponentError, match="no 'eval' split"):
        tuner.run(no_eval, tmp_path / "run", TunerConfig(architecture="rnn", max_trials=1), RUNTIME)


def test_trainer_trains_exports_and_saves_a_reloadable_model(transformed_sample, tmp_path, monkeypatch):
    from library import export  # loads tf.Transform: imported where it is needed, as the trainer does
    chosen = tuner.run(transformed_sample, tmp_path / "tuner", TunerConfig(
        architecture="lstm", enabled=False, fixed_hyperparameters=("embedding_dim=16", "units=16")), RUNTIME)

    exported = {}
    real_export = export.export_serving_model

    def keep_model(keras_model, transform_graph_dir, export_dir):
        exported["model"] = keras_model  # the trainer's in-memory model, exported for real below
        return real_export(keras_model, transform_graph_dir, export_dir)

    monkeypatch.setattr(export, "export_serving_model", keep_model)
    real_build = trainer.build_model

    def keep_initial_weights(*args, **kwargs):
        model = real_build(*args, **kwargs)
        exported["initial_weights"] = model.get_weights()
        return model

    monkeypatch.setattr(trainer, "build_model", keep_initial_weights)
    inputs = {**transformed_sample, **chosen}
    out = tmp_path / "trainer"
    outputs = trainer.run(inputs, out, TrainerConfig(epochs=1, strategy="mirrored"), RUNTIME)

    model_dir, run_dir = out / "model", out / "model_run"
    assert outputs["model"].uri == model_dir and outputs["model_run"].uri == run_dir
    history = layouts.read_history(run_dir)
    assert history["epochs_trained"] == 1 and len(history["epochs"]) == 1
    epoch = history["epochs"][0]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert np.isfinite(epoch[key])
    assert epoch["examples_per_second"] > 0
    train_files = [file for files in layouts.bucket_files(transformed_sample["transformed_examples"].uri,
                                                          "train").values() for file in files]
    train_rows = sum(1 for _ in tf.data.TFRecordDataset(train_files, compression_type="GZIP"))
    assert history["train_examples"] == history["padding"]["examples"] == train_rows
    # An epoch of a split within trainer.max_rows_per_epoch is the whole split: every batch once.
    assert history["steps_per_epoch"] is None and history["rows_per_epoch"] == train_rows
    assert epoch["batches"] == history["padding"]["batches"]
    assert 0 < history["padding_ratio"] < 1
    assert list((layouts.tensorboard_dir(run_dir) / "train").glob("events.out.tfevents.*"))
    assert list((layouts.tensorboard_dir(run_dir) / "validation").glob("events.out.tfevents.*"))

    hyperparameters = json.loads((model_dir / layouts.TRAINED_HYPERPARAMETERS_FILE).read_text())
    assert hyperparameters["architecture"] == "lstm" and hyperparameters["values"]["units"] == 16
    assert layouts.read_model_input(model_dir) == layouts.read_model_input(
        transformed_sample["transform_graph"].uri
    )
    assert (model_dir / layouts.MODEL_INPUT_FILE).read_bytes() == (
        transformed_sample["transform_graph"].uri / layouts.MODEL_INPUT_FILE).read_bytes()
    assert layouts.has_saved_model(layouts.serving_model_dir(model_dir))

    loaded = keras.saving.load_model(layouts.keras_model_file(model_dir))
    assert outputs["model"].properties["parameters"] == loaded.count_params()
    assert outputs["model"].properties["epochs_trained"] == 1
    # Training moved every weight (one epoch here is too short to beat chance on the eval split by a margin)
    # ...
    initial, trained_weights = exported["initial_weights"], loaded.get_weights()
    assert len(trained_weights) == len(initial)
    assert not any(np.array_equal(before, after) for before, after in zip(initial, trained_weights))
    # ... and val_accuracy is the saved model's own accuracy on the eval split, counted here.
    eval_batches = dataset.bucketed_batches(transformed_sample["transformed_examples"].uri, "eval", 32,
                                            shuffle=False)
    right = total = 0
    for token_ids, labels in eval_batches.dataset:
        right += int(np.sum(np.argmax(loaded.predict(token_ids, verbose=0), axis=1) == labels.numpy()))
        total += len(labels)
    assert total == history["eval_examples"]
    assert outputs["model"].properties["val_accuracy"] == pytest.approx(right / total, abs=1e-6)
    for token_ids, _ in eval_batches.dataset.take(3):
        np.testing.assert_allclose(loaded.predict(token_ids, verbose=0),
                                   exported["model"].predict(token_ids, verbose=0), rtol=1e-5, atol=1e-6)


def test_an_epoch_of_a_split_larger_than_max_rows_per_epoch_trains_on_that_many_rows(
    transformed_sample, tmp_path
):
    chosen = tuner.run(transformed_sample, tmp_path / "tuner", TunerConfig(
        architecture="rnn", enabled=False, fixed_hyperparameters=(*TINY, "batch_size=32")), RUNTIME)
    out = tmp_path / "trainer"
    trainer.run(
        {**transformed_sample, **chosen}, out, TrainerConfig(epochs=3, max_rows_per_epoch=300), RUNTIME
    )
    history = layouts.read_history(out / "model_run")
    assert history["steps_per_epoch"] == 10 and history["rows_per_epoch"] == 10 * 32  # ceil(300 / 32) batches
    assert history["padding"]["batches"] > 3 * 10  # three such epochs do not even cover the split once
    assert [epoch["batches"] for epoch in history["epochs"]] == [10] * history["epochs_trained"]
    assert history["epochs_trained"] == 3 or history["stopped_early"]


def test_trainer_rejects_unusable_hyperparameters(tuner_inputs, tmp_path):
    folder = tmp_path / "best"
    folder.mkdir()
    layouts.write_best_hyperparameters(folder, {"architecture": "lstm", "values": {"num_layers": 7}})
    inputs = {**tuner_inputs, "best_hyperparameters": Artifact("best_hyperparameters", folder)}
    with pytest.raises(ComponentError, match="num_layers must be in"):
        trainer.run(inputs, tmp_path / "out", TrainerConfig(epochs=1), RUNTIME)
    (folder / "best_hyperparameters.json").write_text(json.dumps({"architecture": "cnn", "values": {}}))
    with pytest.raises(
        ComponentError, match="must name an architecture of " + ", ".join(models.architecture_names())
    ):
        trainer.run(inputs, tmp_path / "out", TrainerConfig(epochs=1), RUNTIME)
