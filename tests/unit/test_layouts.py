"""library/layouts.py (with library/folder_layouts.py for the folders around the artifacts), the one owner of
every on-disk layout: each artifact type is written through the module and read back through it, a drift
between a writer and its reader fails here, and no other module of the pipeline spells a layout name
itself."""
from __future__ import annotations

import ast
import glob
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from contract.artifacts import ComponentError
from library import folder_layouts, layouts

PROJECT = Path(__file__).resolve().parents[2]

SPEC = layouts.ModelInputSpec(
    embedding_input_dim=102,
    vocab_size=100,
    num_oov_buckets=1,
    max_length=64,
    num_classes=4,
    text_features="title_description",
    bucket_upper_bounds=(8, 16, 64),
    padding_id=0,
    vocab_filename="vocab_tokens",
)


def test_importing_the_module_loads_no_heavy_library():
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, library.layouts; "
            "print(sorted(m for m in ('tensorflow', 'apache_beam', 'tensorflow_transform', 'keras') if "
            "m in sys.modules))",
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


def test_splits_and_classes():
    assert layouts.SPLITS == ("train", "eval", "test")
    assert set(layouts.SOURCE_SPLITS) < set(layouts.SPLITS)
    assert layouts.NUM_CLASSES == len(layouts.CLASS_NAMES) == 4


# ----------------------------------------------------------------------------------------------------------
# examples


def test_example_files_are_found_by_the_shard_names_writers_use(tmp_path):
    folder = layouts.split_dir(tmp_path, "train")
    folder.mkdir()
    written = [folder / layouts.shard_file_name(shard, 3) for shard in range(3)]
    for path in written:
        path.write_bytes(b"")
    # A writer's temporary file (hidden) and an unrelated file are not example files.
    (folder / f".{layouts.shard_file_name(0, 3)}.tmp-1234").write_bytes(b"")
    (folder / "notes.txt").write_text("")
    assert layouts.examples_files(tmp_path, "train") == [str(path) for path in written]
    assert layouts.examples_files(tmp_path, "eval") == []
    assert sorted(glob.glob(layouts.example_file_pattern(folder))) == [str(path) for path in written]


def test_counts_and_quarantine(tmp_path):
    counts = {"splits": {"train": 3, "eval": 1, "test": 2}, "rows_read": 6}
    layouts.write_counts(tmp_path, counts)
    assert layouts.read_counts(tmp_path) == counts
    assert layouts.quarantine_file(tmp_path).parent == tmp_path
    with pytest.raises(ComponentError, match=f"{layouts.COUNTS_FILE} is missing.*ingest"):
        layouts.read_counts(tmp_path / "elsewhere")


# ----------------------------------------------------------------------------------------------------------
# schema, statistics, anomalies


def test_schema_statistics_and_anomalies(tmp_path):
    assert layouts.schema_file(tmp_path).name.endswith(".pbtxt")
    statistics = {"train": {"rows": 3}, "eval": {"rows": 1}, "test": {"rows": 2}}
    layouts.write_statistics(tmp_path / "statistics", statistics)
    assert layouts.read_statistics(tmp_path / "statistics") == statistics
    anomalies = [{"split": "eval", "feature": "label", "kind": "out_of_domain", "message": "m", "count": 1}]
    layouts.write_anomalies(tmp_path / "anomalies", anomalies)
    assert layouts.read_anomalies(tmp_path / "anomalies") == anomalies


# ----------------------------------------------------------------------------------------------------------
# transform_graph: the ModelInputSpec


def test_model_input_spec_round_trips_and_is_frozen(tmp_path):
    layouts.write_model_input(tmp_path, SPEC)
    assert layouts.read_model_input(tmp_path) == SPEC
    with pytest.raises(AttributeError):
        SPEC.num_classes = 5  # frozen: model code cannot change what the transform wrote
    # The file is plain, stable JSON: rewriting what was read gives the same bytes (the trainer's copy of it
    # in the model artifact equals the transform's).
    first = (tmp_path / layouts.MODEL_INPUT_FILE).read_bytes()
    layouts.write_model_input(tmp_path, layouts.read_model_input(tmp_path))
    assert (tmp_path / layouts.MODEL_INPUT_FILE).read_bytes() == first
    assert json.loads(first)["bucket_upper_bounds"] == [8, 16, 64]


@pytest.mark.parametrize("change, message", [
    ({"num_classes": 0}, "num_classes must be a positive integer"),
    ({"embedding_input_dim": "many"}, "embedding_input_dim must be a positive integer"),
    ({"bucket_upper_bounds": []}, "bucket_upper_bounds must be a non-empty list"),
    ({"vocab_filename": None}, None),  # a value model code does not check is passed through
])
def test_model_input_values_are_checked(tmp_path, change, message):
    layouts.write_model_input(tmp_path, SPEC)
    path = tmp_path / layouts.MODEL_INPUT_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    if message is None:
        assert layouts.read_model_input(tmp_path).vocab_filename is None
    else:
        with pytest.raises(ComponentError, match=message):
            layouts.read_model_input(tmp_path)


def test_vocabulary_file_is_inside_the_transform_graph(tmp_path):
    path = layouts.vocabulary_file(tmp_path, SPEC)
    assert path.name == SPEC.vocab_filename and path.is_relative_to(tmp_path / layouts.TRANSFORM_FN_DIR)


def test_model_input_missing_file_or_field_names_the_file(tmp_path):
    with pytest.raises(
        ComponentError, match=f"{re.escape(str(tmp_path / layouts.MODEL_INPUT_FILE))} is missing"
    ):
        layouts.read_model_input(tmp_path)
    layouts.write_model_input(tmp_path, SPEC)
    path = tmp_path / layouts.MODEL_INPUT_FILE
    values = json.loads(path.read_text())
    del values["max_length"]
    path.write_text(json.dumps(values))
    with pytest.raises(ComponentError, match="lacks max_length"):
        layouts.read_model_input(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# transformed_examples: bucket folders


def test_bucket_folder_names_parse_back_to_their_bound():
    for upper in (1, 8, 16, 64, 256, 10_000):
        assert layouts.parse_bucket_dir(layouts.bucket_dir_name(upper)) == upper
    for name in ("bucket_", "bucket_x", "bucket_8.tmp", ".bucket_8", "bucket_-1", "8", layouts.BUCKETS_FILE):
        assert layouts.parse_bucket_dir(name) is None, name


def test_every_length_goes_to_the_first_bucket_whose_bound_holds_it():
    uppers = [8, 16, 64]
    assert [layouts.bucket_index(n, uppers) for n in (0, 1, 8, 9, 16, 17, 64, 65)] == [0, 0, 0, 1, 1, 2, 2, 2]
    assert layouts.bucket_of(9, uppers) == layouts.bucket_dir_name(16)


def test_bucket_files_read_what_a_writer_laid_out_in_numeric_order(tmp_path):
    uppers = [8, 16, 128]  # as text, "bucket_128" < "bucket_16" < "bucket_8": the order must be numeric
    for length in (3, 12, 100):
        folder = layouts.split_dir(tmp_path, "train") / layouts.bucket_of(length, uppers)
        folder.mkdir(parents=True)
        (folder / layouts.shard_file_name(0, 1)).write_bytes(b"")
    (layouts.split_dir(tmp_path, "train") / "bucket_notes").mkdir()  # not a bucket folder: ignored
    files = layouts.bucket_files(tmp_path, "train")
    assert list(files) == uppers
    assert all(len(paths) == 1 and Path(paths[0]).parent.name == layouts.bucket_dir_name(upper)
               for upper, paths in files.items())
    with pytest.raises(ComponentError, match="no 'eval' split"):
        layouts.bucket_files(tmp_path, "eval")
    layouts.split_dir(tmp_path, "test").mkdir()
    with pytest.raises(ComponentError, match="holds no bucket_<upper>/ folders"):
        layouts.bucket_files(tmp_path, "test")


def test_buckets_report_round_trips(tmp_path):
    report = {
        "batch_size": 64,
        "splits": {"train": {"buckets": {layouts.bucket_dir_name(8): {"examples": 2}}}},
    }
    layouts.write_buckets(tmp_path, report)
    assert layouts.read_buckets(tmp_path) == report


# ----------------------------------------------------------------------------------------------------------
# best_hyperparameters, model, model_run


def test_best_hyperparameters_round_trip(tmp_path):
    result = {"architecture": "lstm", "values": {"units": 16}, "tuned": False, "objective": "val_loss",
              "best_score": None}
    layouts.write_best_hyperparameters(tmp_path, result)
    assert layouts.read_best_hyperparameters(tmp_path) == result
    with pytest.raises(ComponentError, match="not written by the tuner"):
        layouts.read_best_hyperparameters(tmp_path / "missing")


def test_multi_worker_job_round_trips_and_is_none_until_written(tmp_path):
    assert folder_layouts.read_multi_worker_job(tmp_path) is None
    job = {"workers": ["127.0.0.1:1", "127.0.0.1:2"], "seed": 7}
    folder_layouts.write_multi_worker_job(tmp_path, job)
    # the pipeline root the workers share
    assert folder_layouts.multi_worker_job_file(tmp_path).parent == tmp_path
    assert folder_layouts.read_multi_worker_job(tmp_path) == job
    # no temporary file left
    assert [p.name for p in tmp_path.iterdir()] == [folder_layouts.MULTI_WORKER_JOB_FILE]


def test_model_and_model_run_layout(tmp_path):
    model_dir, run_dir = tmp_path / "model", tmp_path / "model_run"
    with pytest.raises(ComponentError, match="holds no SavedModel"):
        layouts.existing_serving_model_dir(model_dir)
    serving = layouts.serving_model_dir(model_dir)
    serving.mkdir(parents=True)
    (serving / layouts.SAVED_MODEL_FILE).write_bytes(b"")
    assert layouts.has_saved_model(serving) and layouts.existing_serving_model_dir(model_dir) == serving
    assert layouts.keras_model_file(model_dir).is_relative_to(model_dir)
    layouts.write_model_input(model_dir, SPEC)
    assert layouts.read_model_input(model_dir) == SPEC
    history = {"epochs": [{"epoch": 1, "loss": 1.0}], "best_epoch": 1}
    layouts.write_history(run_dir, history)
    assert layouts.read_history(run_dir) == history
    assert layouts.tensorboard_dir(run_dir).parent == run_dir


# ----------------------------------------------------------------------------------------------------------
# evaluation, blessing, pushed_model, serving folder


def test_metrics_blessing_and_push_round_trip(tmp_path):
    metrics = {"accuracy": 0.9, "length_buckets": {layouts.bucket_dir_name(8): {"accuracy": 0.8}}}
    layouts.write_metrics(tmp_path / "evaluation", metrics)
    assert layouts.read_metrics(tmp_path / "evaluation") == metrics
    thresholds = {"min_accuracy": 0.8, "max_accuracy_drop": 0.005}
    layouts.write_blessing(tmp_path / "blessing", blessed=True, reason="good", accuracy=0.9,
                           baseline_accuracy=None, thresholds=thresholds)
    assert layouts.read_blessing(tmp_path / "blessing") == {
        "blessed": True,
        "reason": "good",
        "accuracy": 0.9,
        "baseline_accuracy": None,
        "thresholds": thresholds,
    }
    with pytest.raises(ComponentError, match="blessing artifact was not written by the evaluator"):
        layouts.read_blessing(tmp_path / "evaluation")
    record = {"pushed": True, "version": 3, "path": "/srv/agnews/3", "reason": "blessed: good"}
    layouts.write_push(tmp_path / "pushed_model", record)
    assert layouts.read_push(tmp_path / "pushed_model") == record


def test_serving_versions_are_the_numeric_folders(tmp_path):
    assert folder_layouts.serving_versions(tmp_path / "absent") == []
    for version in (2, 10, 1):
        folder_layouts.serving_version_dir(tmp_path, version).mkdir()
    (tmp_path / ".push-123-abcd").mkdir()  # a pusher's temporary folder
    (tmp_path / "10.bak").mkdir()
    (tmp_path / "11").write_text("a file, not a version")
    assert folder_layouts.serving_versions(tmp_path) == [1, 2, 10]
    # hidden: TF Serving and serving_versions skip it
    assert folder_layouts.PUSH_TEMPORARY_PREFIX.startswith(".")

    version_dir = folder_layouts.serving_version_dir(tmp_path, 2)
    assert folder_layouts.read_served_push_record(version_dir) is None  # pushed by hand or by older code
    folder_layouts.write_served_push_record(version_dir, {"model_fingerprint": "abc"})
    assert folder_layouts.read_served_push_record(version_dir) == {"model_fingerprint": "abc"}
    (version_dir / layouts.PUSH_FILE).write_text("{not json")
    assert folder_layouts.read_served_push_record(version_dir) == {}


# ----------------------------------------------------------------------------------------------------------
# No other module spells a layout


# Every file name the layouts module defines (its *_FILE constants; of a path, the file's own name), so a file
# added there is checked here without editing this list. Not checked: report.md, which is also the name of the
# run report (runs/<run_id>/report.md, pipeline/report.py), a file of the pipeline root rather than of an
# artifact.
LAYOUT_MODULES = (layouts, folder_layouts)
LAYOUT_NAMES = sorted(
    {
        value.rpartition("/")[2]
        for module in LAYOUT_MODULES
        for name, value in vars(module).items()
        if name.endswith("_FILE") and isinstance(value, str)
    }
    - {layouts.EVALUATION_REPORT_FILE}
)
LAYOUT_PATTERNS = [
    re.compile(r"(^|/)serving_model(/|$)"),
    re.compile(r"bucket_(\d|\*|<|$)"),
    re.compile(r"part-"),
    re.compile(re.escape(layouts.EXAMPLE_FILE_SUFFIX)),
]
SHARED_CONSTANTS = {"SPLITS", "SOURCE_SPLITS", "CLASS_NAMES", "NUM_CLASSES"}


def _ignored_strings(tree: ast.AST) -> set[int]:
    """Docstrings, and strings used as a dict key, an index or a .get() key: JSON field names, not paths."""
    ignored = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
        ):
            ignored.add(id(body[0].value))
        if isinstance(node, ast.Dict):
            ignored |= {id(key) for key in node.keys if key is not None}
        if isinstance(node, ast.Subscript):
            ignored.add(id(node.slice))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            ignored |= {id(argument) for argument in node.args[:1]}
    return ignored


def layout_spellings(path: Path) -> list[str]:
    """What `path` spells itself of an artifact layout: layout names in string literals, and its own
    definition of a constant the layouts module owns."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    ignored = _ignored_strings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in ignored:
            found += [name for name in LAYOUT_NAMES if name in node.value]
            found += [pattern.pattern for pattern in LAYOUT_PATTERNS if pattern.search(node.value)]
        if isinstance(node, ast.Assign):
            found += [f"{target.id} =" for target in node.targets
                      if isinstance(target, ast.Name) and target.id in SHARED_CONSTANTS]
        if isinstance(node, (ast.Tuple, ast.List)) and [
            getattr(item, "value", None) for item in node.elts
        ] == list(layouts.SPLITS):
            found.append("the split names")
    return found


def test_the_checker_finds_a_spelled_layout(tmp_path):
    module = tmp_path / "drifted.py"
    module.write_text(
        '"""Docstrings may say metrics.json."""\nNUM_CLASSES = 4\n'
        'path = root / "model_input.json"\nname = f"bucket_{upper}"\nrow = {"serving_model": 1}\n'
        'for split in ("train", "eval", "test"):\n    pass\n'
    )
    assert sorted(layout_spellings(module)) == sorted(["NUM_CLASSES =", layouts.MODEL_INPUT_FILE,
                                                       r"bucket_(\d|\*|<|$)", "the split names"])


def test_the_names_come_from_the_layouts_module():
    assert {layouts.SAVED_MODEL_FILE, layouts.FINGERPRINT_FILE, layouts.COUNTS_FILE, "model.keras",
            "tf_serving_warmup_requests", folder_layouts.MULTI_WORKER_JOB_FILE} <= set(LAYOUT_NAMES)
    assert len(LAYOUT_NAMES) >= 20


def test_no_module_but_layouts_spells_an_artifact_layout():
    modules = [
        path
        for folder in ("contract", "library", "components", "pipeline", "engines", "apps", "benchmarks")
        for path in sorted((PROJECT / folder).rglob("*.py"))
        if path.name not in ("layouts.py", "folder_layouts.py")
    ]
    assert len(modules) > 20
    spelled = {str(path.relative_to(PROJECT)): found for path in modules if (found := layout_spellings(path))}
    assert spelled == {}, "use library/layouts.py instead of spelling these names"
