"""optlib.experiments.large_batches: checkpoints, the reading of a sweep (tuned steps, scaling
rules) on hand-made results, PerCopy as separate optimizers, trust ratios by the optimizers'
own steps, and a small sweep end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import optlib
from optlib.experiments import large_batches as lb
from optlib.experiments.stacked import StackedModels


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_checkpoints_are_geometric_after_every_step():
    at = lb.checkpoints(100, 1.5)
    assert at[:3] == [1, 2, 3] and at[-1] == 100 and at == sorted(set(at))
    gaps = np.diff(at[5:-1]) / np.array(at[5:-2])
    assert np.all(gaps > 0.3) and np.all(gaps < 0.7)  # about 50% apart once past single steps
    with pytest.raises(ValueError, match="ratio"):
        lb.checkpoints(10, 1.0)
    with pytest.raises(ValueError, match="max_steps"):
        lb.checkpoints(0)


def _result(table: list[list[float]], lrs: list[float], batch_sizes: list[int]) -> dict:
    """A sweep result whose three seeds all reach the target at the table's steps."""
    return {"targets": [0.1], "lrs": lrs, "batch_sizes": batch_sizes,
            "curves": [{"reached": [[[s, s, s] for s in row]]} for row in table]}  # fmt: skip


def test_tuned_steps_and_scaling_rules_read_the_table():
    lrs = [0.25, 0.5, 1.0, 2.0, 4.0]
    inf = math.inf
    table = [[100, 60, 50, inf, inf],  # B = 8: best at 1.0
             [inf, 40, 20, 15, 30],  # B = 16: best at 2.0
             [inf, inf, 30, 12, 8]]  # B = 32: best at 4.0
    r = _result(table, lrs, [8, 16, 32])
    best, lr = lb.tuned_steps(r, 0.1)
    assert best.tolist() == [50, 15, 8] and lr.tolist() == [1.0, 2.0, 4.0]
    steps, used = lb.follow_rule(r, 0.1, 1.0)  # linear: 1, 2, 4
    assert used.tolist() == [1.0, 2.0, 4.0] and steps.tolist() == [50, 15, 8]
    steps, used = lb.follow_rule(r, 0.1, 0.5)  # square root: 1, 1.41 -> 1 or 2, 2
    assert used[0] == 1.0 and used[2] == 2.0 and steps[2] == 12
    steps, used = lb.follow_rule(r, 0.1, 3.0)  # 1, 8, 64: off the grid
    assert math.isnan(used[1]) and math.isinf(steps[2])


def test_per_copy_is_separate_optimizers():
    from optlib.problems import workload

    work = workload("digits_mlp", dtype=torch.float64)
    X, y = work.data.X_train[:64], work.data.y_train[:64]
    stacked = StackedModels([work.model(s) for s in (0, 1)])
    opt = lb.PerCopy(stacked, optlib.LAMB, [1e-2, 3e-2], weight_decay=0.01)
    alone = [work.model(s) for s in (0, 1)]
    alone_opt = [optlib.LAMB(m.parameters(), lr=lr, weight_decay=0.01)
                 for m, lr in zip(alone, (1e-2, 3e-2))]  # fmt: skip
    for _ in range(3):
        stacked.zero_grad_()  # in place: the views hold views of the stacked gradients
        out = stacked(X)  # (K, N, C)
        sum(work.loss_fn(out[k], y) for k in range(2)).backward()
        opt.step()
        for m, o in zip(alone, alone_opt):
            o.zero_grad()
            work.loss_fn(m(X), y).backward()
            o.step()
    for k, m in enumerate(alone):
        got = torch.cat([t.detach().reshape(-1) for t in stacked.views(k)])
        want = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
        # the same per-copy arithmetic, batched differently: rounding only
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [optlib.LARS, optlib.LAMB])
def test_trust_ratios_are_the_ones_the_step_applies(cls):
    # one tensor, plain SGD-like settings: the step's length over the unscaled one is the ratio
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    options = {"weight_decay": 0.1} if cls is optlib.LAMB else {"weight_decay": 0.1,
                                                                "trust_coeff": 0.01}
    opt = cls([p], lr=1e-2, **options)
    for _ in range(3):
        p.grad = torch.randn_like(p)
        (r,) = lb.trust_ratios(opt)[0]
        before = p.detach().clone()
        if cls is optlib.LARS:
            expected = -1e-2 * r * (p.grad + 0.1 * p.detach())  # no momentum
        opt.step()
        if cls is optlib.LARS:
            torch.testing.assert_close(p.detach() - before, expected, rtol=1e-12, atol=1e-15)
        else:  # LAMB: the step is lr * r * u, so its norm is lr * r * |u| = lr * |theta| here
            assert r > 0
            step = (p.detach() - before).norm()
            assert math.isclose(float(step), 1e-2 * float(before.norm()), rel_tol=1e-9)
    with pytest.raises(ValueError, match="LARS"):
        lb.trust_ratios(optlib.SGD([p], lr=0.1))


def test_a_small_sweep_reaches_its_targets_faster_with_bigger_batches():
    r = lb.batch_size_sweep("digits_mlp", "SGD", [8, 64], [0.5, 2.0], [0, 1, 2], [0.5],
                            max_steps=400, eval_examples=256)  # fmt: skip
    best, lr = lb.tuned_steps(r, 0.5)
    assert np.all(np.isfinite(best)) and best[1] < best[0]
    assert all(len(c["diverged"]) == 2 for c in r["curves"])
    with pytest.raises(ValueError, match="Invalid optimizer"):
        lb.batch_size_sweep("digits_mlp", "LAMB", [8], [0.1], [0], [0.5], max_steps=5)
