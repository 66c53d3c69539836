r"""A seeded synthetic logistic regression whose classes overlap (it has a finite minimiser).

Inputs :math:`x \sim \mathcal N(0, I_d)`, a true weight vector :math:`w^\star \sim \mathcal
N(0, \sigma_w^2 I_d)`, and labels drawn from the model itself,

.. math::

   P(y = 1 \mid x) = \frac{1}{1 + e^{-x^\top w^\star}},

so the two classes overlap and, unlike a separable data set (such as the digits, where the
loss can be driven to zero by growing the weights), the cross-entropy has a finite minimiser
near :math:`w^\star`. The label noise also sets a loss floor that no optimizer can beat.
"""

from __future__ import annotations

import torch
from torch import nn

from .._seed import derive_seed
from .digits import Dataset

__all__ = ["logistic_regression", "synthetic_logistic"]


def synthetic_logistic(
    n: int = 2000,
    d: int = 20,
    *,
    weight_scale: float = 0.5,
    test_fraction: float = 0.25,
    seed: int = 0,
    dtype=torch.float32,
) -> Dataset:
    r"""``n`` examples in ``d`` dimensions, labels drawn from :math:`\sigma(x^\top w^\star)` with
    :math:`w^\star \sim \mathcal N(0, \text{weight\_scale}^2 I)`; the last ``test_fraction`` is
    held out."""
    if not (isinstance(n, int) and isinstance(d, int) and n >= 2 and d >= 1):
        raise ValueError(f"Invalid size: n={n!r}, d={d!r}; need integers n >= 2, d >= 1")
    if not weight_scale > 0:
        raise ValueError(f"Invalid weight_scale: {weight_scale!r}; need weight_scale > 0")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"Invalid test_fraction: {test_fraction!r}; need 0 <= it < 1")
    g = torch.Generator().manual_seed(derive_seed(seed))
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_star = weight_scale * torch.randn(d, generator=g, dtype=torch.float64)
    p = torch.sigmoid(X @ w_star)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < p).long()
    n_test = int(round(test_fraction * n))
    n_train = n - n_test
    X = X.to(dtype)
    return Dataset(X[:n_train], y[:n_train], X[n_train:], y[n_train:])


def logistic_regression(
    n: int = 2000, d: int = 20, *, weight_scale: float = 0.5, seed: int = 0, dtype=torch.float32
) -> tuple[Dataset, nn.Linear]:
    """The data of :func:`synthetic_logistic` and a seeded linear model ``d -> 2`` (softmax
    regression with two classes, trained with cross-entropy): ``(data, model)``."""
    data = synthetic_logistic(n, d, weight_scale=weight_scale, seed=seed, dtype=dtype)
    torch.manual_seed(derive_seed(seed))
    return data, nn.Linear(d, 2).to(dtype)
