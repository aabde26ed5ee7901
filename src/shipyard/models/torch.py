"""A small PyTorch MLP behind the scikit-learn estimator interface.

It sits in the same Pipeline as the sklearn candidates, so preprocessing travels with it and
serving takes named fields. Its weights are kept as a state dict of numpy arrays, which skops
stores and loads without running code; the torch module is rebuilt on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class TorchMLPClassifier(ClassifierMixin, BaseEstimator):
    """Binary MLP with early stopping on the most recent `validation_fraction` of rows."""

    def __init__(
        self,
        hidden_sizes: tuple[int, ...] = (32, 16),
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 512,
        max_epochs: int = 30,
        patience: int = 3,
        validation_fraction: float = 0.1,
        random_state: int = 0,
    ) -> None:
        self.hidden_sizes = hidden_sizes
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _module(self, n_in: int) -> Any:
        import torch

        layers: list[torch.nn.Module] = []
        width = n_in
        for h in self.hidden_sizes:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        layers.append(torch.nn.Linear(width, 1))
        return torch.nn.Sequential(*layers)

    def fit(self, X: Any, y: Any) -> TorchMLPClassifier:
        import torch

        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.float32)
        # Rows arrive in time order: hold out the latest ones, as the future is what we score.
        n_val = max(1, int(len(X) * self.validation_fraction))
        X_tr, y_tr = torch.from_numpy(X[:-n_val]), torch.from_numpy(y[:-n_val])
        X_va, y_va = torch.from_numpy(X[-n_val:]), torch.from_numpy(y[-n_val:])
        net = self._module(X.shape[1])
        opt = torch.optim.Adam(
            net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        loss_fn = torch.nn.BCEWithLogitsLoss()
        best, best_state, stale, history = np.inf, None, 0, []
        for _epoch in range(self.max_epochs):
            net.train()
            for idx in np.array_split(
                rng.permutation(len(X_tr)), max(1, len(X_tr) // self.batch_size)
            ):
                batch = torch.from_numpy(idx)
                opt.zero_grad()
                loss = loss_fn(net(X_tr[batch]).squeeze(1), y_tr[batch])
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val = float(loss_fn(net(X_va).squeeze(1), y_va))
            history.append(val)
            if val < best - 1e-6:
                best, stale = val, 0
                best_state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_state is None:
            raise ValueError("torch_mlp: validation loss was never finite; lower learning_rate")
        self.state_ = best_state
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.array([0, 1])
        self.validation_loss_ = history
        self.best_epoch_ = int(np.argmin(history)) + 1
        return self

    def _net(self) -> Any:
        import torch

        cached = self.__dict__.get("_torch_net")
        if cached is None:
            cached = self._module(self.n_features_in_)
            cached.load_state_dict({k: torch.from_numpy(v) for k, v in self.state_.items()})
            cached.eval()
            self.__dict__["_torch_net"] = cached
        return cached

    def predict_proba(self, X: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self._net()(torch.from_numpy(np.asarray(X, dtype=np.float32))).squeeze(1)
        p = torch.sigmoid(logits).numpy().astype(np.float64)
        return np.column_stack([1 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_torch_net", None)
        return state
