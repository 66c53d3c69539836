r"""Wilson et al.'s construction: a least-squares classification problem on which adaptive
methods generalise badly (chapter 12).

Wilson, Roelofs, Stern, Srebro & Recht, "The Marginal Value of Adaptive Gradient Methods in
Machine Learning", NeurIPS 2017, §3.3. Labels :math:`y_i \in \{-1, +1\}` are drawn with
:math:`P(y = 1) = p > 1/2`; example :math:`i` of :math:`n` has :math:`d = 6n` features,

.. math::

   x_{i1} = y_i, \qquad x_{i2} = x_{i3} = 1, \qquad
   x_{ij} = 1 \text{ for } j = 4 + 5(i-1), \dots, 4 + 5(i-1) + 2(1 - y_i),

and 0 elsewhere: the label itself, two features that are always on, and features that belong
to example :math:`i` alone (one for a positive example, five for a negative one). The loss is
:math:`f(w) = \frac{1}{2n}\lVert Xw - y\rVert^2`; with :math:`d > n` it has infinitely many
minimisers, all with :math:`Xw = y`.

What a minimiser predicts on a *new* example depends only on :math:`w_1, w_2, w_3`: the new
example's own features were never seen, so every method started at :math:`w = 0` leaves their
weights at 0. Gradient descent (and SGD, heavy ball, Nesterov) from :math:`w_0 = 0` stays in the
row space of :math:`X` and converges to the minimum-norm solution :math:`X^\top (XX^\top)^{-1}
y` (:func:`minimum_norm`). Adaptive methods started at 0 keep :math:`w_t \propto
\operatorname{sign}(X^\top y)` (Wilson et al.'s Lemma 3.1: here :math:`X\,\operatorname{sign}
(X^\top y) = 4y`, so :math:`w = \operatorname{sign}(X^\top y)/4` interpolates), which weighs
the label feature no more than the always-on ones and predicts every new example as positive.

:func:`wilson_problem` draws the training set (conditioned on more positive than negative
examples, which the construction needs for :math:`\operatorname{sign}(X^\top y)_{2,3} = +1`) and
a test set of new examples (with their own, unseen features).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._seed import derive_seed

__all__ = ["WilsonProblem", "minimum_norm", "wilson_features", "wilson_problem"]


def wilson_features(y: Tensor) -> Tensor:
    r"""The :math:`n \times 6n` feature matrix (float64) of labels ``y`` (:math:`\pm 1`, at least
    3 of them): example :math:`i`'s own features start at column :math:`3 + 5i` (0-based)."""
    n = len(y)
    if n < 3:
        raise ValueError(f"Invalid y: {n} labels; need at least 3 (d = 6n columns must fit 5n + 3)")
    X = torch.zeros(n, 6 * n, dtype=torch.float64)
    X[:, 0] = y
    X[:, 1:3] = 1.0
    for i, label in enumerate(y.tolist()):
        X[i, 3 + 5 * i : 3 + 5 * i + (1 if label > 0 else 5)] = 1.0
    return X


@dataclass(frozen=True)
class WilsonProblem:
    """Training data ``X (n, d)``, ``y (n,)`` and new test examples ``X_test``, ``y_test``
    (their own features fall outside the training columns, so only columns 0-2 are shared)."""

    X: Tensor
    y: Tensor
    X_test: Tensor
    y_test: Tensor
    p: float

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def d(self) -> int:
        return self.X.shape[1]

    def loss(self, w: Tensor) -> Tensor:
        r""":math:`\frac{1}{2n}\lVert Xw - y\rVert^2` for ``w`` of shape ``(d,)`` or a batch
        ``(K, d)`` (one loss per row)."""
        r = w @ self.X.T - self.y
        return 0.5 * (r * r).mean(-1)

    def test_error(self, w: Tensor) -> Tensor:
        """Share of test examples with ``sign(x·w) != y`` (a prediction of 0 counts as wrong);
        ``w`` of shape ``(d,)`` or ``(K, d)``."""
        return ((w @ self.X_test.T) * self.y_test <= 0).double().mean(-1)


def wilson_problem(n: int = 60, p: float = 0.7, *, n_test: int = 1000, seed: int = 0,
                   ) -> WilsonProblem:  # fmt: skip
    r"""Draw :math:`n` training labels with :math:`P(y=1) = p` (redrawn until positives
    outnumber negatives) and ``n_test`` test labels, and build their features: :math:`d = 6n`
    columns; the test examples' own features would lie beyond column :math:`d`, so in the
    training coordinates a test example is :math:`(y, 1, 1, 0, \dots, 0)`."""
    if not (isinstance(n, int) and n >= 3):
        raise ValueError(f"Invalid n: {n!r}; need an integer >= 3")
    if not 0.5 < p < 1:
        raise ValueError(f"Invalid p: {p}; allowed range is (0.5, 1)")
    g = torch.Generator().manual_seed(derive_seed(seed))
    while True:
        y = (torch.rand(n, generator=g, dtype=torch.float64) < p).double() * 2 - 1
        if (y > 0).sum() > (y < 0).sum():
            break
    y_test = (torch.rand(n_test, generator=g, dtype=torch.float64) < p).double() * 2 - 1
    X = wilson_features(y)
    X_test = torch.zeros(n_test, 6 * n, dtype=torch.float64)
    X_test[:, 0] = y_test
    X_test[:, 1:3] = 1.0
    return WilsonProblem(X, y, X_test, y_test, p)


def minimum_norm(X: Tensor, y: Tensor) -> Tensor:
    r"""The minimum-norm solution of :math:`Xw = y` for :math:`X` of full row rank,
    :math:`w^\star = X^\top (XX^\top)^{-1} y`, by a Cholesky solve of the :math:`n\times n`
    system (float64)."""
    X, y = X.double(), y.double()
    K = X @ X.T
    L = torch.linalg.cholesky(K)
    return X.T @ torch.cholesky_solve(y.reshape(-1, 1), L).reshape(-1)
