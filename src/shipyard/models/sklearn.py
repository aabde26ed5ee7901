"""scikit-learn candidates and the preprocessing every candidate shares."""

from __future__ import annotations

from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shipyard.config import HistGradientBoostingSpec, LogisticRegressionSpec


def preprocessor(numeric: list[str], categorical: list[str], scale: bool) -> ColumnTransformer:
    """Stateless-at-serve transforms fitted on train only, and carried inside the model."""
    num_steps: list[Any] = [SimpleImputer(strategy="median")]
    if scale:
        num_steps.append(StandardScaler())
    parts: list[tuple[str, Any, list[str]]] = [("num", make_pipeline(*num_steps), numeric)]
    if categorical:
        encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            min_frequency=20,
            max_categories=32,
            sparse_output=False,
        )
        parts.append(("cat", encoder, categorical))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def estimator(spec: HistGradientBoostingSpec | LogisticRegressionSpec, seed: int) -> Any:
    if isinstance(spec, HistGradientBoostingSpec):
        return HistGradientBoostingClassifier(
            learning_rate=spec.learning_rate,
            max_iter=spec.max_iter,
            max_leaf_nodes=spec.max_leaf_nodes,
            l2_regularization=spec.l2_regularization,
            early_stopping=False,
            random_state=seed,
        )
    return LogisticRegression(C=spec.C, max_iter=spec.max_iter, class_weight=spec.class_weight)


def pipeline(pre: ColumnTransformer, model: Any) -> Pipeline:
    return Pipeline([("preprocess", pre), ("model", model)])
