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
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..optim import SGD
from ..optim._validate import check_beta, check_nonnegative

__all__ = ["polyak_heavy_ball", "ema_momentum", "nesterov_lookahead", "buffer_sequence"]

GradFn = Callable[[Tensor], Tensor]


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
    grad: GradFn, theta0: Tensor, lr: float, beta: float, steps: int
) -> tuple[Tensor, Tensor]:
    r"""Nesterov's method as Sutskever et al. (2013) write it: the gradient is taken at the
    look-ahead point :math:`\theta_{t-1} + \beta v_{t-1}`. Returns the iterates
    :math:`\theta_t` and the velocities :math:`v_t`, each ``(steps + 1, ...)``."""
    lr, beta = check_nonnegative("lr", lr), check_beta("beta", beta)
    theta = _start(theta0, steps)
    v = torch.zeros_like(theta)
    thetas, vs = [theta], [v]
    for _ in range(steps):
        v = beta * v - lr * grad(theta + beta * v)
        theta = theta + v
        thetas.append(theta)
        vs.append(v)
    return torch.stack(thetas), torch.stack(vs)


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
