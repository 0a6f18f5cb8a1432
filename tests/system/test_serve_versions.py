"""`agnews-pipeline serve`'s version policies (--model-version-policy) and labels (--version-labels): real
server processes on free ports of 127.0.0.1, real HTTP clients, test_serve's two tiny models (their answers
tell which version answered). Hot reload, label moves and rollback happen while clients send requests without
a pause."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from support.models import fresh_process_env
from support.serving import REPO, TEXTS, Server, wait_until

from components.pusher.executor import publish_version


def which_version(probabilities: np.ndarray, models: dict) -> int:
    matches = [v for v in (1, 2) if np.allclose(probabilities, models[v]["probabilities"], atol=1e-5)]
    return matches[0] if len(matches) == 1 else -1


class Clients:
    """Threads that each POST TEXTS to one path without a pause and record (status, version) of every
    answer."""

    def __init__(self, server: Server, models: dict, paths: list[str]):
        self.answers: dict[str, list[tuple[int, int]]] = {path: [] for path in paths}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(server, models, path)) for path in paths]

    def _run(self, server: Server, models: dict, path: str) -> None:
        while not self._stop.is_set():
            try:
                status, body = server.call("POST", path, {"instances": TEXTS})
            except Exception as error:  # a connection error counts as a failed request
                self.answers[path].append((599, -1))
                print(f"{path}: {error!r}")
                continue
            version = which_version(np.array([row["probabilities"] for row in body["predictions"]]), models) \
                if status == 200 else -1
            self.answers[path].append((status, version))

    def __enter__(self) -> "Clients":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def versions_after(self, path: str, start: int) -> list[int]:
        return [version for _, version in self.answers[path][start:]]

    def failures(self) -> list[tuple[str, int]]:
        return [
            (path, status) for path, answers in self.answers.items() for status, _ in answers if status != 200
        ]


def write_labels(path: Path, text: str) -> None:
    """Rewrites the labels file as an operator's tool should: a temporary name, then a rename."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@pytest.fixture
def latest_2(tmp_path, models):
    serving_dir = tmp_path / "serving" / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    labels = tmp_path / "labels.yaml"
    labels.write_text("stable: 1\n")
    server = Server(serving_dir, "--model-version-policy", "latest:2", "--version-labels", str(labels))
    yield server, labels
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait(30)


def test_latest_2_loads_a_new_version_under_load_moves_labels_and_rolls_back(latest_2, models):
    server, labels = latest_2
    latest, stable = "/v1/models/agnews:predict", "/v1/models/agnews/labels/stable:predict"
    with Clients(server, models, [latest, stable]) as clients:
        wait_until(lambda: all(len(a) >= 3 for a in clients.answers.values()), "3 answers per client")
        publish_version(models[2]["dir"], server.serving_dir)
        server.wait_for_line("version 2 loaded and warmed up")
        mark = len(clients.answers[latest])
        wait_until(lambda: clients.versions_after(latest, mark).count(2) >= 3, "3 answers of version 2")
        # Both versions stay loaded (latest:2) and answer at their own paths, with the client still running.
        status = server.call("GET", "/v1/models/agnews")[1]["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "AVAILABLE")]
        for version in (1, 2):
            np.testing.assert_allclose(server.predict(TEXTS, f"/v1/models/agnews/versions/{version}:predict"),
                                       models[version]["probabilities"], atol=1e-5)
        assert set(clients.versions_after(stable, 0)) == {1}  # the label did not follow the new version
        # The label moves when its file changes; a bad edit is reported and the previous labels kept.
        mark = len(clients.answers[stable])
        write_labels(labels, '{"stable": 2, "previous": 1}')
        wait_until(lambda: clients.versions_after(stable, mark).count(2) >= 3, "stable answered by version 2")
        switch = mark + clients.versions_after(stable, mark).index(2)
        assert set(clients.versions_after(stable, switch)) == {2}  # and never by version 1 again
        np.testing.assert_allclose(server.predict(TEXTS, "/v1/models/agnews/labels/previous:predict"),
                                   models[1]["probabilities"], atol=1e-5)
        write_labels(labels, "stable: [2]\n")
        server.wait_for_line("keeping the previous labels")
        mark = len(clients.answers[stable])
        wait_until(lambda: len(clients.answers[stable]) >= mark + 3, "3 more answers")
        assert set(clients.versions_after(stable, mark)) == {2}
        assert (
            server.call("GET", "/v1/models/agnews/labels/stable")[1]["model_version_status"][0]["version"]
            == "2"
        )
        # Rollback: version 2's folder is taken away; version 1 (still loaded) answers everything.
        write_labels(labels, "stable: 1\n")
        os.rename(server.serving_dir / "2", server.serving_dir / ".withdrawn-2")
        server.wait_for_line("version 2 unloaded")
        mark = len(clients.answers[latest])
        wait_until(lambda: len(clients.answers[latest]) >= mark + 3, "3 more answers")
    assert clients.failures() == []
    assert set(clients.versions_after(latest, mark + 1)) == {1}  # one request may have been in flight
    assert {version for _, version in clients.answers[latest]} == {1, 2}
    assert server.call("POST", "/v1/models/agnews/versions/2:predict", {"instances": ["a"]})[0] == 404
    for method, path in (
        ("POST", "/v1/models/agnews/labels/nope:predict"),
        ("GET", "/v1/models/agnews/labels/nope"),
    ):
        status, body = server.call(method, path, {"instances": ["a"]} if method == "POST" else None)
        assert (status, body) == (404, {"error": "Unrecognized servable version label: nope"})


def test_specific_policy_pins_a_version_while_a_newer_one_is_pushed(tmp_path, models):
    serving_dir = tmp_path / "agnews"
    publish_version(models[1]["dir"], serving_dir)
    server = Server(serving_dir, "--model-version-policy", "specific:1")
    try:
        publish_version(models[2]["dir"], serving_dir)
        for _ in range(10):  # a few polls (0.2 s each) pass: version 2 is never loaded
            np.testing.assert_allclose(server.predict(TEXTS), models[1]["probabilities"], atol=1e-5)
        status, _ = server.call("POST", "/v1/models/agnews/versions/2:predict", {"instances": ["a"]})
        assert status == 404
        assert [s["version"] for s in server.call("GET", "/v1/models/agnews")[1]["model_version_status"]] == [
            "1"
        ]
        assert not [line for line in server.lines if "version 2" in line]
    finally:
        server.process.kill()
        server.process.wait(30)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--model-version-policy", "latest:0"],
            "serve: --model-version-policy must be latest (the highest version), "
            "latest:N (the N highest), specific:V[,V...] or all, got 'latest:0'",
        ),
        (["--model-version-policy", "newest"], "got 'newest'"),
        (
            ["--version-labels", "{missing}"],
            "serve: cannot read the version labels file {missing}: No such file or directory",
        ),
        (["--version-labels", "{bad}"], "label 'stable' must name a version number, got 'three'"),
    ],
)
def test_bad_policy_or_labels_give_one_line_and_exit_2(tmp_path, flags, message):
    (tmp_path / "agnews").mkdir()
    bad = tmp_path / "bad.yaml"
    bad.write_text("stable: three\n")
    names = {"missing": tmp_path / "missing.yaml", "bad": bad}
    flags = [flag.format(**names) for flag in flags]
    result = subprocess.run(
        [sys.executable, "-m", "apps.cli", "serve", "--serving-dir", str(tmp_path / "agnews"), *flags],
        cwd=REPO,
        env={**fresh_process_env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(**names) in lines[0], lines
