"""optlib.Adagrad against torch.optim.Adagrad: every configuration, float64, to rounding."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib.optim.adagrad import adagrad_update

from . import _elementwise as E
from ._parity import clone_params, make_params


@settings(max_examples=20, deadline=None)
@given(
    lr=st.floats(1e-3, 0.5),
    lr_decay=st.sampled_from([0.0, 0.05]),
    weight_decay=st.sampled_from([0.0, 0.1]),
    initial_accumulator_value=st.sampled_from([0.0, 0.3]),
    eps=st.sampled_from([1e-10, 1e-3]),
    maximize=st.booleans(),
    foreach=st.booleans(),
    shapes=st.sampled_from(E.SHAPE_SETS),
    group_kw=st.sampled_from([None, dict(lr=0.2, lr_decay=0.1, weight_decay=0.05)]),
    seed=st.integers(0, 2**16),
)
def test_matches_torch(
    lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize, foreach, shapes,
    group_kw, seed,
):  # fmt: skip
    kw = dict(
        lr=lr,
        lr_decay=lr_decay,
        weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator_value,
        eps=eps,
        maximize=maximize,
    )
    E.assert_matches_torch(
        optlib.Adagrad, torch.optim.Adagrad, kw, shapes=shapes, seed=seed, foreach=foreach,
        group_kw=group_kw,
    )  # fmt: skip


@settings(max_examples=10, deadline=None)
@given(
    lr_decay=st.sampled_from([0.0, 0.05]),
    weight_decay=st.sampled_from([0.0, 0.1]),
    maximize=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_foreach_agrees_with_single_tensor(lr_decay, weight_decay, maximize, seed):
    kw = dict(lr=0.1, lr_decay=lr_decay, weight_decay=weight_decay, maximize=maximize)
    E.assert_foreach_agrees(optlib.Adagrad, kw, seed=seed)


def test_update_is_the_formula():
    """Two steps by hand: G accumulates g^2 and the step is lr_t * g / (sqrt(G) + eps)."""
    theta = torch.tensor([1.0, 2.0], dtype=torch.float64)
    G = torch.full((2,), 0.5, dtype=torch.float64)
    g1, g2 = torch.tensor([3.0, -1.0]).double(), torch.tensor([4.0, 0.0]).double()
    hyper = dict(lr=0.1, lr_decay=0.5, eps=0.0)
    adagrad_update(theta, g1, G, step=1, **hyper)
    adagrad_update(theta, g2, G, step=2, **hyper)
    G_expected = torch.tensor([0.5 + 9 + 16, 0.5 + 1]).double()
    torch.testing.assert_close(G, G_expected)
    step1 = 0.1 * g1 / torch.tensor([9.5, 1.5]).double().sqrt()
    step2 = 0.1 / 1.5 * g2 / G_expected.sqrt()
    torch.testing.assert_close(theta, torch.tensor([1.0, 2.0]).double() - step1 - step2)


def test_accumulator_freezes_the_step():
    """AdaGrad's step shrinks like 1/sqrt(t) under a constant gradient: it never forgets."""
    theta, G, g = torch.zeros(1).double(), torch.zeros(1).double(), torch.ones(1).double()
    moves = []
    for t in range(1, 101):
        before = theta.clone()
        adagrad_update(theta, g, G, step=t, lr=1.0, eps=0.0)
        moves.append((before - theta).item())
    assert moves[99] == pytest.approx(1 / 100**0.5)


def test_uneven_step_counts():
    E.assert_uneven_steps_match(optlib.Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.1))


def test_state_dict_interop_with_torch():
    kw = dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01)
    E.assert_same_fresh_state(optlib.Adagrad, torch.optim.Adagrad, kw)
    E.assert_state_dict_interop(optlib.Adagrad, torch.optim.Adagrad, kw)


def test_state_exists_from_construction_like_torch():
    ps = make_params(E.SHAPES)
    ours = optlib.Adagrad(ps, initial_accumulator_value=0.25).state_dict()["state"]
    ref = torch.optim.Adagrad(clone_params(ps), initial_accumulator_value=0.25).state_dict()
    assert ours.keys() == ref["state"].keys()
    for i, s in ref["state"].items():
        torch.testing.assert_close(ours[i]["sum"], s["sum"])
        assert ours[i]["step"].dtype == s["step"].dtype


@pytest.mark.parametrize("foreach", [False, True])
def test_resume_is_bit_identical(foreach):
    E.assert_resume_bit_identical(optlib.Adagrad, dict(lr=0.1, lr_decay=0.01, foreach=foreach))


@pytest.mark.parametrize(
    "dtype, rtol, atol", [(torch.float32, 1e-5, 1e-6), (torch.bfloat16, 2e-2, 2e-2)]
)
def test_low_precision(dtype, rtol, atol):
    kw = dict(lr=0.1)
    E.assert_low_precision_close(
        optlib.Adagrad, torch.optim.Adagrad, kw, dtype, rtol=rtol, atol=atol
    )


def test_complex_parameters():
    kw = dict(lr=0.1, initial_accumulator_value=0.2)
    E.assert_complex_matches(optlib.Adagrad, torch.optim.Adagrad, kw)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(lr_decay=-0.1), "lr_decay"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
        (dict(eps=-1e-10), "eps"),
        (dict(differentiable=True), "differentiable"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.Adagrad([torch.zeros(2, requires_grad=True)], **kwargs)


def test_signature_matches_torch():
    E.assert_signature_matches(optlib.Adagrad, torch.optim.Adagrad)
