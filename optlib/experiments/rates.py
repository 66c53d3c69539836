r"""Convergence rates: how fast a sequence shrinks, measured, and the theory for momentum on
quadratics to hold the measurements to.

Measuring: :func:`contraction_rate` fits the per-step factor :math:`\rho` of
:math:`e_t \approx C\rho^t` on a window the caller chooses (chapter 1 compares it with
:math:`(\kappa-1)/(\kappa+1)`); :func:`measured_rate` chooses the window itself (the second half
of the sequence, up to where it reaches rounding or overflows); :func:`state_norms` turns a
momentum method's iterates into the sequence to fit.

Theory. On a quadratic with Hessian eigenvalues :math:`\lambda`, gradient descent with momentum
acts on each eigen-coordinate :math:`u_t` of the error separately, through a linear recursion of
order
two. Heavy ball (``optlib.SGD(lr=η, momentum=β)``, Polyak 1964) and Nesterov
(``nesterov=True``) give, with :math:`h = \eta\lambda`,

.. math::
   u_t = (1 + \beta - h)\, u_{t-1} - \beta\, u_{t-2}
   \qquad\text{and}\qquad
   u_t = (1 + \beta)(1 - h)\, u_{t-1} - \beta (1 - h)\, u_{t-2},

so :math:`|u_t|` shrinks like :math:`\rho^t`, where :math:`\rho` is the larger modulus of the
roots of :math:`z^2 - a z + c` (:math:`a = 1 + \beta - h`, :math:`c = \beta` for heavy ball;
:math:`a = (1 + \beta)(1 - h)`, :math:`c = \beta(1 - h)` for Nesterov). Nesterov's recursion is
heavy ball's with the momentum :math:`\beta(1 - h)` in place of :math:`\beta`: less momentum
where the curvature is high (Sutskever et al., 2013, §2.1). Complex roots (a spiral) have modulus
:math:`\sqrt{c}`; stability needs :math:`0 < h < 2(1 + \beta)` for heavy ball and
:math:`0 < h < 2(1 + \beta)/(1 + 2\beta)` for Nesterov (for :math:`0 \le \beta < 1`).
Over a spectrum in :math:`[\mu, L]` the worst coordinate sits at an end, :math:`\lambda = \mu` or
:math:`\lambda = L` (:func:`quadratic_rate`). Goh (2017) draws these rates as phase diagrams.

The measurements run :class:`optlib.SGD` itself and fit the per-step factor with
:func:`contraction_rate`; :func:`measured_rate_grid` does a whole
:math:`(\eta, \beta)` grid at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .._seed import derive_seed
from ..optim import SGD
from ..optim._validate import check_positive

__all__ = [
    "contraction_rate",
    "measured_rate",
    "mode_rate",
    "mode_angle",
    "optimal_heavy_ball_factors",
    "quadratic_rate",
    "stable_lr_limit",
    "optimal_nesterov_params",
    "state_norms",
    "measured_rate_grid",
]

ArrayLike = float | Sequence[float] | np.ndarray


def contraction_rate(
    values: Sequence[float] | np.ndarray, start: int = 0, stop: int | None = None
) -> float:
    r"""The per-step factor :math:`\rho` in :math:`e_t \approx C \rho^t`, fitted on a window.

    A least-squares line through the points :math:`(t, \log e_t)` for ``t`` in
    ``range(start, stop)`` has slope :math:`\log\rho`, so a sequence that shrinks exactly
    geometrically gives its ratio back to rounding. Non-positive or non-finite values (converged
    to zero, or diverged) in the window are an error: choose ``start`` and ``stop``.
    """
    e = np.asarray(values, dtype=np.float64)[start:stop]
    if len(e) < 2:
        raise ValueError("need at least two values to measure a rate")
    if not np.all(np.isfinite(e) & (e > 0)):
        raise ValueError("values must be finite and positive in the window (choose start/stop)")
    t = np.arange(len(e), dtype=np.float64)
    slope = np.polyfit(t, np.log(e), 1)[0]
    return float(np.exp(slope))


def mode_rate(lr: ArrayLike, beta: ArrayLike, curvature: ArrayLike, *, nesterov: bool = False):
    r"""Per-step factor :math:`\rho` of one eigen-coordinate with curvature :math:`\lambda`:
    the largest root modulus of :math:`z^2 - a z + c` (see the module docstring).

    ``lr``, ``beta`` and ``curvature`` broadcast against each other (numpy); a float comes back
    when all three are scalars. :math:`\rho > 1` means the coordinate grows.
    """
    h = np.asarray(lr, dtype=np.float64) * np.asarray(curvature, dtype=np.float64)
    b = np.asarray(beta, dtype=np.float64)
    if nesterov:
        a, c = (1 + b) * (1 - h), b * (1 - h)
    else:
        a, c = 1 + b - h, b + 0 * h
    disc = a * a - 4 * c
    complex_roots = disc < 0  # then c > 0 and both roots have modulus sqrt(c)
    rho = np.where(
        complex_roots,
        np.sqrt(np.abs(c)),
        (np.abs(a) + np.sqrt(np.where(complex_roots, 0.0, disc))) / 2,
    )
    return float(rho) if rho.ndim == 0 else rho


def mode_angle(lr: ArrayLike, beta: ArrayLike, curvature: ArrayLike, *, nesterov: bool = False):
    r"""Rotation per step :math:`\omega \in [0, \pi]` (radians) of one eigen-coordinate: the
    argument of the dominant root of :math:`z^2 - a z + c` (see the module docstring).

    Complex roots :math:`\sqrt c\, e^{\pm i\omega}` give :math:`\cos\omega = a / (2\sqrt c)`:
    the coordinate spirals, turning by :math:`\omega` per step. Real roots give :math:`0` (the
    dominant root is positive: a monotone approach) or :math:`\pi` (negative: the sign flips at
    every step, gradient descent's zig-zag). Broadcasts like :func:`mode_rate`.
    """
    h = np.asarray(lr, dtype=np.float64) * np.asarray(curvature, dtype=np.float64)
    b = np.asarray(beta, dtype=np.float64)
    if nesterov:
        a, c = (1 + b) * (1 - h), b * (1 - h)
    else:
        a, c = 1 + b - h, b + 0 * h
    complex_roots = a * a - 4 * c < 0  # then c > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(complex_roots, a / (2 * np.sqrt(np.abs(c))), 0.0)
    omega = np.where(complex_roots, np.arccos(np.clip(cos, -1.0, 1.0)), np.where(a < 0, np.pi, 0.0))
    return float(omega) if omega.ndim == 0 else omega


def optimal_heavy_ball_factors(kappa: float, t: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    r"""The exact factors :math:`c_t / c_0` of the steep (:math:`\lambda = L`) and the flat
    (:math:`\lambda = \mu`) eigen-coordinate of the error after :math:`t` steps of heavy ball with
    its optimal :math:`(\eta^\star, \beta^\star)` (Polyak, 1964), started at rest.

    At the optimum both extreme coordinates sit on the edge of the complex window, where the
    characteristic polynomial :math:`z^2 - a z + \beta` has a double root :math:`z` with
    :math:`z^2 = \beta` and :math:`a = 2z`: :math:`z = -\rho` for :math:`\lambda = L` and
    :math:`z = \rho` for :math:`\lambda = \mu`, :math:`\rho = (\sqrt\kappa-1)/(\sqrt\kappa+1)`.
    The solutions are then :math:`(A + Bt)\,z^t`; starting at rest (:math:`c_{-1} = c_0`, so
    :math:`c_1 = (a - \beta)\, c_0`) fixes :math:`A = c_0`, :math:`B = (1 - z)\, c_0`:

    .. math::
        \frac{c_t}{c_0} = \bigl(1 + (1 + \rho)\,t\bigr)(-\rho)^t \ \ (\lambda = L), \qquad
        \frac{c_t}{c_0} = \bigl(1 + (1 - \rho)\,t\bigr)\rho^t \ \ (\lambda = \mu).

    The linear factor is why a run needs more steps than :math:`\ln\varepsilon / \ln\rho`.
    Returns ``(steep, flat)``, arrays shaped like ``t``.
    """
    kappa = check_positive("kappa", kappa)
    if kappa < 1:
        raise ValueError(f"Invalid kappa: {kappa!r}; allowed range is [1, inf)")
    rho = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    t = np.asarray(t, dtype=np.float64)
    steep = (1 + (1 + rho) * t) * (-rho) ** t
    flat = (1 + (1 - rho) * t) * rho**t
    return steep, flat


def quadratic_rate(lr: ArrayLike, beta: ArrayLike, L: float, mu: float, *, nesterov: bool = False):
    r"""Per-step factor on a quadratic with Hessian eigenvalues in :math:`[\mu, L]`:
    :math:`\max(\rho(\eta\mu), \rho(\eta L))`, the slower of the two extreme coordinates."""
    return np.maximum(
        mode_rate(lr, beta, mu, nesterov=nesterov), mode_rate(lr, beta, L, nesterov=nesterov)
    )


def stable_lr_limit(beta: ArrayLike, L: float, *, nesterov: bool = False):
    r"""The largest stable step for curvature up to :math:`L`: :math:`2(1+\beta)/L` for heavy
    ball, :math:`2(1+\beta)/((1+2\beta) L)` for Nesterov (for :math:`0 \le \beta < 1`)."""
    b = np.asarray(beta, dtype=np.float64)
    limit = 2 * (1 + b) / L if not nesterov else 2 * (1 + b) / ((1 + 2 * b) * L)
    return float(limit) if limit.ndim == 0 else limit


def optimal_nesterov_params(L: float, mu: float) -> tuple[float, float]:
    r"""The ``(lr, beta)`` that minimise Nesterov's rate over quadratics with eigenvalues in
    :math:`[\mu, L]` (Lessard, Recht & Packard, 2016, Proposition 1):

    .. math::
        \eta = \frac{4}{3L + \mu}, \qquad
        \beta = \frac{\sqrt{3\kappa + 1} - 2}{\sqrt{3\kappa + 1} + 2}, \qquad
        \rho = 1 - \frac{2}{\sqrt{3\kappa + 1}} .
    """
    L, mu = check_positive("L", L), check_positive("mu", mu)
    if L < mu:
        raise ValueError(f"Invalid L: {L!r}; the largest eigenvalue must satisfy L >= mu = {mu!r}")
    s = math.sqrt(3 * L / mu + 1)
    return 4 / (3 * L + mu), (s - 2) / (s + 2)


def state_norms(path: np.ndarray) -> np.ndarray:
    r""":math:`\sqrt{\|e_t\|^2 + \|e_{t-1}\|^2}` for :math:`t = 1, \dots, T`, from the errors
    :math:`e_0, \dots, e_T` (rows of ``path``, or a 1-D array of scalars).

    A momentum method's state is the pair :math:`(e_t, e_{t-1})`. Its norm shrinks by
    :math:`\rho` per step up to a bounded factor, even when :math:`e_t` itself spirals through
    zero (complex roots), so it is the sequence to fit a rate to.
    """
    e = np.asarray(path, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged run overflows: inf
        sq = e * e if e.ndim == 1 else (e * e).sum(axis=-1)
        return np.sqrt(sq[1:] + sq[:-1])


def measured_rate(values: np.ndarray, *, tiny: float = 1e-250) -> float:
    r"""The per-step factor of a shrinking (or growing) sequence, fitted by
    :func:`contraction_rate` on its second half.

    Values below ``tiny`` (converged to rounding) or not finite (overflowed) end the window
    early; a sequence that reaches zero at once has rate 0.
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & (v > tiny)
    n = len(v) if ok.all() else int(np.argmin(ok))  # the usable prefix
    if n >= 2:
        return contraction_rate(v[:n], start=n // 2 if n >= 8 else 0)
    if n == 1 and len(v) > 1 and v[1] == 0:
        return 0.0  # exactly at the minimum after one step
    return math.nan


def measured_rate_grid(
    lrs: Sequence[float] | np.ndarray,
    betas: Sequence[float] | np.ndarray,
    H: torch.Tensor | Sequence[Sequence[float]],
    *,
    steps: int = 200,
    nesterov: bool = False,
    seed: int = 0,
) -> np.ndarray:
    r"""Measured per-step factors of :class:`optlib.SGD` on the quadratic
    :math:`f(\theta) = \tfrac12 \theta^\top H \theta`, for every ``(beta, lr)`` pair: an array of
    shape ``(len(betas), len(lrs))``.

    All cells run together. Gradient descent with momentum on a quadratic depends on the step
    and the Hessian only through :math:`\eta H`, so the cells of one :math:`\beta` form one
    parameter group with ``lr=1`` whose row :math:`j` is the problem :math:`\eta_j H`, started
    from the same seeded point (its rows match separate runs with ``lr=η_j`` to rounding; the
    tests check it). The factor is :func:`measured_rate` of :func:`state_norms`.
    """
    lrs_t = torch.as_tensor(np.asarray(lrs, dtype=np.float64))
    H_t = torch.as_tensor(H, dtype=torch.float64)
    d = H_t.shape[0]
    if H_t.shape != (d, d):
        raise ValueError(f"H must be a square matrix, got shape {tuple(H_t.shape)}")
    gen = torch.Generator().manual_seed(derive_seed(seed))
    theta0 = torch.randn(d, generator=gen, dtype=torch.float64)
    rows = [theta0.expand(len(lrs_t), d).clone().requires_grad_() for _ in betas]
    groups = [{"params": [x], "momentum": float(b)} for x, b in zip(rows, betas)]
    top = max(float(b) for b in betas)  # torch asks nesterov for a positive default momentum
    opt = SGD(groups, lr=1.0, momentum=top, nesterov=nesterov and top > 0)
    scaled = lrs_t[:, None, None] * H_t  # (n_lr, d, d): the problems eta_j H
    paths = [[x.detach().clone()] for x in rows]
    with torch.no_grad():
        for _ in range(steps):
            for x in rows:
                x.grad = torch.einsum("jkl,jl->jk", scaled, x)
            opt.step()
            for x, path in zip(rows, paths):
                path.append(x.detach().clone())
    out = np.empty((len(rows), len(lrs_t)))
    for i, path in enumerate(paths):
        p = torch.stack(path).numpy()  # (steps + 1, n_lr, d)
        for j in range(len(lrs_t)):
            out[i, j] = measured_rate(state_norms(p[:, j, :]))
    return out
