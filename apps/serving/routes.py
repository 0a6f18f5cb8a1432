"""The routes of `agnews-pipeline serve` (TF Serving's REST paths, listed in apps/serving/http.py) and the one
function aiohttp's low-level server calls for every request: it resolves the path with one regular
expression, runs the route's handler, answers every error in TF Serving's shape, {"error": "..."}, and counts
the answer on the metrics page.

No aiohttp Application, router or middleware chain: without them (and with one timer per batch deadline in
the batcher) the event loop's CPU per one-text request went from 239 to 202 µs with an instant model call, and
from 271 to 233 µs with the model, at 16 connections (benchmarks/results/serve_request_path.md).
"""
from __future__ import annotations

import re
import time
from typing import Awaitable, Callable, NamedTuple
from urllib.parse import unquote

from aiohttp import web

from apps.serving.codec import ServingError, json_response
from apps.serving.metrics import METRICS_PATH, ServerMetrics

MODEL_PATH = re.compile(r"/v1/models/(?P<model>[^/:]+)"
                        r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                        r"(?P<rest>/metadata|:[A-Za-z]+)?")
GET_METHODS = ("GET", "HEAD")


class Route(NamedTuple):
    """What a request asked for. `handler` names the ModelServer method that answers it (None: no route, a
    404); `api` is its name on the metrics page: predict, classify, metadata, status or other."""
    handler: str | None
    api: str = "other"
    model: str | None = None
    version: str | None = None
    label: str | None = None
    # :predict, :classify, or a verb the server answers 404
    verb: str | None = None


NO_ROUTE = Route(None)
METRICS_ROUTE = Route("metrics_page", api="metrics")

Handler = Callable[[web.BaseRequest, Route], Awaitable[web.StreamResponse]]


def resolve(method: str, path: str, metrics_page: bool = True) -> Route:
    """The route of `method` `path`: status and metadata answer GET (and HEAD), the verbs POST."""
    if path == METRICS_PATH:
        return METRICS_ROUTE if metrics_page and method in GET_METHODS else NO_ROUTE
    match = MODEL_PATH.fullmatch(path)
    if match is None:
        return NO_ROUTE
    model, version, label, rest = match.group("model", "version", "label", "rest")
    if rest is None or rest == "/metadata":
        if method not in GET_METHODS:
            return NO_ROUTE
        api = "metadata" if rest else "status"
        return Route(api, api, model, version, label)
    if method != "POST":
        return NO_ROUTE
    verb = rest[1:]
    return Route("call", verb if verb in ("predict", "classify") else "other", model, version, label, verb)


def request_handler(handlers: dict[str, Handler], metrics: ServerMetrics | None,
                    log: Callable[[str], None]) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The server's one request handler: `handlers` maps a Route's handler name to the method answering it."""

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        route = resolve(request.method, _path(request), metrics is not None)
        # the client went away (the handler was cancelled)
        code = 499
        try:
            response = await _errors_as_json(request, route, handlers, log)
            code = response.status
            return response
        finally:
            if metrics is not None and route is not METRICS_ROUTE:
                metrics.request(route.api, code, time.monotonic() - started)

    return answer


def _path(request: web.BaseRequest) -> str:
    """The request's path, percent-decoded; read off the request line (aiohttp's request.path builds a URL
    object first)."""
    path = request.raw_path.partition("?")[0]
    if not path.startswith("/"):
        # an absolute URL as the request target
        return request.path
    return unquote(path) if "%" in path else path


async def _errors_as_json(request: web.BaseRequest, route: Route, handlers: dict[str, Handler],
                          log: Callable[[str], None]) -> web.StreamResponse:
    try:
        if route.handler is None:
            raise ServingError(404, f"Malformed request: {request.method} {request.path}")
        return await handlers[route.handler](request, route)
    except ServingError as error:
        return json_response({"error": str(error)}, status=error.status, headers=error.headers)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return json_response({"error": error.text or f"Malformed request: {request.method} {request.path}"},
                             status=error.status)
    # a bug answers 500 with one line, never a traceback page
    except Exception as error:
        log(f"serve: {request.method} {request.path} failed: {type(error).__name__}: {error}")
        return json_response({"error": f"internal error: {type(error).__name__}: {error}"}, status=500)
