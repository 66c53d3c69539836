"""optlib.linalg solvers and spectra: against torch.linalg.solve and the textbook rate bounds."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optlib import linalg as la

F64 = torch.float64
EPS = torch.finfo(F64).eps


def rhs(n, seed=0):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed + 1000), dtype=F64)


def relative_residual(A, x, b):
    return float(torch.linalg.vector_norm(b - A @ x) / torch.linalg.vector_norm(b))


def rate(values, start, stop):
    """Geometric-mean contraction factor of ``values`` between two indices."""
    return (values[stop] / values[start]) ** (1.0 / (stop - start))


def a_norm(A, e):
    return float(torch.sqrt(e @ A @ e))


# --- every solver against torch.linalg.solve ------------------------------------------------


def check_solution(res, A, b, tol, kappa):
    x_ref = torch.linalg.solve(A, b)
    assert res.converged and res.reason == "converged"
    assert res.iterations == len(res.residual_norms) - 1
    assert res.relative_residuals[-1] <= tol
    assert relative_residual(A, res.x, b) <= 10 * tol  # the true residual, not the recurrence's
    forward_error = float(torch.linalg.vector_norm(res.x - x_ref) / torch.linalg.vector_norm(x_ref))
    assert forward_error <= 10 * kappa * tol


def optimal_jacobi_omega(A):
    """Weighted Jacobi is Richardson on diag(A)^(-1/2) A diag(A)^(-1/2): use its omega*."""
    s = A.diagonal().rsqrt()
    mu, L = la.eig_extremes(s[:, None] * A * s[None, :])
    return la.optimal_richardson_omega(L, mu)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 30), log_kappa=st.floats(0.0, 2.0), seed=st.integers(0, 2**16))
def test_spd_solvers_match_torch_solve(n, log_kappa, seed):
    kappa = 10.0**log_kappa
    A, b, tol = la.spd_matrix(n, kappa, seed), rhs(n, seed), 1e-10
    mu, L = la.eig_extremes(A)
    lr, beta = la.optimal_heavy_ball_params(L, mu)
    results = [
        la.richardson(A, b, la.optimal_richardson_omega(L, mu), tol=tol),
        la.heavy_ball(A, b, lr, beta, tol=tol),
        la.jacobi(A, b, omega=optimal_jacobi_omega(A), tol=tol),
        la.cg(A, b, tol=tol),
        la.pcg(A, b, la.jacobi_preconditioner(A), tol=tol),
        la.gmres(A, b, tol=tol),
        la.gmres(A, b, restart=max(1, n // 3), tol=tol, max_iter=5000),
    ]
    for res in results:
        check_solution(res, A, b, tol, kappa)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 40), radius=st.floats(0.1, 0.9), seed=st.integers(0, 2**16))
def test_gmres_and_jacobi_on_nonsymmetric_systems(n, radius, seed):
    A, b, tol = la.nonsymmetric_matrix(n, seed, radius=radius), rhs(n, seed), 1e-10
    kappa = la.condition_number(A)
    check_solution(la.gmres(A, b, tol=tol), A, b, tol, kappa)
    if radius <= 0.4:
        # The symmetric part of A is then positive definite (for all but freak draws), and
        # restarted GMRES(m) converges (Elman, 1982); with radius near 1 it may stagnate.
        check_solution(la.gmres(A, b, restart=5, tol=tol, max_iter=2000), A, b, tol, kappa)
    # strictly diagonally dominant: classical Jacobi converges
    D = torch.diag(A.abs().sum(dim=1) + 1.0)
    check_solution(la.jacobi(A + D, b, tol=tol), A + D, b, tol, la.condition_number(A + D))


def test_matvec_callable_gives_the_same_result_as_the_matrix():
    A, b = la.spd_matrix(20, 50.0, 3), rhs(20)
    M = la.jacobi_preconditioner(A)

    def matvec(v):
        return A @ v

    for solve in [
        lambda A_: la.richardson(A_, b, 0.02, max_iter=50),
        lambda A_: la.heavy_ball(A_, b, 0.1, 0.5, max_iter=50),
        lambda A_: la.cg(A_, b),
        lambda A_: la.pcg(A_, b, M),
        lambda A_: la.gmres(A_, b, restart=4),
    ]:
        dense, func = solve(A), solve(matvec)
        assert torch.equal(dense.x, func.x) and dense.residual_norms == func.residual_norms
    with_diag = la.jacobi(matvec, b, diagonal=A.diagonal(), omega=0.02 * float(A.diagonal()[0]))
    assert torch.equal(with_diag.x, la.jacobi(A, b, omega=0.02 * float(A.diagonal()[0])).x)


def test_zero_rhs_returns_zero_immediately_and_x0_is_used():
    A, b = la.spd_matrix(5, 10.0), rhs(5)
    res = la.cg(A, torch.zeros(5, dtype=F64))
    assert res.converged and res.iterations == 0 and torch.equal(res.x, torch.zeros(5, dtype=F64))
    x_star = torch.linalg.solve(A, b)
    for solver in (la.cg, la.gmres):
        warm = solver(A, b, x0=x_star.clone())
        assert warm.iterations <= 1 and warm.converged


# --- rates against the textbook bounds -------------------------------------------------------


def test_richardson_contracts_by_kappa_minus_one_over_kappa_plus_one():
    kappa = 50.0
    A, b = la.spd_matrix(30, kappa, 1), rhs(30)
    mu, L = la.eig_extremes(A)
    rho = (kappa - 1) / (kappa + 1)
    r = la.richardson(A, b, la.optimal_richardson_omega(L, mu), max_iter=300, tol=1e-300)
    r = r.residual_norms
    assert len(r) == 301
    # With omega* every eigencomponent of the residual shrinks by at most rho, every step (1e-9:
    # the ratio of two residual norms, each rounded to ~n ulps, 30 x 2.2e-16 = 7e-15)...
    assert all(r[k + 1] <= rho * r[k] * (1 + 1e-9) for k in range(300))
    # ... and the extreme ones by exactly rho, so the asymptotic rate is rho. A rate fitted over
    # 200 steps is off by log(how much the residual's mix of eigencomponents changes) / 200:
    # measured 4e-5. 2e-3 is that with a wide margin, and still 20 times below the distance to
    # the nearest wrong rate (kappa/(kappa+2) or rho^2: 4e-2 away at kappa = 50).
    assert rate(r, 100, 300) == pytest.approx(rho, rel=2e-3)


def test_richardson_equals_gradient_descent_and_heavy_ball_equals_torch_momentum():
    A, b = la.spd_matrix(8, 20.0, 2), rhs(8)
    lr, beta, steps = 0.05, 0.7, 25
    for momentum, res in [
        (0.0, la.richardson(A, b, lr, max_iter=steps, keep_iterates=True)),
        (beta, la.heavy_ball(A, b, lr, beta, max_iter=steps, keep_iterates=True)),
    ]:
        x = torch.zeros(8, dtype=F64, requires_grad=True)
        opt = torch.optim.SGD([x], lr=lr, momentum=momentum)
        for k in range(steps):
            opt.zero_grad()
            (0.5 * x @ A @ x - b @ x).backward()
            opt.step()
            # the same update with the operations in another order: a few ulps per step, not
            # amplified (lr * L = 1: the iteration contracts); 25 steps x 4 ulps, relative to
            # the iterate, or to its largest entry for entries near 0 (measured: <= 2.4 ulps)
            tol = 25 * 4 * EPS
            torch.testing.assert_close(
                res.iterates[k + 1], x.detach(), rtol=tol, atol=tol * float(x.detach().abs().max())
            )


def test_richardson_beyond_two_over_L_diverges_and_stops():
    A, b = la.spd_matrix(10, 10.0, 0), rhs(10)
    _, L = la.eig_extremes(A)
    res = la.richardson(A, b, 2.2 / L, max_iter=5000)
    assert res.reason == "diverged" and not res.converged
    assert res.iterations < 5000
    assert res.residual_norms[-1] > la.DIVERGENCE_FACTOR * res.residual_norms[0]


def test_heavy_ball_with_optimal_params_contracts_at_sqrt_kappa_rate():
    kappa = 400.0
    A, b = la.spd_matrix(40, kappa, 4), rhs(40)
    mu, L = la.eig_extremes(A)
    lr, beta = la.optimal_heavy_ball_params(L, mu)
    # the same closed forms, perhaps written in another order: a few ulps (45 allowed)
    assert lr == pytest.approx(4 / (math.sqrt(L) + math.sqrt(mu)) ** 2, rel=1e-14)
    rho = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    assert beta == pytest.approx(rho**2, rel=1e-14)
    r = la.heavy_ball(A, b, lr, beta, max_iter=250, tol=1e-300).residual_norms
    # At the optimum the iteration matrix has a Jordan block: ||r_k|| ~ C k rho^k. Fitted over
    # 200 steps, off by the change in the residual's mix / 200 (measured 6e-5); the nearest wrong
    # rate, Richardson's (kappa-1)/(kappa+1) = 0.995 against 0.905, is 100 times farther
    assert rate(r, 50, 250) == pytest.approx(rho * (250 / 50) ** (1 / 200), rel=2e-3)
    k_corrected = [r_k / max(k, 1) for k, r_k in enumerate(r)]
    assert rate(k_corrected, 50, 250) == pytest.approx(rho, rel=1e-3)
    rich = la.richardson(A, b, la.optimal_richardson_omega(L, mu), max_iter=20_000)
    hb = la.heavy_ball(A, b, lr, beta, max_iter=20_000)
    assert hb.converged and rich.converged
    assert hb.iterations * 5 < rich.iterations  # sqrt(kappa) = 20 against kappa = 400


def test_cg_within_the_chebyshev_bound_in_the_A_norm():
    kappa = 1e3
    A, b = la.spd_matrix(100, kappa, 5), rhs(100)
    x_star = torch.linalg.solve(A, b)
    res = la.cg(A, b, tol=1e-12, keep_iterates=True)
    assert res.converged
    rho = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    e0 = a_norm(A, res.iterates[0] - x_star)
    for k, x_k in enumerate(res.iterates):
        bound = 2 * rho**k * e0
        # the A-norm error of a float64 CG iterate is only known to ~ kappa * eps * ||x*||
        # relative to e0 (torch.linalg.solve's own error, 1e3 x 2.2e-16 = 2e-13): 1e-10 e0 is
        # that floor with a margin, reached only after the bound itself falls below it
        assert a_norm(A, x_k - x_star) <= bound * (1 + 1e-6) + 1e-10 * e0
    # and CG needs far fewer steps than Richardson's kappa * log(1/tol) / 2
    assert res.iterations < 0.5 * kappa * math.log(1e12) / 2 / 10


def test_cg_finishes_in_as_many_steps_as_distinct_eigenvalues():
    eigenvalues = torch.tensor([1.0, 5.0, 30.0], dtype=F64).repeat(20)
    A, b = la.matrix_with_eigenvalues(eigenvalues, seed=6), rhs(60)
    res = la.cg(A, b, tol=1e-10)
    assert res.converged and res.iterations == 3


def test_cg_breaks_down_on_an_indefinite_matrix_and_fails_on_nonsymmetric():
    A = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=F64))
    res = la.cg(A, torch.tensor([1.0, 1.0, 0.0], dtype=F64))
    assert res.reason == "breakdown" and not res.converged
    N, b = la.nonsymmetric_matrix(40, 0), rhs(40)
    assert not la.cg(N, b, max_iter=80).converged  # no single solver fits every matrix...
    assert la.gmres(N, b, max_iter=80).converged  # ...GMRES does not need symmetry


def test_pcg_with_jacobi_beats_cg_on_a_badly_scaled_matrix():
    A, b = la.badly_scaled_spd(60, kappa=10.0, scale=1e3, seed=7), rhs(60)
    M_inv = la.jacobi_preconditioner(A)
    plain, preconditioned = la.cg(A, b), la.pcg(A, b, M_inv)
    assert plain.converged and preconditioned.converged
    assert 3 * preconditioned.iterations < plain.iterations
    assert la.iterations_to_tolerance(preconditioned, 1e-8) < la.iterations_to_tolerance(
        plain, 1e-8
    )
    # pcg accepts the diagonal as a tensor, or a dense matrix, with the same result
    same = la.pcg(A, b, M_inv.inverse_diagonal)
    dense = la.pcg(A, b, torch.diag(M_inv.inverse_diagonal))
    assert same.iterations == preconditioned.iterations
    # A dense diagonal matrix applies the same products plus exact zeros: equal unless a fused
    # multiply-add rounds differently, an ulp per iteration carried through 37 iterations with
    # kappa(M^-1 A) = 10: ~1e-13. Measured: bit-identical.
    torch.testing.assert_close(dense.x, preconditioned.x, rtol=1e-9, atol=0)
    # PCG with the identity is CG: the same operations, so equal to rounding (measured:
    # bit-identical); any reordering would show at ulps x kappa(A) = 2e6, i.e. 4e-10
    torch.testing.assert_close(la.pcg(A, b, lambda r: r).x, plain.x, rtol=1e-12, atol=0)


def test_gmres_terminates_in_at_most_n_steps_with_monotone_residuals():
    n = 25
    A, b = la.nonsymmetric_matrix(n, 8, center=0.3, radius=1.0), rhs(n)
    res = la.gmres(A, b, tol=1e-10, keep_iterates=True)
    assert res.converged and res.iterations <= n
    r = res.residual_norms
    # minimal residual: monotone in exact arithmetic; a stagnating step may round up by ulps
    assert all(r[k + 1] <= r[k] * (1 + 1e-10) for k in range(len(r) - 1))
    # the Givens estimate |g_{k+1}| is the true residual of x_k, up to the drift of the Arnoldi
    # recurrence (<= n steps x eps x kappa(A) = 25 x 2.2e-16 x 93 = 5e-13 relative) and the
    # rounding of b - A x_k itself (~ n eps ||A|| ||x_k|| absolute); measured 2.7e-15 relative
    kappa, norm_A = la.condition_number(A), float(torch.linalg.matrix_norm(A, 2))
    for x_k, r_k in zip(res.iterates, r):
        true = float(torch.linalg.vector_norm(b - A @ x_k))
        floor = n * EPS * norm_A * float(torch.linalg.vector_norm(x_k))
        assert true == pytest.approx(r_k, rel=10 * n * EPS * kappa, abs=floor)
    # restarting keeps monotonicity but can only need more steps
    restarted = la.gmres(A, b, restart=5, tol=1e-10, max_iter=2000)
    rr = restarted.residual_norms
    assert all(rr[k + 1] <= rr[k] * (1 + 1e-10) for k in range(len(rr) - 1))
    assert restarted.iterations >= res.iterations


def test_gmres_on_a_singular_system_reports_breakdown_not_a_crash():
    A = torch.zeros(3, 3, dtype=F64)
    res = la.gmres(A, torch.ones(3, dtype=F64))
    assert not res.converged and res.reason == "breakdown"


def test_iterations_to_tolerance():
    h = [1.0, 0.5, 0.1, 0.01, 0.001]
    assert la.iterations_to_tolerance(h, 0.1) == 2
    assert la.iterations_to_tolerance(h, 0.05) == 3
    assert la.iterations_to_tolerance(h, 1e-6) is None
    assert la.iterations_to_tolerance([4.0, 2.0, 0.5], 0.5, relative=False) == 2
    with pytest.raises(ValueError, match="Invalid history"):
        la.iterations_to_tolerance([], 0.1)


# --- spectra --------------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(n=st.integers(2, 40), log_kappa=st.floats(0.0, 6.0), seed=st.integers(0, 2**16))
def test_spd_matrix_has_the_requested_spectrum(n, log_kappa, seed):
    kappa, mu = 10.0**log_kappa, 0.5
    A = la.spd_matrix(n, kappa, seed, mu=mu)
    assert A.dtype == F64 and torch.equal(A, A.T)
    expected = mu * kappa ** torch.linspace(0, 1, n, dtype=F64)
    # A = Q diag(expected) Q^T rounds each entry to ~n ulps of ||A|| = mu kappa, and by Weyl every
    # eigenvalue moves by at most ||error||: allow 100 n ulps of ||A|| (measured: 8 ulps). The
    # small eigenvalues are known only to that absolute error, so kappa and mu are known to
    # (100 n eps kappa) relative: 9e-7 at n = 40, kappa = 1e6 (measured 2e-11).
    weyl = 100 * n * EPS * mu * kappa
    torch.testing.assert_close(torch.linalg.eigvalsh(A), expected, rtol=0, atol=weyl)
    assert la.condition_number(A) == pytest.approx(kappa, rel=100 * n * EPS * kappa)
    assert la.eig_extremes(A) == pytest.approx((mu, mu * kappa), rel=100 * n * EPS * kappa)
    assert torch.equal(A, la.spd_matrix(n, kappa, seed, mu=mu))  # seeded
    diagonal = la.spd_matrix(n, kappa, seed, mu=mu, rotate=False)
    torch.testing.assert_close(diagonal, torch.diag(expected), rtol=0, atol=0)  # no rounding


def test_random_orthogonal_is_orthogonal_and_seeded():
    Q = la.random_orthogonal(12, 3)
    # Householder QR gives Q orthogonal to O(n eps); Q^T Q adds n more roundings: 12 x 12 x eps
    # = 3e-14 (measured 6.7e-16); 1e-13 is that bound with a small margin
    torch.testing.assert_close(Q.T @ Q, torch.eye(12, dtype=F64), rtol=0, atol=1e-13)
    assert torch.equal(Q, la.random_orthogonal(12, 3))
    assert not torch.allclose(Q, la.random_orthogonal(12, 4))


def test_badly_scaled_spd_is_cured_by_jacobi_scaling():
    A_low = la.badly_scaled_spd(40, kappa=10.0, scale=10.0, seed=2)
    A_high = la.badly_scaled_spd(40, kappa=10.0, scale=1e4, seed=2)
    assert la.condition_number(A_high) > 1e6
    assert torch.equal(A_high, A_high.T)

    def jacobi_scaled(A):
        s = A.diagonal().rsqrt()
        return s[:, None] * A * s[None, :]

    # diag(A)^(-1/2) A diag(A)^(-1/2) does not depend on the scaling D at all: each entry is a
    # few roundings (D A D, then two rsqrt products) of O(1) numbers, so equal to a few ulps
    # (measured 2 ulps); 1e-12 absolute is ~4500 ulps of the unit diagonal
    torch.testing.assert_close(jacobi_scaled(A_low), jacobi_scaled(A_high), rtol=0, atol=1e-12)
    assert la.condition_number(jacobi_scaled(A_high)) < 10 * 40


def test_nonsymmetric_matrix_eigenvalues_fill_the_disc():
    A = la.nonsymmetric_matrix(120, 0, center=2.0, radius=0.5)
    assert not torch.allclose(A, A.T)
    distance = (torch.linalg.eigvals(A) - 2.0).abs()
    # circular law: the spectrum fills the disc of radius 0.5 about 2; at n = 120 the largest
    # distance is within ~n^(-1/2) of the radius (0.05 here), so (0.4, 0.6) is 2 such widths
    assert 0.4 < float(distance.max()) < 0.6


# --- validation -----------------------------------------------------------------------------

A3 = la.spd_matrix(3, 2.0)
B3 = torch.ones(3, dtype=F64)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: la.richardson(A3, B3, 0.0), "omega"),
        (lambda: la.richardson(A3, B3, -1.0), "omega"),
        (lambda: la.richardson(A3, B3, 0.1, tol=0.0), "tol"),
        (lambda: la.richardson(A3, B3, 0.1, max_iter=0), "max_iter"),
        (lambda: la.heavy_ball(A3, B3, 0.0, 0.5), "lr"),
        (lambda: la.heavy_ball(A3, B3, 0.1, 1.0), "beta"),
        (lambda: la.jacobi(A3, B3, omega=0.0), "omega"),
        (lambda: la.jacobi(lambda v: A3 @ v, B3), "diagonal"),
        (lambda: la.jacobi(torch.zeros(3, 3, dtype=F64), B3), "A"),
        (lambda: la.cg(torch.ones(3, 4, dtype=F64), B3), "A"),
        (lambda: la.cg(A3, torch.ones(3, 1, dtype=F64)), "b"),
        (lambda: la.cg(A3, [1.0, 2.0, 3.0]), "b"),
        (lambda: la.cg(A3, B3, x0=torch.zeros(4, dtype=F64)), "x0"),
        (lambda: la.cg("A", B3), "A"),
        (lambda: la.pcg(A3, B3, "M"), "M_inv"),
        (lambda: la.gmres(A3, B3, restart=0), "restart"),
        (lambda: la.gmres(A3, B3, max_iter=2.5), "max_iter"),
        (lambda: la.optimal_heavy_ball_params(1.0, 2.0), "L"),
        (lambda: la.optimal_richardson_omega(1.0, 0.0), "mu"),
        (lambda: la.spd_matrix(0, 10.0), "n"),
        (lambda: la.spd_matrix(3, 0.5), "kappa"),
        (lambda: la.spd_matrix(3, 2.0, mu=-1.0), "mu"),
        (lambda: la.spd_matrix(3, 2.0, seed=1.5), "seed"),
        (lambda: la.badly_scaled_spd(3, scale=0.5), "scale"),
        (lambda: la.nonsymmetric_matrix(3, radius=0.0), "radius"),
        (lambda: la.eig_extremes(la.nonsymmetric_matrix(3)), "A"),
        (lambda: la.condition_number(torch.ones(3, dtype=F64)), "A"),
        (lambda: la.matrix_with_eigenvalues(torch.ones(2, 2)), "eigenvalues"),
        (lambda: la.iterations_to_tolerance([1.0], -1.0), "tol"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_parameter(call, name):
    with pytest.raises(ValueError, match=rf"Invalid {name}\b"):
        call()


def test_more_argument_checks():
    with pytest.raises(ValueError, match=r"Invalid diagonal\b"):
        la.jacobi(lambda v: A3 @ v, B3, diagonal=torch.tensor([1.0, 0.0, 1.0], dtype=F64))
    with pytest.raises(ValueError, match=r"Invalid diagonal\b"):
        la.jacobi(lambda v: A3 @ v, B3, diagonal=torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match=r"Invalid A\b"):
        la.jacobi(A3[:, :2], B3)
    with pytest.raises(ValueError, match=r"Invalid kappa\b"):
        la.spd_matrix(1, 10.0)
    assert la.spd_matrix(1, 1.0, mu=3.0).item() == 3.0  # 3 * 1**0: exact


def test_symmetric_diagonal_scaling_has_the_spectrum_of_the_preconditioned_matrix():
    A = la.spd_matrix(6, kappa=50.0, seed=3)
    d = torch.linspace(0.5, 3.0, 6, dtype=torch.float64)
    M = la.symmetric_diagonal_scaling(A, d)
    assert torch.allclose(M, M.T, rtol=0, atol=0)
    lam = torch.linalg.eigvalsh(M)
    ref = torch.linalg.eigvals(A / d[:, None]).real.sort().values
    # two eigensolvers (symmetric, general) on similar 6 x 6 matrices: each eigenvalue to
    # ~ n ulps x kappa(M) = 6 x 2.2e-16 x 76 = 1e-13 relative at worst (measured 3.5e-15)
    assert torch.allclose(lam, ref, rtol=1e-12, atol=0)
    jacobi = la.symmetric_diagonal_scaling(A, A.diagonal())
    # a_ii / (sqrt(a_ii) sqrt(a_ii)): three roundings, <= 2 ulps of 1 (measured 1 ulp)
    assert torch.allclose(jacobi.diagonal(), torch.ones(6, dtype=torch.float64), rtol=1e-14)
    with pytest.raises(ValueError, match="d"):
        la.symmetric_diagonal_scaling(A, -d)
    with pytest.raises(ValueError, match="length"):
        la.symmetric_diagonal_scaling(A, d[:3])


def test_random_vector_is_seeded_and_moves_with_optlib_seed(monkeypatch):
    a, b = la.random_vector(7, seed=3), la.random_vector(7, seed=3)
    assert torch.equal(a, b) and a.dtype == torch.float64 and a.shape == (7,)
    assert not torch.equal(a, la.random_vector(7, seed=4))
    assert la.random_vector(5, seed=1, dtype=torch.float32).dtype == torch.float32
    monkeypatch.setenv("OPTLIB_SEED", "1")
    assert not torch.equal(a, la.random_vector(7, seed=3))


def test_diagonal_scales_span_the_scale_in_random_order():
    d = la.diagonal_scales(11, 100.0, seed=2)
    # the exponents 0, 0.1, ..., 1 in some order: the sorted scales are 100^(k/10), exactly up to
    # one pow each (a few ulps)
    expected = 100.0 ** torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    torch.testing.assert_close(d.sort().values, expected, rtol=1e-14, atol=0)
    assert not torch.equal(d, d.sort().values)  # shuffled
    assert torch.equal(d, la.diagonal_scales(11, 100.0, seed=2))
    # badly_scaled_spd spoils spd_matrix with the scales of seed + 1
    A0 = la.spd_matrix(11, 10.0, seed=4)
    s = la.diagonal_scales(11, 100.0, seed=5)
    A = la.badly_scaled_spd(11, kappa=10.0, scale=100.0, seed=4)
    torch.testing.assert_close(A, s[:, None] * A0 * s[None, :], rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="Invalid scale"):
        la.diagonal_scales(3, 0.5)
