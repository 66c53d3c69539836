"""optlib.LAMB against timm's ``timm/optim/lamb.py`` (huggingface/pytorch-image-models).

The rule checked (You et al., 2020, NVLAMB variant), at step t (counted per param group):

    s = max(|all gradients of all groups| / max_grad_norm, 1);  g <- g / s   (global clip)
    m <- beta1 * m + (1 - beta1) * g       ((1 - beta1) -> 1 without grad_averaging)
    v <- beta2 * v + (1 - beta2) * g * g
    u  = (m / c1) / (sqrt(v / c2) + eps)   (c_i = 1 - beta_i^t; 1 without bias_correction)
    u <- u + wd * p
    u <- (|p| / |u|) * u                   (if wd != 0 or always_adapt; ratio 1 if a norm is 0;
                                            capped at 1 with trust_clip)
    p <- p - lr * u
"""

import math

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


def lamb_transcribed(params, steps, *, lr, betas, eps, weight_decay, grad_averaging,
                     max_grad_norm, trust_clip, always_adapt, bias_correction):  # fmt: skip
    """The rule above, written out on plain tensors (one param group)."""
    beta1, beta2 = betas
    wd = weight_decay
    p = [x.detach().clone() for x in params]
    m = [torch.zeros_like(x) for x in p]
    v = [torch.zeros_like(x) for x in p]
    for t in range(1, steps + 1):
        q = [x.clone().requires_grad_() for x in p]
        grads = list(torch.autograd.grad(quartic_loss(q), q))
        if max_grad_norm is not None:
            total = math.sqrt(sum(g.norm().item() ** 2 for g in grads))
            s = max(total / max_grad_norm, 1.0)
            grads = [g / s for g in grads]
        c1 = 1 - beta1**t if bias_correction else 1.0
        c2 = 1 - beta2**t if bias_correction else 1.0
        for i, g in enumerate(grads):
            m[i] = beta1 * m[i] + ((1 - beta1) if grad_averaging else 1.0) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            u = (m[i] / c1) / (torch.sqrt(v[i] / c2) + eps)
            u = u + wd * p[i]
            if wd != 0 or always_adapt:
                w_norm, u_norm = p[i].norm().item(), u.norm().item()
                r = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
                if trust_clip:
                    r = min(r, 1.0)
                u = r * u
            p[i] = p[i] - lr * u
    return p


@settings(max_examples=30, deadline=None)
@given(
    lr=st.floats(1e-4, 0.05),
    betas=st.sampled_from([(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)]),
    eps=st.sampled_from([1e-6, 0.1]),
    weight_decay=st.sampled_from([0.0, 0.01, 0.5]),
    grad_averaging=st.booleans(),
    max_grad_norm=st.sampled_from([None, 1.0, 1e3]),
    trust_clip=st.booleans(),
    always_adapt=st.booleans(),
    bias_correction=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_transcription(lr, betas, eps, weight_decay, grad_averaging, max_grad_norm,
                               trust_clip, always_adapt, bias_correction, seed):  # fmt: skip
    kw = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
              grad_averaging=grad_averaging, max_grad_norm=max_grad_norm, trust_clip=trust_clip,
              always_adapt=always_adapt, bias_correction=bias_correction)  # fmt: skip
    p0 = make_params(SHAPES, seed=seed)
    ours = run(lambda ps: optlib.LAMB(ps, **kw), clone_params(p0), 20)
    ref = lamb_transcribed(p0, 20, **kw)
    assert_close_lists(ours, ref)


def test_defaults():
    d = optlib.LAMB([torch.zeros(2, requires_grad=True)]).defaults
    assert (d["lr"], d["betas"], d["eps"], d["weight_decay"], d["max_grad_norm"]) == (
        1e-3, (0.9, 0.999), 1e-6, 0.01, 1.0,
    )  # fmt: skip
    assert d["bias_correction"] and d["grad_averaging"]
    assert not (d["trust_clip"] or d["always_adapt"])


def test_clip_is_global_across_param_groups():
    """One divisor for every gradient of every group: two groups give exactly the result of
    one (clipping group by group would not, since the clip is active here)."""
    p0 = make_params(SHAPES, seed=6)
    q = clone_params(p0)
    quartic_loss(q[:1]).backward()
    assert q[0].grad.norm() > 0.5, "the clip must be active in the first group alone"
    kw = dict(lr=0.01, max_grad_norm=0.5)
    one = run(lambda ps: optlib.LAMB(ps, **kw), clone_params(p0), 10)
    two = run(
        lambda ps: optlib.LAMB([{"params": ps[:1]}, {"params": ps[1:]}], **kw),
        clone_params(p0),
        10,
    )
    assert_close_lists(two, one, rtol=0, atol=0)
    ref = lamb_transcribed(p0, 10, **kw, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                           grad_averaging=True, trust_clip=False, always_adapt=False,
                           bias_correction=True)  # fmt: skip
    assert_close_lists(one, ref)


def test_each_adapted_layer_moves_by_lr_times_its_norm():
    """With weight decay on, the trust ratio makes |delta p| = lr |p| for every tensor."""
    params = make_params(SHAPES, seed=1)
    opt = optlib.LAMB(params, lr=0.02)
    for _ in range(5):
        before = [p.detach().clone() for p in params]
        opt.zero_grad()
        quartic_loss(params).backward()
        opt.step()
        for b, p in zip(before, params):
            torch.testing.assert_close((p.detach() - b).norm(), 0.02 * b.norm(), rtol=1e-12, atol=0)


def test_first_step_is_nearly_the_sign_of_the_gradient():
    """Bias-corrected first step: m/c1 = g, sqrt(v/c2) = |g|, so u = g / (|g| + eps)."""
    p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = optlib.LAMB([p], lr=0.1, weight_decay=0.0, max_grad_norm=None)
    p.grad = torch.tensor([0.3, -4.0, 1e-3], dtype=torch.float64)
    opt.step()
    u = p.grad / (p.grad.abs() + 1e-6)
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, -2.0, 0.5]).double() - 0.1 * u)
    assert opt.param_groups[0]["step"] == 1


def test_group_step_counts_calls_even_without_gradients():
    """As in timm, the step counter (and so the bias correction) belongs to the group."""
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    opt = optlib.LAMB([{"params": [a]}, {"params": [b]}])
    for _ in range(3):
        a.grad = torch.ones(2)
        opt.step()
    assert [g["step"] for g in opt.param_groups] == [3, 3]
    assert b not in opt.state


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-1e-3), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(betas=(1.0, 0.999)), "beta1"),
        (dict(betas=(0.9, -0.5)), "beta2"),
        (dict(betas=(0.9, 0.99, 0.9)), "betas"),
        (dict(eps=0.0), "eps"),
        (dict(weight_decay=-0.01), "weight_decay"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(max_grad_norm=-1.0), "max_grad_norm"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.LAMB([torch.zeros(2, requires_grad=True)], **kwargs)


def test_resume_is_bit_identical():
    def two_groups(ps):
        return optlib.LAMB([{"params": ps[:2]}, {"params": ps[2:], "weight_decay": 0.0}], lr=0.01)

    assert_resume_bit_identical(two_groups)


@pytest.mark.parametrize("zero_params", [False, True])
@pytest.mark.parametrize("always_adapt", [False, True])
def test_zero_gradient_gives_no_nan(zero_params, always_adapt):
    assert_zero_gradient_is_finite(
        lambda ps: optlib.LAMB(ps, lr=0.01, always_adapt=always_adapt, trust_clip=True),
        zero_params=zero_params,
    )


def test_trains_digits_mlp():
    before, after = digits_losses(lambda model: optlib.LAMB(model.parameters(), lr=0.03))
    assert after < 0.5 * before, (before, after)
