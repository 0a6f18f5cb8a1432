"""Warm start's checks that need no training (library/warm_start.py): a changed text feature or max_length
turns it off, and a base that learned a span since corrected or held out gives way to its newest clean
ancestor, read from the lineage files real models write (write_lineage), or to none."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from library import warm_start
from library.layouts import ModelInputSpec, model_lineage_file

SPEC = ModelInputSpec(embedding_input_dim=12, vocab_size=10, num_oov_buckets=1, max_length=64, num_classes=4,
                      text_features="title_description", bucket_upper_bounds=(8, 64), padding_id=0,
                      vocab_filename="vocab")
VALUES = {"units": 8}


def _base(spec: ModelInputSpec = SPEC) -> warm_start.BaseModel:
    return warm_start.BaseModel(Path("base"), {"architecture": "bilstm", "values": VALUES}, spec, [b"a"] * 10)


def test_a_changed_max_length_or_text_feature_turns_warm_start_off():
    assert warm_start.mismatch(_base(), "bilstm", VALUES, SPEC) is None
    shorter = dataclasses.replace(SPEC, max_length=32)
    assert warm_start.mismatch(_base(), "bilstm", VALUES, shorter) == \
        "its max_length is 64, not 32 (transform.max_length)"
    titles = dataclasses.replace(SPEC, text_features="title")
    assert warm_start.mismatch(_base(), "bilstm", VALUES, titles) == \
        "its text feature is title_description, not title (transform.text_features)"


def test_new_tokens_take_the_old_models_oov_row():
    old_tokens, new_tokens = [b"a", b"b", b"c"], [b"c", b"x", b"a", b"y"]
    old = dataclasses.replace(SPEC, vocab_size=3)
    # Old ids: a=1, b=2, c=3, OOV bucket = 4; new ids x=2 and y=4 are new tokens.
    assert warm_start.oov_pairs(old_tokens, new_tokens, old) == [(2, 4), (4, 4)]


def _model(folder: Path, spans: dict[str, str], base: Path | None) -> Path:
    folder.mkdir(parents=True)
    warm_start.write_lineage(folder, spans, base)
    return folder


def test_a_corrected_span_skips_to_the_newest_clean_ancestor(tmp_path):
    first = _model(tmp_path / "m1", {"0001": "a1", "0002": "b1"}, None)
    second = _model(tmp_path / "m2", {"0001": "a1", "0002": "b1", "0003": "c1"}, first)
    third = _model(tmp_path / "m3", {"0002": "b1", "0003": "c1", "0004": "d1"}, second)
    # The third model's own window lacks 0001, its lineage still holds it (learned through its bases).
    assert ["0001", "a1"] in warm_start.read_lineage(third)["lineage_spans"]
    assert warm_start.read_lineage(third)["warm_start_from"] == str(second.resolve())
    now = {"0002": "b1", "0003": "c1", "0004": "d1", "0005": "e1"}
    assert warm_start.clean_base(third, now, set()) == (third, None)  # 0001 only left the window
    corrected = {**now, "0003": "c2"}
    chosen, why = warm_start.clean_base(third, corrected, set())
    assert chosen == first.resolve() and "span 0003 as it was before it changed" in why
    chosen, why = warm_start.clean_base(third, {**now, "0001": "a2"}, set())
    assert chosen is None and "span 0001" in why
    chosen, why = warm_start.clean_base(third, now, {"0004"})
    assert chosen == second.resolve() and "span 0004, which is held out now" in why


def test_a_model_without_a_lineage_file_is_taken_as_it_is(tmp_path):
    older = tmp_path / "old"
    older.mkdir()
    assert not model_lineage_file(older).exists()
    assert warm_start.clean_base(older, {"0001": "x"}, {"0002"}) == (older, None)
