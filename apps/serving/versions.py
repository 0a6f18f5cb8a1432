"""The served SavedModel versions, after TF Serving's file-system source and its model_version_policy
(default: the latest version; apps/serving/policy.py): the serving folder is polled; a version the policy
wants is loaded and warmed up (replaying assets.extra/tf_serving_warmup_requests) in the background while the
loaded ones keep answering, then versions the policy no longer wants are unloaded. Hidden folders (the
pusher's `.push-*` temporaries) are never looked at, and a version that fails to load or warm up is reported
and retried only when its files change. run_model is one call of a loaded version's signature, in a batch
thread."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from apps.serving.codec import error_line
from apps.serving.policy import LATEST, PolicyError, VersionPolicy, file_stamp, read_labels
from library.folder_layouts import serving_version_dir, serving_versions
from library.layouts import SAVED_MODEL_FILE, WARMUP_FILE, has_saved_model

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
DEFAULT_SIGNATURE = "serving_default"


@dataclass
class Servable:
    """One loaded version: the SavedModel and, per signature, its function, inputs, outputs and method."""
    version: int
    path: Path
    # keeps the SavedModel's variables alive
    model: Any
    functions: dict[str, Any]
    # signature -> input name -> tf.TensorSpec
    inputs: dict[str, dict[str, Any]]
    methods: dict[str, str]
    # signature_def map in TF Serving's JSON form
    metadata: dict[str, Any]
    # signature -> every input has a free first (batch) dimension
    batchable: dict[str, bool]


def load_servable(path: Path, version: int, batch_sizes: tuple[int, ...] = ()) -> tuple[Servable, int]:
    """Loads a version folder and replays its warm-up requests; returns (servable, number of requests)."""
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    model = tf.saved_model.load(str(path))
    proto = saved_model_pb2.SavedModel.FromString((path / SAVED_MODEL_FILE).read_bytes())
    signature_defs = {name: definition for name, definition in proto.meta_graphs[0].signature_def.items()
                      if name in model.signatures}
    functions = {name: model.signatures[name] for name in signature_defs}
    servable = Servable(
        version=version,
        path=path,
        model=model,
        functions=functions,
        inputs={name: dict(function.structured_input_signature[1]) for name, function in functions.items()},
        methods={name: definition.method_name for name, definition in signature_defs.items()},
        metadata={
            "signature_def": {
                name: json_format.MessageToDict(definition, preserving_proto_field_name=True)
                for name, definition in sorted(signature_defs.items())
            }
        },
        batchable={
            name: all(
                spec.shape.rank and spec.shape[0] is None
                for spec in function.structured_input_signature[1].values()
            )
            for name, function in functions.items()
        },
    )
    return servable, _warm_up(servable, batch_sizes)


def _warm_up(servable: Servable, batch_sizes: tuple[int, ...] = ()) -> int:
    """Replays the warm-up file's PredictLog requests, as TF Serving does before a version takes traffic, then
    (once per signature) each request's first row repeated to every batch size the batcher pads to, so the
    first batch of each size does not pay for it. An XLA export's file holds one request per compiled shape
    (library/xla_buckets.py), so after this no request compiles. (Replaying them on 2 threads was not faster
    on 2 loaded cores: 116 s against 79 s for a tiny model's 66 requests.)"""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    warmup_file = servable.path / WARMUP_FILE
    if not warmup_file.is_file():
        return 0
    count = 0
    sized: set[str] = set()
    for record in tf.data.TFRecordDataset(str(warmup_file)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            # this model's warm-up file holds predict requests only
            continue
        request = log.predict_log.request
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        servable.functions[signature](**{name: tf.constant(array) for name, array in inputs.items()})
        count += 1
        if signature not in sized and servable.batchable[signature] and all(len(a) for a in inputs.values()):
            sized.add(signature)
            for size in batch_sizes:
                servable.functions[signature](**{name: tf.constant(np.repeat(array[:1], size, axis=0))
                                                 for name, array in inputs.items()})
    return count


def _folder_stamp(path: Path) -> tuple:
    """Changes when any file in the folder changes: a failed version is retried only after that."""
    return tuple(sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                        for p in path.rglob("*") if p.is_file()))


class VersionWatcher:
    """Keeps the versions under `serving_dir` that `policy` selects loaded; polls for changes in a thread.

    `loaded` is replaced by one assignment, never changed in place: a request keeps the servable it took, and
    readers on the event loop need no lock. A version leaves `loaded` only after the versions replacing it are
    loaded (TF Serving's availability-preserving policy), and the last loaded version is never dropped for
    nothing. The labels file, if any, is re-read whenever it changes."""

    def __init__(self, serving_dir: Path, poll_seconds: float, log: Callable[[str], None],
                 batch_sizes: tuple[int, ...] = (), policy: VersionPolicy = LATEST,
                 labels_file: Path | None = None):
        self.serving_dir = serving_dir
        self.poll_seconds = poll_seconds
        self.log = log
        # warmed up at load
        self.batch_sizes = batch_sizes
        self.policy = policy
        self.loaded: dict[int, Servable] = {}
        self.loading: int | None = None
        # version -> (folder stamp, error)
        self.failed: dict[int, tuple[tuple, str]] = {}
        self.labels_file = labels_file
        self.labels: dict[str, int] = {}
        self._labels_stamp: tuple | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_forever, name="version-watcher", daemon=True)

    @property
    def current(self) -> Servable | None:
        """The highest loaded version: the one a request naming no version gets."""
        loaded = self.loaded
        return loaded[max(loaded)] if loaded else None

    def versions_on_disk(self) -> list[int]:
        return sorted((version for version in serving_versions(self.serving_dir)
                       if has_saved_model(serving_version_dir(self.serving_dir, version))), reverse=True)

    def poll_once(self) -> None:
        self._read_labels()
        keep: list[int] = []
        for version in self.policy.candidates(self.versions_on_disk()):
            if self.policy.limit is not None and len(keep) >= self.policy.limit:
                break
            if version in self.loaded or self._load(version):
                keep.append(version)
        dropped = sorted(set(self.loaded) - set(keep))
        if keep and dropped:
            self.loaded = {version: servable for version, servable in self.loaded.items() if version in keep}
            self.log(
                f"serve: version{'s' if len(dropped) > 1 else ''} {', '.join(map(str, dropped))} unloaded "
                f"(policy {self.policy}); serving {self._serving()}"
            )

    def _serving(self) -> str:
        return ", ".join(map(str, sorted(self.loaded, reverse=True))) or "nothing"

    def _load(self, version: int) -> bool:
        """Loads and warms up one version into `loaded`; False if it fails (now, or before and unchanged)."""
        path = serving_version_dir(self.serving_dir, version)
        stamp = _folder_stamp(path)
        if version in self.failed and self.failed[version][0] == stamp:
            # failed before and unchanged since
            return False
        self.loading = version
        started = time.monotonic()
        try:
            servable, warmup_count = load_servable(path, version, self.batch_sizes)
        # keep serving the others; report why
        except Exception as error:
            message = error_line(error)
            self.failed[version] = (stamp, message)
            self.log(f"serve: version {version} failed to load, still serving {self._serving()}: {message}")
            return False
        finally:
            self.loading = None
        self.failed.pop(version, None)
        previous = self.current
        self.loaded = {**self.loaded, version: servable}
        switched = previous is not None and version > previous.version
        self.log(f"serve: version {version} loaded and warmed up ({warmup_count} warm-up requests) in "
                 f"{time.monotonic() - started:.1f}s; now serving it"
                 + (f" instead of version {previous.version}" if switched else "")
                 + (f" (loaded: {self._serving()})" if len(self.loaded) > 1 else ""))
        return True

    def _read_labels(self) -> None:
        """Re-reads the labels file when it changed; a bad file is reported and the previous labels kept."""
        if self.labels_file is None:
            return
        stamp = file_stamp(self.labels_file)
        if stamp == self._labels_stamp:
            return
        self._labels_stamp = stamp
        try:
            labels = read_labels(self.labels_file)
        except PolicyError as error:
            self.log(f"serve: {error}; keeping the previous labels {self.labels}")
            return
        if labels != self.labels:
            self.labels = labels
            self.log(f"serve: version labels now {labels or 'none'}")

    def servable_for(self, version: int | None = None, label: str | None = None) -> Servable | None:
        """The loaded servable a request names (no version and no label: the highest), or None."""
        if label is not None:
            version = self.labels.get(label)
            if version is None:
                return None
        return self.current if version is None else self.loaded.get(version)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            # e.g. a folder removed while it was read: look again at the next poll
            except OSError as error:
                self.log(f"serve: cannot read the serving folder, trying again: {error}")


def run_model(servable: Servable, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """In a batch thread: one call of the signature; the string tensor of a batch is built here, once."""
    import tensorflow as tf

    specs = servable.inputs[signature]
    outputs = servable.functions[signature](**{name: tf.constant(array, dtype=specs[name].dtype)
                                               for name, array in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}
