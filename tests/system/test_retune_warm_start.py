"""Re-tuning on a schedule (tuner.retune) and warm start (trainer.warm_start), through the real
`agnews-pipeline` command on the committed sample: one pipeline root that sees its data grow, as a weekly job
would.

Every run fixes the learning rate at 1e-6 (one search still runs over the other hyperparameters), so one epoch
of training barely moves a weight: the weights a warm start carried over are still the base model's to 1e-4
after training, and can be checked token by token on the saved models.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from support.cli import agnews_in_process
from support.paths import E2E_CONFIG as CONFIG
from support.paths import SAMPLE_DIR

from contract.artifacts import Artifact
from contract.config import TunerConfig
from library import layouts
from library.warm_start import read_vocabulary

pytestmark = pytest.mark.e2e

# The tiny model of support.streams (a 16-unit SimpleRNN): what is observed is weights, caches and decisions,
# never accuracy.
FLAGS = ("--config", str(CONFIG), "--tuning-trials", "1", "--epochs", "1", "--min-accuracy", "0",
         "--set", "tuner.architecture=rnn",
         "--set", "tuner.fixed_hyperparameters=[learning_rate=0.000001, embedding_dim=16, units=16]",
         # distinct patiences, to see which one a run's early stopping was given
         "--set", "trainer.early_stopping_patience=3", "--set", "trainer.warm_start_patience=0")
CARRIED = 1e-4  # how far one epoch at learning rate 1e-6 may move a weight
# Later runs train with another seed than the first: their own initial weights differ from the first model's,
# so a weight equal to the first model's was carried over, not drawn alike.
LATER = ("--set", "pipeline.seed=43")


def _data(folder: Path, rows: slice) -> Path:
    """A data folder holding a slice of the sample's train rows (one per line) and its test set."""
    folder.mkdir(parents=True)
    lines = (SAMPLE_DIR / "train.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "train.csv").write_text("".join(lines[rows]), encoding="utf-8")
    (folder / "test.csv").write_text((SAMPLE_DIR / "test.csv").read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def _pipeline(command: str, root: Path, data: Path, *extra: str, check_code: int | None = 0):
    # In this process (no TensorFlow import per run): nothing here needs a process of its own.
    completed = agnews_in_process(command, *FLAGS, "--data", f"csv:{data}", "--pipeline-root", str(root),
                                  *extra, check_code=check_code)
    run_id = next(
        line.split()[1].rstrip(":") for line in completed.stdout.splitlines() if line.startswith("run ")
    )
    return completed, run_id


def _step_line(stdout: str, step: str) -> str:
    """The runner's last line about `step` ("[4/7] tuner      done in ..." or "... cached (...)")."""
    return [line for line in stdout.splitlines() if line.startswith("[") and f"] {step} " in line][-1]


def _outputs(root: Path, run_id: str) -> dict[str, dict]:
    details = json.loads(agnews_in_process("show", run_id, "--json", "--pipeline-root", str(root)).stdout)
    return {name: output for step in details["steps"] for name, output in step["outputs"].items()}


def _model(root: Path, run_id: str):
    """(Keras model, its vocabulary) of a run's trainer (wherever the store says its artifacts are)."""
    import keras
    outputs = _outputs(root, run_id)
    model = keras.saving.load_model(layouts.keras_model_file(outputs["model"]["uri"]), compile=False)
    graph = outputs["transform_graph"]["uri"]
    return model, read_vocabulary(layouts.vocabulary_file(graph, layouts.read_model_input(graph)))


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A first run on 900 train rows, then a retrain after the data grew to all 1,200."""
    base = tmp_path_factory.mktemp("retune")
    root = base / "root"
    first_data, grown_data = _data(base / "first", slice(0, 900)), _data(base / "grown", slice(0, 1200))
    first, first_id = _pipeline("run", root, first_data)
    # Not blessed is a normal retrain outcome (exit 4): the warm-started model may score below the first.
    second, second_id = _pipeline("retrain", root, grown_data, *LATER, check_code=None)
    assert second.returncode in (0, 4), second.stdout[-4000:] + second.stderr[-4000:]
    return {"base": base, "root": root, "first": first, "first_id": first_id, "second": second,
            "second_id": second_id, "grown_data": grown_data}


def test_the_first_run_of_a_root_searches_and_trains_from_scratch(grown):
    out = grown["first"].stdout
    assert "tuner: searching: no earlier search in this root for this architecture and search space" in out
    hyperparameters = _outputs(grown["root"], grown["first_id"])["best_hyperparameters"]["properties"]
    assert hyperparameters["reused"] is False and hyperparameters["tuned_from"] == grown["first_id"]
    assert "warm_start=none (no blessed model yet)" in out


def test_a_retrain_on_grown_data_reuses_the_search_and_says_so(grown):
    root, first_id, second_id = grown["root"], grown["first_id"], grown["second_id"]
    out = grown["second"].stdout
    assert f"tuner: reusing the hyperparameters tuned in run {first_id}" in out
    assert "done in" in _step_line(out, "tuner")  # new data: the step ran, it just searched nothing
    first = _outputs(root, first_id)["best_hyperparameters"]
    reused = _outputs(root, second_id)["best_hyperparameters"]
    assert reused["properties"]["reused"] is True and reused["properties"]["tuned_from"] == first_id
    assert reused["properties"]["values"] == first["properties"]["values"]
    assert reused["properties"]["trials"] == 0
    assert layouts.read_best_hyperparameters(reused["uri"])["reused"] is True
    shown = agnews_in_process("show", second_id, "--pipeline-root", str(root)).stdout
    assert f"reused=True, tuned_from={first_id}" in shown
    assert f"reused=True, tuned_from={first_id}" in (root / "runs" / second_id / "report.md").read_text()


def test_the_warm_start_carries_embedding_rows_by_token(grown):
    root, first_id, second_id = grown["root"], grown["first_id"], grown["second_id"]
    assert f"trainer: warm start from runs/{first_id}/trainer/model: " in grown["second"].stdout
    old, old_tokens = _model(root, first_id)
    new, new_tokens = _model(root, second_id)
    old_rows, new_rows = (np.asarray(m.get_layer("embedding").get_weights()[0]) for m in (old, new))
    old_ids = {token: index + 1 for index, token in enumerate(old_tokens)}
    moved = [(token, old_ids[token], index + 1) for index, token in enumerate(new_tokens)
             if token in old_ids and old_ids[token] != index + 1]
    fresh = [index + 1 for index, token in enumerate(new_tokens) if token not in old_ids]
    assert len(moved) > 100 and len(fresh) > 100  # the grown data's vocabulary shifted ids and gained tokens
    for token, old_id, new_id in moved:
        np.testing.assert_allclose(new_rows[new_id], old_rows[old_id], atol=CARRIED, err_msg=str(token))
    # By position, a moved token's row would be the old row of whatever token had its new id.
    by_position = sum(np.allclose(new_rows[new_id], old_rows[new_id], atol=CARRIED) for _, _, new_id in moved)
    assert by_position == 0
    # New tokens start from the old model's out-of-vocabulary row (one bucket: what it read them as), not from
    # random rows nor the old row of their position.
    oov_row = old_rows[len(old_tokens) + 1]
    for new_id in fresh:
        np.testing.assert_allclose(
            new_rows[new_id], oov_row, atol=CARRIED, err_msg=str(new_tokens[new_id - 1])
        )
    for layer in new.layers:  # every other layer starts from the base model's weights too
        if layer.get_weights() and layer.name != "embedding":
            for now, before in zip(layer.get_weights(), old.get_layer(layer.name).get_weights()):
                np.testing.assert_allclose(now, before, atol=CARRIED, err_msg=layer.name)
    model = _outputs(root, second_id)["model"]["properties"]
    assert model["warm_start_from"] == f"runs/{first_id}/trainer/model"
    assert model["warm_start_rows_carried"] == len(new_tokens) - len(fresh)
    assert model["warm_start_rows_new"] == len(fresh)


def test_a_warm_started_run_stops_early_with_its_own_patience(grown):
    root, first_id, second_id = grown["root"], grown["first_id"], grown["second_id"]
    assert "(early stopping patience 3); an ETA follows each epoch" in grown["first"].stdout
    assert "(early stopping patience 0, warm start); an ETA follows each epoch" in grown["second"].stdout
    patience = {
        run_id: layouts.read_history(_outputs(root, run_id)["model_run"]["uri"])["early_stopping_patience"]
        for run_id in (first_id, second_id)
    }
    assert patience == {first_id: 3, second_id: 0}


def test_a_warm_started_run_ends_after_its_own_patience_where_a_fresh_run_goes_on(tmp_path, monkeypatch):
    """The patience, observed in the epochs Keras ran: the eval labels contradict the train split, so every
    epoch of training makes val_loss worse and only the patience decides how long a run goes on. A fresh run
    (early_stopping_patience 3) trains past its best epoch; the same run warm-started from it
    (warm_start_patience 0) ends one epoch after its first."""
    from support.datasets import shift_eval_labels, write_transformed_examples

    from components.trainer import executor as trainer
    from contract.config import TrainerConfig
    from library import progress

    graph, examples, _ = write_transformed_examples(tmp_path / "data", {"train": 300, "eval": 60, "test": 10})
    shift_eval_labels(examples.uri)
    spec = layouts.read_model_input(graph.uri)
    vocabulary = layouts.vocabulary_file(graph.uri, spec)  # the warm start carries embedding rows by token
    vocabulary.parent.mkdir(parents=True)
    vocabulary.write_text("".join(f"token{i}\n" for i in range(1, spec.vocab_size + 1)))
    epochs_run: list[int] = []

    class CountingProgress(progress.EpochProgress):  # a callback inside model.fit: the epochs that ran
        def on_train_begin(self, logs=None):
            epochs_run.append(0)
            super().on_train_begin(logs)

        def on_epoch_end(self, epoch, logs=None):
            epochs_run[-1] += 1
            super().on_epoch_end(epoch, logs)

    monkeypatch.setattr(progress, "EpochProgress", CountingProgress)  # the trainer imports it when it trains
    chosen = {"architecture": "rnn",
              "values": {"embedding_dim": 8, "units": 8, "learning_rate": 0.02, "batch_size": 16}}
    config = TrainerConfig(epochs=6, early_stopping_patience=3, warm_start_patience=0)

    def train(out: Path, base: Path | None = None) -> None:
        trainer.train(Path(examples.uri), Path(graph.uri), chosen, out, config, 7, lambda message: None,
                      trainer._strategy(config.strategy), base)

    train(tmp_path / "fresh")
    base = tmp_path / "fresh" / "model"
    exported_vocabulary = layouts.model_vocabulary_file(base, spec)  # where the serving export puts it
    exported_vocabulary.parent.mkdir(parents=True)
    exported_vocabulary.write_bytes(vocabulary.read_bytes())
    train(tmp_path / "warm", base)
    assert epochs_run[0] > 2 and epochs_run[1] == 2, epochs_run


def test_an_unchanged_retrain_stays_cached(grown):
    completed, _ = _pipeline(
        "retrain", grown["root"], grown["grown_data"], *LATER, "--force", check_code=None
    )
    assert completed.stdout.count(" cached (") == 7, completed.stdout


def test_from_scratch_trains_from_fresh_weights(grown):
    root, first_id = grown["root"], grown["first_id"]
    completed, run_id = _pipeline(
        "run", root, grown["grown_data"], *LATER, "--from-scratch", "--until", "trainer"
    )
    assert "cached (" in _step_line(completed.stdout, "tuner")  # the same decision: reuse, from the cache
    assert "done in" in _step_line(completed.stdout, "trainer")
    assert "warm_start=off (trainer.warm_start is false)" in completed.stdout
    assert "trainer: warm start" not in completed.stdout
    old, old_tokens = _model(root, first_id)
    new, new_tokens = _model(root, run_id)
    old_rows, new_rows = (np.asarray(m.get_layer("embedding").get_weights()[0]) for m in (old, new))
    old_ids = {token: index + 1 for index, token in enumerate(old_tokens)}
    shared = [(old_ids[token], index + 1) for index, token in enumerate(new_tokens) if token in old_ids]
    assert not any(np.allclose(new_rows[new_id], old_rows[old_id], atol=CARRIED) for old_id, new_id in shared)


def test_retune_flag_forces_a_search(grown):
    completed, run_id = _pipeline("run", grown["root"], grown["grown_data"], "--retune", "--until", "tuner")
    assert "tuner: searching: tuner.retune is always" in completed.stdout
    assert "done in" in _step_line(completed.stdout, "tuner")
    hyperparameters = _outputs(grown["root"], run_id)["best_hyperparameters"]["properties"]
    assert hyperparameters["reused"] is False and hyperparameters["tuned_from"] == run_id


@pytest.mark.parametrize("change", [
    # another space
    ("--set", "tuner.fixed_hyperparameters=[learning_rate=0.000001,embedding_dim=16,units=32]"),
    ("--model", "gru"),  # another architecture
], ids=["search_space", "architecture"])
def test_a_changed_search_space_or_architecture_forces_a_search(grown, change):
    completed, _ = _pipeline("run", grown["root"], grown["grown_data"], *change, "--until", "tuner")
    assert ("tuner: searching: no earlier search in this root for this architecture and search space"
            in completed.stdout), completed.stdout


def test_drift_found_by_validate_forces_a_search(grown):
    """validate's `statistics` artifact carries `drift_detected` (true when validate's drift checks fail): the
    property is set here in the store on the real statistics artifact of a run, which the next run reuses from
    the cache, as a drifted span's validation would leave it."""
    from pipeline.metadata import MetadataStore
    root = grown["root"]
    data = _data(grown["base"] / "later", slice(300, 1200))
    completed, run_id = _pipeline("run", root, data, "--until", "tuner")
    assert "tuner: reusing the hyperparameters tuned in run" in completed.stdout  # no drift verdict: reuse

    store = MetadataStore(root / "metadata.sqlite")
    validate = next(e for e in store.executions(run_id) if e["step"] == "validate")
    statistics = store.artifacts_of(validate["id"], "output")["statistics"]
    with store._transaction() as db:
        db.execute("UPDATE artifacts SET properties_json = ? WHERE id = ?",
                   (json.dumps({**statistics.properties, "drift_detected": True}), statistics.id))
    store.close()
    completed, run_id = _pipeline("run", root, data, "--until", "tuner")
    assert "cached (" in _step_line(completed.stdout, "validate")
    assert "tuner: searching: the validate step detected drift" in completed.stdout
    assert "done in" in _step_line(completed.stdout, "tuner")  # the decision changed, so did the cache key


def _tuned(properties: dict) -> dict[str, Artifact]:
    config = TunerConfig()
    from components.tuner import spec as tuner_spec
    return {tuner_spec.TUNED_INPUT: Artifact("best_hyperparameters", Path("."), {
        "search_fingerprint": tuner_spec.search_fingerprint(config), "tuned_from": "r1", **properties})}


def test_every_n_retrains_and_every_duration_decide_by_count_and_age():
    # Whether a run re-tunes is answered in one place: the tuner spec's retune_decision.
    from components.tuner import spec as tuner
    tuner_spec = tuner
    now = time.time()
    by_count = TunerConfig(retune="every 3 retrains")
    assert not tuner.retune_decision(_tuned({"runs_since_search": 0, "tuned_at": now}), by_count).search
    assert not tuner.retune_decision(_tuned({"runs_since_search": 1, "tuned_at": now}), by_count).search
    third = tuner.retune_decision(_tuned({"runs_since_search": 2, "tuned_at": now}), by_count)
    assert third.search and third.reason == "every" and "reused by 2 run(s)" in third.detail
    by_age = TunerConfig(retune="every 30d")
    young = _tuned({"runs_since_search": 9, "tuned_at": now - 29 * 86400})
    old = _tuned({"runs_since_search": 0, "tuned_at": now - 31 * 86400})
    assert not tuner.retune_decision(young, by_age, now=now).search
    assert tuner.retune_decision(old, by_age, now=now).search
    # What the cache key holds changes with the decision, not with the passing time.
    assert tuner.decision_facts(young, by_age) != tuner.decision_facts(old, by_age)
    on_drift = TunerConfig(retune="on_drift")
    assert not tuner.retune_decision(old, on_drift, now=now).search
    other_search = _tuned({"tuned_at": now})
    other_search[tuner_spec.TUNED_INPUT].properties["search_fingerprint"] = "another"
    assert tuner.retune_decision(other_search, on_drift).reason == "first"


def test_a_bad_retune_value_is_one_line_and_exit_2(tmp_path):
    completed = agnews_in_process(
        "run", "--pipeline-root", tmp_path / "root", "--set", "tuner.retune=sometimes", check_code=2
    )
    assert completed.stderr.strip().startswith("configuration error: tuner.retune must be always, on_drift")
    assert len(completed.stderr.strip().splitlines()) == 1 and not (tmp_path / "root").exists()


def test_a_changed_max_length_turns_warm_start_off(grown):
    completed, run_id = _pipeline("run", grown["root"], grown["grown_data"], *LATER, "--set",
                                  "transform.max_length=32", "--until", "trainer")
    # The same hyperparameters (reused: another transform is no reason to search): only the input changed.
    assert "tuner: reusing the hyperparameters tuned in run" in completed.stdout
    lines = [
        line for line in completed.stdout.splitlines() if line.startswith("trainer: no warm start from ")
    ]
    assert len(lines) == 1 and lines[0].endswith(
        ": its max_length is 64, not 32 (transform.max_length); training from scratch"), completed.stdout
    model = _outputs(grown["root"], run_id)["model"]["properties"]
    assert "warm_start_from" not in model and "max_length is 64, not 32" in model["warm_start"]
