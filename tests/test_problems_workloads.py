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
