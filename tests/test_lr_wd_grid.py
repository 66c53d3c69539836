"""optlib.experiments.lr_wd_grid: K batched runs equal K separate runs; the grid summaries; the
cached grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import optlib
from optlib import problems
from optlib._seed import derive_seed
from optlib.course import cache
from optlib.experiments import lr_wd_grid

from ._rounding import max_abs_diff, nudged, rounding_tolerance


def _separate_run(
    cls, lr, wd, X, y, *, steps, batch_size, seed=0, n_hidden=16, nudge=False, **model_kw
):
    """One ordinary run: a single-model BatchedMLP (same init as problems.mlp), an optlib
    optimizer with its own weight_decay, the same batches and cosine schedule. ``nudge``: start
    one ulp away (to measure how far the run carries a rounding-sized difference)."""
    model = lr_wd_grid.BatchedMLP(1, X.shape[1], n_hidden, 10, seed=seed, **model_kw)
    params = [p.detach()[0] for p in model.stacked()]
    if nudge:
        params = nudged(params)
    for p in params:
        p.requires_grad_()
    opt = cls(params, lr=lr, weight_decay=wd)
    g = torch.Generator().manual_seed(derive_seed(seed))  # as train_batched draws its batches
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
        run = dict(steps=30, batch_size=32, seed=3, **model_kw)
        ref = _separate_run(reference, lr, w, X, y, **run)
        # Batched and separate runs differ in the order of float32 sums (batched matmuls): a few
        # ulps per step, carried as far as the run carries a one-ulp change of its start
        # (tests/_rounding.py). Measured: at most 1.8e-7 (3 ulps) apart; tolerances 2e-6 to 9e-5.
        response = max_abs_diff(ref, _separate_run(reference, lr, w, X, y, nudge=True, **run))
        size = max(float(q.abs().max()) for q in ref)
        atol = rounding_tolerance(30, response, size, torch.float32)
        for p, q in zip(model.views(k, k + 1), ref):
            torch.testing.assert_close(p[0], q, rtol=0, atol=atol)


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
    # the same 610 positive float32 squares summed in another order: at most 610 * eps32
    # relative (Higham's bound for a sum of positive terms)
    expected = sum((p[0] ** 2).sum() for p in model.stacked())
    rtol = 610 * torch.finfo(torch.float32).eps
    torch.testing.assert_close(norms[0], expected, rtol=rtol, atol=0)


def test_scale_invariance_with_norm_and_temperature(monkeypatch):
    """Multiplying every weight by s changes the function only through layer norm's eps, and
    exactly so: LN_eps(s z) = s (z - mean) / sqrt(s^2 var + eps) = LN_{eps/s^2}(z). So the scaled
    model equals the unscaled one with eps/s^2 in both layer norms, up to float64 rounding. (The
    eps term itself moves the logits by up to 1e-3 here, depending on the inputs: comparing the
    scaled and unscaled models directly measures eps, not invariance.)"""
    s = 5.0  # not a power of two: every scaled product rounds differently
    X = torch.randn(7, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = lr_wd_grid.BatchedMLP(1, 64, 8, 10, seed=0, norm=True, temperature=3.0).double()
    layer_norm = torch.nn.functional.layer_norm
    with monkeypatch.context() as m:
        m.setattr(
            torch.nn.functional,
            "layer_norm",
            lambda x, shape, eps=1e-5: layer_norm(x, shape, eps=eps / s**2),
        )
        expected = model(X)
    with torch.no_grad():
        for p in model.stacked():
            p.mul_(s)
    # Rounding: a length-64 dot product is exact to 64*eps relative (Higham), carried through two
    # layer norms whose 1/std is <= 4 here and the temperature 3: <= 64*eps*16*3*max|logit|
    # (~5e-12 at |logit| <= 7.4); measured 7e-15, while a broken invariance moves logits by ~1e-3
    tol = 64 * torch.finfo(torch.float64).eps * 16 * 3 * expected.abs().max().item()
    torch.testing.assert_close(model(X), expected, rtol=0, atol=tol)


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
    # the same run batched with two others or alone: float32 sums in another order, a few ulps
    # per step over 40 steps (40 x 4 x eps32 = 1e-5 relative; measured: identical here)
    rel = 40 * 4 * torch.finfo(torch.float32).eps
    assert alone["test_loss"][0] == pytest.approx(first["test_loss"][2], rel=rel)
    assert digits_grid.cache_path("Adam", settings, **kw).is_file()
    assert digits_grid("Adam", settings, **kw) == first
    with pytest.raises(ValueError, match="not an optlib optimizer"):
        lr_wd_grid.digits_grid("adamw", settings, **kw)


def test_best_per_row_refines_a_parabola_and_keeps_edges():
    cols = np.logspace(-4, 0, 5)  # log10: -4 .. 0
    c = np.log10(cols)
    rows = [(c + 2.3) ** 2, (c + 0.2) ** 2 + 0.0 * c, c * 0 + np.array([1, 2, 3, 4, 5.0])]
    best = lr_wd_grid.best_per_row(rows, cols)
    # a parabola's vertex from three of its points is exact: float64 rounding of a few
    # operations on O(1) numbers, then 10**x multiplies the absolute error by ln 10; rel 1e-12
    # is ~4500 ulps, far below any misplaced vertex (a grid step is a factor of 10)
    assert best[0] == pytest.approx(10**-2.3, rel=1e-12)
    assert best[1] == 1.0  # minimum at the edge column (log10 = 0), returned as is
    assert best[2] == pytest.approx(1e-4, rel=1e-15)  # 10**-4.0 (one rounding)
    nan_row = [[np.nan, 3.0, 1.0, 2.0, np.nan]]
    assert 1e-2 < lr_wd_grid.best_per_row(nan_row, cols)[0] < 1e-1


def test_optimum_slope():
    rows = np.logspace(-3, -1, 5)
    # least squares on 5 exact points of a line with O(1) coordinates: exact up to rounding of a
    # few dozen operations, ~1e-15; 1e-12 leaves room for polyfit's SVD
    assert lr_wd_grid.optimum_slope(rows, 1e-4 / rows) == pytest.approx(-1.0, rel=1e-12)
    assert lr_wd_grid.optimum_slope(rows, np.full(5, 0.3)) == pytest.approx(0.0, abs=1e-12)


def test_single_decay_penalty_is_the_worst_row_cost_of_the_best_column():
    separable = [[2.0, 1.0, 3.0], [4.0, 2.0, 5.0]]
    assert lr_wd_grid.single_decay_penalty(separable) == (1.0, 1)
    diagonal = [[1.0, 2.0, 4.0], [2.0, 1.0, 2.0], [4.0, 2.0, 1.0]]
    assert lr_wd_grid.single_decay_penalty(diagonal) == (2.0, 1)
    diverged = [[1.0, float("nan")], [1.0, 1.5]]
    assert lr_wd_grid.single_decay_penalty(diverged) == (1.0, 0)
