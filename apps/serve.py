"""`agnews-pipeline serve`: the subset of TF Serving's REST API that clients of this model use, in Python.

Client code written for TF Serving works unchanged against it (https://www.tensorflow.org/tfx/serving/api_rest):

  GET  /v1/models/<name>[/versions/<N>]            version status
  GET  /v1/models/<name>[/versions/<N>]/metadata   signatures
  POST /v1/models/<name>[/versions/<N>]:predict    {"signature_name"?, "instances": [...]}  -> {"predictions": [...]}
                                                   {"signature_name"?, "inputs": ...}       -> {"outputs": ...}
  POST /v1/models/<name>[/versions/<N>]:classify   {"signature_name"?, "context"?, "examples": [{feature: value}]}
                                                   -> {"results": [[[class, score], ...], ...]}

String inputs are JSON strings, or {"b64": "..."} for bytes (serialized tf.Example); string outputs come back
as text, or as {"b64": ...} when they are not UTF-8 or their name ends in "_bytes" (TF Serving's rule).
Errors are {"error": "..."}: 400 malformed JSON or inputs, 404 unknown model, version, signature or route,
413 body over the size limit, 503 (with Retry-After) when the request's queue is full.

Concurrent :predict and :classify requests for the same version and signature are merged into one model call
(apps/batching.py, TF Serving's batching layer; --no-batching turns it off). GET /monitoring/prometheus/metrics
(TF Serving's path) reports requests by status, latencies, batch sizes, the queue and the served version.

Versions follow TF Serving's file-system source with its default policy (serve the latest version): the
serving folder is polled; a numeric folder higher than the served one is loaded and warmed up (replaying
assets.extra/tf_serving_warmup_requests) in the background while the old version keeps answering, then it
replaces the old one. Hidden folders (the pusher's `.push-*` temporaries) are never looked at, and a version
that fails to load or warm up is reported and retried only when its files change. The model runs in batch
threads so the event loop keeps accepting requests; SIGTERM (or SIGINT) stops accepting, lets queued and
in-flight requests finish, and exits 0.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson
from aiohttp import web

from apps.batching import Batcher, BatchingOptions, BatchStats, Overloaded
from library.layouts import SAVED_MODEL_FILE, WARMUP_FILE, has_saved_model, serving_version_dir, serving_versions

METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's --monitoring_config_file default path
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
DEFAULT_SIGNATURE = "serving_default"


class ServingError(Exception):
    """An answer other than 200: HTTP status and the message of TF Serving's {"error": ...} body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


@dataclass
class Servable:
    """One loaded version: the SavedModel and, per signature, its function, inputs, outputs and method."""
    version: int
    path: Path
    model: Any  # keeps the SavedModel's variables alive
    functions: dict[str, Any]
    inputs: dict[str, dict[str, Any]]  # signature -> input name -> tf.TensorSpec
    methods: dict[str, str]
    metadata: dict[str, Any]  # signature_def map in TF Serving's JSON form
    batchable: dict[str, bool]  # signature -> every input has a free first (batch) dimension


def load_servable(path: Path, version: int, batch_sizes: tuple[int, ...] = ()) -> tuple[Servable, int]:
    """Loads a version folder and replays its warm-up requests; returns (servable, number of requests)."""
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    model = tf.saved_model.load(str(path))
    proto = saved_model_pb2.SavedModel.FromString((path / SAVED_MODEL_FILE).read_bytes())
    signature_defs = {name: definition for name, definition in proto.meta_graphs[0].signature_def.items()
                      if name in model.signatures}
    functions = {name: model.signatures[name] for name in signature_defs}
    servable = Servable(
        version=version, path=path, model=model, functions=functions,
        inputs={name: dict(function.structured_input_signature[1]) for name, function in functions.items()},
        methods={name: definition.method_name for name, definition in signature_defs.items()},
        metadata={"signature_def": {name: json_format.MessageToDict(definition, preserving_proto_field_name=True)
                                    for name, definition in sorted(signature_defs.items())}},
        batchable={name: all(spec.shape.rank and spec.shape[0] is None
                             for spec in function.structured_input_signature[1].values())
                   for name, function in functions.items()})
    return servable, _warm_up(servable, batch_sizes)


def _warm_up(servable: Servable, batch_sizes: tuple[int, ...] = ()) -> int:
    """Replays the warm-up file's PredictLog requests, as TF Serving does before a version takes traffic, then
    (once per signature) each request's first row repeated to every batch size the batcher pads to, so the
    first batch of each size does not pay for it."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    warmup_file = servable.path / WARMUP_FILE
    if not warmup_file.is_file():
        return 0
    count = 0
    sized: set[str] = set()
    for record in tf.data.TFRecordDataset(str(warmup_file)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            continue  # this model's warm-up file holds predict requests only
        request = log.predict_log.request
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        servable.functions[signature](**{name: tf.constant(array) for name, array in inputs.items()})
        count += 1
        if signature not in sized and servable.batchable[signature] and all(len(a) for a in inputs.values()):
            sized.add(signature)
            for size in batch_sizes:
                servable.functions[signature](**{name: tf.constant(np.repeat(array[:1], size, axis=0))
                                                 for name, array in inputs.items()})
    return count


def _folder_stamp(path: Path) -> tuple:
    """Changes when any file in the folder changes: a failed version is retried only after that."""
    return tuple(sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                        for p in path.rglob("*") if p.is_file()))


class VersionWatcher:
    """Serves the highest loadable numeric version under `serving_dir`; polls for new ones in a thread."""

    def __init__(self, serving_dir: Path, poll_seconds: float, log: Callable[[str], None],
                 batch_sizes: tuple[int, ...] = ()):
        self.serving_dir = serving_dir
        self.poll_seconds = poll_seconds
        self.log = log
        self.batch_sizes = batch_sizes  # warmed up at load
        self.current: Servable | None = None  # replaced by one assignment: a request keeps the one it took
        self.loading: int | None = None
        self.failed: dict[int, tuple[tuple, str]] = {}  # version -> (folder stamp, error)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_forever, name="version-watcher", daemon=True)

    def versions_on_disk(self) -> list[int]:
        return sorted((version for version in serving_versions(self.serving_dir)
                       if has_saved_model(serving_version_dir(self.serving_dir, version))), reverse=True)

    def poll_once(self) -> None:
        for version in self.versions_on_disk():
            if self.current is not None and version <= self.current.version:
                return  # the served version is still the newest loadable one
            path = serving_version_dir(self.serving_dir, version)
            stamp = _folder_stamp(path)
            if version in self.failed and self.failed[version][0] == stamp:
                continue  # failed before and unchanged since: try the next lower version
            self.loading = version
            started = time.monotonic()
            try:
                servable, warmup_count = load_servable(path, version, self.batch_sizes)
            except Exception as error:  # keep serving the old version; report why
                message = _error_line(error)
                self.failed[version] = (stamp, message)
                self.log(f"serve: version {version} failed to load, still serving "
                         f"{self.current.version if self.current else 'nothing'}: {message}")
                continue
            finally:
                self.loading = None
            self.failed.pop(version, None)
            previous, self.current = self.current, servable
            self.log(f"serve: version {version} loaded and warmed up ({warmup_count} warm-up requests) in "
                     f"{time.monotonic() - started:.1f}s; now serving it"
                     + (f" instead of version {previous.version}" if previous else ""))
            return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll_once()


# ---------------------------------------------------------------------------------------------------------
# JSON <-> tensors


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


def _to_array(value: Any, spec, where: str) -> np.ndarray:
    """One request's value of one input as a numpy array (strings as bytes objects), checked against the spec.
    A flat list for a [None] string input (texts, b64 examples) skips building a tensor: the batch builds one."""
    import tensorflow as tf

    if (spec.dtype == tf.string and spec.shape.rank == 1 and isinstance(value, list)
            and not any(isinstance(item, list) for item in value)):
        array = np.empty(len(value), dtype=object)
        array[:] = [_bytes_value(item, where) for item in value]
        return array
    return _to_tensor(value, spec, where).numpy()


def _to_json(name: str, array) -> Any:
    if array.dtype == object:  # tf.string
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


def _example(features: Any, context: dict, where: str) -> bytes:
    """A JSON example ({feature: value or list}) as a serialized tf.Example, as TF Serving's :classify reads it."""
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


def _error_line(error: Exception) -> str:
    """The line of a TensorFlow error that says what is wrong (not "Graph execution error:", node names or
    stack placeholders)."""
    lines = [line.strip() for line in getattr(error, "message", str(error)).splitlines()]
    useful = [line for line in lines if line and not line.startswith(("Graph execution error", "Detected at node",
                                                                      "<stack traces", "[[", "File "))]
    return (useful or [type(error).__name__])[0]


# ---------------------------------------------------------------------------------------------------------
# Metrics


LATENCY_BUCKETS = (.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .15, .2, .3, .5,
                   .75, 1, 2, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """The Prometheus page at METRICS_PATH. Its own registry: nothing global, one server per process."""

    def __init__(self, model_name: str, watcher: VersionWatcher, batcher: Batcher):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.model_name = model_name
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter("serve_requests", "Answered requests by API and HTTP status (499: the client "
                                "went away first)", ["model", "api", "code"], registry=registry)
        self.latency = Histogram("serve_request_latency_seconds", "From a request's arrival to its answer",
                                 ["model", "api"], buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_rows = Histogram("serve_batch_size", "Rows of real requests per model call (its _count is "
                                    "the number of model calls)", ["model", "signature"], buckets=BATCH_BUCKETS,
                                    registry=registry)
        self.batch_requests = Histogram("serve_batch_requests", "Requests merged into one model call",
                                        ["model", "signature"], buckets=BATCH_BUCKETS, registry=registry)
        self.padding = Counter("serve_padding_rows", "Rows added to reach an allowed batch size",
                               ["model", "signature"], registry=registry)
        self.queue_latency = Histogram("serve_queue_latency_seconds", "From a request's arrival in the queue "
                                       "to the start of its model call", ["model"], buckets=LATENCY_BUCKETS,
                                       registry=registry)
        self.model_latency = Histogram("serve_model_latency_seconds", "One model call, from the batch's input "
                                       "arrays to its output arrays", ["model", "signature"],
                                       buckets=LATENCY_BUCKETS, registry=registry)
        self.dropped = Counter("serve_dropped_rows", "Queued rows dropped because their client went away",
                               ["model"], registry=registry)
        Gauge("serve_queue_rows", "Rows waiting in the batch queues", ["model"],
              registry=registry).labels(model_name).set_function(batcher.queued_rows)
        Gauge("serve_model_version", "The version served (0: none yet)", ["model"], registry=registry).labels(
            model_name).set_function(lambda: watcher.current.version if watcher.current else 0)
        self.in_flight = Gauge("serve_requests_in_flight", "Predict and classify requests received and not yet "
                               "answered", ["model"], registry=registry).labels(model_name)

    def request(self, api: str, code: int, seconds: float) -> None:
        self.requests.labels(self.model_name, api, str(code)).inc()
        self.latency.labels(self.model_name, api).observe(seconds)

    def batch(self, stats: BatchStats) -> None:
        """Called from a batch thread (prometheus_client is thread-safe)."""
        self.batch_rows.labels(self.model_name, stats.signature).observe(stats.rows)
        self.batch_requests.labels(self.model_name, stats.signature).observe(stats.requests)
        if stats.padded_rows > stats.rows:
            self.padding.labels(self.model_name, stats.signature).inc(stats.padded_rows - stats.rows)
        queue = self.queue_latency.labels(self.model_name)
        for seconds in stats.queue_seconds:
            queue.observe(seconds)
        self.model_latency.labels(self.model_name, stats.signature).observe(stats.model_seconds)

    def dropped_rows(self, rows: int) -> None:
        self.dropped.labels(self.model_name).inc(rows)

    def page(self) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _run_model(servable: Servable, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """In a batch thread: one call of the signature; the string tensor of a batch is built here, once."""
    import tensorflow as tf

    specs = servable.inputs[signature]
    outputs = servable.functions[signature](**{name: tf.constant(array, dtype=specs[name].dtype)
                                               for name, array in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}


def _json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(content), status=status, headers=headers,
                        content_type="application/json")


# ---------------------------------------------------------------------------------------------------------
# The server


@dataclass
class ModelServer:
    model_name: str
    watcher: VersionWatcher
    batcher: Batcher
    max_request_bytes: int
    metrics: ServerMetrics | None = None
    requests_in_flight: int = field(default=0)

    def servable(self, request: web.Request) -> Servable:
        name, version = request.match_info["model"], request.match_info.get("version")
        spec = f"Specific({name}, {version})" if version else f"Latest({name})"
        current = self.watcher.current
        if name != self.model_name or current is None or (version is not None and int(version) != current.version):
            raise ServingError(404, f"Servable not found for request: {spec}")
        return current

    async def body(self, request: web.Request) -> dict:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ServingError(413, f"request body is larger than the limit of {self.max_request_bytes} bytes "
                                    "(send fewer instances per request, or start serve with a higher "
                                    "--max-request-bytes)") from None
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise ServingError(400, f"JSON Parse error: {error}") from None
        if not isinstance(parsed, dict):
            raise ServingError(400, "JSON Parse error: the request body must be a JSON object")
        return parsed

    async def status(self, request: web.Request) -> web.Response:
        name, version = request.match_info["model"], request.match_info.get("version")
        states = []
        if name == self.model_name:
            if self.watcher.current is not None:
                states.append((self.watcher.current.version, "AVAILABLE"))
            loading = self.watcher.loading
            if loading is not None:
                states.append((loading, "LOADING"))
            if version is not None:
                states = [state for state in states if state[0] == int(version)]
        if not states:
            raise ServingError(404, f"Could not find version {version} of model {name}" if version
                               else f"Could not find any versions of model {name}")
        return _json_response({"model_version_status": [
            {"version": str(v), "state": state, "status": {"error_code": "OK", "error_message": ""}}
            for v, state in sorted(states, reverse=True)]})

    async def metadata(self, request: web.Request) -> web.Response:
        servable = self.servable(request)
        return _json_response({
            "model_spec": {"name": self.model_name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": servable.metadata}})

    async def metrics_page(self, request: web.Request) -> web.Response:
        return self.metrics.page()

    async def call(self, request: web.Request) -> web.Response:
        verb = request.match_info["verb"]
        if verb not in ("predict", "classify"):
            raise ServingError(404, f"Malformed request: POST {request.path} (the verbs are :predict and "
                                    ":classify)")
        self.requests_in_flight += 1  # from its arrival: its body may still be on the way
        try:
            servable = self.servable(request)
            body = await self.body(request)
            handle = self.predict if verb == "predict" else self.classify
            return _json_response(await handle(servable, body))
        finally:
            self.requests_in_flight -= 1

    async def run_signature(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray],
                            rows: int | None) -> dict:
        """Queues the request for a batch (rows=None: not split along a first axis, so it runs alone) and
        waits for its own rows of the outputs; TensorFlow's argument errors become 400s."""
        import tensorflow as tf

        solo = rows is None or not servable.batchable[signature]
        try:
            answer = self.batcher.submit(servable, signature, inputs, rows or 0, solo=solo)
        except Overloaded as error:
            raise ServingError(503, f"the server is overloaded: {error}; retry later",
                               headers={"Retry-After": "1"}) from None
        try:
            return await answer
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            raise ServingError(400, _error_line(error)) from None

    def signature(self, servable: Servable, body: dict, default: str) -> str:
        name = body.get("signature_name") or default
        if not isinstance(name, str) or name not in servable.functions:
            raise ServingError(404, f"Serving signature key \"{name}\" not found; this model has "
                                    f"{sorted(servable.functions)}")
        return name

    async def predict(self, servable: Servable, body: dict) -> dict:
        signature = self.signature(servable, body, DEFAULT_SIGNATURE)
        specs = servable.inputs[signature]
        if ("instances" in body) == ("inputs" in body):
            raise ServingError(400, "the request must have exactly one of \"instances\" (row format) or "
                                    "\"inputs\" (columnar format)")
        if "instances" in body:
            instances = body["instances"]
            if not isinstance(instances, list):
                raise ServingError(400, "\"instances\" must be a JSON list")
            if len(specs) == 1 and all(isinstance(instance, str) for instance in instances):
                columns = {next(iter(specs)): instances}  # plain texts: nothing to unpack
            else:
                columns = {name: [] for name in specs}
                for index, instance in enumerate(instances):
                    named = self._named_inputs(instance, specs, f"instances[{index}]")
                    for name in specs:
                        columns[name].append(named[name])
        else:
            columns = self._named_inputs(body["inputs"], specs, "inputs")
        arrays = {name: _to_array(value, specs[name], f"input {name!r}") for name, value in columns.items()}
        first_axes = {array.shape[0] if array.ndim else None for array in arrays.values()}
        rows = first_axes.pop() if len(first_axes) == 1 else None
        outputs = await self.run_signature(servable, signature, arrays, rows)
        converted = {name: _to_json(name, value) for name, value in outputs.items()}
        if "inputs" in body:
            return {"outputs": next(iter(converted.values())) if len(converted) == 1 else converted}
        if len(converted) == 1:
            return {"predictions": next(iter(converted.values()))}
        return {"predictions": [{name: column[i] for name, column in converted.items()}
                                for i in range(len(body["instances"]))]}

    @staticmethod
    def _named_inputs(value: Any, specs: dict, where: str) -> dict:
        """{input name: value}: a lone value is the signature's only input; an object names every input."""
        if len(specs) == 1:
            (only,) = specs
            if isinstance(value, dict) and set(value) != {"b64"}:
                if set(value) != {only}:
                    raise ServingError(400, f"{where}: the signature takes one input named {only!r}, got "
                                            f"{sorted(value)}")
                return value
            return {only: value}
        if not isinstance(value, dict):
            raise ServingError(400, f"{where}: the signature takes inputs {sorted(specs)}; send an object "
                                    "with one value per input")
        missing, unknown = sorted(set(specs) - set(value)), sorted(set(value) - set(specs))
        if missing or unknown:
            raise ServingError(400, f"{where}: missing inputs {missing}, unknown inputs {unknown}; the "
                                    f"signature takes {sorted(specs)}")
        return value

    async def classify(self, servable: Servable, body: dict) -> dict:
        # TF Serving defaults to serving_default; here that is a predict signature, so the model's
        # classification signature is the default instead (TF Serving needs "signature_name": "classify").
        classify_signatures = sorted(n for n, method in servable.methods.items() if method == CLASSIFY_METHOD)
        default = DEFAULT_SIGNATURE if servable.methods.get(DEFAULT_SIGNATURE) == CLASSIFY_METHOD else (
            classify_signatures[0] if classify_signatures else DEFAULT_SIGNATURE)
        signature = self.signature(servable, body, default)
        if servable.methods[signature] != CLASSIFY_METHOD:
            raise ServingError(400, f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
                                    f"Was: {servable.methods[signature]}")
        examples, context = body.get("examples"), body.get("context", {})
        if not isinstance(examples, list) or not isinstance(context, dict):
            raise ServingError(400, "a :classify request needs \"examples\": a list of JSON objects "
                                    "(and optionally \"context\": one JSON object shared by all examples)")
        serialized = np.empty(len(examples), dtype=object)
        serialized[:] = [_example(example, context, f"examples[{i}]") for i, example in enumerate(examples)]
        (input_name,) = servable.inputs[signature]
        outputs = await self.run_signature(servable, signature, {input_name: serialized}, len(examples))
        scores = outputs["scores"].tolist()
        classes = (_to_json("classes", outputs["classes"]) if "classes" in outputs
                   else [[str(i) for i in range(len(row))] for row in scores])
        return {"results": [[[label, score] for label, score in zip(row_classes, row_scores)]
                            for row_classes, row_scores in zip(classes, scores)]}


def _api(request: web.Request) -> str:
    """The metrics' name for what a request asked: predict, classify, metadata, status or other."""
    verb = request.match_info.get("verb")
    if verb in ("predict", "classify"):
        return verb
    if request.match_info.get("model") is not None and request.method == "GET":
        return "metadata" if request.path.endswith("/metadata") else "status"
    return "other"


def _answer_errors_as_json(metrics: ServerMetrics | None):
    @web.middleware
    async def answer(request: web.Request, handler):
        """Every error answer has TF Serving's shape, {"error": "..."}, including aiohttp's own 404/405; every
        answer to a model route is counted."""
        started = time.monotonic()
        code = 499  # the client went away (the handler was cancelled)
        try:
            response = await _errors_as_json(request, handler)
            code = response.status
            return response
        finally:
            if metrics is not None and request.path != METRICS_PATH:
                metrics.request(_api(request), code, time.monotonic() - started)
    return answer


async def _errors_as_json(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServingError as error:
        return _json_response({"error": str(error)}, status=error.status, headers=error.headers)
    except web.HTTPRequestEntityTooLarge as error:
        return _json_response({"error": error.text}, status=413)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _json_response({"error": f"Malformed request: {request.method} {request.path}"},
                              status=404 if error.status in (404, 405) else error.status)
    except Exception as error:  # a bug answers 500 with one line, never a traceback page
        request.app["log"](f"serve: {request.method} {request.path} failed: {type(error).__name__}: {error}")
        return _json_response({"error": f"internal error: {type(error).__name__}: {error}"}, status=500)


def build_app(server: ModelServer) -> web.Application:
    app = web.Application(middlewares=[_answer_errors_as_json(server.metrics)],
                          client_max_size=server.max_request_bytes)
    app["log"] = server.watcher.log
    model = r"/v1/models/{model:[^/:]+}"
    version = r"/versions/{version:\d+}"
    for prefix in (model, model + version):
        app.router.add_get(prefix, server.status)
        app.router.add_get(prefix + "/metadata", server.metadata)
        app.router.add_post(prefix + r":{verb:[A-Za-z]+}", server.call)
    if server.metrics is not None:
        app.router.add_get(METRICS_PATH, server.metrics_page)
    return app


async def _serve(server: ModelServer, host: str, port: int, log: Callable[[str], None]) -> None:
    # handler_cancellation: a request whose client went away is cancelled, which drops it from its batch queue.
    runner = web.AppRunner(build_app(server), access_log=None, shutdown_timeout=30.0, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = site._server.sockets[0].getsockname()[1]  # the real port when --port 0 was asked
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    options = server.batcher.options
    log(f"serve: listening on http://{host}:{bound_port}/v1/models/{server.model_name} "
        f"(serving folder {server.watcher.serving_dir}; "
        + (f"batching up to {options.max_batch_size} rows, timeout {options.batch_timeout_micros} us, "
           f"{options.num_batch_threads} batch threads)" if options.enabled else
           f"batching off, {options.num_batch_threads} model threads)"))
    await stop.wait()
    log(f"serve: stopping; finishing {server.requests_in_flight} requests in flight")
    server.batcher.drain()
    await runner.cleanup()  # stops accepting, waits for in-flight (and so queued) requests, closes connections


def serve(serving_dir: Path, model_name: str = "agnews", host: str = "127.0.0.1", port: int = 8501,
          poll_seconds: float = 1.0, max_request_bytes: int = 8 << 20,
          batching: BatchingOptions | None = None, log: Callable[[str], None] | None = None) -> None:
    """Runs the server until SIGTERM or SIGINT. Loads the newest version before it starts listening. `log`
    prints its lines (default: to stderr); a line that cannot be written (its disk is full) is dropped and the
    server keeps answering."""
    batching = batching or BatchingOptions()

    def log_to_stderr(message: str) -> None:
        try:
            print(message, file=sys.stderr, flush=True)
        except OSError:
            pass

    log = log or log_to_stderr

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    watcher = VersionWatcher(Path(serving_dir), poll_seconds, log,
                             batching.batch_sizes() if batching.enabled else ())
    watcher.poll_once()
    if watcher.current is None:
        log(f"serve: no loadable version under {serving_dir} yet; answering 404 until one is pushed")
    watcher.start()
    batcher = Batcher(batching, _run_model)
    metrics = ServerMetrics(model_name, watcher, batcher)
    batcher.on_batch, batcher.on_dropped = metrics.batch, metrics.dropped_rows
    server = ModelServer(model_name, watcher, batcher, max_request_bytes, metrics)
    metrics.in_flight.set_function(lambda: server.requests_in_flight)
    try:
        asyncio.run(_serve(server, host, port, log))
    finally:
        watcher.stop()
        batcher.shutdown()
    log("serve: stopped")
