"""A reproducible SavedModel: rewrites tf.Transform's SavedModel so its bytes depend only on what it computes.

tf.Transform's SavedModel differs from run to run in three ways that do not change what it computes; they are
rewritten after the pipeline so that the same data and config give the same bytes (and fingerprint):
 1. Traced functions are named after a process-wide counter (`__inference_signature_wrapper_1292`), whose
    value depends on everything the process traced before (a resumed run skips ingest and validate) and on
    how Beam scheduled the work. They are renumbered 0, 1, 2 ... in counter order, i.e. in the order the
    transform traced them, which is fixed. A digit-only `_user_specified_name` (a captured input) comes from
    the same counter and is renumbered with them.
 2. A vocabulary table's `shared_name` holds the path of the temporary folder tf.Transform computed the
    vocabulary in. The path is replaced with a digest of the graph's assets, not a constant: TF2's loader
    makes shared names unique per load, but a graph imported TF1-style (into one session with another
    transform graph) shares tables by name, so graphs with different vocabularies keep different names.
 3. fingerprint.pb holds a random uuid. It is recomputed from the rewritten saved_model.pb, with a uuid
    derived from its hashes.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from contract.files import write_bytes_atomic
from library.layouts import FINGERPRINT_FILE, SAVED_MODEL_FILE

_COUNTER_SUFFIX = re.compile(r"^(.*)_(\d+)$")
_USER_SPECIFIED_NAME = "_user_specified_name"


def _walk_strings(message, on_string: Callable[[str], str], on_attr: Callable[[str, Any], None]) -> None:
    """Replaces every string field below `message` (map keys included) with on_string(value), and calls
    on_attr(key, AttrValue) for every entry of a map of AttrValues (node and argument attributes)."""
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            string_keys = key_field.type == key_field.TYPE_STRING
            entries = []
            for key in list(value):
                if value_field.type == value_field.TYPE_MESSAGE:
                    item = type(value[key])()
                    item.CopyFrom(value[key])
                    if value_field.message_type.full_name == "tensorflow.AttrValue":
                        on_attr(key, item)
                    _walk_strings(item, on_string, on_attr)
                else:
                    item = value[key]
                    item = on_string(item) if value_field.type == value_field.TYPE_STRING else item
                entries.append((on_string(key) if string_keys else key, item))
            # rebuilt whole: a new key may equal an old key not yet renamed
            value.clear()
            for key, item in entries:
                if value_field.type == value_field.TYPE_MESSAGE:
                    value[key].CopyFrom(item)
                else:
                    value[key] = item
        elif field.type == field.TYPE_MESSAGE:
            for item in (value if field.is_repeated else [value]):
                _walk_strings(item, on_string, on_attr)
        elif field.type == field.TYPE_STRING:
            if field.is_repeated:
                value[:] = [on_string(item) for item in value]
            else:
                setattr(message, field.name, on_string(value))


def make_saved_model_reproducible(saved_model_dir: Path, temporary_paths: Sequence[str]) -> None:
    """Rewrites tf.Transform's SavedModel in place so that its bytes depend only on what it computes (see
    above). `temporary_paths`: the folder (as given to tf.Transform) whose path appears in table names."""
    from tensorflow.core.protobuf import saved_model_pb2

    from contract.artifacts import fingerprint

    saved_model_dir = Path(saved_model_dir)
    model_path = saved_model_dir / SAVED_MODEL_FILE
    model = saved_model_pb2.SavedModel.FromString(model_path.read_bytes())

    # counter value -> new number
    counters: dict[int, int] = {}
    functions = [f.signature.name for graph in model.meta_graphs for f in graph.graph_def.library.function]
    for name in functions:
        match = _COUNTER_SUFFIX.match(name)
        if match:
            counters[int(match.group(2))] = 0

    def collect_attr(key: str, attr) -> None:
        if key == _USER_SPECIFIED_NAME and attr.s.isdigit():
            counters[int(attr.s)] = 0

    _walk_strings(model, lambda text: text, collect_attr)
    counters = {value: number for number, value in enumerate(sorted(counters))}
    renamed = {}
    for name in functions:
        match = _COUNTER_SUFFIX.match(name)
        if match:
            renamed[name] = f"{match.group(1)}_{counters[int(match.group(2))]}"
    assets_dir = saved_model_dir / "assets"
    assets_name = (
        f"transform-assets-{fingerprint(assets_dir)[:16] if assets_dir.exists() else 'none'}".encode()
    )
    paths = sorted({path.encode() for path in temporary_paths}, key=len, reverse=True)

    def rewrite_attr(key: str, attr) -> None:
        if key == _USER_SPECIFIED_NAME and attr.s.isdigit():
            attr.s = str(counters[int(attr.s)]).encode()
        elif key == "shared_name":
            for path in paths:
                attr.s = attr.s.replace(path, assets_name)

    _walk_strings(model, lambda text: renamed.get(text, text), rewrite_attr)
    _sort_function_library(model)
    write_bytes_atomic(model_path, model.SerializeToString(deterministic=True))
    _rewrite_fingerprint(saved_model_dir)


def _sort_function_library(model) -> None:
    """Orders each graph's function library by name: it lists functions in tracing order, which varies."""
    for graph in model.meta_graphs:
        library = graph.graph_def.library
        ordered = sorted(library.function, key=lambda function: function.signature.name)
        del library.function[:]
        library.function.extend(ordered)
        ordered = sorted(
            library.gradient, key=lambda gradient: (gradient.function_name, gradient.gradient_func)
        )
        del library.gradient[:]
        library.gradient.extend(ordered)


def _rewrite_fingerprint(saved_model_dir: Path) -> None:
    """Recomputes fingerprint.pb (if any) for the rewritten saved_model.pb, with a uuid derived from its
    hashes instead of a random one."""
    from tensorflow.core.protobuf import fingerprint_pb2
    from tensorflow.python.saved_model import fingerprinting_utils

    fingerprint_path = saved_model_dir / FINGERPRINT_FILE
    if fingerprint_path.exists():
        # The same function TensorFlow's saver uses; its random uuid is replaced with one from the hashes.
        fingerprint_def = fingerprint_pb2.FingerprintDef.FromString(
            fingerprinting_utils.fingerprinting_pywrap.CreateFingerprintDef(str(saved_model_dir)))
        fingerprint_def.uuid = ""
        digest = hashlib.sha256(fingerprint_def.SerializeToString(deterministic=True)).digest()
        fingerprint_def.uuid = str(int.from_bytes(digest[:16], "big"))
        write_bytes_atomic(fingerprint_path, fingerprint_def.SerializeToString(deterministic=True))
