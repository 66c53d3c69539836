"""optlib.bench.hessian_cost: every piece of a Sophia iteration is timed, interleaved, on its
own copy of the model; the amortised step adds a refresh every k steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optlib.bench import hessian_cost


def _problem():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    return model, torch.randn(32, 6, generator=g), torch.randint(0, 4, (32,), generator=g)


def test_every_kind_is_timed_each_round_and_the_model_is_left_alone():
    model, X, y = _problem()
    before = [p.detach().clone() for p in model.parameters()]
    times = hessian_cost.iteration_costs(model, X, y, nn.functional.cross_entropy, tokens=32,
                                         warmup=1, rounds=4, block=2)  # fmt: skip
    assert list(times) == list(hessian_cost.KINDS)
    assert all(len(ts) == 4 and all(t > 0 for t in ts) for ts in times.values())
    assert all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before))


def test_amortised_adds_the_refresh_every_k_steps():
    times = {kind: [1.0, 2.0, 3.0] for kind in hessian_cost.KINDS}
    times["GNB refresh"] = [10.0, 20.0, 30.0]
    times["Hutchinson refresh"] = [40.0, 40.0, 40.0]
    per_step = hessian_cost.amortised(times, every=10)
    assert per_step == {"AdamW": 2.0, "SophiaG": 2.0 + 2.0, "SophiaH": 2.0 + 4.0}
    with pytest.raises(ValueError, match="Invalid every"):
        hessian_cost.amortised(times, every=0)


def test_bad_tokens_name_the_parameter():
    model, X, y = _problem()
    with pytest.raises(ValueError, match="Invalid tokens"):
        hessian_cost.iteration_costs(model, X, y, nn.functional.cross_entropy, tokens=0)
    with pytest.raises(ValueError, match="Invalid block"):
        hessian_cost.iteration_costs(model, X, y, nn.functional.cross_entropy, tokens=1, block=0)
