"""optlib.NAdam against torch.optim.NAdam: every configuration, float64, to rounding."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib.optim.nadam import nadam_beta1, nadam_update

from . import _elementwise as E
from ._parity import assert_close_lists, clone_params, make_params

betas = st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.9, 0.999]))


@settings(max_examples=20, deadline=None)
@given(
    lr=st.floats(1e-4, 0.05),
    betas=betas,
    eps=st.sampled_from([1e-8, 1e-3]),
    weight_decay=st.sampled_from([0.0, 0.1]),
    momentum_decay=st.sampled_from([0.0, 4e-3, 0.5]),
    decoupled_weight_decay=st.booleans(),
    maximize=st.booleans(),
    foreach=st.booleans(),
    shapes=st.sampled_from(E.SHAPE_SETS),
    group_kw=st.sampled_from([None, dict(lr=0.01, momentum_decay=0.1, weight_decay=0.2)]),
    seed=st.integers(0, 2**16),
)
def test_matches_torch(
    lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay, maximize, foreach,
    shapes, group_kw, seed,
):  # fmt: skip
    kw = dict(
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        momentum_decay=momentum_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )
    E.assert_matches_torch(
        optlib.NAdam, torch.optim.NAdam, kw, shapes=shapes, seed=seed, foreach=foreach,
        group_kw=group_kw,
    )  # fmt: skip


@settings(max_examples=10, deadline=None)
@given(
    weight_decay=st.sampled_from([0.0, 0.1]),
    decoupled=st.booleans(),
    maximize=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_foreach_agrees_with_single_tensor(weight_decay, decoupled, maximize, seed):
    kw = dict(
        lr=0.01, weight_decay=weight_decay, decoupled_weight_decay=decoupled, maximize=maximize
    )
    E.assert_foreach_agrees(optlib.NAdam, kw, seed=seed)


def test_update_is_the_formula():
    """Two steps by hand, with Dozat's momentum schedule and the product of its terms."""
    b1, b2, psi, lr, eps = 0.9, 0.99, 0.004, 0.01, 1e-8
    theta = torch.tensor([1.0, -2.0]).double()
    m, v = torch.zeros(2).double(), torch.zeros(2).double()
    prod = torch.tensor(1.0, dtype=torch.float64)
    expected, m_, v_, prod_ = theta.clone(), m.clone(), v.clone(), 1.0
    for t, g in enumerate([torch.tensor([0.5, 1.0]).double(), torch.tensor([-1.0, 2.0])], 1):
        g = g.double()
        mu, mu_next = b1 * (1 - 0.5 * 0.96 ** (t * psi)), b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        assert nadam_beta1(b1, psi, t) == mu
        prod_ *= mu
        m_ = b1 * m_ + (1 - b1) * g
        v_ = b2 * v_ + (1 - b2) * g * g
        d = (v_ / (1 - b2**t)).sqrt() + eps
        expected = expected - lr * (1 - mu) / (1 - prod_) * g / d
        expected = expected - lr * mu_next / (1 - prod_ * mu_next) * m_ / d
        nadam_update(theta, g, m, v, prod, step=t, lr=lr, beta1=b1, beta2=b2, eps=eps,
                     momentum_decay=psi)  # fmt: skip
    torch.testing.assert_close(theta, expected, rtol=1e-14, atol=0)
    assert prod.item() == pytest.approx(prod_, rel=1e-15)


def test_uneven_step_counts():
    kw = dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True)
    E.assert_uneven_steps_match(optlib.NAdam, torch.optim.NAdam, kw)


@pytest.mark.parametrize("kw", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.1)])
def test_state_dict_interop_with_torch(kw):
    E.assert_same_fresh_state(optlib.NAdam, torch.optim.NAdam, kw)
    # torch's load_state_dict casts the float32 ``mu_product`` to a float64 parameter's dtype
    # (optlib keeps it: see test_resume_is_bit_identical), so compare with a float64 product.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        E.assert_state_dict_interop(optlib.NAdam, torch.optim.NAdam, kw)
    finally:
        torch.set_default_dtype(default)


def test_torch_state_resumes_exactly_like_torch_without_interruption():
    """A float32 ``mu_product`` saved by torch stays float32 in optlib (torch would upcast it)."""
    p0 = make_params(E.SHAPES, seed=1)
    straight = clone_params(p0)
    E.take_steps(torch.optim.NAdam(straight, lr=0.01), straight, 9)
    resumed = clone_params(p0)
    ref = torch.optim.NAdam(resumed, lr=0.01)
    E.take_steps(ref, resumed, 4)
    ours = optlib.NAdam(resumed, lr=0.01)
    ours.load_state_dict(ref.state_dict())
    assert ours.state[resumed[0]]["mu_product"].dtype == torch.float32
    E.take_steps(ours, resumed, 5)
    assert_close_lists(resumed, straight)


@pytest.mark.parametrize("foreach", [False, True])
def test_resume_is_bit_identical(foreach):
    E.assert_resume_bit_identical(optlib.NAdam, dict(lr=0.01, foreach=foreach))


@pytest.mark.parametrize(
    "dtype, rtol, atol", [(torch.float32, 1e-5, 1e-6), (torch.bfloat16, 2e-2, 2e-2)]
)
def test_low_precision(dtype, rtol, atol):
    kw = dict(lr=0.01)
    E.assert_low_precision_close(optlib.NAdam, torch.optim.NAdam, kw, dtype, rtol=rtol, atol=atol)


def test_complex_parameters():
    E.assert_complex_matches(optlib.NAdam, torch.optim.NAdam, dict(lr=0.05))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(betas=(1.0, 0.999)), "beta1"),
        (dict(betas=(0.9, -0.1)), "beta2"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(momentum_decay=-4e-3), "momentum_decay"),
        (dict(momentum_decay=float("nan")), "momentum_decay"),
        (dict(capturable=True), "capturable"),
        (dict(differentiable=True), "differentiable"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.NAdam([torch.zeros(2, requires_grad=True)], **kwargs)


def test_signature_matches_torch():
    E.assert_signature_matches(optlib.NAdam, torch.optim.NAdam, extra=("fused",))
