"""Validate's drift reference: what the served model learned, or, before a model is served, the window.

With a served model (the `served_model` and `served_examples` inputs, pipeline/dag.py), a new span is compared
with the model's training window: the merge of its spans' cached profiles (library/span_profiles.py, read from
the examples it was trained on, not recomputed), the vocabulary its SavedModel carries (vocab_oov_share) and
its predicted-class mix on its window's held-out rows, which the trainer recorded (`eval_predicted_classes`),
against its predictions on the new span (prediction_linf; the SavedModel is loaded once per run). Without one
(a first run), the new spans are compared with the window's other spans as before.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from components.validate.spec import SERVED_EXAMPLES_INPUT, SERVED_MODEL_INPUT
from contract.artifacts import Artifact
from library import drift, span_profiles
from library.layouts import model_vocabulary_file, read_model_input, serving_model_dir

PREDICT_BATCH = 256


@dataclass
class Reference:
    """The spans a new span is compared with, their profiles, and the served model's facts (None without)."""
    spans: list[str]
    profiles: dict[str, drift.SpanProfile]
    served_version: int | None = None
    model_dir: Path | None = None
    vocabulary: set[str] | None = None
    # the served model's predicted classes on its window's held-out rows
    predicted: Counter | None = None
    _signature: object = field(default=None, repr=False)

    def describe(self) -> str:
        if self.model_dir is None:
            return "the rest of the window"
        return f"the served model's window (version {self.served_version}: {len(self.spans)} span(s))"

    def served_measures(self, profile: drift.SpanProfile, files: list[str],
                        min_rows: int) -> dict[str, float | None]:
        """vocab_oov_share and prediction_linf of a new span (its profile and raw example files);
        prediction_linf only with `min_rows` rows on both sides (the new span, the served mix's rows)."""
        if self.model_dir is None:
            return {"vocab_oov_share": None, "prediction_linf": None}
        vocab = drift.vocab_oov_share(profile, self.vocabulary) if self.vocabulary is not None else None
        mix = None
        if self.predicted and min(profile.rows, sum(self.predicted.values())) >= min_rows:
            mix = drift.l_infinity(self.predict(files), self.predicted)
        return {"vocab_oov_share": vocab, "prediction_linf": mix}

    def predict(self, files: list[str]) -> Counter:
        """{class id: rows} the served model predicts for the raw examples in `files`."""
        import tensorflow as tf  # imported where used: TF is slow to import

        from library.export import batch_signature
        if self._signature is None:
            self._signature = batch_signature(tf.saved_model.load(str(serving_model_dir(self.model_dir))))
        counts: Counter = Counter()
        for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(PREDICT_BATCH):
            counts.update(int(c) for c in self._signature(examples=batch)["class_id"].numpy())
        return counts


def _vocabulary(model_dir: Path) -> set[str] | None:
    path = model_vocabulary_file(model_dir, read_model_input(model_dir))
    return set(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else None


def served(inputs: dict[str, Artifact]) -> Reference | None:
    """The served model's reference, or None when no model is served (or it records no training spans)."""
    model, examples = inputs.get(SERVED_MODEL_INPUT), inputs.get(SERVED_EXAMPLES_INPUT)
    spans = model.properties.get("training_spans") if model is not None else None
    if not spans or examples is None:
        return None
    profiles = {span: span_profiles.profile(examples.uri, span, sha) for span, sha in sorted(spans.items())}
    recorded = model.properties.get("eval_predicted_classes") or {}
    predicted = Counter({int(label): rows for label, rows in recorded.items()})
    return Reference(sorted(spans), profiles, model.properties.get("served_version"), Path(model.uri),
                     _vocabulary(Path(model.uri)), predicted or None)


def window(examples_dir: Path, spans: list[str], sha256: dict[str, str]) -> Reference:
    """The window's spans as the reference (before a model is served), from their cached profiles."""
    return Reference(spans, {span: span_profiles.profile(examples_dir, span, sha256.get(span))
                             for span in spans})
