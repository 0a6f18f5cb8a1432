"""JSON <-> tensors, in TF Serving's REST encoding: string inputs are JSON strings, or {"b64": "..."} for
bytes (serialized tf.Example); string outputs come back as text, or as {"b64": ...} when they are not UTF-8 or
their name ends in "_bytes" (TF Serving's rule). Errors are {"error": "..."} (ServingError): 400 malformed
JSON or inputs, 404 unknown model, version, signature or route, 413 body over the size limit, 503 (with
Retry-After) when the request's queue is full."""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
import orjson
from aiohttp import web


class ServingError(Exception):
    """An answer other than 200: HTTP status and the message of TF Serving's {"error": ...} body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


def _bytes_value(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error as error:
            raise ServingError(400, f"{where}: invalid base64 in {{\"b64\": ...}}: {error}") from None
    raise ServingError(400, f"{where}: JSON value {json.dumps(value)[:80]} is not of expected type: string "
                            "(send text as a JSON string, bytes as {\"b64\": \"...\"})")


def _strings(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [_strings(item, where) for item in value]
    return _bytes_value(value, where)


def _to_tensor(value: Any, spec, where: str):
    import tensorflow as tf

    if spec.dtype == tf.string:
        value = _strings(value, where)
    try:
        tensor = tf.constant(value, dtype=spec.dtype)
    except (TypeError, ValueError) as error:
        raise ServingError(400, f"{where}: cannot be read as {spec.dtype.name}: {error}") from None
    if not spec.shape.is_compatible_with(tensor.shape):
        raise ServingError(400, f"{where}: shape {tensor.shape.as_list()} does not match the signature's "
                                f"{spec.shape.as_list()} (None = any size)")
    return tensor


def request_array(value: Any, spec, where: str) -> np.ndarray:
    """One request's value of one input as a numpy array (strings as bytes objects), checked against the spec.
    A flat list for a [None] string input (texts, b64 examples) skips building a tensor: the batch builds
    one."""
    import tensorflow as tf

    if (spec.dtype == tf.string and spec.shape.rank == 1 and isinstance(value, list)
            and not any(isinstance(item, list) for item in value)):
        array = np.empty(len(value), dtype=object)
        array[:] = [_bytes_value(item, where) for item in value]
        return array
    return _to_tensor(value, spec, where).numpy()


def response_json(name: str, array) -> Any:
    # tf.string
    if array.dtype == object:
        def text(value: bytes):
            if not name.endswith("_bytes"):
                try:
                    return value.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(value).decode("ascii")}
        flat = [text(value) for value in array.reshape(-1)]
        if array.ndim == 0:
            return flat[0]
        holder = np.empty(len(flat), dtype=object)
        holder[:] = flat
        return holder.reshape(array.shape).tolist()
    return array.tolist()


def json_example(features: Any, context: dict, where: str) -> bytes:
    """A JSON example ({feature: value or list}) as a serialized tf.Example, as TF Serving's :classify reads
    it."""
    import tensorflow as tf

    if not isinstance(features, dict):
        raise ServingError(400, f"{where}: an example must be a JSON object of features")
    proto = tf.train.Example()
    for name, value in {**context, **features}.items():
        values = value if isinstance(value, list) else [value]
        feature = proto.features.feature[name]
        if all(isinstance(v, bool) for v in values) or all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in values):
            feature.int64_list.value.extend(int(v) for v in values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            feature.float_list.value.extend(float(v) for v in values)
        else:
            feature.bytes_list.value.extend(_bytes_value(v, f"{where} feature {name!r}") for v in values)
    return proto.SerializeToString()


def error_line(error: Exception) -> str:
    """The line of a TensorFlow error that says what is wrong (not "Graph execution error:", node names or
    stack placeholders)."""
    lines = [line.strip() for line in getattr(error, "message", str(error)).splitlines()]
    useful = [
        line
        for line in lines
        if line
        and not line.startswith(("Graph execution error", "Detected at node", "<stack traces", "[[", "File "))
    ]
    return (useful or [type(error).__name__])[0]


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(content), status=status, headers=headers,
                        content_type="application/json")
