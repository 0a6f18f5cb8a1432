"""Where the trainer's model starts from: pretrained embedding vectors (library/embeddings.py), with their
coverage and how long they stay frozen, and a warm start from the blessed model (library/warm_start.py), or
from its newest ancestor that learned from valid spans only. Split from executor.py, which calls these."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from contract.artifacts import Runtime
from contract.config import TrainerConfig
from library import embeddings, warm_start
from library.layouts import ModelInputSpec, vocabulary_file


def _pretrained(
    config: TrainerConfig,
    transform_graph_dir: Path,
    model_input: ModelInputSpec,
    examples_dir: Path,
    seed: int,
    log: Callable[[str], None],
) -> tuple[embeddings.Pretrained, dict[str, Any]]:
    """The aligned vectors and their coverage facts; coverage below the threshold is logged as a loud
    warning."""
    from library.dataset import token_id_counts
    pretrained = embeddings.prepare(config.pretrained_embeddings, transform_graph_dir, model_input, seed)
    counts = token_id_counts(examples_dir, "train", model_input.embedding_input_dim)
    token_coverage = pretrained.alignment.token_coverage(counts)
    low = token_coverage < config.min_embedding_coverage
    facts = {**pretrained.properties(), "embeddings_token_coverage": round(token_coverage, 6),
             "embeddings_low_coverage": low}
    log(
        f"trainer: pretrained vectors {pretrained.path} ({pretrained.words:,} words x "
        f"{pretrained.alignment.dimension}, fingerprint {pretrained.fingerprint[:12]}): "
        f"{pretrained.alignment.vocab_coverage:.1%} of vocabulary ids, {token_coverage:.1%} of train tokens"
    )
    if low:
        log(f"WARNING: {'!' * 60}\nWARNING: the vectors cover only {token_coverage:.1%} of the train "
                    f"split's tokens (threshold {config.min_embedding_coverage:.0%}): most words start from "
                    f"random vectors. Check the file's language and tokenization (lowercase words).\n"
                    f"WARNING: {'!' * 60}")
    return pretrained, facts


def start_from_base(model, base_model_dir: Path | None, base_model_label: str, architecture: str,
                values: dict[str, Any], transform_graph_dir: Path, model_input: ModelInputSpec,
                log: Callable[[str], None]) -> dict[str, Any]:
    """Starts `model` from the base model's weights when it matches; the facts on what happened."""
    base = warm_start.base_model(base_model_dir)
    why = base if isinstance(base, str) else warm_start.mismatch(base, architecture, values, model_input)
    if why:
        log(f"trainer: no warm start from {base_model_label}: {why}; training from scratch")
        return {"warm_start": f"none ({base_model_label}: {why})"}
    tokens = warm_start.read_vocabulary(vocabulary_file(transform_graph_dir, model_input))
    rows = warm_start.carry_weights(model, base, tokens, model_input)
    log(
        f"trainer: warm start from {base_model_label}: {rows['rows_carried']:,} of {len(tokens):,} "
        "vocabulary rows "
        f"carried over by token, {rows['rows_new']:,} new tokens start fresh"
    )
    return {"warm_start": f"from {base_model_label}", "warm_start_from": base_model_label,
            "warm_start_rows_carried": rows["rows_carried"], "warm_start_rows_new": rows["rows_new"]}


def embedding_plan(chosen: dict[str, Any], config: TrainerConfig, transform_graph_dir: Path, model_input,
                    examples_dir: Path, seed: int, log: Callable[[str], None]) -> tuple:
    """(pretrained vectors or None, their facts for history.json, epochs to keep them frozen, the chosen
    hyperparameter values with embedding_trainable set accordingly)."""
    pretrained, embedding_facts, frozen_epochs = None, {}, 0
    chosen_values = dict(chosen["values"])
    if config.pretrained_embeddings:
        pretrained, embedding_facts = _pretrained(
            config, transform_graph_dir, model_input, examples_dir, seed, log
        )
        embeddings.check_fixed_dimension(chosen_values, pretrained.alignment.dimension, pretrained.path)
        # trainer.embeddings_trainable overrides the tuner's choice: the number of epochs to keep the
        # vectors frozen (0: fine-tuned throughout, >= epochs: frozen throughout).
        frozen_epochs = config.unfreeze_after_epochs()
        if frozen_epochs is None:
            frozen_epochs = 0 if chosen_values.get("embedding_trainable", True) else config.epochs
        chosen_values["embedding_trainable"] = frozen_epochs == 0
        embedding_facts["embeddings_frozen_epochs"] = min(frozen_epochs, config.epochs)
    return pretrained, embedding_facts, frozen_epochs, chosen_values


def _label(folder: Path, runtime: Runtime) -> str:
    """A model folder named relative to the pipeline root where it lies under it."""
    inside = runtime.pipeline_root is not None and folder.is_relative_to(runtime.pipeline_root)
    return os.path.relpath(folder, runtime.pipeline_root) if inside else str(folder)


def clean_base(base_dir: Path | None, spans: dict[str, str], held_out: set[str],
                runtime: Runtime) -> tuple[Path | None, str]:
    """(the model to warm-start from, its label) or (None, why none): the blessed model unless it learned from
    a span since corrected or held out, then its newest clean ancestor (warm_start.clean_base)."""
    if base_dir is None:
        return None, ""
    chosen, why = warm_start.clean_base(base_dir, spans, held_out)
    if why is None:
        return base_dir, _label(base_dir, runtime)
    if chosen is None:
        reason = (
            f"{_label(base_dir, runtime)}: {why}, and no model it was warm-started from learned from valid "
            "spans only"
        )
        runtime.log(f"trainer: no warm start from {reason}; training from scratch")
        return None, reason
    runtime.log(
        f"trainer: not warm-starting from {_label(base_dir, runtime)}: {why}; starting from its newest "
        f"clean ancestor {_label(chosen, runtime)} instead"
    )
    return chosen, _label(chosen, runtime)
