"""The serving SavedModel: raw text in, class probabilities out, loadable with TensorFlow alone.

Built from the real transform graph of the session's transform run (conftest `transformed_sample`) and a tiny
Keras 3 model (Embedding(mask_zero) + LSTM(4) + Dense(4, softmax)) trained for one step.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from support.models import fresh_process_env, keras_reference, tiny_model

from apps import predict
from contract.artifacts import ComponentError
from library import export, layouts
from library.layouts import CLASS_NAMES

VENV_BIN = Path(sys.executable).parent
LONG_TEXT = ("markets rally as oil prices fall and the team wins the final " * 1700)[:100_000]
TEXT_BATCHES = {
    "mixed": ["Stocks rally as oil prices fall", "", LONG_TEXT, "Zürich café naïve — 東京 株価 上昇 📈",
              "Team wins the championship", "NASA launches a new satellite"],
    "empty_batch": [],
    "only_empty_strings": ["", "", ""],
    "only_unknown_symbols": ["!!! ??? ...", "— · —"],
}

# Runs in a fresh interpreter that imports nothing but TensorFlow: the SavedModel must be self-contained.
SERVE_SCRIPT = r"""
import json, sys
import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
batches = json.loads(sys.stdin.read())
results = {}
for name, texts in batches.items():
    text = tf.constant(texts, dtype=tf.string, shape=[len(texts)])
    by_text = model.signatures["serving_default"](text=text)
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "title": tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode("utf-8")])),
        "description": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""])),
    })).SerializeToString() for t in texts]
    by_example = model.signatures["serving_tf_example"](
        examples=tf.constant(examples, tf.string, shape=[len(texts)]))
    classified = model.signatures["classify"](inputs=tf.constant(examples, tf.string, shape=[len(texts)]))
    results[name] = {
        "classes": [[c.decode() for c in row] for row in classified["classes"].numpy()],
        "classes_shape": list(classified["classes"].shape),
        "scores": classified["scores"].numpy().tolist(),
        "scores_dtype": classified["scores"].dtype.name,
        "probabilities": by_text["probabilities"].numpy().tolist(),
        "probabilities_shape": list(by_text["probabilities"].shape),
        "class_id": by_text["class_id"].numpy().tolist(),
        "class_name": [n.decode() for n in by_text["class_name"].numpy()],
        "example_probabilities": by_example["probabilities"].numpy().tolist(),
        "example_class_id": by_example["class_id"].numpy().tolist(),
    }
from tensorflow.core.protobuf import saved_model_pb2
saved_model = saved_model_pb2.SavedModel.FromString(open(sys.argv[1] + "/saved_model.pb", "rb").read())
method_names = {key: signature.method_name
                for key, signature in saved_model.meta_graphs[0].signature_def.items()
                if not key.startswith("__")}
# (`import tensorflow` itself loads parts of Keras 3, so "keras" cannot be on this list.)
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] in ("tensorflow_transform", "tfx_bsl", "apache_beam", "tf_keras"))
print(json.dumps({"results": results, "non_tensorflow_modules": loaded, "method_names": method_names}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, transformed_sample):
    transform_graph = transformed_sample["transform_graph"].uri
    model = tiny_model(layouts.read_model_input(transform_graph).embedding_input_dim)
    export_dir = layouts.serving_model_dir(tmp_path_factory.mktemp("export"))
    export.export_serving_model(model, transform_graph, export_dir)
    return {"model": model, "transform_graph": transform_graph, "export_dir": export_dir}


@pytest.fixture(scope="module")
def served(exported):
    """The fresh TensorFlow-only process's answers for TEXT_BATCHES."""
    process = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, str(exported["export_dir"])],
                             input=json.dumps(TEXT_BATCHES), capture_output=True, text=True, timeout=300,
                             env=fresh_process_env())
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


def test_loads_with_tensorflow_only(served):
    assert served["non_tensorflow_modules"] == []


@pytest.mark.parametrize("batch", sorted(TEXT_BATCHES))
def test_serving_default_matches_keras_model_on_transformed_text(exported, served, batch):
    texts = TEXT_BATCHES[batch]
    result = served["results"][batch]
    assert result["probabilities_shape"] == [len(texts), 4]
    expected = keras_reference(exported["model"], exported["transform_graph"], texts)
    np.testing.assert_allclose(np.array(result["probabilities"], np.float32).reshape(-1, 4), expected,
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.sum(expected, axis=1), 1.0, atol=1e-5)
    assert result["class_id"] == np.argmax(expected, axis=1).tolist()
    assert result["class_name"] == [CLASS_NAMES[i] for i in result["class_id"]]


@pytest.mark.parametrize("batch", sorted(TEXT_BATCHES))
def test_tf_example_signature_agrees_with_serving_default(served, batch):
    result = served["results"][batch]
    np.testing.assert_allclose(np.array(result["example_probabilities"]).reshape(-1, 4),
                               np.array(result["probabilities"]).reshape(-1, 4), atol=1e-6)
    assert result["example_class_id"] == result["class_id"]


@pytest.mark.parametrize("batch", sorted(TEXT_BATCHES))
def test_classify_signature_gives_all_classes_and_their_scores(served, batch):
    """TF Serving's Classify API shape: inputs (tf.Example) -> classes string [B, 4], scores float [B, 4]."""
    result = served["results"][batch]
    count = len(TEXT_BATCHES[batch])
    assert result["classes_shape"] == [count, 4] and result["scores_dtype"] == "float32"
    assert result["classes"] == [list(export.CLASS_NAMES)] * count
    np.testing.assert_allclose(np.array(result["scores"]).reshape(-1, 4),
                               np.array(result["probabilities"]).reshape(-1, 4), atol=1e-6)


def test_signature_method_names_follow_tf_serving(served):
    assert served["method_names"] == {
        "serving_default": "tensorflow/serving/predict", "serving_tf_example": "tensorflow/serving/predict",
        "transform_features": "tensorflow/serving/predict", "classify": "tensorflow/serving/classify",
        "batch_tf_example": "tensorflow/serving/predict"}


def test_transform_features_signature_gives_transform_lengths(exported):
    import tensorflow_transform as tft

    texts = ["Stocks rally as oil prices fall", "", LONG_TEXT]
    examples = tf.constant([tf.train.Example(features=tf.train.Features(feature={
        "title": tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode()])),
    })).SerializeToString() for t in texts])
    outputs = tf.saved_model.load(str(exported["export_dir"])).signatures["transform_features"](
        examples=examples
    )
    layer = tft.TFTransformOutput(str(exported["transform_graph"])).transform_features_layer()
    expected = layer({"title": tf.constant(texts), "description": tf.constant(["", "", ""])})
    assert outputs["length"].numpy().tolist() == expected["length"].numpy().tolist()
    # max_length of the fixture
    assert outputs["length"].numpy()[1] == 0 and outputs["length"].numpy()[2] == 64
    np.testing.assert_array_equal(
        outputs["token_ids"].numpy(), tf.sparse.to_dense(expected["token_ids"]).numpy()
    )


def test_saved_model_cli_shows_and_runs_both_signatures(exported):
    env = fresh_process_env()
    cli = str(VENV_BIN / "saved_model_cli")
    shown = subprocess.run([cli, "show", "--all", "--dir", str(exported["export_dir"])],
                           capture_output=True, text=True, timeout=300, env=env)
    assert shown.returncode == 0, shown.stderr[-3000:]
    for signature in ("serving_default", "serving_tf_example", "transform_features", "classify",
                      "batch_tf_example"):
        assert f"signature_def['{signature}']" in shown.stdout
    assert "inputs['text']" in shown.stdout and "inputs['examples']" in shown.stdout
    assert "inputs['inputs']" in shown.stdout and "outputs['classes']" in shown.stdout
    assert "Method name is: tensorflow/serving/classify" in shown.stdout
    assert "outputs['probabilities']" in shown.stdout and "outputs['class_name']" in shown.stdout

    # `run` uses the session-based loader (the one TF Serving uses), unlike tf.saved_model.load.
    ran = subprocess.run([cli, "run", "--dir", str(exported["export_dir"]), "--tag_set", "serve",
                          "--signature_def", "serving_default",
                          "--input_exprs", 'text=["Stocks rally as oil prices fall", ""]'],
                         capture_output=True, text=True, timeout=300, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert (
        "Result for output key probabilities" in ran.stdout
        and "Result for output key class_name" in ran.stdout
    )
    expected = keras_reference(
        exported["model"], exported["transform_graph"], ["Stocks rally as oil prices fall", ""]
    )
    expected_names = [CLASS_NAMES[i] for i in np.argmax(expected, axis=1)]
    names_line = ran.stdout.split("Result for output key class_name:")[1].strip().splitlines()[0]
    assert names_line == "[" + " ".join(f"b'{name}'" for name in expected_names) + "]"


def test_warmup_requests_are_parseable_and_servable(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    path = exported["export_dir"] / export.WARMUP_FILE
    assert path.is_file()
    model = tf.saved_model.load(str(exported["export_dir"]))
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert 1 <= len(records) <= 100  # TF Serving replays at most 1,000; a few suffice
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["text"]
        texts = tf.make_ndarray(request.inputs["text"])
        outputs = model.signatures["serving_default"](text=tf.constant(texts))
        assert outputs["probabilities"].shape == (len(texts), 4)


def test_export_replaces_existing_folder_and_leaves_no_temporary(exported, tmp_path):
    export_dir = tmp_path / "serving_model"
    export_dir.mkdir()
    (export_dir / "stale.txt").write_text("from an earlier export")
    export.export_serving_model(exported["model"], exported["transform_graph"], export_dir)
    assert (export_dir / "saved_model.pb").is_file() and not (export_dir / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving_model"]


def test_fixed_length_model_input_is_padded_or_truncated(exported, tmp_path):
    """A model built for exactly N steps still serves empty and very long texts."""
    keras.utils.set_random_seed(1)
    token_ids = keras.Input(shape=(5,), dtype="int64")
    embedded = keras.layers.Embedding(10_000, 4, mask_zero=True)(token_ids)
    model = keras.Model(
        token_ids, keras.layers.Dense(4, activation="softmax")(keras.layers.LSTM(2)(embedded))
    )
    export.export_serving_model(model, exported["transform_graph"], tmp_path / "fixed")
    texts = ["", LONG_TEXT, "oil prices", "stocks fall as oil prices rise and markets slump"]
    outputs = tf.saved_model.load(str(tmp_path / "fixed")).signatures["serving_default"](
        text=tf.constant(texts)
    )
    assert outputs["probabilities"].shape == (4, 4)
    # Exactly the Keras model on each text's first 5 ids, 0-padded at the end: a long text loses its tail.
    np.testing.assert_allclose(outputs["probabilities"].numpy(),
                               keras_reference(model, exported["transform_graph"], texts, steps=5), atol=1e-6)


# In a fresh TensorFlow-only process that dumps every XLA compilation: replay the warm-up texts, count the
# compiled modules, then run batches of other sizes and lengths and count again.
XLA_SCRIPT = r"""
import json, os, sys
import tensorflow as tf

def compiled():
    # XLA writes several files per compiled module, all named module_<number>.*
    dump = os.environ["DUMP"]
    return len({name.split(".")[0] for name in os.listdir(dump)}) if os.path.isdir(dump) else 0

signature = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
job = json.loads(sys.stdin.read())
for texts in job["warmup"]:
    signature(text=tf.constant(texts, tf.string, shape=[len(texts)]))
after_warmup = compiled()
outputs = [signature(text=tf.constant(texts, tf.string, shape=[len(texts)]))["probabilities"].numpy().tolist()
           for texts in job["batches"]]
print(json.dumps({"after_warmup": after_warmup, "after_batches": compiled(), "outputs": outputs}))
"""


def test_xla_export_compiles_each_bucket_shape_at_warm_up_and_matches_keras(exported, tmp_path):
    """The model part runs with XLA over 4 batch x N length buckets, all compiled by the warm-up requests: no
    other batch size or length compiles again, and padding changes no answer beyond 1e-6 (nor is returned)."""
    from tensorflow_serving.apis import prediction_log_pb2

    from library import xla_buckets

    buckets = layouts.read_model_input(exported["transform_graph"]).bucket_upper_bounds
    path = exported["export_dir"] / export.WARMUP_FILE
    requests = [prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
                for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]
    warmup = [[text.decode() for text in tf.make_ndarray(request.inputs["text"])] for request in requests]
    words = "oil prices stocks team wins the final markets rally zzqx".split()
    batches = [[" ".join(words[(i + j) % len(words)] for j in range((i * 37) % 300)) for i in range(size)]
               for size in (0, 1, 2, 3, 5, 17, 64, 65, 130)] + [TEXT_BATCHES["mixed"]]
    result = _run_xla_script(exported["export_dir"], warmup, batches, tmp_path / "xla_dump")
    assert result["after_warmup"] == len(buckets) * len(xla_buckets.BATCH_BUCKETS) == 4 * len(buckets)
    assert result["after_batches"] == result["after_warmup"]
    for texts, probabilities in zip(batches, result["outputs"]):
        expected = keras_reference(exported["model"], exported["transform_graph"], texts)
        assert np.array(probabilities, np.float32).reshape(-1, 4).shape == expected.shape
        served = np.array(probabilities, np.float32).reshape(-1, 4)
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)


def test_a_large_batch_runs_in_chunks_sorted_by_length_each_cut_to_its_own_bucket(exported, tmp_path):
    """256 texts, a long one at the head of each 64-row chunk, the rest one word: sorted by length, three
    chunks run at the shortest bucket and one at the longest, so exactly those two shapes compile (in
    arrival order, all four chunks would run at the longest); the answers come back in the rows' order."""
    buckets = layouts.read_model_input(exported["transform_graph"]).bucket_upper_bounds
    assert len(buckets) > 1
    long_text = " ".join(["markets rally"] * buckets[-1])[:10_000]
    texts = [long_text if row % 64 == 0 else ("oil", "team", "chip")[row % 3] for row in range(256)]
    result = _run_xla_script(exported["export_dir"], [], [texts], tmp_path / "xla_dump")
    assert result["after_batches"] == 2
    np.testing.assert_allclose(np.array(result["outputs"][0], np.float32).reshape(-1, 4),
                               keras_reference(exported["model"], exported["transform_graph"], texts),
                               rtol=0, atol=1e-6)


def _run_xla_script(export_dir: Path, warmup: list[list[str]], batches: list[list[str]], dump: Path) -> dict:
    """XLA_SCRIPT's counts of compiled modules and its outputs, in a fresh TensorFlow-only process."""
    return _run_dumping_xla(XLA_SCRIPT, [str(export_dir)], {"warmup": warmup, "batches": batches}, dump)


def _run_dumping_xla(script: str, args: list[str], stdin: object, dump: Path) -> dict:
    """The last stdout line (JSON) of `script` run with `args` and `stdin` (as JSON) in a fresh process that
    dumps every XLA module it compiles into `dump` (the script counts them through $DUMP)."""
    process = subprocess.run([sys.executable, "-c", script, *args], input=json.dumps(stdin),
                             capture_output=True, text=True, timeout=900,
                             env={**fresh_process_env(), "DUMP": str(dump),
                                  "XLA_FLAGS": f"--xla_dump_to={dump}"})
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


# 130 texts from 0 to 299 words long, in mixed order (the offline-batch and predict tests)
_WORDS = "oil prices stocks team wins the final markets rally zzqx".split()
MIXED_LENGTH_TEXTS = [" ".join(_WORDS[(i + j) % len(_WORDS)] for j in range((i * 37) % 300))
                      for i in range(130)]

BATCH_SCRIPT = """
import json, os, sys
import tensorflow as tf
from components.evaluator.executor import load_serving_model, served_predictions

def compiled():
    dump = os.environ["DUMP"]
    return len({name.split(".")[0] for name in os.listdir(dump)}) if os.path.isdir(dump) else 0

texts, examples_file = json.loads(sys.stdin.read()), sys.argv[2]
with tf.io.TFRecordWriter(examples_file, options="GZIP") as writer:
    for text in texts:
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            "title": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))})).SerializeToString())
model = load_serving_model(sys.argv[1])
serialized, evaluated, _ = served_predictions([examples_file], model)
after_evaluation = compiled()
served = model.signatures["serving_tf_example"](examples=tf.constant(serialized))["probabilities"].numpy()
print(json.dumps({"after_evaluation": after_evaluation, "after_served": compiled(),
                  "evaluated": evaluated.tolist(), "served": served.tolist()}))
"""


def test_the_evaluators_batches_compile_nothing_and_match_the_served_signature(exported, tmp_path):
    """The evaluator (and validate's drift predictions) feed offline batches through batch_tf_example: the
    served graph and weights without XLA, so a fresh load compiles no shape (the served tf.Example signature,
    the control, compiles some); the answers agree within 1e-6, rows in order."""
    texts = MIXED_LENGTH_TEXTS
    examples = tmp_path / "examples.tfrecord.gz"
    result = _run_dumping_xla(BATCH_SCRIPT, [str(exported["export_dir"]), str(examples)], texts,
                              tmp_path / "xla_dump")
    assert result["after_evaluation"] == 0 and result["after_served"] > 0
    np.testing.assert_allclose(np.array(result["evaluated"]), np.array(result["served"]), rtol=0, atol=1e-6)
    assert len(result["evaluated"]) == len(texts)


PREDICT_SCRIPT = """
import json, os, sys
from apps import predict

def compiled():
    dump = os.environ["DUMP"]
    return len({name.split(".")[0] for name in os.listdir(dump)}) if os.path.isdir(dump) else 0

texts = json.loads(sys.stdin.read())
first = predict.predict(sys.argv[1], texts)
after_first = compiled()
# past XLA_AFTER_ROWS rows, the process predicts through serving_default (XLA)
predict.XLA_AFTER_ROWS = len(texts)
later = predict.predict(sys.argv[1], texts)
print(json.dumps({"after_first": after_first, "after_later": compiled(),
                  "first": [row["probabilities"] for row in first],
                  "later": [row["probabilities"] for row in later]}))
"""


def test_predict_compiles_nothing_for_its_first_rows_then_switches_to_xla_with_the_same_answers(exported,
                                                                                               tmp_path):
    """`predict` sends a process's first rows through batch_tf_example (no XLA compilation on a fresh load),
    later ones through serving_default (XLA); the two agree within 1e-6, rows in order."""
    texts = MIXED_LENGTH_TEXTS
    result = _run_dumping_xla(PREDICT_SCRIPT, [str(exported["export_dir"])], texts, tmp_path / "xla_dump")
    assert result["after_first"] == 0 and result["after_later"] > 0
    assert len(result["first"]) == len(texts)
    np.testing.assert_allclose(np.array(result["first"]), np.array(result["later"]), rtol=0, atol=1e-6)


def test_predict_stopped_by_sigterm_exits_143_and_leaves_no_file_behind(exported, tmp_path):
    """A `predict` stopped mid-file (systemd, Kubernetes, a shell's kill) ends with 143 and one line, and
    leaves neither its partial output nor its temporary home folder (Keras's and matplotlib's files)."""
    scratch, out_dir = tmp_path / "tmp", tmp_path / "out"
    scratch.mkdir()
    out_dir.mkdir()
    source = tmp_path / "texts.txt"
    source.write_text("Oil prices rally as stocks fall\n" * 300_000, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.cli", "predict", "--model-dir", str(exported["export_dir"]), "--input",
         str(source), "--output", str(out_dir / "predictions.jsonl")],
        env={**fresh_process_env(), "TMPDIR": str(scratch)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        # stopped once predictions are being written (its partial output has some)
        deadline = time.monotonic() + 300
        while not any(path.stat().st_size for path in out_dir.iterdir()) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
        assert list(scratch.iterdir()), "predict's temporary home folder"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines() == ["predict: interrupted by SIGTERM"]
    assert list(scratch.iterdir()) == [] and list(out_dir.iterdir()) == []


def test_cudnn_is_disabled_only_while_tracing():
    keras.utils.set_random_seed(2)
    inputs = keras.Input(shape=(None,), dtype="int64")
    hidden = keras.layers.Embedding(20, 4, mask_zero=True)(inputs)
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(2, return_sequences=True))(hidden)
    hidden = keras.layers.GRU(2, use_cudnn=True)(hidden)
    model = keras.Model(inputs, hidden)
    rnn_layers = [layer for layer in model._flatten_layers() if hasattr(layer, "use_cudnn")]
    # The bidirectional wrapper's forward and backward copies are the layers that run, so they must be found.
    assert sorted(layer.name.split("_")[0] for layer in rnn_layers) == ["backward", "forward", "gru"]
    before = [layer.use_cudnn for layer in rnn_layers]
    with export._cudnn_disabled(model):
        assert all(layer.use_cudnn is False for layer in rnn_layers)
    assert [layer.use_cudnn for layer in rnn_layers] == before


# ----------------------------------------------------------------------------------------------------------
# Batch prediction (apps/predict.py) with the exported model


def test_predict_matches_keras_model_and_accepts_model_folders(exported, tmp_path):
    texts = ["Stocks rally as oil prices fall", "", "Team wins the championship"] * 100  # more than one batch
    by_export_dir = predict.predict(exported["export_dir"], texts)
    expected = keras_reference(exported["model"], exported["transform_graph"], texts)
    assert len(by_export_dir) == len(texts)
    np.testing.assert_allclose([p["probabilities"] for p in by_export_dir], expected, atol=1e-5)
    assert [p["class_id"] for p in by_export_dir] == np.argmax(expected, axis=1).tolist()
    assert all(p["class_name"] == CLASS_NAMES[p["class_id"]] for p in by_export_dir)

    trainer_model_dir = tmp_path / "model"
    shutil.copytree(exported["export_dir"], layouts.serving_model_dir(trainer_model_dir))
    assert predict.resolve_serving_model_dir(trainer_model_dir) == layouts.serving_model_dir(
        trainer_model_dir
    )
    assert predict.predict(trainer_model_dir, texts[:3]) == by_export_dir[:3]
    assert predict.predict(exported["export_dir"], []) == []
    with pytest.raises(ComponentError, match="not a serving model"):
        predict.predict(tmp_path, ["text"])


def test_iter_csv_or_lines_reads_ag_news_csv(tmp_path, sample_dir):
    texts = list(predict.iter_csv_or_lines(sample_dir / "test.csv"))
    with open(sample_dir / "test.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert texts == [f"{title} {description}" for _, title, description in rows] and len(texts) == 400

    with_header = tmp_path / "with_header.csv"
    with_header.write_text(
        'class,title,description\n3,"Oil, again","Prices ""soar"" today"\n\n1,Plain,Text\n'
    )
    assert list(predict.iter_csv_or_lines(with_header)) == ['Oil, again Prices "soar" today', "Plain Text"]

    broken = tmp_path / "broken.csv"
    broken.write_text('"1","ok","row"\n"9","bad class","row"\n')
    with pytest.raises(ComponentError, match="row 2"):
        list(predict.iter_csv_or_lines(broken))


def test_iter_csv_or_lines_reads_plain_lines(tmp_path, monkeypatch):
    lines = tmp_path / "lines.txt"
    lines.write_text(
        "\nOil prices, again, rise\r\n\nZürich café\nlast line without newline", encoding="utf-8"
    )
    # A blank line is an empty text, so output rows join back to input lines.
    expected = ["", "Oil prices, again, rise", "", "Zürich café", "last line without newline"]
    assert list(predict.iter_csv_or_lines(lines)) == expected
    assert [n for n, _ in predict.iter_numbered_texts(lines)] == [1, 2, 3, 4, 5]
    assert list(predict.iter_csv_or_lines(str(lines))) == expected
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\ntwo\n"))
    assert list(predict.iter_csv_or_lines("-")) == ["one", "two"]
    assert list(predict.iter_csv_or_lines(io.StringIO(""))) == []


def test_bidirectional_gru_from_the_registry_exports_and_serves(transformed_sample, tmp_path):
    """The registry's gru (here bidirectional) goes through the same export and TensorFlow-only
    serving as the LSTM above, with the same answers as the Keras model."""
    from library import models

    transform_graph = transformed_sample["transform_graph"].uri
    model_input = layouts.read_model_input(transform_graph)
    keras.utils.set_random_seed(0)
    hp = models.fixed_hyperparameters({"embedding_dim": 8, "units": 4, "bidirectional": True})
    model = models.build_model("gru", hp, model_input)
    rng = np.random.default_rng(0)
    model.fit(rng.integers(1, model_input.embedding_input_dim, size=(8, 6)), rng.integers(0, 4, size=8),
              epochs=1, verbose=0)
    export.export_serving_model(model, transform_graph, layouts.serving_model_dir(tmp_path))

    texts = {"mixed": TEXT_BATCHES["mixed"], "only_empty_strings": TEXT_BATCHES["only_empty_strings"]}
    process = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, str(layouts.serving_model_dir(tmp_path))],
                             input=json.dumps(texts), capture_output=True, text=True, timeout=300,
                             env=fresh_process_env())
    assert process.returncode == 0, process.stderr[-3000:]
    served = json.loads(process.stdout.strip().splitlines()[-1])
    assert served["non_tensorflow_modules"] == []
    for name, batch in texts.items():
        expected = keras_reference(model, transform_graph, batch)
        np.testing.assert_allclose(
            np.array(served["results"][name]["probabilities"]).reshape(-1, 4), expected, atol=1e-5
        )
        assert served["results"][name]["class_id"] == np.argmax(expected, axis=1).tolist()
