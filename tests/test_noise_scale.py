"""optlib.experiments.noise_scale: the two-batch-size estimator of McCandlish et al. recovers the
gradient's signal and noise exactly from exact expectations (by formula and by enumerating every
batch of a small data set), agrees with the direct per-example computation and with the known
covariance of a linear-regression gradient within its sampling error, and the critical-batch fit
recovers its parameters."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from optlib.experiments import noise_scale as ns

EPS = float(torch.finfo(torch.float64).eps)


def _half_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out.squeeze(-1) - target) ** 2).mean()


def _regression(n: int, d: int, *, noise: float, delta: float, seed: int = 0):
    """Linear regression y = x.w* + noise with x ~ N(0, I_d), and a model at w = w* + delta."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_star = torch.randn(d, generator=g, dtype=torch.float64)
    y = X @ w_star + noise * torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    direction = torch.randn(d, generator=g, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(w_star + delta * direction / direction.norm())
    return model, X, y


# --------------------------------------------------------------------------- exact expectations


@pytest.mark.parametrize("population", [None, 50, 7])
@pytest.mark.parametrize("b, B", [(1, 2), (3, 7), (4, 5)])
def test_exact_expectations_give_back_signal_and_noise(population, b, B):
    signal, noise = 0.37, 5.2

    def expected_sq(batch: int) -> float:
        if population is None:
            return signal + noise / batch
        n = population
        return signal + noise / batch * (n - batch) / (n - 1)

    est = ns.noise_scale_from_norms(expected_sq(b), b, expected_sq(B), B, population=population)
    # two subtractions and divisions of O(10) numbers: a few ulps of the inputs
    assert math.isclose(est.signal, signal, rel_tol=0, abs_tol=1e-13)
    assert math.isclose(est.noise, noise, rel_tol=1e-13)
    assert math.isclose(est.b_simple, noise / signal, rel_tol=1e-12)


@pytest.mark.parametrize("replace", [False, True])
def test_enumerating_every_batch_recovers_the_direct_computation(replace):
    """On 6 examples, the mean of ||G_B||^2 over every equally likely batch is its expectation,
    so the estimator must return exactly what the per-example gradients say."""
    model, X, y = _regression(6, 3, noise=0.5, delta=0.3, seed=1)
    direct = ns.exact_noise_scale(model, _half_mse, X, y)
    G = torch.cat([
        torch.autograd.grad(_half_mse(model(X[i : i + 1]), y[i : i + 1]), model.weight)[0]
        for i in range(6)
    ])  # one row per example; fmt: skip

    def mean_sq(B: int) -> float:
        batches = (itertools.product(range(6), repeat=B) if replace
                   else itertools.combinations(range(6), B))  # fmt: skip
        return float(np.mean([float(G[list(bt)].mean(0).pow(2).sum()) for bt in batches]))

    b, B = (1, 3) if replace else (2, 4)
    est = ns.noise_scale_from_norms(mean_sq(b), b, mean_sq(B), B,
                                    population=None if replace else 6)  # fmt: skip
    # means over at most 216 batches of O(1) numbers, then a 2x2 solve: ~1e3 eps
    assert math.isclose(est.signal, direct.signal, rel_tol=1e-11)
    assert math.isclose(est.noise, direct.noise, rel_tol=1e-11)


def test_without_the_population_correction_the_estimate_is_biased():
    """Sampling without replacement and ignoring it mixes noise into the signal estimate."""
    signal, noise, n, b, B = 0.01, 4.0, 40, 4, 32
    sq = {k: signal + noise / k * (n - k) / (n - 1) for k in (b, B)}
    naive = ns.noise_scale_from_norms(sq[b], b, sq[B], B)
    fixed = ns.noise_scale_from_norms(sq[b], b, sq[B], B, population=n)
    assert naive.signal < 0 < fixed.signal  # noise / (N - 1) exceeds this small signal
    assert math.isclose(fixed.b_simple, noise / signal, rel_tol=1e-10)


# --------------------------------------------------------------------------- sampled batches


def test_batch_gradient_norms_match_autograd_batch_by_batch():
    model, X, y = _regression(50, 4, noise=1.0, delta=0.5, seed=2)
    sq = ns.batch_gradient_sq_norms(model, _half_mse, X, y, 8, 5, seed=3, chunk=2)
    g = torch.Generator().manual_seed(3)
    idx = torch.rand(5, 50, generator=g).argsort(dim=1)[:, :8]
    for k in range(5):
        (grad,) = torch.autograd.grad(_half_mse(model(X[idx[k]]), y[idx[k]]), model.weight)
        assert math.isclose(sq[k], float(grad.pow(2).sum()), rel_tol=1e-12)


def test_estimate_agrees_with_the_known_covariance_of_a_regression_gradient():
    r"""For x ~ N(0, I_d), y = x.w* + eps (variance s^2), at w = w* + delta, the per-example
    gradient x(x.w - y) has mean delta and covariance trace (d+1)|delta|^2 + d s^2 (Gaussian
    fourth moments), so B_simple = d + 1 + d s^2/|delta|^2 exactly, in the population."""
    d, s, delta = 4, 0.5, 0.4
    model, X, y = _regression(100_000, d, noise=s, delta=delta, seed=4)
    known = ns.NoiseScale(signal=delta**2, noise=(d + 1) * delta**2 + d * s**2)
    direct = ns.exact_noise_scale(model, _half_mse, X, y)
    est = ns.estimate_noise_scale(model, _half_mse, X, y, b_small=2, b_big=256, n_small=20_000,
                                  n_big=2_000, seed=5, replace=True, chunk=5_000)  # fmt: skip
    # the direct computation on 100 000 samples: relative sampling error ~ a few / sqrt(1e5)
    assert abs(direct.b_simple / known.b_simple - 1) < 0.03
    # the estimate from 20 000 + 2 000 batches (drawn with replacement, so the population's
    # spread is the known one): its own sampling error is a few per cent
    assert abs(est.noise / direct.noise - 1) < 0.05
    assert abs(est.signal / direct.signal - 1) < 0.1
    assert abs(est.b_simple / known.b_simple - 1) < 0.12


def test_estimate_on_a_finite_data_set_is_consistent_with_the_direct_computation():
    model, X, y = _regression(300, 3, noise=1.0, delta=0.6, seed=6)
    direct = ns.exact_noise_scale(model, _half_mse, X, y)
    est = ns.estimate_noise_scale(model, _half_mse, X, y, b_small=4, b_big=150, n_small=4000,
                                  n_big=1000, seed=7)  # fmt: skip
    assert abs(est.noise / direct.noise - 1) < 0.05
    assert abs(est.b_simple / direct.b_simple - 1) < 0.15


# --------------------------------------------------------------------------- critical batch


def test_fit_critical_batch_recovers_the_model():
    B = np.array([4, 16, 64, 256, 1024])
    S = 20.0 * (1 + 50.0 / B)
    s_min, b_crit = ns.fit_critical_batch(B, S)
    assert math.isclose(s_min, 20.0, rel_tol=1e-10) and math.isclose(b_crit, 50.0, rel_tol=1e-10)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ns.noise_scale_from_norms(1.0, 8, 1.0, 8), "b_small < b_big"),
        (lambda: ns.noise_scale_from_norms(1.0, 2, 1.0, 8, population=4), "population"),
        (lambda: ns.noise_scale_from_norms([], 2, 1.0, 8), "none given"),
        (lambda: ns.fit_critical_batch([4], [10]), "at least two"),
        (lambda: ns.fit_critical_batch([4, 8], [10, float("inf")]), "finite"),
        (lambda: ns.fit_critical_batch([4, 8], [100, 20]), "level off"),
        (lambda: ns.fit_critical_batch([4, 8], [10, 20]), "do not fall"),
    ],
)
def test_bad_arguments_raise_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_b_simple_of_a_non_positive_signal_is_infinite():
    assert ns.NoiseScale(signal=-1e-3, noise=2.0).b_simple == math.inf
    assert ns.NoiseScale(signal=0.5, noise=2.0).as_dict() == {
        "signal": 0.5, "noise": 2.0, "b_simple": 4.0}  # fmt: skip


# --------------------------------------------------------------------------- during training


def test_stacked_per_example_gradients_are_each_copys_own():
    from optlib.experiments.stacked import StackedModels
    from optlib.experiments.stochastic import per_example_gradients
    from optlib.problems import workload

    work = workload("moe", dtype=torch.float64)
    X, y = work.data.X_train[:40], work.data.y_train[:40]
    models = [work.model(s) for s in (0, 1, 2)]
    G = ns.stacked_per_example_gradients(StackedModels(models), work.loss_fn, X, y)
    assert G.shape == (3, 40, work.n_params)
    for k, model in enumerate(models):
        # the same per-example graphs, batched differently: rounding only
        torch.testing.assert_close(G[k], per_example_gradients(model, work.loss_fn, X, y),
                                   rtol=1e-10, atol=1e-13)  # fmt: skip


def test_noise_scale_during_training_measures_each_copy_as_it_trains_alone():
    from optlib.problems import workload

    est = dict(b_small=4, b_big=256, n_small=256, n_big=64)
    out = ns.noise_scale_during_training("digits_mlp", "SGD", 0.5, [0, 1], [0, 5], estimate=est)
    assert out["steps"] == [0, 5]
    work = workload("digits_mlp")
    X, y = work.data.X_train, work.data.y_train
    for k, seed in enumerate((0, 1)):
        direct = ns.exact_noise_scale(work.model(seed), work.loss_fn, X, y)  # at step 0
        assert math.isclose(out["b_simple"][0][k], direct.b_simple, rel_tol=1e-4)
        assert math.isclose(out["loss"][0][k], work.loss(work.model(seed), "train"), rel_tol=1e-5)
        # the estimate from 256 + 64 batches: within its sampling error of the direct value
        assert abs(out["estimated_b_simple"][0][k] / direct.b_simple - 1) < 0.3
    assert all(a < b for a, b in zip(out["loss"][1], out["loss"][0]))  # it trained
