"""optlib.Adam and optlib.AdamW against torch.optim: every configuration, float64, to rounding;
and bias_correction=False against a direct transcription of the formula."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib.optim.adam import adam_update

from . import _elementwise as E
from ._parity import assert_close_lists, clone_params, make_params, quartic_loss, run

betas = st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.0, 0.9, 0.999]))


@settings(max_examples=20, deadline=None)
@given(
    lr=st.floats(1e-4, 0.1),
    betas=betas,
    eps=st.sampled_from([1e-8, 1e-3, 0.0]),
    weight_decay=st.sampled_from([0.0, 0.1]),
    amsgrad=st.booleans(),
    decoupled_weight_decay=st.booleans(),
    maximize=st.booleans(),
    foreach=st.booleans(),
    shapes=st.sampled_from(E.SHAPE_SETS),
    group_kw=st.sampled_from([None, dict(lr=0.03, weight_decay=0.2, betas=(0.8, 0.99))]),
    seed=st.integers(0, 2**16),
)
def test_adam_matches_torch(
    lr, betas, eps, weight_decay, amsgrad, decoupled_weight_decay, maximize, foreach, shapes,
    group_kw, seed,
):  # fmt: skip
    kw = dict(
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )
    E.assert_matches_torch(
        optlib.Adam, torch.optim.Adam, kw, shapes=shapes, seed=seed, foreach=foreach,
        group_kw=group_kw,
    )  # fmt: skip


@settings(max_examples=12, deadline=None)
@given(
    lr=st.floats(1e-4, 0.1),
    betas=betas,
    weight_decay=st.sampled_from([0.0, 1e-2, 0.3]),
    amsgrad=st.booleans(),
    maximize=st.booleans(),
    foreach=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_adamw_matches_torch(lr, betas, weight_decay, amsgrad, maximize, foreach, seed):
    kw = dict(lr=lr, betas=betas, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
    E.assert_matches_torch(optlib.AdamW, torch.optim.AdamW, kw, seed=seed, foreach=foreach)


def test_adamw_defaults_match_torch():
    E.assert_matches_torch(optlib.AdamW, torch.optim.AdamW, {})
    assert optlib.AdamW([torch.zeros(1)]).defaults["weight_decay"] == 1e-2
    assert isinstance(optlib.AdamW([torch.zeros(1)]), optlib.Adam)


@settings(max_examples=12, deadline=None)
@given(
    betas=betas,
    weight_decay=st.sampled_from([0.0, 0.1]),
    amsgrad=st.booleans(),
    decoupled=st.booleans(),
    bias_correction=st.booleans(),
    maximize=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_foreach_agrees_with_single_tensor(
    betas, weight_decay, amsgrad, decoupled, bias_correction, maximize, seed
):
    kw = dict(
        lr=0.02,
        betas=betas,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        decoupled_weight_decay=decoupled,
        bias_correction=bias_correction,
        maximize=maximize,
    )
    E.assert_foreach_agrees(optlib.Adam, kw, seed=seed)


def transcribed_adam_without_bias_correction(params, steps, *, lr, beta1, beta2, eps, wd, adamw):
    """The formula, line by line: m, v raw; theta -= lr * m / (sqrt(v) + eps)."""
    ms = [torch.zeros_like(p) for p in params]
    vs = [torch.zeros_like(p) for p in params]
    for _ in range(steps):
        for p in params:
            p.grad = None
        quartic_loss(params).backward()
        with torch.no_grad():
            for p, m, v in zip(params, ms, vs):
                g = p.grad if adamw else p.grad + wd * p
                if adamw:
                    p -= lr * wd * p
                m.copy_(beta1 * m + (1 - beta1) * g)
                v.copy_(beta2 * v + (1 - beta2) * g * g)
                p -= lr * m / (torch.sqrt(v) + eps)
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("cls", [optlib.Adam, optlib.AdamW])
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_bias_correction_false_is_the_raw_formula(cls, foreach, wd):
    p0 = make_params(E.SHAPES, seed=5)
    kw = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=wd)
    got = run(
        lambda ps: cls(ps, bias_correction=False, foreach=foreach, **kw), clone_params(p0), 20
    )
    expected = transcribed_adam_without_bias_correction(
        clone_params(p0), 20, lr=0.01, beta1=0.9, beta2=0.99, eps=1e-6, wd=wd,
        adamw=cls is optlib.AdamW,
    )  # fmt: skip
    assert_close_lists(got, expected)
    # ...and it really is a different optimizer: the corrected run ends elsewhere.
    corrected = run(lambda ps: cls(ps, foreach=foreach, **kw), clone_params(p0), 20)
    assert not torch.allclose(corrected[0], got[0], rtol=1e-3)


def test_first_bias_corrected_step_has_size_lr():
    """With bias correction the first step is lr * g / (|g| + eps): about lr in every coordinate."""
    theta = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    g = torch.tensor([0.5, -1e-3, 20.0], dtype=torch.float64)
    m, v = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    adam_update(theta, g, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=0.0)
    torch.testing.assert_close(theta, torch.tensor([0.9, -1.9, 2.9], dtype=torch.float64))


def test_amsgrad_keeps_the_running_maximum():
    theta, m, v, v_max = (torch.zeros(2, dtype=torch.float64) for _ in range(4))
    hyper = dict(lr=0.1, beta1=0.0, beta2=0.5, eps=0.0, amsgrad=True)
    adam_update(theta, torch.tensor([4.0, 1.0]).double(), m, v, v_max, step=1, **hyper)
    adam_update(theta, torch.tensor([0.0, 2.0]).double(), m, v, v_max, step=2, **hyper)
    torch.testing.assert_close(v, torch.tensor([4.0, 2.25]).double())
    torch.testing.assert_close(v_max, torch.tensor([8.0, 2.25]).double())


@pytest.mark.parametrize(
    "cls, ref", [(optlib.Adam, torch.optim.Adam), (optlib.AdamW, torch.optim.AdamW)]
)
@pytest.mark.parametrize("amsgrad", [False, True])
def test_uneven_step_counts(cls, ref, amsgrad):
    E.assert_uneven_steps_match(cls, ref, dict(lr=0.02, amsgrad=amsgrad, weight_decay=0.01))


@pytest.mark.parametrize(
    "cls, ref, kw",
    [
        (optlib.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
        (optlib.Adam, torch.optim.Adam, dict(lr=0.01, decoupled_weight_decay=True)),
        (optlib.AdamW, torch.optim.AdamW, dict(lr=0.01)),
    ],
)
def test_state_dict_interop_with_torch(cls, ref, kw):
    E.assert_same_fresh_state(cls, ref, kw)
    E.assert_state_dict_interop(cls, ref, kw)


def test_adamw_state_loaded_stays_decoupled():
    p = make_params(E.SHAPES)
    sd = optlib.Adam(p, weight_decay=0.1).state_dict()
    opt = optlib.AdamW(clone_params(p), weight_decay=0.1)
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["decoupled_weight_decay"] is True


def test_state_without_bias_correction_key_defaults_to_true():
    p = make_params(E.SHAPES)
    sd = torch.optim.Adam(p).state_dict()
    opt = optlib.Adam(clone_params(p), bias_correction=False)
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["bias_correction"] is True


@pytest.mark.parametrize("foreach", [False, True])
def test_resume_is_bit_identical(foreach):
    E.assert_resume_bit_identical(optlib.Adam, dict(lr=0.01, amsgrad=True, foreach=foreach))


@pytest.mark.parametrize(
    "dtype, rtol, atol", [(torch.float32, 1e-5, 1e-6), (torch.bfloat16, 2e-2, 2e-2)]
)
def test_low_precision(dtype, rtol, atol):
    E.assert_low_precision_close(
        optlib.AdamW, torch.optim.AdamW, dict(lr=0.01), dtype, rtol=rtol, atol=atol
    )


def test_complex_parameters():
    E.assert_complex_matches(optlib.Adam, torch.optim.Adam, dict(lr=0.05, amsgrad=True))


def test_closure_and_scheduler():
    p0 = make_params(E.SHAPES, seed=9)
    sched = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)  # noqa: E731
    kw = dict(lr=0.05, weight_decay=0.01)
    got = run(lambda ps: optlib.AdamW(ps, **kw), clone_params(p0), 12, use_closure=True,
              scheduler_factory=sched)  # fmt: skip
    expected = run(lambda ps: torch.optim.AdamW(ps, foreach=False, **kw), clone_params(p0), 12,
                   use_closure=True, scheduler_factory=sched)  # fmt: skip
    assert_close_lists(got, expected)


@pytest.mark.parametrize("cls", [optlib.Adam, optlib.AdamW])
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-1e-3), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(betas=(1.0, 0.999)), "beta1"),
        (dict(betas=(-0.1, 0.999)), "beta1"),
        (dict(betas=(0.9, 1.0)), "beta2"),
        (dict(betas=(0.9, float("nan"))), "beta2"),
        (dict(betas=(0.9,)), "betas"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(capturable=True), "capturable"),
        (dict(differentiable=True), "differentiable"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(
    "cls, ref", [(optlib.Adam, torch.optim.Adam), (optlib.AdamW, torch.optim.AdamW)]
)
def test_signature_matches_torch(cls, ref):
    E.assert_signature_matches(cls, ref, extra=("bias_correction",))
