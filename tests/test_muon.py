r"""optlib.Muon and MuonWithAuxAdamW against the update rule of KellerJordan/Muon ``muon.py``
(``SingleDeviceMuon``, ``SingleDeviceMuonWithAuxAdam``), transcribed plainly below:

.. math::

   b \leftarrow \beta b + (1-\beta) g; \quad u = (1-\beta) g + \beta b \ (\text{nesterov})
   \text{ else } b; \quad U = u \text{ as } (\text{rows}, \text{cols}) \\
   X \leftarrow U / (\lVert U\rVert_F + 10^{-7}) \ (\text{transposed if rows} > \text{cols});
   \quad 5\times\{A = XX^\top;\ X \leftarrow aX + (bA + cA^2)X\} \\
   \theta \leftarrow \theta(1-\eta\lambda) - \eta \sqrt{\max(1, \text{rows}/\text{cols})}\, X

and, for the AdamW groups, :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`,
:math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
:math:`\theta \leftarrow \theta(1-\eta\lambda) - \eta\,\hat m / (\sqrt{\hat v} + \epsilon)`.
Float64 checks run Newton–Schulz in float64 (``ns_dtype=None``); the bfloat16 default is checked
to stay close.
"""

import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import optlib
from optlib.optim.muon import muon_param_groups, newton_schulz5
from optlib.problems import digits_mlp

from ._parity import assert_close_lists, clone_params, make_params, quartic_loss, run

ABC = (3.4445, -4.7750, 2.0315)
SHAPE_SETS = [[(5, 3)], [(3, 7)], [(4, 4), (6, 2)], [(3, 2, 2, 2)], [(2, 3, 3), (4, 5)]]


def ns5_transcribed(U, steps=5):
    a, b, c = ABC
    tall = U.shape[0] > U.shape[1]
    X = U.T if tall else U
    X = X / (torch.linalg.matrix_norm(X) + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def muon_transcribed(params, steps, *, lr, beta, nesterov, wd, ns_steps=5):
    """The reference's Muon written out with plain arithmetic, on ``quartic_loss``."""
    params = clone_params(params)
    bufs = [torch.zeros_like(p) for p in params]
    for _ in range(steps):
        grads = torch.autograd.grad(quartic_loss(params), params)
        with torch.no_grad():
            for p, g, b in zip(params, grads, bufs):
                b.copy_(beta * b + (1 - beta) * g)
                u = (1 - beta) * g + beta * b if nesterov else b
                U = u.reshape(u.shape[0], -1)
                O = ns5_transcribed(U, ns_steps) * math.sqrt(max(1, U.shape[0] / U.shape[1]))
                p.copy_(p * (1 - lr * wd) - lr * O.reshape(p.shape))
    return [p.detach() for p in params]


# --- Newton–Schulz -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 64), (64, 16), (24, 24)])
def test_ns5_singular_values_near_one_and_singular_vectors_kept(shape):
    torch.manual_seed(0)
    m, n = shape
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, dtype=torch.float64))
    sigma = torch.logspace(0, -2, k, dtype=torch.float64) * 7.0  # condition number 100
    G = U @ torch.diag(sigma) @ V.T
    X = newton_schulz5(G, dtype=None)
    core = U.T @ X @ V  # diagonal when U and V are kept
    off = core - torch.diag(torch.diagonal(core))
    assert off.abs().max() < 1e-10
    s = torch.linalg.svdvals(X)
    assert s.min() > 0.6 and s.max() < 1.2, (s.min(), s.max())
    assert s.max() / s.min() < 1.7  # from a spread of 100 down to less than 1.7
    sb = torch.linalg.svdvals(newton_schulz5(G).double())  # bfloat16 default
    assert sb.min() > 0.55 and sb.max() < 1.25


def test_ns5_bfloat16_default_close_to_float64():
    torch.manual_seed(1)
    G = torch.randn(48, 96, dtype=torch.float64)
    X64 = newton_schulz5(G, dtype=None)
    Xbf = newton_schulz5(G)
    assert Xbf.dtype == torch.bfloat16
    assert (Xbf.double() - X64).norm() / X64.norm() < 0.06
    assert newton_schulz5(G.T, dtype=None).T.allclose(X64, rtol=0, atol=1e-12)


def test_ns5_rejects_non_matrices():
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz5(torch.ones(2, 3, 4))


# --- the update rule ------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    lr=st.floats(1e-3, 0.05),
    beta=st.sampled_from([0.0, 0.5, 0.95]),
    nesterov=st.booleans(),
    wd=st.sampled_from([0.0, 0.1]),
    ns_steps=st.sampled_from([1, 5]),
    shapes=st.sampled_from(SHAPE_SETS),
    seed=st.integers(0, 2**16),
)
def test_matches_transcribed_rule(lr, beta, nesterov, wd, ns_steps, shapes, seed):
    p0 = make_params(shapes, seed=seed)
    kw = dict(lr=lr, weight_decay=wd, momentum=beta, nesterov=nesterov, ns_steps=ns_steps)
    ours = run(lambda ps: optlib.Muon(ps, ns_dtype=None, **kw), clone_params(p0), 20)
    ref = muon_transcribed(p0, 20, lr=lr, beta=beta, nesterov=nesterov, wd=wd, ns_steps=ns_steps)
    # Muon's steps have a fixed spectral length, so near a minimum it keeps jumping around it,
    # and NS5 multiplies tiny singular values by up to a^5 ≈ 487: one-ulp differences between
    # two roundings of the same formula grow about tenfold per step after ~20 steps (measured:
    # 1e-12 at 20 steps, 1e-9 at 30 in the worst case found). Hence 20 steps and 1e-9.
    assert_close_lists(ours, ref, rtol=1e-9, atol=1e-10)


def test_bfloat16_default_stays_close_to_float64():
    p0 = make_params([(8, 12), (12, 4)], seed=2)
    exact = run(lambda ps: optlib.Muon(ps, lr=0.02, ns_dtype=None), clone_params(p0), 30)
    fast = run(lambda ps: optlib.Muon(ps, lr=0.02), clone_params(p0), 30)
    for a, b, start in zip(fast, exact, p0):
        moved = (b - start.detach()).norm()
        assert (a - b).norm() < 0.05 * moved


def test_grad_untouched_and_missing_grad_skipped():
    W, V = make_params([(4, 6), (3, 3)], seed=4)
    opt = optlib.Muon([W, V], ns_dtype=None)
    (W**2).sum().backward()
    g = W.grad.clone()
    V0 = V.detach().clone()
    opt.step()
    assert torch.equal(W.grad, g)
    assert torch.equal(V.detach(), V0) and V not in opt.state


# --- MuonWithAuxAdamW --------------------------------------------------------------------------


def test_aux_adamw_matches_transcribed_rule():
    W, M, bias = make_params([(5, 4), (3, 6), (5,)], seed=7)
    hyper_m = dict(lr=0.03, momentum=0.9, weight_decay=0.05)
    hyper_a = dict(lr=0.01, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.1)
    opt_params = clone_params([W, M, bias])
    groups = [
        dict(params=opt_params[:2], use_muon=True, ns_dtype=None, **hyper_m),
        dict(params=opt_params[2:], use_muon=False, **hyper_a),
    ]
    ours = run(lambda ps: optlib.MuonWithAuxAdamW(groups), opt_params, 25)

    ps = clone_params([W, M, bias])
    bufs = [torch.zeros_like(p) for p in ps[:2]]
    m, v = torch.zeros_like(bias), torch.zeros_like(bias)
    (b1, b2), lr_a, eps, wd_a = hyper_a["betas"], hyper_a["lr"], hyper_a["eps"], 0.1
    for t in range(1, 26):
        grads = torch.autograd.grad(quartic_loss(ps), ps)
        with torch.no_grad():
            for p, g, b in zip(ps[:2], grads[:2], bufs):
                b.copy_(0.9 * b + 0.1 * g)
                U = 0.1 * g + 0.9 * b
                O = ns5_transcribed(U) * math.sqrt(max(1, U.shape[0] / U.shape[1]))
                p.copy_(p * (1 - 0.03 * 0.05) - 0.03 * O)
            g = grads[2]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            ps[2].copy_(ps[2] * (1 - lr_a * wd_a) - lr_a * m_hat / (v_hat.sqrt() + eps))
    # a few steps of the same formulas, Newton-Schulz included (see the 20-step test above for
    # NS5's growth of one-ulp differences): 1e-10 is the same bound as there, scaled down
    assert_close_lists(ours, [p.detach() for p in ps], rtol=1e-10, atol=1e-12)


def test_aux_defaults_are_the_references():
    W, bias = make_params([(3, 3), (3,)])
    opt = optlib.MuonWithAuxAdamW(
        [dict(params=[W], use_muon=True), dict(params=[bias], use_muon=False)]
    )
    muon, adamw = opt.param_groups
    assert (muon["lr"], muon["momentum"], muon["nesterov"], muon["ns_steps"]) == (
        0.02,
        0.95,
        True,
        5,
    )
    assert muon["weight_decay"] == 0 and muon["ns_dtype"] == "auto"
    assert (adamw["lr"], adamw["betas"], adamw["eps"], adamw["weight_decay"]) == (
        3e-4,
        (0.9, 0.95),
        1e-10,
        0,
    )
    defaults = optlib.Muon([W]).defaults
    assert (defaults["lr"], defaults["momentum"], defaults["weight_decay"]) == (0.02, 0.95, 0)


def test_param_groups_split_like_the_authors():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(11, 8)
            self.blocks = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
            self.norm = nn.LayerNorm(8)
            self.lm_head = nn.Linear(8, 11, bias=False)
            self.lm_head.weight = self.embed.weight  # tied

        def forward(self, idx):
            return self.lm_head(self.norm(self.blocks(self.embed(idx))))

    model = LM()
    groups = muon_param_groups(model, muon_lr=0.05, adamw_lr=1e-3, weight_decay=0.01)
    muon, adamw = groups
    assert muon["use_muon"] and not adamw["use_muon"]
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(muon["params"]) == ids([model.blocks[0].weight, model.blocks[2].weight])
    expected_adamw = [model.embed.weight, model.blocks[0].bias, model.blocks[2].bias]
    expected_adamw += [model.norm.weight, model.norm.bias]
    assert ids(adamw["params"]) == ids(expected_adamw)
    assert len(adamw["params"]) == len(expected_adamw)  # the tied weight appears once
    opt = optlib.MuonWithAuxAdamW(groups)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 1e-3]

    _, mlp = digits_mlp()
    muon, adamw = muon_param_groups(mlp)
    assert ids(muon["params"]) == {id(mlp[0].weight)}  # the head mlp[2] goes to AdamW


# --- validation ------------------------------------------------------------------------------


def test_rejects_vectors_naming_muon_with_aux_adamw():
    with pytest.raises(ValueError, match="MuonWithAuxAdamW"):
        optlib.Muon([torch.zeros(3, requires_grad=True)])
    W = torch.zeros(3, 3, requires_grad=True)
    opt = optlib.Muon([W])
    with pytest.raises(ValueError, match="MuonWithAuxAdamW"):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)]})
    with pytest.raises(ValueError, match="MuonWithAuxAdamW"):
        optlib.MuonWithAuxAdamW([dict(params=[torch.zeros(2, requires_grad=True)], use_muon=True)])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-0.1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(momentum=1.0), "momentum"),
        (dict(momentum=-0.1), "momentum"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(ns_steps=0), "ns_steps"),
        (dict(nesterov="yes"), "nesterov"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.Muon([torch.zeros(2, 2, requires_grad=True)], **kwargs)
    group = dict(params=[torch.zeros(2, 2, requires_grad=True)], use_muon=True, **kwargs)
    with pytest.raises(ValueError, match=name):
        optlib.MuonWithAuxAdamW([group])


@pytest.mark.parametrize(
    "group, name",
    [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(0.9, 1.0)), "beta2"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(momentum=0.9), "momentum"),  # a Muon key in an AdamW group
    ],
)
def test_bad_adamw_groups_name_the_parameter(group, name):
    params = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match=name):
        optlib.MuonWithAuxAdamW([dict(params=params, use_muon=False, **group)])


def test_groups_need_use_muon():
    with pytest.raises(ValueError, match="use_muon"):
        optlib.MuonWithAuxAdamW([dict(params=[torch.zeros(2, 2, requires_grad=True)])])


# --- checkpoints and training -------------------------------------------------------------------


def _digits_run(make_opt, steps, *, resume_at=None):
    data, model = digits_mlp(dtype=torch.float64)
    opt = make_opt(model)
    for t in range(steps):
        if t == resume_at:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
            buf.seek(0)
            saved = torch.load(buf, weights_only=False)
            _, model = digits_mlp(dtype=torch.float64, seed=1)
            model.load_state_dict(saved["model"])
            opt = make_opt(model)
            opt.load_state_dict(saved["opt"])
        opt.zero_grad()
        loss = F.cross_entropy(model(data.X_train), data.y_train)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = F.cross_entropy(model(data.X_train), data.y_train).item()
    return model, final


@pytest.mark.parametrize("which", ["Muon", "MuonWithAuxAdamW"])
def test_state_dict_round_trip_is_bit_identical(which):
    def make(model):
        if which == "Muon":
            return optlib.Muon([model[0].weight, model[2].weight], lr=0.02)
        return optlib.MuonWithAuxAdamW(muon_param_groups(model, adamw_lr=1e-2))

    a, _ = _digits_run(make, 10)
    b, _ = _digits_run(make, 10, resume_at=5)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


def test_trains_digits_mlp():
    data, model = digits_mlp()
    with torch.no_grad():
        before = F.cross_entropy(model(data.X_train), data.y_train).item()
    opt = optlib.MuonWithAuxAdamW(muon_param_groups(model, adamw_lr=3e-3))
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(data.X_train), data.y_train)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = F.cross_entropy(model(data.X_train), data.y_train).item()
        accuracy = (model(data.X_test).argmax(1) == data.y_test).double().mean().item()
    assert after < 0.5 * before, (before, after)
    assert accuracy > 0.85
