"""scikit-learn's bundled 8×8 handwritten digits, and small MLPs to classify them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._seed import derive_seed


@dataclass
class Dataset:
    """Train/test tensors of a classification problem."""

    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def digits(*, test_fraction: float = 0.25, seed: int = 0, dtype=torch.float32) -> Dataset:
    """scikit-learn's 8×8 handwritten digits (1797 images, 10 classes), standardised.

    Pixels are scaled to [0, 1] and then centred with the training mean; the split is seeded.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    X = torch.tensor(data.data, dtype=dtype) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    g = torch.Generator().manual_seed(derive_seed(seed))
    perm = torch.randperm(len(y), generator=g)
    n_test = int(round(test_fraction * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    mean = X[train].mean(0, keepdim=True)
    return Dataset(X[train] - mean, y[train], X[test] - mean, y[test])


def mlp(
    n_in: int, n_hidden: int, n_out: int, *, depth: int = 1, seed: int = 0, dtype=torch.float32
) -> nn.Sequential:
    """A seeded ``depth``-hidden-layer tanh MLP."""
    torch.manual_seed(derive_seed(seed))
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, n_hidden), nn.Tanh()]
        width = n_hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers).to(dtype)


def digits_mlp(*, n_hidden: int = 32, seed: int = 0, dtype=torch.float32):
    """The digits data and a fresh seeded one-hidden-layer MLP for it: ``(data, model)``."""
    data = digits(seed=seed, dtype=dtype)
    model = mlp(data.n_features, n_hidden, data.n_classes, seed=seed, dtype=dtype)
    return data, model
