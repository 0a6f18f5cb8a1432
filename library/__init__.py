"""Shared ML and I/O libraries the pipeline's steps (components/) are built from: text normalization, tf.data
input pipelines, model builders, the serving export, TFRecord and CSV I/O, reproducible SavedModels,
evaluation figures and reports, batch prediction. Nothing here knows about runs, caching or the store."""
