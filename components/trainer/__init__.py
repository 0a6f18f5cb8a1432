"""Trainer: trains the tuner's chosen architecture and hyperparameters and exports it for serving."""
