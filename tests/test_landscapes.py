"""optlib.problems.landscapes: hand-derived gradients and Hessians against torch.autograd."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optlib.problems import landscapes as ls

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
    torch.testing.assert_close(f.grad(point), g_ref, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(f.hessian(point), h_ref, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("f", DETERMINISTIC, ids=IDS)
def test_batches_of_points(f):
    """A (3, 4, 2) grid gives (3, 4), (3, 4, 2), (3, 4, 2, 2), each entry equal to one call."""
    grid = torch.stack([random_point(f, s) for s in range(12)]).reshape(3, 4, 2)
    F, G, Hs = f.f(grid), f.grad(grid), f.hessian(grid)
    assert F.shape == (3, 4) and G.shape == (3, 4, 2) and Hs.shape == (3, 4, 2, 2)
    for i in range(3):
        for j in range(4):
            torch.testing.assert_close(F[i, j], f.f(grid[i, j]))
            torch.testing.assert_close(G[i, j], f.grad(grid[i, j]))
            torch.testing.assert_close(Hs[i, j], f.hessian(grid[i, j]))


@pytest.mark.parametrize("f", DETERMINISTIC, ids=IDS)
def test_minimizers_are_stationary_minima(f):
    for m in f.minimizers:
        assert f.grad(m).abs().max() < 1e-9
        assert torch.linalg.eigvalsh(f.hessian(m)).min() > 0
    assert f.f_min == pytest.approx(float(f.f(f.minimizers).min()))
    assert f.f_min == pytest.approx(0.0, abs=1e-18)


def test_accepts_lists_and_numpy():
    np = pytest.importorskip("numpy")
    f = ls.Rosenbrock()
    a = f.f([0.5, 0.5])
    b = f.f(np.array([0.5, 0.5]))
    assert a.dtype == torch.float64 and a.item() == b.item() == pytest.approx(0.25 + 100 * 0.0625)
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
    torch.testing.assert_close(eig, torch.tensor([L / kappa, L], dtype=torch.float64))
    assert q.mu == pytest.approx(L / kappa) and q.kappa == pytest.approx(kappa)
    assert q.optimal_lr == pytest.approx(2 / (L + L / kappa))
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
        atol=1e-15,
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
    assert noise.mean(0).abs().max() < 4 * 0.5 / math.sqrt(4000)
    assert noise.std(0).sub(0.5).abs().max() < 0.03
    noisy.reset()
    torch.testing.assert_close(noisy.grad(p), draws[0], rtol=0, atol=0)
    # f and the Hessian are the exact base ones; attributes pass through.
    assert noisy.f(p) == base.f(p) and noisy.kappa == 5.0 and noisy.f_min == 0.0
    torch.testing.assert_close(noisy.hessian(p), base.hessian(p))
    # sigma = 0 is the exact gradient.
    torch.testing.assert_close(ls.Noisy(base, 0.0).grad(p), base.grad(p), rtol=0, atol=0)


def test_registry_builds_every_landscape():
    for name, make in ls.LANDSCAPES.items():
        f = make()
        assert isinstance(f, ls.Landscape), name
        assert torch.isfinite(f.f(f.start))
