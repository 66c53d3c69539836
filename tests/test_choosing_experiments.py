"""Chapter 12's building blocks: Wilson et al.'s construction (problems.wilson), the ES gradient
estimator (experiments.evolution), Adam-then-SGD switching (experiments.switching) and races
with held-out curves (experiments.race)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import optlib
from optlib.experiments.evolution import es_gradient, es_minimize, linear_variance
from optlib.experiments.race import heldout, race
from optlib.experiments.stacked import BatchStream, StackedModels
from optlib.experiments.switching import AdamThenSGD, projected_sgd_lr
from optlib.problems import workload
from optlib.problems.wilson import minimum_norm, wilson_features, wilson_problem


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- Wilson et al.


def test_wilson_features_follow_the_construction():
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    X = wilson_features(y)
    assert X.shape == (4, 24)
    assert torch.equal(X[:, 0], y) and torch.equal(X[:, 1:3], torch.ones(4, 2, dtype=X.dtype))
    assert X[:, 3:].sum(1).tolist() == [1.0, 5.0, 1.0, 5.0]  # one own feature, or five
    own = (X[:, 3:] != 0).double()
    assert torch.equal(own @ own.T, torch.diag(own.sum(1)))  # nobody shares an own feature
    with pytest.raises(ValueError, match="at least 3"):
        wilson_features(y[:2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wilson_sign_solution_interpolates_and_min_norm_generalises(seed):
    P = wilson_problem(30, 0.7, n_test=400, seed=seed)
    assert (P.y > 0).sum() > (P.y < 0).sum()
    s = torch.sign(P.X.T @ P.y)
    assert torch.equal(P.X @ s, 4 * P.y)  # Wilson et al.'s Lemma 3.1 condition, c = 4
    assert float(P.loss(s / 4)) == 0.0
    negatives = float((P.y_test < 0).double().mean())
    assert float(P.test_error(s)) == pytest.approx(negatives)  # every test point called +1
    w = minimum_norm(P.X, P.y)
    assert float(P.loss(w)) < 1e-28
    assert float(P.test_error(w)) == 0.0
    # the minimum-norm solution equals the pseudo-inverse's, within float64 rounding of a
    # small well-conditioned solve
    torch.testing.assert_close(w, torch.linalg.pinv(P.X) @ P.y, rtol=1e-10, atol=1e-12)


def test_wilson_gd_reaches_minimum_norm_and_adam_the_sign_direction():
    P = wilson_problem(20, 0.7, n_test=200, seed=3)
    runs = {}
    for name, make in {"SGD": lambda w: optlib.SGD([w], lr=0.2),
                       "Adam": lambda w: optlib.Adam([w], lr=1e-2)}.items():  # fmt: skip
        w = torch.zeros(P.d, dtype=torch.float64, requires_grad=True)
        opt = make(w)
        for _ in range(1500):
            opt.zero_grad()
            P.loss(w).backward()
            opt.step()
        runs[name] = w.detach()
    w_mn = minimum_norm(P.X, P.y)
    assert float((runs["SGD"] - w_mn).norm() / w_mn.norm()) < 1e-8
    s = torch.sign(P.X.T @ P.y)
    cos = float(runs["Adam"] @ s / runs["Adam"].norm() / s.norm())
    assert cos > 1 - 1e-9
    assert float(P.test_error(runs["Adam"])) == pytest.approx(float((P.y_test < 0).double().mean()))


def test_wilson_problem_rejects_bad_arguments():
    with pytest.raises(ValueError, match="p"):
        wilson_problem(10, 0.5)
    with pytest.raises(ValueError, match="n"):
        wilson_problem(2, 0.7)


# --------------------------------------------------------------------------- ES


def _quadratic(H: torch.Tensor, b: torch.Tensor):
    def f(points):
        return 0.5 * ((points @ H) * points).sum(-1) - points @ b

    return f


def test_es_exact_on_linear_functions_given_the_directions():
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(7, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 7, generator=g, dtype=torch.float64)
    theta = torch.randn(7, generator=g, dtype=torch.float64)
    est = es_gradient(lambda x: x @ grad + 3.0, theta, 0.7, 5, eps=eps)
    # antithetic pairs on a linear f: (1/n) sum eps eps^T grad, whatever sigma
    torch.testing.assert_close(est, eps.T @ (eps @ grad) / 5, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["quadratic", "cosine"])
def test_es_is_unbiased_for_the_smoothed_gradient(kind):
    """The mean of many independent estimates lies within 5 standard errors of grad f_sigma
    (quadratic: grad f itself; sum of cosines: -sin(theta) exp(-sigma^2/2)) in every coordinate;
    derandomized (fixed generator), so the statistic is a fixed number."""
    d, n_pairs, reps = 6, 4, 4000
    sigma = 0.5 if kind == "quadratic" else 1.0
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(d, generator=g, dtype=torch.float64)
    if kind == "quadratic":
        A = torch.randn(d, d, generator=g, dtype=torch.float64)
        H, b = A @ A.T / d + torch.eye(d, dtype=torch.float64), torch.randn(d, generator=g,
                                                                           dtype=torch.float64)
        f, truth = _quadratic(H, b), H @ theta - b
    else:
        def f(points):
            return torch.cos(points).sum(-1)

        truth = -torch.sin(theta) * math.exp(-(sigma**2) / 2)
    batch = theta.expand(reps, d).contiguous()  # reps independent estimates in one call
    est = es_gradient(f, batch, sigma, n_pairs, generator=g)
    mean, se = est.mean(0), est.std(0) / math.sqrt(reps)
    assert bool(((mean - truth).abs() < 5 * se).all()), (mean, truth, se)
    if kind == "cosine":  # and it is *not* the unsmoothed gradient: the bias is visible
        assert float((mean + torch.sin(theta)).abs().max()) > 5 * float(se.max())


def test_es_variance_on_a_linear_function_matches_the_formula():
    d, n_pairs, reps = 20, 3, 20000
    g = torch.Generator().manual_seed(2)
    grad = torch.randn(d, generator=g, dtype=torch.float64)
    theta = torch.zeros(reps, d, dtype=torch.float64)
    est = es_gradient(lambda x: x @ grad, theta, 0.1, n_pairs, generator=g)
    measured = float(((est - grad) ** 2).sum(1).mean())
    expected = linear_variance(d, n_pairs, float(grad @ grad))
    # the squared error has a relative standard deviation of about sqrt(3/reps)-ish scale
    # times a small constant; 5% is well outside it at 20000 estimates
    assert abs(measured / expected - 1) < 0.05, (measured, expected)


def test_es_gradient_validates_and_checks_shapes():
    theta = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="sigma"):
        es_gradient(lambda x: x.sum(-1), theta, 0.0, 2)
    with pytest.raises(ValueError, match="n_pairs"):
        es_gradient(lambda x: x.sum(-1), theta, 0.1, 0)
    with pytest.raises(ValueError, match="f returned"):
        es_gradient(lambda x: x.sum(), theta, 0.1, 2)
    with pytest.raises(ValueError, match="eps"):
        es_gradient(lambda x: x.sum(-1), theta, 0.1, 2, eps=torch.zeros(3, 3))


def test_es_minimize_rows_are_separate_runs_and_it_descends():
    H = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    f = _quadratic(H, torch.zeros(3, dtype=torch.float64))
    theta0 = torch.tensor([[1.0, -1.0, 0.5], [2.0, 0.0, -1.0]], dtype=torch.float64)
    both = es_minimize(f, theta0, sigma=0.1, n_pairs=4, steps=200, seed=0,
                       make_optimizer=lambda p: optlib.SGD(p, lr=0.05))  # fmt: skip
    assert both["values"].shape == (201, 2)
    assert (both["values"][-1] < 1e-3 * both["values"][0]).all()
    assert both["evaluations"][-1] == 2 * 4 * 200


# --------------------------------------------------------------------------- switching


def test_projected_sgd_lr_recovers_an_sgd_step():
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert projected_sgd_lr(-0.3 * g, g) == pytest.approx(0.3, rel=1e-12)
    assert math.isnan(projected_sgd_lr(torch.zeros(3), g))


def _mlp_run(make, steps=30, seed=0):
    w = workload("digits_mlp", dtype=torch.float64)
    model = w.model(seed)
    opt = make(list(model.parameters()))
    stream = BatchStream(len(w.data.y_train), 32, seed)
    for _ in range(steps):
        idx = stream.next()
        opt.zero_grad()
        w.loss_fn(model(w.data.X_train[idx]), w.data.y_train[idx]).backward()
        opt.step()
    return opt, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_adam_then_sgd_phases_equal_adam_and_sgd():
    _, adam = _mlp_run(lambda p: optlib.Adam(p, lr=1e-2))
    _, never = _mlp_run(lambda p: AdamThenSGD(p, lr=1e-2, switch=None))
    torch.testing.assert_close(never, adam, rtol=0, atol=0)
    _, sgd = _mlp_run(lambda p: optlib.SGD(p, lr=0.05, momentum=0.9))
    opt, zero = _mlp_run(lambda p: AdamThenSGD(p, lr=1e-2, switch=0, sgd_lr=0.05))
    torch.testing.assert_close(zero, sgd, rtol=0, atol=0)
    assert opt.param_groups[0]["switched_at"] == 0


def test_adam_then_sgd_switches_at_a_fixed_step_with_the_projected_rate():
    opt, _ = _mlp_run(lambda p: AdamThenSGD(p, lr=1e-2, switch=10), steps=25)
    group = opt.param_groups[0]
    assert group["switched_at"] == 10 and group["phase"] == "sgd"
    assert group["sgd_lr"] == pytest.approx((1 - 0.9) * group["Lambda"])
    assert group["Lambda"] > 0


def test_swats_criterion_fires_with_a_loose_tolerance_and_not_with_the_papers():
    loose, _ = _mlp_run(lambda p: AdamThenSGD(p, lr=1e-2, tol=0.2, relative=True), steps=60)
    assert loose.param_groups[0]["switched_at"] is not None
    strict, _ = _mlp_run(lambda p: AdamThenSGD(p, lr=1e-2), steps=60)
    assert strict.param_groups[0]["switched_at"] is None  # |Lambda - gamma| < 1e-9: rare


def test_adam_then_sgd_validates():
    p = [torch.zeros(2, requires_grad=True)]
    for bad in (dict(lr=0.0), dict(switch="later"), dict(switch=-1), dict(tol=0.0),
                dict(sgd_lr=-1.0)):  # fmt: skip
        with pytest.raises(ValueError):
            AdamThenSGD(p, **bad)


# --------------------------------------------------------------------------- races


def test_heldout_matches_per_copy_evaluation():
    w = workload("digits_mlp")
    stacked = StackedModels([w.model(s) for s in (0, 1)])
    loss, acc = heldout(stacked, w.data.X_test, w.data.y_test, chunk=100)
    for k in range(2):
        model = stacked.model(k)
        with torch.no_grad():
            out = model(w.data.X_test)
        assert loss[k] == pytest.approx(
            float(torch.nn.functional.cross_entropy(out, w.data.y_test)), rel=1e-5)
        assert acc[k] == pytest.approx(float((out.argmax(1) == w.data.y_test).double().mean()))


def test_race_equals_separate_races_and_handles_schedule_free():
    kw = dict(steps=20, batch_size=16, eval_every=10)
    both = race("digits_mlp", "AdamW", [[3e-3, 0], [1e-2, 1]], **kw)
    one = race("digits_mlp", "AdamW", [[1e-2, 1]], **kw)
    assert both["curve_steps"] == [0, 10, 20]
    np.testing.assert_allclose(np.array(both["loss"])[:, 1], np.array(one["loss"])[:, 0],
                               rtol=1e-5)  # fmt: skip
    sf = race("digits_mlp", "AdamWScheduleFree", [[1e-2, 0]], schedule="constant", **kw)
    # evaluated at x: the same as stepping one model alone and calling eval()
    w = workload("digits_mlp")
    model = w.model(0)
    opt = optlib.AdamWScheduleFree(model.parameters(), lr=1e-2, foreach=True)
    opt.train()
    stream = BatchStream(len(w.data.y_train), 16, 0)
    for _ in range(20):
        idx = stream.next()
        opt.zero_grad()
        w.loss_fn(model(w.data.X_train[idx]), w.data.y_train[idx]).backward()
        opt.step()
    opt.eval()
    assert sf["final_loss"][0] == pytest.approx(w.loss(model), rel=1e-4)


def test_race_reports_group_keys_in_run_order():
    out = race("digits_mlp", AdamThenSGD, [[1e-2, 1], [1e-2, 0]], steps=12, batch_size=16,
               eval_every=6, options=dict(switch=5), schedule="constant",
               group_keys=["switched_at"])  # fmt: skip
    assert out["switched_at"] == [5, 5]


def test_race_run_options_give_each_run_its_own_group_entries():
    arms = [dict(switch=None), dict(switch=4), dict(switch=None)]
    out = race("digits_mlp", AdamThenSGD, [[1e-2, 0], [1e-2, 0], [1e-2, 1]], steps=8,
               batch_size=16, eval_every=4, schedule="constant", run_options=arms,
               group_keys=["switched_at", "switch"])  # fmt: skip
    assert out["switch"] == [None, 4, None] and out["switched_at"] == [None, 4, None]
    assert out["loss"][-1][0] != out["loss"][-1][1]  # same seed, other arm
    with pytest.raises(ValueError, match="run_options"):
        race("digits_mlp", "AdamW", [[1e-2, 0]], steps=2, batch_size=8, eval_every=1,
             run_options=[{}, {}])  # fmt: skip


def test_mixed_runs_equal_their_optimizers_alone():
    """Three optimizers side by side in one stacked model (one group each, schedule-free kept
    unscheduled) take the steps each takes in a race of its own."""
    from optlib.experiments.race import Mixed

    kw = dict(steps=16, batch_size=16, eval_every=8, warmup=2, train_examples=64)
    arms = [dict(optimizer="SGD", options={"momentum": 0.9}),
            dict(optimizer="AdamWScheduleFree", options={"warmup_steps": 2}, scheduled=False),
            dict(optimizer=AdamThenSGD, options={"switch": 5})]  # fmt: skip
    mixed = race("digits_mlp", Mixed, [[0.1, 0], [1e-2, 0], [1e-2, 1]], run_options=arms,
                 group_keys=["switched_at"], **kw)  # fmt: skip
    alone = [
        race("digits_mlp", "SGD", [[0.1, 0]], options={"momentum": 0.9}, **kw),
        race("digits_mlp", "AdamWScheduleFree", [[1e-2, 0]], schedule="constant",
             options={"warmup_steps": 2}, **{**kw, "warmup": 0}),
        race("digits_mlp", AdamThenSGD, [[1e-2, 1]], options={"switch": 5}, **kw),
    ]  # fmt: skip
    for k, one in enumerate(alone):
        for key in ("loss", "train_loss"):
            np.testing.assert_allclose(np.array(mixed[key])[:, k], np.array(one[key])[:, 0],
                                       rtol=1e-5)  # fmt: skip
    assert mixed["switched_at"] == [None, None, 5]


def test_race_takes_the_experiments_optimizers_by_name():
    """"Mixed" and "AdamThenSGD" by name (JSON arguments, so a race can be memoised) give the
    runs that the classes give."""
    from optlib.experiments.race import Mixed

    kw = dict(steps=6, batch_size=16, eval_every=3, schedule="constant")
    arms = [dict(optimizer="SGD", options={"momentum": 0.9}), dict(optimizer="AdamW")]
    by_name = race("digits_mlp", "Mixed", [[0.1, 0], [1e-2, 0]], run_options=arms, **kw)
    by_class = race("digits_mlp", Mixed, [[0.1, 0], [1e-2, 0]], run_options=arms, **kw)
    assert by_name["loss"] == by_class["loss"]
    out = race("digits_mlp", "AdamThenSGD", [[1e-2, 0]], options={"switch": 2},
               group_keys=["switched_at"], **kw)  # fmt: skip
    assert out["switched_at"] == [2]
    with pytest.raises(ValueError, match="not an optimizer class"):
        race("digits_mlp", "NoSuchOptimizer", [[1e-2, 0]], **kw)
