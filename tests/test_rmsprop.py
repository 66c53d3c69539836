"""optlib.RMSprop against torch.optim.RMSprop: every configuration, float64, to rounding."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib.optim.rmsprop import rmsprop_update

from . import _elementwise as E


@settings(max_examples=25, deadline=None)
@given(
    lr=st.floats(1e-4, 0.05),
    alpha=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    eps=st.sampled_from([1e-8, 1e-3]),
    weight_decay=st.sampled_from([0.0, 0.1]),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    centered=st.booleans(),
    maximize=st.booleans(),
    foreach=st.booleans(),
    shapes=st.sampled_from(E.SHAPE_SETS),
    group_kw=st.sampled_from([None, dict(lr=0.02, alpha=0.5, momentum=0.3, centered=True)]),
    seed=st.integers(0, 2**16),
)
def test_matches_torch(
    lr, alpha, eps, weight_decay, momentum, centered, maximize, foreach, shapes, group_kw, seed
):
    centered = centered and alpha > 0  # alpha = 0 centred: v - g_bar^2 = 0, NaN in torch too
    kw = dict(
        lr=lr,
        alpha=alpha,
        eps=eps,
        weight_decay=weight_decay,
        momentum=momentum,
        centered=centered,
        maximize=maximize,
    )
    E.assert_matches_torch(
        optlib.RMSprop, torch.optim.RMSprop, kw, shapes=shapes, seed=seed, foreach=foreach,
        group_kw=group_kw,
    )  # fmt: skip


@settings(max_examples=12, deadline=None)
@given(
    weight_decay=st.sampled_from([0.0, 0.1]),
    momentum=st.sampled_from([0.0, 0.9]),
    centered=st.booleans(),
    maximize=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_foreach_agrees_with_single_tensor(weight_decay, momentum, centered, maximize, seed):
    kw = dict(
        lr=0.01, weight_decay=weight_decay, momentum=momentum, centered=centered, maximize=maximize
    )
    E.assert_foreach_agrees(optlib.RMSprop, kw, seed=seed)


def test_alpha_one_is_allowed_and_matches_torch():
    """alpha = 1 never updates v (a degenerate edge of the allowed range); eps keeps it finite."""
    kw = dict(lr=1e-3, alpha=1.0, eps=1.0, momentum=0.5)
    for foreach in (False, True):
        E.assert_matches_torch(optlib.RMSprop, torch.optim.RMSprop, kw, foreach=foreach)


def test_centred_update_is_the_formula():
    """One centred step with momentum by hand: v, g_bar, d = sqrt(v - g_bar^2) + eps, b, theta."""
    theta = torch.tensor([1.0, -1.0]).double()
    v, g_bar = torch.tensor([0.5, 2.0]).double(), torch.tensor([0.1, -0.3]).double()
    b = torch.tensor([0.2, 0.0]).double()
    g = torch.tensor([2.0, 1.0]).double()
    v_new = 0.9 * v + 0.1 * g**2
    g_bar_new = 0.9 * g_bar + 0.1 * g
    b_new = 0.5 * b + g / ((v_new - g_bar_new**2).sqrt() + 1e-3)
    theta_new = theta - 0.01 * b_new
    hyper = dict(lr=0.01, alpha=0.9, eps=1e-3, momentum=0.5, centered=True)
    rmsprop_update(theta, g, v, g_bar, b, **hyper)
    for got, want in [(v, v_new), (g_bar, g_bar_new), (b, b_new), (theta, theta_new)]:
        torch.testing.assert_close(got, want, rtol=1e-14, atol=0)


def test_uneven_step_counts():
    kw = dict(lr=0.01, momentum=0.9, centered=True)
    E.assert_uneven_steps_match(optlib.RMSprop, torch.optim.RMSprop, kw)


@pytest.mark.parametrize(
    "kw", [dict(lr=0.01), dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)]
)
def test_state_dict_interop_with_torch(kw):
    E.assert_same_fresh_state(optlib.RMSprop, torch.optim.RMSprop, kw)
    E.assert_state_dict_interop(optlib.RMSprop, torch.optim.RMSprop, kw)


@pytest.mark.parametrize("foreach", [False, True])
def test_resume_is_bit_identical(foreach):
    kw = dict(lr=0.01, momentum=0.9, centered=True, foreach=foreach)
    E.assert_resume_bit_identical(optlib.RMSprop, kw)


@pytest.mark.parametrize(
    "dtype, rtol, atol", [(torch.float32, 1e-5, 1e-6), (torch.bfloat16, 2e-2, 2e-2)]
)
def test_low_precision(dtype, rtol, atol):
    kw = dict(lr=0.01, momentum=0.9)
    E.assert_low_precision_close(
        optlib.RMSprop, torch.optim.RMSprop, kw, dtype, rtol=rtol, atol=atol
    )


def test_complex_parameters():
    kw = dict(lr=0.01, momentum=0.5, centered=True)
    E.assert_complex_matches(optlib.RMSprop, torch.optim.RMSprop, kw)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(alpha=-0.1), "alpha"),
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(momentum=-0.9), "momentum"),
        (dict(capturable=True), "capturable"),
        (dict(differentiable=True), "differentiable"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.RMSprop([torch.zeros(2, requires_grad=True)], **kwargs)


def test_signature_matches_torch():
    E.assert_signature_matches(optlib.RMSprop, torch.optim.RMSprop, extra=("fused",))
