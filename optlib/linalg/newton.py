r"""Newton's method: the optimizer every other one approximates.

Newton's step solves the linear system :math:`\nabla^2 f(x_k)\, d_k = -\nabla f(x_k)`, i.e. it
preconditions the gradient with the inverse Hessian. Near a minimiser with a Lipschitz,
positive definite Hessian it converges quadratically, :math:`\|x_{k+1} - x^\star\| \le
C\|x_k - x^\star\|^2`: the number of correct digits doubles every step (Nocedal & Wright, 2006,
Theorem 3.5). Far from it the pure step may go uphill or overshoot; a Levenberg-style
``damping`` :math:`\lambda I` and an Armijo backtracking ``line_search`` make it robust
(Nocedal & Wright, 2006, §3.1 and §3.4).

:func:`newton_cg` never forms the Hessian: it solves the Newton system only approximately, by
conjugate gradients on Hessian-vector products (Pearlmutter, 1994), the "Hessian-free" Newton
method (Nocedal & Wright, 2006, Algorithm 7.1; Martens, 2010).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..optim._validate import check_interval, check_nonnegative, check_positive, check_positive_int
from .curvature import _gradient_with_graph, _hvp_from_gradient
from .krylov import cg

__all__ = ["NewtonCGResult", "NewtonResult", "newton", "newton_cg"]

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


@dataclass
class NewtonCGResult(NewtonResult):
    r"""The outcome of :func:`newton_cg`: :class:`NewtonResult`'s fields, and

    Attributes:
        cg_iterations: the conjugate-gradient iterations of each Newton step, one
            Hessian-vector product each.
        negative_curvature: the steps whose CG run met a direction with
            :math:`p^\top \nabla^2 f\, p \le 0` and stopped there.
    """

    cg_iterations: list[int] = field(default_factory=list)
    negative_curvature: list[int] = field(default_factory=list)

    @property
    def hessian_vector_products(self) -> int:
        """The total number of Hessian-vector products, the method's main cost."""
        return sum(self.cg_iterations)


HvpFn = Callable[[Tensor, Tensor], Tensor]


def _autograd_derivatives(f: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, VectorFn]:
    r""":math:`\nabla f(x)` and the map :math:`v \mapsto \nabla^2 f(x)\,v` by double backward
    (Pearlmutter, 1994): the gradient's graph is built once and reused for every product."""
    leaf = x.detach().requires_grad_(True)
    value = f(leaf)
    if not isinstance(value, Tensor) or value.numel() != 1 or not value.requires_grad:
        raise ValueError("Invalid f: expected a differentiable scalar function of a 1-D tensor")
    (g,) = _gradient_with_graph(value, [leaf])

    def product(v: Tensor) -> Tensor:
        return _hvp_from_gradient([g], [leaf], [v])[0]

    return g.detach(), product


def _skip_zero(product: VectorFn) -> VectorFn:
    """``product``, except that the zero vector (CG's first residual from ``d = 0``) costs no
    Hessian-vector product."""
    return lambda v: torch.zeros_like(v) if not bool(v.any()) else product(v)


def newton_cg(
    f: Callable[[Tensor], Tensor],
    x0: Tensor,
    *,
    grad: VectorFn | None = None,
    hvp: HvpFn | None = None,
    tol: float = 1e-10,
    max_iter: int = 100,
    max_cg: int | None = None,
    line_search: bool = True,
    c1: float = 1e-4,
    shrink: float = 0.5,
    keep_iterates: bool = True,
) -> NewtonCGResult:
    r"""Newton's method with the Newton system solved inexactly by conjugate gradients, on
    Hessian-vector products only (line-search Newton-CG, Nocedal & Wright, 2006, Algorithm 7.1):

    .. math::
        \text{CG on } \nabla^2 f(x_k)\, d = -\nabla f(x_k) \text{ from } d = 0 \text{ until }
        \|\nabla^2 f(x_k)\, d + \nabla f(x_k)\| \le \eta_k \|\nabla f(x_k)\|, \quad
        \eta_k = \min\bigl(\tfrac12, \sqrt{\|\nabla f(x_k)\|}\bigr), \qquad
        x_{k+1} = x_k + t_k d .

    The forcing term :math:`\eta_k \to 0` makes the convergence superlinear; one CG iteration
    costs one product :math:`\nabla^2 f(x_k)\,v`, so the Hessian is never formed. If CG meets
    a direction of non-positive curvature it stops and returns its last iterate (or
    :math:`-\nabla f(x_k)` at the first iteration): a descent direction even where the Hessian
    is indefinite. With ``line_search`` the step :math:`t_k` is the first of
    :math:`1, \rho, \rho^2, \dots` (:math:`\rho` = ``shrink``) that passes Armijo's test (to
    within a few units in the last place of :math:`f`, which rounding cannot resolve).

    ``hvp(x, v)`` gives :math:`\nabla^2 f(x)\,v`; by default it is computed by double backward
    through ``f`` (Pearlmutter, 1994; :func:`~optlib.linalg.curvature.hvp`), which then also
    gives the gradient. ``max_cg`` (default :math:`n`) bounds the CG iterations of one step.
    Martens (2010) trains deep networks this way ("Hessian-free" optimisation, with the
    Gauss-Newton matrix in place of the Hessian).
    """
    if not callable(f):
        raise ValueError(f"Invalid f: expected a callable, got {f!r}")
    if not isinstance(x0, Tensor) or x0.ndim != 1 or not x0.is_floating_point():
        raise ValueError("Invalid x0: expected a 1-D floating-point tensor")
    if grad is not None and not callable(grad):
        raise ValueError(f"Invalid grad: expected a callable or None, got {grad!r}")
    if hvp is not None and not callable(hvp):
        raise ValueError(f"Invalid hvp: expected a callable (x, v) -> Hv or None, got {hvp!r}")
    tol = check_positive("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    max_cg = x0.numel() if max_cg is None else check_positive_int("max_cg", max_cg)
    c1 = check_interval("c1", c1, 0.0, 1.0, low_open=True)
    shrink = check_interval("shrink", shrink, 0.0, 1.0, low_open=True)

    def derivatives(x: Tensor) -> tuple[Tensor, VectorFn]:
        if hvp is None:
            g, product = _autograd_derivatives(f, x)
            return (g if grad is None else grad(x).detach()), product
        g = grad(x).detach() if grad is not None else _autograd_derivatives(f, x)[0]
        return g, lambda v: hvp(x, v).detach()

    x = x0.detach().clone()
    g, product = derivatives(x)
    grad_norms = [float(torch.linalg.vector_norm(g))]
    losses = [float(f(x))]
    iterates = [x.clone()] if keep_iterates else None
    step_sizes: list[float] = []
    inner: list[int] = []
    negative: list[int] = []
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
        forcing = min(0.5, math.sqrt(grad_norms[-1]))
        solve = cg(_skip_zero(product), -g, tol=forcing, max_iter=max_cg)
        inner.append(solve.iterations + (solve.reason == "breakdown"))  # the failed product too
        d = solve.x
        if solve.reason == "breakdown":
            negative.append(len(step_sizes))
            if not bool(d.any()):
                d = -g
        t, slope = 1.0, float(torch.dot(g, d))
        f_new = float(f(x + d))
        # a few ulps of slack: near the minimiser the decrease Armijo asks for falls below the
        # rounding of f, and an exact test would halve steps that are in fact fine
        slack = 8 * torch.finfo(x.dtype).eps * abs(losses[-1])
        while line_search and f_new > losses[-1] + c1 * t * slope + slack and t > 1e-12:
            t *= shrink
            f_new = float(f(x + t * d))
        x = x + t * d
        g, product = derivatives(x)
        step_sizes.append(t)
        grad_norms.append(float(torch.linalg.vector_norm(g)))
        losses.append(f_new)
        if iterates is not None:
            iterates.append(x.clone())
    return NewtonCGResult(
        x=x,
        grad_norms=grad_norms,
        losses=losses,
        step_sizes=step_sizes,
        iterations=len(step_sizes),
        converged=reason == "converged",
        reason=reason,
        iterates=iterates,
        cg_iterations=inner,
        negative_curvature=negative,
    )
