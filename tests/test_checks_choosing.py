"""optlib.course.checks.choosing (chapter 12's exercise checks): right answers pass with one
deterministic line; known wrong answers fail with a message that locates the problem; answers
that delegate to the library score nothing; the cases/probe/expect/compare split survives JSON
for the sandboxed grader."""

from __future__ import annotations

import json
import math

import pytest
import torch

from optlib.bench.suite import performance_profile as library_profile
from optlib.course import checks
from optlib.experiments.evolution import es_gradient
from optlib.problems.wilson import minimum_norm

NAMES = ["minimum_norm_solution", "es_gradient_estimate", "steps_to_target",
         "performance_profile"]  # fmt: skip


# ------------------------------------------------------------------ right answers


def mn(X, y):
    return X.T @ torch.linalg.solve(X @ X.T, y)


def mn_by_qr(X, y):  # another route to the same solution: X^T = QR, w = Q R^-T y
    Q, R = torch.linalg.qr(X.T)
    return Q @ torch.linalg.solve_triangular(R.T, y.unsqueeze(1), upper=False).squeeze(1)


def es(f, theta, sigma, eps):
    n = eps.shape[0]
    values = f(torch.cat([theta + sigma * eps, theta - sigma * eps]))
    return (values[:n] - values[n:]) @ eps / (2 * sigma * n)


def es_loop(f, theta, sigma, eps):  # one pair at a time
    total = torch.zeros_like(theta)
    for e in eps:
        up, down = f((theta + sigma * e).unsqueeze(0))[0], f((theta - sigma * e).unsqueeze(0))[0]
        total += (up - down) * e
    return total / (2 * sigma * len(eps))


def st(steps, losses, target):
    for j, loss in enumerate(losses):
        if loss <= target:
            if j == 0:
                return float(steps[0])
            before = losses[j - 1]
            if math.isnan(before):
                return float(steps[j])
            return steps[j - 1] + (steps[j] - steps[j - 1]) * (before - target) / (before - loss)
    return math.inf


def pp(times, taus):
    names = list(times)
    n = len(times[names[0]])
    best = [min(times[s][p] for s in names) for p in range(n)]
    return {s: [sum(math.isfinite(best[p]) and times[s][p] <= tau * best[p] for p in range(n)) / n
                for tau in taus] for s in names}  # fmt: skip


RIGHT = [
    (checks.minimum_norm_solution, mn, {}),
    (checks.minimum_norm_solution, mn_by_qr, {"seed": 5, "n_cases": 8}),
    (checks.es_gradient_estimate, es, {}),
    (checks.es_gradient_estimate, es_loop, {"seed": 5, "n_cases": 8}),
    (checks.steps_to_target, st, {}),
    (checks.steps_to_target, st, {"seed": 9, "n_cases": 12}),
    (checks.performance_profile, pp, {}),
    (checks.performance_profile, pp, {"seed": 9, "n_cases": 8}),
]


@pytest.mark.parametrize("check, answer, options", RIGHT)
def test_right_answers_pass_with_one_deterministic_line(check, answer, options, capsys):
    check(answer, **options)
    first = capsys.readouterr().out
    check(answer, **options)
    assert capsys.readouterr().out == first
    assert first.count("\n") == 1 and ": OK, " in first


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


# ------------------------------------------------------------------ known wrong answers


def test_wrong_minimum_norm_answers_fail():
    def least_squares_columns(X, y):  # an interpolating solution, but not the least norm one
        n = X.shape[0]
        w = torch.zeros(X.shape[1], dtype=X.dtype)
        w[:n] = torch.linalg.solve(X[:, :n], y)
        return w

    assert "not the solution of least norm" in _fails(checks.minimum_norm_solution,
                                                      least_squares_columns)  # fmt: skip
    assert "interpolate" in _fails(checks.minimum_norm_solution,
                                   lambda X, y: X.T @ y)  # fmt: skip
    assert "expected" in _fails(checks.minimum_norm_solution, lambda X, y: mn(X, y)[:-1])


def test_wrong_es_answers_fail_with_hints():
    def doubled(f, theta, sigma, eps):
        return 2 * es(f, theta, sigma, eps)

    def summed(f, theta, sigma, eps):
        return len(eps) * es(f, theta, sigma, eps)

    def reversed_pair(f, theta, sigma, eps):
        return -es(f, theta, sigma, eps)

    def one_sided(f, theta, sigma, eps):  # f(theta + sigma eps) - f(theta), not antithetic
        n = eps.shape[0]
        values = f(theta + sigma * eps) - f(theta.unsqueeze(0))
        return values @ eps / (sigma * n)

    assert "divide by 2 sigma n" in _fails(checks.es_gradient_estimate, doubled)
    msg = _fails(checks.es_gradient_estimate, summed, seed=3, n_cases=8)
    assert "average over the directions" in msg or "n=2 directions" in msg  # n = 2: twice
    assert "wrong way" in _fails(checks.es_gradient_estimate, reversed_pair)
    assert "expected" in _fails(checks.es_gradient_estimate, one_sided)


def test_wrong_steps_to_target_answers_fail():
    def at_evaluation(steps, losses, target):  # no interpolation
        for s, loss in zip(steps, losses):
            if loss <= target:
                return float(s)
        return math.inf

    def never_is_last(steps, losses, target):
        value = st(steps, losses, target)
        return float(steps[-1]) if math.isinf(value) else value

    def below_only(steps, losses, target):  # strict inequality: misses an exact hit
        return st(steps, losses, target - 1e-9)

    assert "interpolate linearly" in _fails(checks.steps_to_target, at_evaluation)
    assert "never reaches the target" in _fails(checks.steps_to_target, never_is_last)
    assert "expected" in _fails(checks.steps_to_target, below_only, seed=1, n_cases=12)


def test_wrong_performance_profiles_fail():
    def no_ties(times, taus):  # a solver counts as fastest only if strictly faster
        out = pp(times, taus)
        names = list(times)
        n = len(times[names[0]])
        for s in names:
            others = [o for o in names if o != s]
            wins = sum(all(times[s][p] < times[o][p] for o in others) for p in range(n))
            out[s] = [wins / n if tau == 1.0 else v for tau, v in zip(taus, out[s])]
        return out

    def counts(times, taus):  # counts instead of shares
        n = len(next(iter(times.values())))
        return {s: [v * n for v in vs] for s, vs in pp(times, taus).items()}

    def failed_problem_solved(times, taus):  # inf / inf counted as a ratio of 1
        names = list(times)
        n = len(times[names[0]])
        best = [min(times[s][p] for s in names) for p in range(n)]
        return {s: [sum((times[s][p] == best[p]) or times[s][p] <= tau * best[p]
                        for p in range(n)) / n for tau in taus] for s in names}  # fmt: skip

    assert "at tau = 1" in _fails(checks.performance_profile, no_ties)
    assert "expected" in _fails(checks.performance_profile, counts)
    assert "expected" in _fails(checks.performance_profile, failed_problem_solved)


# ------------------------------------------------------------------ delegation, sandbox


def test_delegating_to_the_library_scores_nothing():
    assert "scores nothing" in _fails(checks.minimum_norm_solution, minimum_norm)

    def via_library(f, theta, sigma, eps):
        return es_gradient(f, theta, sigma, eps.shape[0], eps=eps)

    assert "scores nothing" in _fails(checks.es_gradient_estimate, via_library)
    assert "scores nothing" in _fails(checks.performance_profile,
                                      lambda t, taus: {k: list(v) for k, v in
                                                       library_profile(t, taus).items()})


ANSWERS = {"minimum_norm_solution": mn, "es_gradient_estimate": es, "steps_to_target": st,
           "performance_profile": pp}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_probe_data_survives_json_and_compares_equal(name):
    check = checks.CHECKS[name]
    for i, case in enumerate(check.cases(seed=5, n_cases=6)):
        got = json.loads(json.dumps(check.probe(ANSWERS[name], case), allow_nan=False))
        check.compare(case, got, check.expect(case), f"case {i + 1}")


def test_checks_are_registered_and_declare_what_they_forbid():
    for name in NAMES:
        assert name in checks.CHECKS and name in checks.DELEGATION
        assert callable(getattr(checks, name))


def test_cases_cover_what_the_statements_name():
    kinds = {c["kind"] for c in checks.CHECKS["steps_to_target"].cases(n_cases=6)}
    assert {"between", "never", "first", "nan", "exact"} <= kinds
    fails = [c for c in checks.CHECKS["performance_profile"].cases(n_cases=4)
             if any(t is None for row in c["times"].values() for t in row)]  # fmt: skip
    assert fails
    es_kinds = {c["kind"] for c in checks.CHECKS["es_gradient_estimate"].cases(n_cases=4)}
    assert {"quadratic", "linear", "abs"} <= es_kinds
