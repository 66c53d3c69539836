"""optlib.experiments.rates: closed-form momentum rates against eigenvalues, against runs, and the
grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib import linalg
from optlib.experiments import rates
from optlib.problems import landscapes


def spectral_radius(h: float, beta: float, nesterov: bool) -> float:
    """Largest |eigenvalue| of the 2x2 matrix mapping (c_{t-1}, c_{t-2}) to (c_t, c_{t-1})."""
    if nesterov:
        a, c = (1 + beta) * (1 - h), beta * (1 - h)
    else:
        a, c = 1 + beta - h, beta
    T = torch.tensor([[a, -c], [1.0, 0.0]], dtype=torch.float64)
    return float(torch.linalg.eigvals(T).abs().max())


def sgd_mode_path(h: float, beta: float, nesterov: bool, steps: int) -> np.ndarray:
    """optlib.SGD on f(x) = x^2 / 2 with lr h: the error of one eigen-coordinate."""
    x = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = optlib.SGD([x], lr=h, momentum=beta, nesterov=nesterov and beta > 0)
    path = [1.0]
    for _ in range(steps):
        x.grad = x.detach().clone()
        opt.step()
        path.append(float(x.detach()))
    return np.array(path)


@settings(max_examples=60, deadline=None)
@given(h=st.floats(0.0, 4.5), beta=st.floats(0.0, 0.99), nesterov=st.booleans())
def test_mode_rate_is_the_spectral_radius_of_the_iteration_matrix(h, beta, nesterov):
    got = rates.mode_rate(h, beta, 1.0, nesterov=nesterov)
    assert math.isclose(got, spectral_radius(h, beta, nesterov), rel_tol=1e-6, abs_tol=1e-7)


@settings(max_examples=30, deadline=None)
@given(h=st.floats(0.0, 1.9), beta=st.floats(0.0, 0.95))
def test_nesterov_is_heavy_ball_with_momentum_beta_times_one_minus_h(h, beta):
    """Sutskever et al. (2013): on curvature lambda, NAG = heavy ball with beta (1 - eta lambda)."""
    nag = rates.mode_rate(h, beta, 1.0, nesterov=True)
    hb = rates.mode_rate(h, beta * (1 - h), 1.0)
    assert math.isclose(nag, hb, rel_tol=1e-12, abs_tol=1e-12)


def test_mode_rate_broadcasts_and_matches_scalars():
    lrs, betas = np.meshgrid(np.linspace(0.1, 3, 5), np.linspace(0, 0.9, 4))
    grid = rates.mode_rate(lrs, betas, 0.7, nesterov=True)
    assert grid.shape == (4, 5)
    assert grid[2, 3] == rates.mode_rate(lrs[2, 3], betas[2, 3], 0.7, nesterov=True)
    assert isinstance(rates.mode_rate(0.1, 0.5, 1.0), float)


@pytest.mark.parametrize("h, beta, nesterov", [(0.3, 0.5, False), (0.05, 0.95, False),
                                               (1.8, 0.2, False), (0.5, 0.9, True),
                                               (1.2, 0.6, True), (0.02, 0.3, True)])  # fmt: skip
def test_mode_rate_is_what_optlib_sgd_measures(h, beta, nesterov):
    path = sgd_mode_path(h, beta, nesterov, 300)
    measured = rates.measured_rate(rates.state_norms(path))
    assert math.isclose(measured, rates.mode_rate(h, beta, 1.0, nesterov=nesterov), rel_tol=3e-3)


@settings(max_examples=25, deadline=None)
@given(
    lr=st.floats(0.01, 3.0),
    beta=st.floats(0.0, 0.99),
    kappa=st.floats(1.0, 1e3),
    nesterov=st.booleans(),
)
def test_worst_coordinate_of_a_spectrum_is_at_an_end(lr, beta, kappa, nesterov):
    lams = np.geomspace(1 / kappa, 1.0, 400)
    dense = rates.mode_rate(lr, beta, lams, nesterov=nesterov).max()
    assert dense <= rates.quadratic_rate(lr, beta, 1.0, 1 / kappa, nesterov=nesterov) + 1e-12


@pytest.mark.parametrize("kappa", [1.0, 4.0, 100.0, 1e4])
def test_optimal_heavy_ball_rate_and_gd_special_case(kappa):
    L, mu = 2.0, 2.0 / kappa
    lr, beta = linalg.optimal_heavy_ball_params(L, mu)
    expected = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    assert math.isclose(rates.quadratic_rate(lr, beta, L, mu), expected, abs_tol=1e-7)
    quad = landscapes.Quadratic(kappa=kappa, L=L)
    for eta in (0.3 / L, quad.optimal_lr, 1.9 / L):
        assert math.isclose(rates.quadratic_rate(eta, 0.0, L, mu), quad.gd_rate(eta), abs_tol=1e-12)


@pytest.mark.parametrize("kappa", [2.0, 30.0, 1000.0])
def test_optimal_nesterov_params_beat_a_fine_grid(kappa):
    L, mu = 1.0, 1.0 / kappa
    lr, beta = rates.optimal_nesterov_params(L, mu)
    best = rates.quadratic_rate(lr, beta, L, mu, nesterov=True)
    assert math.isclose(best, 1 - 2 / math.sqrt(3 * kappa + 1), rel_tol=1e-6)
    E, B = np.meshgrid(np.linspace(0.01, 2.0, 400), np.linspace(0.0, 0.999, 400))
    grid = rates.quadratic_rate(E, B, L, mu, nesterov=True)
    assert grid.min() >= best - 1e-9
    hb_lr, hb_beta = linalg.optimal_heavy_ball_params(L, mu)
    assert rates.quadratic_rate(hb_lr, hb_beta, L, mu) < best  # on quadratics heavy ball wins


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.99])
def test_stable_lr_limit_is_where_the_rate_crosses_one(beta, nesterov):
    L = 3.0
    limit = rates.stable_lr_limit(beta, L, nesterov=nesterov)
    assert rates.mode_rate(0.999 * limit, beta, L, nesterov=nesterov) < 1
    assert rates.mode_rate(1.001 * limit, beta, L, nesterov=nesterov) > 1


def test_optimal_nesterov_params_validate():
    with pytest.raises(ValueError, match="L"):
        rates.optimal_nesterov_params(1.0, 2.0)
    with pytest.raises(ValueError, match="mu"):
        rates.optimal_nesterov_params(1.0, 0.0)


def test_measured_rate_special_sequences():
    assert math.isclose(rates.measured_rate(0.7 ** np.arange(50)), 0.7, rel_tol=1e-12)
    assert rates.measured_rate(np.array([1.0, 0.0, 0.0, 0.0])) == 0.0
    growing = np.concatenate([3.0 ** np.arange(20), [np.inf, np.inf]])
    assert math.isclose(rates.measured_rate(growing), 3.0, rel_tol=1e-12)
    assert math.isnan(rates.measured_rate(np.array([np.nan, 1.0])))


def test_state_norms_of_a_spiral_shrink_steadily():
    t = np.arange(200)
    spiral = 0.9**t * np.cos(1.3 * t)  # crosses zero again and again
    norms = rates.state_norms(spiral)
    assert norms.min() > 0
    assert math.isclose(rates.measured_rate(norms), 0.9, rel_tol=2e-3)


def test_grid_rows_are_separate_optlib_runs():
    """Each cell equals a run of optlib.SGD with that lr on the unscaled problem, to rounding."""
    quad = landscapes.Quadratic(kappa=10, angle=0.4)
    lrs, betas = [0.3, 1.1, 2.5], [0.0, 0.6]
    grid = rates.measured_rate_grid(lrs, betas, quad.H, steps=80, seed=3)
    theta0 = torch.randn(2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for i, beta in enumerate(betas):
        for j, lr in enumerate(lrs):
            p = theta0.clone().requires_grad_()
            opt = optlib.SGD([p], lr=lr, momentum=beta)
            path = [p.detach().clone()]
            for _ in range(80):
                p.grad = quad.H @ p.detach()
                opt.step()
                path.append(p.detach().clone())
            one = rates.measured_rate(rates.state_norms(torch.stack(path).numpy()))
            assert math.isclose(grid[i, j], one, rel_tol=1e-9), (beta, lr)


@pytest.mark.parametrize("nesterov", [False, True])
def test_grid_matches_theory_away_from_the_boundary(nesterov):
    quad = landscapes.Quadratic(kappa=10, angle=0.4)
    lrs, betas = np.linspace(0.05, 4.0, 12), np.linspace(0.0, 0.9, 7)
    grid = rates.measured_rate_grid(lrs, betas, quad.H, steps=150, nesterov=nesterov)
    theory = rates.quadratic_rate(lrs[None, :], betas[:, None], quad.L, quad.mu, nesterov=nesterov)
    assert grid.shape == theory.shape == (7, 12)
    assert np.nanmax(np.abs(grid - theory)) < 0.02
    clear = np.abs(theory - 1) > 0.02
    assert np.array_equal(grid[clear] < 1, theory[clear] < 1)


def test_grid_validates_h():
    with pytest.raises(ValueError, match="square"):
        rates.measured_rate_grid([0.1], [0.5], torch.ones(2, 3))


@settings(max_examples=60, deadline=None)
@given(h=st.floats(0.01, 5.0), beta=st.floats(0.0, 0.99), nesterov=st.booleans())
def test_mode_angle_is_the_argument_of_the_dominant_root(h, beta, nesterov):
    if nesterov:
        a, c = (1 + beta) * (1 - h), beta * (1 - h)
    else:
        a, c = 1 + beta - h, beta
    roots = np.roots([1.0, -a, c])
    dominant = roots[np.argmax(np.abs(roots))]
    omega = rates.mode_angle(h, beta, 1.0, nesterov=nesterov)
    if abs(a * a - 4 * c) < 1e-9:
        return  # a double root: the argument is 0 or pi either way, rounding picks
    # np.roots (eigenvalues of the companion matrix) loses up to half the digits near a double
    # root: with the discriminant >= 1e-9 the angle is good to ~eps / sqrt(1e-9) = 7e-12, never
    # worse than ~sqrt(eps) = 1.5e-8; abs 1e-6 covers both
    assert math.isclose(omega, abs(np.angle(dominant)), abs_tol=1e-6)


def test_mode_angle_of_gradient_descent_and_of_the_ravine():
    assert rates.mode_angle(1.5, 0.0, 1.0) == math.pi  # GD past 1/L: the sign flips
    assert rates.mode_angle(0.5, 0.0, 1.0) == 0.0
    omega = rates.mode_angle(1.5, 0.9, 1.0)  # chapter 3's valley: a spiral, not a zig-zag
    assert math.isclose(math.cos(omega), 0.4 / (2 * math.sqrt(0.9)), rel_tol=1e-12)  # ulps
    grid = rates.mode_angle(np.array([0.5, 1.5]), 0.9, 1.0)
    assert grid.shape == (2,) and grid[1] == omega


@pytest.mark.parametrize("kappa", [4.0, 50.0, 1e3])
def test_optimal_heavy_ball_factors_are_what_optlib_sgd_does(kappa):
    L, mu = 1.0, 1.0 / kappa
    lr, beta = linalg.optimal_heavy_ball_params(L, mu)
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    h = torch.tensor([L, mu], dtype=torch.float64)
    opt = optlib.SGD([x], lr=lr, momentum=beta)
    path = [x.detach().clone()]
    for _ in range(60):
        x.grad = h * x.detach()
        opt.step()
        path.append(x.detach().clone())
    path = torch.stack(path).numpy()
    steep, flat = rates.optimal_heavy_ball_factors(kappa, np.arange(61))
    scale = np.abs(path).max(axis=1)  # rounding accumulates relative to the largest coordinate
    # At the optimal beta the iteration matrix is a Jordan block, so an error made at step j
    # grows like (k - j) rho^(k-j) <= 1 / (e |ln rho|) = 5.8 at kappa = 1e3: each step adds a
    # few ulps carried by <= 5.8, i.e. < 50 ulps = 1e-14 per step; 1e-12 per step is a margin
    assert np.all(np.abs(path[:, 0] - steep) <= 1e-12 * 61 * scale)
    assert np.all(np.abs(path[:, 1] - flat) <= 1e-12 * 61 * scale)
    with pytest.raises(ValueError, match="kappa"):
        rates.optimal_heavy_ball_factors(0.5, 3)
