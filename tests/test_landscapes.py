"""optlib.problems.landscapes: hand-derived gradients and Hessians against torch.autograd."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optlib.problems import landscapes as ls

EPS = torch.finfo(torch.float64).eps

DETERMINISTIC = [
    ls.Quadratic(1.0),
    ls.Quadratic(25.0, L=3.0, angle=0.7, center=(0.5, -1.0)),
    ls.Rosenbrock(),
    ls.Rosenbrock(a=0.5, b=10.0),
    ls.Beale(),
    ls.Himmelblau(),
    ls.Saddle(),
    ls.Saddle(a=3.0),
]
IDS = [repr(f) for f in DETERMINISTIC]


def autograd_grad_and_hessian(f, point):
    p = point.clone().requires_grad_()
    (g,) = torch.autograd.grad(f.f(p), p, create_graph=True)
    rows = [torch.autograd.grad(g[i], p, retain_graph=True)[0] for i in range(2)]
    return g.detach(), torch.stack(rows)


def random_point(f, seed):
    g = torch.Generator().manual_seed(seed)
    (x0, x1), (y0, y1) = f.box
    u = torch.rand(2, generator=g, dtype=torch.float64)
    return torch.stack([x0 + (x1 - x0) * u[0], y0 + (y1 - y0) * u[1]])


@pytest.mark.parametrize("f", DETERMINISTIC, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_grad_and_hessian_match_autograd(f, seed):
    point = random_point(f, seed)
    g_ref, h_ref = autograd_grad_and_hessian(f, point)
    # The same polynomials, differentiated by hand and by autograd's chain rule: both round a few
    # dozen float64 operations, so they differ by a few ulps of the largest *term*. Terms exceed
    # an entry by at most ~1e3 where they cancel (Rosenbrock's valley, near Himmelblau's minima):
    # rtol 1e-12 (4500 ulps) covers that (measured: 170 ulps at most). Entries that cancel to
    # nearly 0 get atol: a few ulps of terms up to 2e5 (Beale at its box's corner) is ~1e-10.
    torch.testing.assert_close(f.grad(point), g_ref, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(f.hessian(point), h_ref, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("f", DETERMINISTIC, ids=IDS)
def test_batches_of_points(f):
    """A (3, 4, 2) grid gives (3, 4), (3, 4, 2), (3, 4, 2, 2), each entry equal to one call."""
    grid = torch.stack([random_point(f, s) for s in range(12)]).reshape(3, 4, 2)
    F, G, Hs = f.f(grid), f.grad(grid), f.hessian(grid)
    assert F.shape == (3, 4) and G.shape == (3, 4, 2) and Hs.shape == (3, 4, 2, 2)
    # the same element-wise formulas on a batch or on one point: each operation is correctly
    # rounded either way (measured: bit-identical); 4 ulps allow a vectorised pow or exp that
    # differs from the scalar one in the last bit
    ulps = dict(rtol=4 * torch.finfo(torch.float64).eps, atol=0)
    for i in range(3):
        for j in range(4):
            torch.testing.assert_close(F[i, j], f.f(grid[i, j]), **ulps)
            torch.testing.assert_close(G[i, j], f.grad(grid[i, j]), **ulps)
            torch.testing.assert_close(Hs[i, j], f.hessian(grid[i, j]), **ulps)


@pytest.mark.parametrize("f", DETERMINISTIC, ids=IDS)
def test_minimizers_are_stationary_minima(f):
    for m in f.minimizers:
        # minimisers are exact or given to ~16 digits (Himmelblau's three irrational ones): the
        # gradient there is a few ulps of terms ~1e2, measured <= 6e-14; 1e-9 is far below any
        # non-stationary point a wrong minimiser would give (|grad| ~ 1 at 1e-2 away)
        assert f.grad(m).abs().max() < 1e-9
        assert torch.linalg.eigvalsh(f.hessian(m)).min() > 0
    # f_min is the value at the minimisers: 0 for every landscape here, and f at a 16-digit
    # minimiser is O(|grad|^2 / curvature) ~ 1e-27, so both comparisons are to 0 with 1e-18
    assert f.f_min == pytest.approx(float(f.f(f.minimizers).min()), abs=1e-18)
    assert f.f_min == pytest.approx(0.0, abs=1e-18)


def test_accepts_lists_and_numpy():
    np = pytest.importorskip("numpy")
    f = ls.Rosenbrock()
    a = f.f([0.5, 0.5])
    b = f.f(np.array([0.5, 0.5]))
    # (1 - 0.5)^2 + 100 (0.5 - 0.25)^2: every operand a power of two, so exact
    assert a.dtype == torch.float64 and a.item() == b.item() == 0.25 + 100 * 0.0625
    with pytest.raises(ValueError, match="last dimension"):
        f.f([1.0, 2.0, 3.0])


@settings(max_examples=20, deadline=None)
@given(
    kappa=st.floats(1.0, 1e4),
    L=st.floats(0.1, 10.0),
    angle=st.floats(-math.pi, math.pi),
)
def test_quadratic_spectrum_and_rate(kappa, L, angle):
    q = ls.Quadratic(kappa, L=L, angle=angle)
    eig = torch.linalg.eigvalsh(q.H)
    # H = R diag(mu, L) R^T rounded entry by entry: a symmetric eigensolver returns eigenvalues
    # within a few ulps of ||H|| = L (Weyl), so the small one, mu = L/kappa, is only known to
    # ~ulps of L: absolute tolerance 64 eps L
    torch.testing.assert_close(
        eig, torch.tensor([L / kappa, L], dtype=torch.float64), rtol=0, atol=64 * EPS * L
    )
    # mu, kappa and the optimal step are one or two divisions from the arguments: a few ulps
    assert q.mu == pytest.approx(L / kappa, rel=4 * EPS)
    assert q.kappa == pytest.approx(kappa, rel=4 * EPS)
    assert q.optimal_lr == pytest.approx(2 / (L + L / kappa), rel=4 * EPS)
    # rates in [0, 1) from a few operations on those: 1e-12 absolute is ~4500 ulps of 1, far
    # below the 1/kappa >= 1e-4 by which a wrong step or a wrong formula would move them
    assert q.gd_rate() == pytest.approx((kappa - 1) / (kappa + 1), abs=1e-12)
    # Any other step is no better, and 1/L gives 1 - 1/kappa.
    assert q.gd_rate(0.9 * q.optimal_lr) >= q.gd_rate() - 1e-12
    assert q.gd_rate(1.1 * q.optimal_lr) >= q.gd_rate() - 1e-12
    assert q.gd_rate(1 / L) == pytest.approx(1 - 1 / kappa, abs=1e-12)


def test_quadratic_rotation_moves_the_steep_direction():
    q = ls.Quadratic(10.0, angle=math.pi / 2)
    # The steep eigenvector (1, 0) rotated by 90 degrees is (0, 1).
    torch.testing.assert_close(
        q.H @ torch.tensor([0.0, 1.0], dtype=torch.float64),
        torch.tensor([0.0, 1.0], dtype=torch.float64),
        atol=4 * EPS,  # cos(pi/2) = 6e-17, not 0: a few ulps of the unit entries
        rtol=0,
    )


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="kappa"):
        ls.Quadratic(0.5)
    with pytest.raises(ValueError, match="L"):
        ls.Quadratic(2.0, L=-1.0)
    with pytest.raises(ValueError, match="sigma"):
        ls.Noisy(ls.Rosenbrock(), -1.0)


def test_saddle_point():
    s = ls.Saddle()
    origin = s.saddle_points[0]
    assert s.grad(origin).abs().max() == 0
    eig = torch.linalg.eigvalsh(s.hessian(origin))
    assert eig.min() < 0 < eig.max()


def test_noisy_gradient_is_seeded_unbiased_and_has_sigma():
    base = ls.Quadratic(5.0, angle=0.3)
    noisy = ls.Noisy(base, sigma=0.5, seed=7)
    p = torch.tensor([0.3, -0.8], dtype=torch.float64)
    draws = torch.stack([noisy.grad(p) for _ in range(4000)])
    noise = draws - base.grad(p)
    # 4000 draws of sigma = 0.5: the mean's standard error is 0.5/sqrt(4000) = 0.0079 (bound: 4 of
    # them); the sample std's is 0.5/sqrt(2*4000) = 0.0056 (bound 0.03: 5.4 of them)
    assert noise.mean(0).abs().max() < 4 * 0.5 / math.sqrt(4000)
    assert noise.std(0).sub(0.5).abs().max() < 0.03
    noisy.reset()
    torch.testing.assert_close(noisy.grad(p), draws[0], rtol=0, atol=0)
    # f and the Hessian are the exact base ones; attributes pass through.
    assert noisy.f(p) == base.f(p) and noisy.kappa == 5.0 and noisy.f_min == 0.0
    torch.testing.assert_close(noisy.hessian(p), base.hessian(p), rtol=0, atol=0)
    # sigma = 0 is the exact gradient.
    torch.testing.assert_close(ls.Noisy(base, 0.0).grad(p), base.grad(p), rtol=0, atol=0)


def test_registry_builds_every_landscape():
    for name, make in ls.LANDSCAPES.items():
        f = make()
        assert isinstance(f, ls.Landscape), name
        assert torch.isfinite(f.f(f.start))
