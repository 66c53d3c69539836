r"""Newton's method: the optimizer every other one approximates.

Newton's step solves the linear system :math:`\nabla^2 f(x_k)\, d_k = -\nabla f(x_k)`, i.e. it
preconditions the gradient with the inverse Hessian. Near a minimiser with a Lipschitz,
positive definite Hessian it converges quadratically, :math:`\|x_{k+1} - x^\star\| \le
C\|x_k - x^\star\|^2`: the number of correct digits doubles every step (Nocedal & Wright, 2006,
Theorem 3.5). Far from it the pure step may go uphill or overshoot; a Levenberg-style
``damping`` :math:`\lambda I` and an Armijo backtracking ``line_search`` make it robust
(Nocedal & Wright, 2006, §3.1 and §3.4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..optim._validate import check_interval, check_nonnegative, check_positive, check_positive_int

__all__ = ["NewtonResult", "newton"]

VectorFn = Callable[[Tensor], Tensor]


@dataclass
class NewtonResult:
    r"""The outcome of :func:`newton`.

    Attributes:
        x: the last iterate :math:`x_k`.
        grad_norms: :math:`\|\nabla f(x_j)\|` for :math:`j = 0, \dots, k`.
        losses: :math:`f(x_j)` when :math:`f` is known, else ``None``.
        step_sizes: the line-search step :math:`t_j` of each step (all 1 without line search).
        iterations: :math:`k`.
        converged: whether :math:`\|\nabla f(x_k)\| \le \mathrm{tol}` was reached.
        reason: ``"converged"``, ``"max_iter"``, ``"diverged"`` (non-finite values) or
            ``"singular"`` (the damped Hessian could not be solved with).
        iterates: :math:`x_0, \dots, x_k` (``None`` with ``keep_iterates=False``).
    """

    x: Tensor
    grad_norms: list[float]
    losses: list[float] | None
    step_sizes: list[float]
    iterations: int
    converged: bool
    reason: str
    iterates: list[Tensor] | None = field(default=None, repr=False)


def _derivatives(
    f: object, grad: VectorFn | None, hessian: VectorFn | None
) -> tuple[VectorFn | None, VectorFn, VectorFn]:
    """Resolve ``(f, grad, hessian)``: given, taken from a landscape-like object, or autograd."""
    if f is not None and not callable(f):
        raise ValueError(f"Invalid f: expected a callable or None, got {f!r}")
    if grad is None and hessian is None and hasattr(f, "grad") and hasattr(f, "hessian"):
        return f, f.grad, f.hessian  # e.g. an optlib.problems.landscapes.Landscape
    if grad is None:
        if f is None:
            raise ValueError("Invalid grad: give grad (and hessian), or a scalar function f")
        if hessian is None:
            return (
                f,
                lambda x: torch.autograd.functional.jacobian(f, x),
                lambda x: torch.autograd.functional.hessian(f, x),
            )
        raise ValueError("Invalid grad: a hessian was given without its gradient")
    if hessian is None:
        g = grad
        return f, grad, lambda x: torch.autograd.functional.jacobian(g, x)
    return f, grad, hessian


def newton(
    f: Callable[[Tensor], Tensor] | None,
    x0: Tensor,
    *,
    grad: VectorFn | None = None,
    hessian: VectorFn | None = None,
    tol: float = 1e-10,
    max_iter: int = 50,
    damping: float = 0.0,
    line_search: bool = False,
    c1: float = 1e-4,
    shrink: float = 0.5,
    keep_iterates: bool = True,
) -> NewtonResult:
    r"""Minimise a smooth :math:`f:\mathbb R^n \to \mathbb R` by (damped) Newton steps:

    .. math::
        \big(\nabla^2 f(x_k) + \lambda I\big)\, d_k = -\nabla f(x_k), \qquad
        x_{k+1} = x_k + t_k d_k,

    with :math:`\lambda` = ``damping`` and :math:`t_k = 1`, or with ``line_search=True`` the
    first :math:`t \in \{1, \rho, \rho^2, \dots\}` (:math:`\rho` = ``shrink``) that satisfies
    Armijo's condition :math:`f(x_k + t d_k) \le f(x_k) + c_1 t\,\nabla f(x_k)^\top d_k`; if
    :math:`d_k` is not a descent direction (indefinite Hessian) the line search falls back to
    :math:`d_k = -\nabla f(x_k)`. Stops when :math:`\|\nabla f(x_k)\| \le` ``tol``.

    The derivatives come from ``grad`` and ``hessian`` callables (``f`` may then be ``None``
    unless a line search needs it), from ``f.grad`` and ``f.hessian`` when ``f`` is an
    ``optlib.problems.landscapes.Landscape``, or from autograd on the scalar function ``f``.
    ``x0`` is a 1-D tensor. Nocedal & Wright (2006), Algorithm 3.1 and §3.3–3.4.
    """
    f, grad_fn, hessian_fn = _derivatives(f, grad, hessian)
    if not isinstance(x0, Tensor) or x0.ndim != 1 or not x0.is_floating_point():
        raise ValueError("Invalid x0: expected a 1-D floating-point tensor")
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    damping = check_nonnegative("damping", damping)
    c1 = check_interval("c1", c1, 0.0, 1.0, low_open=True)
    shrink = check_interval("shrink", shrink, 0.0, 1.0, low_open=True)
    if line_search and f is None:
        raise ValueError("Invalid line_search: True needs the function f to test Armijo's rule")

    def loss(x: Tensor) -> float:
        return float(f(x))  # type: ignore[misc]

    x = x0.detach().clone()
    g = grad_fn(x).detach()
    grad_norms = [float(torch.linalg.vector_norm(g))]
    losses = [loss(x)] if f is not None else None
    iterates = [x.clone()] if keep_iterates else None
    step_sizes: list[float] = []
    while True:
        if grad_norms[-1] <= tol:
            reason = "converged"
            break
        if not math.isfinite(grad_norms[-1]):
            reason = "diverged"
            break
        if len(step_sizes) == max_iter:
            reason = "max_iter"
            break
        H = hessian_fn(x).detach()
        if damping > 0:
            H = H + damping * torch.eye(len(x), dtype=H.dtype, device=H.device)
        try:
            d = torch.linalg.solve(H, -g)
        except RuntimeError:
            reason = "singular"
            break
        t = 1.0
        if line_search:
            slope = float(torch.dot(g, d))
            if not slope < 0:
                d, slope = -g, -float(torch.dot(g, g))
            f_x = losses[-1]  # type: ignore[index]
            while loss(x + t * d) > f_x + c1 * t * slope and t > 1e-12:
                t *= shrink
        x = x + t * d
        g = grad_fn(x).detach()
        step_sizes.append(t)
        grad_norms.append(float(torch.linalg.vector_norm(g)))
        if losses is not None:
            losses.append(loss(x))
        if iterates is not None:
            iterates.append(x.clone())
    return NewtonResult(
        x=x,
        grad_norms=grad_norms,
        losses=losses,
        step_sizes=step_sizes,
        iterations=len(step_sizes),
        converged=reason == "converged",
        reason=reason,
        iterates=iterates,
    )
