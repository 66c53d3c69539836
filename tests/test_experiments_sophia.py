"""optlib.experiments.sophia: SophiaG with its Gauss-Newton-Bartlett refresh on stacked models
equals the authors' training loop run on each model alone; the clipped fraction counts what the
update clips; lm_race reports plain data in the order of its runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import optlib
from optlib._seed import derive_seed
from optlib.experiments.sophia import (
    HESSIAN_STREAM,
    ClippedFraction,
    GNBRefresh,
    clipped_fraction,
    lm_race,
    steps_to_target,
)
from optlib.experiments.stacked import BatchStream, StackedModels, train_stacked
from optlib.optim.sophia import gnb_loss
from optlib.problems import workload

HYPER = dict(betas=(0.9, 0.99), rho=0.04, weight_decay=0.1)
TINY_LM = dict(context=16, d=16, n_layers=1, corpus_options=dict(n_files=6, n_val_files=2))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _alone(w, seed, lr, steps, batch_size, every):
    """The reference loop (Liuhong99/Sophia's train_sophiag.py, without gradient clipping) on
    one model: step with bs = the batch's rows, then every `every` steps a GNB refresh on the
    Hessian stream's batch with labels drawn from the refresh's generator."""
    model = w.model(seed)
    opt = optlib.SophiaG(model.parameters(), lr=lr, foreach=False, **HYPER)
    X, y = w.data.X_train, w.data.y_train
    train_batches = BatchStream(len(y), batch_size, seed)
    hessian_batches = BatchStream(len(y), batch_size, seed + HESSIAN_STREAM)
    g = torch.Generator().manual_seed(derive_seed(HESSIAN_STREAM + seed))
    for t in range(steps):
        idx = train_batches.next()
        opt.zero_grad()
        w.loss_fn(model(X[idx]), y[idx]).backward()
        opt.step(bs=batch_size)
        if (t + 1) % every == 0:
            opt.zero_grad()
            gnb_loss(model(X[hessian_batches.next()]), generator=g).backward()
            opt.update_hessian()
    return model


def _stacked(w, seeds, lrs, steps, batch_size, every, grouped):
    stacked = StackedModels([w.model(s) for s in seeds])
    if grouped:  # one group whose views cover every copy (all share one lr)
        assert len(set(lrs)) == 1
        groups = [{"params": stacked.views(0, len(seeds)), "lr": lrs[0]}]
    else:
        groups = [{"params": stacked.views(k), "lr": lr} for k, lr in enumerate(lrs)]
    opt = optlib.SophiaG(groups, foreach=True, **HYPER)
    refresh = GNBRefresh(opt, w.data.X_train, every=every, batch_size=batch_size, seeds=seeds)
    train_stacked(stacked, opt, w.data.X_train, w.data.y_train, w.loss_fn, steps=steps,
                  batch_size=batch_size, seeds=seeds, callback=refresh,
                  step_kwargs={"bs": batch_size})  # fmt: skip
    assert refresh.refreshes == steps // every
    return stacked, opt


def _close(a, b):
    # float64: batched against unbatched matrix products round differently; a few steps of
    # rounding, 1e-9 of the largest weight (as in tests/test_stacked.py)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        scale = float(q.detach().abs().max())
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-9 * scale, msg=name)


def test_a_stacked_sophiag_run_equals_the_reference_loop_alone():
    w = workload("digits_mlp", dtype=torch.float64)
    seed, lr, steps, B, every = 3, 1e-2, 23, 32, 5
    stacked, opt = _stacked(w, [seed], [lr], steps, B, every, grouped=False)
    _close(stacked.model(0), _alone(w, seed, lr, steps, B, every))
    # the Hessian estimate is live (not the h = 0 of a run without refreshes)
    params = opt.param_groups[0]["params"]
    assert all(float(opt.state[p]["hessian"].abs().max()) > 0 for p in params)


def test_copies_sharing_one_group_take_the_steps_they_take_in_groups_of_their_own():
    w = workload("digits_mlp", dtype=torch.float64)
    seeds, steps, B, every = [0, 1, 2], 17, 16, 4
    one, _ = _stacked(w, seeds, [3e-3] * 3, steps, B, every, grouped=True)
    each, _ = _stacked(w, seeds, [3e-3] * 3, steps, B, every, grouped=False)
    for k in range(3):
        _close(one.model(k), each.model(k))


def _sophia_with_state(cls, m, h, **hyper):
    p = torch.zeros_like(m, requires_grad=True)
    opt = cls([p], **hyper)
    opt.state[p]["step"] = torch.tensor(1.0)
    opt.state[p]["exp_avg"] = m.clone()
    opt.state[p]["hessian"] = h.clone()
    return opt


def test_clipped_fraction_counts_the_coordinates_that_move_by_lr():
    m = torch.tensor([1.0, -1.0, 0.6, 0.0, 2e-3, -3.0], dtype=torch.float64)
    h = torch.tensor([0.0, 1e-3, 1.0, 0.0, 1.0, 10.0], dtype=torch.float64)
    # SophiaG, rho * bs = 0.5: denominators 1e-15, 5e-4, 0.5, 1e-15, 0.5, 5 (+ eps) -> clipped:
    # 1, 1, 1, 0 (m = 0: ratio 0), 0, 0
    opt = _sophia_with_state(optlib.SophiaG, m, h, rho=0.05)
    assert clipped_fraction(opt, opt.param_groups[0], bs=10) == pytest.approx(3 / 6)
    # SophiaH, negative curvature is floored at eps: clipped (a full sign step)
    h_neg = torch.tensor([-1.0, -1e-3, 1.0, -5.0, 1.0, 10.0], dtype=torch.float64)
    opt = _sophia_with_state(optlib.SophiaH, m, h_neg, rho=1.0)
    # max(h, 1e-12): 1e-12, 1e-12, 1, 1e-12, 1, 10 -> clipped: 1, 1, 0 (0.6 < 1), 0 (m = 0), 0, 0
    assert clipped_fraction(opt, opt.param_groups[0], bs=None) == pytest.approx(2 / 6)
    # what the step does: the clipped coordinates move by exactly lr (weight decay 0)
    opt = _sophia_with_state(optlib.SophiaG, m, h, rho=0.05, lr=0.1, weight_decay=0.0,
                             betas=(0.0, 0.99))  # fmt: skip
    p = opt.param_groups[0]["params"][0]
    p.grad = m.clone()  # beta1 = 0: m_t = g
    opt.step(bs=10)
    moved_by_lr = torch.isclose(p.detach().abs(), torch.tensor(0.1, dtype=torch.float64))
    assert int(moved_by_lr.sum()) == 3


def test_clipped_fraction_callback_per_copy_and_after_divergence():
    w = workload("digits_mlp")
    stacked = StackedModels([w.model(s) for s in range(4)])
    groups = [{"params": stacked.views(0, 3), "lr": 1e-3},
              {"params": stacked.views(3, 4), "lr": 1e4}]  # fmt: skip
    opt = optlib.SophiaG(groups, foreach=True, **HYPER)
    clip = ClippedFraction(opt, 32, copies=[3, 1], every=2)
    refresh = GNBRefresh(opt, w.data.X_train, every=3, batch_size=32, seeds=list(range(4)))

    def both(t, s):
        clip(t, s)
        refresh(t, s)

    train_stacked(stacked, opt, w.data.X_train, w.data.y_train, w.loss_fn, steps=12,
                  batch_size=32, seeds=list(range(4)), callback=both,
                  step_kwargs={"bs": 32})  # fmt: skip
    f = clip.fractions
    assert clip.steps == [2, 4, 6, 8, 10, 12] and f.shape == (6, 4)
    live = f[:, :3]
    assert np.all((live >= 0) & (live <= 1))
    # before the first refresh h = 0: every coordinate that moves is clipped; the weights of
    # the pixels blank in every image (m = 0) are not, the same ones for every copy
    dead = int((w.data.X_train.abs().sum(0) == 0).sum()) * 32
    n = sum(p.numel() for p in w.model(0).parameters())
    np.testing.assert_allclose(live[0], 1 - dead / n, rtol=1e-12)
    assert live[-1].max() < live[0].min()  # with a Hessian estimate fewer are clipped
    assert np.isnan(f[-1, 3])  # the run at lr 1e4 diverged and left the optimizer
    with pytest.raises(ValueError, match="Invalid copies"):
        ClippedFraction(opt, 32, copies=[1, 2, 3])


def test_lm_race_reports_plain_data_in_the_order_of_its_runs():
    runs = [[3e-3, 1], [1e-2, 0], [3e-3, 0]]
    common = dict(steps=20, batch_size=4, workload_options=TINY_LM, warmup=5, hessian_every=5,
                  eval_every=10, eval_examples=8, clip_every=5)  # fmt: skip
    r = lm_race("SophiaG", runs, options=HYPER, **common)
    assert json.loads(json.dumps(r)) == r
    assert r["curve_steps"] == [0, 10, 20] and r["clipped_steps"] == [5, 10, 15, 20]
    assert np.array(r["curve"]).shape == (3, 3) and np.array(r["clipped"]).shape == (4, 3)
    assert r["refreshes"] == 4 and r["tokens_per_step"] == 4 * 16
    assert all(math.isfinite(v) for v in r["final"]) and not any(r["diverged"])
    assert np.all(np.array(r["curve"])[-1] < np.array(r["curve"])[0])  # it learns
    # the same runs in another order give the same numbers in that order
    again = lm_race("SophiaG", runs[::-1], options=HYPER, **common)
    np.testing.assert_allclose(again["final"], r["final"][::-1], rtol=1e-6)
    subset = lm_race("SophiaG", runs, options=HYPER, final_examples=5, **common)
    assert subset["curve"] == r["curve"] and subset["final"] != r["final"]
    adamw = lm_race("AdamW", runs, **common)
    assert adamw["clipped"] == [] and adamw["refreshes"] == 0
    for bad in ("SophiaH", "LBFGS", "NotAnOptimizer"):
        with pytest.raises(ValueError, match="Invalid optimizer"):
            lm_race(bad, runs, **common)


def test_steps_to_target_interpolates_between_evaluations():
    steps, losses = [0, 10, 20, 30], [5.0, 4.0, 3.0, 2.5]
    assert steps_to_target(steps, losses, 3.5) == pytest.approx(15.0)
    assert steps_to_target(steps, losses, 4.0) == pytest.approx(10.0)
    assert steps_to_target(steps, losses, 6.0) == 0.0
    assert steps_to_target(steps, losses, 2.0) == math.inf
    assert steps_to_target(steps, [5.0, float("nan"), 3.0, 2.0], 3.5) == pytest.approx(20.0)
    assert steps_to_target(steps, [5.0, float("nan"), float("nan"), float("nan")], 3.0) == math.inf
