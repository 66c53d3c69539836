r"""Reddi, Kale & Kumar's online convex problem on which Adam converges to the worst point.

Online convex optimisation on the interval :math:`\mathcal{F} = [-1, 1]`: at step
:math:`t = 1, 2, \dots` the learner plays :math:`x_t \in \mathcal{F}`, then receives the linear
loss

.. math::

   f_t(x) = \begin{cases} C\,x & t \bmod p = 1 \\ -s\,x & \text{otherwise,} \end{cases}
   \qquad C > (p - 1)\,s > 0,

and its gradient :math:`g_t = f_t'(x_t)`; the optimizer steps, and the step is projected back
onto :math:`\mathcal{F}`, :math:`x_{t+1} = \Pi_{\mathcal{F}}(\cdot) = \min(1, \max(-1, \cdot))`.
Over one period of :math:`p` steps the losses sum to :math:`(C - (p-1)s)\,x`, so the best fixed
point is :math:`x^\star = -1`; the average regret is

.. math::

   \frac{R_T}{T} = \frac1T \sum_{t=1}^{T} \big(f_t(x_t) - f_t(x^\star)\big).

With :math:`p = 3`, :math:`s = 1`, :math:`C > 2`, :math:`\beta_1 = 0`,
:math:`\beta_2 = 1/(1 + C^2)` and :math:`\eta_t = \eta/\sqrt t`, Adam drifts to :math:`x = +1`,
the *worst* point, and its average regret tends to :math:`2(C-2)/3 > 0`: the rare large gradient
:math:`C` is divided by a :math:`\sqrt{v_t}` that it has just inflated, while the frequent small
gradients are divided by a :math:`\sqrt{v_t}` that has already forgotten it. AMSGrad, which
divides by the running maximum of :math:`v_t`, converges to :math:`x^\star` (Reddi, Kale &
Kumar, "On the Convergence of Adam and Beyond", ICLR 2018, Theorem 1 and Section 5).

The projection belongs to the problem (the feasible set), not to the optimizer:
:func:`play_online` runs any ``torch.optim`` optimizer and projects after each of its steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

__all__ = ["OnlineRun", "ReddiProblem", "play_online"]


@dataclass(frozen=True)
class ReddiProblem:
    r"""The losses :math:`f_t(x) = C x` when :math:`t \bmod p = 1`, :math:`-s x` otherwise, on
    :math:`[-1, 1]` (see the module docstring). Defaults: Theorem 1's :math:`C = 3`, :math:`p = 3`,
    :math:`s = 1`."""

    C: float = 3.0
    period: int = 3
    small: float = 1.0
    lo: ClassVar[float] = -1.0  # the feasible set [lo, hi]
    hi: ClassVar[float] = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.period, int) and self.period >= 2):
            raise ValueError(f"Invalid period: {self.period!r}; need an integer >= 2")
        if not (math.isfinite(self.small) and self.small > 0):
            raise ValueError(f"Invalid small: {self.small!r}; need 0 < small < inf")
        if not (math.isfinite(self.C) and self.C > (self.period - 1) * self.small):
            raise ValueError(
                f"Invalid C: {self.C!r}; need (period - 1) * small = "
                f"{(self.period - 1) * self.small:g} < C < inf, so that x* = -1"
            )

    @property
    def x_star(self) -> float:
        r"""The best fixed point in hindsight, :math:`x^\star = -1`."""
        return self.lo

    def coefficient(self, t: int) -> float:
        r""":math:`f_t'(x)`, the same for every :math:`x` (the losses are linear); ``t >= 1``."""
        if t < 1:
            raise ValueError(f"Invalid t: {t!r}; steps are numbered from 1")
        return self.C if t % self.period == 1 else -self.small

    def loss(self, t: int, x: float) -> float:
        """:math:`f_t(x)`."""
        return self.coefficient(t) * x

    def project_(self, x: Tensor) -> Tensor:
        r""":math:`x \leftarrow \Pi_{[-1, 1]}(x)`, in place."""
        return x.clamp_(self.lo, self.hi)

    def period_loss(self, x: float) -> float:
        r"""The loss summed over one period, :math:`(C - (p-1)s)\,x`."""
        return (self.C - (self.period - 1) * self.small) * x

    @property
    def theorem1_beta2(self) -> float:
        r"""Theorem 1's :math:`\beta_2 = 1/(1 + C^2)` (with :math:`\beta_1 = 0`)."""
        return 1.0 / (1.0 + self.C**2)

    def limit_regret(self, x: float) -> float:
        r"""The average regret of a learner that stays at :math:`x`: :math:`(F(x) - F(x^\star))
        / p` with :math:`F` the loss over one period. At :math:`x = 1` and :math:`p = 3`,
        :math:`s = 1` it is :math:`2(C-2)/3`."""
        return (self.period_loss(x) - self.period_loss(self.x_star)) / self.period


@dataclass
class OnlineRun:
    r"""What :func:`play_online` recorded: the iterates :math:`x_0, \dots, x_T` and the
    average regret :math:`R_t / t` for :math:`t = 1, \dots, T`."""

    x: np.ndarray
    average_regret: np.ndarray

    @property
    def final_x(self) -> float:
        return float(self.x[-1])


def play_online(
    optimizer: Callable[[list[Tensor]], torch.optim.Optimizer],
    problem: ReddiProblem,
    steps: int,
    *,
    x0: float = 0.0,
    schedule: Callable[[int], float] | None = None,
) -> OnlineRun:
    r"""Play the online game for ``steps`` rounds with ``optimizer`` (a factory ``params ->
    optimizer`` on one float64 parameter :math:`x`), projecting onto :math:`[-1, 1]` after every
    step.

    ``schedule(t)`` multiplies the optimizer's initial learning rate at step :math:`t`;
    ``schedule=lambda t: t ** -0.5`` is Theorem 1's :math:`\eta_t = \eta/\sqrt t`.
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"Invalid steps: {steps!r}; need an integer >= 1")
    x = torch.tensor([float(x0)], dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        problem.project_(x)
    opt = optimizer([x])
    base_lrs = [group["lr"] for group in opt.param_groups]
    xs = np.empty(steps + 1)
    regret = np.empty(steps)
    xs[0] = x.item()
    total = 0.0
    for t in range(1, steps + 1):
        c = problem.coefficient(t)
        total += problem.loss(t, xs[t - 1]) - problem.loss(t, problem.x_star)
        regret[t - 1] = total / t
        if schedule is not None:
            for group, lr in zip(opt.param_groups, base_lrs):
                group["lr"] = lr * schedule(t)
        x.grad = torch.full_like(x, c)
        opt.step()
        with torch.no_grad():
            problem.project_(x)
        xs[t] = x.item()
    return OnlineRun(xs, regret)
