r"""Evolution strategies: a gradient estimate from function values alone (chapter 12).

Salimans, Ho, Chen, Sidor & Sutskever, "Evolution Strategies as a Scalable Alternative to
Reinforcement Learning", 2017. For any :math:`f:\mathbb{R}^d\to\mathbb{R}` (differentiable or
not) and :math:`\sigma > 0`, the Gaussian smoothing :math:`f_\sigma(\theta) =
\mathbb{E}_{\varepsilon\sim\mathcal N(0, I)} f(\theta + \sigma\varepsilon)` is differentiable,
with

.. math::

   \nabla f_\sigma(\theta) = \frac{1}{\sigma}\,\mathbb{E}\big[f(\theta + \sigma\varepsilon)\,
   \varepsilon\big] = \frac{1}{2\sigma}\,\mathbb{E}\big[\big(f(\theta + \sigma\varepsilon) -
   f(\theta - \sigma\varepsilon)\big)\,\varepsilon\big].

:func:`es_gradient` averages the antithetic form over :math:`n` directions
:math:`\varepsilon_1,\dots,\varepsilon_n` (``2n`` evaluations of :math:`f`):

.. math::

   \hat g = \frac{1}{2\sigma n}\sum_{i=1}^{n}
   \big(f(\theta + \sigma\varepsilon_i) - f(\theta - \sigma\varepsilon_i)\big)\,\varepsilon_i ,
   \qquad \mathbb{E}\,\hat g = \nabla f_\sigma(\theta).

It is an unbiased estimate of the smoothed gradient, which equals :math:`\nabla f` for a
quadratic and tends to it as :math:`\sigma\to 0` for a smooth :math:`f`. Its variance grows with
the dimension: for a linear :math:`f` with gradient :math:`g`, :math:`\mathbb{E}\lVert\hat g -
g\rVert^2 = (d + 1)\lVert g\rVert^2 / n` (:func:`linear_variance`), so ES needs about :math:`d`
times more function evaluations than gradient descent needs gradients. The pairs cancel the
part :math:`f(\theta)` of every value (no baseline needed) and every even part of :math:`f`
around :math:`\theta`.

:func:`es_minimize` hands :math:`\hat g` to any torch optimizer (Salimans et al. used Adam) as
the parameters' gradient. ``f`` takes a batch of parameter vectors ``(P, d)`` and returns ``(P,)``
values, so a whole population is evaluated in one call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._seed import derive_seed

__all__ = ["es_gradient", "es_minimize", "linear_variance"]

BatchFn = Callable[[Tensor], Tensor]


def es_gradient(f: BatchFn, theta: Tensor, sigma: float, n_pairs: int, *,
                generator: torch.Generator | None = None,
                eps: Tensor | None = None) -> Tensor:  # fmt: skip
    r"""The antithetic ES estimate :math:`\hat g` of :math:`\nabla f_\sigma(\theta)` (see the
    module docstring) from ``n_pairs`` Gaussian directions drawn with ``generator`` (or given as
    ``eps``, shape ``(..., n_pairs, d)``).

    ``theta`` has shape ``(d,)``, or ``(K, d)`` for :math:`K` independent estimates at once
    (each row its own directions). ``f`` is called once, on the points of shape
    ``(..., 2 n_pairs, d)``: :math:`\theta + \sigma\varepsilon_i` for :math:`i = 1..n`, then
    :math:`\theta - \sigma\varepsilon_i`; it returns their values, shape ``(..., 2 n_pairs)``.
    The estimate has the shape and dtype of ``theta``."""
    if not sigma > 0:
        raise ValueError(f"Invalid sigma: {sigma}; need sigma > 0")
    if not (isinstance(n_pairs, int) and n_pairs >= 1):
        raise ValueError(f"Invalid n_pairs: {n_pairs!r}; need an integer >= 1")
    theta = theta.detach()
    if theta.dim() not in (1, 2):
        raise ValueError(f"Invalid theta: shape {tuple(theta.shape)}; expected (d,) or (K, d)")
    shape = (*theta.shape[:-1], n_pairs, theta.shape[-1])
    if eps is None:
        eps = torch.randn(shape, generator=generator, dtype=theta.dtype)
    elif tuple(eps.shape) != shape:
        raise ValueError(f"Invalid eps: shape {tuple(eps.shape)}, expected {shape}")
    eps = eps.to(theta.dtype)
    centre = theta.unsqueeze(-2)
    points = torch.cat([centre + sigma * eps, centre - sigma * eps], dim=-2)
    with torch.no_grad():
        values = f(points).to(theta.dtype)
    if tuple(values.shape) != tuple(points.shape[:-1]):
        raise ValueError(f"f returned shape {tuple(values.shape)} for points of shape "
                         f"{tuple(points.shape)}; expected {tuple(points.shape[:-1])}")  # fmt: skip
    diff = values[..., :n_pairs] - values[..., n_pairs:]
    return (diff.unsqueeze(-2) @ eps).squeeze(-2) / (2 * sigma * n_pairs)


def linear_variance(d: int, n_pairs: int, grad_norm_sq: float) -> float:
    r""":math:`\mathbb{E}\lVert\hat g - g\rVert^2` for a linear :math:`f` with gradient
    :math:`g` in :math:`d` dimensions: :math:`(d+1)\lVert g\rVert^2/n`. (For
    :math:`\hat g = \frac1n\sum_i \varepsilon_i\varepsilon_i^\top g`, each term has mean
    :math:`g` and :math:`\mathbb{E}\lVert\varepsilon\varepsilon^\top g\rVert^2 = (d+2)
    \lVert g\rVert^2`.)"""
    return (d + 1) * grad_norm_sq / n_pairs


def es_minimize(
    f: BatchFn,
    theta0: Tensor,
    *,
    sigma: float,
    n_pairs: int,
    steps: int,
    make_optimizer: Callable[[list[Tensor]], torch.optim.Optimizer],
    seed: int = 0,
    record: BatchFn | None = None,
    every: int = 1,
    before_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    r"""Minimise ``f`` from ``theta0`` (``(d,)``, or ``(K, d)``: :math:`K` runs at once, exact
    as separate runs under an element-wise optimizer such as SGD or Adam) with ES: at every step
    the antithetic estimate (:func:`es_gradient`, ``n_pairs`` fresh directions per run from a
    generator seeded by ``seed``) becomes the gradient of ``make_optimizer([theta])``.
    ``before_step(t)`` runs before step ``t`` (e.g. to draw the step's mini-batch). Records
    ``record(theta)`` (default ``f``; called on ``theta[..., None, :]``) every ``every`` steps;
    returns ``{"steps", "values" (steps × runs), "evaluations" (calls of f on single points per
    run), "theta"}``."""
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"Invalid steps: {steps!r}; need an integer >= 0")
    g = torch.Generator().manual_seed(derive_seed(seed))
    theta = theta0.detach().clone().requires_grad_(True)
    opt = make_optimizer([theta])
    watch = record if record is not None else f

    def value() -> np.ndarray:
        with torch.no_grad():
            return watch(theta.detach().unsqueeze(-2)).squeeze(-1).reshape(-1).double().numpy()

    steps_at, values, evals = [0], [value()], [0]
    for t in range(1, steps + 1):
        if before_step is not None:
            before_step(t)
        theta.grad = es_gradient(f, theta, sigma, n_pairs, generator=g)
        opt.step()
        if t % every == 0 or t == steps:
            steps_at.append(t)
            values.append(value())
            evals.append(2 * n_pairs * t)
    return {"steps": steps_at, "values": np.array(values), "evaluations": evals,
            "theta": theta.detach()}  # fmt: skip
