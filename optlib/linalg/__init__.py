r"""Numerical linear algebra for the course: optimizers seen as linear solvers and
preconditioners (chapter 7), and the curvature tools of chapters 2, 4 and 9.

One module per job:

* :mod:`~optlib.linalg.stationary`: Richardson (= gradient descent), heavy ball (= momentum),
  Jacobi (= diagonal preconditioning), with the optimal parameters for a spectrum
  :math:`[\mu, L]`;
* :mod:`~optlib.linalg.krylov`: CG, preconditioned CG, GMRES;
* :mod:`~optlib.linalg.newton`: Newton's method with optional damping and line search, and
  Newton-CG on Hessian-vector products;
* :mod:`~optlib.linalg.spectra`: seeded test matrices with a known spectrum, condition numbers;
* :mod:`~optlib.linalg.curvature`: Hessian-vector products, power iteration for the top Hessian
  eigenvalue, Hutchinson's diagonal estimator and its variance, exact Hessians and Gauss-Newton
  matrices of small models, the empirical Fisher diagonal;
* :mod:`~optlib.linalg.kronecker`: full-matrix AdaGrad beside Shampoo's Kronecker factors,
  the exact Fisher block of a linear layer beside K-FAC's, matrix powers, Newton–Schulz on
  singular values, the spectral-norm steepest-descent direction (chapter 10).

Solvers take ``A`` as a dense tensor or a matvec callable and return a
:class:`~optlib.linalg.results.SolveResult` with the residual-norm history
(:mod:`~optlib.linalg.results`).
"""

from .curvature import (
    EigenResult,
    empirical_fisher_diag,
    exact_hessian,
    exact_hessian_diag,
    finite_difference_hvp,
    flatten,
    gauss_newton,
    gauss_newton_diag,
    hutchinson_diag,
    hutchinson_samples,
    hutchinson_variance,
    hvp,
    top_hessian_eigenvalue,
    unflatten,
)
from .krylov import cg, gmres, pcg
from .newton import NewtonCGResult, NewtonResult, newton, newton_cg
from .results import DIVERGENCE_FACTOR, SolveResult, iterations_to_tolerance
from .spectra import (
    badly_scaled_spd,
    condition_number,
    diagonal_scales,
    eig_extremes,
    matrix_with_eigenvalues,
    nonsymmetric_matrix,
    random_orthogonal,
    random_vector,
    spd_matrix,
    symmetric_diagonal_scaling,
)
from .stationary import (
    DiagonalPreconditioner,
    heavy_ball,
    jacobi,
    jacobi_preconditioner,
    optimal_heavy_ball_params,
    optimal_richardson_omega,
    richardson,
)

__all__ = [
    # results
    "SolveResult",
    "NewtonResult",
    "NewtonCGResult",
    "EigenResult",
    "DIVERGENCE_FACTOR",
    "iterations_to_tolerance",
    # stationary iterations
    "richardson",
    "heavy_ball",
    "jacobi",
    "jacobi_preconditioner",
    "DiagonalPreconditioner",
    "optimal_richardson_omega",
    "optimal_heavy_ball_params",
    # Krylov methods
    "cg",
    "pcg",
    "gmres",
    # Newton
    "newton",
    "newton_cg",
    # spectra
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
    # curvature
    "flatten",
    "unflatten",
    "hvp",
    "finite_difference_hvp",
    "exact_hessian",
    "exact_hessian_diag",
    "top_hessian_eigenvalue",
    "hutchinson_diag",
    "hutchinson_samples",
    "hutchinson_variance",
    "gauss_newton",
    "gauss_newton_diag",
    "empirical_fisher_diag",
]
