"""optlib.experiments.lr_wd_grid: K batched runs equal K separate runs; the grid summaries; the
cached grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import optlib
from optlib import problems
from optlib.course import cache
from optlib.experiments import lr_wd_grid


def _separate_run(cls, lr, wd, X, y, *, steps, batch_size, seed=0, n_hidden=16, **model_kw):
    """One ordinary run: a single-model BatchedMLP (same init as problems.mlp), an optlib
    optimizer with its own weight_decay, the same batches and cosine schedule."""
    model = lr_wd_grid.BatchedMLP(1, X.shape[1], n_hidden, 10, seed=seed, **model_kw)
    params = [p.detach()[0] for p in model.stacked()]
    for p in params:
        p.requires_grad_()
    opt = cls(params, lr=lr, weight_decay=wd)
    g = torch.Generator().manual_seed(seed)
    n, per_epoch = len(y), max(1, len(y) // batch_size)
    for t in range(steps):
        if t % per_epoch == 0:
            perm = torch.randperm(n, generator=g)
        k = t % per_epoch
        idx = perm[k * batch_size : (k + 1) * batch_size]
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t / steps))
        opt.zero_grad()
        W1, b1, W2, b2 = params
        z = X[idx] @ W1.T + b1
        if model.norm:
            z = torch.nn.functional.layer_norm(z, z.shape[-1:])
        out = torch.tanh(z) @ W2.T + b2
        if model.temperature is not None:
            out = model.temperature * torch.nn.functional.layer_norm(out, out.shape[-1:])
        torch.nn.functional.cross_entropy(out, y[idx]).backward()
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize(
    "base, reference, decoupled, model_kw",
    [
        (optlib.Adam, optlib.Adam, False, {}),
        (optlib.Adam, optlib.AdamW, True, {"norm": True, "temperature": 4.0}),
        (optlib.SGD, optlib.SGD, False, {"norm": True}),
    ],
)
def test_batched_runs_equal_separate_runs(base, reference, decoupled, model_kw):
    data = problems.digits()
    X, y = data.X_train[:100], data.y_train[:100]
    settings = [(0.005, 0.1), (0.02, 0.0), (0.02, 0.5), (0.05, 1e-3)]  # sorted by lr
    model = lr_wd_grid.BatchedMLP(len(settings), 64, 16, 10, seed=3, **model_kw)
    groups = [
        {"params": model.views(0, 1), "lr": 0.005},
        {"params": model.views(1, 3), "lr": 0.02},
        {"params": model.views(3, 4), "lr": 0.05},
    ]
    wd = torch.tensor([w for _, w in settings])
    lr_wd_grid.train_batched(
        model, base(groups), X, y, steps=30, batch_size=32, seed=3, weight_decay=wd,
        decoupled=decoupled,
    )  # fmt: skip
    for k, (lr, w) in enumerate(settings):
        ref = _separate_run(reference, lr, w, X, y, steps=30, batch_size=32, seed=3, **model_kw)
        for p, q in zip(model.views(k, k + 1), ref):
            torch.testing.assert_close(p[0], q, rtol=1e-4, atol=1e-6)


def test_models_start_from_problems_mlp_and_views_share_storage():
    model = lr_wd_grid.BatchedMLP(3, 64, 8, 10, seed=1)
    ref = problems.mlp(64, 8, 10, seed=1)
    for k in range(3):
        W1, b1, W2, b2 = model.views(k, k + 1)
        assert torch.equal(W1[0], ref[0].weight) and torch.equal(b2[0], ref[2].bias)
    W1 = model.views(1, 3)[0]
    W1.add_(1.0)
    assert torch.equal(model.W1[1:], W1) and not torch.equal(model.W1[0], model.W1[1])
    assert W1.grad.data_ptr() == model.W1.grad[1].data_ptr()
    assert model(torch.zeros(5, 64)).shape == (3, 5, 10)
    norms = model.squared_norms()
    assert norms.shape == (3,)
    torch.testing.assert_close(norms[0], sum((p[0] ** 2).sum() for p in model.stacked()))


def test_scale_invariance_with_norm_and_temperature():
    model = lr_wd_grid.BatchedMLP(1, 64, 8, 10, seed=0, norm=True, temperature=3.0)
    X = torch.randn(7, 64)
    before = model(X)
    with torch.no_grad():
        for p in model.stacked():
            p.mul_(5.0)
    torch.testing.assert_close(model(X), before, rtol=1e-4, atol=1e-5)


def test_groups_must_cover_every_model():
    model = lr_wd_grid.BatchedMLP(2, 4, 3, 2)
    opt = optlib.SGD(model.views(0, 1), lr=0.1)
    with pytest.raises(ValueError, match="every model"):
        lr_wd_grid.train_batched(
            model, opt, torch.zeros(4, 4), torch.zeros(4, dtype=torch.long), steps=1,
            batch_size=2,
        )  # fmt: skip


def test_schedule_is_validated():
    model = lr_wd_grid.BatchedMLP(1, 4, 3, 2)
    opt = optlib.SGD(model.views(0, 1), lr=0.1)
    with pytest.raises(ValueError, match="schedule"):
        lr_wd_grid.train_batched(
            model, opt, torch.zeros(4, 4), torch.zeros(4, dtype=torch.long), steps=1,
            batch_size=2, schedule="linear",
        )  # fmt: skip


def test_digits_grid_reports_every_setting_and_memoises(tmp_path, monkeypatch):
    """Chapter 6 memoises the grid with optlib.course.cache; the layer below stays cache-free."""
    monkeypatch.setenv("OPTLIB_CACHE_DIR", str(tmp_path))
    settings = [[0.01, 0.0], [10.0, 0.0], [0.01, 0.5]]
    kw = dict(n_train=200, n_hidden=8, steps=40, batch_size=50, decoupled=True)
    digits_grid = cache.memoize(lr_wd_grid.digits_grid)
    first = digits_grid("Adam", settings, **kw)
    assert first["settings"] == settings
    assert len(first["test_loss"]) == len(first["test_accuracy"]) == 3
    assert 0.0 <= min(first["test_accuracy"]) <= max(first["test_accuracy"]) <= 1.0
    assert first["train_loss"][0] < math.log(10)  # it learned something
    assert first["test_loss"][2] != first["test_loss"][0]  # the decay acted, in its own run
    alone = lr_wd_grid.digits_grid("Adam", [settings[2]], **kw)
    assert alone["test_loss"][0] == pytest.approx(first["test_loss"][2], rel=1e-5)
    assert digits_grid.cache_path("Adam", settings, **kw).is_file()
    assert digits_grid("Adam", settings, **kw) == first
    with pytest.raises(ValueError, match="not an optlib optimizer"):
        lr_wd_grid.digits_grid("adamw", settings, **kw)


def test_best_per_row_refines_a_parabola_and_keeps_edges():
    cols = np.logspace(-4, 0, 5)  # log10: -4 .. 0
    c = np.log10(cols)
    rows = [(c + 2.3) ** 2, (c + 0.2) ** 2 + 0.0 * c, c * 0 + np.array([1, 2, 3, 4, 5.0])]
    best = lr_wd_grid.best_per_row(rows, cols)
    assert best[0] == pytest.approx(10**-2.3)
    assert best[1] == pytest.approx(1.0)  # minimum at the edge column (log10 = 0)
    assert best[2] == pytest.approx(1e-4)
    nan_row = [[np.nan, 3.0, 1.0, 2.0, np.nan]]
    assert 1e-2 < lr_wd_grid.best_per_row(nan_row, cols)[0] < 1e-1


def test_optimum_slope():
    rows = np.logspace(-3, -1, 5)
    assert lr_wd_grid.optimum_slope(rows, 1e-4 / rows) == pytest.approx(-1.0)
    assert lr_wd_grid.optimum_slope(rows, np.full(5, 0.3)) == pytest.approx(0.0, abs=1e-12)
