"""Every candidate is a Pipeline(preprocess, estimator) that takes a frame of named fields."""

from __future__ import annotations

from sklearn.pipeline import Pipeline

from shipyard.config import CandidateSpec, TorchMLPSpec
from shipyard.models import sklearn as sk


def build(spec: CandidateSpec, numeric: list[str], categorical: list[str], seed: int) -> Pipeline:
    scale = spec.type != "hist_gradient_boosting"
    pre = sk.preprocessor(numeric, categorical, scale=scale)
    if isinstance(spec, TorchMLPSpec):
        from shipyard.models.torch import TorchMLPClassifier

        model = TorchMLPClassifier(
            hidden_sizes=tuple(spec.hidden_sizes),
            learning_rate=spec.learning_rate,
            weight_decay=spec.weight_decay,
            batch_size=spec.batch_size,
            max_epochs=spec.max_epochs,
            patience=spec.patience,
            validation_fraction=spec.validation_fraction,
            random_state=seed,
        )
        return sk.pipeline(pre, model)
    return sk.pipeline(pre, sk.estimator(spec, seed))
