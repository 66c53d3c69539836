"""optlib.Lion against the authors' reference, google/automl ``lion/lion_pytorch.py``.

The rule checked (Chen et al., 2023), per parameter, with m_0 = 0:

    p <- p * (1 - lr * wd)
    c  = beta1 * m + (1 - beta1) * g
    p <- p - lr * sign(c)
    m <- beta2 * m + (1 - beta2) * g
"""

import pytest
import torch
from hypothesis import given, settings
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


def lion_transcribed(params, steps, *, lr, beta1, beta2, wd):
    """The rule above, written out on plain tensors."""
    p = [x.detach().clone() for x in params]
    m = [torch.zeros_like(x) for x in p]
    for _ in range(steps):
        q = [x.clone().requires_grad_() for x in p]
        grads = torch.autograd.grad(quartic_loss(q), q)
        for i, g in enumerate(grads):
            p[i] = p[i] * (1 - lr * wd)
            c = beta1 * m[i] + (1 - beta1) * g
            p[i] = p[i] - lr * torch.sign(c)
            m[i] = beta2 * m[i] + (1 - beta2) * g
    return p


@settings(max_examples=25, deadline=None)
@given(
    lr=st.floats(1e-4, 0.05),
    beta1=st.sampled_from([0.0, 0.9, 0.95]),
    beta2=st.sampled_from([0.0, 0.98, 0.99]),
    wd=st.sampled_from([0.0, 0.1, 1.0]),
    foreach=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_transcription(lr, beta1, beta2, wd, foreach, seed):
    p0 = make_params(SHAPES, seed=seed)
    kw = dict(lr=lr, betas=(beta1, beta2), weight_decay=wd)
    ours = run(lambda ps: optlib.Lion(ps, foreach=foreach, **kw), clone_params(p0), 30)
    ref = lion_transcribed(p0, 30, lr=lr, beta1=beta1, beta2=beta2, wd=wd)
    assert_close_lists(ours, ref)


def test_foreach_agrees_with_single_tensor():
    p0 = make_params(SHAPES, seed=3)
    kw = dict(lr=3e-3, betas=(0.9, 0.99), weight_decay=0.5)
    a = run(lambda ps: optlib.Lion(ps, foreach=True, **kw), clone_params(p0), 40)
    b = run(lambda ps: optlib.Lion(ps, foreach=False, **kw), clone_params(p0), 40)
    assert_close_lists(a, b, rtol=0, atol=0)


def test_defaults():
    opt = optlib.Lion([torch.zeros(2, requires_grad=True)])
    d = opt.defaults
    assert (d["lr"], d["betas"], d["weight_decay"]) == (1e-4, (0.9, 0.99), 0.0)


def test_first_step_is_the_sign_of_the_gradient():
    """m_0 = 0: the first step moves every coordinate by exactly lr against its gradient
    (after the decay), and leaves m = (1 - beta2) g."""
    p = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([0.3, -1e-9, 0.0, -4.0], dtype=torch.float64)
    opt = optlib.Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    p.grad = g.clone()
    opt.step()
    decayed = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64) * (1 - 0.1 * 0.5)
    torch.testing.assert_close(p.detach(), decayed - 0.1 * torch.tensor([1.0, -1.0, 0.0, -1.0]))
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.01 * g)


def test_every_coordinate_moves_by_lr():
    """Without decay every coordinate of every step moves by exactly lr (or 0)."""
    params = make_params(SHAPES, seed=5)
    opt = optlib.Lion(params, lr=0.01, betas=(0.9, 0.99))
    for _ in range(10):
        before = [p.detach().clone() for p in params]
        opt.zero_grad()
        quartic_loss(params).backward()
        opt.step()
        for b, p in zip(before, params):
            moved = (p.detach() - b).abs()
            assert torch.allclose(moved, torch.full_like(moved, 0.01), rtol=0, atol=1e-15)


def test_maximize_is_minimizing_the_negative():
    p0 = make_params(SHAPES, seed=4)
    up = run(
        lambda ps: optlib.Lion(ps, lr=1e-2, weight_decay=0.1, maximize=True),
        clone_params(p0),
        20,
        lambda ps: -quartic_loss(ps),
    )
    down = run(lambda ps: optlib.Lion(ps, lr=1e-2, weight_decay=0.1), clone_params(p0), 20)
    assert_close_lists(up, down, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-1e-4), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(betas=(1.0, 0.99)), "beta1"),
        (dict(betas=(0.9, -0.1)), "beta2"),
        (dict(betas=(0.9,)), "betas"),
        (dict(weight_decay=-0.1), "weight_decay"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.Lion([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("foreach", [False, True])
def test_resume_is_bit_identical(foreach):
    assert_resume_bit_identical(
        lambda ps: optlib.Lion(ps, lr=1e-2, weight_decay=0.1, foreach=foreach)
    )


@pytest.mark.parametrize("zero_params", [False, True])
def test_zero_gradient_gives_no_nan(zero_params):
    params = assert_zero_gradient_is_finite(
        lambda ps: optlib.Lion(ps, lr=1e-2), zero_params=zero_params
    )
    if not zero_params:  # sign(0) = 0 and no decay: nothing moves
        for p, p0 in zip(params, make_params(SHAPES, seed=1)):
            assert torch.equal(p.detach(), p0.detach())


def test_trains_digits_mlp():
    before, after = digits_losses(lambda model: optlib.Lion(model.parameters(), lr=3e-3))
    assert after < 0.5 * before, (before, after)
