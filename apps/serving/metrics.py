"""GET /monitoring/prometheus/metrics (TF Serving's path): requests by API and status, latencies, batch sizes,
padding, the queue and the served version, from the server's own Prometheus registry."""
from __future__ import annotations

from aiohttp import web

from apps.serving.batching import Batcher, BatchStats
from apps.serving.versions import VersionWatcher
from apps.serving.worker_pages import SharedPages, merged_page

# TF Serving's --monitoring_config_file default path
METRICS_PATH = "/monitoring/prometheus/metrics"

LATENCY_BUCKETS = (.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .15, .2, .3, .5,
                   .75, 1, 2, 5, 10, 30)
# http_read: the body; json_decode: orjson; to_arrays: inputs checked into arrays; batch_wait: from the queue
# to the handler again (= queue + model_call + concat_split + the hop back to the event loop); to_json:
# outputs to JSON values; json_encode: orjson and the response object.
STAGES = (
    "http_read",
    "json_decode",
    "to_arrays",
    "batch_wait",
    "queue",
    "model_call",
    "concat_split",
    "to_json",
    "json_encode",
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """The Prometheus page at METRICS_PATH. Its own registry: nothing global, one server per process."""

    def __init__(self, model_name: str, watcher: VersionWatcher, batcher: Batcher,
                 shared: tuple[int, SharedPages] | None = None):
        # a worker of `serve --workers N`: (its index, every worker's copy of its page); its page shows all
        self.shared = shared
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

        self.model_name = model_name
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter("serve_requests", "Answered requests by API and HTTP status (499: the client "
                                "went away first)", ["model", "api", "code"], registry=registry)
        self.latency = Histogram("serve_request_latency_seconds", "From a request's arrival to its answer",
                                 ["model", "api"], buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_rows = Histogram(
            "serve_batch_size",
            "Rows of real requests per model call (its _count is the number of model calls)",
            ["model", "signature"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_requests = Histogram("serve_batch_requests", "Requests merged into one model call",
                                        ["model", "signature"], buckets=BATCH_BUCKETS, registry=registry)
        self.padding = Counter("serve_padding_rows", "Rows added to reach an allowed batch size",
                               ["model", "signature"], registry=registry)
        self.queue_latency = Histogram("serve_queue_latency_seconds", "From a request's arrival in the queue "
                                       "to the start of its model call", ["model"], buckets=LATENCY_BUCKETS,
                                       registry=registry)
        self.model_latency = Histogram(
            "serve_model_latency_seconds",
            "One model call, from the batch's input arrays to its output arrays",
            ["model", "signature"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Where a request's time goes, per request: the handler's steps, and the steps of the batch it was in
        # (each request counts its batch's model call whole). Summaries: a sum and a count per stage.
        stages = Summary("serve_stage_seconds", "Time of one step of a request: " + ", ".join(STAGES),
                         ["model", "stage"], registry=registry)
        self.stages = {stage: stages.labels(model_name, stage) for stage in STAGES}
        self.dropped = Counter("serve_dropped_rows", "Queued rows dropped because their client went away",
                               ["model"], registry=registry)
        Gauge("serve_queue_rows", "Rows waiting in the batch queues", ["model"],
              registry=registry).labels(model_name).set_function(batcher.queued_rows)
        Gauge("serve_model_version", "The highest loaded version, which answers requests naming no version "
              "(0: none yet)", ["model"], registry=registry).labels(
            model_name).set_function(lambda: watcher.current.version if watcher.current else 0)
        self.in_flight = Gauge(
            "serve_requests_in_flight",
            "Predict and classify requests received and not yet answered",
            ["model"],
            registry=registry,
        ).labels(model_name)
        self._request_series: dict[tuple[str, int], tuple] = {}

    def request(self, api: str, code: int, seconds: float) -> None:
        """On the event loop, once per answer: the labelled series are looked up once per (api, code)."""
        series = self._request_series.get((api, code))
        if series is None:
            series = self._request_series[api, code] = (self.requests.labels(self.model_name, api, str(code)),
                                                        self.latency.labels(self.model_name, api))
        series[0].inc()
        series[1].observe(seconds)

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
        for seconds in stats.queue_seconds:
            self.stages["queue"].observe(seconds)
            self.stages["model_call"].observe(stats.model_seconds)
            self.stages["concat_split"].observe(stats.split_seconds)

    def stage(self, name: str, seconds: float) -> None:
        self.stages[name].observe(seconds)

    def dropped_rows(self, rows: int) -> None:
        self.dropped.labels(self.model_name).inc(rows)

    def own_page(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def page(self) -> web.Response:
        """This server's page; a worker's: every worker's series, labelled by worker."""
        from prometheus_client import CONTENT_TYPE_LATEST

        body = self.own_page()
        if self.shared is not None:
            index, pages = self.shared
            body = merged_page({other: body if other == index else pages.read(other)
                                for other in range(pages.count)})
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
