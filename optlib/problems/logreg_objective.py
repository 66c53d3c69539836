r"""L2-regularised softmax regression as a function of one flat vector: the convex test problem
on which chapter 7 races gradient descent, Adam, L-BFGS and Newton's method.

With :math:`\tilde x_i = (x_i, 1) \in \mathbb R^{d+1}` and the weights and biases of all
:math:`C` classes stacked row by row into :math:`\theta = \operatorname{vec}(\tilde W)`,
:math:`\tilde W \in \mathbb R^{C \times (d+1)}`, the objective is

.. math::
    f(\theta) = \frac1N \sum_{i=1}^N \Bigl(\log \sum_k e^{z_{ik}} - z_{i y_i}\Bigr)
      + \frac\lambda2 \|\theta\|^2, \qquad z_i = \tilde W \tilde x_i ,

with gradient and Hessian (:math:`p_i = \operatorname{softmax}(z_i)`, :math:`e_{y}` the one-hot
label)

.. math::
    \nabla f = \frac1N \sum_i (p_i - e_{y_i}) \otimes \tilde x_i + \lambda\theta, \qquad
    \nabla^2 f = \frac1N \sum_i \bigl(\operatorname{diag}(p_i) - p_i p_i^\top\bigr)
      \otimes \tilde x_i \tilde x_i^\top + \lambda I .

The penalty covers the biases too: without it the Hessian is singular along
:math:`\theta \mapsto \theta + t\,(\mathbf 1 \otimes e_{\text{bias}})` (adding a constant to every
logit changes no probability), and with it :math:`f` is :math:`\lambda`-strongly convex, so the
minimiser is unique and Newton's method converges quadratically near it (Nocedal & Wright, 2006,
Theorem 3.5; Böhning, 1992, for the Hessian's form).

:meth:`LogisticObjective.minimize` runs any ``torch.optim`` optimizer on :math:`f` through a
closure, recording every evaluation, so methods that evaluate :math:`f` several times per
iteration (L-BFGS with a line search) are charged for each evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..optim._validate import check_nonnegative, check_positive_int
from .digits import digits

__all__ = ["LogisticObjective", "Trace", "digits_logistic_objective"]


@dataclass
class Trace:
    r"""What :meth:`LogisticObjective.minimize` recorded, one entry per evaluation of :math:`f`.

    Attributes:
        label: a name for tables and plots.
        loss: :math:`f` at every evaluation, in order (entry 0 is :math:`f(\theta_0)`).
        time: seconds since the start at every evaluation.
        iteration: the optimizer's iteration count when the evaluation happened: the number of
            completed ``step`` calls, or L-BFGS's own counter ``n_iter`` (several iterations per
            ``step``).
        theta: the final parameters.
    """

    label: str
    loss: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    iteration: list[int] = field(default_factory=list)
    theta: Tensor | None = None

    def first_below(self, target: float) -> int | None:
        """Index of the first evaluation with ``loss <= target`` (``None`` if never)."""
        hits = np.flatnonzero(np.asarray(self.loss) <= target)
        return int(hits[0]) if hits.size else None


@dataclass
class LogisticObjective:
    """The objective of the module docstring on data ``X`` (``N x d``), labels ``y``."""

    X: Tensor
    y: Tensor
    l2: float
    n_classes: int

    def __post_init__(self) -> None:
        check_nonnegative("l2", self.l2)
        check_positive_int("n_classes", self.n_classes)
        if self.X.ndim != 2 or self.y.shape != (self.X.shape[0],):
            raise ValueError("Invalid X, y: expected X of shape (N, d) and y of shape (N,)")
        ones = torch.ones(self.X.shape[0], 1, dtype=self.X.dtype)
        self._X1 = torch.cat([self.X, ones], dim=1)  # x̃_i = (x_i, 1)
        self._Y = F.one_hot(self.y, self.n_classes).to(self.X.dtype)

    @property
    def dim(self) -> int:
        """Number of parameters, :math:`C(d+1)`."""
        return self.n_classes * self._X1.shape[1]

    def initial(self) -> Tensor:
        r""":math:`\theta_0 = 0`: every class equally likely, :math:`f(\theta_0) = \log C`."""
        return torch.zeros(self.dim, dtype=self.X.dtype)

    def _check(self, theta: Tensor) -> Tensor:
        if not isinstance(theta, Tensor) or theta.shape != (self.dim,):
            raise ValueError(f"Invalid theta: expected a flat tensor of {self.dim} entries")
        return theta.detach()

    def _probabilities(self, theta: Tensor) -> Tensor:
        W = theta.view(self.n_classes, -1)
        return torch.softmax(self._X1 @ W.T, dim=1)

    def f(self, theta: Tensor) -> Tensor:
        r""":math:`f(\theta)` as a 0-d tensor (differentiable if ``theta`` requires grad)."""
        if not isinstance(theta, Tensor) or theta.shape != (self.dim,):
            raise ValueError(f"Invalid theta: expected a flat tensor of {self.dim} entries")
        logits = self._X1 @ theta.view(self.n_classes, -1).T
        return F.cross_entropy(logits, self.y) + 0.5 * self.l2 * theta.dot(theta)

    def grad(self, theta: Tensor) -> Tensor:
        r""":math:`\nabla f(\theta) = \frac1N \sum_i (p_i - e_{y_i}) \otimes \tilde x_i +
        \lambda\theta`."""
        return self.value_and_grad(theta)[1]

    def value_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`f(\theta)` and :math:`\nabla f(\theta)` from one pass over the data."""
        theta = self._check(theta)
        logits = self._X1 @ theta.view(self.n_classes, -1).T
        log_p = torch.log_softmax(logits, dim=1)
        value = -(log_p * self._Y).sum() / self.X.shape[0] + 0.5 * self.l2 * theta.dot(theta)
        R = log_p.exp() - self._Y  # (N, C): p_i - e_{y_i}
        return value, (R.T @ self._X1).reshape(-1) / self.X.shape[0] + self.l2 * theta

    def hessian(self, theta: Tensor) -> Tensor:
        r""":math:`\nabla^2 f(\theta)`, a dense ``dim x dim`` matrix (module docstring)."""
        theta = self._check(theta)
        P = self._probabilities(theta)  # (N, C)
        N, D = self._X1.shape
        weighted = P.T[:, :, None] * self._X1[None]  # (C, N, D): p_ik x̃_i
        diag_blocks = torch.bmm(weighted.transpose(1, 2), self._X1.expand(self.n_classes, N, D))
        Z = (P[:, :, None] * self._X1[:, None, :]).reshape(N, -1)  # rows p_i ⊗ x̃_i
        H = -(Z.T @ Z)
        H = H.view(self.n_classes, D, self.n_classes, D)
        idx = torch.arange(self.n_classes)
        H[idx, :, idx, :] += diag_blocks
        H = H.reshape(self.dim, self.dim) / N
        H = (H + H.T) / 2
        return H + self.l2 * torch.eye(self.dim, dtype=H.dtype)

    def empirical_fisher_diagonal(self, theta: Tensor) -> Tensor:
        r"""The diagonal of the *empirical Fisher* matrix, the mean of the squared per-example
        gradients of the data term (the penalty left out):

        .. math::
            \operatorname{diag}\hat F = \frac1N \sum_i \bigl((p_i - e_{y_i}) \otimes
            \tilde x_i\bigr)^{\odot 2} = \frac1N \sum_i (p_i - e_{y_i})^{\odot 2} \otimes
            \tilde x_i^{\odot 2} .

        It is what the second moment of Adagrad, RMSProp and Adam averages when each mini-batch
        holds one example; it is not the Hessian's diagonal, whose data term has
        :math:`\operatorname{diag}(p_i) - p_i p_i^\top` (an expectation over labels drawn from
        the model) where this has the observed labels (Kunstner, Hennig & Balles, 2019)."""
        theta = self._check(theta)
        R = self._probabilities(theta) - self._Y  # (N, C): p_i - e_{y_i}
        return ((R * R).T @ (self._X1 * self._X1)).reshape(-1) / self.X.shape[0]

    def minimize(
        self,
        optimizer: Callable[[list[Tensor]], torch.optim.Optimizer],
        steps: int,
        *,
        label: str = "",
        theta0: Tensor | None = None,
        target: float | None = None,
    ) -> Trace:
        """Call ``optimizer([theta]).step(closure)`` up to ``steps`` times from ``theta0``
        (default :meth:`initial`), recording :math:`f`, the time and the iteration count at every
        closure call; stop early once a step ends with an evaluation at or below ``target``. The
        closure sets ``theta.grad`` to the exact gradient."""
        steps = check_positive_int("steps", steps)
        start = self.initial() if theta0 is None else self._check(theta0)
        theta = start.clone().requires_grad_()
        opt = optimizer([theta])
        trace = Trace(label)
        completed = [0]
        t0 = time.perf_counter()

        def closure() -> Tensor:
            loss, theta.grad = self.value_and_grad(theta)
            state = opt.state.get(theta, {})
            trace.loss.append(float(loss))
            trace.time.append(time.perf_counter() - t0)
            trace.iteration.append(int(state.get("n_iter", completed[0])))
            return loss

        for _ in range(steps):
            opt.step(closure)
            completed[0] += 1
            if target is not None and trace.loss[-1] <= target:
                break
        trace.theta = theta.detach().clone()
        return trace


def digits_logistic_objective(
    *, l2: float = 1e-3, seed: int = 0, dtype: torch.dtype = torch.float64
) -> LogisticObjective:
    """:class:`LogisticObjective` on the training split of scikit-learn's digits (1348 images,
    64 pixels, 10 classes: 650 parameters), in float64 by default."""
    data = digits(seed=seed, dtype=dtype)
    return LogisticObjective(data.X_train, data.y_train, l2, data.n_classes)
