r"""optlib.KFAC against the update rule of alecwangcq/KFAC-Pytorch (``optimizers/kfac.py``,
``utils/kfac_utils.py``), transcribed plainly below for a Linear–Tanh–Linear network and a
Conv2d–Tanh–Linear network (float64, mean cross-entropy, ``batch_averaged=True``):

.. math::

   t \bmod T_\text{cov} = 0:\ A \leftarrow \rho A + (1-\rho)\tfrac1B \bar a^\top \bar a,\
   G \leftarrow \rho G + (1-\rho)\tfrac1B \bar s^\top \bar s \quad (A = G = I \text{ first}) \\
   t \bmod T_\text{inv} = 0:\ \text{freeze } K = G \otimes A; \qquad
   \operatorname{vec} V = (K + \gamma I)^{-1} \operatorname{vec} [\nabla W\ \nabla b] \\
   \nu = \min(1, \sqrt{\kappa / \textstyle\sum \eta^2 \langle V, \nabla\rangle}); \quad
   d = \nu V + \lambda\theta\,[t \ge 20 T_\text{cov}]; \quad
   b \leftarrow \mu b + d\ (b = d \text{ first}); \quad \theta \leftarrow \theta - \eta b

For a Linear layer :math:`\bar a = [x\ 1]` and :math:`\bar s = B\,\partial L/\partial z`; for a
convolution the rows are the :math:`L` output positions' patches, :math:`\bar a = [p\ 1]/L`,
:math:`\bar s = BL\,\partial L/\partial z` and the divisor is :math:`BL` for :math:`G`. The
transcription solves with the Kronecker product instead of eigendecompositions: the two agree
when no eigenvalue falls under the reference's 1e-10 floor, as here (the factors start at I).
"""

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import optlib
from optlib.optim.kfac import is_kfac_layer
from optlib.problems import digits_mlp

B = 16


def _data(seed=0, image=False):
    g = torch.Generator().manual_seed(seed)
    shape = (B, 2, 5, 5) if image else (B, 5)
    X = torch.randn(shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (B,), generator=g)
    return X, y


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def _cnn():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)  # 5x5 -> 3x3
    return nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(27, 3)).double()


def _patches(x, k=3, stride=2, pad=1):
    """Rows of the unfolded input, written with loops: (B·positions, C·k·k)."""
    xp = F.pad(x, (pad, pad, pad, pad))
    n_out = (x.shape[2] + 2 * pad - k) // stride + 1
    rows = [
        xp[:, :, i * stride : i * stride + k, j * stride : j * stride + k].reshape(x.shape[0], -1)
        for i in range(n_out)
        for j in range(n_out)
    ]
    return torch.stack(rows, 1).reshape(-1, rows[0].shape[1]), n_out * n_out


def kfac_transcribed(model, X, y, steps, *, lr, momentum, rho, damping, kl, wd, TCov, TInv):
    """Train a copy of ``model`` with the transcribed rule; the layers are ``model[0]`` and
    ``model[-1]``."""
    layers = [model[0], model[-1]]
    params = [p for m in layers for p in (m.weight, m.bias)]
    A, G, K, bufs = {}, {}, {}, {}
    for t in range(steps):
        for p in params:
            p.grad = None
        z_in, z_out = [], []
        h = X
        for m in model:
            if m in layers:
                z_in.append(h)
                h = m(h)
                h.retain_grad()
                z_out.append(h)
            else:
                h = m(h)
        F.cross_entropy(h, y).backward()
        with torch.no_grad():
            if t % TCov == 0:
                for i, m in enumerate(layers):
                    x, s = z_in[i], z_out[i].grad
                    if isinstance(m, nn.Conv2d):
                        a, L = _patches(x)
                        a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1) / L
                        A_new = a.T @ a / B
                        s = s.permute(0, 2, 3, 1).reshape(-1, s.shape[1]) * B * L
                        G_new = s.T @ s / (B * L)
                    else:
                        a = torch.cat([x, torch.ones(B, 1, dtype=x.dtype)], 1)
                        A_new = a.T @ a / B
                        G_new = (s * B).T @ (s * B) / B
                    if t == 0:
                        A[i] = torch.eye(len(A_new), dtype=A_new.dtype)
                        G[i] = torch.eye(len(G_new), dtype=G_new.dtype)
                    A[i] = rho * A[i] + (1 - rho) * A_new
                    G[i] = rho * G[i] + (1 - rho) * G_new
            if t % TInv == 0:
                for i in range(len(layers)):
                    K[i] = torch.kron(G[i], A[i])
            V, vg = {}, 0.0
            for i, m in enumerate(layers):
                Mg = torch.cat([m.weight.grad.reshape(len(m.weight), -1), m.bias.grad[:, None]], 1)
                eye = torch.eye(len(K[i]), dtype=K[i].dtype)
                Vi = torch.linalg.solve(K[i] + damping * eye, Mg.reshape(-1)).reshape(Mg.shape)
                vg += lr**2 * (Vi * Mg).sum().item()
                V[m.weight], V[m.bias] = Vi[:, :-1].reshape_as(m.weight), Vi[:, -1]
            nu = min(1.0, math.sqrt(kl / vg))
            for p in params:
                d = nu * V[p]
                if t >= 20 * TCov:
                    d = d + wd * p
                bufs[p] = d if t == 0 else momentum * bufs[p] + d
                p -= lr * bufs[p]
    return [p.detach().clone() for p in params]


def _kfac_run(model, X, y, steps, **kw):
    opt = optlib.KFAC(model, **kw)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return [p.detach().clone() for m in (model[0], model[-1]) for p in (m.weight, m.bias)], opt


CONFIGS = [
    dict(lr=0.1, momentum=0.9, rho=0.95, damping=1e-3, kl=1e-3, wd=1e-2, TCov=2, TInv=4),
    dict(lr=0.05, momentum=0.0, rho=0.8, damping=1e-2, kl=10.0, wd=0.0, TCov=1, TInv=3),
    dict(lr=0.2, momentum=0.5, rho=0.9, damping=3e-2, kl=1e-2, wd=1e-1, TCov=1, TInv=1),
]


@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["clipped+wd", "unclipped", "every-step"])
def test_matches_transcribed_rule(net, cfg):
    make = _mlp if net == "mlp" else _cnn
    X, y = _data(image=net == "cnn")
    steps = 45 if cfg["TCov"] == 2 else 24  # 45 crosses 20·TCov, where weight decay starts
    kw = dict(cfg)
    ref = kfac_transcribed(make(), X, y, steps, **kw)
    kw["stat_decay"], kw["kl_clip"], kw["weight_decay"] = kw.pop("rho"), kw.pop("kl"), kw.pop("wd")
    ours, opt = _kfac_run(make(), X, y, steps, **kw)
    assert opt.steps == steps
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_kl_clip_is_active_in_the_first_config():
    """Guard for the test above: with kl_clip=1e-3 the step is really rescaled (nu < 1)."""
    X, y = _data()
    steps = []
    for kl_clip in (1e-3, 1e9):
        model = _mlp()
        opt = optlib.KFAC(model, lr=0.1, kl_clip=kl_clip)
        before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        F.cross_entropy(model(X), y).backward()
        opt.step()
        after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        steps.append((after - before).norm())
    assert steps[0] < 0.9 * steps[1]


def test_statistics_and_eigenbasis_refresh_on_schedule():
    model = _mlp()
    X, y = _data()
    opt = optlib.KFAC(model, lr=0.05, TCov=3, TInv=6)
    W = model[0].weight
    A_prev = QA_prev = None
    for t in range(13):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
        st = opt.state[W]
        if t > 0:
            assert torch.equal(st["A"], A_prev) == (t % 3 != 0), t
            assert torch.equal(st["QA"], QA_prev) == (t % 6 != 0), t
        A_prev, QA_prev = st["A"].clone(), st["QA"].clone()
        with torch.no_grad():
            model(X)  # evaluation passes never feed the statistics
        assert torch.equal(st["A"], A_prev)


def test_sampled_fisher_backward():
    model = _mlp()
    X, y = _data()
    opt = optlib.KFAC(model, TCov=2)
    logits = model(X)
    gen = torch.Generator().manual_seed(3)
    opt.backward_sampled_fisher(logits, generator=gen)
    assert opt.acc_stats is False
    assert all(p.grad is None for p in model.parameters())
    # G of the last layer is the EMA (from I) of the sampled labels' output gradients
    y_s = torch.multinomial(torch.softmax(logits.detach(), 1), 1, generator=gen.manual_seed(3))
    s = torch.autograd.grad(F.cross_entropy(logits, y_s.squeeze(1)), logits)[0] * B
    expected = 0.95 * torch.eye(3, dtype=torch.float64) + 0.05 * s.T @ s / B
    torch.testing.assert_close(opt.state[model[2].weight]["G"], expected)
    G_before = opt.state[model[2].weight]["G"].clone()
    F.cross_entropy(logits, y).backward()  # acc_stats is off: the training loss adds nothing
    assert torch.equal(opt.state[model[2].weight]["G"], G_before)
    opt.step()
    # off a statistics step the helper does nothing, gradients included
    opt.zero_grad()
    logits = model(X)
    F.cross_entropy(logits, y).backward(retain_graph=True)
    g = model[0].weight.grad.clone()
    opt.backward_sampled_fisher(logits)
    assert torch.equal(model[0].weight.grad, g)


def test_zero_gradients_give_no_nan():
    model = _mlp()
    X, _ = _data()
    opt = optlib.KFAC(model, weight_decay=0.1, TCov=1, TInv=1)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        opt.zero_grad()
        (0.0 * model(X).sum()).backward()
        opt.step()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)
    for state in opt.state.values():
        for v in state.values():
            assert torch.isfinite(v).all()


def test_only_supported_layers_are_preconditioned():
    grouped = nn.Conv2d(4, 4, 3, groups=2)
    assert not is_kfac_layer(grouped)
    assert not is_kfac_layer(nn.Conv2d(2, 2, 3, padding="same"))
    assert is_kfac_layer(nn.Conv2d(2, 2, 3)) and is_kfac_layer(nn.Linear(2, 2))
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    opt = optlib.KFAC(model)
    assert opt.layers == [model[0], model[2]]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-0.1), "lr"),
        (dict(momentum=-0.5), "momentum"),
        (dict(stat_decay=1.0), "stat_decay"),
        (dict(damping=0.0), "damping"),
        (dict(kl_clip=float("nan")), "kl_clip"),
        (dict(weight_decay=-1e-3), "weight_decay"),
        (dict(TCov=0), "TCov"),
        (dict(TInv=2.5), "TInv"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        optlib.KFAC(_mlp(), **kwargs)


def test_bad_models():
    with pytest.raises(ValueError, match="model"):
        optlib.KFAC(nn.Sequential(nn.LayerNorm(3), nn.Tanh()))
    with pytest.raises(ValueError, match="model"):
        optlib.KFAC([torch.zeros(2, requires_grad=True)])


def _digits_kfac(steps, *, resume_at=None, sampled=False, lr=0.05, dtype=torch.float64):
    data, model = digits_mlp(dtype=dtype)

    def make(model):
        return optlib.KFAC(model, lr=lr, weight_decay=1e-3, TCov=2, TInv=3)

    opt = make(model)
    gen = torch.Generator().manual_seed(0)
    for t in range(steps):
        if t == resume_at:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
            buf.seek(0)
            saved = torch.load(buf, weights_only=False)
            opt.remove_hooks()
            _, model = digits_mlp(dtype=dtype, seed=1)
            model.load_state_dict(saved["model"])
            opt = make(model)
            opt.load_state_dict(saved["opt"])
        opt.zero_grad()
        logits = model(data.X_train)
        loss = F.cross_entropy(logits, data.y_train)
        if sampled:
            opt.backward_sampled_fisher(logits, generator=gen)
        loss.backward()
        opt.step()
    with torch.no_grad():
        loss = F.cross_entropy(model(data.X_train), data.y_train).item()
    return model, loss


def test_state_dict_round_trip_is_bit_identical():
    a, _ = _digits_kfac(9)
    b, _ = _digits_kfac(9, resume_at=4)  # resumes between refreshes (TCov=2, TInv=3)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("sampled", [False, True], ids=["empirical", "sampled-fisher"])
def test_trains_digits_mlp(sampled):
    data, model = digits_mlp()
    with torch.no_grad():
        before = F.cross_entropy(model(data.X_train), data.y_train).item()
    _, after = _digits_kfac(60, sampled=sampled, dtype=torch.float32)
    assert after < 0.25 * before, (before, after)
