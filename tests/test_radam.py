"""optlib.RAdam against torch.optim.RAdam: every configuration, float64, to rounding, on both
sides of the rectification threshold."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib.optim.radam import radam_rectification, radam_update

from . import _elementwise as E

betas = st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.5, 0.9, 0.99, 0.999]))


def test_threshold_falls_inside_the_tested_steps():
    """rho_t <= 5 for t <= 5 with the usual beta2 (momentum steps), > 5 afterwards; with
    beta2 = 0.5 (rho_inf = 3) it never rectifies. The parity runs take 15 steps."""
    for beta2 in (0.9, 0.99, 0.999):
        regimes = [radam_rectification(beta2, t) is None for t in range(1, 16)]
        assert regimes == [True] * 5 + [False] * 10
    assert all(radam_rectification(0.5, t) is None for t in range(1, 100))
    assert radam_rectification(0.999, 10**6) == pytest.approx(1.0)


@settings(max_examples=20, deadline=None)
@given(
    lr=st.floats(1e-4, 0.05),
    betas=betas,
    eps=st.sampled_from([1e-8, 1e-3]),
    weight_decay=st.sampled_from([0.0, 0.1]),
    decoupled_weight_decay=st.booleans(),
    maximize=st.booleans(),
    foreach=st.booleans(),
    shapes=st.sampled_from(E.SHAPE_SETS),
    group_kw=st.sampled_from([None, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.2)]),
    seed=st.integers(0, 2**16),
)
def test_matches_torch(
    lr, betas, eps, weight_decay, decoupled_weight_decay, maximize, foreach, shapes, group_kw,
    seed,
):  # fmt: skip
    kw = dict(
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )
    E.assert_matches_torch(
        optlib.RAdam, torch.optim.RAdam, kw, shapes=shapes, seed=seed, foreach=foreach,
        group_kw=group_kw,
    )  # fmt: skip


@settings(max_examples=10, deadline=None)
@given(
    betas=betas,
    weight_decay=st.sampled_from([0.0, 0.1]),
    decoupled=st.booleans(),
    maximize=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_foreach_agrees_with_single_tensor(betas, weight_decay, decoupled, maximize, seed):
    kw = dict(
        lr=0.01,
        betas=betas,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled,
        maximize=maximize,
    )
    E.assert_foreach_agrees(optlib.RAdam, kw, seed=seed)


def test_update_is_the_formula_on_both_sides_of_the_threshold():
    b1, b2, lr, eps = 0.9, 0.999, 0.01, 1e-8
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(4, generator=g, dtype=torch.float64)
    m, v = torch.zeros(4).double(), torch.zeros(4).double()
    expected, m_, v_ = theta.clone(), m.clone(), v.clone()
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, 11):
        grad = torch.randn(4, generator=g, dtype=torch.float64)
        m_ = b1 * m_ + (1 - b1) * grad
        v_ = b2 * v_ + (1 - b2) * grad * grad
        m_hat = m_ / (1 - b1**t)
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t > 5:
            r = (
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            ) ** 0.5
            expected = expected - lr * m_hat * r * (1 - b2**t) ** 0.5 / (v_.sqrt() + eps)
        else:
            expected = expected - lr * m_hat
        radam_update(theta, grad, m, v, step=t, lr=lr, beta1=b1, beta2=b2, eps=eps)
        torch.testing.assert_close(theta, expected, rtol=1e-14, atol=0)


def test_uneven_step_counts_straddle_the_threshold():
    """Per-tensor step counts differ, so one foreach call mixes rectified and momentum steps."""
    kw = dict(lr=0.01, weight_decay=0.01)
    E.assert_uneven_steps_match(optlib.RAdam, torch.optim.RAdam, kw)


@pytest.mark.parametrize(
    "kw", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)]
)
def test_state_dict_interop_with_torch(kw):
    E.assert_same_fresh_state(optlib.RAdam, torch.optim.RAdam, kw)
    E.assert_state_dict_interop(optlib.RAdam, torch.optim.RAdam, kw, before=3, after=8)


@pytest.mark.parametrize("foreach", [False, True])
def test_resume_is_bit_identical(foreach):
    E.assert_resume_bit_identical(optlib.RAdam, dict(lr=0.01, foreach=foreach), before=4, after=6)


@pytest.mark.parametrize(
    "dtype, rtol, atol", [(torch.float32, 1e-5, 1e-6), (torch.bfloat16, 2e-2, 2e-2)]
)
def test_low_precision(dtype, rtol, atol):
    kw = dict(lr=0.01)
    E.assert_low_precision_close(optlib.RAdam, torch.optim.RAdam, kw, dtype, rtol=rtol, atol=atol)


def test_complex_parameters():
    E.assert_complex_matches(optlib.RAdam, torch.optim.RAdam, dict(lr=0.05))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(betas=(1.5, 0.999)), "beta1"),
        (dict(betas=(0.9, 1.0)), "beta2"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(weight_decay=float("nan")), "weight_decay"),
        (dict(capturable=True), "capturable"),
        (dict(differentiable=True), "differentiable"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.RAdam([torch.zeros(2, requires_grad=True)], **kwargs)


def test_signature_matches_torch():
    E.assert_signature_matches(optlib.RAdam, torch.optim.RAdam, extra=("fused",))
