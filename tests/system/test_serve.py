"""`agnews-pipeline serve`: the real server in a subprocess on a free port, driven with a real HTTP client
(urllib). Two tiny models (support.models.tiny_model, seeds 0 and 1, exported with the session's real
transform graph) are pushed as versions; their answers differ, which tells which version answered.

The tests share one server and run in file order: status and calls on version 1, errors, concurrency, the
push of version 2 while requests run, a broken version, and finally SIGTERM.
"""
from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from support.cli import agnews_in_process
from support.serving import MAX_REQUEST_BYTES, TEXTS, Server

from components.pusher.executor import publish_version
from library import export


def example(title: str, description: str = "") -> bytes:
    return tf.train.Example(features=tf.train.Features(feature={
        "title": tf.train.Feature(bytes_list=tf.train.BytesList(value=[title.encode()])),
        "description": tf.train.Feature(bytes_list=tf.train.BytesList(value=[description.encode()])),
    })).SerializeToString()


def wait_until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory, models):
    serving_dir = tmp_path_factory.mktemp("serving") / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    # Admission control is off: these tests check answers and the drain, and the drain test's 8 big requests
    # at once would be partly refused under the default bound (test_serve_overload covers admission).
    server = Server(serving_dir, "--max-queue-delay-ms", "0")
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait(30)


def test_status_and_metadata(server):
    available = {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert server.call("GET", "/v1/models/agnews") == (200, {"model_version_status": [available]})
    assert server.call("GET", "/v1/models/agnews/versions/1") == (200, {"model_version_status": [available]})
    status, metadata = server.call("GET", "/v1/models/agnews/metadata")
    assert status == 200
    assert metadata["model_spec"] == {"name": "agnews", "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures) == ["classify", "serving_default", "serving_tf_example", "transform_features"]
    assert signatures["classify"]["method_name"] == "tensorflow/serving/classify"
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert signatures["serving_default"]["inputs"]["text"]["dtype"] == "DT_STRING"
    assert sorted(signatures["classify"]["outputs"]) == ["classes", "scores"]
    assert server.call("GET", "/v1/models/agnews/versions/1/metadata") == (200, metadata)


def test_predict_row_and_columnar_formats_match_the_model_in_process(server, models):
    expected = models[1]["probabilities"]
    status, body = server.call("POST", "/v1/models/agnews:predict", {"instances": TEXTS})
    assert status == 200 and len(body["predictions"]) == len(TEXTS)
    np.testing.assert_allclose([row["probabilities"] for row in body["predictions"]], expected, atol=1e-5)
    assert [row["class_name"] for row in body["predictions"]] == [
        export.CLASS_NAMES[i] for i in np.argmax(expected, axis=1)]
    assert [row["class_id"] for row in body["predictions"]] == np.argmax(expected, axis=1).tolist()

    named = server.call("POST", "/v1/models/agnews:predict",
                        {"signature_name": "serving_default", "instances": [{"text": t} for t in TEXTS]})
    assert named == (200, body)
    by_version = server.call("POST", "/v1/models/agnews/versions/1:predict", {"instances": TEXTS})
    assert by_version == (200, body)

    status, columnar = server.call("POST", "/v1/models/agnews:predict", {"inputs": {"text": TEXTS}})
    assert status == 200 and sorted(columnar["outputs"]) == ["class_id", "class_name", "probabilities"]
    np.testing.assert_allclose(columnar["outputs"]["probabilities"], expected, atol=1e-5)
    assert server.call("POST", "/v1/models/agnews:predict", {"inputs": TEXTS}) == (200, columnar)
    assert server.call("POST", "/v1/models/agnews:predict", {"instances": []}) == (200, {"predictions": []})


def test_predict_b64_tf_examples(server, models):
    instances = [{"b64": base64.b64encode(example(t)).decode()} for t in TEXTS]
    status, body = server.call("POST", "/v1/models/agnews:predict",
                               {"signature_name": "serving_tf_example", "instances": instances})
    assert status == 200
    np.testing.assert_allclose(
        [row["probabilities"] for row in body["predictions"]], models[1]["probabilities"], atol=1e-5
    )
    status, columnar = server.call(
        "POST",
        "/v1/models/agnews:predict",
        {"signature_name": "serving_tf_example", "inputs": {"examples": instances}},
    )
    assert status == 200
    np.testing.assert_allclose(columnar["outputs"]["probabilities"], models[1]["probabilities"], atol=1e-5)


def test_classify(server, models):
    status, body = server.call("POST", "/v1/models/agnews:classify",
                               {"signature_name": "classify", "examples": [{"title": t} for t in TEXTS]})
    assert status == 200 and len(body["results"]) == len(TEXTS)
    for result, probabilities in zip(body["results"], models[1]["probabilities"]):
        assert [label for label, _ in result] == list(export.CLASS_NAMES)
        np.testing.assert_allclose([score for _, score in result], probabilities, atol=1e-5)
    # Without signature_name, the model's classification signature; "context" features join every example.
    status, with_context = server.call("POST", "/v1/models/agnews:classify", {
        "context": {"description": "oil prices"}, "examples": [{"title": "Stocks rally"}, {"title": "Goal"}]})
    status_b64, by_b64 = server.call(
        "POST",
        "/v1/models/agnews:predict",
        {
            "signature_name": "serving_tf_example",
            "instances": [
                {"b64": base64.b64encode(example(t, "oil prices")).decode()} for t in ("Stocks rally", "Goal")
            ],
        },
    )
    assert status == status_b64 == 200
    np.testing.assert_allclose([[score for _, score in r] for r in with_context["results"]],
                               [row["probabilities"] for row in by_b64["predictions"]], atol=1e-6)


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        ("POST", "/v1/models/agnews:predict", b'{"instances": [', 400, "JSON Parse error"),
        ("POST", "/v1/models/agnews:predict", b'["a"]', 400, "must be a JSON object"),
        ("POST", "/v1/models/agnews:predict", {"instances": ["a"], "inputs": ["a"]}, 400, "exactly one of"),
        ("POST", "/v1/models/agnews:predict", {"texts": ["a"]}, 400, "exactly one of"),
        ("POST", "/v1/models/agnews:predict", {"instances": "a"}, 400, "must be a JSON list"),
        ("POST", "/v1/models/agnews:predict", {"instances": [1]}, 400, "not of expected type: string"),
        (
            "POST",
            "/v1/models/agnews:predict",
            {"instances": [["a", "b"]]},
            400,
            "does not match the signature",
        ),
        ("POST", "/v1/models/agnews:predict", {"instances": [{"txt": "a"}]}, 400, "one input named 'text'"),
        (
            "POST",
            "/v1/models/agnews:predict",
            {"inputs": {"text": ["a"], "x": ["b"]}},
            400,
            "one input named",
        ),
        (
            "POST",
            "/v1/models/agnews:predict",
            {"signature_name": "serving_tf_example", "instances": [{"b64": "!"}]},
            400,
            "invalid base64",
        ),
        (
            "POST",
            "/v1/models/agnews:predict",
            {"signature_name": "serving_tf_example", "instances": ["text"]},
            400,
            "Could not parse example input",
        ),
        (
            "POST",
            "/v1/models/agnews:classify",
            {"signature_name": "serving_default", "examples": [{"title": "a"}]},
            400,
            "Expected classification signature method_name to be tensorflow/serving/classify",
        ),
        ("POST", "/v1/models/agnews:classify", {"examples": {"title": "a"}}, 400, 'needs "examples"'),
        (
            "POST",
            "/v1/models/agnews:classify",
            {"examples": [{"title": 1.5}, "a"]},
            400,
            "must be a JSON object",
        ),
        (
            "POST",
            "/v1/models/agnews:predict",
            {"signature_name": "nope", "instances": ["a"]},
            404,
            'Serving signature key "nope" not found',
        ),
        (
            "POST",
            "/v1/models/news:predict",
            {"instances": ["a"]},
            404,
            "Servable not found for request: Latest(news)",
        ),
        (
            "POST",
            "/v1/models/agnews/versions/7:predict",
            {"instances": ["a"]},
            404,
            "Servable not found for request: Specific(agnews, 7)",
        ),
        ("GET", "/v1/models/news", None, 404, "Could not find any versions of model news"),
        ("GET", "/v1/models/agnews/versions/7", None, 404, "Could not find version 7 of model agnews"),
        ("GET", "/v1/models/agnews/versions/7/metadata", None, 404, "Specific(agnews, 7)"),
        ("POST", "/v1/models/agnews:regress", {"examples": []}, 404, "Malformed request"),
        ("GET", "/v1/models/agnews:predict", None, 404, "Malformed request"),
        ("GET", "/v2/models", None, 404, "Malformed request"),
        (
            "POST",
            "/v1/models/agnews:predict",
            {"instances": ["x" * MAX_REQUEST_BYTES]},
            413,
            "larger than the limit",
        ),
    ],
)
def test_error_shapes(server, method, path, body, status, message):
    raw = body if isinstance(body, bytes) else None
    answer_status, answer = server.call(method, path, body=None if raw else body, raw=raw)
    assert answer_status == status
    assert list(answer) == ["error"] and message in answer["error"], answer


def test_a_client_that_expects_100_continue_is_told_to_send_its_body(server, models):
    # As curl does with a large body: headers first, then the body only after "100 Continue" (curl waits a
    # second for it otherwise).
    body = json.dumps({"instances": TEXTS[:2]}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(b"POST /v1/models/agnews:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body))
        connection.settimeout(0.5)
        interim = connection.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        connection.settimeout(60)
        connection.sendall(body)
        response = http.client.HTTPResponse(connection)
        response.begin()
        assert response.status == 200
        payload = response.read()
    np.testing.assert_allclose([row["probabilities"] for row in json.loads(payload)["predictions"]],
                               models[1]["probabilities"][:2], atol=1e-5)


def test_concurrent_requests(server, models):
    def one(request_number):
        return server.predict([TEXTS[request_number % len(TEXTS)]])[0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(48)))
    for request_number, probabilities in enumerate(answers):
        np.testing.assert_allclose(probabilities, models[1]["probabilities"][request_number % len(TEXTS)],
                                   atol=1e-5)


def test_push_while_requests_run_switches_without_a_failed_request(server, models):
    # A hidden folder (a push in progress) is never loaded, even if it already holds a saved_model.pb.
    partial = server.serving_dir / ".push-in-progress"
    partial.mkdir()
    shutil.copy(models[2]["dir"] / "saved_model.pb", partial / "saved_model.pb")
    stop = threading.Event()
    answered: list[list[int]] = [[] for _ in range(4)]  # per client thread: which version answered, in order
    failures: list[str] = []

    def client(index: int) -> None:
        while not stop.is_set():
            try:
                probabilities = server.predict(TEXTS)
            except Exception as error:  # recorded; the assertion below reports it
                failures.append(repr(error))
                continue
            matches = [v for v in (1, 2) if np.allclose(probabilities, models[v]["probabilities"], atol=1e-5)]
            answered[index].append(matches[0] if len(matches) == 1 else -1)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(
            lambda: all(len(sequence) >= 3 for sequence in answered) or failures, "3 answers per client"
        )
        assert server.call("GET", "/v1/models/agnews")[1]["model_version_status"][0]["version"] == "1"
        version, _ = publish_version(models[2]["dir"], server.serving_dir)
        assert version == 2
        server.wait_for_line("version 2 loaded and warmed up (3 warm-up requests)")
        wait_until(lambda: all(sequence.count(2) >= 3 for sequence in answered) or failures,
                   "3 answers of version 2 per client")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    for sequence in answered:
        assert -1 not in sequence
        switch = sequence.index(2)  # every client saw the new version ...
        # ... and no v1 after
        assert switch > 0 and set(sequence[:switch]) == {1} and set(sequence[switch:]) == {2}
    assert server.call("GET", "/v1/models/agnews")[1]["model_version_status"][0]["version"] == "2"
    assert server.call("POST", "/v1/models/agnews/versions/1:predict", {"instances": ["a"]})[0] == 404
    np.testing.assert_allclose(server.predict(TEXTS, "/v1/models/agnews/versions/2:predict"),
                               models[2]["probabilities"], atol=1e-5)
    shutil.rmtree(partial)


def test_a_broken_version_is_reported_and_the_served_one_keeps_answering(server, models):
    broken = server.serving_dir / ".broken"
    shutil.copytree(models[1]["dir"], broken)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    broken.rename(server.serving_dir / "3")
    line = server.wait_for_line("version 3 failed to load")
    assert "still serving 2" in line
    np.testing.assert_allclose(server.predict(TEXTS), models[2]["probabilities"], atol=1e-5)
    assert server.call("GET", "/v1/models/agnews")[1]["model_version_status"][0]["version"] == "2"


def predict_requests(server: Server) -> tuple[int, int]:
    """(predict requests in flight, predict requests answered 200) from one read of the server's metrics page
    (a request between the two counts is missed for an instant, never counted twice)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/monitoring/prometheus/metrics",
                                timeout=60) as response:
        samples = dict(line.rsplit(" ", 1) for line in response.read().decode().splitlines()
                       if line and not line.startswith("#"))
    return (round(float(samples.get('serve_requests_in_flight{model="agnews"}', 0))),
            round(float(samples.get('serve_requests_total{api="predict",code="200",model="agnews"}', 0))))


def test_sigterm_finishes_requests_in_flight_and_exits_0(server):
    # Twice as many big requests as the server's 4 model threads, and SIGTERM once all 8 have reached the
    # server while some are still being computed. (A connection the server has not accepted yet when it stops
    # listening is refused or reset, as by any server; a client retries those.)
    batch = ["Stocks rally as oil prices fall " * 50] * 64
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        # a round whose 8 requests were all answered before the last one arrived drains nothing
        for _ in range(5):
            answered_earlier = predict_requests(server)[1]
            in_flight = [pool.submit(server.call, "POST", "/v1/models/agnews:predict", {"instances": batch},
                                     timeout=300) for _ in range(8)]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                computing, answered = predict_requests(server)
                if computing + answered - answered_earlier == 8:
                    break
                # every answer came back: the round is over, with nothing left in flight to drain
                if all(future.done() for future in in_flight):
                    break
                # a poll every 10 ms: polling without a pause took CPU from the server it waits for
                time.sleep(0.01)
            if computing > 0:
                break
            concurrent.futures.wait(in_flight, timeout=300)
        assert computing > 0, "no round had requests in flight once all 8 had arrived"
        answered_before = sum(future.done() for future in in_flight)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0
        statuses = [future.result()[0] for future in in_flight]
    assert statuses == [200] * 8
    finishing = int(server.wait_for_line("requests in flight").split("finishing ")[1].split()[0])
    assert 0 < finishing <= 8 - answered_before  # the server drained requests it was still computing
    server.wait_for_line("serve: stopped")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v1/models/agnews", timeout=5)


def test_serve_bad_flags_give_one_line(tmp_path):
    missing = agnews_in_process("serve", "--serving-dir", tmp_path / "no", check_code=2)
    assert missing.stderr.strip().splitlines() == [
        f"serve: {tmp_path / 'no'} does not exist; push a model first (agnews-pipeline run) or pass "
        "--serving-dir"
    ]
