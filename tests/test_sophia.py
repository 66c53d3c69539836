"""optlib.SophiaG / SophiaH against the authors' reference, Liuhong99/Sophia ``sophia.py``
(the version with ``rho`` and ``step(bs=...)``), and the paper's Algorithm 3 for SophiaH.

The rule checked (Liu et al., 2023), per parameter, with m_0 = h_0 = 0:

    every k steps, before the step (update_hessian):
        SophiaG:  h <- beta2 * h + (1 - beta2) * g_hat * g_hat     (g_hat: grad on sampled labels)
        SophiaH:  h <- beta2 * h + (1 - beta2) * u * (H u)          (u Rademacher)
    every step:
        p <- p * (1 - lr * wd)
        m <- beta1 * m + (1 - beta1) * g
        SophiaG:  p <- p - lr * sign(m) * min(|m| / (rho * bs * h + 1e-15), 1)
        SophiaH:  p <- p - lr * sign(m) * min(|m| / max(rho * h, eps), 1)

plus the estimators: E[B * g_hat * g_hat] = diag of the Gauss-Newton matrix (GNB), E[u * Hu] =
diag(H) (Hutchinson), and SophiaH's handling of negative curvature.
"""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import optlib
from optlib.optim.sophia import gnb_hessian_estimate, gnb_loss, hutchinson_hessian_estimate

from ._optim_checks import (  # noqa: F401 (one_thread is an autouse fixture)
    SHAPES,
    assert_resume_bit_identical,
    assert_zero_gradient_is_finite,
    digits_losses,
    one_thread,
)
from ._parity import assert_close_lists, clone_params, make_params, quartic_loss

K = 3  # Hessian refresh period in the tests


def sampled_loss(params):
    """Stands in for the loss on sampled labels: its gradient differs from quartic_loss's."""
    return sum(((i + 1) * 0.5 * p**2 + torch.sin(p)).sum() for i, p in enumerate(params))


def grads_at(loss_fn, p):
    q = [x.clone().requires_grad_() for x in p]
    return [g.detach() for g in torch.autograd.grad(loss_fn(q), q)]


# --- SophiaG ------------------------------------------------------------------------------


def sophiag_transcribed(params, steps, *, lr, beta1, beta2, rho, wd, bs):
    """The SophiaG rule above, written out on plain tensors."""
    p = [x.detach().clone() for x in params]
    m = [torch.zeros_like(x) for x in p]
    h = [torch.zeros_like(x) for x in p]
    for t in range(steps):
        if t % K == 0:
            for i, g_hat in enumerate(grads_at(sampled_loss, p)):
                h[i] = beta2 * h[i] + (1 - beta2) * g_hat * g_hat
        for i, g in enumerate(grads_at(quartic_loss, p)):
            p[i] = p[i] * (1 - lr * wd)
            m[i] = beta1 * m[i] + (1 - beta1) * g
            ratio = torch.clamp(m[i].abs() / (rho * bs * h[i] + 1e-15), max=1)
            p[i] = p[i] - lr * torch.sign(m[i]) * ratio
    return p


def sophiag_step(bs):
    def do_step(opt, params, t):
        if t % K == 0:
            opt.zero_grad()
            sampled_loss(params).backward()
            opt.update_hessian()
        opt.zero_grad()
        quartic_loss(params).backward()
        opt.step(bs=bs)

    return do_step


def run_steps(opt, params, steps, do_step):
    for t in range(steps):
        do_step(opt, params, t)
    return [p.detach().clone() for p in params]


@settings(max_examples=20, deadline=None)
@given(
    lr=st.floats(1e-4, 0.05),
    beta1=st.sampled_from([0.0, 0.9, 0.965]),
    beta2=st.sampled_from([0.0, 0.9, 0.99]),
    rho=st.sampled_from([0.01, 0.04, 1.0]),
    wd=st.sampled_from([0.0, 0.1]),
    bs=st.sampled_from([1, 32, 5120]),
    foreach=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sophiag_matches_transcription(lr, beta1, beta2, rho, wd, bs, foreach, seed):
    p0 = make_params(SHAPES, seed=seed)
    ps = clone_params(p0)
    opt = optlib.SophiaG(ps, lr=lr, betas=(beta1, beta2), rho=rho, weight_decay=wd, foreach=foreach)
    ours = run_steps(opt, ps, 15, sophiag_step(bs))
    ref = sophiag_transcribed(p0, 15, lr=lr, beta1=beta1, beta2=beta2, rho=rho, wd=wd, bs=bs)
    assert_close_lists(ours, ref)


def test_sophiag_exercises_both_regimes():
    """With this configuration some coordinates are clipped (sign step) and some take the
    Newton-like step |m|/(rho bs h) < 1, so the transcription test covers both branches."""
    ps = make_params(SHAPES, seed=0)
    opt = optlib.SophiaG(ps, lr=1e-2, rho=0.04, betas=(0.9, 0.9))
    run_steps(opt, ps, 4, sophiag_step(32))
    ratio = torch.cat(
        [
            (s["exp_avg"].abs() / (0.04 * 32 * s["hessian"] + 1e-15)).flatten()
            for s in opt.state.values()
        ]
    )
    assert (ratio < 1).sum() > 5 and (ratio > 1).sum() > 5


def test_sophiag_foreach_agrees_with_single_tensor():
    p0 = make_params(SHAPES, seed=3)
    runs = []
    for foreach in (False, True):
        ps = clone_params(p0)
        opt = optlib.SophiaG(ps, lr=1e-2, betas=(0.9, 0.9), foreach=foreach)
        runs.append(run_steps(opt, ps, 20, sophiag_step(32)))
    # the same arithmetic through foreach kernels: an ulp at most per step over 20 steps, 45
    # ulps allowed, relative to each tensor's scale (an entry near 0 is known to ulps of it)
    assert_close_lists(runs[0], runs[1], rtol=1e-14)


def test_sophiag_defaults():
    d = optlib.SophiaG([torch.zeros(2, requires_grad=True)]).defaults
    assert (d["lr"], d["betas"], d["rho"], d["weight_decay"], d["eps"]) == (
        1e-4, (0.965, 0.99), 0.04, 0.1, 1e-15,
    )  # fmt: skip
    import inspect

    assert inspect.signature(optlib.SophiaG.step).parameters["bs"].default == 5120


def test_first_step_before_any_hessian_is_sign_momentum():
    """h = 0 until the first refresh: every coordinate with m != 0 moves by exactly lr."""
    p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = optlib.SophiaG([p], lr=0.1, weight_decay=0.2)
    p.grad = torch.tensor([0.3, -0.7, 0.0], dtype=torch.float64)
    opt.step(bs=10)
    expected = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) * (1 - 0.1 * 0.2)
    expected -= 0.1 * torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)
    assert opt.state[p]["step"].item() == 1


def test_update_hessian_folds_the_squared_gradient():
    p = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = optlib.SophiaG([p], betas=(0.9, 0.8))
    p.grad = torch.tensor([3.0, -1.0], dtype=torch.float64)
    opt.update_hessian()
    torch.testing.assert_close(opt.state[p]["hessian"], 0.2 * torch.tensor([9.0, 1.0]).double())
    p.grad = torch.tensor([1.0, 2.0], dtype=torch.float64)
    opt.update_hessian()
    h = 0.8 * 0.2 * torch.tensor([9.0, 1.0]) + 0.2 * torch.tensor([1.0, 4.0])
    torch.testing.assert_close(opt.state[p]["hessian"], h.double())
    assert torch.equal(p.grad, torch.tensor([1.0, 2.0], dtype=torch.float64)), "grad modified"
    assert opt.state[p]["step"].item() == 0, "a Hessian refresh is not a step"


def test_maximize_is_minimizing_the_negative():
    p0 = make_params(SHAPES, seed=4)
    runs = []
    for maximize, sign in [(False, 1.0), (True, -1.0)]:
        ps = clone_params(p0)
        opt = optlib.SophiaG(ps, lr=1e-2, maximize=maximize)

        def do_step(opt, params, t, sign=sign):
            opt.zero_grad()
            (sign * sampled_loss(params)).backward()
            opt.update_hessian()
            opt.zero_grad()
            (sign * quartic_loss(params)).backward()
            opt.step(bs=8)

        runs.append(run_steps(opt, ps, 10, do_step))
    assert_close_lists(runs[0], runs[1], rtol=0, atol=0)


# --- the Gauss-Newton-Bartlett estimator --------------------------------------------------


def _softmax_regression(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(4, 3).double()
    X = torch.randn(6, 4, dtype=torch.float64)
    return model, X


def _exact_hessian_diagonal(model, X):
    """diag of the Hessian of the mean cross-entropy; for linear logits it equals the
    Gauss-Newton matrix and does not depend on the labels."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in model.parameters()])
    y = torch.zeros(len(X), dtype=torch.long)

    def f(flat):
        chunks = torch.split(flat, [math.prod(s) for s in shapes])
        params = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes)}
        logits = torch.func.functional_call(model, params, (X,))
        return nn.functional.cross_entropy(logits, y)

    return torch.autograd.functional.hessian(f, flat0).diagonal()


def test_gnb_estimate_is_unbiased_for_the_gauss_newton_diagonal():
    model, X = _softmax_regression()
    exact = _exact_hessian_diagonal(model, X)
    gen = torch.Generator().manual_seed(0)
    n = 1500
    samples = torch.stack(
        [
            torch.cat([h.flatten() for h in gnb_hessian_estimate(model, X, generator=gen)])
            for _ in range(n)
        ]
    )
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(n)
    assert (se < 0.1 * exact).all(), "too few samples for the test to mean anything"
    assert ((mean - exact).abs() <= 5 * se).all(), (mean, exact, se)


def test_gnb_backward_then_update_hessian_matches_the_estimate():
    """The reference workflow (backward of gnb_loss, update_hessian, step(bs=B)) uses the same
    estimate: rho * bs * h = rho * (1 - beta2) * [B * g_hat * g_hat] after one refresh."""
    model, X = _softmax_regression()
    est = gnb_hessian_estimate(model, X, generator=torch.Generator().manual_seed(7))
    opt = optlib.SophiaG(model.parameters(), betas=(0.9, 0.75))
    gnb_loss(model(X), generator=torch.Generator().manual_seed(7)).backward()
    opt.update_hessian()
    for p, e in zip(model.parameters(), est):
        torch.testing.assert_close(len(X) * opt.state[p]["hessian"], 0.25 * e)


def test_gnb_loss_counts_tokens_of_sequence_logits():
    """[batch, time, classes] logits: B counts tokens, and the labels come from the model."""
    torch.manual_seed(0)
    model = nn.Linear(5, 4).double()
    X = torch.randn(2, 3, 5, dtype=torch.float64)
    est = gnb_hessian_estimate(model, X, generator=torch.Generator().manual_seed(1))
    flat = gnb_loss(model(X).reshape(6, 4), generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(flat, list(model.parameters()))
    for e, g in zip(est, grads):
        torch.testing.assert_close(e, 6 * g * g)
    # A confident model samples its own argmax.
    logits = torch.tensor([[50.0, 0.0, 0.0], [0.0, 0.0, 50.0]], requires_grad=True)
    gnb_loss(logits).backward()
    assert logits.grad.abs().max() < 1e-12


# --- Hutchinson and SophiaH ---------------------------------------------------------------


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    theta = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
    loss = (theta**4 / 4 - theta**2 / 2).sum()
    (h,) = hutchinson_hessian_estimate(loss, [theta], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(h, 3 * theta.detach() ** 2 - 1)


def test_hutchinson_averages_to_the_diagonal_over_all_probes():
    """E[u * Hu] = diag(H): averaging over all 2^n sign vectors is exact, off-diagonals cancel."""
    A = torch.tensor([[2.0, 0.7, -1.1], [0.7, -3.0, 0.4], [-1.1, 0.4, 1.5]], dtype=torch.float64)
    theta = torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64, requires_grad=True)
    total = torch.zeros(3, dtype=torch.float64)
    for signs in itertools.product([-1.0, 1.0], repeat=3):
        loss = 0.5 * theta @ A @ theta
        u = torch.tensor(signs, dtype=torch.float64)
        (h,) = hutchinson_hessian_estimate(loss, [theta], probes=[u])
        torch.testing.assert_close(h, u * (A @ u))
        total += h
    torch.testing.assert_close(total / 8, A.diagonal())
    # Its own random probes are sign vectors: each draw is u * Au for one of the 2^n of them.
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        (h,) = hutchinson_hessian_estimate(0.5 * theta @ A @ theta, [theta], generator=gen)
        candidates = [torch.tensor(s).double() for s in itertools.product([-1.0, 1.0], repeat=3)]
        assert any(torch.allclose(h, u * (A @ u)) for u in candidates)


def _flat_hessian(loss_fn, p):
    sizes = [x.numel() for x in p]

    def f(flat):
        chunks = torch.split(flat, sizes)
        return loss_fn([c.reshape(x.shape) for c, x in zip(chunks, p)])

    return torch.autograd.functional.hessian(f, torch.cat([x.flatten() for x in p]))


def sophiah_transcribed(params, steps, *, lr, beta1, beta2, rho, wd, eps):
    """The SophiaH rule above on plain tensors, with the full Hessian matrix and the same
    Rademacher draws (a generator seeded with the step, one draw per tensor in order)."""
    p = [x.detach().clone() for x in params]
    m = [torch.zeros_like(x) for x in p]
    h = [torch.zeros_like(x) for x in p]
    for t in range(steps):
        if t % K == 0:
            gen = torch.Generator().manual_seed(1000 + t)
            u = torch.cat(
                [(torch.randint(0, 2, x.shape, generator=gen) * 2 - 1).flatten() for x in p]
            )
            h_hat = torch.split(
                u.double() * (_flat_hessian(quartic_loss, p) @ u.double()), [x.numel() for x in p]
            )
            for i, hh in enumerate(h_hat):
                h[i] = beta2 * h[i] + (1 - beta2) * hh.reshape(p[i].shape)
        for i, g in enumerate(grads_at(quartic_loss, p)):
            p[i] = p[i] * (1 - lr * wd)
            m[i] = beta1 * m[i] + (1 - beta1) * g
            ratio = torch.clamp(m[i].abs() / torch.clamp(rho * h[i], min=eps), max=1)
            p[i] = p[i] - lr * torch.sign(m[i]) * ratio
    return p


def sophiah_step(opt, params, t):
    if t % K == 0:
        opt.update_hessian(
            lambda: quartic_loss(params), generator=torch.Generator().manual_seed(1000 + t)
        )
    opt.zero_grad()
    quartic_loss(params).backward()
    opt.step()


@settings(max_examples=12, deadline=None)
@given(
    lr=st.floats(1e-4, 0.05),
    beta1=st.sampled_from([0.0, 0.9, 0.965]),
    beta2=st.sampled_from([0.0, 0.99]),
    rho=st.sampled_from([0.01, 0.04, 1.0]),
    wd=st.sampled_from([0.0, 0.1]),
    eps=st.sampled_from([1e-12, 1e-3]),
    foreach=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sophiah_matches_transcription(lr, beta1, beta2, rho, wd, eps, foreach, seed):
    p0 = make_params(SHAPES, seed=seed)
    ps = clone_params(p0)
    opt = optlib.SophiaH(
        ps, lr=lr, betas=(beta1, beta2), rho=rho, weight_decay=wd, eps=eps, foreach=foreach
    )
    ours = run_steps(opt, ps, 9, sophiah_step)
    ref = sophiah_transcribed(p0, 9, lr=lr, beta1=beta1, beta2=beta2, rho=rho, wd=wd, eps=eps)
    assert_close_lists(ours, ref)


def double_well(theta):
    """f = sum(theta^4/4 - theta^2/2): f'' = 3 theta^2 - 1 < 0 for |theta| < 1/sqrt(3)."""
    return (theta**4 / 4 - theta**2 / 2).sum()


@pytest.mark.parametrize("foreach", [False, True])
def test_sophiah_negative_curvature_takes_a_descent_sign_step(foreach):
    theta0 = torch.tensor([0.1, -0.2, 0.3, 0.05], dtype=torch.float64)
    theta = theta0.clone().requires_grad_()
    lr, rho = 0.05, 1.0
    opt = optlib.SophiaH([theta], lr=lr, betas=(0.9, 0.0), rho=rho, weight_decay=0, foreach=foreach)
    opt.update_hessian(lambda: double_well(theta))
    h = opt.state[theta]["hessian"]
    torch.testing.assert_close(h, 3 * theta0**2 - 1)  # beta2 = 0: h is the exact curvature
    assert (h < 0).all()

    double_well(theta).backward()
    opt.step()
    g = theta0**3 - theta0
    m = 0.1 * g
    torch.testing.assert_close(theta.detach(), theta0 - lr * torch.sign(m), rtol=0, atol=1e-15)
    # Newton's step m / (rho h) with h < 0 would climb toward the maximum at 0; Sophia descends.
    newton = theta0 - lr * m / (rho * h)
    assert double_well(newton) > double_well(theta0) > double_well(theta.detach())

    # Refreshing every step, it leaves the concave region and settles in the minima at +-1.
    for _ in range(150):
        opt.update_hessian(lambda: double_well(theta))
        opt.zero_grad()
        double_well(theta).backward()
        opt.step()
    torch.testing.assert_close(theta.detach(), torch.sign(theta0), rtol=0, atol=1e-3)


def test_sophiah_update_hessian_leaves_grad_alone_and_returns_the_loss():
    theta = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    opt = optlib.SophiaH([theta], betas=(0.9, 0.5))
    theta.grad = torch.tensor([1.0, -1.0], dtype=torch.float64)
    loss = opt.update_hessian(lambda: double_well(theta))
    torch.testing.assert_close(loss, double_well(theta.detach()))
    assert not loss.requires_grad
    assert torch.equal(theta.grad, torch.tensor([1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(opt.state[theta]["hessian"], 0.5 * (3 * theta.detach() ** 2 - 1))


# --- both ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [optlib.SophiaG, optlib.SophiaH])
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-1e-4), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(betas=(1.0, 0.99)), "beta1"),
        (dict(betas=(0.9, 1.5)), "beta2"),
        (dict(betas=0.9), "betas"),
        (dict(rho=-0.04), "rho"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(eps=0.0), "eps"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("bs", [0, -5, float("nan")])
def test_bad_batch_size_names_bs(bs):
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="bs"):
        optlib.SophiaG([p]).step(bs=bs)


@pytest.mark.parametrize("foreach", [False, True])
def test_resume_is_bit_identical(foreach):
    assert_resume_bit_identical(
        lambda ps: optlib.SophiaG(ps, lr=1e-2, betas=(0.9, 0.9), foreach=foreach),
        sophiag_step(32),
    )
    assert_resume_bit_identical(
        lambda ps: optlib.SophiaH(ps, lr=1e-2, betas=(0.9, 0.9), foreach=foreach), sophiah_step
    )


@pytest.mark.parametrize("zero_params", [False, True])
@pytest.mark.parametrize("foreach", [False, True])
def test_zero_gradient_gives_no_nan(zero_params, foreach):
    def g_step(opt, params, t):  # the gradients are already zero: refresh h with them, step
        opt.update_hessian()
        opt.step(bs=16)

    assert_zero_gradient_is_finite(
        lambda ps: optlib.SophiaG(ps, lr=1e-2, foreach=foreach), g_step, zero_params=zero_params
    )

    def h_step(opt, params, t):  # a loss with zero gradient and zero curvature
        opt.update_hessian(lambda: sum((0 * p).sum() for p in params))
        opt.step()

    assert_zero_gradient_is_finite(
        lambda ps: optlib.SophiaH(ps, lr=1e-2, foreach=foreach), h_step, zero_params=zero_params
    )


def _digits_sophiag_step(opt, model, X, y, t):
    opt.zero_grad()
    nn.functional.cross_entropy(model(X), y).backward()
    opt.step(bs=len(X))
    if t % 5 == 0:
        opt.zero_grad()
        gnb_loss(model(X), generator=torch.Generator().manual_seed(t)).backward()
        opt.update_hessian()


def _digits_sophiah_step(opt, model, X, y, t):
    if t % 5 == 0:
        opt.update_hessian(
            lambda: nn.functional.cross_entropy(model(X), y),
            generator=torch.Generator().manual_seed(t),
        )
    opt.zero_grad()
    nn.functional.cross_entropy(model(X), y).backward()
    opt.step()


@pytest.mark.parametrize(
    "cls, do_step", [(optlib.SophiaG, _digits_sophiag_step), (optlib.SophiaH, _digits_sophiah_step)]
)
def test_trains_digits_mlp(cls, do_step):
    before, after = digits_losses(lambda model: cls(model.parameters(), lr=1e-2), do_step=do_step)
    assert after < 0.25 * before, (before, after)
