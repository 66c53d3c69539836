"""optlib.experiments.stochastic: batches are uniform, the variance formula is exact (checked by
enumerating every batch), sampling matches it, per-example gradients match autograd, sharpness
matches eig."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optlib.experiments import stochastic as sto
from optlib.linalg import flatten
from optlib.problems import digits_logreg

F = torch.nn.functional
EPS = torch.finfo(torch.float64).eps


def _G(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + torch.randn(
        d, generator=g, dtype=torch.float64
    )


def _enumerated(G: torch.Tensor, B: int, replace: bool) -> tuple[torch.Tensor, float]:
    """Exact mean and mean squared error of g_B over every equally likely batch."""
    n = len(G)
    batches = (
        itertools.product(range(n), repeat=B) if replace else itertools.combinations(range(n), B)
    )
    gB = torch.stack([G[list(b)].mean(0) for b in batches])
    return gB.mean(0), float(((gB - G.mean(0)) ** 2).sum(1).mean())


# --------------------------------------------------------------------------- the exact formula


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 7),
    d=st.integers(1, 4),
    data=st.data(),
    replace=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_unbiased_and_variance_formula_by_enumerating_every_batch(n, d, data, replace, seed):
    B = data.draw(st.integers(1, n if not replace else min(n, 4)))
    G = _G(n, d, seed)
    mean, mse = _enumerated(G, B, replace)
    # Averages over at most 7^4 = 2401 enumerated batches of O(1) rows: float64 sums of that
    # many terms are exact to ~2401 eps = 5e-13 of their magnitude, hence rtol and atol 1e-12.
    torch.testing.assert_close(mean, G.mean(0), rtol=1e-12, atol=1e-12)  # unbiased
    predicted = sto.minibatch_variance(sto.gradient_spread(G), n, B, replace=replace)
    # the mean of 2401 squared deviations against a closed form: ~5e-13 relative (1e-10 leaves
    # a margin for the cancellation in gB - mean); a full batch has mse 0 up to squared
    # rounding (1e-32), which abs 1e-14 covers
    assert mse == pytest.approx(predicted, rel=1e-10, abs=1e-14)


def test_full_batch_without_replacement_has_no_noise_and_one_example_is_sigma2():
    G = _G(9, 3)
    s2 = sto.gradient_spread(G)
    assert sto.minibatch_variance(s2, 9, 9) == 0.0
    # closed forms with small integer factors: (9 - 1) / (1 * (9 - 1)) and 1/9, a few ulps
    assert sto.minibatch_variance(s2, 9, 1) == pytest.approx(s2, rel=1e-15)
    assert sto.minibatch_variance(s2, 9, 9, replace=True) == pytest.approx(s2 / 9, rel=4 * EPS)
    assert sto.minibatch_variance(s2, 1, 1) == 0.0


def test_gradient_spread_is_the_trace_of_the_population_covariance():
    G = _G(50, 6, seed=3)
    cov = torch.cov(G.T, correction=0)
    # the same 300 squared deviations summed in two orders: <= 300 eps = 7e-14 relative
    assert sto.gradient_spread(G) == pytest.approx(float(torch.trace(cov)), rel=1e-12)
    assert sto.gradient_spread(G[:1]) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: sto.minibatch_variance(1.0, 5, 6),
        lambda: sto.minibatch_variance(1.0, 5, 0),
        lambda: sto.batch_indices(4, 5),
        lambda: sto.batch_indices(0, 1),
        lambda: sto.epoch_batches(3, 4),
        lambda: sto.gradient_spread(torch.zeros(3)),
        lambda: sto.sample_minibatch_gradients(torch.zeros(4, 2), 2, 0),
        lambda: sto.loglog_slope([1, 2], [1, -1]),
        lambda: sto.loglog_slope([1], [1]),
    ],
)
def test_bad_arguments_raise_value_errors_naming_the_problem(call):
    with pytest.raises(ValueError, match="Invalid"):
        call()


def test_with_replacement_may_exceed_n():
    assert sto.minibatch_variance(2.0, 3, 6, replace=True) == pytest.approx(1 / 3, rel=4 * EPS)
    assert len(sto.batch_indices(3, 6, replace=True)) == 6


# --------------------------------------------------------------------------- drawing batches


def test_batch_indices_without_replacement_are_distinct_and_uniform():
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(10)
    for _ in range(2000):
        idx = sto.batch_indices(10, 4, generator=g)
        assert len(idx) == 4 and len(set(idx.tolist())) == 4
        assert 0 <= int(idx.min()) and int(idx.max()) < 10
        counts[idx] += 1
    # each index is in a batch with probability 4/10: 800 expected, sd sqrt(2000*.4*.6) ~ 22
    assert (counts - 800).abs().max() < 6 * 22


def test_batch_indices_with_replacement_repeat_and_are_seeded():
    a = sto.batch_indices(5, 50, replace=True, generator=torch.Generator().manual_seed(1))
    b = sto.batch_indices(5, 50, replace=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and len(set(a.tolist())) < 50


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 60), B=st.integers(1, 60), drop_last=st.booleans(), seed=st.integers(0, 99))
def test_epoch_batches_partition_a_permutation(n, B, drop_last, seed):
    if B > n:
        with pytest.raises(ValueError):
            sto.epoch_batches(n, B)
        return
    batches = sto.epoch_batches(
        n, B, generator=torch.Generator().manual_seed(seed), drop_last=drop_last
    )
    flat = torch.cat(batches).tolist()
    assert len(flat) == len(set(flat))  # disjoint
    if drop_last:
        assert all(len(b) == B for b in batches) and len(batches) == n // B
    else:
        assert sorted(flat) == list(range(n))  # covers the data once


def test_epoch_average_of_batch_gradients_is_the_full_gradient():
    G = _G(12, 5, seed=7)
    for B in (1, 3, 4, 6, 12):
        batches = sto.epoch_batches(12, B, generator=torch.Generator().manual_seed(B))
        avg = torch.stack([G[b].mean(0) for b in batches]).mean(0)
        # 12 O(1) rows summed in two orders: <= 24 eps = 5e-15 relative, and ~12 eps absolute
        # for a coordinate whose mean cancels to near 0
        torch.testing.assert_close(avg, G.mean(0), rtol=1e-13, atol=1e-14)


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("B", [2, 40])  # the gathering path and the counting path
@pytest.mark.parametrize("replace", [False, True])
def test_sampled_batches_are_means_of_B_rows(B, replace):
    """With G = I, B * g_B is the vector of counts: 0/1 without replacement, summing to B."""
    n = 48
    counts = (
        sto.sample_minibatch_gradients(
            torch.eye(n, dtype=torch.float64),
            B,
            300,
            replace=replace,
            generator=torch.Generator().manual_seed(0),
            chunk_elements=5000,  # several chunks
        )
        * B
    )
    assert counts.shape == (300, n)
    # B * (k / B) rounds by ~2 ulps of B (1e-14); a count that is not an integer would be off
    # by a multiple of 1/B >= 0.02, so 1e-9 separates rounding from a wrong count
    torch.testing.assert_close(counts, counts.round(), rtol=0, atol=1e-9)
    expected = torch.full((300,), float(B), dtype=torch.float64)
    torch.testing.assert_close(counts.sum(1), expected, rtol=0, atol=1e-9)
    if replace:
        assert counts.max() > 1  # some repeats among 300 batches
    else:
        assert counts.max() == 1
    # every example is equally likely: expected count 300 * B / n each
    per_example = counts.sum(0)
    sd = math.sqrt(300 * B / n * (1 - B / n) if not replace else 300 * B / n)
    assert (per_example - 300 * B / n).abs().max() < 6 * sd + 1e-9


@pytest.mark.parametrize("B", [3, 50])
@pytest.mark.parametrize("replace", [False, True])
def test_measured_variance_matches_the_formula(B, replace):
    G = _G(60, 8, seed=11)
    g = torch.Generator().manual_seed(5)
    measured = sto.measured_minibatch_variance(G, B, 4000, replace=replace, generator=g)
    exact = sto.minibatch_variance(sto.gradient_spread(G), 60, B, replace=replace)
    # a mean of 4000 squared norms: its relative standard error is at most sqrt(2 / 4000) =
    # 0.022 (one dominant coordinate; less with 8 comparable ones), so 0.08 is >= 3.6 of them
    # (measured: 1.7% at most)
    assert measured == pytest.approx(exact, rel=0.08)


def test_sampling_is_reproducible_from_the_generator():
    G = _G(30, 4)
    a = sto.sample_minibatch_gradients(G, 5, 10, generator=torch.Generator().manual_seed(3))
    b = sto.sample_minibatch_gradients(G, 5, 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_loglog_slope_recovers_a_power_law():
    x = np.array([1, 2, 4, 8, 16.0])
    # least squares through 5 exact points of a line with O(1) coordinates: a few dozen
    # roundings, ~1e-15; 1e-12 leaves room for polyfit's SVD
    assert sto.loglog_slope(x, 3 * x**-1.0) == pytest.approx(-1.0, abs=1e-12)
    assert sto.loglog_slope(x, 0.5 * x**0.5) == pytest.approx(0.5, abs=1e-12)


# --------------------------------------------------------------------------- models


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).double()


def test_per_example_gradients_match_autograd_one_example_at_a_time():
    model = _mlp()
    g = torch.Generator().manual_seed(0)
    X = torch.randn(7, 4, generator=g, dtype=torch.float64)
    y = torch.randint(3, (7,), generator=g)
    G = sto.per_example_gradients(model, F.cross_entropy, X, y)
    assert G.shape == (7, sum(p.numel() for p in model.parameters()))

    # The same float64 chain rule, batched or one example at a time: a few ulps of the largest
    # entry (measured 0.8 ulp), and the mean of 7 rows against one backward pass likewise.
    # 64 ulps of the gradient's scale (atol) covers entries that cancel to near 0.
    def close(a, b):
        tol = 64 * torch.finfo(torch.float64).eps * float(b.abs().max())
        torch.testing.assert_close(a, b, rtol=0, atol=tol)

    for i in range(7):
        model.zero_grad()
        F.cross_entropy(model(X[i : i + 1]), y[i : i + 1]).backward()
        close(G[i], flatten([p.grad for p in model.parameters()]))
    model.zero_grad()
    F.cross_entropy(model(X), y).backward()  # the mean of the rows is the full gradient
    close(G.mean(0), flatten([p.grad for p in model.parameters()]))
    assert all(p.grad is not None for p in model.parameters())  # the model is left usable


def test_per_example_gradients_skip_frozen_parameters_and_check_lengths():
    model = _mlp()
    model[0].weight.requires_grad_(False)
    X = torch.randn(3, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    G = sto.per_example_gradients(model, F.cross_entropy, X, y)
    assert G.shape == (3, 5 + 15 + 3)
    with pytest.raises(ValueError, match="disagree"):
        sto.per_example_gradients(model, F.cross_entropy, X, y[:2])


def test_sharpness_of_least_squares_is_the_top_eigenvalue_of_2XtX_over_N():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(40, 5, generator=g, dtype=torch.float64) * torch.tensor(
        [3.0, 1, 1, 0.5, 0.1], dtype=torch.float64
    )
    y = torch.randn(40, 1, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(5, 1, bias=False).double()
    lam = sto.sharpness(model, F.mse_loss, X, y, iters=500, tol=1e-12)
    exact = float(torch.linalg.eigvalsh(2 * X.T @ X / 40).max())
    # power iteration stopped when successive estimates agree to tol = 1e-12: the estimate is
    # then within ~tol / (1 - lambda_2 / lambda_1) = 1.2e-12 of lambda_1 (lambda_2 / lambda_1 =
    # 0.17 here; measured 1e-14); 1e-8 is a wide margin that no wrong eigenvalue fits in
    assert lam == pytest.approx(exact, rel=1e-8)


def test_digits_logreg_spread_and_gradient_are_consistent():
    data, model = digits_logreg(dtype=torch.float64)
    X, y = data.X_train[:200], data.y_train[:200]
    G = sto.per_example_gradients(model, F.cross_entropy, X, y)
    # zero init: p_i is uniform, so each row is (p - e_y) (x, 1) with known norm
    x1 = torch.cat([X, torch.ones(200, 1, dtype=torch.float64)], 1)
    expected_sq = (x1**2).sum(1) * (0.9**2 + 9 * 0.1**2)
    # sums of 650 squares in two orders: <= 650 eps = 1.4e-13 relative (measured 2 ulps)
    torch.testing.assert_close((G**2).sum(1), expected_sq, rtol=650 * EPS, atol=0)
