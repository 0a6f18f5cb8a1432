"""The course notebook's recipe, trained and tested on the same rows as the pipeline, for comparison.

Recipe: `keras.layers.TextVectorization` (default standardization: lowercase, strip punctuation, split on
whitespace; no vocabulary cap) adapted on the first 2,000 training texts, then inside the model
Embedding(vocabulary, 128, mask_zero=True) -> Bidirectional(LSTM(64, return_sequences=True))
-> Bidirectional(LSTM(64)) -> Dense(4, softmax); Adam (learning rate 1e-3), batch size 16, every batch padded
to its longest text, no bucketing and no text cleaning.

Rows: the pipeline's own splits of the CSV files (components.ingest's row parser and its content-hashed eval
split), in file order: the model trains on `train`, early-stops on `eval` (val_loss, patience 2, best weights
restored, at most --epochs epochs: the pipeline trainer's protocol) and is scored on `test` (test.csv).

    python benchmarks/notebook_baseline.py --data ../shared/data/ag_news --text title --text title_description

benchmarks/bench_models.py imports train_and_evaluate() to put these numbers in its table.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # Keras 3; never tf.keras, which tensorflow_transform turns into Keras 2
import numpy as np
import tensorflow as tf

from components.ingest import executor as ingest
from components.ingest import spec as ingest_spec
from library import ag_news_csv
from library.layouts import NUM_CLASSES, SOURCE_SPLITS, SPLITS

ADAPT_TEXTS = 2_000
BATCH_SIZE = 16
EMBEDDING_DIM = 128
LSTM_UNITS = 64
TEXT_CHOICES = ("title", "title_description")


@dataclass(frozen=True)
class Rows:
    texts_title: list[str]
    texts_title_description: list[str]
    labels: np.ndarray  # int64, 0-3

    def texts(self, text: str) -> list[str]:
        return self.texts_title if text == "title" else self.texts_title_description

    def __len__(self) -> int:
        return len(self.labels)


def load_splits(csv_dir: Path, eval_fraction: float = 0.05) -> tuple[dict[str, Rows], int]:
    """{"train", "eval", "test"} rows in file order, split exactly as the ingest component splits them (same
    row parser, same content hash), and the number of bad rows skipped (the ones ingest quarantines)."""
    columns: dict[str, tuple[list, list, list]] = {split: ([], [], []) for split in SPLITS}
    bad_rows = 0
    for source_split in SOURCE_SPLITS:
        with open(Path(csv_dir) / ingest_spec.CSV_FILE_NAMES[source_split], "rb") as handle:
            for number, raw in enumerate(handle):
                try:
                    row = ag_news_csv.parse_csv_row(source_split, raw, first_line=number == 0)
                except ag_news_csv.BadRow:
                    bad_rows += 1
                    continue
                titles, joined, labels = columns[ingest.split_of(row, eval_fraction)]
                titles.append(row.title)
                # joined like the transform's title_description
                joined.append(f"{row.title} {row.description}")
                labels.append(row.label)
    splits = {split: Rows(titles, joined, np.array(labels, np.int64))
              for split, (titles, joined, labels) in columns.items()}
    return splits, bad_rows


def batches(texts: list[str], labels: np.ndarray, *, shuffle: bool, seed: int) -> tf.data.Dataset:
    """The recipe's input: raw texts and labels in batches of 16, each padded (by the model) to its longest
    text."""
    # Each text is a [1] string, the shape TextVectorization maps to one row of token ids.
    dataset = tf.data.Dataset.from_tensor_slices((tf.constant(texts)[:, tf.newaxis], tf.constant(labels)))
    if shuffle:
        dataset = dataset.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)


def build_notebook_model(adapt_texts: list[str]) -> tuple[keras.Model, int]:
    vectorizer = keras.layers.TextVectorization(name="text_vectorization")
    vectorizer.adapt(tf.constant(adapt_texts))
    vocabulary_size = vectorizer.vocabulary_size()
    model = keras.Sequential([
        keras.Input(shape=(1,), dtype="string", name="text"),
        vectorizer,
        keras.layers.Embedding(vocabulary_size, EMBEDDING_DIM, mask_zero=True),
        keras.layers.Bidirectional(keras.layers.LSTM(LSTM_UNITS, return_sequences=True)),
        keras.layers.Bidirectional(keras.layers.LSTM(LSTM_UNITS)),
        keras.layers.Dense(NUM_CLASSES, activation="softmax"),
    ], name="notebook_bilstm")
    model.compile(
        optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model, vocabulary_size


class EpochSeconds(keras.callbacks.Callback):
    """Training seconds of each epoch, first to last training batch (validation excluded)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(self._last - self._start)


def train_and_evaluate(splits: dict[str, Rows], text: str, *, epochs: int = 8, patience: int = 2,
                       seed: int = 42, log=print) -> dict:
    """Trains the notebook model on splits["train"] texts of kind `text`, early-stopping on splits["eval"],
    and returns its accuracy and loss on splits["test"] with how it got there."""
    if text not in TEXT_CHOICES:
        raise ValueError(f"text must be one of {TEXT_CHOICES}, got {text!r}")
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    train, evaluation, test = splits["train"], splits["eval"], splits["test"]
    model, vocabulary_size = build_notebook_model(train.texts(text)[:ADAPT_TEXTS])
    timer = EpochSeconds()
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )
    history = model.fit(
        batches(train.texts(text), train.labels, shuffle=True, seed=seed),
        validation_data=batches(evaluation.texts(text), evaluation.labels, shuffle=False, seed=seed),
        epochs=epochs,
        callbacks=[early_stopping, timer],
        verbose=2,
    )
    test_loss, test_accuracy = model.evaluate(
        batches(test.texts(text), test.labels, shuffle=False, seed=seed), verbose=0
    )
    val_losses = history.history["val_loss"]
    best_epoch = int(np.argmin(val_losses)) + 1
    result = {
        "model": f"notebook bilstm ({text})",
        "text": text,
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "val_accuracy": float(history.history["val_accuracy"][best_epoch - 1]),
        "epochs_trained": len(val_losses),
        "best_epoch": best_epoch,
        "vocabulary_size": int(vocabulary_size),
        "adapt_texts": min(ADAPT_TEXTS, len(train)),
        "batch_size": BATCH_SIZE,
        "parameters": int(model.count_params()),
        "train_rows": len(train),
        "eval_rows": len(evaluation),
        "test_rows": len(test),
        "train_examples_per_second": [len(train) / s for s in timer.seconds],
        "seconds": time.perf_counter() - started,
    }
    log(f"notebook recipe ({text}): test accuracy {test_accuracy:.4f} after {len(val_losses)} epoch(s) "
        f"(best {best_epoch}), vocabulary {vocabulary_size}, {result['seconds']:.0f}s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with AG News train.csv and test.csv")
    parser.add_argument("--text", action="append", choices=TEXT_CHOICES,
                        help="text the model reads; repeatable (default: both)")
    parser.add_argument("--epochs", type=int, default=8, help="at most this many epochs (early stopping)")
    parser.add_argument(
        "--eval-fraction", type=float, default=0.05, help="the pipeline's ingest.eval_fraction"
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    splits, bad_rows = load_splits(args.data, args.eval_fraction)
    print(f"rows: train {len(splits['train'])}, eval {len(splits['eval'])}, test {len(splits['test'])}; "
          f"skipped bad rows {bad_rows}")
    for text in args.text or TEXT_CHOICES:
        print(json.dumps(train_and_evaluate(splits, text, epochs=args.epochs, seed=args.seed)))


if __name__ == "__main__":
    main()
