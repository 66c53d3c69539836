"""optlib.experiments.weight_decay: decoupled decay composes with SGD and Adam; Adam's effective L2
decay."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib import problems
from optlib.experiments import train
from optlib.experiments.weight_decay import Decoupled, decay_, effective_decay

from ._parity import clone_params, make_params, quartic_loss
from ._rounding import max_abs_diff, nudged, rounding_tolerance

SHAPES = [(3,), (2, 4)]


def _run(make, params, steps, decoupled=0.0, loss_fn=quartic_loss):
    opt = make(params)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(params).backward()
        if decoupled:
            decay_(opt, decoupled)
        opt.step()
        out.append([p.detach().clone() for p in params])
    return opt, out


def _tolerance(run, p0, steps):
    """Two implementations of ``steps`` steps differ by rounding: a few ulps per step, carried as
    far as the reference ``run`` (params -> trajectory) carries a one-ulp change of ``p0``
    (tests/_rounding.py; Adam's scaling amplifies such changes near a minimum)."""
    a, b = run(clone_params(p0)), run(nudged(p0))
    response = max(max_abs_diff(x, y) for x, y in zip(a, b))
    size = max(float(t.abs().max()) for xs in a for t in xs)
    return rounding_tolerance(steps, response, size, torch.float64)


def _close(a, b, atol):
    for xs, ys in zip(a, b):
        for x, y in zip(xs, ys):
            torch.testing.assert_close(x, y, rtol=0, atol=atol)


@settings(max_examples=15, deadline=None)
@given(lr=st.floats(1e-3, 0.2), lam=st.floats(0.0, 0.5), seed=st.integers(0, 2**16))
def test_sgd_l2_equals_decoupled_decay(lr, lam, seed):
    """SGD on f with weight_decay=λ, SGD on f + λ/2‖θ‖², and decay_(λ) then SGD: one path."""
    p0 = make_params(SHAPES, seed=seed)

    def penalised(ps):
        return quartic_loss(ps) + lam / 2 * sum((p * p).sum() for p in ps)

    def reference(params):
        return _run(lambda ps: optlib.SGD(ps, lr=lr, weight_decay=lam), params, 20)[1]

    a = reference(clone_params(p0))
    _, b = _run(lambda ps: optlib.SGD(ps, lr=lr), clone_params(p0), 20, loss_fn=penalised)
    _, c = _run(lambda ps: optlib.SGD(ps, lr=lr), clone_params(p0), 20, decoupled=lam)
    atol = _tolerance(reference, p0, 20)
    _close(a, b, atol)
    _close(a, c, atol)


@settings(max_examples=15, deadline=None)
@given(lr=st.floats(1e-3, 0.1), lam=st.floats(1e-3, 0.5), seed=st.integers(0, 2**16))
def test_adam_plus_decay_is_torch_adamw(lr, lam, seed):
    p0 = make_params(SHAPES, seed=seed)
    _, ours = _run(lambda ps: optlib.Adam(ps, lr=lr), clone_params(p0), 20, decoupled=lam)

    def reference(params):
        make = lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=lam, foreach=False)  # noqa: E731
        return _run(make, params, 20)[1]

    _close(ours, reference(clone_params(p0)), _tolerance(reference, p0, 20))


def test_adam_l2_is_not_adamw():
    p0 = make_params(SHAPES, seed=1)
    _, l2 = _run(lambda ps: optlib.Adam(ps, lr=0.05, weight_decay=0.3), clone_params(p0), 20)
    _, dec = _run(lambda ps: optlib.AdamW(ps, lr=0.05, weight_decay=0.3), clone_params(p0), 20)
    gap = max((x - y).abs().max().item() for xs, ys in zip(l2, dec) for x, y in zip(xs, ys))
    assert gap > 1e-3


def test_decay_uses_each_groups_lr_and_skips_params_without_grad():
    a = torch.ones(3, dtype=torch.float64, requires_grad=True)
    b = torch.ones(2, dtype=torch.float64, requires_grad=True)
    c = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = optlib.SGD([{"params": [a], "lr": 0.1}, {"params": [b, c], "lr": 0.5}])
    a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
    decay_(opt, 0.2)
    assert torch.all(a == 0.98) and torch.all(b == 0.9) and torch.all(c == 1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        decay_(opt, -1.0)


@pytest.mark.parametrize("cls", [optlib.Adam, torch.optim.Adam])
def test_effective_decay_is_lr_lambda_over_root_vhat(cls):
    torch.manual_seed(0)
    p = torch.zeros(1000, dtype=torch.float64, requires_grad=True)
    sigma = torch.logspace(-2, 1, 1000, dtype=torch.float64)
    opt = cls([p], lr=0.01, weight_decay=0.1, betas=(0.9, 0.99), eps=1e-8)
    for _ in range(300):
        p.grad = sigma * torch.randn(1000, dtype=torch.float64)
        opt.step()
    (rate,) = effective_decay(opt)
    state = opt.state[p]
    v_hat = state["exp_avg_sq"] / (1 - 0.99 ** int(state["step"]))
    # the same formula from the same state: a few roundings (8 ulps)
    expected = 0.01 * 0.1 / (v_hat.sqrt() + 1e-8)
    torch.testing.assert_close(rate, expected, rtol=8 * torch.finfo(torch.float64).eps, atol=0)
    # v̂ tracks σ² (the L2 gradient is small here), so the rate falls like 1/σ. v̂ averages
    # ~1/(1 - 0.99) = 100 squared draws: sqrt(v̂)/σ has relative spread ~ sqrt(2/100)/2 = 7%
    # per weight (measured 5%), and the median of 1000 weights is ~30x tighter (measured 1.0001)
    ratio = rate * sigma / (0.01 * 0.1)
    assert 0.7 < ratio.median() < 1.3
    assert rate[:100].mean() > 50 * rate[-100:].mean()


@pytest.mark.parametrize("cls", [optlib.AdamW, torch.optim.AdamW])
def test_effective_decay_of_adamw_is_uniform(cls):
    p = torch.ones(5, requires_grad=True)
    q = torch.ones(2, requires_grad=True)
    opt = cls([{"params": [p], "weight_decay": 0.1}, {"params": [q], "lr": 0.1}], lr=0.01)
    p.grad, q.grad = torch.randn(5), torch.randn(2)
    opt.step()
    rp, rq = effective_decay(opt)
    # lr x weight_decay: one float32 product each way (0.01 default decay x 0.1): 1 ulp
    rel32 = torch.finfo(torch.float32).eps
    assert torch.all(rp == 0.01 * 0.1)
    torch.testing.assert_close(rq, torch.full((2,), 0.1 * 0.01), rtol=rel32, atol=0)


def test_effective_decay_skips_stateless_and_handles_no_bias_correction():
    p = torch.ones(3, requires_grad=True)
    q = torch.ones(3, requires_grad=True)
    opt = optlib.Adam([p, q], lr=0.1, weight_decay=0.5, bias_correction=False, eps=0.0)
    p.grad = torch.full((3,), 2.0)
    opt.step()
    (rate,) = effective_decay(opt)
    v = opt.state[p]["exp_avg_sq"]
    # the same formula in float32 from the same state: a few roundings
    rel32 = torch.finfo(torch.float32).eps
    torch.testing.assert_close(rate, 0.1 * 0.5 / v.sqrt(), rtol=4 * rel32, atol=0)


def test_decoupled_wrapper_is_adamw_and_sgdw_with_closures():
    p0 = make_params(SHAPES, seed=7)

    def closure_run(make, params, steps=15):
        opt = make(params)

        def closure():
            opt.zero_grad()
            loss = quartic_loss(params)
            loss.backward()
            return loss

        for _ in range(steps):
            opt.step(closure)
        return [p.detach() for p in params]

    ours = closure_run(lambda ps: Decoupled(optlib.Adam(ps, lr=0.03), 0.4), clone_params(p0))
    def adamw(params):
        make = lambda ps: torch.optim.AdamW(ps, lr=0.03, weight_decay=0.4, foreach=False)  # noqa: E731
        return [closure_run(make, params)]

    _close([ours], adamw(clone_params(p0)), _tolerance(adamw, p0, 15))
    sgdw = closure_run(lambda ps: Decoupled(optlib.SGD(ps, lr=0.05), 0.3), clone_params(p0))

    def sgd(params):
        return [closure_run(lambda ps: optlib.SGD(ps, lr=0.05, weight_decay=0.3), params)]

    _close([sgdw], sgd(clone_params(p0)), _tolerance(sgd, p0, 15))


def test_decoupled_wrapper_works_with_train_run_and_schedulers():
    data = problems.digits()
    model = problems.mlp(64, 8, 10, seed=0)
    problem = train.Supervised(model, data.X_train[:64], data.y_train[:64])
    hist = train.run(lambda ps: Decoupled(optlib.SGD(ps, lr=0.1), 0.5), problem, 5)
    assert hist.steps == 5 and not hist.diverged
    w = torch.ones(2, requires_grad=True)
    wrapped = Decoupled(optlib.SGD([w], lr=1.0), 0.1)
    sched = torch.optim.lr_scheduler.StepLR(wrapped.optimizer, 1, gamma=0.5)
    w.grad = torch.zeros(2)
    wrapped.step()
    sched.step()
    wrapped.step()
    assert wrapped.param_groups[0]["lr"] == 0.5
    # (1 - 1.0 x 0.1)(1 - 0.5 x 0.1) in float32: two roundings each way
    rel32 = torch.finfo(torch.float32).eps
    torch.testing.assert_close(w.detach(), torch.full((2,), 0.9 * 0.95), rtol=4 * rel32, atol=0)
    assert wrapped.state_dict()["param_groups"][0]["lr"] == 0.5
    with pytest.raises(ValueError, match="weight_decay"):
        Decoupled(wrapped.optimizer, -1.0)
