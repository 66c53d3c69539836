r"""Krylov-subspace solvers: conjugate gradients (with and without a preconditioner) and GMRES.

A Krylov method picks :math:`x_k \in x_0 + \mathcal K_k(A, r_0)`,
:math:`\mathcal K_k = \operatorname{span}\{r_0, Ar_0, \dots, A^{k-1}r_0\}`, optimally in some
norm, so after :math:`k` steps it has done at least as well as *any* polynomial iteration of
degree :math:`k` (Richardson, heavy ball, Chebyshev...), without knowing the spectrum:

* **CG** (Hestenes & Stiefel, 1952) minimises the :math:`A`-norm of the error over
  :math:`\mathcal K_k` for symmetric positive definite :math:`A`, with short recurrences, and
  satisfies :math:`\|e_k\|_A \le 2\big((\sqrt\kappa-1)/(\sqrt\kappa+1)\big)^k \|e_0\|_A`
  (Saad, 2003, §6.11.3; Trefethen & Bau, 1997, Lecture 38).
* **PCG** runs CG on :math:`M^{-1}A` in the :math:`M`-inner product: the bound holds with
  :math:`\kappa(M^{-1}A)` (Saad, 2003, §9.2).
* **GMRES** (Saad & Schultz, 1986) minimises :math:`\|b - Ax_k\|_2` over :math:`\mathcal K_k`
  for any nonsingular :math:`A`, at the price of storing the whole Krylov basis; ``restart``
  bounds that memory (GMRES(m)) at the risk of stagnation (Saad, 2003, §6.5; Trefethen & Bau,
  1997, Lecture 35).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..optim._validate import check_positive_int
from ._common import (
    MatVec,
    Operator,
    Recorder,
    as_matvec,
    check_preconditioner,
    check_rhs,
    check_tol_and_max_iter,
    initial_guess,
    norm,
)
from .results import SolveResult

__all__ = ["cg", "pcg", "gmres"]


def cg(
    A: Operator,
    b: Tensor,
    *,
    x0: Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int | None = None,
    keep_iterates: bool = False,
) -> SolveResult:
    r"""Conjugate gradients for symmetric positive definite :math:`A` (Saad, 2003, Alg. 6.18):

    .. math::
        r_0 = b - Ax_0,\quad p_0 = r_0;\qquad
        \alpha_k = \frac{r_k^\top r_k}{p_k^\top A p_k},\quad
        x_{k+1} = x_k + \alpha_k p_k,\quad
        r_{k+1} = r_k - \alpha_k A p_k,\quad
        \beta_k = \frac{r_{k+1}^\top r_{k+1}}{r_k^\top r_k},\quad
        p_{k+1} = r_{k+1} + \beta_k p_k .

    In exact arithmetic it terminates in at most :math:`n` steps (``max_iter`` defaults to
    :math:`10n` to leave room for rounding). If :math:`p_k^\top A p_k \le 0`, :math:`A` is not
    positive definite and the run stops with ``reason="breakdown"``. The recorded norms are those
    of the recurrence residual :math:`r_k`.
    """
    b = check_rhs(b)
    tol, max_iter = check_tol_and_max_iter(tol, max_iter, default=10 * b.numel())
    matvec = as_matvec(A, b)
    rec = Recorder(b, tol, keep_iterates)
    x = initial_guess(x0, b)
    r = b - matvec(x)
    p = r
    rr = torch.dot(r, r)
    stop = rec.record(rr.sqrt(), x)
    for _ in range(max_iter):
        if stop:
            break
        Ap = matvec(p)
        pAp = torch.dot(p, Ap)
        if not pAp > 0:
            rec.reason = "breakdown"
            break
        alpha = rr / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        rr_next = torch.dot(r, r)
        beta = rr_next / rr
        p = r + beta * p
        rr = rr_next
        stop = rec.record(rr.sqrt(), x)
    return rec.result(x, "cg")


def pcg(
    A: Operator,
    b: Tensor,
    M_inv: MatVec | Tensor,
    *,
    x0: Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int | None = None,
    keep_iterates: bool = False,
) -> SolveResult:
    r"""Preconditioned conjugate gradients (Saad, 2003, Alg. 9.1). ``M_inv`` applies
    :math:`M^{-1}` (a callable, a matrix, or a 1-D tensor holding the diagonal of :math:`M^{-1}`,
    e.g. :func:`~optlib.linalg.stationary.jacobi_preconditioner`); :math:`M` must be SPD.

    .. math::
        r_0 = b - Ax_0,\quad z_0 = M^{-1}r_0,\quad p_0 = z_0;\qquad
        \alpha_k = \frac{r_k^\top z_k}{p_k^\top A p_k},\quad
        x_{k+1} = x_k + \alpha_k p_k,\quad
        r_{k+1} = r_k - \alpha_k A p_k,

    .. math::
        z_{k+1} = M^{-1} r_{k+1},\quad
        \beta_k = \frac{r_{k+1}^\top z_{k+1}}{r_k^\top z_k},\quad
        p_{k+1} = z_{k+1} + \beta_k p_k .

    The only new line compared with :func:`cg` is :math:`z = M^{-1}r`; with
    :math:`M = \operatorname{diag}(A)` that is the per-coordinate rescaling RMSProp and Adam
    apply to the gradient. Convergence follows :math:`\kappa(M^{-1}A)` instead of
    :math:`\kappa(A)`. Residual norms are those of the unpreconditioned :math:`r_k`.
    """
    b = check_rhs(b)
    tol, max_iter = check_tol_and_max_iter(tol, max_iter, default=10 * b.numel())
    matvec = as_matvec(A, b)
    precondition = check_preconditioner("M_inv", M_inv)
    rec = Recorder(b, tol, keep_iterates)
    x = initial_guess(x0, b)
    r = b - matvec(x)
    z = precondition(r)
    p = z
    rz = torch.dot(r, z)
    stop = rec.record(norm(r), x)
    for _ in range(max_iter):
        if stop:
            break
        Ap = matvec(p)
        pAp = torch.dot(p, Ap)
        if not (pAp > 0 and rz > 0):
            rec.reason = "breakdown"
            break
        alpha = rz / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        z = precondition(r)
        rz_next = torch.dot(r, z)
        beta = rz_next / rz
        p = z + beta * p
        rz = rz_next
        stop = rec.record(norm(r), x)
    return rec.result(x, "pcg")


def _givens(a: float, c: float) -> tuple[float, float, float]:
    r"""Rotation :math:`(\cos, \sin)` with :math:`[\cos\ \sin; -\sin\ \cos]\,[a; c] = [\rho; 0]`,
    and :math:`\rho = \sqrt{a^2 + c^2}`."""
    rho = math.hypot(a, c)
    return a / rho, c / rho, rho


def gmres(
    A: Operator,
    b: Tensor,
    *,
    restart: int | None = None,
    x0: Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int | None = None,
    keep_iterates: bool = False,
) -> SolveResult:
    r"""GMRES (Saad & Schultz, 1986; Saad, 2003, Alg. 6.9 with §6.5.3's Givens rotations):

    .. math::
        x_k = x_0 + V_k y_k, \qquad
        y_k = \arg\min_y \big\|\,\beta e_1 - \bar H_k y\,\big\|_2, \qquad \beta = \|r_0\|,

    where the Arnoldi process (modified Gram-Schmidt) builds an orthonormal basis :math:`V_k` of
    :math:`\mathcal K_k(A, r_0)` and the :math:`(k+1)\times k` Hessenberg matrix
    :math:`\bar H_k` with :math:`AV_k = V_{k+1}\bar H_k`:

    .. math::
        w = Av_j;\quad h_{ij} = v_i^\top w,\ w \leftarrow w - h_{ij}v_i\ (i = 1..j);\quad
        h_{j+1,j} = \|w\|,\ v_{j+1} = w / h_{j+1,j}.

    Givens rotations reduce :math:`\bar H_k` to triangular form as it grows, so the residual
    norm :math:`\|b - Ax_k\| = |g_{k+1}|` is known at every step without forming :math:`x_k`.
    With ``restart=m`` the basis is discarded every :math:`m` steps (GMRES(m)); the default
    keeps it for up to :math:`n` steps, the full method, which then terminates in at most
    :math:`n` steps in exact arithmetic. ``max_iter`` (default :math:`10n`) counts Arnoldi
    steps, one matvec each. At the end of each cycle the true residual replaces the estimate.
    """
    b = check_rhs(b)
    n = b.numel()
    tol, max_iter = check_tol_and_max_iter(tol, max_iter, default=10 * n)
    m = n if restart is None else check_positive_int("restart", restart)
    matvec = as_matvec(A, b)
    rec = Recorder(b, tol, keep_iterates)
    x = initial_guess(x0, b)
    r = b - matvec(x)
    beta = norm(r)
    stop = rec.record(beta, x)
    steps = 0
    while not stop and steps < max_iter:
        V = torch.zeros(m + 1, n, dtype=b.dtype, device=b.device)
        H = torch.zeros(m + 1, m, dtype=torch.float64)  # rotated in place into R
        cs: list[float] = []
        sn: list[float] = []
        g = [beta] + [0.0] * m  # rotated right-hand side beta * e_1
        V[0] = r / beta
        k = 0
        for j in range(min(m, max_iter - steps)):
            w = matvec(V[j])
            w_norm_before = norm(w)
            for i in range(j + 1):  # modified Gram-Schmidt
                h_ij = float(torch.dot(V[i], w))
                H[i, j] = h_ij
                w = w - h_ij * V[i]
            h_next = norm(w)
            for i in range(j):  # earlier rotations act on the new column
                a, c = float(H[i, j]), float(H[i + 1, j])
                H[i, j], H[i + 1, j] = cs[i] * a + sn[i] * c, -sn[i] * a + cs[i] * c
            if H[j, j] == 0 and h_next == 0:
                rec.reason = "breakdown"  # A is singular on the Krylov space
                stop = True
                break
            cos, sin, rho = _givens(float(H[j, j]), h_next)
            cs.append(cos)
            sn.append(sin)
            H[j, j] = rho
            g[j + 1], g[j] = -sin * g[j], cos * g[j]
            k, steps = j + 1, steps + 1
            x_k = _update(x, V, H, g, k) if keep_iterates else None
            stop = rec.record(abs(g[j + 1]), x_k)
            happy_breakdown = h_next <= 1e-14 * w_norm_before  # K_k is A-invariant: x_k exact
            if stop or happy_breakdown:
                break
            V[j + 1] = w / h_next
        if k > 0:
            x = _update(x, V, H, g, k)
            r = b - matvec(x)
            beta = norm(r)
            if rec.reason != "breakdown":
                stop = rec.replace_last(beta)
    return rec.result(x, "gmres")


def _update(x: Tensor, V: Tensor, R: Tensor, g: list[float], k: int) -> Tensor:
    """:math:`x + V_k y` with :math:`R_k y = g_{1:k}` (back substitution)."""
    rhs = torch.tensor(g[:k], dtype=R.dtype).unsqueeze(1)
    y = torch.linalg.solve_triangular(R[:k, :k], rhs, upper=True).squeeze(1)
    return x + V[:k].T @ y.to(dtype=x.dtype, device=x.device)
