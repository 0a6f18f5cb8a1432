"""Exports a trained Keras model together with the TFT transform graph as one SavedModel.

The SavedModel needs only TensorFlow to load (tf.saved_model.load, `saved_model_cli run`, TF Serving):
the transform graph, its vocabulary and the model weights are all inside it. Signatures:

  serving_default     text: string [B]                      -> probabilities float32 [B, 4],
                                                               class_id int64 [B], class_name string [B]
  serving_tf_example  examples: serialized tf.Example [B]   -> the same outputs
                      (features title, description; either may be missing and counts as "")
  classify            inputs: serialized tf.Example [B]     -> classes string [B, 4] (CLASS_NAMES in every
  row),
                                                               scores float32 [B, 4]
                      (TF Serving's Classify API shape; method name `tensorflow/serving/classify`, so
                      `:classify` works on TF Serving; the other signatures are `tensorflow/serving/predict`)
  transform_features  examples: serialized tf.Example [B]   -> token_ids int64 [B, T] (0-padded), length int64
  [B]
                      (the transform alone; the evaluator uses it to slice by length bucket)
  batch_tf_example    examples: serialized tf.Example [B]   -> the same outputs as serving_tf_example
                      (XLA exports only: the model part as a plain graph, for large offline batches such as
                      the evaluator's, where XLA's compilation per shape costs more than it saves: 3,800 test
                      rows on a fresh load, 1.0 s against 5.7 s; batch_signature() picks it)

`assets.extra/tf_serving_warmup_requests` holds a few requests TF Serving replays at load time.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import tensorflow as tf

from contract.names import TOKEN_IDS
from library import xla_buckets
from library.layouts import CLASS_NAMES, FINGERPRINT_FILE, SAVED_MODEL_FILE, WARMUP_FILE, read_model_input

SERVING_SIGNATURE = "serving_default"
TF_EXAMPLE_SIGNATURE = "serving_tf_example"
TRANSFORM_SIGNATURE = "transform_features"
BATCH_TF_EXAMPLE_SIGNATURE = "batch_tf_example"
CLASSIFY_SIGNATURE = "classify"
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"

# Replayed by TF Serving before the model takes traffic, so the first real request does not pay for
# graph initialisation; they also cover the edge cases (an empty text, a batch of them).
WARMUP_TEXT_BATCHES = (
    ["Stocks rally as oil prices fall",
     "Team wins the championship after a late goal",
     "New smartphone chip promises longer battery life",
     "Leaders meet to discuss the peace agreement"],
    [""],
    ["Quarterly profits beat expectations", ""],
)


def export_serving_model(keras_model, transform_graph_dir: Path, export_dir: Path, xla: bool = True) -> None:
    """Writes the serving SavedModel for `keras_model` (token ids [B, T] -> softmax [B, 4]) to `export_dir`.

    `xla`: the model part runs compiled with XLA over bucketed shapes (library/xla_buckets.py), and the
    warm-up file holds one request per shape; otherwise as a plain graph on the ids as they come.
    The export is written to a temporary folder beside `export_dir` and renamed into place; an existing
    `export_dir` is replaced.
    """
    # Imported here: tensorflow_transform switches tf.keras to Keras 2 on import, and predict/evaluator
    # users of this module's constants should not pay for that.
    import keras
    import tensorflow_transform as tft

    export_dir = Path(export_dir)
    tft_output = tft.TFTransformOutput(str(transform_graph_dir))
    _check_transform_features(tft_output)
    tft_layer = tft_output.transform_features_layer()

    num_classes = int(keras_model.outputs[0].shape[-1]) if _has_graph(keras_model) else len(CLASS_NAMES)
    if num_classes != len(CLASS_NAMES):
        raise ValueError(f"the model outputs {num_classes} classes; the export serves {len(CLASS_NAMES)} "
                         f"({', '.join(CLASS_NAMES)})")
    fixed_steps, id_dtype = _model_input_format(keras_model)
    length_buckets = _length_buckets(transform_graph_dir, fixed_steps) if xla else ()
    run_model = _model_runner(keras_model, id_dtype, fixed_steps, length_buckets, num_classes)
    # the same model part without XLA, for batch_tf_example
    plain_model = _model_runner(keras_model, id_dtype, fixed_steps, (), num_classes) if xla else None
    endpoints = _endpoints(run_model, tft_layer, fixed_steps, id_dtype, plain_model)
    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    # keeps the transform's vocabulary table and its asset file in the export
    archive.track(tft_layer)
    temporary = export_dir.parent / f".{export_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _cudnn_disabled(keras_model):
            for name, (function, input_name) in endpoints.items():
                archive.add_endpoint(name, function,
                                     input_signature=[tf.TensorSpec([None], tf.string, name=input_name)])
            archive.write_out(str(temporary), verbose=False)
        _check_no_cudnn_ops(temporary)
        _set_method_name(temporary, CLASSIFY_SIGNATURE, CLASSIFY_METHOD_NAME)
        write_warmup_requests(temporary / WARMUP_FILE,
                              WARMUP_TEXT_BATCHES + tuple(xla_buckets.warmup_text_batches(length_buckets)))
        _replace_dir(temporary, export_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _endpoints(run_model, tft_layer, fixed_steps: int | None, id_dtype, plain_model=None) -> dict[str, tuple]:
    """{signature name: (its function, its input's name)}: the serving signatures, each taking a batch of
    strings and running the transform's tokenization before `run_model` (token ids -> probabilities); with a
    `plain_model` (the model part without XLA), batch_tf_example too."""
    class_names = tf.constant(CLASS_NAMES)

    def transform(title, description):
        transformed = tft_layer({"title": title, "description": description})
        token_ids = _to_dense(transformed[TOKEN_IDS])
        return tf.cast(token_ids, tf.int64), tf.cast(transformed["length"], tf.int64)

    def classify(title, description, model=run_model):
        token_ids, _ = transform(title, description)
        probabilities = model(tf.cast(_fit_steps(token_ids, fixed_steps), id_dtype))
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            "probabilities": probabilities,
            "class_id": class_id,
            "class_name": tf.gather(class_names, class_id),
        }

    def classify_text(text):
        return classify(text, tf.fill(tf.shape(text), ""))

    def classify_examples(examples):
        features = _parse_raw_examples(examples)
        return classify(features["title"], features["description"])

    def classify_examples_plain(examples):
        features = _parse_raw_examples(examples)
        return classify(features["title"], features["description"], plain_model)

    def classify_serialized_examples(inputs):
        # TF Serving's Classify API: every row lists all classes with their scores.
        outputs = classify_examples(inputs)
        classes = tf.tile(class_names[tf.newaxis, :], [tf.shape(inputs)[0], 1])
        return {"classes": classes, "scores": outputs["probabilities"]}

    def transform_examples(examples):
        features = _parse_raw_examples(examples)
        token_ids, length = transform(features["title"], features["description"])
        return {TOKEN_IDS: token_ids, "length": length}

    endpoints = {SERVING_SIGNATURE: (classify_text, "text"),
                 TF_EXAMPLE_SIGNATURE: (classify_examples, "examples"),
                 CLASSIFY_SIGNATURE: (classify_serialized_examples, "inputs"),
                 TRANSFORM_SIGNATURE: (transform_examples, "examples")}
    if plain_model is not None:
        endpoints[BATCH_TF_EXAMPLE_SIGNATURE] = (classify_examples_plain, "examples")
    return endpoints


def batch_signature_name(signature_names) -> str:
    """The signature for large offline batches of tf.Examples (evaluation, drift predictions) among a
    SavedModel's `signature_names`: batch_tf_example, or serving_tf_example in an export without it (XLA off,
    where it is the plain graph already, or an export older than it). Same outputs within 1e-6."""
    if BATCH_TF_EXAMPLE_SIGNATURE in signature_names:
        return BATCH_TF_EXAMPLE_SIGNATURE
    return TF_EXAMPLE_SIGNATURE


def batch_signature(loaded_model):
    """The loaded SavedModel's batch_signature_name() signature."""
    return loaded_model.signatures[batch_signature_name(loaded_model.signatures)]


def write_warmup_requests(path: Path, text_batches=WARMUP_TEXT_BATCHES) -> None:
    """A TFRecord of PredictionLog protos, one serving_default request per batch of texts: TF Serving's
    warm-up file format."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for texts in text_batches:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name=SERVING_SIGNATURE)
            )
            request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string, shape=[len(texts)]))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _length_buckets(transform_graph_dir: Path, fixed_steps: int | None) -> tuple[int, ...]:
    """The token-id lengths the compiled call is padded to: the transform's length buckets, or the model's
    fixed length."""
    if fixed_steps is not None:
        return (fixed_steps,)
    return tuple(read_model_input(transform_graph_dir).bucket_upper_bounds)


def _model_runner(keras_model, id_dtype, fixed_steps, length_buckets: tuple[int, ...], num_classes: int):
    """token ids [B, T] -> float32 probabilities [B, num_classes]: XLA over bucketed shapes when
    `length_buckets` is given, else the plain model on the ids as they come."""
    if length_buckets:
        compiled = xla_buckets.compiled_model_call(keras_model, id_dtype, fixed_steps)
        return lambda token_ids: xla_buckets.bucketed_call(compiled, token_ids, length_buckets, num_classes)

    def plain(token_ids):
        # An empty batch would crash the Keras RNN: answer it with empty outputs instead.
        return tf.cond(tf.shape(token_ids)[0] > 0,
                       lambda: tf.cast(keras_model(token_ids, training=False), tf.float32),
                       lambda: tf.zeros([0, num_classes], tf.float32))
    return plain


def _parse_raw_examples(examples):
    spec = {name: tf.io.FixedLenFeature([], tf.string, default_value="") for name in ("title", "description")}
    return tf.io.parse_example(examples, spec)


def _check_transform_features(tft_output) -> None:
    """Fails early, with the names involved, if the transform graph does not match the serving contract."""
    produced = tft_output.transformed_feature_spec()
    missing = [name for name in (TOKEN_IDS, "length") if name not in produced]
    if missing:
        raise ValueError(f"the transform graph does not produce {missing}; it produces {sorted(produced)}")
    try:
        raw_spec = tft_output.raw_feature_spec()
    # no raw metadata written: nothing more to check
    except Exception:
        return
    for name in ("title", "description"):
        spec = raw_spec.get(name)
        if not (
            isinstance(spec, tf.io.FixedLenFeature) and spec.dtype == tf.string and list(spec.shape) == []
        ):
            raise ValueError(f"the transform graph expects raw feature {name!r} as {spec}; "
                             "the export feeds one string per example (FixedLenFeature([], tf.string))")


def _has_graph(keras_model) -> bool:
    try:
        return bool(keras_model.inputs) and bool(keras_model.outputs)
    except (AttributeError, ValueError):
        return False


def _model_input_format(keras_model):
    """(fixed number of steps or None, dtype) of the model's token id input."""
    if not _has_graph(keras_model):
        return None, tf.int64
    spec = keras_model.inputs[0]
    steps = spec.shape[1] if len(spec.shape) > 1 else None
    return steps, tf.as_dtype(spec.dtype) if spec.dtype else tf.int64


def _to_dense(token_ids):
    if isinstance(token_ids, tf.SparseTensor):
        return tf.sparse.to_dense(token_ids, default_value=tf.zeros([], token_ids.dtype))
    if isinstance(token_ids, tf.RaggedTensor):
        return token_ids.to_tensor(default_value=tf.zeros([], token_ids.dtype))
    return token_ids


def _fit_steps(token_ids, fixed_steps):
    """Pads with 0 (the masked id) to at least one step, or to exactly the model's fixed length.

    A batch of texts without any known token gives ids of shape [B, 0], which a Keras RNN cannot run.
    """
    steps = tf.shape(token_ids)[1]
    if fixed_steps is None:
        return tf.pad(token_ids, [[0, 0], [0, tf.maximum(1 - steps, 0)]])
    token_ids = token_ids[:, :fixed_steps]
    token_ids = tf.pad(token_ids, [[0, 0], [0, fixed_steps - tf.shape(token_ids)[1]]])
    return tf.ensure_shape(token_ids, [None, fixed_steps])


@contextlib.contextmanager
def _cudnn_disabled(keras_model):
    """Traces the RNN layers with their portable (CPU) kernels.

    Keras picks cuDNN whenever a GPU is visible at trace time, and the traced CudnnRNN op has no CPU kernel,
    so a model exported on a GPU machine would not serve on a CPU one. Hiding the GPU is not possible once
    TensorFlow has initialised it (the trainer has), so switch the layers' own choice off while tracing.
    """
    layers = [layer for layer in keras_model._flatten_layers(include_self=True, recursive=True)
              if hasattr(layer, "use_cudnn")]
    saved = [layer.use_cudnn for layer in layers]
    try:
        for layer in layers:
            layer.use_cudnn = False
        yield
    finally:
        for layer, value in zip(layers, saved):
            layer.use_cudnn = value


def _check_no_cudnn_ops(saved_model_dir: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((saved_model_dir / SAVED_MODEL_FILE).read_bytes())
    ops = set()
    for meta_graph in saved_model.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    cudnn_ops = sorted(op for op in ops if "Cudnn" in op)
    if cudnn_ops:
        raise RuntimeError(
            f"the exported graph contains GPU-only ops {cudnn_ops}; it would not serve on a CPU"
        )


def _set_method_name(saved_model_dir: Path, signature: str, method_name: str) -> None:
    """Sets a signature's method name in saved_model.pb (and refreshes fingerprint.pb's hashes).

    tf.saved_model.save names every signature `tensorflow/serving/predict` and has no option for another;
    TF Serving's Classify API only accepts a signature named `tensorflow/serving/classify`. The method name
    is metadata: TensorFlow's loaders ignore it.
    """
    from tensorflow.core.protobuf import fingerprint_pb2, saved_model_pb2
    from tensorflow.python.saved_model import fingerprinting_utils

    model_path = saved_model_dir / SAVED_MODEL_FILE
    saved_model = saved_model_pb2.SavedModel.FromString(model_path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[signature].method_name = method_name
    model_path.write_bytes(saved_model.SerializeToString(deterministic=True))
    fingerprint_path = saved_model_dir / FINGERPRINT_FILE
    if fingerprint_path.exists():
        uuid = fingerprint_pb2.FingerprintDef.FromString(fingerprint_path.read_bytes()).uuid
        refreshed = fingerprint_pb2.FingerprintDef.FromString(
            fingerprinting_utils.fingerprinting_pywrap.CreateFingerprintDef(str(saved_model_dir)))
        refreshed.uuid = uuid
        fingerprint_path.write_bytes(refreshed.SerializeToString(deterministic=True))


def _replace_dir(source: Path, target: Path) -> None:
    """Renames `source` to `target`; an existing `target` is moved aside first and then deleted."""
    previous = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.rename(target, previous)
    os.rename(source, target)
    shutil.rmtree(previous, ignore_errors=True)
