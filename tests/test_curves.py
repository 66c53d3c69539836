"""optlib.experiments.curves: the loop takes the steps it says (full batch, shuffled epochs,
schedulers), counts examples, evaluates the full loss, stops on divergence or a target, and is
reproducible."""

from __future__ import annotations

import pytest
import torch

import optlib
from optlib.experiments import curves
from optlib.experiments import stochastic as sto
from optlib.experiments.curves import Curve, evaluate, run_curve, stable_lr_grid, sweep_seeds
from optlib.problems import Dataset, mlp

F = torch.nn.functional


def _data(n: int = 40, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n + 10, 4, generator=g, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 1).long()
    return Dataset(X[:n], y[:n], X[n:], y[n:])


EPS = torch.finfo(torch.float64).eps


def _model(seed: int = 0) -> torch.nn.Module:
    return mlp(4, 6, 3, seed=seed, dtype=torch.float64)


def _params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_full_batch_is_gradient_descent_step_by_step():
    data = _data()
    a, b = _model(), _model()
    curve = run_curve(lambda p: optlib.SGD(p, lr=0.3), a, data, batch_size=None, epochs=5)
    opt = torch.optim.SGD(b.parameters(), lr=0.3)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(b(data.X_train), data.y_train)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    losses.append(F.cross_entropy(b(data.X_train), data.y_train).item())
    # optlib's and torch's SGD on the same float64 gradients: the same step up to the order of
    # its two roundings, a few ulps per step over 5 non-adaptive steps (rtol 1e-13 = 450 ulps;
    # atol ~ 5 ulps of the O(1) weights for entries near 0), and the losses follow
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-13, atol=1e-15)
    assert curve.steps == [0, 1, 2, 3, 4, 5] and curve.examples == [40 * s for s in curve.steps]
    assert curve.train_loss == pytest.approx(losses, rel=1e-13)
    assert curve.batch_size == 40 and list(curve.epochs) == [0, 1, 2, 3, 4, 5]


def test_minibatches_are_the_shuffled_epochs_of_epoch_batches():
    data = _data()
    a, b = _model(), _model()
    curve = run_curve(
        lambda p: optlib.SGD(p, lr=0.1), a, data, batch_size=8, epochs=3, seed=4, evals_per_epoch=5
    )
    opt = optlib.SGD(b.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        for idx in sto.epoch_batches(40, 8, generator=g):
            opt.zero_grad()
            F.cross_entropy(b(data.X_train[idx]), data.y_train[idx]).backward()
            opt.step()
    torch.testing.assert_close(_params(a), _params(b), rtol=0, atol=0)
    assert curve.steps == list(range(16)) and curve.examples[-1] == 15 * 8
    loss, acc = evaluate(b, data.X_test, data.y_test, F.cross_entropy)
    assert curve.test_loss[-1] == loss and curve.test_accuracy[-1] == acc
    assert len(curve.time) == len(curve.steps) and curve.time[0] >= 0
    assert all(t2 >= t1 for t1, t2 in zip(curve.time, curve.time[1:]))


def test_drop_last_and_fractional_epochs():
    curve = run_curve(lambda p: optlib.SGD(p, lr=0.1), _model(), _data(), batch_size=12, epochs=2.5)
    # 40 // 12 = 3 steps an epoch (4 examples left out each epoch); 2.5 epochs -> 8 steps
    assert curve.steps == [0, 3, 6, 8] and curve.examples == [0, 36, 72, 96]
    # the length is in examples: 3 epochs of 40 are 120 examples, 10 steps of 12
    longer = run_curve(lambda p: optlib.SGD(p, lr=0.1), _model(), _data(), batch_size=12, epochs=3)
    assert longer.examples[-1] == 120 and longer.steps[-1] == 10


def test_scheduler_is_stepped_after_every_step_and_lr_recorded():
    curve = run_curve(
        lambda p: optlib.SGD(p, lr=0.2),
        _model(),
        _data(),
        batch_size=10,
        epochs=3,
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5),
    )
    # 0.2 halved: exact in binary (0.2 / 2 is the double nearest 0.1)
    assert curve.lr == [0.2] * 4 + [0.1] * 4 + [0.05] * 4


def test_divergence_and_target_stop_the_run():
    data = _data()
    blown = run_curve(lambda p: optlib.SGD(p, lr=1e4), _model(), data, batch_size=None, epochs=50)
    assert blown.diverged and blown.steps[-1] < 50
    done = run_curve(
        lambda p: optlib.SGD(p, lr=0.5), _model(), data, batch_size=None, epochs=500,
        stop_below=0.5,
    )  # fmt: skip
    assert not done.diverged and done.final_train_loss < 0.5 <= done.train_loss[-2]
    assert done.steps[-1] < 500


def test_same_seed_same_curve_and_loss_at():
    make = lambda: run_curve(  # noqa: E731
        lambda p: optlib.SGD(p, lr=0.1), _model(), _data(), batch_size=5, epochs=2, seed=1
    )
    a, b = make(), make()
    assert a.train_loss == b.train_loss and a.test_accuracy == b.test_accuracy
    assert a.loss_at(a.examples[1]) == a.train_loss[1]
    assert a.loss_at(a.examples[1] + 1) == a.train_loss[1]
    with pytest.raises(ValueError):
        a.loss_at(-1)


def test_optimizer_instances_and_bad_arguments():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    curve = run_curve(opt, model, _data(), batch_size=20, epochs=1)
    assert curve.steps == [0, 2]
    with pytest.raises(ValueError, match="batch_size"):
        run_curve(opt, model, _data(), batch_size=0, epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        run_curve(opt, model, _data(), batch_size=4, epochs=0)


def test_l2_objective_trains_like_sgd_weight_decay():
    """The gradient of (λ/2)‖θ‖² is λθ: the same step as torch.optim.SGD(weight_decay=λ)."""
    data = _data()
    a, b = _model(), _model()
    run_curve(lambda p: optlib.SGD(p, lr=0.2), a, data, batch_size=8, epochs=2, l2=0.3)
    run_curve(
        lambda p: torch.optim.SGD(p, lr=0.2, weight_decay=0.3), b, data, batch_size=8, epochs=2
    )
    # autograd's λθ from the penalty against torch's added λθ: an ulp or two per step, over
    # 10 plain SGD steps (rtol 1e-12 is 4500 ulps; atol, ~50 ulps of O(1) weights near 0)
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- several seeds


def test_fractional_evals_per_epoch_evaluate_every_few_epochs():
    curve = run_curve(
        lambda p: optlib.SGD(p, lr=0.1), _model(), _data(), batch_size=None, epochs=9,
        evals_per_epoch=0.25,
    )  # fmt: skip
    assert curve.steps == [0, 4, 8, 9]  # every 4 epochs, and the last step
    with pytest.raises(ValueError, match="evals_per_epoch"):
        run_curve(lambda p: optlib.SGD(p, lr=0.1), _model(), _data(), batch_size=None, epochs=1,
                  evals_per_epoch=-0.5)  # fmt: skip


def test_stable_lr_grid_is_built_from_the_stability_limit():
    grid = stable_lr_grid(0.5, 4)  # 2/λ = 4; top sqrt(2)/λ, then halving
    top = 2**0.5 / 0.5
    # halvings of the top are exact; the top itself is a few roundings (4 ulps)
    assert grid == pytest.approx([top / 8, top / 4, top / 2, top], rel=4 * EPS)
    assert max(grid) * 0.5 < 2 and grid == sorted(grid)
    tenths = stable_lr_grid(2.0, 3, top=1.0, factor=10.0)
    assert tenths == pytest.approx([0.005, 0.05, 0.5], rel=4 * EPS)  # divisions by 10: ulps
    for bad in [dict(top=2.0), dict(top=0.0), dict(factor=1.0)]:
        with pytest.raises(ValueError):
            stable_lr_grid(1.0, 3, **bad)
    with pytest.raises(ValueError, match="sharpness"):
        stable_lr_grid(0.0, 3)


def _fake_curve(losses, diverged=False, n=10):
    c = Curve(batch_size=n, n=n, diverged=diverged)
    c.examples = [n * k for k in range(len(losses))]
    c.train_loss = list(losses)
    return c


def test_final_score_counts_a_diverged_run_as_infinite():
    assert _fake_curve([2.0, 1.0]).final_score == 1.0
    assert _fake_curve([2.0, 30.0], diverged=True).final_score == float("inf")


def test_sweep_seeds_picks_the_lowest_median_not_the_luckiest_seed():
    finals = {  # η = 1 has the single best run, η = 2 the best median; η = 4 diverges in 2 of 3
        (1.0, 0): 0.01, (1.0, 1): 0.9, (1.0, 2): 0.8,
        (2.0, 0): 0.3, (2.0, 1): 0.2, (2.0, 2): 0.25,
        (4.0, 0): 0.05, (4.0, 1): None, (4.0, 2): None,
    }  # fmt: skip
    calls = []

    def run(lr, seed):
        calls.append((lr, seed))
        value = finals[lr, seed]
        if value is None:
            return _fake_curve([1.0, 1e3], diverged=True)
        return _fake_curve([1.0, value])

    sweep = sweep_seeds(run, [1.0, 2.0, 4.0], [0, 1, 2])
    assert calls[:3] == [(1.0, 0), (2.0, 0), (4.0, 0)]  # seeds outermost: interleaved timings
    assert sweep.best_lr == 2.0
    assert sweep.median_final.tolist() == [0.8, 0.25, float("inf")]  # medians select: exact
    assert sweep.finals(4.0)[1] == float("inf") and len(sweep.runs(2.0)) == 3
    hopeless = sweep_seeds(lambda lr, s: _fake_curve([1.0, 9.0], diverged=True), [1.0], [0])
    with pytest.raises(ValueError, match="lower the grid"):
        _ = hopeless.best_lr
    with pytest.raises(ValueError):
        sweep_seeds(run, [], [0])


def test_seed_median_interpolates_and_treats_divergence_as_infinite():
    a = _fake_curve([1.0, 0.1, 0.01])  # examples 0, 10, 20
    b = _fake_curve([1.0, 0.4, 0.04])
    c = _fake_curve([1.0, 50.0], diverged=True)
    at = [0, 5, 10, 20]
    # log-linear interpolation: exp of a mean of logs, a few ulps (rel 1e-14 = 45)
    expected = [1.0, 0.1**0.5, 0.1, 0.01]
    assert curves.seed_median([a], at) == pytest.approx(expected, rel=1e-14)
    # median of 0.01, 0.04, inf, each read at a data point through exp(log x): a few ulps
    assert curves.seed_median([a, b, c], at)[-1] == pytest.approx(0.04, rel=1e-14)
    assert curves.seed_median([a, c, c], at)[-1] == float("inf")
    with pytest.raises(ValueError):
        curves.seed_median([], at)
