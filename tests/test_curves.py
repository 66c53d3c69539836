"""optlib.experiments.curves: the loop takes the steps it says (full batch, shuffled epochs,
schedulers), counts examples, evaluates the full loss, stops on divergence or a target, and is
reproducible."""

from __future__ import annotations

import pytest
import torch

import optlib
from optlib.experiments import stochastic as sto
from optlib.experiments.curves import evaluate, run_curve
from optlib.problems import Dataset, mlp

F = torch.nn.functional


def _data(n: int = 40, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n + 10, 4, generator=g, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 1).long()
    return Dataset(X[:n], y[:n], X[n:], y[n:])


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
    assert curve.lr == pytest.approx([0.2] * 4 + [0.1] * 4 + [0.05] * 4)


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
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-12, atol=1e-14)
