"""optlib.experiments.matrix_preconditioners (chapter 10): recorded layer gradients, the staleness
of Shampoo's roots, SOAP's equivalence (Vyas et al.'s Claim 1) and MuonSplit in stacked races.

Float64 identities are checked to 1e-10 relative (a few hundred products of matrices of size
<= 16, with roots of well-conditioned sums); stacked runs against single runs to 1e-8 (batched
against unbatched matrix products, as in tests/test_stacked.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optlib
from optlib.experiments import train
from optlib.experiments.matrix_preconditioners import (
    MuonSplit,
    hidden_positions,
    layer_gradients,
    soap_equivalence,
    stale_direction_error,
)
from optlib.experiments.race import race
from optlib.linalg import kronecker
from optlib.optim.muon import muon_param_groups
from optlib.problems import workload

NET = dict(n_hidden=8, depth=2)


def test_layer_gradients_are_the_gradients_of_the_run():
    grads = layer_gradients("digits_mlp", steps=3, workload_options=NET)
    work = workload("digits_mlp", dtype=torch.float64, **NET)
    assert set(grads) == {n for n, _ in work.model(0).named_parameters()}
    assert grads["2.weight"].shape == (3, 8, 8) and grads["2.weight"].dtype == torch.float64
    model = work.model(0)  # the first gradient: the first mini-batch of seed 0 at the start
    from optlib.experiments.stacked import BatchStream

    idx = BatchStream(len(work.data.y_train), 32, 0).next()
    work.loss_fn(model(work.data.X_train[idx]), work.data.y_train[idx]).backward()
    assert torch.allclose(grads["0.weight"][0], model[0].weight.grad, rtol=1e-12)
    again = layer_gradients("digits_mlp", steps=3, workload_options=NET)
    assert all(torch.equal(grads[k], again[k]) for k in grads)


def _grads(seed, T=12, m=4, n=3):
    return torch.randn(T, m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_stale_direction_error_against_direct_roots():
    G = _grads(0)
    ages = [0, 1, 4]
    err = stale_direction_error(G, ages, epsilon=1e-10)
    assert err.shape == (3, 12)
    assert np.all(err[0] == 0) and np.isnan(err[1, 0]) and np.isnan(err[2, :4]).all()
    t, a = 9, 4
    L, R = kronecker.kronecker_factors(G[: t - a])
    stale = (kronecker.psd_power(L, -0.25, 1e-10) @ G[t - 1]
             @ kronecker.psd_power(R, -0.25, 1e-10))  # fmt: skip
    fresh = kronecker.shampoo_kronecker_direction(G[:t], 1e-10)
    assert err[2, t - 1] == pytest.approx(float((stale - fresh).norm() / fresh.norm()), rel=1e-9)
    ema = stale_direction_error(G, [2], epsilon=1e-10, beta2=0.9)
    assert np.isfinite(ema[0, 2:]).all()
    with pytest.raises(ValueError):
        stale_direction_error(G[0], [1], epsilon=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shampoo_half_is_adafactor_in_the_eigenbasis(seed):
    G = _grads(seed, T=10, m=5, n=4)
    r = soap_equivalence(G)
    rhs = r["scale"] * r["shampoo_half"]
    assert torch.allclose(r["adafactor_rotated"], rhs, rtol=1e-10, atol=1e-12)
    L, R = kronecker.kronecker_factors(G)
    assert r["shampoo_half"] == pytest.approx(kronecker.shampoo_kronecker_direction(
        G, 0.0 + 1e-300, exponent=0.5), rel=1e-8)  # fmt: skip
    assert r["scale"] == pytest.approx(float(torch.trace(L).sqrt()), rel=1e-12)
    assert 0 <= r["rank_one_error"] < 1 and 0 <= r["rank_one_error_plain"] < 1
    assert not torch.allclose(r["adam_rotated"], r["adafactor_rotated"])


def test_hidden_positions_follow_muon_param_groups():
    for name, opts in (("digits_mlp", NET), ("char_lm", dict(context=8, d=8, n_layers=1))):
        model = workload(name, **opts).model(0)
        params = list(model.parameters())
        muon = [p for g in muon_param_groups(model) if g["use_muon"] for p in g["params"]]
        assert [params[i] for i in hidden_positions(model)] == muon


def test_muon_split_in_a_stacked_race_equals_single_runs():
    """Two runs of MuonSplit raced together: each equals MuonWithAuxAdamW alone on its seed."""
    work = workload("digits_mlp", dtype=torch.float64, **NET)
    hidden = hidden_positions(work.model(0))
    options = dict(hidden=hidden, adamw_lr=3e-3, ns_dtype=None)
    r = race("digits_mlp", MuonSplit, [(0.05, 0), (0.02, 1)], steps=5, batch_size=16,
             eval_every=5, options=options, schedule="constant",
             workload_options=dict(dtype=torch.float64, **NET))  # fmt: skip
    for k, (lr, seed) in enumerate([(0.05, 0), (0.02, 1)]):
        model = work.model(seed)
        opt = optlib.MuonWithAuxAdamW(muon_param_groups(model, muon_lr=lr, adamw_lr=3e-3,
                                                        ns_dtype=None))  # fmt: skip
        train.run(opt, train.Supervised(model, work.data.X_train, work.data.y_train,
                                        work.loss_fn), 5, batch_size=16, seed=seed)  # fmt: skip
        assert r["final_loss"][k] == pytest.approx(work.loss(model), rel=1e-8)


def test_muon_split_refuses_bad_groups():
    p = [torch.zeros(3, 3, requires_grad=True), torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match="hidden positions"):
        MuonSplit([{"params": p, "lr": 0.02}], hidden=[5], adamw_lr=1e-3)
    with pytest.raises(ValueError, match="param groups"):
        MuonSplit([p], hidden=[0], adamw_lr=1e-3)
    opt = MuonSplit([{"params": p, "lr": 0.03}], hidden=[0], adamw_lr=1e-3)
    assert [(g["use_muon"], g["lr"]) for g in opt.param_groups] == [(True, 0.03), (False, 1e-3)]
