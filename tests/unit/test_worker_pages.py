"""The shared metrics pages of `serve --workers N` (apps/serving/worker_pages.py): a worker's copy of its page
read by another mapping of the same memory, and one Prometheus page over every worker's, labelled."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from apps.serving.worker_pages import SharedPages, merged_page


def a_page(requests: int, seconds: float) -> bytes:
    registry = CollectorRegistry()
    Counter("serve_requests", "Answered requests", ["code"], registry=registry).labels("200").inc(requests)
    Histogram("serve_latency_seconds", "Latency", registry=registry, buckets=(0.1, 1)).observe(seconds)
    return generate_latest(registry)


def test_a_page_written_in_one_mapping_is_read_whole_in_another():
    writer = SharedPages.create(2)
    reader = SharedPages(writer.fd, 2)  # what another process maps from the same descriptor
    assert not reader.published(1) and reader.read(1) == b""
    page = a_page(3, 0.5)
    writer.write(1, page)
    assert reader.published(1) and reader.read(1) == page
    writer.write(1, b"short")
    assert reader.read(1) == b"short"
    assert not reader.published(0)
    writer.clear(1)
    assert not reader.published(1)


def samples(page: bytes) -> dict[tuple, float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(page.decode()) for sample in family.samples}


def test_the_merged_page_holds_every_workers_series_labelled_with_its_worker():
    merged = samples(merged_page({0: a_page(3, 0.5), 1: a_page(4, 2.0), 2: b"not a page {"}))
    assert merged[("serve_requests_total", (("code", "200"), ("worker", "0")))] == 3
    assert merged[("serve_requests_total", (("code", "200"), ("worker", "1")))] == 4
    assert merged[("serve_latency_seconds_bucket", (("le", "1.0"), ("worker", "0")))] == 1
    assert merged[("serve_latency_seconds_bucket", (("le", "1.0"), ("worker", "1")))] == 0
    assert merged[("serve_latency_seconds_sum", (("worker", "1"),))] == 2.0
    # the page that does not parse is left out, not shown wrong
    assert not any(("worker", "2") in labels for _, labels in merged)
