r"""Gradient descent with a backtracking line search: the step size is found at every step
instead of being fixed in advance (chapter 1).

At :math:`\theta` with gradient :math:`g = \nabla f(\theta)`, backtracking tries the steps
:math:`t = \eta_0, \rho\,\eta_0, \rho^2\eta_0, \dots` (:math:`\rho` = ``shrink``) and takes the
first that satisfies Armijo's *sufficient-decrease* condition

.. math::
    f(\theta - t g) \le f(\theta) - c_1\, t\, \|g\|^2 ,
    \qquad 0 < c_1 < 1

(Armijo, 1966; Nocedal & Wright, 2006, Algorithm 3.1): the loss must fall by at least a
fraction :math:`c_1` of what the linear model :math:`f(\theta) - t\|g\|^2` promises. For an
:math:`L`-smooth :math:`f` the descent lemma :math:`f(\theta - tg) \le f(\theta) -
t(1 - Lt/2)\|g\|^2` shows that every :math:`t \le 2(1 - c_1)/L` passes, so the search stops after
finitely many reductions and accepts a step :math:`t \ge \min\bigl(\eta_0, 2\rho(1-c_1)/L\bigr)`
without knowing :math:`L`.

:func:`armijo_step` takes one such step; :func:`backtracking_gd` runs gradient descent with it
and counts the function and gradient evaluations, the honest measure of its cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..optim._validate import check_interval, check_positive, check_positive_int

__all__ = ["LineSearchRun", "armijo_step", "backtracking_gd"]

ScalarFn = Callable[[Tensor], Tensor | float]


def armijo_step(
    f: ScalarFn,
    theta: Tensor,
    grad: Tensor,
    lr: float,
    *,
    c1: float = 1e-4,
    shrink: float = 0.5,
    max_shrinks: int = 100,
) -> tuple[Tensor, float, int]:
    r"""One gradient step with backtracking from ``lr``: returns ``(theta_new, t, evaluations)``,
    :math:`\theta - t\,g` with the first :math:`t \in \{\eta_0, \rho\eta_0, \rho^2\eta_0, \dots\}`
    that satisfies Armijo's condition (see the module docstring), and the number of calls of
    ``f`` it made (one at :math:`\theta`, one per trial step). ``theta`` and ``grad`` are not
    modified. A zero gradient accepts the first trial, which does not move.

    Raises ``ValueError`` if no trial passes within ``max_shrinks`` reductions (``-grad`` is then
    not a descent direction of ``f``, or ``f`` is not finite near ``theta``).
    """
    lr = check_positive("lr", lr)
    c1 = check_interval("c1", c1, 0.0, 1.0, low_open=True, high_open=True)
    shrink = check_interval("shrink", shrink, 0.0, 1.0, low_open=True, high_open=True)
    max_shrinks = check_positive_int("max_shrinks", max_shrinks)
    f0 = float(f(theta))
    slope = float((grad * grad).sum())  # ‖g‖², the decrease rate the linear model promises
    t = lr
    for k in range(max_shrinks + 1):
        trial = theta - t * grad
        if float(f(trial)) <= f0 - c1 * t * slope:  # NaN fails too: shrink
            return trial, t, k + 2
        t *= shrink
    raise ValueError(
        f"no step in {lr:g} * {shrink:g}^k, k <= {max_shrinks}, satisfies Armijo's condition: "
        "is -grad a descent direction of f?"
    )


@dataclass
class LineSearchRun:
    r"""What :func:`backtracking_gd` recorded. Index ``t`` refers to :math:`\theta_t`.

    Attributes:
        params: ``(steps + 1, d)`` array of the iterates :math:`\theta_t`.
        loss: :math:`f(\theta_t)`.
        grad_norm: :math:`\|\nabla f(\theta_t)\|`.
        step_sizes: the accepted :math:`t` of each step.
        f_evals: function evaluations the method needed to reach :math:`\theta_t` (cumulative;
            ``f_evals[0] = 1``; the value at an accepted point is its last trial's, not
            counted twice).
        grad_evals: calls of ``grad`` up to :math:`\theta_t` (cumulative; ``grad_evals[0] = 1``).
    """

    params: np.ndarray
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    step_sizes: list[float] = field(default_factory=list)
    f_evals: list[int] = field(default_factory=list)
    grad_evals: list[int] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.step_sizes)


def backtracking_gd(
    f: ScalarFn,
    grad: Callable[[Tensor], Tensor],
    x0: Tensor,
    steps: int,
    *,
    lr: float = 1.0,
    c1: float = 1e-4,
    shrink: float = 0.5,
) -> LineSearchRun:
    r"""``steps`` steps of gradient descent, each with an Armijo backtracking search that starts
    from ``lr`` (:func:`armijo_step`), from ``x0`` (a 1-D float tensor, not modified). ``f`` and
    ``grad`` map a point to the loss and its gradient, e.g. a
    :class:`~optlib.problems.landscapes.Landscape`'s ``f`` and ``grad``.

    Every step costs one gradient and at least one extra function evaluation; both counts are
    recorded, so that a comparison with a fixed step (one gradient per step) is fair.
    """
    if not isinstance(x0, Tensor) or x0.ndim != 1 or not x0.is_floating_point():
        raise ValueError("Invalid x0: expected a 1-D floating-point tensor")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"Invalid steps: {steps}; allowed range is [0, inf)")
    theta = x0.detach().clone()
    g = grad(theta)
    run = LineSearchRun(params=np.empty((0, len(theta))))
    trajectory = [theta.clone()]
    run.loss.append(float(f(theta)))
    run.grad_norm.append(float(torch.linalg.vector_norm(g)))
    run.f_evals.append(1)
    run.grad_evals.append(1)
    for _ in range(steps):
        theta, t, evals = armijo_step(f, theta, g, lr, c1=c1, shrink=shrink)
        g = grad(theta)
        trajectory.append(theta.clone())
        run.step_sizes.append(t)
        run.loss.append(float(f(theta)))
        run.grad_norm.append(float(torch.linalg.vector_norm(g)))
        run.f_evals.append(run.f_evals[-1] + evals - 1)  # f(θ) of the next step is this trial's
        run.grad_evals.append(run.grad_evals[-1] + 1)
    run.params = torch.stack(trajectory).double().numpy()
    return run
