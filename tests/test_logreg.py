"""optlib.problems.logreg: softmax regression on digits is zero-initialised, seeded and convex."""

from __future__ import annotations

import math

import pytest
import torch

from optlib.problems import digits_logreg, l2_loss, minimize, softmax_regression

F = torch.nn.functional


def test_zero_init_predicts_uniform_and_loss_is_log10():
    data, model = digits_logreg(dtype=torch.float64)
    assert model.weight.shape == (10, 64) and model.bias.shape == (10,)
    assert model.weight.abs().max() == 0 and model.bias.abs().max() == 0
    assert model.weight.dtype == torch.float64
    loss = F.cross_entropy(model(data.X_train), data.y_train).detach()
    # zero logits: each term is log(sum of 10 ones) = log 10, a mean of equal float64 numbers
    # rounds by a few ulps; rel 1e-14 is ~45 ulps
    assert loss.item() == pytest.approx(math.log(10), rel=1e-14)


def test_split_follows_the_seed_and_random_init_is_seeded():
    a, _ = digits_logreg(seed=0)
    b, _ = digits_logreg(seed=1)
    assert not torch.equal(a.y_test, b.y_test)
    w1 = softmax_regression(64, 10, init_scale=0.1, seed=3).weight
    w2 = softmax_regression(64, 10, init_scale=0.1, seed=3).weight
    # 640 draws of N(0, 0.1^2): the sample std has relative standard error 1/sqrt(2*640) = 2.8%,
    # so (0.05, 0.2) is > 17 standard errors wide on each side
    assert torch.equal(w1, w2) and 0.05 < w1.detach().std().item() < 0.2


def test_loss_is_convex_along_random_segments():
    data, model = digits_logreg(dtype=torch.float64)
    X, y = data.X_train, data.y_train
    g = torch.Generator().manual_seed(0)

    def f(w: torch.Tensor) -> float:
        W, c = w[:640].reshape(10, 64), w[640:]
        return float(F.cross_entropy(X @ W.T + c, y))

    for _ in range(5):
        a = torch.randn(650, generator=g, dtype=torch.float64)
        b = torch.randn(650, generator=g, dtype=torch.float64)
        for t in (0.25, 0.5, 0.75):
            # f ~ 3-5 is a float64 mean of 1348 terms, rounded to ~1e-14; the slack absorbs only
            # that (the measured convexity gaps on these segments are all >= 0.5)
            assert f((1 - t) * a + t * b) <= (1 - t) * f(a) + t * f(b) + 1e-12


def test_minimize_reaches_a_stationary_point_of_the_l2_objective():
    data, model = digits_logreg(dtype=torch.float64)
    X, y = data.X_train[:300], data.y_train[:300]
    f_star = minimize(model, X, y, l2=1e-2)
    loss = l2_loss(model, X, y, 1e-2)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    # How stationary can a float64 line-search method get? Its line search compares values of f,
    # which rounding resolves only to about eps*|f*|. Near the minimiser f - f* >= |g|^2 / (2L),
    # so while |g| > sqrt(2 L eps |f*|) the objective is still visibly above f* and L-BFGS can
    # make progress; below it, f cannot certify any more. L is bounded by the Hessian of softmax
    # cross-entropy, whose class block is at most 1/2: L <= l2 + ||[X, 1]||_2^2 / (2N). Measured:
    # the floor is 1.3e-8 (true L = 0.146 would give 6.6e-9) and L-BFGS stops at 1.9e-9.
    Xb = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    L = 1e-2 + torch.linalg.matrix_norm(Xb, ord=2).item() ** 2 / (2 * len(X))
    floor = math.sqrt(2 * L * torch.finfo(torch.float64).eps * f_star)
    assert torch.cat([g.reshape(-1) for g in grads]).norm() < floor
    # the same float64 expression at the same point: equal up to reduction order (a sum of
    # 300 x 10 terms, <= log2(3000) ~ 12 ulps); rel 1e-14 is ~45 ulps
    assert loss.item() == pytest.approx(f_star, rel=1e-14)
    # strongly convex: any other point is worse by at least (λ/2)‖θ - θ*‖²
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
        # exact for a l2-strongly convex f, up to the first-order term |g||d| <= 1.3e-8 * 0.26,
        # 1e6 times smaller than the bound 3.25e-4
        assert l2_loss(model, X, y, 1e-2).item() >= f_star + 0.5 * 1e-2 * 0.01**2 * 650


def test_l2_loss_adds_the_penalty_and_matches_run_curve():
    from optlib.experiments.curves import run_curve
    from optlib.optim import SGD

    data, model = digits_logreg(dtype=torch.float64)
    with torch.no_grad():
        model.weight.fill_(0.1)
    plain = F.cross_entropy(model(data.X_train), data.y_train)
    penalised = l2_loss(model, data.X_train, data.y_train, 0.5)
    # 1.6 recovered as a difference of two O(1) float64 numbers: a few ulps of |penalised| ~ 4,
    # i.e. ~1e-15 relative to 1.6; rel 1e-12 is far above that and far below any wrong penalty
    assert (penalised - plain).item() == pytest.approx(0.25 * 640 * 0.01, rel=1e-12)
    curve = run_curve(lambda p: SGD(p, lr=0.0), model, data, batch_size=None, epochs=1, l2=0.5)
    # the same objective at the same point through run_curve: reduction order only (~ulps)
    assert curve.train_loss[0] == pytest.approx(penalised.item(), rel=1e-14)
