r"""Test matrices with a prescribed spectrum, and the numbers that govern convergence.

The convergence of every method in chapter 7 is a statement about the spectrum of :math:`A`:
Richardson contracts by :math:`(\kappa-1)/(\kappa+1)`, heavy ball and CG by
:math:`(\sqrt\kappa-1)/(\sqrt\kappa+1)`, where :math:`\kappa = \lambda_{\max}/\lambda_{\min}`.
The constructors below build seeded matrices whose spectrum is known exactly:
:math:`A = Q\Lambda Q^\top` with :math:`Q` Haar-random orthogonal (from the QR factorisation of a
Gaussian matrix with the signs of :math:`R`'s diagonal fixed; Mezzadri, 2007) and
:math:`\Lambda` chosen (Golub & Van Loan, 2013, §8.1; Trefethen & Bau, 1997, Lecture 12).
All are float64 by default.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._seed import derive_seed
from ..optim._validate import check_interval, check_positive, check_positive_int
from ._common import check_seed

__all__ = [
    "random_vector",
    "random_orthogonal",
    "diagonal_scales",
    "matrix_with_eigenvalues",
    "spd_matrix",
    "badly_scaled_spd",
    "nonsymmetric_matrix",
    "condition_number",
    "symmetric_diagonal_scaling",
    "eig_extremes",
]


def random_vector(n: int, seed: int = 0, *, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""A seeded standard Gaussian vector of length :math:`n` (a right-hand side :math:`b`, a
    start :math:`x_0`), drawn from a generator seeded with ``derive_seed(seed)`` so that
    ``OPTLIB_SEED`` moves it with every other seeded helper."""
    n = check_positive_int("n", n)
    gen = torch.Generator().manual_seed(derive_seed(check_seed(seed)))
    return torch.randn(n, generator=gen, dtype=dtype)


def random_orthogonal(n: int, seed: int = 0, *, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""A Haar-distributed random orthogonal :math:`n\times n` matrix :math:`Q`: the
    :math:`Q` of :math:`G = QR` (:math:`G` standard Gaussian), columns multiplied by
    :math:`\operatorname{sign}(R_{ii})` so the distribution is uniform (Mezzadri, 2007)."""
    n = check_positive_int("n", n)
    gen = torch.Generator().manual_seed(derive_seed(check_seed(seed)))
    G = torch.randn(n, n, generator=gen, dtype=dtype)
    Q, R = torch.linalg.qr(G)
    signs = torch.sign(R.diagonal())
    signs[signs == 0] = 1
    return Q * signs


def matrix_with_eigenvalues(eigenvalues: Tensor, seed: int = 0, *, rotate: bool = True) -> Tensor:
    r"""The symmetric matrix :math:`Q\,\operatorname{diag}(\lambda)\,Q^\top` with the given
    eigenvalues: :math:`Q` random orthogonal (:func:`random_orthogonal`) when ``rotate``, else
    :math:`Q = I` (a diagonal matrix, whose coordinates are its eigenvectors)."""
    if not isinstance(eigenvalues, Tensor) or eigenvalues.ndim != 1 or eigenvalues.numel() == 0:
        raise ValueError("Invalid eigenvalues: expected a non-empty 1-D tensor")
    lam = eigenvalues if eigenvalues.is_floating_point() else eigenvalues.double()
    if not rotate:
        return torch.diag(lam)
    Q = random_orthogonal(lam.numel(), seed, dtype=lam.dtype)
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2  # exactly symmetric despite rounding


def spd_matrix(
    n: int,
    kappa: float,
    seed: int = 0,
    *,
    rotate: bool = True,
    mu: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""A symmetric positive definite :math:`n\times n` matrix with condition number
    :math:`\kappa`: eigenvalues log-spaced from :math:`\mu` to :math:`L = \kappa\mu`,

    .. math::
        \lambda_i = \mu\,\kappa^{(i-1)/(n-1)}, \quad i = 1..n, \qquad A = Q\Lambda Q^\top,

    in a random orthogonal basis :math:`Q` (``rotate=True``) or on the diagonal.
    """
    n = check_positive_int("n", n)
    kappa = check_interval("kappa", kappa, 1.0)
    mu = check_positive("mu", mu)
    if n == 1 and kappa != 1.0:
        raise ValueError(f"Invalid kappa: {kappa!r}; a 1x1 matrix has condition number 1")
    exponents = torch.linspace(0.0, 1.0, n, dtype=dtype) if n > 1 else torch.zeros(1, dtype=dtype)
    return matrix_with_eigenvalues(mu * kappa**exponents, seed, rotate=rotate)


def badly_scaled_spd(
    n: int,
    kappa: float = 10.0,
    scale: float = 1e3,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""A well-conditioned SPD matrix spoiled by a bad diagonal scaling:
    :math:`A = D A_0 D` with :math:`A_0` = ``spd_matrix(n, kappa, seed)`` and
    :math:`D = \operatorname{diag}(d)`, :math:`d_i = \text{scale}^{u_i}`, the :math:`u_i`
    evenly spaced in :math:`[0, 1]` in random order.

    :math:`\kappa(A)` is of order :math:`\kappa\cdot\text{scale}^2`, but the Jacobi-scaled
    matrix :math:`\operatorname{diag}(A)^{-1/2} A \operatorname{diag}(A)^{-1/2} =
    \operatorname{diag}(A_0)^{-1/2} A_0 \operatorname{diag}(A_0)^{-1/2}` does not depend on
    :math:`D` at all: Jacobi preconditioning (a per-coordinate step size) cures it, which is
    the case for RMSProp and Adam in chapter 4 and 7 (van der Sluis, 1969).
    """
    n = check_positive_int("n", n)
    scale = check_interval("scale", scale, 1.0)
    A0 = spd_matrix(n, kappa, seed, dtype=dtype)
    d = diagonal_scales(n, scale, check_seed(seed) + 1, dtype=dtype)
    A = d[:, None] * A0 * d[None, :]
    return (A + A.T) / 2  # exactly symmetric despite rounding


def diagonal_scales(
    n: int, scale: float, seed: int = 0, *, dtype: torch.dtype = torch.float64
) -> Tensor:
    r"""Seeded scale factors :math:`d_i = 	ext{scale}^{u_i}`, the :math:`u_i` evenly spaced in
    :math:`[0, 1]` in random order: :math:`n` units of measurement spread over a factor
    ``scale``, for :func:`badly_scaled_spd` (which uses ``seed + 1``) and for badly scaled
    features."""
    n = check_positive_int("n", n)
    scale = check_interval("scale", scale, 1.0)
    gen = torch.Generator().manual_seed(derive_seed(check_seed(seed)))
    u = torch.linspace(0.0, 1.0, n, dtype=dtype)[torch.randperm(n, generator=gen)]
    return scale**u


def nonsymmetric_matrix(
    n: int,
    seed: int = 0,
    *,
    center: float = 1.0,
    radius: float = 0.5,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""A seeded non-symmetric matrix :math:`A = cI + \frac{r}{\sqrt n}G`, :math:`G` standard
    Gaussian. By the circular law its eigenvalues fill (for large :math:`n`) the disc of radius
    :math:`r` around :math:`c` in the complex plane, so for :math:`r < |c|` it is nonsingular
    and GMRES converges at roughly the rate :math:`r/|c|` per step (Trefethen & Bau, 1997,
    Lecture 35). ``center`` is :math:`c`, ``radius`` is :math:`r`."""
    n = check_positive_int("n", n)
    radius = check_positive("radius", radius)
    gen = torch.Generator().manual_seed(derive_seed(check_seed(seed)))
    G = torch.randn(n, n, generator=gen, dtype=dtype)
    return center * torch.eye(n, dtype=dtype) + (radius / n**0.5) * G


def _check_square(A: object) -> Tensor:
    if not isinstance(A, Tensor) or A.ndim != 2 or A.shape[0] != A.shape[1]:
        shape = tuple(A.shape) if isinstance(A, Tensor) else type(A).__name__
        raise ValueError(f"Invalid A: expected a square matrix, got {shape}")
    return A


def condition_number(A: Tensor) -> float:
    r"""The 2-norm condition number :math:`\kappa(A) = \sigma_{\max}/\sigma_{\min}` (for SPD
    :math:`A`, :math:`\lambda_{\max}/\lambda_{\min}`); ``inf`` for a singular matrix.
    Trefethen & Bau (1997), Lecture 12."""
    s = torch.linalg.svdvals(_check_square(A))
    return float(s.max() / s.min()) if s.min() > 0 else float("inf")


def symmetric_diagonal_scaling(A: Tensor, d: Tensor) -> Tensor:
    r""":math:`D^{-1/2} A D^{-1/2}` for :math:`D = \operatorname{diag}(d)`, :math:`d > 0`.

    A step :math:`\theta \leftarrow \theta - \eta D^{-1}\nabla f` on a quadratic with Hessian
    :math:`A` is gradient descent in the coordinates :math:`u = D^{1/2}\theta`, where the Hessian
    is this matrix; it has the eigenvalues of :math:`D^{-1}A` and stays symmetric.
    ``d = A.diagonal()`` gives the Jacobi scaling (van der Sluis, 1969)."""
    A = _check_square(A)
    if not isinstance(d, Tensor) or d.shape != (A.shape[0],):
        raise ValueError(f"Invalid d: expected a vector of length {A.shape[0]}")
    if not bool((d > 0).all()):
        raise ValueError("Invalid d: every entry must be > 0")
    s = d.to(A.dtype).rsqrt()
    return (s[:, None] * s[None, :]) * A  # s_i s_j = s_j s_i exactly: the result is symmetric


def eig_extremes(A: Tensor) -> tuple[float, float]:
    r""":math:`(\lambda_{\min}, \lambda_{\max})` of a symmetric matrix, i.e. :math:`(\mu, L)`
    for the quadratic :math:`\tfrac12 x^\top A x - b^\top x`."""
    A = _check_square(A)
    if not torch.allclose(A, A.T, rtol=1e-10, atol=1e-12 * float(A.abs().max())):
        raise ValueError("Invalid A: eig_extremes needs a symmetric matrix")
    lam = torch.linalg.eigvalsh(A)
    return float(lam[0]), float(lam[-1])
