"""Tuner: a KerasTuner search over one architecture's hyperparameters, scored on the eval split."""
