"""optlib.experiments.line_search: Armijo backtracking takes the first step of the sequence
lr, lr*shrink, ... that decreases f sufficiently, never modifies its inputs, and gradient descent
with it converges on smooth landscapes without knowing L."""

from __future__ import annotations

import math

import pytest
import torch

from optlib.experiments.line_search import armijo_step, backtracking_gd
from optlib.problems import landscapes


def _quadratic(L: float = 4.0):
    A = torch.diag(torch.tensor([L, 1.0], dtype=torch.float64))
    return (lambda x: 0.5 * x @ A.to(x.dtype) @ x), (lambda x: A.to(x.dtype) @ x)


def test_the_first_sufficient_step_is_taken():
    """On f = ½(Lx² + y²) along -g from (1, 0): f(θ - t g) = ½L(1 - tL)², and Armijo's condition
    ½L(1 - tL)² <= ½L - c1 t L² holds iff t <= 2(1 - c1)/L."""
    f, grad = _quadratic(L=4.0)
    theta = torch.tensor([1.0, 0.0], dtype=torch.float64)
    g = grad(theta)
    for c1, expected in [(1e-4, 0.25), (0.5, 0.25), (0.6, 0.125)]:  # limits 0.49995, 0.25, 0.2
        new, t, evals = armijo_step(f, theta, g, 1.0, c1=c1, shrink=0.5)
        assert t == expected
        assert evals == 2 + round(math.log2(1.0 / expected))  # f(θ) and one call per trial
        torch.testing.assert_close(new, theta - t * g, rtol=0, atol=0)


def test_an_acceptable_first_trial_is_kept_and_zero_gradient_does_not_move():
    f, grad = _quadratic()
    theta = torch.tensor([0.3, -0.7], dtype=torch.float64)
    new, t, evals = armijo_step(f, theta, grad(theta), 0.01)
    assert t == 0.01 and evals == 2
    zero = torch.zeros(2, dtype=torch.float64)
    new, t, _ = armijo_step(f, zero, grad(zero), 3.0)
    assert t == 3.0 and torch.equal(new, zero)


def test_inputs_are_not_modified_and_float32_stays_float32():
    f, grad = _quadratic()
    theta = torch.tensor([1.0, 2.0], dtype=torch.float32)
    g = grad(theta.double()).float()
    before = theta.clone(), g.clone()
    new, _, _ = armijo_step(f, theta, g, 10.0)
    assert torch.equal(theta, before[0]) and torch.equal(g, before[1])
    assert new.dtype == torch.float32 and new.data_ptr() != theta.data_ptr()


def test_non_finite_trials_are_rejected_not_accepted():
    def f(x):  # (x - 1)², undefined (nan) beyond x = 5
        return torch.where(x < 5, (x - 1) ** 2, torch.nan).sum()

    theta = torch.zeros(1, dtype=torch.float64)
    g = torch.tensor([-2.0], dtype=torch.float64)  # f'(0)
    # trials land at x = 200, 100, ... (nan), then x = 3.125 (f rises), then x = 1.5625: accepted
    new, t, _ = armijo_step(f, theta, g, 100.0)
    assert 0 < float(new) < 5 and float(f(new)) < float(f(theta)) and t == 100.0 / 2**7


def test_ascent_direction_and_bad_arguments_raise():
    f, grad = _quadratic()
    theta = torch.tensor([1.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="descent direction"):
        armijo_step(f, theta, -grad(theta), 1.0, max_shrinks=20)
    for bad in [dict(lr=0.0), dict(c1=1.0), dict(c1=0.0), dict(shrink=1.0), dict(shrink=0.0)]:
        kwargs = dict(lr=1.0) | bad
        lr = kwargs.pop("lr")
        with pytest.raises(ValueError):
            armijo_step(f, theta, grad(theta), lr, **kwargs)


def test_backtracking_gd_descends_monotonically_and_counts_evaluations():
    rosen = landscapes.Rosenbrock()
    x0 = torch.tensor(rosen.start, dtype=torch.float64)
    run = backtracking_gd(rosen.f, rosen.grad, x0, 400, lr=1.0)
    assert torch.equal(x0, torch.tensor(rosen.start, dtype=torch.float64))
    assert run.steps == 400 and run.params.shape == (401, 2)
    assert all(b <= a for a, b in zip(run.loss, run.loss[1:]))  # Armijo: every step decreases f
    assert run.loss[-1] < 1e-3 * run.loss[0]
    assert run.grad_evals == list(range(1, 402))
    steps_f = [b - a for a, b in zip(run.f_evals, run.f_evals[1:])]
    shrinks = [round(math.log2(1.0 / t)) for t in run.step_sizes]
    assert steps_f == [k + 1 for k in shrinks]  # one evaluation per trial, none repeated


def test_backtracking_gd_on_a_quadratic_never_needs_more_than_the_descent_lemma_bound():
    """Every t <= 2(1 - c1)/L passes, so the accepted step is at least shrink * that."""
    f, grad = _quadratic(L=10.0)
    run = backtracking_gd(f, grad, torch.tensor([1.0, 1.0], dtype=torch.float64), 50, lr=5.0)
    assert min(run.step_sizes) >= 0.5 * 2 * (1 - 1e-4) / 10.0
    assert run.loss[-1] < 1e-6 * run.loss[0]
    with pytest.raises(ValueError, match="x0"):
        backtracking_gd(f, grad, torch.tensor([[1.0, 1.0]]), 5)
