"""agnews-pipeline: a TFX-style pipeline for AG News topic classification."""
__version__ = "0.1.0"
