"""optlib.AdamWScheduleFree against facebookresearch/schedule_free
``schedulefree/adamw_schedulefree.py`` (current version: bias correction in the denominator,
``train_mode`` off until ``train()``).

The rule checked (Defazio et al., 2024), written with all three sequences explicitly; z_1 = x_1 =
the initial parameters, v_0 = 0, and at step t = 1, 2, ...:

    y_t     = (1 - beta1) * z_t + beta1 * x_t                  (gradient g_t taken here)
    gamma_t = lr * min(1, t / warmup_steps)
    w_t     = t^r * (max_{i<=t} gamma_i)^weight_lr_power,   c = w_t / sum_{i<=t} w_i  (0 if 0/0)
    v       = beta2 * v + (1 - beta2) * g_t^2
    u       = g_t / (sqrt(v / (1 - beta2^t)) + eps) + wd * y_t
    z_{t+1} = z_t - gamma_t * u
    x_{t+1} = (1 - c) * x_t + c * z_{t+1}

In train mode the parameters hold y, after ``eval()`` they hold x.
"""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import optlib

from ._optim_checks import (  # noqa: F401 (one_thread is an autouse fixture)
    SHAPES,
    assert_resume_bit_identical,
    assert_zero_gradient_is_finite,
    digits_losses,
    one_thread,
)
from ._parity import assert_close_lists, clone_params, make_params, quartic_loss, run
from ._rounding import one_ulp_response, rounding_tolerance


def schedule_free_transcribed(params, steps, *, lr, betas, eps, weight_decay, warmup_steps, r,
                              weight_lr_power):  # fmt: skip
    """The rule above on plain tensors; returns (y, x, [z_2, ..., z_{steps+1}])."""
    beta1, beta2 = betas
    z = [p.detach().clone() for p in params]
    x = [p.detach().clone() for p in params]
    v = [torch.zeros_like(p) for p in z]
    lr_max, weight_sum, zs = 0.0, 0.0, []
    for t in range(1, steps + 1):
        y = [(1 - beta1) * zi + beta1 * xi for zi, xi in zip(z, x)]
        q = [yi.clone().requires_grad_() for yi in y]
        grads = torch.autograd.grad(quartic_loss(q), q)
        gamma = lr * min(1.0, t / warmup_steps) if warmup_steps > 0 else lr
        lr_max = max(lr_max, gamma)
        w = t**r * lr_max**weight_lr_power
        weight_sum += w
        c = w / weight_sum if weight_sum > 0 else 0.0
        for i, g in enumerate(grads):
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            u = g / (torch.sqrt(v[i] / (1 - beta2**t)) + eps) + weight_decay * y[i]
            z[i] = z[i] - gamma * u
            x[i] = (1 - c) * x[i] + c * z[i]
        zs.append([zi.clone() for zi in z])
    y = [(1 - beta1) * zi + beta1 * xi for zi, xi in zip(z, x)]
    return y, x, zs


def make_train(**kw):
    def factory(ps):
        opt = optlib.AdamWScheduleFree(ps, **kw)
        opt.train()
        return opt

    return factory


@settings(max_examples=30, deadline=None)
@given(
    lr=st.floats(1e-4, 0.05),
    betas=st.sampled_from([(0.9, 0.999), (0.5, 0.9), (0.95, 0.0)]),
    eps=st.sampled_from([1e-8, 0.1]),
    weight_decay=st.sampled_from([0.0, 0.1]),
    warmup_steps=st.sampled_from([0, 1, 7, 50]),
    r=st.sampled_from([0.0, 1.0]),
    weight_lr_power=st.sampled_from([0.0, 2.0]),
    foreach=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(  # the case random draws once found: 1.6e-12 apart, 7000 ulps, from Adam's scaling
    lr=0.0207, betas=(0.5, 0.9), eps=1e-8, weight_decay=0.1, warmup_steps=0, r=0.0,
    weight_lr_power=2.0, foreach=True, seed=28874,
)  # fmt: skip
def test_matches_transcription(lr, betas, eps, weight_decay, warmup_steps, r, weight_lr_power,
                               foreach, seed):  # fmt: skip
    kw = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps,
              r=r, weight_lr_power=weight_lr_power)  # fmt: skip
    p0 = make_params(SHAPES, seed=seed)
    ps = clone_params(p0)
    opt = make_train(foreach=foreach, **kw)(ps)
    run(lambda _: opt, ps, 20)
    y, x, _ = schedule_free_transcribed(p0, 20, **kw)
    # optlib stores y and z and eliminates x, the transcription keeps all three: the two round
    # differently each step, and the Adam scaling carries such differences far near a minimum
    # (lr=0.0207, betas=(0.5, 0.9), wd=0.1, seed=28874 ends 1.6e-12 apart, which one ulp moved at
    # the start also reaches). Tolerance: 20 steps x a few ulps, each carried as far as the
    # transcription carries a one-ulp change of p0 (tests/_rounding.py), x 1/beta1 because x is
    # recovered as (y - (1 - beta1) z) / beta1.
    response = one_ulp_response(lambda s: sum(schedule_free_transcribed(s, 20, **kw)[:2], []), p0)
    size = max(float(t.abs().max()) for t in y + x)
    atol = rounding_tolerance(20, response, size, torch.float64) / betas[0]
    assert_close_lists([p.detach().clone() for p in ps], y, rtol=0, atol=atol, what="y (train)")
    opt.eval()
    assert_close_lists([p.detach().clone() for p in ps], x, rtol=0, atol=atol, what="x (eval)")
    opt.train()
    assert_close_lists([p.detach().clone() for p in ps], y, rtol=0, atol=atol, what="y (train)")


def test_foreach_agrees_with_single_tensor():
    p0 = make_params(SHAPES, seed=3)
    kw = dict(lr=0.01, weight_decay=0.1, warmup_steps=5)
    a = run(make_train(foreach=True, **kw), clone_params(p0), 30)
    b = run(make_train(foreach=False, **kw), clone_params(p0), 30)
    # the same arithmetic through foreach kernels: an ulp at most per step over 30 steps, 45
    # ulps allowed, relative to each tensor's scale (an entry near 0 is known to ulps of it)
    assert_close_lists(a, b, rtol=1e-14)


def test_defaults():
    opt = optlib.AdamWScheduleFree([torch.zeros(2, requires_grad=True)])
    d = opt.defaults
    assert (d["lr"], d["betas"], d["eps"], d["weight_decay"]) == (0.0025, (0.9, 0.999), 1e-8, 0)
    assert (d["warmup_steps"], d["r"], d["weight_lr_power"]) == (0, 0.0, 2.0)
    assert opt.param_groups[0]["train_mode"] is False


def test_step_outside_train_mode_is_an_error():
    p = torch.ones(3, requires_grad=True)
    opt = optlib.AdamWScheduleFree([p])
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match=r"train\(\)"):
        opt.step()  # train mode is off until train() is called
    assert not opt.state and opt.param_groups[0]["k"] == 0, "a refused step changed the state"
    opt.train()
    opt.step()
    opt.eval()
    with pytest.raises(RuntimeError, match="train mode"):
        opt.step()
    assert opt.param_groups[0]["k"] == 1


def test_first_step_makes_x_y_and_z_equal():
    """c = 1 on the first step: x_2 = z_2, hence y_2 = z_2 too, and eval() changes nothing."""
    p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = optlib.AdamWScheduleFree([p], lr=0.1)
    opt.train()
    p.grad = torch.tensor([0.3, -4.0, 0.0], dtype=torch.float64)
    opt.step()
    u = p.grad / (p.grad.abs() + 1e-8)  # bias-corrected sqrt(v) = |g|
    y2 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) - 0.1 * u
    torch.testing.assert_close(p.detach(), y2)
    torch.testing.assert_close(opt.state[p]["z"], y2)
    opt.eval()
    torch.testing.assert_close(p.detach(), y2)


def test_train_eval_switch():
    """eval() puts x = (y - (1 - beta1) z) / beta1 in the parameters, train() puts y back;
    switching twice to the same mode does nothing; before any step there is nothing to swap."""
    params = make_params(SHAPES, seed=4)
    opt = optlib.AdamWScheduleFree(params, lr=0.02, betas=(0.8, 0.999))
    opt.eval()
    opt.train()
    assert torch.equal(params[0].detach(), make_params(SHAPES, seed=4)[0].detach())
    run(lambda _: opt, params, 6)
    y = [p.detach().clone() for p in params]
    z = [opt.state[p]["z"].clone() for p in params]
    opt.eval()
    x = [p.detach().clone() for p in params]
    assert_close_lists(x, [(yi - 0.2 * zi) / 0.8 for yi, zi in zip(y, z)])
    opt.eval()
    assert_close_lists([p.detach() for p in params], x, rtol=0, atol=0)
    opt.train()
    opt.train()
    assert_close_lists([p.detach() for p in params], y)


def test_x_is_the_running_mean_of_the_z_sequence():
    """With r = 0 and no warm-up every weight is equal: x_{T+1} = mean(z_2, ..., z_{T+1})."""
    params = make_params(SHAPES, seed=5)
    opt = make_train(lr=0.01)(params)
    zs = []
    for _ in range(8):
        opt.zero_grad()
        quartic_loss(params).backward()
        opt.step()
        zs.append([opt.state[p]["z"].clone() for p in params])
    opt.eval()
    means = [torch.stack([z[i] for z in zs]).mean(0) for i in range(len(params))]
    assert_close_lists([p.detach() for p in params], means)


def test_warmup_schedules_the_rate_and_weights_the_average():
    params = make_params(SHAPES, seed=6)
    opt = make_train(lr=0.01, warmup_steps=4)(params)
    seen = []
    for _ in range(6):
        opt.zero_grad()
        quartic_loss(params).backward()
        opt.step()
        seen.append(opt.param_groups[0]["scheduled_lr"])
    assert seen == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01], rel=1e-15)
    # weight_lr_power = 2: the weights are lr_max^2, so warm-up iterates count less.
    expected = sum(min(1.0, t / 4) ** 2 * 0.01**2 for t in range(1, 7))
    assert opt.param_groups[0]["weight_sum"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(betas=(0.0, 0.999)), "beta1"),
        (dict(betas=(1.0, 0.999)), "beta1"),
        (dict(betas=(0.9, 1.0)), "beta2"),
        (dict(betas=(0.9,)), "betas"),
        (dict(eps=0.0), "eps"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(warmup_steps=2.5), "warmup_steps"),
        (dict(warmup_steps=True), "warmup_steps"),
        (dict(r=-1.0), "r"),
        (dict(weight_lr_power=-2.0), "weight_lr_power"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.AdamWScheduleFree([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("foreach", [False, True])
def test_resume_is_bit_identical(foreach):
    assert_resume_bit_identical(make_train(lr=0.01, warmup_steps=3, foreach=foreach))


def test_resume_from_an_eval_mode_checkpoint():
    """The reference recommends saving in eval mode: the parameters then hold x, and the
    resumed optimizer (its group loaded with train_mode False) goes back to y on train()."""
    p0 = make_params(SHAPES, seed=7)
    kw = dict(lr=0.01)

    def swap_at_6(opt, params, t):
        if t == 6:
            opt.eval()
            opt.train()
        opt.zero_grad()
        quartic_loss(params).backward()
        opt.step()

    a = clone_params(p0)
    opt_a = make_train(**kw)(a)
    for t in range(12):
        swap_at_6(opt_a, a, t)

    b = clone_params(p0)
    opt_b = make_train(**kw)(b)
    for t in range(6):
        swap_at_6(opt_b, b, t)
    opt_b.eval()
    saved = {"params": [p.detach().clone() for p in b], "opt": opt_b.state_dict()}
    c = [t.clone().requires_grad_() for t in saved["params"]]
    opt_c = optlib.AdamWScheduleFree(c, **kw)
    opt_c.load_state_dict(saved["opt"])
    assert opt_c.param_groups[0]["train_mode"] is False
    opt_c.train()
    for _ in range(6, 12):
        opt_c.zero_grad()
        quartic_loss(c).backward()
        opt_c.step()
    for x, y in zip(a, c):
        assert torch.equal(x.detach(), y.detach())


@pytest.mark.parametrize("zero_params", [False, True])
def test_zero_gradient_gives_no_nan(zero_params):
    params = assert_zero_gradient_is_finite(
        make_train(lr=0.01, weight_decay=0.1, warmup_steps=2), zero_params=zero_params
    )
    if zero_params:
        assert all(torch.equal(p.detach(), torch.zeros_like(p)) for p in params)


def test_trains_digits_mlp():
    """Loss measured at x, after eval()."""
    before, after = digits_losses(
        lambda model: make_train(lr=0.01)(model.parameters()), finish=lambda opt: opt.eval()
    )
    assert after < 0.25 * before, (before, after)
