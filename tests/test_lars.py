"""optlib.LARS against timm's ``timm/optim/lars.py`` (huggingface/pytorch-image-models).

The rule checked (You et al., 2017, with NVIDIA apex's LARC clipping), per parameter tensor:

    if wd != 0 or always_adapt:
        r = trust_coeff * |p| / (|g| + wd * |p| + eps)      (r = 1 if |p| = 0 or |g| = 0)
        if trust_clip: r = min(r / lr, 1)
        g = r * (g + wd * p)
    b = g (first step)  or  momentum * b + (1 - dampening) * g
    d = g + momentum * b (nesterov)  or  b  (or g without momentum)
    p <- p - lr * d
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


def lars_transcribed(params, steps, *, lr, momentum, dampening, weight_decay, nesterov,
                     trust_coeff, eps, trust_clip, always_adapt):  # fmt: skip
    """The rule above, written out on plain tensors."""
    wd = weight_decay
    p = [x.detach().clone() for x in params]
    b = [None] * len(p)
    for _ in range(steps):
        q = [x.clone().requires_grad_() for x in p]
        grads = torch.autograd.grad(quartic_loss(q), q)
        for i, g in enumerate(grads):
            if wd != 0 or always_adapt:
                w_norm, g_norm = p[i].norm().item(), g.norm().item()
                if w_norm > 0 and g_norm > 0:
                    r = trust_coeff * w_norm / (g_norm + wd * w_norm + eps)
                else:
                    r = 1.0
                if trust_clip:
                    r = min(r / lr, 1.0)
                g = r * (g + wd * p[i])
            if momentum != 0:
                b[i] = g if b[i] is None else momentum * b[i] + (1 - dampening) * g
                d = g + momentum * b[i] if nesterov else b[i]
            else:
                d = g
            p[i] = p[i] - lr * d
    return p


@settings(max_examples=30, deadline=None)
@given(
    lr=st.floats(1e-3, 1.0),
    momentum=st.sampled_from([0.0, 0.9]),
    dampening=st.sampled_from([0.0, 0.1]),
    weight_decay=st.sampled_from([0.0, 1e-4, 0.1]),
    nesterov=st.booleans(),
    trust_coeff=st.sampled_from([1e-3, 0.02]),
    eps=st.sampled_from([1e-8, 0.5]),
    trust_clip=st.booleans(),
    always_adapt=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_transcription(lr, momentum, dampening, weight_decay, nesterov, trust_coeff,
                               eps, trust_clip, always_adapt, seed):  # fmt: skip
    if nesterov and (momentum == 0 or dampening != 0):
        nesterov = False
    if weight_decay == 0 and not always_adapt:
        lr *= 0.05  # plain SGD on the quartic: keep it stable
    kw = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
              nesterov=nesterov, trust_coeff=trust_coeff, eps=eps, trust_clip=trust_clip,
              always_adapt=always_adapt)  # fmt: skip
    p0 = make_params(SHAPES, seed=seed)
    ours = run(lambda ps: optlib.LARS(ps, **kw), clone_params(p0), 20)
    ref = lars_transcribed(p0, 20, **kw)
    assert_close_lists(ours, ref)


def test_defaults():
    d = optlib.LARS([torch.zeros(2, requires_grad=True)]).defaults
    assert (d["lr"], d["trust_coeff"], d["eps"], d["momentum"], d["weight_decay"]) == (
        1.0, 1e-3, 1e-8, 0, 0,
    )  # fmt: skip
    assert not (d["nesterov"] or d["trust_clip"] or d["always_adapt"])


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_without_adaptation_it_is_sgd(momentum, nesterov):
    """weight_decay = 0 and not always_adapt: no trust ratio, exactly torch.optim.SGD."""
    p0 = make_params(SHAPES, seed=2)
    kw = dict(lr=0.05, momentum=momentum, nesterov=nesterov)
    ours = run(lambda ps: optlib.LARS(ps, **kw), clone_params(p0), 20)
    ref = run(lambda ps: torch.optim.SGD(ps, foreach=False, **kw), clone_params(p0), 20)
    assert_close_lists(ours, ref, rtol=0, atol=0)


def test_step_size_is_set_by_the_weight_norm_not_the_gradient_scale():
    """Without momentum, decay or eps each layer moves by exactly lr * trust_coeff * |p|,
    whether its gradient is tiny or huge: the point of a layer-wise trust ratio."""
    for scale in (1e-6, 1.0, 1e6):
        params = make_params(SHAPES, seed=0)
        before = [p.detach().clone() for p in params]
        opt = optlib.LARS(params, lr=0.5, trust_coeff=0.01, eps=0.0, always_adapt=True)
        for p, g in zip(params, make_params(SHAPES, seed=9)):
            p.grad = scale * g.detach()
        opt.step()
        for b, p in zip(before, params):
            step = (p.detach() - b).norm()
            torch.testing.assert_close(step, 0.5 * 0.01 * b.norm(), rtol=1e-12, atol=0)


def test_trust_ratio_is_one_at_a_zero_weight():
    """A zero tensor (fresh bias) would get r = 0: LARS uses r = 1 there, a plain SGD step."""
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = optlib.LARS([p], lr=0.1, weight_decay=0.01)
    p.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), -0.1 * torch.tensor([1.0, -2.0, 0.5]).double())


def test_trust_clip_caps_the_rate_at_lr():
    """LARC: the effective rate is min(r, lr); with a large trust ratio it is plain SGD + L2."""
    p0 = torch.tensor([3.0, -4.0], dtype=torch.float64)
    g = torch.tensor([1e-3, 1e-3], dtype=torch.float64)
    results = {}
    for clip in (False, True):
        p = p0.clone().requires_grad_()
        opt = optlib.LARS([p], lr=0.1, weight_decay=0.01, trust_coeff=0.5, trust_clip=clip)
        p.grad = g.clone()
        opt.step()
        results[clip] = p.detach()
    r = 0.5 * 5.0 / (g.norm().item() + 0.01 * 5.0 + 1e-8)  # about 50: far above 1
    torch.testing.assert_close(results[False], p0 - 0.1 * r * (g + 0.01 * p0))
    torch.testing.assert_close(results[True], p0 - 0.1 * (g + 0.01 * p0))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-1.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(momentum=-0.9), "momentum"),
        (dict(dampening=-0.1), "dampening"),
        (dict(weight_decay=-1e-4), "weight_decay"),
        (dict(trust_coeff=0.0), "trust_coeff"),
        (dict(trust_coeff=-1e-3), "trust_coeff"),
        (dict(eps=-1e-8), "eps"),
        (dict(nesterov=True), "nesterov"),
        (dict(momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.LARS([torch.zeros(2, requires_grad=True)], **kwargs)


def test_resume_is_bit_identical():
    assert_resume_bit_identical(
        lambda ps: optlib.LARS(ps, lr=0.5, momentum=0.9, weight_decay=1e-3, trust_coeff=0.02)
    )


@pytest.mark.parametrize("zero_params", [False, True])
@pytest.mark.parametrize("eps", [1e-8, 0.0])
def test_zero_gradient_gives_no_nan(zero_params, eps):
    assert_zero_gradient_is_finite(
        lambda ps: optlib.LARS(ps, momentum=0.9, weight_decay=1e-2, eps=eps, trust_clip=True),
        zero_params=zero_params,
    )


def test_trains_digits_mlp():
    before, after = digits_losses(
        lambda model: optlib.LARS(
            model.parameters(), lr=1.0, momentum=0.9, weight_decay=1e-4, trust_coeff=0.01
        )
    )
    assert after < 0.1 * before, (before, after)
