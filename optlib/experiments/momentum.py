r"""Momentum in its textbook forms: plain reference iterations for chapter 3.

:class:`optlib.SGD` is the momentum method in torch's convention. The literature writes the same
method (and Nesterov's) in other variables; these functions run those forms as written, on a
gradient function, so that the chapter can show numerically that they trace the same path. All
three start at rest and return every iterate :math:`\theta_0, \dots, \theta_T`; the gradient at
step :math:`t` is :math:`g_t = \nabla f(\theta_{t-1})`.

* Polyak's heavy ball (Polyak, 1964), written with positions only:

  .. math::
     \theta_t = \theta_{t-1} - \eta\, \nabla f(\theta_{t-1}) + \beta\,(\theta_{t-1} - \theta_{t-2}),
     \qquad \theta_{-1} = \theta_0 .

  It is ``optlib.SGD(lr=η, momentum=β)`` step for step: the buffer is
  :math:`b_t = (\theta_{t-1} - \theta_t)/\eta`.
* The exponential-moving-average (EMA) form, :math:`m_0 = 0`:

  .. math::
     m_t = \beta\, m_{t-1} + (1-\beta)\, g_t, \qquad \theta_t = \theta_{t-1} - \alpha\, m_t .

  Since :math:`m_t = (1-\beta)\, b_t` exactly, it is ``optlib.SGD(lr=α(1-β), momentum=β)``.
* Nesterov's accelerated gradient in the look-ahead form of Sutskever et al. (2013), eq. (3)-(4),
  :math:`v_0 = 0`:

  .. math::
     v_t = \beta\, v_{t-1} - \eta\, \nabla f(\theta_{t-1} + \beta v_{t-1}), \qquad
     \theta_t = \theta_{t-1} + v_t .

  ``optlib.SGD(lr=η, momentum=β, nesterov=True)`` runs it in the variables
  :math:`p_t = \theta_t + \beta v_t` (the look-ahead points), with buffer
  :math:`b_t = -v_t/\eta`.

:func:`buffer_sequence` feeds :class:`optlib.SGD` a prescribed sequence of gradients and records
its momentum buffer, to watch the buffer's geometric series (constant gradients build up to
:math:`g/(1-\beta)`, alternating ones settle at :math:`\pm g/(1+\beta)`).

For convex functions that are not strongly convex, Nesterov's method reaches the rate
:math:`O(1/t^2)` with a momentum that grows towards 1 (:func:`convex_momentum`, passed to
:func:`nesterov_lookahead` as a schedule); :func:`flat_spectrum_quadratic` is a quadratic on which
that rate, and gradient descent's :math:`O(1/t)`, show over a long range of :math:`t`, and
:func:`iterates` runs any torch optimizer on such a gradient function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..optim import SGD
from ..optim._validate import check_beta, check_nonnegative

__all__ = [
    "polyak_heavy_ball",
    "ema_momentum",
    "nesterov_lookahead",
    "convex_momentum",
    "buffer_sequence",
    "iterates",
    "flat_spectrum_quadratic",
]

GradFn = Callable[[Tensor], Tensor]
Schedule = float | Callable[[int], float]


def _start(theta0: Tensor, steps: int) -> Tensor:
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"Invalid steps: {steps!r}; need an integer >= 0")
    return torch.as_tensor(theta0).detach().clone()


def polyak_heavy_ball(grad: GradFn, theta0: Tensor, lr: float, beta: float, steps: int) -> Tensor:
    r"""Polyak's two-point heavy ball :math:`\theta_t = \theta_{t-1} - \eta\nabla
    f(\theta_{t-1}) + \beta(\theta_{t-1} - \theta_{t-2})`; returns the ``(steps + 1, ...)``
    iterates."""
    lr, beta = check_nonnegative("lr", lr), check_beta("beta", beta)
    theta = _start(theta0, steps)
    theta_prev = theta
    path = [theta]
    for _ in range(steps):
        theta, theta_prev = theta - lr * grad(theta) + beta * (theta - theta_prev), theta
        path.append(theta)
    return torch.stack(path)


def ema_momentum(grad: GradFn, theta0: Tensor, lr: float, beta: float, steps: int) -> Tensor:
    r"""Momentum as an exponential moving average, :math:`m_t = \beta m_{t-1} + (1-\beta) g_t`,
    :math:`\theta_t = \theta_{t-1} - \alpha m_t` with ``lr`` :math:`= \alpha`; returns the
    ``(steps + 1, ...)`` iterates."""
    alpha, beta = check_nonnegative("lr", lr), check_beta("beta", beta)
    theta = _start(theta0, steps)
    m = torch.zeros_like(theta)
    path = [theta]
    for _ in range(steps):
        m = beta * m + (1 - beta) * grad(theta)
        theta = theta - alpha * m
        path.append(theta)
    return torch.stack(path)


def nesterov_lookahead(
    grad: GradFn, theta0: Tensor, lr: float, beta: Schedule, steps: int
) -> tuple[Tensor, Tensor]:
    r"""Nesterov's method as Sutskever et al. (2013) write it: the gradient is taken at the
    look-ahead point :math:`\theta_{t-1} + \beta_t v_{t-1}`,

    .. math::
        v_t = \beta_t\, v_{t-1} - \eta\, \nabla f(\theta_{t-1} + \beta_t v_{t-1}), \qquad
        \theta_t = \theta_{t-1} + v_t, \qquad v_0 = 0 .

    ``beta`` is a constant :math:`\beta` or a schedule ``t -> β_t`` for the steps
    :math:`t = 1, \dots, T` (e.g. :func:`convex_momentum`). Returns the iterates
    :math:`\theta_t` and the velocities :math:`v_t`, each ``(steps + 1, ...)``."""
    lr = check_nonnegative("lr", lr)
    if callable(beta):
        schedule = beta
    else:
        constant = check_beta("beta", beta)

        def schedule(t: int) -> float:
            return constant

    theta = _start(theta0, steps)
    v = torch.zeros_like(theta)
    thetas, vs = [theta], [v]
    for t in range(1, steps + 1):
        b = check_beta("beta", schedule(t))
        v = b * v - lr * grad(theta + b * v)
        theta = theta + v
        thetas.append(theta)
        vs.append(v)
    return torch.stack(thetas), torch.stack(vs)


def convex_momentum(t: int) -> float:
    r"""The momentum :math:`\beta_t = (t-2)/(t+1)` of step :math:`t \ge 1` (0 for the first two
    steps) that gives Nesterov's method its :math:`O(1/t^2)` rate on convex :math:`L`-smooth
    functions, in the look-ahead form of :func:`nesterov_lookahead`.

    It is the textbook form :math:`y_k = \theta_k + \frac{k-1}{k+2}(\theta_k - \theta_{k-1})`,
    :math:`\theta_{k+1} = y_k - \eta\nabla f(y_k)` with :math:`k = t - 1`, for which
    :math:`f(\theta_k) - f^\star \le 2\|\theta_0 - \theta^\star\|^2 / (\eta (k+1)^2)` when
    :math:`\eta \le 1/L` (Nesterov, 1983; Su, Boyd & Candès, 2016, Theorem 6)."""
    if not (isinstance(t, int) and t >= 1):
        raise ValueError(f"Invalid t: {t!r}; need an integer >= 1")
    return max(0.0, (t - 2) / (t + 1))


def buffer_sequence(grads: Tensor, **hyper: float | bool) -> Tensor:
    r"""Step ``optlib.SGD(**hyper)`` (``momentum > 0``) with the gradients ``grads[0], grads[1],
    ...`` in turn, whatever the parameter's value, and return the momentum buffer :math:`b_t`
    after each step: shape ``grads.shape``."""
    grads = torch.as_tensor(grads)
    if grads.ndim < 1 or len(grads) == 0:
        raise ValueError("grads must hold at least one gradient along its first dimension")
    theta = torch.zeros_like(grads[0]).requires_grad_()
    opt = SGD([theta], **hyper)
    if not opt.param_groups[0]["momentum"] > 0:
        raise ValueError("buffer_sequence needs momentum > 0 (plain SGD keeps no buffer)")
    out = []
    for g in grads:
        theta.grad = g.clone()
        opt.step()
        out.append(opt.state[theta]["momentum_buffer"].clone())
    return torch.stack(out)


def iterates(
    make_optimizer: Callable[[list[Tensor]], torch.optim.Optimizer],
    grad: GradFn,
    theta0: Tensor,
    steps: int,
) -> Tensor:
    r"""Run ``make_optimizer([theta])`` for ``steps`` steps, setting ``theta.grad =
    grad(theta)`` before each; return the iterates :math:`\theta_0, \dots, \theta_T` as a
    ``(steps + 1, ...)`` tensor. For gradient functions that are not a
    :class:`~optlib.problems.landscapes.Landscape` (any dimension)."""
    theta = _start(theta0, steps).requires_grad_()
    opt = make_optimizer([theta])
    path = [theta.detach().clone()]
    for _ in range(steps):
        theta.grad = grad(theta.detach())
        opt.step()
        path.append(theta.detach().clone())
    return torch.stack(path)


def flat_spectrum_quadratic(d: int = 2000, L: float = 1.0) -> tuple[Tensor, Tensor]:
    r"""A convex quadratic :math:`f(e) = \tfrac12 \sum_i \lambda_i e_i^2` (minimum 0 at
    :math:`e = 0`) and a start :math:`e_0` on which first-order methods meet their worst-case
    rates for convex :math:`L`-smooth functions over a long range of :math:`t`.

    The curvatures :math:`\lambda_i = L\,(i/d)^2` crowd towards 0, and
    :math:`e_{0,i}^2 = (\lambda_i - \lambda_{i-1})/\lambda_i`, so that the initial gap spreads
    evenly over the spectrum: :math:`\sum_i \lambda_i e_{0,i}^2\, \delta_{\lambda_i}` approximates
    the uniform measure on :math:`[0, L]`. Gradient descent with :math:`\eta = 1/L` then leaves
    :math:`f \approx \int_0^L (1-\lambda/L)^{2t} d\lambda / 2 \approx L/(4t)`, and no method can
    beat :math:`1/t^2`, until :math:`t` approaches :math:`d` and the smallest curvature
    :math:`L/d^2` starts to show. Returns ``(curvatures, e0)`` in float64."""
    if not (isinstance(d, int) and d >= 2):
        raise ValueError(f"Invalid d: {d!r}; need an integer >= 2")
    L = check_nonnegative("L", L)
    if L == 0:
        raise ValueError("Invalid L: 0; allowed range is (0, inf)")
    i = torch.arange(d + 1, dtype=torch.float64)
    edges = L * (i / d) ** 2
    lam = edges[1:]
    return lam, ((edges[1:] - edges[:-1]) / lam).sqrt()
