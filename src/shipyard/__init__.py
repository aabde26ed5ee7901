"""Shipyard: the closed MLOps loop from `dvc repro` to drift-triggered retraining."""

import os

# Offline by default: no usage telemetry from the libraries we drive.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# Progress bars would fill service and webhook logs; our own progress lines say enough.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__version__ = "0.1.0"
