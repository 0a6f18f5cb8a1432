"""Transform: raw AG News examples -> token ids, with tf.Transform on Beam, written in length buckets."""
