"""The server of `agnews-pipeline serve`: aiohttp handlers for TF Serving's REST routes, the server, and its
lifecycle. Client code written for TF Serving works unchanged against it:

  GET  /v1/models/<name>[/versions/<N>|/labels/<L>]            version status
  GET  /v1/models/<name>[/versions/<N>|/labels/<L>]/metadata   signatures
  POST /v1/models/<name>[/versions/<N>|/labels/<L>]:predict    {"signature_name"?, "instances": [...]}
                                                               -> {"predictions": [...]}
                                                               {"signature_name"?, "inputs": ...} ->
                                                               {"outputs": ...}
  POST /v1/models/<name>[/versions/<N>|/labels/<L>]:classify   {"signature_name"?, "context"?,
                                                               "examples": [...]}
                                                               -> {"results": [[[class, score], ...], ...]}

apps/serving/routes.py resolves these paths. Every version the version policy keeps loaded answers at
/versions/<N>; no version means the highest loaded one; a label (the --version-labels file) names a version.

Concurrent :predict and :classify requests for the same version and signature are merged into one model call
(apps/serving/batching.py, TF Serving's batching layer; --no-batching turns it off). The model runs in batch
threads so the event loop keeps accepting requests; SIGTERM (or SIGINT) stops accepting, lets queued and
in-flight requests finish, and exits 0.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson
from aiohttp import HttpVersion11, web

from apps.serving.batching import Batcher, BatchingOptions, Overloaded
from apps.serving.codec import (
    ServingError,
    error_line,
    json_example,
    json_response,
    request_array,
    response_json,
)
from apps.serving.metrics import ServerMetrics
from apps.serving.policy import LATEST, VersionPolicy
from apps.serving.routes import Route, request_handler
from apps.serving.versions import CLASSIFY_METHOD, DEFAULT_SIGNATURE, Servable, VersionWatcher, run_model
from apps.serving.worker_pages import PUBLISH_SECONDS
from apps.serving.workers import WorkerSeat


@dataclass
class ModelServer:
    model_name: str
    watcher: VersionWatcher
    batcher: Batcher
    max_request_bytes: int
    metrics: ServerMetrics | None = None
    requests_in_flight: int = field(default=0)

    def servable(self, route: Route) -> Servable:
        """The loaded version a request names: /versions/N, /labels/L, or neither (the highest loaded)."""
        name, version, label = route.model, route.version, route.label
        if label is not None and name == self.model_name and label not in self.watcher.labels:
            raise ServingError(404, f"Unrecognized servable version label: {label}")
        spec = f"Latest({name})"
        if version:
            spec = f"Specific({name}, {version})"
        elif label:
            spec = f"Labeled({name}, {label} = version {self.watcher.labels.get(label)})"
        servable = self.watcher.servable_for(int(version) if version else None, label)
        if name != self.model_name or servable is None:
            raise ServingError(404, f"Servable not found for request: {spec}")
        return servable

    def timed(self, stage: str, since: float) -> float:
        """Counts the time since `since` to `stage` on the metrics page; returns now."""
        now = time.monotonic()
        if self.metrics is not None:
            self.metrics.stage(stage, now - since)
        return now

    async def body(self, request: web.BaseRequest) -> dict:
        try:
            started = time.monotonic()
            # curl sends "Expect: 100-continue" with a large body and waits for this (or a second) before
            # sending it; a refused request never gets here, so its client never sends the body.
            expect = request.headers.get("Expect", "")
            if request.version == HttpVersion11 and expect.lower() == "100-continue":
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0
            raw = await request.read()
            started = self.timed("http_read", started)
        except web.HTTPRequestEntityTooLarge:
            raise ServingError(
                413,
                f"request body is larger than the limit of {self.max_request_bytes} bytes "
                "(send fewer instances per request, or start serve with a higher "
                "--max-request-bytes)",
            ) from None
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise ServingError(400, f"JSON Parse error: {error}") from None
        if not isinstance(parsed, dict):
            raise ServingError(400, "JSON Parse error: the request body must be a JSON object")
        self.timed("json_decode", started)
        return parsed

    async def status(self, request: web.BaseRequest, route: Route) -> web.Response:
        name, version, label = route.model, route.version, route.label
        states = []
        if name == self.model_name:
            states = [(loaded, "AVAILABLE") for loaded in self.watcher.loaded]
            loading = self.watcher.loading
            if loading is not None:
                states.append((loading, "LOADING"))
            if label is not None:
                if label not in self.watcher.labels:
                    raise ServingError(404, f"Unrecognized servable version label: {label}")
                version = self.watcher.labels[label]
            if version is not None:
                states = [state for state in states if state[0] == int(version)]
        if not states:
            raise ServingError(404, f"Could not find version {version} of model {name}" if version
                               else f"Could not find any versions of model {name}")
        return json_response({"model_version_status": [
            {"version": str(v), "state": state, "status": {"error_code": "OK", "error_message": ""}}
            for v, state in sorted(states, reverse=True)]})

    async def metadata(self, request: web.BaseRequest, route: Route) -> web.Response:
        servable = self.servable(route)
        return json_response({
            "model_spec": {"name": self.model_name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": servable.metadata}})

    async def metrics_page(self, request: web.BaseRequest, route: Route) -> web.Response:
        return self.metrics.page()

    async def call(self, request: web.BaseRequest, route: Route) -> web.Response:
        verb = route.verb
        if verb not in ("predict", "classify"):
            raise ServingError(404, f"Malformed request: POST {request.path} (the verbs are :predict and "
                                    ":classify)")
        # from its arrival: its body may still be on the way
        self.requests_in_flight += 1
        try:
            servable = self.servable(route)
            # before the body is read: a refused request costs no decoding and no model work
            self.admit()
            body = await self.body(request)
            handle = self.predict if verb == "predict" else self.classify
            answer = await handle(servable, body)
            started = time.monotonic()
            response = json_response(answer)
            self.timed("json_encode", started)
            return response
        finally:
            self.requests_in_flight -= 1

    def admit(self) -> None:
        """503 at arrival when the estimated time to answer is over --max-queue-delay-ms."""
        try:
            self.batcher.admit()
        except Overloaded as error:
            raise _overloaded(error) from None

    async def run_signature(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray],
                            rows: int | None) -> dict:
        """Queues the request for a batch (rows=None: not split along a first axis, so it runs alone) and
        waits for its own rows of the outputs; TensorFlow's argument errors become 400s."""
        import tensorflow as tf

        solo = rows is None or not servable.batchable[signature]
        started = time.monotonic()
        try:
            answer = self.batcher.submit(servable, signature, inputs, rows or 0, solo=solo)
        except Overloaded as error:
            raise _overloaded(error) from None
        try:
            outputs = await answer
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            raise ServingError(400, error_line(error)) from None
        self.timed("batch_wait", started)
        return outputs

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
                # plain texts: nothing to unpack
                columns = {next(iter(specs)): instances}
            else:
                columns = {name: [] for name in specs}
                for index, instance in enumerate(instances):
                    named = self._named_inputs(instance, specs, f"instances[{index}]")
                    for name in specs:
                        columns[name].append(named[name])
        else:
            columns = self._named_inputs(body["inputs"], specs, "inputs")
        started = time.monotonic()
        arrays = {
            name: request_array(value, specs[name], f"input {name!r}") for name, value in columns.items()
        }
        self.timed("to_arrays", started)
        first_axes = {array.shape[0] if array.ndim else None for array in arrays.values()}
        rows = first_axes.pop() if len(first_axes) == 1 else None
        outputs = await self.run_signature(servable, signature, arrays, rows)
        started = time.monotonic()
        converted = {name: response_json(name, value) for name, value in outputs.items()}
        if "inputs" in body:
            answer = {"outputs": next(iter(converted.values())) if len(converted) == 1 else converted}
        elif len(converted) == 1:
            answer = {"predictions": next(iter(converted.values()))}
        else:
            answer = {"predictions": [{name: column[i] for name, column in converted.items()}
                                      for i in range(len(body["instances"]))]}
        self.timed("to_json", started)
        return answer

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
        default = DEFAULT_SIGNATURE
        if servable.methods.get(DEFAULT_SIGNATURE) != CLASSIFY_METHOD and classify_signatures:
            default = classify_signatures[0]
        signature = self.signature(servable, body, default)
        if servable.methods[signature] != CLASSIFY_METHOD:
            raise ServingError(400, f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
                                    f"Was: {servable.methods[signature]}")
        examples, context = body.get("examples"), body.get("context", {})
        if not isinstance(examples, list) or not isinstance(context, dict):
            raise ServingError(400, "a :classify request needs \"examples\": a list of JSON objects "
                                    "(and optionally \"context\": one JSON object shared by all examples)")
        started = time.monotonic()
        serialized = np.empty(len(examples), dtype=object)
        serialized[:] = [
            json_example(example, context, f"examples[{i}]") for i, example in enumerate(examples)
        ]
        self.timed("to_arrays", started)
        (input_name,) = servable.inputs[signature]
        outputs = await self.run_signature(servable, signature, {input_name: serialized}, len(examples))
        scores = outputs["scores"].tolist()
        classes = (response_json("classes", outputs["classes"]) if "classes" in outputs
                   else [[str(i) for i in range(len(row))] for row in scores])
        return {"results": [[[label, score] for label, score in zip(row_classes, row_scores)]
                            for row_classes, row_scores in zip(classes, scores)]}


def _overloaded(error: Overloaded) -> ServingError:
    return ServingError(503, f"the server is overloaded: {error}; retry later", headers={"Retry-After": "1"})


def build_server(server: ModelServer) -> web.Server:
    """aiohttp's low-level server answering every request with apps/serving/routes.py's handler.
    handler_cancellation: a request whose client went away is cancelled, which drops it from its batch
    queue."""
    handlers = {"status": server.status, "metadata": server.metadata, "call": server.call,
                "metrics_page": server.metrics_page}

    def make_request(message, payload, protocol, writer, task) -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                               client_max_size=server.max_request_bytes)

    return web.Server(request_handler(handlers, server.metrics, server.watcher.log),
                      request_factory=make_request, handler_cancellation=True, access_log=None)


async def _serve(server: ModelServer, host: str, port: int, log: Callable[[str], None],
                 seat: WorkerSeat | None = None) -> None:
    runner = web.ServerRunner(build_server(server), shutdown_timeout=30.0)
    await runner.setup()
    # a worker of `serve --workers N` listens beside the others (SO_REUSEPORT) on its supervisor's port
    site = web.TCPSite(runner, host, seat.port, reuse_port=True) if seat else web.TCPSite(runner, host, port)
    await site.start()
    if seat is not None:
        publishing = asyncio.create_task(_publish_page(server.metrics, seat))
    # the real port when --port 0 was asked
    bound_port = site._server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    options = server.batcher.options
    log(f"serve: listening on http://{host}:{bound_port}/v1/models/{server.model_name} "
        f"(serving folder {server.watcher.serving_dir}, policy {server.watcher.policy}; "
        + (f"batching up to {options.max_batch_size} rows, timeout {options.batch_timeout_micros} us, "
           f"max queue delay {options.max_queue_delay_ms:g} ms, "
           f"{options.num_batch_threads} batch threads)" if options.enabled else
           f"batching off, {options.num_batch_threads} model threads)"))
    await stop.wait()
    log(f"serve: stopping; finishing {server.requests_in_flight} requests in flight")
    if seat is not None:
        publishing.cancel()
    server.batcher.drain()
    # stops accepting, waits for in-flight (and so queued) requests, closes connections
    await runner.cleanup()


async def _publish_page(metrics: ServerMetrics, seat: WorkerSeat) -> None:
    """A worker's copy of its metrics page for the others' scrapes, now (which also tells the supervisor it
    listens) and every PUBLISH_SECONDS. A worker whose supervisor has gone (its parent changed) stops as on
    SIGTERM: nothing would restart or stop it any more."""
    supervisor = os.getppid()
    while os.getppid() == supervisor:
        seat.pages.write(seat.index, metrics.own_page())
        await asyncio.sleep(PUBLISH_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


def _run_event_loop(main: Any) -> None:
    """Runs the server's coroutine on uvloop's event loop when it is installed (the serve extra installs it),
    else on asyncio's. uvloop's loop parses, schedules and wakes handlers from the batch threads in C:
    benchmarks/results/serve_uvloop.md."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _set_op_threads(inter: int, intra: int) -> None:
    """TensorFlow's thread pools (0: its own choice); before the first model loads, which fixes them."""
    if inter or intra:
        import tensorflow as tf

        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)


def serve(serving_dir: Path, model_name: str = "agnews", host: str = "127.0.0.1", port: int = 8501,
          poll_seconds: float = 1.0, max_request_bytes: int = 8 << 20,
          batching: BatchingOptions | None = None, log: Callable[[str], None] | None = None,
          policy: VersionPolicy = LATEST, labels_file: Path | None = None,
          op_threads: tuple[int, int] = (0, 0), seat: WorkerSeat | None = None) -> None:
    """Runs the server until SIGTERM or SIGINT. Loads the newest version before it starts listening. `log`
    prints its lines (default: to stderr); a line that cannot be written (its disk is full) is dropped and the
    server keeps answering. `seat`: one worker of `serve --workers N` (apps/serving/workers.py)."""
    batching = batching or BatchingOptions()

    def log_to_stderr(message: str) -> None:
        try:
            print(message, file=sys.stderr, flush=True)
        except OSError:
            pass

    log = log or log_to_stderr

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _set_op_threads(*op_threads)
    watcher = VersionWatcher(Path(serving_dir), poll_seconds, log,
                             batching.batch_sizes() if batching.enabled else (), policy, labels_file)
    watcher.poll_once()
    if watcher.current is None:
        log(
            f"serve: no loadable version under {serving_dir} for policy {policy} yet; answering 404 "
            "until one "
            "is pushed"
        )
    watcher.start()
    batcher = Batcher(batching, run_model)
    metrics = ServerMetrics(model_name, watcher, batcher, (seat.index, seat.pages) if seat else None)
    batcher.on_batch, batcher.on_dropped = metrics.batch, metrics.dropped_rows
    server = ModelServer(model_name, watcher, batcher, max_request_bytes, metrics)
    metrics.in_flight.set_function(lambda: server.requests_in_flight)
    batcher.requests_held = lambda: server.requests_in_flight
    try:
        _run_event_loop(_serve(server, host, port, log, seat))
    finally:
        watcher.stop()
        batcher.shutdown()
    log("serve: stopped")
