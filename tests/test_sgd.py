"""optlib.SGD against torch.optim.SGD: every configuration, float64, to rounding."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib

from ._parity import assert_close_lists, clone_params, make_params, quartic_loss, run

SHAPES = [(3,), (4, 5), (2, 3, 2)]


@settings(max_examples=40, deadline=None)
@given(
    lr=st.floats(1e-4, 0.1),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    dampening=st.sampled_from([0.0, 0.1]),
    weight_decay=st.sampled_from([0.0, 1e-2]),
    nesterov=st.booleans(),
    maximize=st.booleans(),
    foreach=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_torch(lr, momentum, dampening, weight_decay, nesterov, maximize, foreach, seed):
    if nesterov and (momentum == 0 or dampening != 0):
        nesterov = False
    kw = dict(
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        maximize=maximize,
    )
    p0 = make_params(SHAPES, seed=seed)
    # maximize=True ascends, so give it a loss with a maximum.
    loss_fn = (lambda ps: -quartic_loss(ps)) if maximize else quartic_loss
    ours = run(lambda ps: optlib.SGD(ps, foreach=foreach, **kw), clone_params(p0), 25, loss_fn)
    ref = run(lambda ps: torch.optim.SGD(ps, foreach=False, **kw), clone_params(p0), 25, loss_fn)
    assert_close_lists(ours, ref)


def test_foreach_agrees_with_single_tensor():
    p0 = make_params(SHAPES, seed=3)
    kw = dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3)
    a = run(lambda ps: optlib.SGD(ps, foreach=True, **kw), clone_params(p0), 30)
    b = run(lambda ps: optlib.SGD(ps, foreach=False, **kw), clone_params(p0), 30)
    # the same arithmetic through foreach kernels: an ulp at most per step over 30 steps, 45
    # ulps allowed, relative to each tensor's scale (an entry near 0 is known to ulps of it)
    assert_close_lists(a, b, rtol=1e-14)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(momentum=-0.5), "momentum"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(dampening=-1.0), "dampening"),
        (dict(nesterov=True), "nesterov"),
        (dict(momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.SGD([torch.zeros(2, requires_grad=True)], **kwargs)
