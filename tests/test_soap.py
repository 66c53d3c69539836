r"""optlib.SOAP against a plain float64 transcription of the reference's update rule.

Reference: nikhilvyas/SOAP, ``soap.py`` (``SOAP.step``, ``init_preconditioner``,
``update_preconditioner``, ``project``, ``project_back``, ``get_orthogonal_matrix``,
``get_orthogonal_matrix_QR``, ``merge_dims``).

The rule checked, per parameter with gradient :math:`G` and one factor :math:`F_i` (with basis
:math:`Q_i`) per dimension of size at most ``max_precond_dim`` (vectors only with
``precondition_1d``):

* first call: :math:`F_i = \operatorname{lerp}(0, G_{(i)}G_{(i)}^\top, 1-\beta_s)`,
  :math:`Q_i` = eigenvectors of :math:`F_i`, largest eigenvalue first; the parameter is not
  touched and the Adam step count stays 0;
* every later call, with :math:`s \leftarrow s + 1`:

.. math::

   G' &= G \times_1 Q_1 \cdots \times_k Q_k \quad (Q_L^\top G Q_R), \qquad
   m \leftarrow \beta_1 m + (1-\beta_1) G', \quad v \leftarrow \beta_2 v + (1-\beta_2) G'^2 \\
   N &= \frac{m}{\sqrt v + \epsilon} \times_1 Q_1^\top \cdots \times_k Q_k^\top, \quad
   (N \leftarrow N / (10^{-30} + \mathrm{RMS}(N)) \text{ if normalize\_grads}) \\
   W &\leftarrow W - \eta \frac{\sqrt{1-\beta_2^s}}{1-\beta_1^s} N, \qquad
   W \leftarrow W - \eta\lambda W, \qquad
   F_i \leftarrow \operatorname{lerp}(F_i, G_{(i)}G_{(i)}^\top, 1-\beta_s)

and when :math:`f \mid s`: :math:`m` is rotated back with the old bases, each :math:`Q_i` is
sorted by :math:`\operatorname{diag}(Q_i^\top F_i Q_i)` (descending, :math:`v` permuted along
dimension :math:`i` alike) and replaced by :math:`\operatorname{qr}(F_i Q_i)`, and :math:`m` is
rotated into the new bases.

The gradients carry fresh random noise at every step, so that every factor has full rank when
its basis is refreshed: a refresh of a rank-deficient factor completes the basis from rounding
noise, which no independent transcription can reproduce. (The initial ``eigh`` of a
rank-deficient factor is reproduced exactly: both sides see the same first gradient and build
the factor with the same ``tensordot`` and ``lerp`` as the reference.)
"""

from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
from torch import nn

import optlib
from optlib.optim.soap import soap_merged_shape
from optlib.problems import digits_mlp

from ._parity import clone_params, make_params, quartic_loss

F64 = torch.float64
SHAPES = [
    (5,),
    (4, 6),
    (2, 3, 4),
    (3, 12),
]  # (3, 12) with max_precond_dim 8: one dim unpreconditioned


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small matrices: intra-op threads only spin on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def noisy_loss(params, t):
    """quartic_loss plus a fresh random linear term at step t: gradients change direction."""
    g = torch.Generator().manual_seed(1000 + t)
    noise = sum((torch.randn(p.shape, generator=g, dtype=F64) * p).sum() for p in params)
    return quartic_loss(params) + noise


# --- the transcription --------------------------------------------------------------------


def gram(G, i):
    """G_(i) G_(i)^T: contract every dimension but i (as the reference's tensordot)."""
    others = [j for j in range(G.dim()) if j != i]
    return torch.tensordot(G, G, dims=(others, others))


def rotate(x, Q, transpose=False):
    """x x_i Q_i^T (into the basis) or x x_i Q_i (back), for every dimension with a basis."""
    for i, Qi in enumerate(Q):
        if Qi is not None:
            x = torch.tensordot(Qi, x, dims=([1 if transpose else 0], [i])).movedim(0, i)
    return x


def reference_soap(
    params0,
    steps,
    *,
    lr=3e-3,
    betas=(0.95, 0.95),
    shampoo_beta=-1,
    eps=1e-8,
    weight_decay=0.01,
    precondition_frequency=10,
    max_precond_dim=10000,
    precondition_1d=False,
    normalize_grads=False,
    correct_bias=True,
    loss_fn=noisy_loss,
):
    beta1, beta2 = betas
    sb = shampoo_beta if shampoo_beta >= 0 else beta2
    W = [p.detach().clone() for p in params0]
    state = [None] * len(W)
    for t in range(steps):
        ws = [w.clone().requires_grad_() for w in W]
        loss_fn(ws, t).backward()
        for j, (w, x) in enumerate(zip(W, ws)):
            G = x.grad
            if state[j] is None:  # first call: statistics only
                if G.dim() == 1:
                    keep = [precondition_1d and G.shape[0] <= max_precond_dim]
                else:
                    keep = [d <= max_precond_dim for d in G.shape]
                F = [torch.zeros(d, d, dtype=F64) if k else None for d, k in zip(G.shape, keep)]
                F = [
                    Fi if Fi is None else torch.lerp(Fi, gram(G, i), 1 - sb)
                    for i, Fi in enumerate(F)
                ]
                Q = [Fi if Fi is None else torch.linalg.eigh(Fi).eigenvectors.flip(1) for Fi in F]
                state[j] = dict(s=0, m=torch.zeros_like(G), v=torch.zeros_like(G), F=F, Q=Q)
                continue
            st = state[j]
            Gr = rotate(G, st["Q"])
            st["s"] += 1
            s = st["s"]
            st["m"] = beta1 * st["m"] + (1 - beta1) * Gr
            st["v"] = beta2 * st["v"] + (1 - beta2) * Gr**2
            N = rotate(st["m"] / (torch.sqrt(st["v"]) + eps), st["Q"], transpose=True)
            if normalize_grads:
                N = N / (1e-30 + torch.sqrt(torch.mean(N**2)))
            step_size = lr * math.sqrt(1 - beta2**s) / (1 - beta1**s) if correct_bias else lr
            w -= step_size * N
            w -= lr * weight_decay * w
            refresh = s % precondition_frequency == 0
            if refresh:
                m_original = rotate(st["m"], st["Q"], transpose=True)
            st["F"] = [
                Fi if Fi is None else torch.lerp(Fi, gram(G, i), 1 - sb)
                for i, Fi in enumerate(st["F"])
            ]
            if refresh:
                for i, (Fi, Qi) in enumerate(zip(st["F"], st["Q"])):
                    if Fi is None:
                        continue
                    order = torch.argsort(torch.diag(Qi.T @ Fi @ Qi), descending=True)
                    st["v"] = st["v"].index_select(i, order)
                    st["Q"][i] = torch.linalg.qr(Fi @ Qi[:, order]).Q
                st["m"] = rotate(m_original, st["Q"])
    return W


def run_optlib(params0, steps, loss_fn=noisy_loss, **kw):
    params = clone_params(params0)
    opt = optlib.SOAP(params, **kw)
    for t in range(steps):
        opt.zero_grad()
        loss_fn(params, t).backward()
        opt.step()
    return [p.detach() for p in params], opt


def assert_close(got, expected, rtol=1e-9, atol=1e-12):
    for i, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, i=i: f"param {i}: {m}")


# --- the update rule ----------------------------------------------------------------------

CONFIGS = {
    "defaults_f3": dict(precondition_frequency=3, max_precond_dim=8),
    "precondition_1d_f5": dict(precondition_1d=True, precondition_frequency=5, max_precond_dim=8),
    "shampoo_beta_no_wd": dict(
        shampoo_beta=0.9, weight_decay=0.0, precondition_frequency=4, max_precond_dim=8, lr=1e-2
    ),
    "normalize_no_bias_correction": dict(
        normalize_grads=True, correct_bias=False, betas=(0.9, 0.99), precondition_frequency=3,
        max_precond_dim=8,
    ),
    "every_step": dict(precondition_frequency=1, max_precond_dim=8, eps=1e-6),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_transcription(name):
    kw = CONFIGS[name]
    p0 = make_params(SHAPES, seed=len(name))
    ours, _ = run_optlib(p0, 16, **kw)
    assert_close(ours, reference_soap(p0, 16, **kw))


def test_reference_defaults():
    """Every default (f = 10, max_precond_dim = 10000): two basis refreshes in 21 calls."""
    p0 = make_params([(5,), (4, 6), (2, 3, 4)], seed=12)
    ours, _ = run_optlib(p0, 21)
    assert_close(ours, reference_soap(p0, 21))


def test_merge_dims_matches_reshaped_parameters():
    """merge_dims (and channels_last) is SOAP on the reshaped tensor; noisy_loss is the same
    for any reshaping or permutation of the parameters' entries when the noise is too."""
    shapes = [(2, 3, 4), (4, 1, 2), (2, 5, 3, 2), ()]
    views = [(6, 4), (8,), (20, 3), (1,)]  # the 4-D one is permuted to (2, 2, 5, 3) first
    assert [soap_merged_shape(s, 20) for s in [(2, 3, 4), (4, 1, 2), (2, 2, 5, 3), ()]] == views
    p0 = make_params(shapes, seed=13)

    def flat(x):  # the entries in the order the view sees them
        return (x.permute(0, 3, 1, 2) if x.dim() == 4 else x).reshape(-1)

    def loss_on_views(view_params, t):
        return noisy_loss([x.reshape(-1) for x in view_params], t)

    def loss_on_originals(params, t):
        return noisy_loss([flat(p) for p in params], t)

    kw = dict(merge_dims=True, max_precond_dim=20, precondition_frequency=8, precondition_1d=True)
    ours, _ = run_optlib(p0, 17, loss_fn=loss_on_originals, data_format="channels_last", **kw)
    view0 = [flat(p.detach()).reshape(v) for p, v in zip(p0, views)]
    ref_kw = {k: v for k, v in kw.items() if k != "merge_dims"}
    ref = reference_soap(view0, 17, loss_fn=loss_on_views, **ref_kw)
    assert_close([flat(p).reshape(v) for p, v in zip(ours, views)], ref)


@pytest.mark.parametrize(
    "shape, max_dim, expected",
    [  # the reference's merge_dims, worked by hand
        ((4, 8, 3, 3), 100, (96, 3)),
        ((5, 20000, 3), 10000, (5, 20000, 3)),
        ((20000, 2), 10000, (20000, 2)),
        ((1, 1), 10, (1,)),
        ((), 10, (1,)),
        ((3, 1, 4), 20, (12,)),
    ],
)
def test_soap_merged_shape(shape, max_dim, expected):
    assert soap_merged_shape(shape, max_dim) == expected


# --- special steps ------------------------------------------------------------------------


def test_first_step_only_builds_the_bases():
    (p,) = make_params([(4, 6)], seed=14)
    w0 = p.detach().clone()
    opt = optlib.SOAP([p], weight_decay=0.5)
    noisy_loss([p], 0).backward()
    G = p.grad.clone()
    opt.step()
    assert torch.equal(p.detach(), w0)  # not even weight decay
    state = opt.state[p]
    assert state["step"] == 0
    assert torch.equal(state["m"], torch.zeros_like(p)) and torch.equal(
        state["v"], torch.zeros_like(p)
    )
    for i, (F, Q) in enumerate(zip(state["factors"], state["Q"])):
        torch.testing.assert_close(F, 0.05 * gram(G, i), rtol=1e-14, atol=0)
        lam = torch.diag(Q.T @ F @ Q)
        assert torch.all(lam[:-1] >= lam[1:] - 1e-12)  # largest eigenvalue first
        torch.testing.assert_close(Q.T @ Q, torch.eye(Q.shape[0], dtype=F64), rtol=0, atol=1e-12)
    opt.zero_grad()
    noisy_loss([p], 1).backward()
    opt.step()
    assert state["step"] == 1 and not torch.equal(p.detach(), w0)


def test_bases_refresh_every_f_steps_by_one_power_iteration():
    (p,) = make_params([(3, 4)], seed=15)
    opt = optlib.SOAP([p], precondition_frequency=3)
    for t in range(8):  # calls 2..8 are Adam steps 1..7; refreshes at steps 3 and 6
        Q_before = [Q.clone() for Q in opt.state[p]["Q"]] if opt.state[p] else None
        v_before = opt.state[p]["v"].clone() if opt.state[p] else None
        opt.zero_grad()
        noisy_loss([p], t).backward()
        opt.step()
        if Q_before is None:
            continue
        s = opt.state[p]["step"]
        same = all(torch.equal(a, b) for a, b in zip(Q_before, opt.state[p]["Q"]))
        assert same == (s % 3 != 0), f"Adam step {s}"
        if s % 3 == 0:
            F = opt.state[p]["factors"]
            v = v_before * 0.95 + 0.05 * rotate(p.grad, Q_before) ** 2
            for i in range(2):
                order = torch.argsort(
                    torch.diag(Q_before[i].T @ F[i] @ Q_before[i]), descending=True
                )
                expected = torch.linalg.qr(F[i] @ Q_before[i][:, order]).Q
                torch.testing.assert_close(opt.state[p]["Q"][i], expected, rtol=1e-12, atol=1e-14)
                v = v.index_select(i, order)
            torch.testing.assert_close(opt.state[p]["v"], v, rtol=1e-12, atol=1e-20)


# --- hyperparameters, resume, zero gradients, failures ------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(1.0, 0.95)), "beta1"),
        (dict(betas=(0.9, 1.0)), "beta2"),
        (dict(betas=(0.9,)), "betas"),
        (dict(shampoo_beta=1.0), "shampoo_beta"),
        (dict(shampoo_beta=float("nan")), "shampoo_beta"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.01), "weight_decay"),
        (dict(precondition_frequency=0), "precondition_frequency"),
        (dict(max_precond_dim=0), "max_precond_dim"),
        (dict(data_format="NHWC"), "data_format"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.SOAP([torch.zeros(2, 2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(
    "dtype, kw",
    [
        (F64, dict(precondition_frequency=3)),
        (
            F64,
            dict(
                precondition_frequency=2, merge_dims=True, max_precond_dim=8, precondition_1d=True
            ),
        ),
        (torch.float32, dict(precondition_frequency=3, normalize_grads=True)),
        (torch.bfloat16, dict(precondition_frequency=3)),
    ],
    ids=["float64", "float64-merge-1d", "float32", "bfloat16"],
)
def test_state_dict_round_trip_resumes_bit_identically(dtype, kw):
    n = 7

    def fresh():
        return [p.detach().to(dtype).requires_grad_() for p in make_params(SHAPES, seed=16)]

    def steps(opt, params, ts):
        for _ in ts:
            opt.zero_grad()
            quartic_loss(params).backward()
            opt.step()

    params_a = fresh()
    opt_a = optlib.SOAP(params_a, **kw)
    steps(opt_a, params_a, range(2 * n))

    params_b = fresh()
    opt_b = optlib.SOAP(params_b, **kw)
    steps(opt_b, params_b, range(n))
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in params_b], "opt": opt_b.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    params_c = [p.clone().requires_grad_() for p in saved["params"]]
    opt_c = optlib.SOAP(params_c, **kw)
    opt_c.load_state_dict(saved["opt"])
    assert all(
        s["v"].dtype == torch.promote_types(dtype, torch.float32) for s in opt_c.state.values()
    )
    steps(opt_c, params_c, range(n, 2 * n))
    for a, c in zip(params_a, params_c):
        assert torch.equal(a, c)


@pytest.mark.parametrize(
    "kw",
    [dict(weight_decay=0.0), dict(weight_decay=0.0, normalize_grads=True, precondition_1d=True)],
)
def test_zero_gradient_gives_no_nan(kw):
    params = make_params(SHAPES, seed=17)
    before = [p.detach().clone() for p in params]
    opt = optlib.SOAP(params, precondition_frequency=2, **kw)
    for _ in range(5):  # the no-op step, then Adam steps with a refresh at steps 2 and 4
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    for p, b in zip(params, before):
        assert torch.equal(p.detach(), b)
    for s in opt.state.values():
        for x in [
            s["m"],
            s["v"],
            *[F for F in s["factors"] if F is not None],
            *[Q for Q in s["Q"] if Q is not None],
        ]:
            assert torch.isfinite(x).all()


def test_eigh_failure_is_retried_then_falls_back_to_the_identity(monkeypatch):
    p0 = make_params([(4, 4), (3, 3)], seed=18)  # square: full-rank first factors
    kw = dict(precondition_frequency=3)
    expected, _ = run_optlib(p0, 6, **kw)
    real_eigh = torch.linalg.eigh
    calls = {"n": 0}

    def fails_every_other_call(A):
        calls["n"] += 1
        if calls["n"] % 2 == 1:
            raise torch.linalg.LinAlgError("simulated failure to converge")
        return real_eigh(A)

    monkeypatch.setattr(torch.linalg, "eigh", fails_every_other_call)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retried, _ = run_optlib(p0, 6, **kw)
    assert_close(retried, expected, rtol=1e-7, atol=1e-10)

    def always_fails(A):
        raise torch.linalg.LinAlgError("simulated failure to converge")

    monkeypatch.setattr(torch.linalg, "eigh", always_fails)
    with pytest.warns(RuntimeWarning, match="identity basis"):
        params = clone_params(p0)
        opt = optlib.SOAP(params, **kw)
        opt.zero_grad()
        noisy_loss(params, 0).backward()
        opt.step()
    for s in opt.state.values():
        assert all(torch.equal(Q, torch.eye(Q.shape[0], dtype=F64)) for Q in s["Q"])


# --- a real workload ----------------------------------------------------------------------


def test_trains_digits_mlp_with_defaults():
    data, model = digits_mlp()
    opt = optlib.SOAP(model.parameters())
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(data.X_train), data.y_train)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[1] == losses[0]  # the first step only builds the bases
    assert losses[-1] < 0.95 * losses[0]
