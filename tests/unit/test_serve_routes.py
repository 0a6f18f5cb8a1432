"""The serve command's routes (apps/serving/routes.py): TF Serving's REST paths to the handler that answers
them; a path or method that is none of them has no route (404, "Malformed request")."""
from __future__ import annotations

import pytest

from apps.serving.metrics import METRICS_PATH
from apps.serving.routes import NO_ROUTE, resolve


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/v1/models/agnews", ("status", "status", "agnews", None, None, None)),
    ("HEAD", "/v1/models/agnews", ("status", "status", "agnews", None, None, None)),
    ("GET", "/v1/models/agnews/versions/12", ("status", "status", "agnews", "12", None, None)),
    ("GET", "/v1/models/agnews/labels/stable/metadata",
     ("metadata", "metadata", "agnews", None, "stable", None)),
    ("POST", "/v1/models/agnews:predict", ("call", "predict", "agnews", None, None, "predict")),
    ("POST", "/v1/models/news/versions/3:classify", ("call", "classify", "news", "3", None, "classify")),
    # an unknown verb reaches the handler, which names the verbs in its 404
    ("POST", "/v1/models/agnews:regress", ("call", "other", "agnews", None, None, "regress")),
    ("GET", METRICS_PATH, ("metrics_page", "metrics", None, None, None, None)),
])
def test_each_rest_path_reaches_its_handler(method, path, expected):
    assert tuple(resolve(method, path)) == expected


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/models/agnews:predict"),
    ("POST", "/v1/models/agnews"),
    ("POST", "/v1/models/agnews/metadata"),
    ("PUT", "/v1/models/agnews:predict"),
    ("GET", "/v1/models/agnews/"),
    ("GET", "/v1/models/agnews/versions/x"),
    ("GET", "/v1/models/agnews:"),
    ("GET", "/v2/models"),
    ("POST", METRICS_PATH),
])
def test_other_methods_and_paths_have_no_route(method, path):
    assert resolve(method, path) is NO_ROUTE


def test_without_a_metrics_page_its_path_has_no_route():
    assert resolve("GET", METRICS_PATH, metrics_page=False) is NO_ROUTE
