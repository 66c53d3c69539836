"""optlib.experiments.momentum: the textbook forms of momentum trace torch's SGD paths, step for
step."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib.experiments import momentum
from optlib.problems import landscapes

ROSEN = landscapes.Rosenbrock()


def quadratic(seed: int, d: int = 4):
    """A seeded SPD quadratic gradient x -> A x - b and a start."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.linspace(0.1, 1.0, d, dtype=torch.float64)) @ Q.T
    b = torch.randn(d, generator=g, dtype=torch.float64)
    return (lambda x: A @ x - b), torch.randn(d, generator=g, dtype=torch.float64)


def torch_path(grad, theta0, steps, **hyper):
    """torch.optim.SGD itself (the independent reference), every iterate."""
    p = theta0.clone().requires_grad_()
    opt = torch.optim.SGD([p], foreach=False, **hyper)
    path = [p.detach().clone()]
    for _ in range(steps):
        p.grad = grad(p.detach())
        opt.step()
        path.append(p.detach().clone())
    return torch.stack(path), opt


def assert_paths_close(a, b, rtol=1e-11):
    scale = b.abs().max()
    assert (a - b).abs().max() <= rtol * scale, float((a - b).abs().max() / scale)


@settings(max_examples=15, deadline=None)
@given(lr=st.floats(1e-3, 0.5), beta=st.floats(0.0, 0.95), seed=st.integers(0, 999))
def test_polyak_form_is_torch_heavy_ball(lr, beta, seed):
    grad, x0 = quadratic(seed)
    ref, _ = torch_path(grad, x0, 40, lr=lr, momentum=beta)
    assert_paths_close(momentum.polyak_heavy_ball(grad, x0, lr, beta, 40), ref)


def test_polyak_form_on_rosenbrock():
    x0 = torch.tensor(ROSEN.start, dtype=torch.float64)
    ref, _ = torch_path(ROSEN.grad, x0, 200, lr=1e-3, momentum=0.9)
    assert_paths_close(momentum.polyak_heavy_ball(ROSEN.grad, x0, 1e-3, 0.9, 200), ref)


@settings(max_examples=15, deadline=None)
@given(alpha=st.floats(1e-3, 1.0), beta=st.floats(0.0, 0.95), seed=st.integers(0, 999))
def test_ema_form_is_sgd_with_lr_scaled_by_one_minus_beta(alpha, beta, seed):
    grad, x0 = quadratic(seed)
    ref, _ = torch_path(grad, x0, 40, lr=alpha * (1 - beta), momentum=beta)
    assert_paths_close(momentum.ema_momentum(grad, x0, alpha, beta, 40), ref)


def test_dampened_torch_buffer_is_ema_plus_the_first_gradient_decaying():
    """b_t - m_t = beta^t g_1 for torch's dampening = beta, whatever the gradients."""
    beta, T = 0.8, 30
    grads = torch.randn(T, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = momentum.buffer_sequence(grads, lr=0.1, momentum=beta, dampening=beta)
    # the EMA's m_t from its iterates: a "gradient function" that replays the sequence
    it = iter(grads)
    path = momentum.ema_momentum(
        lambda x: next(it), torch.zeros(3, dtype=torch.float64), 1.0, beta, T
    )
    m = path[:-1] - path[1:]
    t = torch.arange(1, T + 1, dtype=torch.float64)[:, None]
    torch.testing.assert_close(b - m, beta**t * grads[0], rtol=1e-12, atol=1e-14)


@settings(max_examples=15, deadline=None)
@given(lr=st.floats(1e-3, 0.5), beta=st.floats(0.05, 0.95), seed=st.integers(0, 999))
def test_lookahead_nesterov_is_torch_nesterov_after_the_change_of_variables(lr, beta, seed):
    grad, x0 = quadratic(seed)
    thetas, vs = momentum.nesterov_lookahead(grad, x0, lr, beta, 40)
    ref, _ = torch_path(grad, x0, 40, lr=lr, momentum=beta, nesterov=True)
    assert_paths_close(thetas + beta * vs, ref)  # torch's iterate is the look-ahead point


def test_lookahead_velocity_is_minus_lr_times_torch_buffer_on_rosenbrock():
    lr, beta, T = 1e-3, 0.9, 150
    x0 = torch.tensor(ROSEN.start, dtype=torch.float64)
    thetas, vs = momentum.nesterov_lookahead(ROSEN.grad, x0, lr, beta, T)
    ref, opt = torch_path(ROSEN.grad, x0, T, lr=lr, momentum=beta, nesterov=True)
    assert_paths_close(thetas + beta * vs, ref)
    (buf,) = [s["momentum_buffer"] for s in opt.state.values()]
    torch.testing.assert_close(vs[-1], -lr * buf, rtol=1e-10, atol=1e-14)
    # and the look-ahead form is not the torch path itself: the two variables differ by beta*v
    assert (thetas - ref).abs().max() > 1e-3


def test_buffer_sequences_are_geometric_series():
    beta, T = 0.9, 60
    t = torch.arange(1, T + 1, dtype=torch.float64)
    const = momentum.buffer_sequence(torch.ones(T, 1, dtype=torch.float64), lr=1.0, momentum=beta)
    torch.testing.assert_close(const[:, 0], (1 - beta**t) / (1 - beta), rtol=1e-13, atol=0)
    signs = (-1.0) ** (t - 1)
    alt = momentum.buffer_sequence(signs[:, None], lr=1.0, momentum=beta)
    torch.testing.assert_close(
        alt[:, 0], signs * (1 - (-beta) ** t) / (1 + beta), rtol=1e-12, atol=0
    )
    damped = momentum.buffer_sequence(torch.ones(T, 1), lr=1.0, momentum=beta, dampening=beta)
    torch.testing.assert_close(damped, torch.ones(T, 1))


def test_buffer_sequence_is_optlib_sgd_on_any_shape():
    grads = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    b = momentum.buffer_sequence(grads, lr=0.1, momentum=0.5, nesterov=True)
    assert b.shape == grads.shape and b.dtype == grads.dtype
    torch.testing.assert_close(b[1], 0.5 * grads[0] + grads[1])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: momentum.polyak_heavy_ball(ROSEN.grad, [0.0, 0.0], -0.1, 0.9, 3), "lr"),
        (lambda: momentum.ema_momentum(ROSEN.grad, [0.0, 0.0], 0.1, 1.0, 3), "beta"),
        (lambda: momentum.nesterov_lookahead(ROSEN.grad, [0.0, 0.0], 0.1, 0.5, -1), "steps"),
        (lambda: momentum.buffer_sequence(torch.ones(3, 1), lr=0.1), "momentum > 0"),
        (lambda: momentum.buffer_sequence(torch.ones(0, 1), lr=0.1, momentum=0.9), "at least one"),
    ],
)
def test_bad_arguments_are_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_zero_steps_return_the_start():
    x0 = torch.tensor([0.5, -0.5], dtype=torch.float64)
    assert momentum.polyak_heavy_ball(ROSEN.grad, x0, 0.1, 0.9, 0).tolist() == [x0.tolist()]
    thetas, vs = momentum.nesterov_lookahead(ROSEN.grad, x0, 0.1, 0.9, 0)
    assert thetas.shape == vs.shape == (1, 2) and vs.abs().max() == 0


def test_optlib_sgd_matches_the_reference_too():
    """The forms agree with optlib.SGD as well as torch's (optlib's parity is tested elsewhere)."""
    grad, x0 = quadratic(3)
    p = x0.clone().requires_grad_()
    opt = optlib.SGD([p], lr=0.2, momentum=0.7, nesterov=True)
    for _ in range(30):
        p.grad = grad(p.detach())
        opt.step()
    thetas, vs = momentum.nesterov_lookahead(grad, x0, 0.2, 0.7, 30)
    assert math.isclose(
        float((thetas[-1] + 0.7 * vs[-1] - p.detach()).abs().max()), 0.0, abs_tol=1e-13
    )


# ------------------------------------------------------------ Nesterov's convex rate, O(1/t^2)


def fista_form(grad, x0, lr, steps):
    """The textbook form y_k = x_k + (k-1)/(k+2) (x_k - x_{k-1}), x_{k+1} = y_k - lr grad(y_k)."""
    x_prev, x = x0.clone(), x0.clone()
    path = [x]
    for k in range(steps):
        y = x + (k - 1) / (k + 2) * (x - x_prev) if k >= 1 else x
        x_prev, x = x, y - lr * grad(y)
        path.append(x)
    return torch.stack(path)


def test_convex_momentum_is_the_textbook_schedule():
    assert [momentum.convex_momentum(t) for t in (1, 2, 3, 4)] == [0.0, 0.0, 0.25, 0.4]
    grad, x0 = quadratic(5, d=6)
    thetas, _ = momentum.nesterov_lookahead(grad, x0, 0.7, momentum.convex_momentum, 50)
    assert_paths_close(thetas, fista_form(grad, x0, 0.7, 50), rtol=1e-12)
    with pytest.raises(ValueError, match="t"):
        momentum.convex_momentum(0)


def test_a_constant_schedule_is_the_constant_momentum():
    grad, x0 = quadratic(6)
    a, va = momentum.nesterov_lookahead(grad, x0, 0.3, 0.8, 20)
    b, vb = momentum.nesterov_lookahead(grad, x0, 0.3, lambda t: 0.8, 20)
    assert torch.equal(a, b) and torch.equal(va, vb)
    with pytest.raises(ValueError, match="beta"):
        momentum.nesterov_lookahead(grad, x0, 0.3, lambda t: 1.0, 2)


def test_flat_spectrum_quadratic_spreads_the_gap_evenly_and_meets_the_rates():
    lam, e0 = momentum.flat_spectrum_quadratic(400, L=2.0)
    assert lam.shape == e0.shape == (400,) and bool((lam[1:] > lam[:-1]).all())
    assert math.isclose(float(lam[-1]), 2.0) and float(lam[0]) == 2.0 / 400**2
    assert math.isclose(float((lam * e0 * e0).sum()), 2.0, rel_tol=1e-12)  # telescopes to L
    L, T, R2 = 2.0, 150, float(e0 @ e0)

    def grad(e):
        return lam * e

    def gap(path):
        return 0.5 * (lam * path * path).sum(-1).numpy()

    gd = gap(momentum.iterates(lambda p: optlib.SGD(p, lr=1 / L), grad, e0, T))
    nag = gap(momentum.nesterov_lookahead(grad, e0, 1 / L, momentum.convex_momentum, T)[0])
    t = torch.arange(1, T + 1, dtype=torch.float64).numpy()
    assert (gd[1:] <= L * R2 / (2 * t)).all()  # gradient descent's O(1/t) bound
    assert (nag[1:] <= 2 * L * R2 / (t + 1) ** 2).all()  # Nesterov's O(1/t^2) bound
    assert nag[-1] < 0.1 * gd[-1]
    with pytest.raises(ValueError, match="d"):
        momentum.flat_spectrum_quadratic(1)


def test_iterates_is_the_optimizer_on_a_gradient_function():
    grad, x0 = quadratic(7)
    path = momentum.iterates(lambda p: optlib.SGD(p, lr=0.2, momentum=0.6), grad, x0, 25)
    assert_paths_close(path, momentum.polyak_heavy_ball(grad, x0, 0.2, 0.6, 25))
    assert torch.equal(path[0], x0)
