"""optlib.Adafactor against torch.optim.Adafactor: every configuration, float64, to rounding."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib

from ._parity import assert_close_lists, clone_params, make_params, quartic_loss, run

SHAPE_SETS = [
    [(5,)],
    [(4, 6)],
    [(3, 4, 5)],
    [(2, 3, 2, 4)],
    [(), (7,), (6, 1), (1, 5), (3, 2, 4)],
]


@settings(max_examples=40, deadline=None)
@given(
    lr=st.floats(1e-3, 0.5),
    beta2_decay=st.sampled_from([-0.8, -0.5, -1.0, 0.0]),
    eps1=st.sampled_from([None, 1e-30, 1e-3]),
    eps2=st.sampled_from([1e-3, 0.0, 0.5]),
    d=st.sampled_from([1.0, 1.5, 100.0]),
    weight_decay=st.sampled_from([0.0, 0.1]),
    maximize=st.booleans(),
    shapes=st.sampled_from(SHAPE_SETS),
    seed=st.integers(0, 2**16),
)
def test_matches_torch(lr, beta2_decay, eps1, eps2, d, weight_decay, maximize, shapes, seed):
    kw = dict(
        lr=lr,
        beta2_decay=beta2_decay,
        eps=(eps1, eps2),
        d=d,
        weight_decay=weight_decay,
        maximize=maximize,
    )
    p0 = make_params(shapes, seed=seed)
    loss_fn = (lambda ps: -quartic_loss(ps)) if maximize else quartic_loss
    ours = run(lambda ps: optlib.Adafactor(ps, **kw), clone_params(p0), 20, loss_fn)
    ref = run(
        lambda ps: torch.optim.Adafactor(ps, foreach=False, **kw), clone_params(p0), 20, loss_fn
    )
    assert_close_lists(ours, ref)


def test_close_to_torch_foreach_path():
    """torch's foreach path rounds differently from its for-loop; optlib runs the for-loop
    update whatever ``foreach`` says, and stays within rounding of torch's foreach results."""
    p0 = make_params(SHAPE_SETS[-1], seed=5)
    kw = dict(lr=0.05, weight_decay=0.01)
    ours = run(lambda ps: optlib.Adafactor(ps, foreach=True, **kw), clone_params(p0), 20)
    ref = run(lambda ps: torch.optim.Adafactor(ps, foreach=True, **kw), clone_params(p0), 20)
    # 20 steps whose foreach kernels round the row/column means in another order: a few ulps
    # per step (measured 0.7 ulp of the scale); 1e-10 leaves room for the RMS normalisation's
    # sensitivity to those means where a row is small
    assert_close_lists(ours, ref, rtol=1e-10, atol=1e-12)


def _stepped(opt_factory, params, steps=3):
    opt = opt_factory(params)
    for _ in range(steps):
        opt.zero_grad()
        quartic_loss(params).backward()
        opt.step()
    return opt


def test_state_keys_shapes_and_state_dict_match_torch():
    shapes = [(4,), (3, 5), (2, 3, 4)]
    p0 = make_params(shapes, seed=1)
    kw = dict(lr=0.05, weight_decay=0.01)
    ours = _stepped(lambda ps: optlib.Adafactor(ps, **kw), clone_params(p0))
    ref = _stepped(lambda ps: torch.optim.Adafactor(ps, **kw), clone_params(p0))
    for i in range(len(shapes)):
        a, b = ours.state_dict()["state"][i], ref.state_dict()["state"][i]
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
            torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=0)
    assert set(ours.state_dict()["state"][1]) == {"step", "row_var", "col_var"}
    assert set(ours.state_dict()["state"][0]) == {"step", "variance"}


def test_resume_from_torch_state_dict_is_identical():
    """A run interrupted after 4 steps and resumed (from torch's own state dict) matches."""
    p0 = make_params([(6,), (4, 3)], seed=2)
    whole = run(lambda ps: optlib.Adafactor(ps, lr=0.1), clone_params(p0), 8)
    params = clone_params(p0)
    first = _stepped(lambda ps: torch.optim.Adafactor(ps, lr=0.1), params, 4)
    resumed = optlib.Adafactor(params, lr=0.1)
    resumed.load_state_dict(first.state_dict())
    for _ in range(4):
        resumed.zero_grad()
        quartic_loss(params).backward()
        resumed.step()
    assert_close_lists([p.detach() for p in params], whole, rtol=0, atol=0)


def test_first_step_of_a_matrix_by_hand():
    """On step 1 (beta2_hat = 0) the factored estimate is R C^T / mean(R) exactly."""
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    theta = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    theta.grad = g.clone()
    optlib.Adafactor([theta], lr=0.5, eps=(0.0, 1e-3)).step()
    R = (g * g).mean(dim=1, keepdim=True)
    C = (g * g).mean(dim=0, keepdim=True)
    U = g / (R @ C / R.mean()).sqrt()
    U = U / max(1.0, U.pow(2).mean().sqrt().item())
    torch.testing.assert_close(theta.detach(), -1e-3 * 0.5 * U, rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_matches_torch(dtype):
    p0 = make_params([(8,), (5, 7)], dtype=dtype, seed=4)
    ours = run(lambda ps: optlib.Adafactor(ps, lr=0.1), clone_params(p0), 10)
    ref = run(lambda ps: torch.optim.Adafactor(ps, lr=0.1), clone_params(p0), 10)
    assert all(p.dtype == dtype for p in ours)
    # both compute in float32 and round to the parameter dtype once (measured: identical):
    # 1e-6 allows float32 reorderings of ~8 ulps, and is below bfloat16's ulp (8e-3), so
    # bfloat16 results must agree exactly
    assert_close_lists(ours, ref, rtol=1e-6, atol=1e-6)


def test_complex_parameters_are_rejected():
    z = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    z.grad = torch.ones_like(z)
    with pytest.raises(RuntimeError, match="complex"):
        optlib.Adafactor([z]).step()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(beta2_decay=0.5), "beta2_decay"),
        (dict(eps=(-1e-3, 1e-3)), "eps1"),
        (dict(eps=(None, -1.0)), "eps2"),
        (dict(eps=1e-3), "eps"),
        (dict(d=0.5), "d"),
        (dict(weight_decay=-1.0), "weight_decay"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=rf"Invalid {name}\b"):
        optlib.Adafactor([torch.zeros(2, requires_grad=True)], **kwargs)
