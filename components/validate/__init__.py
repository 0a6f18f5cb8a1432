"""Validate: statistics of the ingested examples, and a check of every example against the raw schema."""
