r"""Stationary iterations for :math:`Ax = b`, and the optimizers they are.

Minimising the quadratic :math:`f(x) = \tfrac12 x^\top A x - b^\top x` (:math:`A` symmetric
positive definite) is solving :math:`Ax = b`, because :math:`\nabla f(x) = Ax - b = -r` is minus
the residual. So every first-order optimizer run on :math:`f` is a linear solver:

* **Richardson** :math:`x_{k+1} = x_k + \omega\,(b - Ax_k)` is gradient descent with learning
  rate :math:`\omega`. Its error contracts by :math:`\max_i |1 - \omega\lambda_i|` per step,
  smallest at :math:`\omega^\star = 2/(L+\mu)`, where it is :math:`(\kappa-1)/(\kappa+1)`
  (:math:`L, \mu` the extreme eigenvalues, :math:`\kappa = L/\mu`). Saad (2003), §4.1 and §4.2;
  Nocedal & Wright (2006), §3.3.
* **Heavy ball** :math:`x_{k+1} = x_k + \eta\,(b - Ax_k) + \beta\,(x_k - x_{k-1})` is gradient
  descent with momentum (Polyak, 1964), a second-order stationary iteration akin to Chebyshev's
  semi-iterative method (Golub & Van Loan, 2013, §11.2.8). With
  :math:`\eta^\star = 4/(\sqrt L + \sqrt\mu)^2` and
  :math:`\beta^\star = \big((\sqrt\kappa - 1)/(\sqrt\kappa + 1)\big)^2` it contracts by
  :math:`(\sqrt\kappa - 1)/(\sqrt\kappa + 1)` per step: :math:`\sqrt\kappa` where gradient
  descent pays :math:`\kappa`.
* **Jacobi** :math:`x_{k+1} = x_k + \omega\,D^{-1}(b - Ax_k)`, :math:`D = \operatorname{diag}(A)`,
  is Richardson preconditioned by the diagonal: a per-coordinate step size, the idea behind
  AdaGrad, RMSProp and Adam. Saad (2003), §4.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ..optim._validate import check_beta, check_positive
from ._common import (
    Operator,
    Recorder,
    as_matvec,
    check_rhs,
    check_tol_and_max_iter,
    initial_guess,
    norm,
)
from .results import SolveResult

__all__ = [
    "richardson",
    "heavy_ball",
    "jacobi",
    "jacobi_preconditioner",
    "DiagonalPreconditioner",
    "optimal_richardson_omega",
    "optimal_heavy_ball_params",
]


def _check_spectrum(L: float, mu: float) -> tuple[float, float]:
    mu = check_positive("mu", mu)
    L = check_positive("L", L)
    if L < mu:
        raise ValueError(f"Invalid L: {L!r}; the largest eigenvalue must satisfy L >= mu = {mu!r}")
    return L, mu


def optimal_richardson_omega(L: float, mu: float) -> float:
    r"""The step :math:`\omega^\star = 2/(L+\mu)` that minimises Richardson's contraction factor
    :math:`\max(|1-\omega\mu|, |1-\omega L|)`, which it brings to :math:`(\kappa-1)/(\kappa+1)`.
    Saad (2003), §4.2.1."""
    L, mu = _check_spectrum(L, mu)
    return 2.0 / (L + mu)


def optimal_heavy_ball_params(L: float, mu: float) -> tuple[float, float]:
    r"""Polyak's optimal heavy-ball parameters for eigenvalues in :math:`[\mu, L]`:

    .. math::
        \eta^\star = \frac{4}{(\sqrt L + \sqrt\mu)^2}, \qquad
        \beta^\star = \left(\frac{\sqrt\kappa - 1}{\sqrt\kappa + 1}\right)^2,

    returned as ``(lr, beta)``; the iteration then contracts by
    :math:`\sqrt{\beta^\star} = (\sqrt\kappa-1)/(\sqrt\kappa+1)` per step (asymptotically: at the
    optimum the iteration matrix has repeated eigenvalues, which adds a factor linear in
    :math:`k`). Polyak (1964), §3; Polyak, *Introduction to Optimization* (1987), §3.2.1.
    """
    L, mu = _check_spectrum(L, mu)
    sqrt_L, sqrt_mu = math.sqrt(L), math.sqrt(mu)
    lr = 4.0 / (sqrt_L + sqrt_mu) ** 2
    beta = ((sqrt_L - sqrt_mu) / (sqrt_L + sqrt_mu)) ** 2
    return lr, beta


def richardson(
    A: Operator,
    b: Tensor,
    omega: float,
    *,
    x0: Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int = 10_000,
    keep_iterates: bool = False,
) -> SolveResult:
    r"""Richardson's iteration, i.e. gradient descent on :math:`\tfrac12 x^\top Ax - b^\top x`
    with learning rate :math:`\omega`:

    .. math::
        r_k = b - Ax_k, \qquad x_{k+1} = x_k + \omega\, r_k .

    For SPD :math:`A` it converges iff :math:`0 < \omega < 2/L` (the "2/L stability bound" of
    chapter 1). Saad (2003), §4.2.1.
    """
    b = check_rhs(b)
    omega = check_positive("omega", omega)
    tol, max_iter = check_tol_and_max_iter(tol, max_iter)
    matvec = as_matvec(A, b)
    rec = Recorder(b, tol, keep_iterates)
    x = initial_guess(x0, b)
    r = b - matvec(x)
    stop = rec.record(norm(r), x)
    for _ in range(max_iter):
        if stop:
            break
        x = x + omega * r
        r = b - matvec(x)
        stop = rec.record(norm(r), x)
    return rec.result(x, "richardson")


def heavy_ball(
    A: Operator,
    b: Tensor,
    lr: float,
    beta: float,
    *,
    x0: Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int = 10_000,
    keep_iterates: bool = False,
) -> SolveResult:
    r"""Polyak's heavy-ball iteration (gradient descent with momentum) on :math:`Ax = b`:

    .. math::
        r_k = b - Ax_k, \qquad x_{k+1} = x_k + \eta\, r_k + \beta\,(x_k - x_{k-1}),
        \qquad x_{-1} = x_0 .

    It is ``torch.optim.SGD(lr=lr, momentum=beta)`` on the quadratic, written with the
    iterates instead of the buffer :math:`v_{k+1} = \beta v_k + g_k`,
    :math:`x_{k+1} = x_k - \eta v_{k+1}`. Use :func:`optimal_heavy_ball_params` for
    :math:`(\eta^\star, \beta^\star)`. Polyak (1964); Golub & Van Loan (2013), §11.2.8 for the
    Chebyshev connection.
    """
    b = check_rhs(b)
    lr = check_positive("lr", lr)
    beta = check_beta("beta", beta)
    tol, max_iter = check_tol_and_max_iter(tol, max_iter)
    matvec = as_matvec(A, b)
    rec = Recorder(b, tol, keep_iterates)
    x = initial_guess(x0, b)
    x_prev = x
    r = b - matvec(x)
    stop = rec.record(norm(r), x)
    for _ in range(max_iter):
        if stop:
            break
        x, x_prev = x + lr * r + beta * (x - x_prev), x
        r = b - matvec(x)
        stop = rec.record(norm(r), x)
    return rec.result(x, "heavy_ball")


@dataclass(frozen=True)
class DiagonalPreconditioner:
    r"""The map :math:`r \mapsto D^{-1} r` for a diagonal :math:`D`, stored as
    ``inverse_diagonal`` :math:`= 1/\operatorname{diag}(D)`."""

    inverse_diagonal: Tensor

    def __call__(self, r: Tensor) -> Tensor:
        return self.inverse_diagonal * r


def _diagonal_of(A: Operator, diagonal: Tensor | None, n: int) -> Tensor:
    name = "diagonal"
    if diagonal is None:
        if not isinstance(A, Tensor):
            raise ValueError("Invalid diagonal: a callable A needs its diagonal passed explicitly")
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"Invalid A: expected a square matrix, got {tuple(A.shape)}")
        name, diagonal = "A", A.diagonal()
    if not isinstance(diagonal, Tensor) or diagonal.shape != (n,):
        raise ValueError(f"Invalid {name}: expected a diagonal of length {n}")
    if bool((diagonal == 0).any()):
        raise ValueError(f"Invalid {name}: Jacobi needs a diagonal without zeros")
    return diagonal


def jacobi_preconditioner(A: Tensor) -> DiagonalPreconditioner:
    r"""The Jacobi (diagonal) preconditioner :math:`M^{-1} = \operatorname{diag}(A)^{-1}` of a
    dense square ``A``, for :func:`~optlib.linalg.krylov.pcg`. On :math:`DA_0D` with :math:`A_0`
    well conditioned it undoes the bad scaling :math:`D` (van der Sluis, 1969; Saad, 2003, §10.2).
    """
    if not isinstance(A, Tensor):
        raise ValueError(f"Invalid A: expected a dense square tensor, got {type(A).__name__}")
    return DiagonalPreconditioner(1.0 / _diagonal_of(A, None, A.shape[0]))


def jacobi(
    A: Operator,
    b: Tensor,
    *,
    omega: float = 1.0,
    diagonal: Tensor | None = None,
    x0: Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int = 10_000,
    keep_iterates: bool = False,
) -> SolveResult:
    r"""The (weighted) Jacobi iteration, from the splitting :math:`A = D - (D - A)`:

    .. math::
        r_k = b - Ax_k, \qquad x_{k+1} = x_k + \omega\, D^{-1} r_k,
        \qquad D = \operatorname{diag}(A).

    :math:`\omega = 1` is classical Jacobi, :math:`x_{k+1} = D^{-1}\big(b - (A - D)x_k\big)`,
    which converges when :math:`A` is strictly diagonally dominant (and for SPD :math:`A` iff
    :math:`2D - A` is positive definite); a smaller :math:`\omega` damps it. It is Richardson
    on the diagonally rescaled system. ``diagonal`` supplies :math:`\operatorname{diag}(A)` when
    ``A`` is a callable. Saad (2003), §4.1.
    """
    b = check_rhs(b)
    omega = check_positive("omega", omega)
    tol, max_iter = check_tol_and_max_iter(tol, max_iter)
    matvec = as_matvec(A, b)
    inverse_diagonal = 1.0 / _diagonal_of(A, diagonal, b.numel())
    rec = Recorder(b, tol, keep_iterates)
    x = initial_guess(x0, b)
    r = b - matvec(x)
    stop = rec.record(norm(r), x)
    for _ in range(max_iter):
        if stop:
            break
        x = x + omega * inverse_diagonal * r
        r = b - matvec(x)
        stop = rec.record(norm(r), x)
    return rec.result(x, "jacobi")
