r"""Logistic regression with rare but informative features: where AdaGrad shines (chapter 4).

Each example :math:`x \in \{0, 1\}^d` has ``d_frequent`` *frequent* features, each switched on
with probability ``p_frequent``, and ``d_rare`` *rare* features, each on with probability
``p_rare`` (1% by default), drawn independently. The labels follow a logistic model,

.. math::

   P(y = 1 \mid x) = \sigma(x^\top w^\star), \qquad
   |w^\star_i| = \begin{cases} w_{\rm frequent} & \text{frequent } i \\
                              w_{\rm rare} & \text{rare } i \end{cases},

with random signs, so a rare feature says little about most examples but a lot about the few
where it is on. This is the situation that motivated AdaGrad (Duchi, Hazan & Singer, "Adaptive
Subgradient Methods for Online Learning and Stochastic Optimization", JMLR 12, 2011; and
McMahan & Streeter, COLT 2010): with one global step size, a rare coordinate receives a gradient
in about ``p_rare`` of the steps and moves ``1/p_rare`` times more slowly than a frequent one,
while AdaGrad divides each coordinate by the root of its own accumulated squared gradients and
so gives rare coordinates large steps.

Everything is drawn from one seeded generator; nothing is downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._seed import derive_seed

__all__ = ["SparseFeatures", "logistic_model", "sparse_logistic"]


@dataclass
class SparseFeatures:
    """A sparse-feature logistic-regression problem: data, true weights and which features are
    rare. ``y`` holds labels 0/1 in the features' dtype, as
    :func:`torch.nn.functional.binary_cross_entropy_with_logits` expects."""

    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor
    w_star: Tensor
    frequency: Tensor  # probability that each feature is on
    rare: Tensor  # bool mask of the rare features

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @staticmethod
    def loss_fn(logits: Tensor, y: Tensor) -> Tensor:
        r"""The mean logistic loss :math:`\frac1n\sum_i \log(1 + e^{-s_i z_i})`, where
        :math:`z_i` is the logit and :math:`s_i = 2y_i - 1`."""
        return nn.functional.binary_cross_entropy_with_logits(logits, y)

    def model(self) -> nn.Sequential:
        """A fresh :func:`logistic_model` for this problem (zero weights and bias)."""
        return logistic_model(self.n_features, dtype=self.X_train.dtype)


def logistic_model(n_features: int, *, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    r"""A linear logit :math:`z = w^\top x + b` with :math:`w = 0, b = 0` at the start (so the
    first loss is :math:`\log 2` whatever the seed), returning shape ``(batch,)``."""
    linear = nn.Linear(n_features, 1, dtype=dtype)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
    return nn.Sequential(linear, nn.Flatten(0))


def _check_count(name: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"Invalid {name}: {value!r}; need an integer >= {low}")
    return value


def _check_probability(name: str, value: object) -> float:
    if not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"Invalid {name}: {value!r}; need 0 < {name} <= 1")
    return float(value)


def _check_weight(name: str, value: object) -> float:
    if not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"Invalid {name}: {value!r}; need 0 <= {name} < inf")
    return float(value)


def sparse_logistic(
    n_train: int = 2000,
    n_test: int = 2000,
    *,
    d_frequent: int = 20,
    d_rare: int = 80,
    p_frequent: float = 0.5,
    p_rare: float = 0.01,
    w_frequent: float = 0.5,
    w_rare: float = 4.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> SparseFeatures:
    r"""Draw a seeded :class:`SparseFeatures` problem (see the module docstring).

    Args:
        n_train, n_test: numbers of training and test examples.
        d_frequent, d_rare: numbers of frequent and rare features (frequent ones come first).
        p_frequent, p_rare: probability that a frequent / rare feature is on in an example.
        w_frequent, w_rare: magnitudes :math:`|w^\star_i|` of their true weights.
        seed: seeds the features, the signs of :math:`w^\star` and the labels.
        dtype: floating dtype of the features, labels and weights.
    """
    n_train = _check_count("n_train", n_train, 1)
    n_test = _check_count("n_test", n_test, 0)
    d_frequent = _check_count("d_frequent", d_frequent, 0)
    d_rare = _check_count("d_rare", d_rare, 0)
    if d_frequent + d_rare == 0:
        raise ValueError("Invalid d_frequent, d_rare: need at least one feature")
    p_frequent = _check_probability("p_frequent", p_frequent)
    p_rare = _check_probability("p_rare", p_rare)
    w_frequent = _check_weight("w_frequent", w_frequent)
    w_rare = _check_weight("w_rare", w_rare)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"Invalid dtype: {dtype!r}; need a floating-point torch.dtype")

    gen = torch.Generator().manual_seed(derive_seed(seed))
    n, d = n_train + n_test, d_frequent + d_rare
    rare = torch.arange(d) >= d_frequent
    frequency = torch.where(rare, p_rare, p_frequent).to(torch.float64)
    X = (torch.rand(n, d, generator=gen, dtype=torch.float64) < frequency).to(torch.float64)
    signs = torch.where(torch.rand(d, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
    w_star = signs * torch.where(rare, w_rare, w_frequent).to(torch.float64)
    p_positive = torch.sigmoid(X @ w_star)
    y = (torch.rand(n, generator=gen, dtype=torch.float64) < p_positive).to(torch.float64)
    X, y = X.to(dtype), y.to(dtype)
    return SparseFeatures(
        X_train=X[:n_train],
        y_train=y[:n_train],
        X_test=X[n_train:],
        y_test=y[n_train:],
        w_star=w_star.to(dtype),
        frequency=frequency.to(dtype),
        rare=rare,
    )
