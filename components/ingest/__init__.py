"""Ingest: reads AG News, quarantines bad rows, and writes train/eval/test splits of tf.train.Example."""
