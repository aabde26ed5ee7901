"""Baseline server for benchmarks/serving.py: plain FastAPI + joblib, the usual hand-rolled way.

joblib unpickles here; acceptable only because the benchmark wrote the file itself moments
before. Shipyard's own service never loads pickle.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import joblib
import pandas as pd
import uvicorn
from fastapi import FastAPI

model = joblib.load(os.environ["BASELINE_MODEL"])
app = FastAPI()


@app.post("/predict")
def predict(body: dict[str, Any]) -> dict[str, Any]:
    row = pd.DataFrame([body["features"]])
    return {"score": float(model.predict_proba(row)[0, 1])}


@app.post("/predict_batch")
def predict_batch(body: dict[str, Any]) -> dict[str, Any]:
    rows = pd.DataFrame(body["records"])
    return {"scores": model.predict_proba(rows)[:, 1].tolist()}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
