"""optlib.problems.moe: the mixture-of-experts toy and its routing measurements."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optlib
from optlib.problems import MoE, expert_load, moe_clusters, moe_toy, routing_change
from optlib.problems.moe import moe_model


def test_data_shapes_and_seeds(monkeypatch):
    d = moe_clusters(n_train=200, n_test=100, n_features=8, n_clusters=3, n_classes=5)
    assert d.X_train.shape == (200, 8) and d.X_test.shape == (100, 8)
    assert d.y_train.dtype == torch.long and set(d.y_train.tolist()) <= set(range(5))
    again, other = moe_clusters(n_train=200, n_test=100, n_features=8, n_clusters=3,
                                n_classes=5), moe_clusters(seed=1, n_train=200, n_test=100,
                                                           n_features=8, n_clusters=3,
                                                           n_classes=5)  # fmt: skip
    assert torch.equal(d.X_train, again.X_train) and not torch.equal(d.X_train, other.X_train)
    monkeypatch.setenv("OPTLIB_SEED", "1")
    moved = moe_clusters(n_train=200, n_test=100, n_features=8, n_clusters=3, n_classes=5)
    assert not torch.equal(d.X_train, moved.X_train)
    with pytest.raises(ValueError, match="n_classes"):
        moe_clusters(n_classes=1)
    with pytest.raises(ValueError, match="n_train"):
        moe_clusters(n_train=0)


def test_forward_is_the_gated_top_expert():
    torch.manual_seed(0)
    model = MoE(6, 5, 3, n_experts=4, top_k=1).double()
    x = torch.randn(7, 6, dtype=torch.float64)
    out = model(x)
    assert out.shape == (7, 3)
    routes = model(x, route=True)
    assert routes.shape == (7,) and routes.dtype == torch.long
    p = torch.softmax(model.router(x), -1)
    for i in range(7):
        j = int(routes[i])
        h = torch.tanh(model.W1[j] @ x[i] + model.b1[j])
        expected = p[i, j] * (model.W2[j] @ h + model.b2[j])
        assert torch.allclose(out[i], expected, rtol=1e-12, atol=1e-14)
    gates = model.gates(x)
    assert ((gates > 0).sum(1) == 1).all()
    two = MoE(6, 5, 3, n_experts=4, top_k=2)
    assert ((two.gates(x.float()) > 0).sum(1) == 2).all()
    with pytest.raises(ValueError, match="top_k"):
        MoE(6, 5, 3, n_experts=2, top_k=3)


def test_router_gets_a_gradient():
    data, model = moe_toy()
    nn.functional.cross_entropy(model(data.X_train[:64]), data.y_train[:64]).backward()
    assert model.router.weight.grad.abs().sum() > 0 and model.W1.grad.abs().sum() > 0


def test_routing_change_and_load():
    a = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    b = torch.tensor([0, 1, 2, 0, 0, 1, 3, 3])
    assert routing_change(a, a) == 0.0 and routing_change(a, b) == 0.25
    assert expert_load(a, 4).tolist() == [0.25] * 4
    assert expert_load(b, 5).tolist() == [0.375, 0.25, 0.125, 0.25, 0.0]
    with pytest.raises(ValueError, match="shapes"):
        routing_change(a, b[:4])


def test_seeded_model_and_optlib_seed(monkeypatch):
    a, b, c = moe_model(seed=0), moe_model(seed=0), moe_model(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.W1, c.W1)
    monkeypatch.setenv("OPTLIB_SEED", "1")
    assert not torch.equal(a.W1, moe_model(seed=0).W1)


def test_adamw_learns_and_the_routing_settles():
    from optlib.experiments.routing import routing_rates

    data, model = moe_toy(seed=0)
    probe = data.X_test[:512]
    start = nn.functional.cross_entropy(model(data.X_test), data.y_test).item()
    opt = optlib.AdamW(model.parameters(), lr=1e-2)
    rates = routing_rates(model, opt, data.X_train, data.y_train, probe, steps=400,
                          batch_size=32)  # fmt: skip
    with torch.no_grad():
        end = nn.functional.cross_entropy(model(data.X_test), data.y_test).item()
    early, late = rates[:20].mean(), rates[-100:].mean()
    print(f"MoE toy: test loss {start:.3f} -> {end:.3f}; routing-change rate per step "
          f"{early:.4f} (steps 1-20) -> {late:.4f} (last 100)")  # fmt: skip
    assert end < 0.6 * start
    assert early > 5 * late  # jumpy early, settled later
