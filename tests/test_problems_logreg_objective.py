"""optlib.problems.logreg_objective: value, gradient and Hessian against autograd and against
optlib.problems.l2_loss; convexity; the recording minimiser; Newton converges on it."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib import linalg as la
from optlib.problems import (
    LogisticObjective,
    digits_logistic_objective,
    l2_loss,
    softmax_regression,
)

F64 = torch.float64


def small(seed=0, n=40, d=5, classes=3, l2=0.1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randint(0, classes, (n,), generator=g)
    return LogisticObjective(X, y, l2, classes)


@pytest.fixture(scope="module")
def digits_objective():
    return digits_logistic_objective(l2=1e-3)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), l2=st.sampled_from([0.0, 1e-3, 0.5]), scale=st.floats(0.0, 3.0))
def test_gradient_and_hessian_match_autograd(seed, l2, scale):
    obj = small(seed, l2=l2)
    theta = scale * torch.randn(obj.dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    value, grad = obj.value_and_grad(theta)
    theta_ad = theta.clone().requires_grad_()
    f = obj.f(theta_ad)
    (g_ad,) = torch.autograd.grad(f, theta_ad)
    # Closed forms against autograd on 40 examples, 18 parameters: sums of 40 terms in another
    # order, each off by <= 40 ulps of the sum of |terms|, which exceeds the entry itself where
    # terms cancel (more so for the Hessian's products of probabilities, and for the gradient
    # and Hessian than for the value): rtol 1e-13, 1e-11, 1e-10 allow cancellation factors of
    # ~10, 1e3, 1e4 (measured: 1, 4.4 and 55 ulps); atol, ~40 ulps of O(1) terms, covers
    # entries that cancel to ~0.
    torch.testing.assert_close(value, f.detach(), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(grad, g_ad, rtol=1e-11, atol=1e-14)
    torch.testing.assert_close(obj.grad(theta), grad, rtol=0, atol=0)
    H_ad = torch.autograd.functional.hessian(obj.f, theta)
    torch.testing.assert_close(obj.hessian(theta), H_ad, rtol=1e-10, atol=1e-13)


def test_hessian_is_symmetric_and_l2_strongly_convex():
    obj = small(3, l2=0.05)
    theta = torch.randn(obj.dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    H = obj.hessian(theta)
    assert torch.equal(H, H.T)
    # lambda_min >= l2 exactly; eigvalsh is good to ~eps ||H|| = 1e-15 absolute, far inside 5e-11
    assert float(torch.linalg.eigvalsh(H)[0]) >= 0.05 * (1 - 1e-9)
    # without the penalty, adding a constant to every logit is a flat direction
    flat = LogisticObjective(obj.X, obj.y, 0.0, 3)
    bias_shift = torch.zeros(flat.dim, dtype=F64).view(3, -1)
    bias_shift[:, -1] = 1.0
    v = bias_shift.reshape(-1)
    # exactly 0 in real arithmetic; rounding leaves ~eps ||H|| ||v||^2 = 1e-15
    assert float(v @ flat.hessian(theta) @ v) == pytest.approx(0.0, abs=1e-12)


def test_same_objective_as_l2_loss_on_a_softmax_regression(digits_objective):
    obj = digits_objective
    layer = softmax_regression(64, 10, init_scale=0.1, seed=4, dtype=F64)
    with torch.no_grad():
        layer.bias.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(5))
    theta = torch.cat([layer.weight, layer.bias[:, None]], dim=1).reshape(-1)
    expected = l2_loss(layer, obj.X, obj.y, obj.l2)
    # a mean of 1348 cross-entropies in two orders: pairwise summation keeps that to ~log2(1348)
    # = 11 ulps (measured: identical); rtol 1e-13 is 450 ulps
    torch.testing.assert_close(obj.f(theta), expected.detach(), rtol=1e-13, atol=0)
    assert obj.dim == 650 and obj.X.dtype == F64


def test_value_at_zero_is_log_of_the_number_of_classes(digits_objective):
    # zero logits: every term is log 10, so the mean is log 10 to a few ulps (measured exact)
    value = float(digits_objective.f(digits_objective.initial()))
    assert value == pytest.approx(math.log(10), rel=1e-14)


def test_newton_converges_quadratically():
    obj = small(7, n=200, d=6, classes=4, l2=1e-2)
    res = la.newton(obj.f, obj.initial(), grad=obj.grad, hessian=obj.hessian, tol=1e-12)
    assert res.converged and res.iterations <= 10
    g = res.grad_norms
    # quadratic phase: g_k <= C g_{k-1}^2, checked above the float64 floor of the gradient (1e-14:
    # ~40 ulps of O(1) terms); C = 100 is ||H^-1|| ||third derivative|| with a margin
    tail = [k for k in range(1, len(g)) if g[k - 1] < 1e-2 and g[k] > 1e-14]
    assert tail and all(g[k] <= 100 * g[k - 1] ** 2 for k in tail)


def test_minimize_records_every_evaluation_and_stops_at_the_target():
    obj = small(2, l2=0.1)
    tr = obj.minimize(lambda p: optlib.SGD(p, lr=0.5), 30, label="GD")
    assert tr.label == "GD" and len(tr.loss) == len(tr.time) == len(tr.iteration) == 30
    assert tr.iteration == list(range(30))  # one evaluation per step, before it
    assert tr.loss[-1] < tr.loss[0] and tr.time == sorted(tr.time)
    target = tr.loss[10]
    early = obj.minimize(lambda p: optlib.SGD(p, lr=0.5), 30, target=target)
    assert early.first_below(target) == 10 and len(early.loss) == 11
    assert tr.first_below(-1.0) is None
    # the gradient the closure hands to the optimizer is the exact one: one SGD step by hand
    one = obj.minimize(lambda p: optlib.SGD(p, lr=0.5), 1)
    # -0.5 g is exact (a power of two), so the step rounds once either way: identical
    expected = obj.initial() - 0.5 * obj.grad(obj.initial())
    torch.testing.assert_close(one.theta, expected, rtol=0, atol=0)


def test_minimize_with_lbfgs_counts_line_search_evaluations():
    obj = small(5, l2=0.1)
    tr = obj.minimize(
        lambda p: optlib.LBFGS(p, max_iter=15, line_search_fn="strong_wolfe", history_size=5), 1
    )
    iterations = tr.iteration[-1]
    assert 1 <= iterations <= 15 and len(tr.loss) > iterations  # line searches evaluate too
    assert tr.iteration == sorted(tr.iteration)
    f_star = float(obj.f(la.newton(obj.f, obj.initial(), grad=obj.grad, hessian=obj.hessian).x))
    # not a rounding tolerance: 15 L-BFGS iterations on this well-conditioned problem reach
    # 4e-10 above f* (measured); 1e-6 asks for "converged", with 2500x room
    assert min(tr.loss) - f_star < 1e-6


def test_bad_arguments_raise_value_error_naming_the_parameter():
    obj = small()
    with pytest.raises(ValueError, match="Invalid theta"):
        obj.grad(torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="Invalid theta"):
        obj.f(torch.zeros(obj.dim + 1, dtype=F64))
    with pytest.raises(ValueError, match="l2"):
        LogisticObjective(obj.X, obj.y, -1.0, 3)
    with pytest.raises(ValueError, match="Invalid X, y"):
        LogisticObjective(obj.X, obj.y[:-1], 0.1, 3)
    with pytest.raises(ValueError, match="steps"):
        obj.minimize(lambda p: optlib.SGD(p, lr=0.1), 0)


def test_empirical_fisher_diagonal_is_the_mean_squared_per_example_gradient():
    obj = small(4, l2=0.3)
    theta = torch.randn(obj.dim, generator=torch.Generator().manual_seed(2), dtype=F64)
    per_example = []
    for i in range(obj.X.shape[0]):  # the data term of one example, by autograd (no penalty)
        single = LogisticObjective(obj.X[i : i + 1], obj.y[i : i + 1], 0.0, obj.n_classes)
        theta_ad = theta.clone().requires_grad_()
        (g,) = torch.autograd.grad(single.f(theta_ad), theta_ad)
        per_example.append(g)
    expected = torch.stack(per_example).pow(2).mean(0)
    # a closed form against 40 autograd gradients squared and averaged: sums of 40 positive
    # terms in another order, a few ulps each (rtol 1e-12 leaves a factor ~100)
    torch.testing.assert_close(obj.empirical_fisher_diagonal(theta), expected, rtol=1e-12, atol=0)
    # it is not the Hessian's diagonal: with the labels drawn from the model instead of the
    # observed ones, (p - e_y)^2 averages to p(1 - p), which is the Hessian's data term
    H_data = obj.hessian(theta).diagonal() - obj.l2
    assert not torch.allclose(obj.empirical_fisher_diagonal(theta), H_data, rtol=0.1)
