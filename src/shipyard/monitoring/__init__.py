"""Drift monitoring: prediction-log reader, references, the drift job, trigger and retrain."""
