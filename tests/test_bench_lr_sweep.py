"""optlib.bench.lr_sweep: one seeded run per learning rate, the same start for every run,
divergence as an infinite loss, and the best learning rate read off the grid."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib.bench.lr_sweep import Sweep, lr_grid, lr_sweep
from optlib.experiments.train import Supervised, run
from optlib.problems import landscapes as ls


def small_problem(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = (X[:, 0] - X[:, 1] > 0).long()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    return Supervised(model.double(), X, y)


def test_lr_grid_holds_exact_decades():
    grid = lr_grid(1e-3, 1.0, 2)
    assert len(grid) == 7
    assert grid[0] == 1e-3 and grid[2] == 1e-2 and grid[-1] == 1.0
    # points are 10**(k/2): each ratio is a few ulps from sqrt(10) (1e-12 is 4500 ulps)
    np.testing.assert_allclose(grid[1:] / grid[:-1], math.sqrt(10), rtol=1e-12)
    assert list(lr_grid(0.5, 20, 1)) == [1.0, 10.0]
    assert list(lr_grid(2e-3, 2e-3, 3)) == []  # no grid point in a narrow range


@settings(max_examples=25, deadline=None)
@given(
    lo=st.floats(1e-6, 1e2),
    span=st.floats(1.0, 1e4),
    per_decade=st.integers(1, 5),
)
def test_lr_grid_is_inside_the_range_and_log_spaced(lo, span, per_decade):
    grid = lr_grid(lo, lo * span, per_decade)
    # endpoints come back through 10**log10(x): a few ulps of x (1e-12 relative: 4500 ulps)
    assert np.all(grid >= lo * (1 - 1e-12)) and np.all(grid <= lo * span * (1 + 1e-12))
    if len(grid) > 1:
        # log10 of numbers up to 1e6 is exact to ulps of |log10| <= 6, i.e. ~1e-15 absolute, so
        # steps of 1/per_decade >= 0.2 are good to ~1e-14 relative; 1e-9 is a wide margin
        np.testing.assert_allclose(np.diff(np.log10(grid)), 1 / per_decade, rtol=1e-9)


@pytest.mark.parametrize("bad", [dict(lo=0, hi=1), dict(lo=2, hi=1), dict(lo=1, hi=math.inf)])
def test_lr_grid_rejects_bad_ranges(bad):
    with pytest.raises(ValueError, match="Invalid range"):
        lr_grid(**bad)
    with pytest.raises(ValueError, match="per_decade"):
        lr_grid(1e-3, 1, 0)


def test_sweep_on_a_landscape_matches_single_runs_and_flags_divergence():
    q = ls.Quadratic(kappa=5, angle=0.4)  # L = 1: GD diverges for lr > 2
    lrs = [0.1, 1.0, 1.9, 2.5]
    sweep = lr_sweep(lambda p, lr: optlib.SGD(p, lr=lr), q, lrs, 60, keep_histories=True)
    for lr, final, hist in zip(lrs[:3], sweep.final_loss[:3], sweep.histories[:3]):
        alone = run(lambda p, lr=lr: optlib.SGD(p, lr=lr), q, 60)
        assert final == alone.final_loss == hist.final_loss
    assert sweep.diverged.tolist() == [False, False, False, True]
    assert sweep.final_loss[-1] == math.inf
    assert sweep.best_lr == 1.0 and sweep.best_loss == sweep.final_loss[1]
    assert sweep.largest_stable_lr() == 1.9
    assert not sweep.at_edge


def test_sweep_restarts_a_supervised_problem_from_the_same_weights():
    problem = small_problem()
    before = [p.detach().clone() for p in problem.model.parameters()]
    sweep = lr_sweep(
        lambda p, lr: optlib.Adam(p, lr=lr), problem, [1e-3, 1e-2, 1e-1], 15, keep_histories=True
    )
    # Every run starts at the same loss (same weights), and the problem itself is untouched.
    assert len({h.loss[0] for h in sweep.histories}) == 1
    for p, q in zip(problem.model.parameters(), before):
        assert torch.equal(p.detach(), q)
    # A larger learning rate makes more progress on this easy problem in 15 steps.
    assert sweep.final_loss[0] > sweep.final_loss[1] > sweep.final_loss[2]
    assert sweep.best_lr == 0.1 and sweep.at_edge


def test_sweep_is_reproducible_with_minibatches_and_averages_the_tail():
    make = lambda p, lr: optlib.SGD(p, lr=lr, momentum=0.9)  # noqa: E731
    a = lr_sweep(make, small_problem(), [0.01, 0.1], 20, batch_size=16, average_last=5,
                 keep_histories=True)  # fmt: skip
    b = lr_sweep(make, small_problem, [0.01, 0.1], 20, batch_size=16, average_last=5)
    np.testing.assert_array_equal(a.final_loss, b.final_loss)
    for final, hist in zip(a.final_loss, a.histories):
        assert final == pytest.approx(np.mean(hist.loss[-5:]), rel=1e-12)  # the same 5 numbers
    c = lr_sweep(make, small_problem(), [0.01, 0.1], 20, batch_size=16, average_last=5, seed=1)
    assert not np.array_equal(a.final_loss, c.final_loss)


def test_sweep_where_every_run_diverges_says_so():
    q = ls.Quadratic(kappa=2)
    sweep = lr_sweep(lambda p, lr: optlib.SGD(p, lr=lr), q, [3.0, 5.0], 40)
    assert sweep.diverged.all() and sweep.largest_stable_lr() is None
    with pytest.raises(ValueError, match="diverged"):
        _ = sweep.best_lr


def test_sweep_validates_its_arguments():
    q = ls.Quadratic()
    sgd = lambda p, lr: optlib.SGD(p, lr=lr)  # noqa: E731
    with pytest.raises(ValueError, match="lrs"):
        lr_sweep(sgd, q, [], 5)
    with pytest.raises(ValueError, match="lrs"):
        lr_sweep(sgd, q, [0.1, -1.0], 5)
    with pytest.raises(ValueError, match="steps"):
        lr_sweep(sgd, q, [0.1], 0)
    with pytest.raises(ValueError, match="average_last"):
        lr_sweep(sgd, q, [0.1], 5, average_last=7)
    with pytest.raises(TypeError, match="factory"):
        lr_sweep(sgd, lambda: "not a problem", [0.1], 5)


def test_sweep_dataclass_best_ignores_infinite_losses():
    s = Sweep("x", np.array([1.0, 2.0, 3.0]), np.array([math.inf, 0.5, 0.2]),
              np.array([True, False, False]))  # fmt: skip
    assert s.best_index == 2 and s.best_lr == 3.0 and s.at_edge
