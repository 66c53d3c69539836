r"""optlib.Shampoo against a plain float64 transcription of the reference's update rule.

Reference: facebookresearch/optimizers, ``distributed_shampoo/distributed_shampoo.py``
(``DistributedShampoo._compute_search_directions`` and ``step``), with
``preconditioner/shampoo_preconditioner_list.py`` (factors, roots initialised to the identity),
``preconditioner/matrix_functions.py`` (``matrix_inverse_root``: eigh of :math:`A + \epsilon I`,
eigenvalues lifted to at least :math:`\epsilon`) and ``utils/shampoo_utils.py``
(``merge_small_dims``, ``multi_dim_split``).

The rule checked, for every block :math:`B` (at most ``max_preconditioner_dim`` along each
dimension) of a parameter of order :math:`k`, at step :math:`t`:

.. math::

   G &\leftarrow G + \lambda W \quad\text{(L2 only)}, \qquad
   F_i \leftarrow \beta_2 F_i + (1-\beta_2)\, G_{(i)} G_{(i)}^\top
   \quad (F_i \mathrel{+}= G_{(i)}G_{(i)}^\top \text{ if } \beta_2 = 1) \\
   \bar F_i &= (F_i / (1-\beta_2^t) + \epsilon I)^{-1/(2k)}
   \quad\text{when } t = t_0 \text{ or } (t > t_0 \text{ and } f \mid t) \\
   M &\leftarrow \beta_1 M + (1-\beta_1) G, \qquad \hat M = M / (1-\beta_1^t) \\
   D &= \hat M \times_1 \bar F_1 \cdots \times_k \bar F_k
   \ \ (\text{or } D = P(\hat M) \text{ for } t < t_0 \text{ with grafting}), \qquad
   D \leftarrow \frac{\lVert P(\hat M)\rVert}{\lVert D\rVert + 10^{-16}} D \\
   W &\leftarrow W - \eta\,(D + \lambda W) \quad\text{(decoupled)}

with the graft :math:`P(x) = x / (\sqrt{V/b} + \epsilon_g)`, :math:`V` AdaGrad's sum, RMSprop's
or Adam's average of :math:`G^2` (Adam: :math:`b = 1-\beta^t`), or :math:`P(x) = x` (SGD).

The gradients carry fresh random noise at every step (``noisy_loss``), so that the factors are
well conditioned and the comparison is sharp at the default :math:`\epsilon = 10^{-12}`.
"""

from __future__ import annotations

import io
import itertools
import warnings

import pytest
import torch
from torch import nn

import optlib
from optlib.optim.shampoo import merged_shape
from optlib.problems import digits_mlp

from ._parity import clone_params, make_params, quartic_loss

SHAPES = [(5,), (4, 6), (2, 3, 4), (7, 5)]
F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small matrices: intra-op threads only spin (20 digits steps: 0.3 s on one thread,
    20 s on two threads of a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def noisy_loss(params, t):
    """quartic_loss plus a fresh random linear term at step t: gradients change direction, so
    the factors become well conditioned and float64 rounding is not amplified by the roots."""
    g = torch.Generator().manual_seed(1000 + t)
    noise = sum((torch.randn(p.shape, generator=g, dtype=F64) * p).sum() for p in params)
    return quartic_loss(params) + noise


# --- the transcription --------------------------------------------------------------------


def inverse_root(A, r, eps):
    """(A + eps I)^(-1/r), eigenvalues lifted to at least eps (matrix_functions.py)."""
    lam, Q = torch.linalg.eigh(A + eps * torch.eye(A.shape[0], dtype=F64))
    lam = lam + max(eps - lam.min().item(), 0.0)
    return Q @ torch.diag(lam ** (-1.0 / r)) @ Q.T


def unfold(G, i):
    """Mode-i unfolding: dimension i as rows, all the others as columns."""
    return G.movedim(i, 0).reshape(G.shape[i], -1)


def precondition(M, roots):
    """M x_1 R_1 ... x_k R_k: multiply dimension i of M by R_i."""
    for i, R in enumerate(roots):
        M = torch.tensordot(R, M, dims=([1], [i])).movedim(0, i)
    return M


def blocks(shape, b):
    return list(
        itertools.product(*[[slice(s, min(s + b, d)) for s in range(0, d, b)] for d in shape])
    )


def reference_shampoo(
    params0,
    steps,
    *,
    lr=1e-2,
    betas=(0.9, 1.0),
    epsilon=1e-12,
    weight_decay=0.0,
    max_preconditioner_dim=1024,
    precondition_frequency=1,
    start_preconditioning_step=-1,
    use_bias_correction=True,
    use_decoupled_weight_decay=True,
    grafting=None,
    grafting_beta2=None,
    grafting_epsilon=1e-10,
    loss_fn=noisy_loss,
):
    beta1, beta2 = betas
    f = precondition_frequency
    t0 = f if start_preconditioning_step == -1 else start_preconditioning_step
    gbeta = grafting_beta2 or {"rmsprop": 0.99, "adam": 0.999}.get(grafting, 1.0)
    W = [p.detach().clone() for p in params0]
    state = []
    for w in W:
        per_block = []  # (slice, block state) pairs
        for sl in blocks(w.shape, max_preconditioner_dim):
            B = w[sl]
            per_block.append(
                (
                    sl,
                    {
                        "F": [torch.zeros(d, d, dtype=F64) for d in B.shape],
                        "R": [torch.eye(d, dtype=F64) for d in B.shape],
                        "M": torch.zeros_like(B),
                        "V": torch.zeros_like(B),
                    },
                )
            )
        state.append(per_block)

    for t in range(1, steps + 1):
        ws = [w.clone().requires_grad_() for w in W]
        loss_fn(ws, t - 1).backward()
        for w, x, st in zip(W, ws, state):
            g = x.grad
            if weight_decay and not use_decoupled_weight_decay:
                g = g + weight_decay * w
            new_w = w.clone()
            for sl, s in st:
                G, k = g[sl], g[sl].dim()
                for i in range(k):
                    gram = unfold(G, i) @ unfold(G, i).T
                    s["F"][i] = (
                        s["F"][i] + gram if beta2 == 1 else beta2 * s["F"][i] + (1 - beta2) * gram
                    )
                b2 = 1 - beta2**t if use_bias_correction and beta2 < 1 else 1.0
                if t == t0 or (t > t0 and t % f == 0):
                    s["R"] = [inverse_root(F / b2, 2 * k, epsilon) for F in s["F"]]
                if grafting == "adagrad":
                    s["V"] = s["V"] + G * G
                elif grafting in ("rmsprop", "adam"):
                    s["V"] = gbeta * s["V"] + (1 - gbeta) * G * G
                if beta1 != 0:
                    s["M"] = beta1 * s["M"] + (1 - beta1) * G
                    M_hat = s["M"] / (1 - beta1**t) if use_bias_correction else s["M"]
                else:
                    M_hat = G
                bg = 1 - gbeta**t if grafting == "adam" else 1.0
                P = (
                    M_hat
                    if grafting == "sgd"
                    else M_hat / (torch.sqrt(s["V"] / bg) + grafting_epsilon)
                )
                if grafting is not None and t < t0:
                    D = P
                else:
                    D = precondition(M_hat, s["R"])
                    if grafting is not None:
                        D = D * torch.linalg.norm(P) / (torch.linalg.norm(D) + 1e-16)
                if use_decoupled_weight_decay:
                    D = D + weight_decay * w[sl]
                new_w[sl] = w[sl] - lr * D
            w.copy_(new_w)
    return W


def run_optlib(params0, steps, loss_fn=noisy_loss, **kw):
    params = clone_params(params0)
    opt = optlib.Shampoo(params, **kw)
    for t in range(steps):
        opt.zero_grad()
        loss_fn(params, t).backward()
        opt.step()
    return [p.detach() for p in params], opt


def assert_close(got, expected, rtol=1e-12, atol=1e-14, tol_1d=1e-8):
    """Vectors get full-matrix roots (F + eps I)^(-1/2) of rank-deficient factors (rank < n
    for the first n steps), which amplify float64 rounding by up to eps^(-1/2) = 1e6: measured
    differences reach 4e-10 for vectors; matrices and 3-D tensors agree to about 1e-14."""
    for i, (a, b) in enumerate(zip(got, expected)):
        r, t = (tol_1d, tol_1d) if a.dim() == 1 else (rtol, atol)
        torch.testing.assert_close(a, b, rtol=r, atol=t, msg=lambda m, i=i: f"param {i}: {m}")


# --- the update rule ----------------------------------------------------------------------

CONFIGS = {
    "defaults": {},
    "ema_factors_decoupled_wd": dict(betas=(0.9, 0.99), epsilon=1e-8, weight_decay=0.05),
    "l2_weight_decay": dict(weight_decay=0.05, use_decoupled_weight_decay=False),
    "no_momentum_no_bias_correction": dict(betas=(0.0, 0.95), use_bias_correction=False, lr=3e-3),
    "blocks_of_4": dict(max_preconditioner_dim=4, betas=(0.8, 0.999)),
    "every_3_from_5_rmsprop_graft": dict(
        precondition_frequency=3, start_preconditioning_step=5, grafting="rmsprop"
    ),
    "adam_graft_blocks": dict(grafting="adam", max_preconditioner_dim=4, weight_decay=0.01),
    "adagrad_graft_every_2": dict(grafting="adagrad", precondition_frequency=2),
    "sgd_graft": dict(grafting="sgd", betas=(0.5, 0.9), grafting_epsilon=1e-6),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_transcription(name):
    kw = CONFIGS[name]
    p0 = make_params(SHAPES, seed=len(name))
    ours, _ = run_optlib(p0, 12, merge_dims=False, **kw)
    assert_close(ours, reference_shampoo(p0, 12, **kw))


def test_merge_dims_matches_reshaped_parameters():
    """Default merge_dims=True: Shampoo on (1,3,1,4), (), (10,3), (6,7) with threshold 32 is the
    transcription on (12,), (1,), (30,), (6,7); the loss sees the same flattened entries."""
    shapes = [(1, 3, 1, 4), (), (10, 3), (6, 7)]
    merged = [(12,), (1,), (30,), (6, 7)]
    assert [merged_shape(s, 32) for s in shapes] == merged

    def flat_loss(params, t):
        return noisy_loss([p.reshape(-1) for p in params], t)

    p0 = make_params(shapes, seed=7)
    kw = dict(max_preconditioner_dim=32, grafting="adam", loss_fn=flat_loss)
    ours, _ = run_optlib(p0, 8, **kw)
    flat = [p.detach().reshape(m) for p, m in zip(p0, merged)]
    ref = reference_shampoo(flat, 8, **kw)
    assert_close([p.reshape(m) for p, m in zip(ours, merged)], ref)


@pytest.mark.parametrize(
    "shape, threshold, expected",
    [  # examples from the reference's merge_small_dims docstring and tests
        ((1, 2, 5, 1), 10, (10,)),
        ((1, 2, 5, 1), 1, (2, 5)),
        ((32, 3, 64, 64), 8192, (96, 4096)),
        ((32, 3, 64, 64), 1_000_000, (96 * 4096,)),
        ((32, 3, 64, 64), 10, (32, 3, 64, 64)),
        ((), 1024, (1,)),
        ((10, 32), 1024, (320,)),
        ((32, 64), 1024, (32, 64)),
    ],
)
def test_merged_shape(shape, threshold, expected):
    assert merged_shape(shape, threshold) == expected


# --- special steps ------------------------------------------------------------------------


def _steps(opt, params, n, loss_fn=quartic_loss):
    for _ in range(n):
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()


def test_before_the_first_root_the_direction_is_the_first_moment():
    """Roots start as identities: with f = 4 and no graft, steps 1-3 are momentum SGD with
    bias correction, and the roots are first computed at step 4."""
    (p,) = make_params([(3, 4)], seed=2)
    w0 = p.detach().clone()
    opt = optlib.Shampoo([p], lr=0.1, precondition_frequency=4, merge_dims=False)
    quartic_loss([p]).backward()
    g1 = p.grad.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), w0 - 0.1 * g1, rtol=1e-14, atol=1e-15)
    block = opt.state[p]["blocks"][0]
    for _ in range(2):
        _steps(opt, [p], 1)
        assert all(torch.equal(R, torch.eye(R.shape[0], dtype=F64)) for R in block["roots"])
    _steps(opt, [p], 1)
    L, R = block["factors"]
    torch.testing.assert_close(block["roots"][0], inverse_root(L, 4, 1e-12), rtol=1e-8, atol=0)
    torch.testing.assert_close(block["roots"][1], inverse_root(R, 4, 1e-12), rtol=1e-8, atol=0)


def test_roots_are_recomputed_at_t0_then_every_f_steps():
    (p,) = make_params([(4, 3)], seed=3)
    opt = optlib.Shampoo([p], precondition_frequency=2, start_preconditioning_step=5)
    changed, previous = [], None
    for t in range(1, 11):
        _steps(opt, [p], 1)
        roots = [R.clone() for R in opt.state[p]["blocks"][0]["roots"]]
        if previous is not None and not all(torch.equal(a, b) for a, b in zip(roots, previous)):
            changed.append(t)
        previous = roots
    assert changed == [5, 6, 8, 10]


def test_grafting_alone_before_t0():
    """AdaGrad graft before the first root: the first step is lr * G / (|G| + eps_g)."""
    (p,) = make_params([(3, 5)], seed=4)
    w0 = p.detach().clone()
    opt = optlib.Shampoo([p], lr=0.1, precondition_frequency=3, grafting="adagrad")
    quartic_loss([p]).backward()
    g = p.grad.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), w0 - 0.1 * g / (g.abs() + 1e-10), rtol=1e-14, atol=0)


def test_grafted_step_has_the_grafts_length_in_every_block():
    """SGD graft: every block moves by exactly lr * ||M_hat|| (here beta1 = 0, so ||G||)."""
    (p,) = make_params([(7, 5)], seed=5)
    opt = optlib.Shampoo([p], lr=0.01, betas=(0.0, 1.0), grafting="sgd", max_preconditioner_dim=4)
    _steps(opt, [p], 3)
    w0 = p.detach().clone()
    opt.zero_grad()
    quartic_loss([p]).backward()
    g = p.grad.clone()
    opt.step()
    assert len(opt.state[p]["blocks"]) == 4
    for sl in blocks((7, 5), 4):
        step = torch.linalg.norm(p.detach()[sl] - w0[sl])
        torch.testing.assert_close(step, 0.01 * torch.linalg.norm(g[sl]), rtol=1e-12, atol=0)


def test_state_memory_is_m2_plus_n2_per_block():
    (p,) = make_params([(6, 9)], seed=6)
    opt = optlib.Shampoo([p], max_preconditioner_dim=4, merge_dims=False)
    _steps(opt, [p], 1)
    sizes = [[F.shape[0] for F in b["factors"]] for b in opt.state[p]["blocks"]]
    assert sizes == [[4, 4], [4, 4], [4, 1], [2, 4], [2, 4], [2, 1]]  # rows 4+2, columns 4+4+1
    numel = sum(F.numel() for b in opt.state[p]["blocks"] for F in b["factors"])
    assert numel == sum(m * m + n * n for m, n in sizes)


# --- hyperparameters, resume, zero gradients, failures ------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(1.0, 1.0)), "beta1"),
        (dict(betas=(0.9, 1.5)), "beta2"),
        (dict(betas=(0.9,)), "betas"),
        (dict(epsilon=0.0), "epsilon"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(max_preconditioner_dim=0), "max_preconditioner_dim"),
        (dict(precondition_frequency=0), "precondition_frequency"),
        (dict(precondition_frequency=2.5), "precondition_frequency"),
        (dict(precondition_frequency=4, start_preconditioning_step=2), "start_preconditioning"),
        (dict(start_preconditioning_step=-3), "start_preconditioning"),
        (dict(grafting="lamb"), "grafting"),
        (dict(grafting="adam", grafting_beta2=0.0), "grafting_beta2"),
        (dict(grafting_epsilon=0.0), "grafting_epsilon"),
        (dict(lr=float("nan")), "lr"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.Shampoo([torch.zeros(2, 2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(
    "dtype, kw",
    [
        (F64, {}),
        (
            F64,
            dict(
                grafting="adam",
                precondition_frequency=3,
                max_preconditioner_dim=4,
                weight_decay=0.01,
            ),
        ),
        (torch.float32, dict(grafting="rmsprop", betas=(0.9, 0.99))),
        (torch.bfloat16, dict(grafting="adam")),
    ],
    ids=["float64", "float64-graft-blocks", "float32", "bfloat16"],
)
def test_state_dict_round_trip_resumes_bit_identically(dtype, kw):
    n = 5

    def fresh():
        return [p.detach().to(dtype).requires_grad_() for p in make_params(SHAPES, seed=8)]

    params_a = fresh()
    opt_a = optlib.Shampoo(params_a, **kw)
    _steps(opt_a, params_a, 2 * n)

    params_b = fresh()
    opt_b = optlib.Shampoo(params_b, **kw)
    _steps(opt_b, params_b, n)
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in params_b], "opt": opt_b.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    params_c = [p.clone().requires_grad_() for p in saved["params"]]
    opt_c = optlib.Shampoo(params_c, **kw)
    opt_c.load_state_dict(saved["opt"])
    assert all(
        F.dtype == torch.promote_types(dtype, torch.float32)
        for s in opt_c.state.values()
        for b in s["blocks"]
        for F in b["factors"]
    )
    _steps(opt_c, params_c, n)
    for a, c in zip(params_a, params_c):
        assert torch.equal(a, c)


@pytest.mark.parametrize("kw", [{}, dict(grafting="adam"), dict(betas=(0.0, 0.99), grafting="sgd")])
def test_zero_gradient_gives_no_nan(kw):
    params = make_params(SHAPES, seed=9)
    before = [p.detach().clone() for p in params]
    opt = optlib.Shampoo(params, **kw)
    for _ in range(3):
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    for p, b in zip(params, before):
        assert torch.equal(p.detach(), b)
    for s in opt.state.values():
        for block in s["blocks"]:
            moments = [block[k] for k in ("m", "v") if k in block]
            for x in [*block["factors"], *block["roots"], *moments]:
                assert torch.isfinite(x).all()


def test_eigh_failure_is_retried_then_keeps_the_previous_root(monkeypatch):
    p0 = make_params([(4, 3)], seed=10)
    expected, _ = run_optlib(p0, 4, merge_dims=False)
    real_eigh = torch.linalg.eigh
    calls = {"n": 0}

    def fails_once_per_call(A):
        calls["n"] += 1
        if calls["n"] % 2 == 1:
            raise torch.linalg.LinAlgError("simulated failure to converge")
        return real_eigh(A)

    monkeypatch.setattr(torch.linalg, "eigh", fails_once_per_call)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shifted retry succeeds: no warning
        retried, _ = run_optlib(p0, 4, merge_dims=False)
    assert_close(retried, expected, rtol=1e-7, atol=1e-10)

    def always_fails(A):
        raise torch.linalg.LinAlgError("simulated failure to converge")

    monkeypatch.setattr(torch.linalg, "eigh", always_fails)
    with pytest.warns(RuntimeWarning, match="keeping the previous root"):
        kept, opt = run_optlib(p0, 3, merge_dims=False)
    roots = opt.state[opt.param_groups[0]["params"][0]]["blocks"][0]["roots"]
    assert all(torch.equal(R, torch.eye(R.shape[0], dtype=F64)) for R in roots)
    assert all(torch.isfinite(p).all() for p in kept)


# --- a real workload ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw", [dict(merge_dims=False), dict(grafting="adam", precondition_frequency=4)]
)
def test_trains_digits_mlp(kw):
    data, model = digits_mlp()
    opt = optlib.Shampoo(model.parameters(), **kw)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(data.X_train), data.y_train)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    if "grafting" in kw:
        assert losses[-1] < 0.5 * losses[0]
