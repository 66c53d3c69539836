"""optlib.experiments.stacked: many small models trained at once equal separate runs.

Every stacked copy must take, step for step, the trajectory that
:func:`optlib.experiments.train.run` takes alone with the same optimizer, seed (initial weights
and mini-batches) and workload. In float64 the two differ only by the rounding of batched
against unbatched matrix products. Adaptive and sign-like updates normalise every gradient
entry, so an entry whose true value is at rounding level (a gradient that cancels to ~1e-17)
can move by up to one step of size lr in one run and not the other. The transformer has such
entries (the key bias: softmax ignores a shift common to a row of scores), which Adam's epsilon
damps but Adafactor's float64 epsilon does not; Adafactor is therefore checked on the CNN. The
tolerances: 1e-8 relative on the losses, 1e-9 of the largest weight on the weights.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import optlib
from optlib.experiments import train
from optlib.experiments.routing import RoutingTracker
from optlib.experiments.stacked import StackedModels, sweep, train_stacked
from optlib.problems import workload

TINY_LM = dict(context=16, d=16, n_layers=1, corpus_options=dict(n_files=6, n_val_files=2))


def _single(w, make_opt, seed, steps, batch_size):
    model = w.model(seed)
    hist = train.run(make_opt(model.parameters()), train.Supervised(
        model, w.data.X_train, w.data.y_train, w.loss_fn), steps, batch_size=batch_size,
        seed=seed)  # fmt: skip
    return model, np.array(hist.loss)


CASES = [
    ("digits_mlp", {}, "AdamW", {"weight_decay": 0.1}),
    ("digits_cnn", {}, "Adafactor", {}),
    ("moe", {}, "SGD", {"momentum": 0.9}),
    ("moe", {}, "Lion", {"weight_decay": 1.0}),
    ("char_lm", TINY_LM, "AdamW", {}),
    ("char_lm", dict(context=16, d=8, arch="gru", hidden=16), "Adam", {}),
]


@pytest.mark.parametrize("name,wopts,opt_name,hyper", CASES)
def test_each_copy_equals_its_single_run(name, wopts, opt_name, hyper):
    w = workload(name, dtype=torch.float64, **wopts)
    cls = getattr(optlib, opt_name)
    lrs, seeds, steps, B = [1e-3, 3e-3, 1e-2], [0, 1, 0], 6, 16
    stacked = StackedModels([w.model(s) for s in seeds], vectorize=wopts.get("arch") != "gru")
    opt = cls([{"params": stacked.views(k), "lr": lr} for k, lr in enumerate(lrs)], **hyper)
    hist = train_stacked(stacked, opt, w.data.X_train, w.data.y_train, w.loss_fn, steps=steps,
                         batch_size=B, seeds=seeds)  # fmt: skip
    assert hist.shape == (steps + 1, 3)
    for k, (lr, seed) in enumerate(zip(lrs, seeds)):
        model, losses = _single(w, lambda p, lr=lr: cls(p, lr=lr, **hyper), seed, steps, B)
        np.testing.assert_allclose(hist[:, k], losses, rtol=1e-8, atol=0)
        mine = dict(stacked.model(k).named_parameters())
        scale = max(p.abs().max().item() for p in model.parameters())
        for pname, p in model.named_parameters():
            assert (mine[pname] - p).abs().max().item() <= 1e-9 * scale, pname


def test_shared_groups_for_elementwise_optimizers_match_per_copy_groups():
    w = workload("digits_mlp", dtype=torch.float64)
    seeds = [0, 1, 2, 3]
    a = StackedModels([w.model(s) for s in seeds])
    b = StackedModels([w.model(s) for s in seeds])
    opt_a = optlib.Lion([{"params": a.views(0, 2), "lr": 1e-3}, {"params": a.views(2, 4),
                                                                   "lr": 3e-3}])  # fmt: skip
    opt_b = optlib.Lion([{"params": b.views(k), "lr": lr} for k, lr in enumerate(
        [1e-3, 1e-3, 3e-3, 3e-3])])  # fmt: skip
    for stacked, opt in ((a, opt_a), (b, opt_b)):
        train_stacked(stacked, opt, w.data.X_train, w.data.y_train, w.loss_fn, steps=5,
                      batch_size=32, seeds=seeds)  # fmt: skip
    for p, q in zip(a.tensors().values(), b.tensors().values()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="element-wise"):
        bad = optlib.Adafactor([{"params": a.views(0, 4)}])
        train_stacked(a, bad, w.data.X_train, w.data.y_train, w.loss_fn, steps=1,
                      batch_size=8, seeds=seeds)  # fmt: skip


def test_a_copy_may_share_its_tensors_out_over_several_groups():
    """MuonWithAuxAdamW needs two groups per run (Muon for the hidden matrices, AdamW for the
    rest): each copy then equals its single run; a tensor held twice, or by no group, fails."""
    from optlib.optim.muon import muon_param_groups

    w = workload("digits_mlp", dtype=torch.float64)
    seeds, steps, B = [0, 1], 6, 16
    hidden = {n for n, p in w.model(0).named_parameters() if p.ndim == 2 and n != "2.weight"}
    stacked = StackedModels([w.model(s) for s in seeds])
    groups = []
    for k in range(len(seeds)):
        views = stacked.named_views(k)
        groups += [dict(params=[v for n, v in views.items() if n in hidden], use_muon=True,
                        lr=0.02, ns_dtype=None),
                   dict(params=[v for n, v in views.items() if n not in hidden], use_muon=False,
                        lr=3e-3)]  # fmt: skip
    opt = optlib.MuonWithAuxAdamW(groups)
    hist = train_stacked(stacked, opt, w.data.X_train, w.data.y_train, w.loss_fn, steps=steps,
                         batch_size=B, seeds=seeds)  # fmt: skip
    for k, seed in enumerate(seeds):
        model = w.model(seed)
        single = optlib.MuonWithAuxAdamW(muon_param_groups(model, muon_lr=0.02, adamw_lr=3e-3,
                                                           ns_dtype=None))  # fmt: skip
        alone = train.run(single, train.Supervised(model, w.data.X_train, w.data.y_train,
                                                   w.loss_fn), steps, batch_size=B, seed=seed)
        np.testing.assert_allclose(hist[:, k], np.array(alone.loss), rtol=1e-8, atol=0)
    twice = optlib.SGD([{"params": stacked.views(k)} for k in range(2)]
                       + [{"params": stacked.views(0)[:1]}], lr=0.1)  # fmt: skip
    with pytest.raises(ValueError, match="exactly once"):
        train_stacked(stacked, twice, w.data.X_train, w.data.y_train, w.loss_fn, steps=1,
                      batch_size=8, seeds=seeds)  # fmt: skip
    part = optlib.SGD([{"params": stacked.views(0)}, {"params": stacked.views(1)[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="exactly once"):
        train_stacked(stacked, part, w.data.X_train, w.data.y_train, w.loss_fn, steps=1,
                      batch_size=8, seeds=seeds)  # fmt: skip


def test_bad_groupings_and_coupled_optimizers_are_refused():
    w = workload("moe")
    stacked = StackedModels([w.model(s) for s in range(3)])
    X, y, f = w.data.X_train, w.data.y_train, w.loss_fn
    missing = optlib.SGD([{"params": stacked.views(k)} for k in range(2)], lr=0.1)
    with pytest.raises(ValueError, match="every stacked copy"):
        train_stacked(stacked, missing, X, y, f, steps=1, batch_size=8, seeds=[0, 1, 2])
    mixed = optlib.SGD([{"params": stacked.views(0)[:2] + stacked.views(1)[2:]},
                        {"params": stacked.views(2)}], lr=0.1)  # fmt: skip
    with pytest.raises(ValueError, match="same copies"):
        train_stacked(stacked, mixed, X, y, f, steps=1, batch_size=8, seeds=[0, 1, 2])
    lamb = optlib.LAMB([{"params": stacked.views(k)} for k in range(3)])
    with pytest.raises(ValueError, match="couples"):
        train_stacked(stacked, lamb, X, y, f, steps=1, batch_size=8, seeds=[0, 1, 2])
    ok = optlib.SGD([{"params": stacked.views(k)} for k in range(3)], lr=0.1)
    with pytest.raises(ValueError, match="seeds"):
        train_stacked(stacked, ok, X, y, f, steps=1, batch_size=8, seeds=[0, 1])
    with pytest.raises(ValueError, match="schedule"):
        train_stacked(stacked, ok, X, y, f, steps=1, batch_size=8, seeds=[0, 1, 2],
                      schedule="step")  # fmt: skip


def test_a_diverging_copy_does_not_disturb_the_others():
    w = workload("digits_mlp", dtype=torch.float64)
    seeds = [0, 0]
    stacked = StackedModels([w.model(s) for s in seeds])
    opt = optlib.SGD([{"params": stacked.views(0), "lr": 0.1},
                      {"params": stacked.views(1), "lr": 1e4}])  # fmt: skip
    hist = train_stacked(stacked, opt, w.data.X_train, w.data.y_train, w.loss_fn, steps=20,
                         batch_size=32, seeds=seeds, divergence_factor=10.0)  # fmt: skip
    assert np.isnan(hist[-1, 1]) and np.isfinite(hist[:, 0]).all()
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == 0.1
    _, alone = _single(w, lambda p: optlib.SGD(p, lr=0.1), 0, 20, 32)
    np.testing.assert_allclose(hist[:, 0], alone, rtol=1e-12)


def test_schedules_scale_the_learning_rate():
    w = workload("moe", dtype=torch.float64)
    seen = []
    stacked = StackedModels([w.model(0)])
    opt = optlib.SGD([{"params": stacked.views(0), "lr": 0.2}])
    train_stacked(stacked, opt, w.data.X_train, w.data.y_train, w.loss_fn, steps=8, batch_size=16,
                  seeds=[0], schedule="cosine", warmup=4,
                  callback=lambda t, s: seen.append(opt.param_groups[0]["lr"]))  # fmt: skip
    expected = [0.2 * min(1, (t + 1) / 4) * 0.5 * (1 + np.cos(np.pi * t / 8)) for t in range(8)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert opt.param_groups[0]["lr"] == 0.2  # restored


def test_stacked_forward_evaluate_and_model_copies():
    w = workload("char_lm", **TINY_LM)
    models = [w.model(s) for s in (0, 1)]
    stacked = StackedModels(models)
    X = w.data.X_test[:5]
    out = stacked(X)
    for k, m in enumerate(models):
        assert torch.allclose(out[k], m(X), atol=1e-5)
        copy = stacked.model(k)
        assert torch.allclose(copy(X), m(X), atol=1e-6)
    losses = stacked.evaluate(w.loss_fn, w.data.X_test, w.data.y_test, chunk=50)
    for k, m in enumerate(models):
        assert losses[k] == pytest.approx(w.loss(m), rel=1e-5)


def test_sweep_returns_json_data_in_the_order_of_the_runs():
    runs = [(3e-3, 0.0, 1), (1e-3, 0.0, 0), (3e-3, 0.0, 0), (1e-3, 0.1, 1)]
    t0 = time.perf_counter()
    r = sweep("moe", "AdamW", runs, steps=40, batch_size=32, average_last=5)
    seconds = time.perf_counter() - t0
    print(f"sweep of 4 MoE runs x 40 steps: {seconds:.2f} s")
    import json

    assert json.loads(json.dumps(r)) == r
    assert r["runs"] == [list(x) for x in runs]
    w = workload("moe")
    for i, (lr, wd, seed) in enumerate(runs):
        model = w.model(seed)
        train.run(optlib.AdamW(model.parameters(), lr=lr, weight_decay=wd), train.Supervised(
            model, w.data.X_train, w.data.y_train), 40, batch_size=32, seed=seed)  # fmt: skip
        assert r["test_loss"][i] == pytest.approx(w.loss(model), rel=1e-4)
    assert len(r["curve"]) == len(r["curve_steps"]) and len(r["curve"][0]) == 4
    assert not any(r["diverged"])
    with pytest.raises(ValueError, match="optimizer"):
        sweep("moe", "Adamm", runs, steps=1)
    sub = sweep("char_lm", "Lion", [(1e-3, 0.0, 0)], steps=3, batch_size=4,
                workload_options=TINY_LM, eval_examples=10)  # fmt: skip
    assert np.isfinite(sub["test_loss"][0])


def test_per_step_cost_of_stacked_workloads():
    """Printed, not asserted: the cost per model-step of each workload, stacked 12 at a time."""
    for name, opts, B in (("digits_mlp", {}, 32), ("digits_cnn", {}, 32), ("moe", {}, 32),
                          ("char_lm", dict(context=32), 16)):  # fmt: skip
        w = workload(name, **opts)
        stacked = StackedModels([w.model(s) for s in range(12)])
        opt = optlib.AdamW([{"params": stacked.views(0, 12), "lr": 1e-3}])
        t0 = time.perf_counter()
        train_stacked(stacked, opt, w.data.X_train, w.data.y_train, w.loss_fn, steps=5,
                      batch_size=B, seeds=list(range(12)))  # fmt: skip
        per = (time.perf_counter() - t0) / 6 / 12
        print(f"{name}: {1e3 * per:.2f} ms per model-step stacked x12 (batch {B})")


def test_routing_tracker_records_change_rates():
    w = workload("moe")
    stacked = StackedModels([w.model(s) for s in (0, 1)])
    opt = optlib.AdamW([{"params": stacked.views(0, 2), "lr": 1e-2}])
    tracker = RoutingTracker(w.data.X_test[:256]).start(stacked)
    train_stacked(stacked, opt, w.data.X_train, w.data.y_train, w.loss_fn, steps=200,
                  batch_size=32, seeds=[0, 1], callback=tracker)  # fmt: skip
    rates, drift = tracker.rates, tracker.drift
    assert rates.shape == drift.shape == (200, 2)
    assert (rates >= 0).all() and (rates <= 1).all() and (drift <= 1).all()
    assert (rates[:20].mean(0) > 3 * rates[-50:].mean(0)).all()
    assert (drift[-1] >= rates[-1]).all()
    with pytest.raises(RuntimeError, match="start"):
        RoutingTracker(w.data.X_test[:4])(1, stacked)
