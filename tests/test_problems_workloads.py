"""optlib.problems.workloads: the suite of chapters 8–12 behind one interface, and evaluate."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

import optlib
from optlib.problems import WORKLOADS, evaluate, workload

SMALL = {"char_lm": dict(context=16, d=16, n_layers=1, corpus_options=dict(n_files=6,
                                                                            n_val_files=2))}


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_workload_builds_trains_and_evaluates(name):
    w = workload(name, **SMALL.get(name, {}))
    model = w.model(0)
    X, y = w.data.X_train[:32], w.data.y_train[:32]
    out = model(X)
    assert out.shape[0] == 32 and out.shape[-1] == w.data.n_classes
    assert w.n_params == sum(p.numel() for p in model.parameters())
    start = w.loss(model, "train", max_examples=256)
    opt = optlib.AdamW(model.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    for _ in range(25):
        opt.zero_grad()
        w.loss_fn(model(X), y).backward()
        opt.step()
    per_step = (time.perf_counter() - t0) / 25
    print(f"{name}: {w.n_params} parameters, {1e3 * per_step:.2f} ms per AdamW step (32 examples)")
    assert w.loss_fn(model(X), y).item() < start
    assert math.isfinite(w.loss(model))


def test_model_factory_is_seeded_and_moved_by_optlib_seed(monkeypatch):
    w = workload("digits_mlp")
    a, b, c = w.model(0), w.model(0), w.model(1)
    assert torch.equal(a[0].weight, b[0].weight) and not torch.equal(a[0].weight, c[0].weight)
    monkeypatch.setenv("OPTLIB_SEED", "1")
    assert not torch.equal(a[0].weight, workload("digits_mlp").model(0)[0].weight)


def test_evaluate_is_the_chunked_mean():
    w = workload("moe")
    model = w.model(0)
    X, y = w.data.X_test, w.data.y_test
    with torch.no_grad():
        full = nn.functional.cross_entropy(model(X), y).item()
    assert evaluate(model, X, y, chunk=100) == pytest.approx(full, rel=1e-5)
    assert evaluate(model, X, y, chunk=100, max_examples=300) == pytest.approx(
        evaluate(model, X[:300], y[:300]), rel=1e-6
    )
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, X[:0], y[:0])
    with pytest.raises(ValueError, match="split"):
        w.loss(model, "val")


def test_unknown_workload():
    with pytest.raises(ValueError, match="Invalid workload"):
        workload("imagenet")


def test_digits_subset_and_label_noise():
    full = workload("digits_mlp")
    small = workload("digits_mlp", n_train=200, label_noise=0.5)
    assert small.data.X_train.shape == (200, 64) and torch.equal(
        small.data.X_train, full.data.X_train[:200]
    )
    flipped = (small.data.y_train != full.data.y_train[:200]).double().mean().item()
    assert 0.3 < flipped < 0.6  # half redrawn, a tenth of those land on the right class
    assert torch.equal(small.data.X_test, full.data.X_test)
    assert torch.equal(small.data.y_test, full.data.y_test)
    again = workload("digits_mlp", n_train=200, label_noise=0.5)
    assert torch.equal(again.data.y_train, small.data.y_train)
    cnn = workload("digits_cnn", n_train=100)
    assert cnn.data.X_train.shape == (100, 1, 8, 8)
    with pytest.raises(ValueError, match="label_noise"):
        workload("digits_mlp", label_noise=1.5)


def test_sweep_reports_update_sizes_and_weight_sizes():
    from optlib.experiments.stacked import sweep

    r = sweep("moe", "Lion", [(1e-3, 0.0, 0), (1e-3, 10.0, 0)], steps=20, record_updates=True)
    assert abs(r["update_rms"][0] - 1) < 0.05  # Lion: eta per coordinate (a few zero c)
    assert r["weight_rms"][1] < r["weight_rms"][0]  # the decayed copy is smaller
