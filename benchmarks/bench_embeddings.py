"""Does starting the embedding from Word2Vec vectors help the default bilstm on the shared AG News rows? Test
accuracy over seeds for: no pretrained vectors; Word2Vec vectors trained (`agnews-pipeline embeddings`' code)
on the train split's own text, frozen and fine-tuned; and a TF-IDF (word 1-2 grams) + logistic regression
baseline on the same rows.

    CUDA_VISIBLE_DEVICES=-1 python benchmarks/bench_embeddings.py --data ../shared/data/ag_news

ingest -> validate -> transform run once (pipeline.runner.Runner, one pipeline root); then per seed the
Word2Vec vectors are trained on the train split's text (seeded by the same seed) and tuner (--no-tune: the
default bilstm hyperparameters) -> trainer run per variant. Test accuracy is Keras' accuracy of the trainer's
saved model on the transform's test split (every test.csv row), as in bench_models.py. The baseline reads the
same ingested train/eval/test rows (title + description); its C is chosen on the eval rows, it is fit on the
train rows only (the rows the networks train on) and it is deterministic, so it has no seed spread.

Writes benchmarks/results/embeddings.json and embeddings.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import harness  # benchmarks/ is on sys.path when a script here runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from contract.config_loading import build_config
from library import embeddings
from library.dataset import bucketed_batches, token_id_counts
from library.layouts import SPLITS, examples_files, keras_model_file, read_model_input

RESULTS_DIR = Path(__file__).parent / "results"
TEST_BATCH_SIZE = 256
VARIANTS = {  # name -> trainer settings
    "no pretrained vectors": {},
    "Word2Vec (train split), frozen": {"embeddings_trainable": False},
    "Word2Vec (train split), fine-tuned": {"embeddings_trainable": True},
}


def pipeline_config(args, seed: int, trainer: dict | None = None):
    return build_config({
        "pipeline": {"root": str(args.root), "seed": seed},
        "ingest": {"data": f"csv:{args.data.resolve()}"},
        "tuner": {"architecture": "bilstm", "enabled": False},
        "trainer": {"epochs": args.epochs, "early_stopping_patience": args.patience, **(trainer or {})},
    })


def test_accuracy(model_dir: Path, examples_dir: Path) -> float:
    model = keras.saving.load_model(keras_model_file(model_dir))
    _, accuracy = model.evaluate(
        bucketed_batches(examples_dir, "test", TEST_BATCH_SIZE, shuffle=False).dataset, verbose=0
    )
    return float(accuracy)


def raw_texts(examples_dir: Path, split: str) -> tuple[list[str], list[int]]:
    """title + " " + description and the label of every ingested example of a split."""
    features = {
        "title": tf.io.FixedLenFeature([], tf.string),
        "description": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }
    files = examples_files(examples_dir, split)
    texts, labels = [], []
    for example in tf.data.TFRecordDataset(files, compression_type="GZIP").map(
            lambda s: tf.io.parse_single_example(s, features)).as_numpy_iterator():
        texts.append(example["title"].decode() + " " + example["description"].decode())
        labels.append(int(example["label"]))
    return texts, labels


def tfidf_baseline(examples_dir: Path) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    (train_x, train_y), (eval_x, eval_y), (test_x, test_y) = (raw_texts(examples_dir, s) for s in SPLITS)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
    train_m = vectorizer.fit_transform(train_x)
    eval_scores = {}
    for regularization in (1.0, 3.0, 10.0, 30.0):
        model = LogisticRegression(C=regularization, max_iter=2000).fit(train_m, train_y)
        eval_scores[regularization] = float(model.score(vectorizer.transform(eval_x), eval_y))
    best_c = max(eval_scores, key=lambda c: (eval_scores[c], -c))  # ties: the stronger regularization
    model = LogisticRegression(C=best_c, max_iter=2000).fit(train_m, train_y)
    return {"test_accuracy": float(model.score(vectorizer.transform(test_x), test_y)), "C": best_c,
            "eval_accuracy_per_C": eval_scores, "train_rows": len(train_x), "test_rows": len(test_x),
            "features": int(train_m.shape[1])}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News train.csv and test.csv")
    parser.add_argument("--root", type=Path, help="pipeline root (default: a new temporary folder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--w2v-dim", type=int, default=128, help="128 = the default bilstm's embedding_dim")
    parser.add_argument("--w2v-epochs", type=int, default=10)
    parser.add_argument("--w2v-min-count", type=int, default=2)
    args = parser.parse_args()
    args.root = (args.root or Path(tempfile.mkdtemp(prefix="agnews-bench-embeddings-"))).resolve()
    started = time.perf_counter()
    date = time.strftime("%Y-%m-%d %H:%M")
    machine = harness.machine("TensorFlow CPU, 2 cores shared with other agents' jobs: timings are noisy")

    prepared = harness.run_pipeline(pipeline_config(args, args.seeds[0]), until="transform")
    examples_dir = Path(prepared.artifact("transform", "transformed_examples").uri)
    graph_dir = Path(prepared.artifact("transform", "transform_graph").uri)
    ingested = Path(prepared.artifact("ingest", "examples").uri)
    model_input = read_model_input(graph_dir)
    prepare_seconds = time.perf_counter() - started

    # How many test tokens the train-only vocabulary cannot represent at all: no vectors file changes these.
    test_counts = token_id_counts(examples_dir, "test", model_input.embedding_input_dim)
    test_oov_share = float(test_counts[model_input.vocab_size + 1:].sum() / test_counts.sum())
    print(f"test tokens outside the train vocabulary: {test_oov_share:.2%}", flush=True)

    baseline_started = time.perf_counter()
    baseline = tfidf_baseline(ingested)
    baseline["seconds"] = time.perf_counter() - baseline_started
    print(f"== TF-IDF + logistic regression: test accuracy {baseline['test_accuracy']:.4f}", flush=True)

    sentences = embeddings.tokenized_split(
        ingested, "train", model_input.text_features, model_input.max_length
    )
    runs = []
    for seed in args.seeds:
        w2v_started = time.perf_counter()
        vectors = embeddings.train_word2vec(sentences, dimension=args.w2v_dim, min_count=args.w2v_min_count,
                                            epochs=args.w2v_epochs, seed=seed)
        vectors_path = args.root / "vectors" / f"w2v_train_seed{seed}.kv"
        embeddings.save_vectors(vectors, vectors_path)
        w2v_seconds = time.perf_counter() - w2v_started
        for name, trainer in VARIANTS.items():
            if trainer:
                trainer = {**trainer, "pretrained_embeddings": str(vectors_path)}
            run_started = time.perf_counter()
            result = harness.run_pipeline(pipeline_config(args, seed, trainer), until="trainer",
                                          rerun=("tuner", "trainer"))
            model = result.artifact("trainer", "model")
            row = {
                "variant": name,
                "seed": seed,
                "run_id": result.run_id,
                "test_accuracy": test_accuracy(Path(model.uri), examples_dir),
                "val_accuracy": model.properties["val_accuracy"],
                "epochs_trained": model.properties["epochs_trained"],
                "best_epoch": model.properties["best_epoch"],
                "seconds": time.perf_counter() - run_started,
                **{k: v for k, v in model.properties.items() if k.startswith("embeddings_")},
            }
            if trainer:
                row["word2vec_seconds"] = w2v_seconds
                row["word2vec_words"] = len(vectors.index_to_key)
            runs.append(row)
            print(f"== {name} seed {seed}: test accuracy {row['test_accuracy']:.4f} ({row['seconds']:.0f}s)",
                  flush=True)

    summary = []
    for name in VARIANTS:
        rows = [r for r in runs if r["variant"] == name]
        accuracies = [r["test_accuracy"] for r in rows]
        summary.append({"variant": name, "test_accuracy_per_seed": accuracies,
                        "test_accuracy_mean": statistics.mean(accuracies),
                        "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
                        "epochs_trained_per_seed": [r["epochs_trained"] for r in rows],
                        "best_epoch_per_seed": [r["best_epoch"] for r in rows],
                        "mean_seconds": statistics.mean(r["seconds"] for r in rows),
                        "vocab_coverage": rows[0].get("embeddings_vocab_coverage"),
                        "token_coverage": rows[0].get("embeddings_token_coverage")})
    report = {
        "date": date, "command": harness.command_line(), "machine": machine, "root": str(args.root),
        "data": {"source": str(args.data), "rows": prepared.artifact("ingest", "examples").properties,
                 "vocab_size": model_input.vocab_size, "test_tokens_outside_vocabulary": test_oov_share},
        "budget": {"architecture": "bilstm (default hyperparameters, --no-tune)", "epochs": args.epochs,
                   "patience": args.patience, "word2vec": {"dim": args.w2v_dim, "epochs": args.w2v_epochs,
                                                            "min_count": args.w2v_min_count, "sg": 1,
                                                            "window": 5}},
        "seeds": args.seeds, "summary": summary, "runs": runs, "tfidf_logistic_regression": baseline,
        "prepare_seconds": prepare_seconds, "wall_seconds": time.perf_counter() - started,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    harness.write_results(RESULTS_DIR / "embeddings.json", report, markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    data, budget, base = report["data"], report["budget"], report["tfidf_logistic_regression"]
    rows = data["rows"]
    w2v = budget["word2vec"]
    lines = [
        f"# Pretrained embeddings benchmark ({report['date']})",
        "",
        *harness.provenance(report),
        f"Wall time: {report['wall_seconds'] / 60:.1f} min (ingest+validate+transform "
        f"{report['prepare_seconds']:.0f}s)",
        "",
        f"Data: {data['source']}: train {rows.get('train_rows')} + eval {rows.get('eval_rows')} rows "
        "(train.csv), "
        f"test {rows.get('test_rows')} rows (test.csv, all scored). Vocabulary {data['vocab_size']} "
        "tokens built on "
        f"the train split; {data['test_tokens_outside_vocabulary']:.1%} of the test split's tokens "
        "fall outside it "
        "(OOV bucket), whatever vectors the embedding starts from.",
        "",
        f"Model: {budget['architecture']}, at most {budget['epochs']} epochs, early stopping on eval "
        "val_loss "
        f"(patience {budget['patience']}, best weights kept). Word2Vec: skip-gram, {w2v['dim']} "
        "dimensions (the "
        f"bilstm's embedding_dim), window {w2v['window']}, min_count {w2v['min_count']}, "
        f"{w2v['epochs']} epochs, "
        "trained per seed on the train split's text after the transform's normalization and tokenization "
        "(what `agnews-pipeline embeddings` does). Seeds: " + ", ".join(map(str, report["seeds"])) + ".",
        "",
        "| model | test accuracy, mean ± sd | per seed | epochs trained (best) per seed | mean seconds "
        "per run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for summary in report["summary"]:
        sd = f" ± {summary['test_accuracy_std']:.4f}" if summary["test_accuracy_std"] is not None else ""
        epochs = ", ".join(f"{e} ({b_})" for e, b_ in zip(summary["epochs_trained_per_seed"],
                                                          summary["best_epoch_per_seed"]))
        lines.append(f"| bilstm, {summary['variant']} | **{summary['test_accuracy_mean']:.4f}**{sd} | "
                     + ", ".join(f"{a:.4f}" for a in summary["test_accuracy_per_seed"])
                     + f" | {epochs} | {summary['mean_seconds']:.0f} |")
    lines.append(f"| TF-IDF (word 1-2 grams) + logistic regression (C={base['C']:g}, chosen on eval) | "
                 f"**{base['test_accuracy']:.4f}** (deterministic) | | | {base['seconds']:.0f} |")
    covered = [s for s in report["summary"] if s["vocab_coverage"] is not None]
    if covered:
        lines += [
            "",
            f"Coverage of the Word2Vec vectors (seed {report['seeds'][0]}): "
            f"{covered[0]['vocab_coverage']:.1%} of vocabulary ids, {covered[0]['token_coverage']:.1%} of "
            "train tokens (words seen fewer than min_count times in the train split get no vector).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
