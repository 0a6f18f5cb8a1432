"""Batch prediction with the serving SavedModel (TensorFlow only; no Keras, no tf.Transform).

`predict(model_dir, texts)` accepts any of:
  - a SavedModel folder (a trainer's serving_model/, or a pushed version folder <serving_dir>/<version>/),
  - a trainer `model` artifact folder (its serving_model/ is used),
  - a serving folder of numeric versions (the highest version is used, as TF Serving would).
`iter_csv_or_lines(source)` reads texts from a file (or "-" for stdin): an AG News CSV
(class,title,description) gives title + " " + description per row; anything else gives one text per line, a
blank line being an empty text (so output rows join back to input lines). `iter_numbered_texts` gives the same
with input line numbers.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import IO, Any, Iterator

from contract.artifacts import ComponentError
from library.export import BATCH_TF_EXAMPLE_SIGNATURE, SERVING_SIGNATURE
from library.folder_layouts import serving_version_dir, serving_versions
from library.layouts import (
    CLASS_NAMES,
    SAVED_MODEL_FILE,
    SERVING_MODEL_DIR,
    has_saved_model,
    serving_model_dir,
)

BATCH_SIZE = 256
# An XLA export's serving_default compiles every batch shape it meets: a fresh process spent 4.5 s on the
# 3,800 test rows against 0.95 s through batch_tf_example (the same graph and weights, the model part
# without XLA), and saves only about 47 µs a row once compiled (benchmarks/results/predict_signatures.md).
# So a process predicts its first rows through batch_tf_example and switches to XLA after this many.
XLA_AFTER_ROWS = 100_000
# A text may be any length (serving_default takes a 5 MB string); the csv module's default field limit is 128
# KB.
csv.field_size_limit(min(sys.maxsize, 2 ** 31 - 1))
# (SavedModel folder, saved_model.pb mtime) -> its _Predictor
_loaded: dict[tuple[str, int], _Predictor] = {}


def resolve_serving_model_dir(model_dir: Path) -> Path:
    model_dir = Path(model_dir)
    if has_saved_model(model_dir):
        return model_dir
    if has_saved_model(serving_model_dir(model_dir)):
        return serving_model_dir(model_dir)
    versions = [version for version in serving_versions(model_dir)
                if has_saved_model(serving_version_dir(model_dir, version))]
    if versions:
        return serving_version_dir(model_dir, versions[-1])
    raise ComponentError(f"{model_dir} is not a serving model: expected a SavedModel folder, a trainer model "
                         f"folder with {SERVING_MODEL_DIR}/, or a serving folder of numeric versions")


class _Predictor:
    """A loaded serving model's texts -> outputs: through batch_tf_example (each text as a tf.Example whose
    title it is, which is how serving_default reads a text) for the first XLA_AFTER_ROWS rows, then through
    serving_default. An export without batch_tf_example (XLA off, where serving_default is the plain graph)
    uses serving_default."""

    def __init__(self, loaded):
        self.serving = loaded.signatures[SERVING_SIGNATURE]
        self.batch = (loaded.signatures[BATCH_TF_EXAMPLE_SIGNATURE]
                      if BATCH_TF_EXAMPLE_SIGNATURE in loaded.signatures else None)
        self.rows = 0

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        import tensorflow as tf

        self.rows += len(texts)
        if self.batch is None or self.rows > XLA_AFTER_ROWS:
            return self.serving(text=tf.constant(texts, dtype=tf.string, shape=[len(texts)]))
        examples = [_title_example(text) for text in texts]
        return self.batch(examples=tf.constant(examples, dtype=tf.string, shape=[len(texts)]))


def _title_example(text: str) -> bytes:
    import tensorflow as tf

    title = tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")]))
    return tf.train.Example(features=tf.train.Features(feature={"title": title})).SerializeToString()


def _predictor(model_dir: Path) -> _Predictor:
    path = resolve_serving_model_dir(model_dir).resolve()
    key = (str(path), (path / SAVED_MODEL_FILE).stat().st_mtime_ns)
    if key not in _loaded:
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(path))
        # a corrupt or partial folder: TensorFlow raises many types here
        except Exception as error:
            reason = (str(error).strip().splitlines() or [""])[0][:160]
            raise ComponentError(
                f"{path} holds no loadable SavedModel ({type(error).__name__}: {reason}); point "
                "--model-dir at an intact pushed version or a trainer's model folder"
            ) from None
        if SERVING_SIGNATURE not in loaded.signatures:
            raise ComponentError(
                f"{path} has no {SERVING_SIGNATURE!r} signature; signatures: {list(loaded.signatures)}")
        _loaded[key] = _Predictor(loaded)
    return _loaded[key]


def predict(model_dir: Path, texts: list[str]) -> list[dict[str, Any]]:
    """One {class_id, class_name, probabilities} per text, in order (probabilities in CLASS_NAMES order)."""
    predictor = _predictor(Path(model_dir))
    predictions = []
    for start in range(0, len(texts), BATCH_SIZE):
        outputs = predictor(list(texts[start:start + BATCH_SIZE]))
        for class_id, probabilities in zip(outputs["class_id"].numpy(), outputs["probabilities"].numpy()):
            predictions.append({"class_id": int(class_id), "class_name": CLASS_NAMES[int(class_id)],
                                "probabilities": [float(p) for p in probabilities]})
    return predictions


def _is_ag_news_row(fields: list[str]) -> bool:
    return len(fields) == 3 and fields[0].strip() in ("1", "2", "3", "4")


def _is_header(fields: list[str]) -> bool:
    names = [field.strip().lower() for field in fields]
    return (
        len(names) == 3
        and names[0] in ("class", "class index", "label")
        and names[1:] == ["title", "description"]
    )


def iter_csv_or_lines(source: str | Path | IO) -> Iterator[str]:
    """Texts from `source` (a path, "-" for stdin, or an open file); see iter_numbered_texts."""
    for _, text in iter_numbered_texts(source):
        yield text


def iter_numbered_texts(source: str | Path | IO) -> Iterator[tuple[int, str]]:
    """(input line number, text) from `source` (a path, "-" for stdin, or an open binary or text file).

    The format is decided by the first non-blank line: an AG News CSV row (class 1-4, title, description;
    quoted or not) or the header class,title,description makes it a CSV, read with the csv module (a row
    of any other shape is then an error naming its line; the number is the row's first line); otherwise every
    line is one text, a blank line an empty one. A line that is not UTF-8 is an error naming its line.
    """
    if isinstance(source, (str, Path)) and str(source) == "-":
        yield from _iter_texts(_decoded_lines(getattr(sys.stdin, "buffer", sys.stdin)))
    elif isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            yield from _iter_texts(_decoded_lines(handle))
    else:
        yield from _iter_texts(_decoded_lines(getattr(source, "buffer", source)))


def _decoded_lines(handle) -> Iterator[tuple[int, str]]:
    """(line number, line with its ending) of a binary file, each line decoded on its own so a bad byte is
    reported at its exact line."""
    for number, raw in enumerate(handle, start=1):
        # a text stream given by a caller
        if isinstance(raw, str):
            yield number, raw
            continue
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ComponentError(
                f"input line {number} is not valid UTF-8 ({error.reason} at byte {error.start}): "
                "convert the input to UTF-8, e.g. iconv -f latin1 -t utf-8"
            ) from None


def _iter_texts(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    leading: list[tuple[int, str]] = []
    for number, line in lines:
        if line.strip():
            first = (number, line)
            break
        leading.append((number, line))
    else:
        yield from ((n, "") for n, _ in leading)
        return
    first_fields = next(csv.reader([first[1]]), [])
    if not (_is_ag_news_row(first_fields) or _is_header(first_fields)):
        for number, line in (*leading, first):
            yield number, line.rstrip("\r\n")
        for number, line in lines:
            yield number, line.rstrip("\r\n")
        return
    # Re-join the first line with the rest so a quoted field spanning lines is still read correctly. Lines
    # from the first non-blank one on are consecutive, so a row's line number is the first's plus the lines
    # before it.
    reader = csv.reader(line for _, line in _chain(first, lines))
    row_number = 0
    while True:
        consumed = reader.line_num
        try:
            fields = next(reader)
        except StopIteration:
            return
        row_number += 1
        if not fields or (row_number == 1 and _is_header(fields)):
            continue
        if not _is_ag_news_row(fields):
            raise ComponentError(f"CSV row {row_number} (input line {first[0] + consumed}) is not "
                                 f"class,title,description with class 1-4: {fields!r:.200}")
        yield first[0] + consumed, f"{fields[1]} {fields[2]}"


def _chain(first, rest):
    yield first
    yield from rest


__all__ = ["predict", "iter_csv_or_lines", "iter_numbered_texts", "resolve_serving_model_dir"]
