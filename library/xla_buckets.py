"""The exported model call compiled with XLA over a bounded set of input shapes.

XLA (`jit_compile`) runs the Keras model on a one-text batch about 40 times faster than the plain graph
(benchmarks/results/profile_model_call.md), but compiles once per input shape. So the token ids [B, T] are
0-padded, inside the SavedModel, to a few shapes before the compiled call:

  - T up to the next of the transform's length buckets (`transform.bucket_boundaries`, ending at max_length;
    the transform never gives more ids than max_length);
  - B up to the next of BATCH_BUCKETS; a larger batch runs in chunks of the largest, its rows sorted by
    length so that each chunk is padded only to the bucket of its own longest text.

The compiled function therefore sees at most len(length buckets) x len(BATCH_BUCKETS) shapes (9 x 4 = 36 with
the default config), each compiled once, at warm-up: `warmup_text_batches` gives one request per shape. A
compilation costs about 1 s of CPU for the default BiLSTM (0.5 s for a tiny LSTM), so the set is kept small.
Padding changes no answer: id 0 is masked (`mask_zero`), so padded steps leave every recurrent state as it
was; padded rows are computed on their own and sliced away before anything is returned.
"""
from __future__ import annotations

import tensorflow as tf

# Powers of four up to 64: a one-text call runs alone, and padding
# rows cost little (with XLA a row of a batch of 16 costs a fraction of a one-row call). 4 sizes, not the 7
# powers of two, since every size multiplies the compilations.
BATCH_BUCKETS = (1, 4, 16, 64)


def compiled_model_call(keras_model, id_dtype, fixed_steps: int | None):
    """A tf.function running `keras_model` on token ids [B, T] with XLA; one compilation per input shape."""
    # None: any number of steps
    steps = fixed_steps
    return tf.function(lambda token_ids: keras_model(token_ids, training=False), jit_compile=True,
                       input_signature=[tf.TensorSpec([None, steps], id_dtype, name="token_ids")])


def bucketed_call(model_call, token_ids, length_buckets: tuple[int, ...], num_classes: int):
    """`model_call` on `token_ids` [B, T] padded to a bucket shape; returns float32 [B, num_classes].

    T is padded with 0 to the next of `length_buckets` (or kept when above them all, which the transform never
    gives); B is padded with all-0 rows to the next of BATCH_BUCKETS, or, above the largest, to a multiple of
    it, run chunk by chunk: rows sorted by length, each chunk cut to the bucket of its longest row (the
    answers come back in the rows' order). Padding rows never leave this function.
    """
    rows, steps = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
    width = tf.maximum(_next_bucket(steps, length_buckets), steps)
    largest = BATCH_BUCKETS[-1]
    # Rows padded: the next batch bucket, or a whole number of largest buckets (at least one row: an empty
    # batch runs one padding row, so the model never sees a 0-row batch).
    chunks = tf.maximum((rows + largest - 1) // largest, 1)
    bucket_rows = _next_bucket(tf.maximum(rows, 1), BATCH_BUCKETS)
    padded_rows = tf.where(rows <= largest, bucket_rows, chunks * largest)
    # A single length bucket (a model taking a fixed number of steps): the compiled call needs it static.
    static_width = length_buckets[0] if len(length_buckets) == 1 else None
    padded = tf.pad(token_ids, [[0, padded_rows - rows], [0, width - steps]])
    padded = tf.ensure_shape(padded, [None, static_width])

    def one_call():
        return tf.cast(model_call(padded), tf.float32)

    def chunked():
        # The rows sorted by length, so that each chunk of `largest` rows holds texts of about one length
        # and is cut to the bucket of its own longest text: a batch of mixed lengths pays the long bucket
        # for one chunk, not for all of them. Every chunk shape [largest, bucket] is a compiled one.
        lengths = _lengths(padded)
        order = tf.argsort(lengths, stable=True)
        by_length = tf.gather(padded, order)
        longest = tf.reduce_max(tf.reshape(tf.gather(lengths, order), [chunks, largest]), axis=1)

        def run_chunk(index):
            steps_here = longest[index]
            chunk_width = tf.maximum(_next_bucket(tf.maximum(steps_here, 1), length_buckets), steps_here)
            chunk = by_length[index * largest:(index + 1) * largest, :chunk_width]
            return tf.cast(model_call(tf.ensure_shape(chunk, [largest, static_width])), tf.float32)

        outputs = tf.map_fn(run_chunk, tf.range(chunks),
                            fn_output_signature=tf.TensorSpec([largest, num_classes], tf.float32))
        # back to the rows' own order: row order[i] is answered at position i
        return tf.gather(tf.reshape(outputs, [chunks * largest, num_classes]), tf.argsort(order))

    probabilities = tf.cond(rows <= largest, one_call, chunked)
    return tf.ensure_shape(probabilities[:rows], [None, num_classes])


def _lengths(token_ids):
    """int32 [B]: each row's steps up to its last non-zero id (0 pads the end of a row)."""
    positions = tf.range(1, tf.shape(token_ids)[1] + 1)
    return tf.reduce_max(tf.where(tf.not_equal(token_ids, 0), positions[tf.newaxis, :], 0), axis=1)


def _next_bucket(size, buckets: tuple[int, ...]):
    """The smallest of `buckets` (increasing) >= size, or the largest when size is above them all."""
    bounds = tf.constant(buckets, tf.int32)
    index = tf.searchsorted(bounds, tf.reshape(tf.cast(size, tf.int32), [1]), side="left")[0]
    return tf.gather(bounds, tf.minimum(index, len(buckets) - 1))


def bucket_shapes(length_buckets: tuple[int, ...]) -> list[tuple[int, int]]:
    """Every (rows, steps) shape the compiled call sees."""
    return [(rows, steps) for steps in length_buckets for rows in BATCH_BUCKETS]


def warmup_text_batches(length_buckets: tuple[int, ...]) -> list[list[str]]:
    """One text batch per bucket shape: `rows` texts, the first of exactly `steps` words (any word counts as
    one token id: unknown words take an out-of-vocabulary id), the others empty."""
    shapes = bucket_shapes(length_buckets)
    return [["news " * steps] + [""] * (rows - 1) for rows, steps in shapes]
