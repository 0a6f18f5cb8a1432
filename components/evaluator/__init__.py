"""Evaluator: measures the candidate serving model with TFMA and decides whether it is blessed."""
