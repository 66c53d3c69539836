"""optlib.experiments.train: seeded, reproducible histories; divergence detection; any torch
optimizer."""

import math

import numpy as np
import pytest
import torch

import optlib
from optlib.experiments.rates import contraction_rate
from optlib.experiments.train import History, Supervised, run, stepper
from optlib.problems import landscapes as ls


def small_problem(seed=0, n=96):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
    ).double()
    return Supervised(model, X, y)


def assert_same_history(a: History, b: History):
    assert a.loss == b.loss and a.grad_norm == b.grad_norm and a.step_norm == b.step_norm
    assert a.examples == b.examples and a.diverged == b.diverged
    if a.params is not None:
        np.testing.assert_array_equal(a.params, b.params)


def test_gd_on_a_landscape_records_everything():
    q = ls.Quadratic(4.0, angle=0.3)
    h = run(lambda p: optlib.SGD(p, lr=0.5), q, 20, label="GD")
    assert h.steps == 20 and not h.diverged and h.label == "GD"
    assert len(h.loss) == len(h.grad_norm) == len(h.time) == len(h.examples) == 21
    assert h.params.shape == (21, 2)
    np.testing.assert_array_equal(h.params[0], q.start)
    # The records agree with the landscape and with the update theta <- theta - lr * grad.
    # recorded values recomputed from the recorded iterate: the same float64 formulas, a few
    # ulps (rel 1e-14 is 45); a step is one fused update against numpy's two roundings
    for t in range(21):
        theta = torch.tensor(h.params[t])
        assert h.loss[t] == pytest.approx(float(q.f(theta)), rel=1e-14)
        assert h.grad_norm[t] == pytest.approx(float(q.grad(theta).norm()), rel=1e-14)
    for t in range(20):
        expected = h.params[t] - 0.5 * q.grad(torch.tensor(h.params[t])).numpy()
        np.testing.assert_allclose(h.params[t + 1], expected, rtol=1e-14, atol=1e-15)
        step = np.linalg.norm(h.params[t + 1] - h.params[t])
        assert h.step_norm[t] == pytest.approx(step, rel=1e-14)
    assert h.time[0] == 0 and all(np.diff(h.time) >= 0)
    assert h.examples == [0] * 21


def test_landscape_runs_are_reproducible_even_with_noise():
    noisy = ls.Noisy(ls.Rosenbrock(), sigma=2.0, seed=3)
    make = lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9)  # noqa: E731
    a = run(make, noisy, 50)
    b = run(make, noisy, 50)
    assert_same_history(a, b)
    c = run(make, ls.Noisy(ls.Rosenbrock(), sigma=2.0, seed=4), 50)
    assert a.loss != c.loss


def test_optlib_and_torch_sgd_give_the_same_history():
    f = ls.Himmelblau()
    a = run(lambda p: optlib.SGD(p, lr=0.01, momentum=0.5), f, 40, x0=(0.5, -0.5))
    b = run(lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.5), f, 40, x0=(0.5, -0.5))
    # The same momentum update (measured: bit-identical). Were the roundings ordered otherwise,
    # a few ulps per step would grow while the run leaves the maximum near the start (curvature
    # -41, lr 0.01: x1.4 per step for ~10 steps, ~30x) and then shrink: ~40 x 4 x 30 ulps =
    # 1e-12 at most; the losses, near 0 at the minimum, get atol for their cancellation
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12, atol=1e-14)


def test_an_optimizer_instance_brings_its_own_point():
    theta = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = optlib.SGD([theta], lr=0.1)
    h = run(opt, ls.Quadratic(2.0), 5)
    np.testing.assert_array_equal(h.params[0], [1.0, 1.0])
    np.testing.assert_array_equal(h.params[-1], theta.detach().numpy())
    bad = optlib.SGD([torch.zeros(3, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="2-element"):
        run(bad, ls.Quadratic(2.0), 5)


def test_lbfgs_with_a_closure_works():
    h = run(
        lambda p: torch.optim.LBFGS(p, max_iter=5, line_search_fn="strong_wolfe"),
        ls.Rosenbrock(),
        20,
    )
    assert not h.diverged and h.final_loss < 1e-8  # converged (not a rounding tolerance)


@pytest.mark.parametrize("opt", [optlib.SGD, torch.optim.SGD])
@pytest.mark.parametrize("batch_size", [None, 16])
def test_supervised_runs_are_reproducible(opt, batch_size):
    histories = []
    for _ in range(2):
        prob = small_problem(seed=1)
        histories.append(
            run(lambda p, opt=opt: opt(p, lr=0.2), prob, 30, batch_size=batch_size, seed=5)
        )
    a, b = histories
    assert_same_history(a, b)
    per_step = 96 if batch_size is None else 16
    assert a.examples == [per_step * t for t in range(31)]
    assert a.params is None  # 66 parameters: more than record_params_max
    assert a.loss[-1] < a.loss[0]


def test_full_batch_loss_is_the_full_objective():
    prob = small_problem()
    h = run(lambda p: optlib.SGD(p, lr=0.1), prob, 3, record_params_max=1000)
    assert h.params.shape == (4, 66)
    with torch.no_grad():
        final = prob.loss_fn(prob.model(prob.X), prob.y)
    # the same evaluation of the same model: identical up to reduction order (45 ulps allowed)
    assert h.final_loss == pytest.approx(float(final), rel=1e-14)


def test_minibatches_differ_with_the_seed_and_cover_an_epoch():
    a = run(lambda p: optlib.SGD(p, lr=0.1), small_problem(), 6, batch_size=16, seed=0)
    b = run(lambda p: optlib.SGD(p, lr=0.1), small_problem(), 6, batch_size=16, seed=1)
    assert a.loss != b.loss
    # Sanity of the batch order itself: one epoch visits every example once.
    from optlib.experiments.train import _batches

    gen = _batches(96, 16, seed=0)
    seen = torch.cat([next(gen) for _ in range(6)])
    assert sorted(seen.tolist()) == list(range(96))


def test_divergence_is_detected_and_stops_the_run():
    q = ls.Quadratic(10.0)
    h = run(lambda p: optlib.SGD(p, lr=2.5 / q.L), q, 1000)
    assert h.diverged and h.steps < 1000
    assert len(h.loss) == h.steps + 1 == len(h.params)
    assert h.loss[-1] > 1e6 * h.loss[0]
    ok = run(lambda p: optlib.SGD(p, lr=1.9 / q.L), q, 1000)
    assert not ok.diverged and ok.steps == 1000


def test_non_finite_loss_is_divergence():
    prob = small_problem()
    h = run(lambda p: optlib.SGD(p, lr=1e30), prob, 50)
    assert h.diverged
    assert not math.isfinite(h.loss[-1]) or h.loss[-1] > 1e6


def test_contraction_rate_recovers_a_geometric_sequence():
    rho = 0.83
    e = 3.0 * rho ** np.arange(50)
    # a fitted slope of exact powers: ulps of log(e) <= 10, over 50 points (~1e-14)
    assert contraction_rate(e) == pytest.approx(rho, rel=1e-12)
    assert contraction_rate(e, start=10, stop=20) == pytest.approx(rho, rel=1e-12)
    with pytest.raises(ValueError, match="positive"):
        contraction_rate(np.append(e, 0.0))
    with pytest.raises(ValueError, match="two values"):
        contraction_rate([1.0])


def test_gd_distance_contracts_at_the_theoretical_rate():
    q = ls.Quadratic(20.0, angle=1.0)
    h = run(lambda p: optlib.SGD(p, lr=q.optimal_lr), q, 60)
    measured = contraction_rate(h.distances(q.minimizers[0]))
    # with the optimal step both eigencomponents contract by exactly the rate, so the fit is
    # exact up to rounding: distances fall to 2.5e-3 of the start in 60 steps, each known to
    # ~ulps of the start, i.e. ~1e-13 relative
    assert measured == pytest.approx(q.gd_rate(), rel=1e-9)


def test_progress_line_only_when_asked(capsys):
    run(lambda p: optlib.SGD(p, lr=0.1), ls.Quadratic(2.0), 5, progress=False)
    assert capsys.readouterr().err == ""
    run(lambda p: optlib.SGD(p, lr=0.1), ls.Quadratic(2.0), 5, progress=True, label="demo")
    err = capsys.readouterr().err
    assert "demo" in err and "loss" in err


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        run(lambda p: optlib.SGD(p, lr=0.1), ls.Quadratic(), -1)
    with pytest.raises(ValueError, match="batch_size"):
        run(lambda p: optlib.SGD(p, lr=0.1), ls.Quadratic(), 3, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        run(lambda p: optlib.SGD(p, lr=0.1), small_problem(), 3, batch_size=0)
    with pytest.raises(TypeError, match="Landscape or a Supervised"):
        run(lambda p: optlib.SGD(p, lr=0.1), object(), 3)


def test_a_scheduler_is_stepped_after_every_step():
    """Step t runs with the lr the scheduler set after t - 1 steps: on f = x^2/2 in 1-D, GD moves
    x_t = (1 - lr_t) x_{t-1}."""
    q = ls.Quadratic(1.0)
    hist = run(
        lambda p: optlib.SGD(p, lr=0.5),
        q,
        4,
        x0=(1.0, 1.0),
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 / (k + 1)),
    )
    x = np.ones(2)
    for t in range(1, 5):
        x = x * (1 - 0.5 / t)
        np.testing.assert_allclose(hist.params[t], x, rtol=1e-14)  # 4 steps, a few ulps


@pytest.mark.parametrize("batch_size", [None, 16])
def test_stepper_takes_the_same_steps_as_run(batch_size):
    """A stepper is run() without the bookkeeping: same batches, same parameters after k steps."""
    a, b = small_problem(seed=2), small_problem(seed=2)
    hist = run(lambda p: optlib.SGD(p, lr=0.2), a, 7, batch_size=batch_size, seed=3)
    step = stepper(lambda p: optlib.SGD(p, lr=0.2), b, batch_size=batch_size, seed=3)
    losses = [step() for _ in range(7)]
    assert losses == hist.loss[:7]  # the loss of the batch each step used
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(TypeError):
        stepper(lambda p: optlib.SGD(p, lr=0.2), ls.Quadratic(10.0))
    with pytest.raises(ValueError, match="batch_size"):
        stepper(lambda p: optlib.SGD(p, lr=0.2), small_problem(), batch_size=0)
