"""Pretrained word vectors (library/embeddings.py) through the tuner and trainer, and the `embeddings`
command.

Vectors files are written by the tests in every supported format from a few hundred tokens of the real
transform's vocabulary (the committed sample), so alignment is checked against the vocabulary file itself.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gensim.models as gensim_models
import keras
import numpy as np
import pytest
from support.models import fresh_process_env

from apps.cli.main import main as cli_main
from apps.cli.parser import build_parser, config_from_args
from components.trainer import executor as trainer
from components.tuner import executor as tuner
from contract.artifacts import ComponentError, Runtime
from contract.config import TrainerConfig, TunerConfig
from contract.config_checks import ConfigError
from contract.config_loading import load_config
from library import dataset, embeddings
from library.layouts import read_model_input, vocabulary_file

RUNTIME = Runtime(seed=7, log=lambda message: None)
DIM = 12
TINY = ("units=8", "batch_size=128")
FORMAT_FILES = {"word2vec": "vectors.txt", "word2vec_binary": "vectors.bin", "glove": "glove.6B.12d.txt",
                "fasttext": "vectors.vec", "kv": "vectors.kv"}


def _vocabulary(transformed_sample) -> list[str]:
    graph = Path(transformed_sample["transform_graph"].uri)
    return embeddings.read_vocabulary(vocabulary_file(graph, read_model_input(graph)))


@pytest.fixture(scope="module")
def vectors(transformed_sample, tmp_path_factory):
    """300 file words: vocabulary tokens 0..299 except every 5th (those are "missing"), token 1 written in
    upper case (found through the lowercase lookup), and 60 words the vocabulary does not hold."""
    vocabulary = _vocabulary(transformed_sample)
    present = [token for k, token in enumerate(vocabulary[:300]) if k % 5 != 0]
    words = [token.upper() if token == vocabulary[1] else token for token in present]
    words += [f"zzunknown{k}" for k in range(60)]
    weights = np.random.default_rng(0).normal(0, 0.5, size=(len(words), DIM)).astype(np.float32)
    keyed = gensim_models.KeyedVectors(vector_size=DIM)
    keyed.add_vectors(words, weights)
    folder = tmp_path_factory.mktemp("vectors")
    keyed.save_word2vec_format(str(folder / FORMAT_FILES["word2vec"]))
    keyed.save_word2vec_format(str(folder / FORMAT_FILES["fasttext"]))
    keyed.save_word2vec_format(str(folder / FORMAT_FILES["word2vec_binary"]), binary=True)
    keyed.save_word2vec_format(str(folder / FORMAT_FILES["glove"]), write_header=False)
    keyed.save(str(folder / FORMAT_FILES["kv"]))
    expected = {token: weights[i] for i, token in enumerate(present)}
    return {"folder": folder, "expected": expected, "vocabulary": vocabulary}


@pytest.mark.parametrize("kind", sorted(FORMAT_FILES))
def test_every_format_aligns_with_the_transform_vocabulary(kind, vectors, transformed_sample):
    path = vectors["folder"] / FORMAT_FILES[kind]
    assert embeddings.detect_format(path) == {"fasttext": "word2vec"}.get(kind, kind)
    graph = Path(transformed_sample["transform_graph"].uri)
    model_input = read_model_input(graph)
    pretrained = embeddings.prepare(path, graph, model_input, seed=3)
    matrix, covered = pretrained.alignment.matrix, pretrained.alignment.covered
    vocabulary = vectors["vocabulary"]
    assert matrix.shape == (model_input.embedding_input_dim, DIM) and matrix.dtype == np.float32
    for line, token in enumerate(vocabulary[:300]):  # vocabulary line k is token id k + 1
        token_id = line + 1
        if token in vectors["expected"]:
            assert covered[token_id], token
            np.testing.assert_allclose(matrix[token_id], vectors["expected"][token], rtol=1e-5, atol=1e-6)
        else:  # missing: a small random vector, not the padding row's zeros
            assert not covered[token_id]
            assert 0 < np.abs(matrix[token_id]).max() < 5
    assert not covered[0] and not matrix[0].any()  # padding row
    oov_rows = matrix[model_input.vocab_size + 1:]
    assert len(oov_rows) == model_input.num_oov_buckets and oov_rows.any()
    assert covered.sum() == len(vectors["expected"]) == 240
    assert pretrained.alignment.vocab_coverage == pytest.approx(240 / model_input.vocab_size)


def test_alignment_is_seeded(vectors, transformed_sample):
    graph = Path(transformed_sample["transform_graph"].uri)
    path = vectors["folder"] / "vectors.kv"
    first, again, other = (embeddings.prepare(path, graph, read_model_input(graph), seed).alignment.matrix
                           for seed in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    covered = embeddings.prepare(path, graph, read_model_input(graph), 1).alignment.covered
    np.testing.assert_array_equal(first[covered], other[covered])
    assert not np.allclose(first[~covered][1:], other[~covered][1:])


def test_token_coverage_counts_the_train_split(vectors, transformed_sample):
    graph = Path(transformed_sample["transform_graph"].uri)
    examples = Path(transformed_sample["transformed_examples"].uri)
    model_input = read_model_input(graph)
    alignment = embeddings.prepare(vectors["folder"] / "vectors.txt", graph, model_input, 0).alignment
    counts = dataset.token_id_counts(examples, "train", model_input.embedding_input_dim)
    padding = dataset.padding_ratio(dataset.bucketed_batches(examples, "train", 64, shuffle=False).dataset)
    assert counts.sum() == padding["real_tokens"] and counts[0] == 0
    expected = counts[alignment.covered].sum() / counts.sum()
    assert alignment.token_coverage(counts) == pytest.approx(expected)
    # The file holds the most frequent tokens, so its share of tokens exceeds its share of the vocabulary.
    assert alignment.token_coverage(counts) > 0.3 > alignment.vocab_coverage


def test_bad_vectors_files_are_one_line_errors(tmp_path, transformed_sample):
    graph = Path(transformed_sample["transform_graph"].uri)
    model_input = read_model_input(graph)
    with pytest.raises(ComponentError, match="not found"):
        embeddings.prepare(tmp_path / "absent.vec", graph, model_input, 0)
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("3 4\nthe 0.1 0.2\n")
    with pytest.raises(ComponentError, match="cannot read .*garbage.txt") as error:
        embeddings.prepare(garbage, graph, model_input, 0)
    assert "\n" not in str(error.value)
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("2 3\nqqqq 0.1 0.2 0.3\nwwww 0.3 0.2 0.1\n")
    with pytest.raises(ComponentError, match="none of the 5000 vocabulary tokens"):
        embeddings.prepare(foreign, graph, model_input, 0)


def test_configuration(tmp_path):
    config = load_config(None, ["trainer.embeddings_trainable=after_epochs 3"],
                         {"trainer.pretrained_embeddings": "v.kv"})
    assert config.trainer.unfreeze_after_epochs() == 3 and config.tuner.pretrained_embeddings == "v.kv"
    assert load_config(None, ["trainer.embeddings_trainable=false"]).trainer.unfreeze_after_epochs() == 10
    assert load_config(None, ["trainer.embeddings_trainable=true"]).trainer.unfreeze_after_epochs() == 0
    assert load_config().trainer.unfreeze_after_epochs() is None
    for bad in ("after_epochs 10", "after_epochs", "sometimes", "after_epochs x"):
        with pytest.raises(ConfigError, match="embeddings_trainable"):
            load_config(None, [f"trainer.embeddings_trainable={bad}"])
    with pytest.raises(ConfigError, match="trainer.pretrained_embeddings"):
        load_config(None, ["tuner.pretrained_embeddings=a.kv"])
    args = build_parser().parse_args(["run", "--pretrained-embeddings", "x.vec"])
    assert config_from_args(args).trainer.pretrained_embeddings == "x.vec"


def test_fingerprint_is_in_the_cache_keys_and_follows_the_content(tmp_path, vectors):
    path = tmp_path / "v.txt"
    path.write_bytes((vectors["folder"] / "vectors.txt").read_bytes())
    assert (
        trainer.external_fingerprint(TrainerConfig()) is None
        and tuner.external_fingerprint(TunerConfig()) is None
    )
    before = trainer.external_fingerprint(TrainerConfig(pretrained_embeddings=str(path)))
    assert before == tuner.external_fingerprint(TunerConfig(pretrained_embeddings=str(path)))
    path.write_bytes(path.read_bytes().replace(b"0", b"1", 1))
    assert trainer.external_fingerprint(TrainerConfig(pretrained_embeddings=str(path))) != before
    with pytest.raises(ComponentError, match="not found"):
        trainer.external_fingerprint(TrainerConfig(pretrained_embeddings=str(tmp_path / "gone.kv")))


def _tune(transformed_sample, out: Path, vectors_path: Path, fixed=TINY):
    return tuner.run(transformed_sample, out, TunerConfig(
        architecture="lstm", enabled=False, fixed_hyperparameters=fixed,
        pretrained_embeddings=str(vectors_path)), RUNTIME)


def test_fixed_embedding_dim_must_match_the_file(transformed_sample, vectors, tmp_path):
    with pytest.raises(ComponentError, match=f"embedding_dim is fixed to 16 but .* holds {DIM}-dimensional"):
        _tune(transformed_sample, tmp_path, vectors["folder"] / "vectors.kv", TINY + ("embedding_dim=16",))
    chosen = _tune(
        transformed_sample,
        tmp_path / "ok",
        vectors["folder"] / "vectors.kv",
        TINY + (f"embedding_dim={DIM}",),
    )
    assert chosen["best_hyperparameters"].properties["values"]["embedding_dim"] == DIM


def _embedding(model_dir: Path) -> np.ndarray:
    loaded = keras.saving.load_model(model_dir / "keras" / "model.keras")
    return loaded.get_layer("embedding").get_weights()[0]


def test_frozen_vectors_stay_unchanged_and_serving_needs_no_vectors_file(
    transformed_sample, vectors, tmp_path
):
    path = tmp_path / "vectors.txt"
    path.write_bytes((vectors["folder"] / "vectors.txt").read_bytes())
    chosen = _tune(transformed_sample, tmp_path / "tuner", path)
    assert chosen["best_hyperparameters"].properties["values"]["embedding_dim"] == DIM
    graph = Path(transformed_sample["transform_graph"].uri)
    initial = embeddings.prepare(path, graph, read_model_input(graph), RUNTIME.seed).alignment.matrix
    outputs = trainer.run({**transformed_sample, **chosen}, tmp_path / "trainer", TrainerConfig(
        epochs=1, pretrained_embeddings=str(path), embeddings_trainable=False), RUNTIME)

    model_dir = Path(outputs["model"].uri)
    trained = _embedding(model_dir)
    np.testing.assert_array_equal(trained, initial)  # frozen: bit for bit the aligned vectors
    properties = outputs["model"].properties
    assert properties["embeddings_fingerprint"] == embeddings.file_fingerprint(path)
    assert properties["embeddings_frozen_epochs"] == 1 and properties["embeddings_dim"] == DIM
    assert 0 < properties["embeddings_token_coverage"] < 1
    assert properties["embeddings_low_coverage"] == (properties["embeddings_token_coverage"] < 0.5)
    history = json.loads((Path(outputs["model_run"].uri) / "history.json").read_text())
    assert history["embeddings_token_coverage"] == properties["embeddings_token_coverage"]

    # A fresh TensorFlow-only process, with the vectors file gone, serves and holds the same embedding.
    path.unlink()
    script = ("import sys, numpy as np, tensorflow as tf\n"
              "model = tf.saved_model.load(sys.argv[1])\n"
              "out = model.signatures['serving_default'](text=tf.constant(['Stocks rally as oil falls']))\n"
              "assert out['probabilities'].shape == (1, 4)\n"
              f"tables = [v.numpy() for v in model.variables if v.shape[-1] == {DIM} and len(v.shape) == 2]\n"
              "np.save(sys.argv[2], tables[0])\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gensim', 'keras_tuner')))\n")
    saved = tmp_path / "served_embedding.npy"
    process = subprocess.run([sys.executable, "-c", script, str(model_dir / "serving_model"), str(saved)],
                             capture_output=True, text=True, timeout=300, env=fresh_process_env())
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.strip().splitlines()[-1] == "[]"
    np.testing.assert_array_equal(np.load(saved), initial)


def test_fine_tuned_and_unfrozen_after_epochs(transformed_sample, vectors, tmp_path, monkeypatch):
    path = vectors["folder"] / "vectors.bin"
    chosen = _tune(transformed_sample, tmp_path / "tuner", path)
    graph = Path(transformed_sample["transform_graph"].uri)
    initial = embeddings.prepare(path, graph, read_model_input(graph), RUNTIME.seed).alignment.matrix
    outputs = trainer.run({**transformed_sample, **chosen}, tmp_path / "tuned", TrainerConfig(
        epochs=1, pretrained_embeddings=str(path), embeddings_trainable=True), RUNTIME)
    trained = _embedding(Path(outputs["model"].uri))
    assert outputs["model"].properties["embeddings_frozen_epochs"] == 0
    assert not np.allclose(trained[1:], initial[1:])  # fine-tuned
    np.testing.assert_array_equal(trained[0], initial[0])  # padding ids never reach the loss

    # The embedding's weights at the end of every epoch, read by a callback inside model.fit.
    from library import progress
    at_epoch_end: list[np.ndarray] = []

    class RecordingProgress(progress.EpochProgress):
        def on_epoch_end(self, epoch, logs=None):
            at_epoch_end.append(np.array(self.model.get_layer("embedding").get_weights()[0]))
            super().on_epoch_end(epoch, logs)

    monkeypatch.setattr(progress, "EpochProgress", RecordingProgress)  # the trainer imports it when it trains
    log: list[str] = []
    outputs = trainer.run({**transformed_sample, **chosen}, tmp_path / "after", TrainerConfig(
        epochs=2, early_stopping_patience=5, pretrained_embeddings=str(path),
        embeddings_trainable="after_epochs 1"), Runtime(seed=RUNTIME.seed, log=log.append))
    # Frozen for the first epoch: bit for bit the aligned vectors; fine-tuned in the second.
    assert len(at_epoch_end) == 2
    np.testing.assert_array_equal(at_epoch_end[0], initial)
    assert not np.allclose(at_epoch_end[1][1:], initial[1:])
    history = json.loads((Path(outputs["model_run"].uri) / "history.json").read_text())
    assert history["epochs_trained"] == 2 and [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert outputs["model"].properties["embeddings_frozen_epochs"] == 1
    assert "trainer: embedding unfrozen after 1 epoch(s)" in log
    # The fine-tuning epoch lowered val_loss, so its weights were kept: the vectors moved in epoch 2.
    assert history["epochs"][1]["val_loss"] < history["epochs"][0]["val_loss"], history["epochs"]
    unfrozen = _embedding(Path(outputs["model"].uri))
    assert not np.allclose(unfrozen[1:], initial[1:])
    np.testing.assert_array_equal(unfrozen[0], initial[0])


def test_tuner_searches_trainable_and_embedding_dropout(transformed_sample, vectors, tmp_path):
    outputs = tuner.run(transformed_sample, tmp_path, TunerConfig(
        architecture="rnn", algorithm="random", max_trials=2, max_epochs=1,
        fixed_hyperparameters=("units=8", "num_layers=1", "batch_size=128", "bidirectional=false"),
        pretrained_embeddings=str(vectors["folder"] / "vectors.kv")), RUNTIME)
    values = outputs["best_hyperparameters"].properties["values"]
    assert values["embedding_dim"] == DIM
    assert isinstance(values["embedding_trainable"], bool) and 0.0 <= values["embedding_dropout"] <= 0.5
    header = (tmp_path / "best_hyperparameters" / "trials.csv").read_text().splitlines()[0].split(",")
    assert {"embedding_trainable", "embedding_dropout"} <= set(header)
    assert outputs["best_hyperparameters"].properties[
        "embeddings_fingerprint"
    ] == embeddings.file_fingerprint(vectors["folder"] / "vectors.kv")


def test_the_dag_names_the_step_whose_settings_built_the_vocabulary():
    # `embeddings` tokenizes with the configuration section of the step that makes headlines.VOCABULARY.
    from pipeline import dag, headlines
    step_name, _, output = headlines.VOCABULARY.partition(".")
    step = dag.step_named(step_name)
    assert output in step.spec.outputs
    assert {"text_features", "max_length"} <= set(load_config().to_dict()[step.spec.config_section])


def test_word2vec_command_on_the_committed_sample(sample_dir, transformed_sample, tmp_path, capsys):
    root = tmp_path / "root"
    assert (
        cli_main(["run", "--data", f"csv:{sample_dir}", "--until", "ingest", "--pipeline-root", str(root)])
        == 0
    )
    run_id = next((root / "runs").iterdir()).name
    out = tmp_path / "out" / "w2v.kv"
    arguments = ["embeddings", "--from-run", run_id, "--pipeline-root", str(root), "--dim", "16",
                 "--word2vec-epochs", "2"]
    assert cli_main(arguments + ["--out", str(out)]) == 0
    assert "use it with --pretrained-embeddings" in capsys.readouterr().out
    keyed = embeddings.load_vectors(out)
    assert keyed.vector_size == 16 and len(keyed.index_to_key) > 1000
    # Words are the transform's tokens: lowercase letters and digits, no HTML entity leftovers.
    assert all(word == word.lower() and word.isalnum() for word in keyed.index_to_key)
    assert "quot" not in keyed.key_to_index and "39" not in keyed.key_to_index
    graph = Path(transformed_sample["transform_graph"].uri)  # the same sample's vocabulary
    alignment = embeddings.prepare(out, graph, read_model_input(graph), 0).alignment
    assert alignment.vocab_coverage > 0.5
    # Reproducible: the same run and seed give the same vectors, in another format too.
    again = tmp_path / "out" / "w2v.txt"
    assert cli_main(arguments + ["--out", str(again)]) == 0
    np.testing.assert_allclose(embeddings.load_vectors(again)["market"], keyed["market"], atol=1e-5)

    assert (
        cli_main(["embeddings", "--from-run", "no-such-run", "--out", str(out), "--pipeline-root", str(root)])
        == 1
    )
    assert cli_main(arguments + ["--out", str(tmp_path / "w.npy")]) == 2
    assert cli_main(arguments + ["--out", str(out), "--min-count", "100000"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "no run 'no-such-run'" in errors[0] and "--out must end" in errors[1]
    assert "min_count" in errors[2]


@pytest.mark.e2e
def test_pipeline_with_vectors_reports_coverage_and_reruns_when_the_file_changes(
    sample_dir, tmp_path, capsys
):
    """The CLI end to end: coverage and fingerprint in the log, report.md and `show`; an unchanged file reuses
    tuner and trainer, a changed file at the same path retrains them."""
    import collections
    import re

    words = collections.Counter(re.findall(r"[a-z]+", (sample_dir / "train.csv").read_text().lower()))
    keyed = gensim_models.KeyedVectors(vector_size=DIM)
    common = [word for word, _ in words.most_common(300)]
    keyed.add_vectors(common, np.random.default_rng(1).normal(size=(len(common), DIM)).astype(np.float32))
    path = tmp_path / "common.vec"
    keyed.save_word2vec_format(str(path))
    root = tmp_path / "root"
    arguments = ["run", "--data", f"csv:{sample_dir}", "--pipeline-root", str(root), "--until", "trainer",
                 "--no-tune", "--epochs", "1", "--pretrained-embeddings", str(path),
                 "--set", "tuner.fixed_hyperparameters=[units=8, batch_size=128]",
                 "--set", "transform.vocab_size=2000", "--set", "transform.max_length=32",
                 "--set", "transform.bucket_boundaries=[16, 32]",
                 "--set", "trainer.min_embedding_coverage=0.99"]  # 300 words cannot reach it: a warning
    assert cli_main(arguments) == 0
    out = capsys.readouterr().out
    fingerprint = embeddings.file_fingerprint(path)
    assert "WARNING: the vectors cover only" in out and f"fingerprint {fingerprint[:12]}" in out
    run_id = sorted((root / "runs").iterdir())[-1].name
    report = (root / "runs" / run_id / "report.md").read_text()
    assert "WARNING: embeddings" in report and fingerprint[:12] in report and "of train tokens" in report
    assert cli_main(["show", "--pipeline-root", str(root)]) == 0
    shown = capsys.readouterr().out
    assert f"pretrained embeddings {path}" in shown and fingerprint[:12] in shown and "LOW COVERAGE" in shown

    assert cli_main(arguments) == 0
    out = capsys.readouterr().out
    assert re.search(r"tuner\s+cached", out) and re.search(r"trainer\s+cached", out)
    path.write_text(path.read_text().replace(common[0] + " ", common[0] + "x ", 1))  # same path, new content
    assert cli_main(arguments) == 0
    out = capsys.readouterr().out
    assert re.search(r"transform\s+cached", out) and re.search(r"tuner\s+done", out)
    assert re.search(r"trainer\s+done", out)
