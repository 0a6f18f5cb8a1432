"""The self-sizing batching policy of `agnews-pipeline serve` (apps/serving/batching.py): real server
processes on free ports of 127.0.0.1, real HTTP clients, test_serve's tiny model. A lone request does not wait
for the batch timeout; bursts are merged into batches (seen on the metrics page's histograms) and every
request gets its own rows back. (A full queue answering 503 at once: test_serve_batching.py.)"""
from __future__ import annotations

import concurrent.futures
import time

import numpy as np
import pytest
from support.serving import TEXTS, Server, metric, post, stop

from components.pusher.executor import publish_version

TIMEOUT_US = 90_000  # 90 ms: below the 100 ms rate window, so the policy decides whether to wait


@pytest.fixture(scope="module")
def server(tmp_path_factory, models):
    serving_dir = tmp_path_factory.mktemp("adaptive") / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    # No delay bound: bursts here test merging, not admission (tests/system/test_serve_overload.py does that).
    server = Server(serving_dir, "--batch-timeout-micros", str(TIMEOUT_US), "--max-queue-delay-ms", "0")
    yield server
    stop(server)


def test_a_lone_request_does_not_wait_for_the_batch_timeout(server, models):
    latencies = []
    for _ in range(10):
        time.sleep(0.3)  # idle: no batch running, no recent request
        started = time.monotonic()
        status, body, _ = post(server, "/v1/models/agnews:predict", {"instances": TEXTS[:1]})
        latencies.append(time.monotonic() - started)
        assert status == 200
        np.testing.assert_allclose(body["predictions"][0]["probabilities"], models[1]["probabilities"][0],
                                   atol=1e-6)
    # A request that waited for the timeout takes 90 ms or more (measured: 55-60 ms with a 50 ms timeout when
    # every request waited); the fastest lone one, its model call included, is under it even on a loaded
    # machine.
    assert min(latencies) < TIMEOUT_US / 1e6, latencies


def test_bursts_are_merged_and_each_request_gets_its_own_rows(server, models):
    by_text = dict(zip(TEXTS, models[1]["probabilities"]))
    # 24 clients, each sending 8 requests of 1 to 4 texts in its own order, without a pause.
    plans = [[[TEXTS[(client + request + j) % len(TEXTS)] for j in range(1 + (client + request) % 4)]
              for request in range(8)] for client in range(24)]
    calls_before = metric(server, "serve_batch_requests_count")
    single_before = metric(server, "serve_batch_requests_bucket", le="1.0")
    rows_before = metric(server, "serve_batch_size_sum")

    def client(plan):
        return [post(server, "/v1/models/agnews:predict", {"instances": texts}) for texts in plan]

    with concurrent.futures.ThreadPoolExecutor(len(plans)) as pool:
        answers = list(pool.map(client, plans))
    for plan, results in zip(plans, answers):
        for texts, (status, body, _) in zip(plan, results):
            assert status == 200 and len(body["predictions"]) == len(texts)
            np.testing.assert_allclose([row["probabilities"] for row in body["predictions"]],
                                       [by_text[text] for text in texts], atol=1e-6)
    requests = sum(map(len, plans))
    calls = metric(server, "serve_batch_requests_count") - calls_before
    merged = calls - (metric(server, "serve_batch_requests_bucket", le="1.0") - single_before)
    assert metric(server, "serve_batch_size_sum") - rows_before == sum(len(t) for plan in plans for t in plan)
    assert merged > 0, "no model call held more than one request"
    assert calls < requests, f"{calls} model calls for {requests} requests"


def test_a_closed_loop_of_clients_is_not_held_to_the_timeout(server, models):
    """8 clients, each sending its next request as soon as it has its answer: once all 8 are waiting, their
    batch starts, without waiting out the 90 ms timeout that holds a batch while more requests may come."""
    clients, rounds = 8, 12

    def client(index):
        latencies = []
        for request in range(rounds):
            text = TEXTS[(index + request) % len(TEXTS)]
            started = time.monotonic()
            status, body, _ = post(server, "/v1/models/agnews:predict", {"instances": [text]})
            latencies.append(time.monotonic() - started)
            assert status == 200
            np.testing.assert_allclose(body["predictions"][0]["probabilities"],
                                       models[1]["probabilities"][TEXTS.index(text)], atol=1e-6)
        return latencies[2:]  # the first rounds: the server has not yet seen every client

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        latencies = sorted(latency for result in pool.map(client, range(clients)) for latency in result)
    # Held to the timeout, the median request takes 90 ms or more (measured: 96-97 ms with the server's count
    # of the requests it holds cut off from the batcher); answered once every client is in, 8-10 ms.
    assert latencies[len(latencies) // 2] < TIMEOUT_US / 1e6 / 2, latencies
