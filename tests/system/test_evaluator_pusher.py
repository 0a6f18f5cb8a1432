"""Evaluator (TFMA metrics, length-bucket slices, blessing against thresholds and a baseline) and pusher
(versioned, atomic, never overwriting) on real artifacts: the session's ingest and transform runs
(conftest) and tiny Keras 3 models exported with library.export."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from support.models import served_probabilities

from apps import predict
from components.evaluator import executor as evaluator
from components.pusher import executor as pusher
from components.pusher import spec as pusher_spec
from contract.artifacts import Artifact, Runtime, fingerprint
from contract.config import EvaluatorConfig, PusherConfig
from library import evaluation_report, export, layouts
from library.layouts import CLASS_NAMES
from library.paired_gate import RowResults

MAX_LENGTH = 64  # conftest's transform config


def read_transformed(split_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(token ids [N, MAX_LENGTH] zero-padded, labels [N]) of transformed examples under `split_dir`."""
    bucket_dirs = [child for child in split_dir.iterdir() if layouts.parse_bucket_dir(child.name) is not None]
    files = [file for folder in [split_dir, *bucket_dirs] for file in layouts.example_files(folder)]
    spec = {"token_ids": tf.io.VarLenFeature(tf.int64), "label": tf.io.FixedLenFeature([], tf.int64)}
    ids, labels = [], []
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096):
        parsed = tf.io.parse_example(batch, spec)
        dense = tf.sparse.to_dense(parsed["token_ids"]).numpy()
        ids.append(np.pad(dense, [[0, 0], [0, MAX_LENGTH - dense.shape[1]]]))
        labels.append(parsed["label"].numpy())
    return np.concatenate(ids), np.concatenate(labels)


def tiny_lstm(embedding_input_dim: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    token_ids = keras.Input(shape=(None,), dtype="int64")
    hidden = keras.layers.Embedding(embedding_input_dim, 16, mask_zero=True)(token_ids)
    hidden = keras.layers.LSTM(8)(hidden)
    model = keras.Model(token_ids, keras.layers.Dense(4, activation="softmax")(hidden))
    model.compile(
        optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def model_artifacts(
    root: Path, model: keras.Model, transform_graph: Path, history: dict
) -> dict[str, Artifact]:
    """`model` and `model_run` artifacts laid out as the trainer writes them."""
    model_dir, run_dir = root / "model", root / "model_run"
    layouts.keras_model_file(model_dir).parent.mkdir(parents=True)
    run_dir.mkdir(parents=True)
    model.save(layouts.keras_model_file(model_dir))
    layouts.write_model_input(model_dir, layouts.read_model_input(transform_graph))
    layouts.write_trained_hyperparameters(model_dir, {"embedding_dim": 16, "units": 8})
    export.export_serving_model(model, transform_graph, layouts.serving_model_dir(model_dir))
    layouts.write_history(run_dir, history)
    return {"model": Artifact("model", model_dir), "model_run": Artifact("model_run", run_dir)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, transformed_sample):
    transform_graph = transformed_sample["transform_graph"].uri
    examples_dir = transformed_sample["transformed_examples"].uri
    model = tiny_lstm(layouts.read_model_input(transform_graph).embedding_input_dim)
    token_ids, labels = read_transformed(layouts.split_dir(examples_dir, "train"))
    eval_token_ids, eval_labels = read_transformed(layouts.split_dir(examples_dir, "eval"))
    fitted = model.fit(token_ids, labels, epochs=4, batch_size=64, verbose=0,
                       validation_data=(eval_token_ids, eval_labels)).history
    # The trainer's history.json form: one record per epoch plus a summary.
    epochs = [{"epoch": i + 1, **{k: v[i] for k, v in fitted.items()}, "examples_per_second": 1000.0}
              for i in range(4)]
    history = {"epochs": epochs, "best_epoch": min(epochs, key=lambda e: e["val_loss"])["epoch"]}
    return {
        "keras": model,
        **model_artifacts(tmp_path_factory.mktemp("trained"), model, transform_graph, history),
    }


@pytest.fixture(scope="module")
def untrained(tmp_path_factory, transformed_sample):
    transform_graph = transformed_sample["transform_graph"].uri
    model = tiny_lstm(layouts.read_model_input(transform_graph).embedding_input_dim)
    history = {"loss": [1.39], "accuracy": [0.25], "val_loss": [1.39], "val_accuracy": [0.25]}  # Keras' form
    return {
        "keras": model,
        **model_artifacts(tmp_path_factory.mktemp("untrained"), model, transform_graph, history),
    }


def evaluate(tmp_path, candidate, ingested_sample, transformed_sample, config, baseline=None, anchors=None):
    inputs = {"model": candidate["model"], "examples": ingested_sample,
              "transformed_examples": transformed_sample["transformed_examples"],
              "model_run": candidate["model_run"]}
    if baseline is not None:
        inputs["baseline_model"] = baseline["model"]
    if anchors is not None:
        inputs["anchor_blessings"] = anchors
    messages = []
    outputs = evaluator.run(inputs, tmp_path / "out", config, Runtime(log=messages.append))
    metrics = layouts.read_metrics(outputs["evaluation"].uri)
    blessing = layouts.read_blessing(outputs["blessing"].uri)
    return outputs, metrics, blessing, messages


def numpy_per_class(labels, predicted):
    result = {}
    for index, name in enumerate(CLASS_NAMES):
        tp = np.sum((predicted == index) & (labels == index))
        precision = tp / max(np.sum(predicted == index), 1)
        recall = tp / max(np.sum(labels == index), 1)
        result[name] = (precision, recall, 2 * precision * recall / (precision + recall) if tp else 0.0)
    return result


def test_metrics_match_numpy_and_first_model_is_blessed(
    tmp_path, trained, ingested_sample, transformed_sample
):
    outputs, metrics, blessing, messages = evaluate(
        tmp_path, trained, ingested_sample, transformed_sample, EvaluatorConfig(min_accuracy=0.4))

    probabilities, labels = served_probabilities(layouts.serving_model_dir(trained["model"].uri),
                                                 layouts.examples_files(ingested_sample.uri, "test"))
    predicted = np.argmax(probabilities, axis=1)
    raw_accuracy = np.mean(predicted == labels)
    overall = metrics["overall"]
    assert metrics["examples"] == overall["examples"] == len(labels) == 400
    assert overall["accuracy"] == pytest.approx(np.mean(predicted == labels), abs=1e-6)
    assert (metrics["accuracy"], metrics["loss"], metrics["macro_f1"]) == (
        overall["accuracy"], overall["loss"], overall["macro_f1"])
    expected_loss = -np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)))
    assert overall["loss"] == pytest.approx(expected_loss, rel=1e-4)
    expected_matrix = np.zeros((4, 4), int)
    np.add.at(expected_matrix, (labels, predicted), 1)
    assert overall["confusion_matrix"] == expected_matrix.tolist()
    per_class = numpy_per_class(labels, predicted)
    for name, (precision, recall, f1) in per_class.items():
        assert overall["per_class"][name]["precision"] == pytest.approx(precision)
        assert overall["per_class"][name]["recall"] == pytest.approx(recall)
        assert overall["per_class"][name]["f1"] == pytest.approx(f1)
        assert overall["per_class"][name]["support"] == int(np.sum(labels == CLASS_NAMES.index(name)))
    assert overall["macro_f1"] == pytest.approx(np.mean([f1 for _, _, f1 in per_class.values()]))
    assert 0.4 < overall["accuracy"] < 1.0  # trained: clearly better than chance on the balanced test split

    # Per bucket: the Keras model on the transformed test split's own bucket folders, an independent path.
    test_dir = layouts.split_dir(transformed_sample["transformed_examples"].uri, "test")
    bucket_dirs = sorted(p for p in test_dir.iterdir()
                         if layouts.parse_bucket_dir(p.name) is not None and layouts.example_files(p))
    assert sorted(metrics["length_buckets"]) == sorted(p.name for p in bucket_dirs) and len(bucket_dirs) >= 2
    assert metrics["bucket_counts"]["evaluated"] == metrics["bucket_counts"]["transformed_test_split"]
    for bucket_dir in bucket_dirs:
        token_ids, labels = read_transformed(bucket_dir)
        keras_predicted = np.argmax(trained["keras"].predict(token_ids, verbose=0), axis=1)
        bucket = metrics["length_buckets"][bucket_dir.name]
        assert bucket["examples"] == len(labels)
        assert bucket["accuracy"] == pytest.approx(np.mean(keras_predicted == labels), abs=1e-6)
        assert set(bucket) >= {"loss", "macro_f1", "per_class", "confusion_matrix"}

    assert blessing["blessed"] is True and blessing["baseline_accuracy"] is None
    assert blessing["accuracy"] == overall["accuracy"]
    assert blessing["thresholds"] == {"min_accuracy": 0.4, "max_accuracy_drop": 0.005, "significance": 0.05,
                                      "anchor_versions": 5}
    assert "no baseline" in blessing["reason"]
    assert outputs["blessing"].properties["blessed"] is True
    # The per-row results recorded for later anchors: the rows the raw predictions above got right.
    rows = RowResults.from_packed(outputs["blessing"].properties["test_rows"],
                                  outputs["blessing"].properties["correct_rows"],
                                  outputs["blessing"].properties["test_row_count"])
    assert rows.accuracy == pytest.approx(raw_accuracy, abs=1e-9) and len(rows.correct) == 400
    assert outputs["evaluation"].properties == {"accuracy": overall["accuracy"], "loss": overall["loss"],
                                                "macro_f1": overall["macro_f1"]}
    evaluation_dir = outputs["evaluation"].uri
    for image in layouts.EVALUATION_FIGURES:
        assert (evaluation_dir / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (evaluation_dir / layouts.EVALUATION_REPORT_FILE).read_text()
    assert "BLESSED" in report and all(f"({image})" in report for image in layouts.EVALUATION_FIGURES)
    assert all(name in report for name in metrics["length_buckets"]) and "Sci/Tech" in report
    assert (evaluation_dir / layouts.TFMA_DIR / "validations.tfrecord").is_file()
    assert not (tmp_path / "out" / ".evaluator_tmp").exists()
    assert any("BLESSED" in message for message in messages)


def test_below_min_accuracy_is_not_blessed(tmp_path, untrained, ingested_sample, transformed_sample):
    outputs, metrics, blessing, messages = evaluate(
        tmp_path, untrained, ingested_sample, transformed_sample, EvaluatorConfig(min_accuracy=0.8))
    assert blessing["blessed"] is False and outputs["blessing"].properties["blessed"] is False
    assert blessing["accuracy"] < 0.8
    assert "below min_accuracy 0.8000" in blessing["reason"]
    assert metrics["blessed"] is False and "NOT BLESSED" in (
        outputs["evaluation"].uri / layouts.EVALUATION_REPORT_FILE).read_text()
    assert any("NOT blessed" in message and "min_accuracy" in message for message in messages)


def test_candidate_worse_than_baseline_is_not_blessed(tmp_path, trained, untrained, ingested_sample,
                                                      transformed_sample):
    outputs, metrics, blessing, _ = evaluate(tmp_path, untrained, ingested_sample, transformed_sample,
                                             EvaluatorConfig(min_accuracy=0.0, max_accuracy_drop=0.005),
                                             baseline=trained)
    assert blessing["baseline_accuracy"] - blessing["accuracy"] > 0.005  # the precondition of this test
    assert blessing["blessed"] is False
    assert "below the anchor's" in blessing["reason"] and "(baseline, " in blessing["reason"]
    assert "allowed drop 0.0050" in blessing["reason"]
    assert "min_accuracy" not in blessing["reason"]  # the absolute bar (0.0) was met
    assert metrics["baseline"]["accuracy_change"] == pytest.approx(
        blessing["accuracy"] - blessing["baseline_accuracy"]
    )
    assert outputs["blessing"].properties["baseline_accuracy"] == blessing["baseline_accuracy"]


def test_candidate_as_good_as_baseline_is_blessed(tmp_path, trained, ingested_sample, transformed_sample):
    _, metrics, blessing, _ = evaluate(tmp_path, trained, ingested_sample, transformed_sample,
                                       EvaluatorConfig(min_accuracy=0.0), baseline=trained)
    assert blessing["blessed"] is True
    assert blessing["baseline_accuracy"] == pytest.approx(blessing["accuracy"])
    assert metrics["baseline"]["accuracy_change"] == pytest.approx(0.0, abs=1e-9)
    assert "versus the baseline's" in blessing["reason"]


def test_a_recorded_anchor_refuses_a_worse_candidate_without_reloading_its_model(
    tmp_path, trained, untrained, ingested_sample, transformed_sample
):
    """The anchor's per-row results come from a served version's blessing properties, not from its model: the
    trained model's recorded blessing refuses the untrained candidate, which no baseline is there to stop."""
    served, _, served_blessing, _ = evaluate(
        tmp_path / "served", trained, ingested_sample, transformed_sample, EvaluatorConfig(min_accuracy=0.0)
    )
    anchor = Artifact(
        "blessing", served["blessing"].uri, {**served["blessing"].properties, "served_version": 7}
    )
    config = EvaluatorConfig(min_accuracy=0.0, max_accuracy_drop=0.005)
    outputs, metrics, blessing, _ = evaluate(
        tmp_path / "anchored", untrained, ingested_sample, transformed_sample, config, anchors=[anchor]
    )
    assert served_blessing["accuracy"] - blessing["accuracy"] > 0.005  # the precondition of this test
    assert blessing["blessed"] is False and "below the anchor's" in blessing["reason"]
    assert "(version 7, " in blessing["reason"]
    assert outputs["blessing"].properties["anchor_accuracy"] == pytest.approx(served_blessing["accuracy"])
    assert metrics["gate"]["anchors"] == {"version 7": pytest.approx(served_blessing["accuracy"])}
    assert "- anchor: " in (outputs["evaluation"].uri / layouts.EVALUATION_REPORT_FILE).read_text()
    _, _, alone, _ = evaluate(tmp_path / "alone", untrained, ingested_sample, transformed_sample, config)
    assert alone["blessed"] is True  # without the anchor nothing compares it: it would be pushed


def test_training_series_reads_trainer_and_keras_history_forms():
    trainer_form = {"epochs": [{"epoch": 1, "loss": 1.2, "val_accuracy": 0.5, "examples_per_second": 900.0},
                               {"epoch": 2, "loss": 0.8, "val_accuracy": 0.6, "examples_per_second": 950.0}],
                    "best_epoch": 2, "val_loss": 0.7}
    assert evaluation_report.training_series(trainer_form) == {"loss": [(1, 1.2), (2, 0.8)],
                                                       "val_accuracy": [(1, 0.5), (2, 0.6)]}
    keras_form = {"loss": [1.0, 0.5], "accuracy": [0.4, 0.7], "learning_rate": [0.001, 0.001]}
    assert evaluation_report.training_series(keras_form) == {
        "loss": [(1, 1.0), (2, 0.5)],
        "accuracy": [(1, 0.4), (2, 0.7)],
    }
    assert evaluation_report.training_series({}) == {}


# ----------------------------------------------------------------------------------------------------------
# Pusher


def blessing_artifact(root: Path, blessed: bool) -> Artifact:
    folder = root / f"blessing_{blessed}"
    folder.mkdir(parents=True, exist_ok=True)
    layouts.write_blessing(
        folder, blessed=blessed, reason="test decision", accuracy=None, baseline_accuracy=None, thresholds={}
    )
    return Artifact("blessing", folder)


def push(tmp_path, model, blessed, serving_dir, name="push"):
    outputs = pusher.run({"model": model, "blessing": blessing_artifact(tmp_path, blessed)}, tmp_path / name,
                         PusherConfig(serving_dir=str(serving_dir)), Runtime(log=lambda message: None))
    record = layouts.read_push(outputs["pushed_model"].uri)
    kept = ("pushed", "version", "path", "adopted")
    assert outputs["pushed_model"].properties == {k: record[k] for k in kept}
    return record


def files_only_model(root: Path, content: str) -> Artifact:
    """A model artifact whose serving model is files only: the pusher copies a model, it never loads one."""
    serving = layouts.serving_model_dir(root / "model")
    (serving / "variables").mkdir(parents=True)
    (serving / layouts.SAVED_MODEL_FILE).write_text(content)
    (serving / "variables" / "variables.index").write_text(content)
    return Artifact("model", root / "model")


def test_a_model_is_published_once_however_often_it_is_pushed(tmp_path):
    serving_dir = tmp_path / "serving"
    a, b = files_only_model(tmp_path / "a", "model A"), files_only_model(tmp_path / "b", "model B")
    versions = [push(tmp_path, model, True, serving_dir, f"push{i}")["version"]
                for i, model in enumerate([a, a, b, b, a])]
    assert versions == [1, 1, 2, 2, 3]  # the newest version already holds it: adopted, not published again
    assert sorted(os.listdir(serving_dir)) == ["1", "2", "3"]
    assert [(serving_dir / v / layouts.SAVED_MODEL_FILE).read_text() for v in "123"] == [
        "model A", "model B", "model A"]


def test_blessed_model_is_pushed_as_version_1_then_adopted_then_2(tmp_path, trained):
    serving_dir = tmp_path / "serving"
    first = push(tmp_path, trained["model"], True, serving_dir, "first")
    assert (first["pushed"], first["version"], first["adopted"]) == (True, 1, False)
    assert first["path"] == str(serving_dir / "1") and "blessed: test decision" == first["reason"]
    # The same model again (a pusher killed after its rename, before the store's commit): no duplicate
    # version.
    again = push(tmp_path, trained["model"], True, serving_dir, "again")
    assert (again["version"], again["adopted"]) == (1, True)
    assert sorted(os.listdir(serving_dir)) == ["1"]
    # Version 1 now holds some other model: the candidate is pushed as version 2.
    (serving_dir / "1" / layouts.PUSH_FILE).write_text(json.dumps({"model_fingerprint": "another model"}))
    second = push(tmp_path, trained["model"], True, serving_dir, "second")
    assert (second["version"], second["adopted"]) == (2, False)
    assert sorted(os.listdir(serving_dir)) == ["1", "2"]  # no temporary folder left behind
    source = layouts.serving_model_dir(trained["model"].uri)
    for version in ("1", "2"):
        copied = sorted(str(p.relative_to(serving_dir / version)) for p in (serving_dir / version).rglob("*"))
        assert copied == sorted([layouts.PUSH_FILE] + [str(p.relative_to(source)) for p in source.rglob("*")])
        assert (serving_dir / version / "saved_model.pb").read_bytes() == (
            source / "saved_model.pb"
        ).read_bytes()
    assert json.loads((serving_dir / "2" / layouts.PUSH_FILE).read_text()) == {
        "model_fingerprint": fingerprint(source)}
    # The pushed version serves; predict() picks the highest version of a serving folder.
    by_root = predict.predict(serving_dir, ["Stocks rally as oil prices fall"])
    assert by_root == predict.predict(serving_dir / "2", ["Stocks rally as oil prices fall"])
    assert predict.resolve_serving_model_dir(serving_dir) == serving_dir / "2"


def test_stale_push_folders_are_removed_but_a_live_pushers_is_kept(tmp_path, trained):
    serving_dir = tmp_path / "serving"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = serving_dir / f".push-{dead.pid}-deadbeef"
    live = serving_dir / f".push-{os.getppid()}-0badf00d"  # pytest's parent process is alive
    for folder in (stale, live):
        (folder / "variables").mkdir(parents=True)
    assert pusher_spec.stale_push_folders(serving_dir) == [stale]
    record = push(tmp_path, trained["model"], True, serving_dir)
    assert record["version"] == 1 and not stale.exists() and live.is_dir()


def test_existing_versions_are_never_overwritten(tmp_path, trained):
    serving_dir = tmp_path / "serving"
    (serving_dir / "7").mkdir(parents=True)
    (serving_dir / "7" / "marker.txt").write_text("version 7")
    (serving_dir / "notes").mkdir()
    (serving_dir / "10.bak").mkdir()
    record = push(tmp_path, trained["model"], True, serving_dir)
    assert record["version"] == 8
    assert (serving_dir / "7" / "marker.txt").read_text() == "version 7"
    assert sorted(os.listdir(serving_dir / "7")) == ["marker.txt"]


def test_unblessed_model_is_not_pushed(tmp_path, trained):
    serving_dir = tmp_path / "serving"
    record = push(tmp_path, trained["model"], False, serving_dir)
    assert record == {"pushed": False, "version": None, "path": None, "adopted": False,
                      "reason": "not blessed: test decision"}
    assert not serving_dir.exists() or os.listdir(serving_dir) == []


def test_version_taken_during_the_push_goes_to_the_next_number(tmp_path, trained, monkeypatch):
    """Another pusher publishes version 1 between this pusher's existence check and its rename."""
    serving_dir = tmp_path / "serving"
    real_rename = os.rename
    calls = []

    def rename_after_a_rival(source, target):
        if not calls:
            os.makedirs(Path(target) / "variables")
            (Path(target) / "rival.txt").write_text("published by someone else")
        calls.append(Path(target).name)
        return real_rename(source, target)

    monkeypatch.setattr(pusher.os, "rename", rename_after_a_rival)
    record = push(tmp_path, trained["model"], True, serving_dir)
    assert calls == ["1", "2"] and record["version"] == 2
    assert (serving_dir / "1" / "rival.txt").read_text() == "published by someone else"
    assert (serving_dir / "2" / "saved_model.pb").is_file()


def test_concurrent_pushes_get_distinct_complete_versions(tmp_path, trained):
    serving_dir = tmp_path / "serving"
    serving_model = layouts.serving_model_dir(trained["model"].uri)
    results, errors = [], []

    def one_push():
        try:
            results.append(pusher.publish_version(serving_model, serving_dir)[0])
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=one_push) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert sorted(os.listdir(serving_dir), key=int) == ["1", "2", "3", "4", "5", "6"]
    expected = (serving_model / "saved_model.pb").read_bytes()
    for version in results:
        assert (serving_dir / str(version) / "saved_model.pb").read_bytes() == expected


def test_push_is_atomic(tmp_path, trained, monkeypatch):
    """While the copy is being written no numeric folder exists; a failed copy leaves nothing behind."""
    serving_dir = tmp_path / "serving"
    real_copytree = shutil.copytree
    seen_during_copy = []

    def observed_copytree(source, destination, *args, **kwargs):
        real_copytree(source, destination, *args, **kwargs)
        if Path(destination).parent == serving_dir:  # the top call, not copytree's recursion into subfolders
            seen_during_copy.append((Path(destination).name, sorted(os.listdir(serving_dir))))

    monkeypatch.setattr(pusher.shutil, "copytree", observed_copytree)
    assert push(tmp_path, trained["model"], True, serving_dir, "ok")["version"] == 1
    [(temporary_name, listing)] = seen_during_copy
    assert temporary_name.startswith(".") and listing == [temporary_name]  # hidden from TF Serving

    def failing_copytree(source, destination, *args, **kwargs):
        real_copytree(source, destination, *args, **kwargs)
        if Path(destination).parent != serving_dir:  # fail half-way: after the first subfolder is copied
            raise OSError("disk full")

    monkeypatch.setattr(pusher.shutil, "copytree", failing_copytree)
    (serving_dir / "1" / layouts.PUSH_FILE).write_text(json.dumps({"model_fingerprint": "another model"}))
    with pytest.raises(OSError, match="disk full"):
        push(tmp_path, trained["model"], True, serving_dir, "failed")
    assert sorted(os.listdir(serving_dir)) == ["1"]
