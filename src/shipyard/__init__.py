"""Shipyard: the closed MLOps loop from `dvc repro` to drift-triggered retraining."""

__version__ = "0.1.0"
