"""`agnews-pipeline serve`'s dynamic batching, bounded queue and metrics: real server processes on free ports
of 127.0.0.1 driven by real HTTP clients, with test_serve's two tiny models (their answers tell versions
apart).

The model calls are counted from the server's own /monitoring/prometheus/metrics page:
`serve_batch_size_count` is the number of model calls, `serve_batch_requests_sum` the requests they answered.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import signal
import socket
import threading
import time

import numpy as np
import pytest
from support.cli import agnews_in_process
from support.serving import TEXTS, Server, metric, post, stop, wait_until

from components.pusher.executor import publish_version

LONG_TIMEOUT_US = "60000000"  # 60 s: a batch starts only when it is full, or when the server drains


@pytest.fixture(scope="module")
def batched(tmp_path_factory, models):
    """Batches start only when full (64 rows) or when the server drains: which requests share a call is
    known."""
    serving_dir = tmp_path_factory.mktemp("batched") / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    server = Server(serving_dir, "--max-batch-size", "64", "--batch-timeout-micros", LONG_TIMEOUT_US)
    yield server
    stop(server)


@pytest.fixture(scope="module")
def unbatched(tmp_path_factory, models):
    serving_dir = tmp_path_factory.mktemp("unbatched") / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    server = Server(serving_dir, "--no-batching")
    yield server
    stop(server)


# 8 requests of 1 to 4 texts (20 rows) wait in the queue; a 9th request of 44 texts fills the batch of 64.
PREDICT_REQUESTS = [[TEXTS[(i + j) % len(TEXTS)] for j in range(1 + i % 4)] for i in range(8)]
FILLER = [TEXTS[i % len(TEXTS)] for i in range(64 - sum(map(len, PREDICT_REQUESTS)))]


def test_concurrent_requests_are_merged_into_one_model_call_and_split_back(batched, models):
    calls_before = metric(batched, "serve_batch_size_count", signature="serving_default")
    with concurrent.futures.ThreadPoolExecutor(len(PREDICT_REQUESTS) + 1) as pool:
        answers = [pool.submit(post, batched, "/v1/models/agnews:predict", {"instances": texts})
                   for texts in PREDICT_REQUESTS]
        # Nothing runs until the batch is full: every request waits in the queue (a model call would have
        # answered them, one by one, without batching).
        rows = sum(map(len, PREDICT_REQUESTS))
        wait_until(lambda: metric(batched, "serve_queue_rows") == rows, f"{rows} rows queued")
        assert not any(answer.done() for answer in answers)
        filler = pool.submit(post, batched, "/v1/models/agnews:predict", {"instances": FILLER})
        results = [answer.result(timeout=120) for answer in answers]
        assert filler.result(timeout=120)[0] == 200
    assert metric(batched, "serve_batch_size_count", signature="serving_default") == calls_before + 1
    assert (
        metric(batched, "serve_batch_requests_sum", signature="serving_default") >= len(PREDICT_REQUESTS) + 1
    )
    by_text = dict(zip(TEXTS, models[1]["probabilities"]))
    for texts, (status, body, _) in zip(PREDICT_REQUESTS, results):
        assert status == 200 and len(body["predictions"]) == len(texts)
        # Each request got its own rows back, bit for bit what the model gives for these texts in-process.
        np.testing.assert_array_equal(np.float32([row["probabilities"] for row in body["predictions"]]),
                                      [by_text[text] for text in texts])


def test_classify_requests_are_merged_too(batched, models):
    calls_before = metric(batched, "serve_batch_size_count", signature="classify")
    requests = [[{"title": TEXTS[(i + j) % len(TEXTS)]} for j in range(1 + i % 4)] for i in range(4)]
    requests.append([{"title": TEXTS[0]}] * (64 - sum(map(len, requests))))
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(lambda examples: post(batched, "/v1/models/agnews:classify",
                                                      {"examples": examples}), requests))
    assert metric(batched, "serve_batch_size_count", signature="classify") == calls_before + 1
    by_text = dict(zip(TEXTS, models[1]["probabilities"]))
    for examples, (status, body, _) in zip(requests, results):
        assert status == 200
        np.testing.assert_allclose([[score for _, score in result] for result in body["results"]],
                                   [by_text[example["title"]] for example in examples], atol=1e-6)


def test_batched_answers_are_bit_identical_to_unbatched_ones(batched, unbatched):
    texts = [TEXTS[i % len(TEXTS)] + f" number {i}" for i in range(64)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        # 16 concurrent requests of 4 texts: one batch of 64 on the batched server, 16 calls on the other.
        batched_answers = list(pool.map(lambda i: post(batched, "/v1/models/agnews:predict",
                                                       {"instances": texts[i:i + 4]}), range(0, 64, 4)))
    calls_before = metric(unbatched, "serve_batch_size_count")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        unbatched_answers = list(pool.map(lambda i: post(unbatched, "/v1/models/agnews:predict",
                                                         {"instances": texts[i:i + 4]}), range(0, 64, 4)))
    assert metric(unbatched, "serve_batch_size_count") == calls_before + 16  # one model call per request
    assert metric(unbatched, "serve_batch_requests_sum") == metric(unbatched, "serve_batch_size_count")
    assert [status for status, _, _ in batched_answers + unbatched_answers] == [200] * 32
    assert [body for _, body, _ in batched_answers] == [body for _, body, _ in unbatched_answers]


def test_a_request_whose_client_went_away_is_dropped_from_the_queue(batched):
    dropped_before = metric(batched, "serve_dropped_rows_total")
    rows_before = metric(batched, "serve_batch_size_sum")
    body = json.dumps({"instances": TEXTS[:3]}).encode()
    with socket.create_connection(("127.0.0.1", batched.port), timeout=30) as gone:
        gone.sendall(
            b"POST /v1/models/agnews:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        wait_until(lambda: metric(batched, "serve_queue_rows") == 3, "the request to be queued")
    wait_until(
        lambda: metric(batched, "serve_dropped_rows_total") == dropped_before + 3, "the request to be dropped"
    )
    assert metric(batched, "serve_queue_rows") == 0
    assert post(batched, "/v1/models/agnews:predict", {"instances": TEXTS * 16})[0] == 200
    assert metric(batched, "serve_batch_size_sum") == rows_before + 64  # the batch held only the 64 live rows
    assert metric(batched, "serve_requests_total", api="predict", code="499") >= 1


def test_a_full_queue_answers_503_at_once(tmp_path, models):
    serving_dir = tmp_path / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    # Room for 1 batch of 4 rows; the one batch thread is kept busy by a large request sent first (with the
    # default of one thread per core, an idle second thread would drain the queue and nothing would be
    # refused).
    server = Server(
        serving_dir,
        "--max-batch-size",
        "4",
        "--max-enqueued-batches",
        "1",
        "--num-batch-threads",
        "1",
        "--max-request-bytes",
        str(50 << 20),
    )
    try:
        big = " ".join(TEXTS) * 20
        connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=120) for _ in range(41)]
        started = time.monotonic()
        calls_before = metric(server, "serve_queue_latency_seconds_count")
        connections[0].request(
            "POST", "/v1/models/agnews:predict", body=json.dumps({"instances": [big] * 3000})
        )
        deadline = time.monotonic() + 120
        # its model call has started
        while metric(server, "serve_queue_latency_seconds_count") == calls_before:
            assert time.monotonic() < deadline, "the large request never reached the model"
            time.sleep(0.02)
        for connection in connections[1:]:  # the burst: sent before any answer is read
            connection.request("POST", "/v1/models/agnews:predict", body=json.dumps({"instances": TEXTS[:2]}))
        answers = []
        for connection in connections[1:]:
            response = connection.getresponse()
            answers.append((response.status, json.loads(response.read()), response.getheader("Retry-After"),
                            time.monotonic() - started))
        big_answer = connections[0].getresponse()
        assert big_answer.status == 200 and len(json.loads(big_answer.read())["predictions"]) == 3000
        big_seconds = time.monotonic() - started
        for connection in connections:
            connection.close()
        refused = [answer for answer in answers if answer[0] == 503]
        assert refused, "no request was refused"
        for status, body, retry_after, _seconds in answers:
            assert status in (200, 503), body
            if status == 503:
                assert list(body) == ["error"] and "overloaded" in body["error"] and retry_after == "1"
            else:
                assert len(body["predictions"]) == 2
        # Refused at once: answered before the large request that kept the batch thread busy.
        assert min(seconds for _, _, _, seconds in refused) < big_seconds
        assert metric(server, "serve_requests_total", code="503") == len(refused)
        assert metric(server, "serve_requests_total", code="200") == 1 + len(answers) - len(refused)
    finally:
        stop(server)


def test_a_version_switch_during_batched_traffic_loses_no_request(tmp_path, xla_models):
    """With XLA exports: version 2's warm-up compiles every bucket shape while version 1 answers."""
    models = xla_models
    serving_dir = tmp_path / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    # A batch waits up to 20 ms for more requests: 8 clients keep merging into shared batches.
    server = Server(serving_dir, "--batch-timeout-micros", "20000")
    stop_event = threading.Event()
    clients = 8
    answered: list[list[int]] = [[] for _ in range(clients)]
    failures: list[str] = []

    def client(index: int) -> None:
        texts = [TEXTS[(index + j) % len(TEXTS)] for j in range(1 + index % 3)]
        expected = {
            v: np.float32([dict(zip(TEXTS, models[v]["probabilities"]))[t] for t in texts]) for v in (1, 2)
        }
        while not stop_event.is_set():
            status, body, _ = post(server, "/v1/models/agnews:predict", {"instances": texts})
            if status != 200:
                failures.append(f"{status} {body}")
                continue
            probabilities = np.float32([row["probabilities"] for row in body["predictions"]])
            # XLA rounds a row by its batch's shape: within 1e-6, and the two models differ by far more.
            matches = [v for v in (1, 2) if np.allclose(probabilities, expected[v], rtol=0, atol=1e-6)]
            answered[index].append(matches[0] if len(matches) == 1 else -1)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        wait_until(
            lambda: all(len(a) >= 3 for a in answered) or failures, "every client to be answered 3 times"
        )
        version, _ = publish_version(models[2]["dir"], serving_dir)
        server.wait_for_line(f"version {version} loaded and warmed up", timeout=600)
        wait_until(
            lambda: all(a.count(2) >= 3 for a in answered) or failures, "3 answers from version 2 each"
        )
    finally:
        stop_event.set()
        for thread in threads:
            thread.join(120)
        calls, requests = metric(server, "serve_batch_size_count"), metric(server, "serve_batch_requests_sum")
        stop(server)
    assert failures == []
    for sequence in answered:
        assert -1 not in sequence
        switch = sequence.index(2)
        assert switch > 0 and set(sequence[:switch]) == {1} and set(sequence[switch:]) == {2}
    # merged: under half a call per request
    assert requests == sum(map(len, answered)) and calls < requests / 2


def test_sigterm_drains_queued_requests(batched, models):
    server = batched  # the last test of the batched server
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = [pool.submit(post, server, "/v1/models/agnews:predict", {"instances": TEXTS})
                       for _ in range(6)]
            wait_until(lambda: metric(server, "serve_queue_rows") == 6 * len(TEXTS), "24 rows queued")
            assert not any(answer.done() for answer in answers)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            results = [answer.result(timeout=120) for answer in answers]
            assert server.process.wait(120) == 0
        # Answered when the server drained, not when the 60 s batch timeout ran out.
        assert time.monotonic() - signalled < 50
        for status, body, _ in results:
            assert status == 200
            np.testing.assert_array_equal(np.float32([row["probabilities"] for row in body["predictions"]]),
                                          models[1]["probabilities"])
        server.wait_for_line("serve: stopped")
    finally:
        stop(server)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-batch-size", "0"], "serve: --max-batch-size must be positive, got 0"),
        (["--batch-timeout-micros", "-1"], "serve: --batch-timeout-micros must be 0 or more, got -1"),
        (["--max-enqueued-batches", "0"], "serve: --max-enqueued-batches must be positive, got 0"),
        (["--num-batch-threads", "0"], "serve: --num-batch-threads must be positive, got 0"),
        (
            ["--allowed-batch-sizes", "1,8,32"],
            "serve: --allowed-batch-sizes must be increasing positive sizes ending "
            "with --max-batch-size (256), got 1,8,32",
        ),
        (
            ["--allowed-batch-sizes", "1,x"],
            "serve: --allowed-batch-sizes must be sizes separated by commas, got '1,x'",
        ),
        (
            ["--intra-op-threads", "-1"],
            "serve: --intra-op-threads must be 0 (TensorFlow's choice) or more, got -1",
        ),
    ],
)
def test_bad_batching_flags_give_one_line_and_exit_2(tmp_path, flags, message):
    finished = agnews_in_process("serve", "--serving-dir", tmp_path, *flags, check_code=2)
    assert finished.stderr.strip().splitlines() == [message]
