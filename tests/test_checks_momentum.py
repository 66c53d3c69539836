"""optlib.course.checks.momentum: right answers pass with one line, wrong answers fail with a
message that locates the problem without giving the solution away, and the split is safe for the
grader."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optlib.course import checks

NAMES = ["ema_lr", "optimal_momentum", "predict_momentum_iterations"]


def ema_right(lr, beta):
    return lr / (1 - beta)


def optimal_right(A):  # optlib.linalg.optimal_heavy_ball_params would be delegation
    lam = torch.linalg.eigvalsh(A)
    L, mu = float(lam[-1]), float(lam[0])
    return 4 / (math.sqrt(L) + math.sqrt(mu)) ** 2, (
        (math.sqrt(L / mu) - 1) / (math.sqrt(L / mu) + 1)
    ) ** 2


def optimal_by_hand(A):
    lam = torch.linalg.eigvalsh(A)
    L, mu = lam[-1], lam[0]
    kappa = L / mu
    return (
        4 / (L.sqrt() + mu.sqrt()) ** 2,
        np.float64(((kappa.sqrt() - 1) / (kappa.sqrt() + 1)) ** 2),
    )


def rate_count(kappa, tol):
    rho = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    return math.ceil(math.log(tol) / math.log(rho))


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


RIGHT = [
    (checks.ema_lr, ema_right, {}),
    (checks.ema_lr, ema_right, {"seed": 9, "n_cases": 6, "steps": 60}),
    (checks.optimal_momentum, optimal_right, {}),
    (checks.optimal_momentum, optimal_by_hand, {"seed": 4, "n_cases": 7, "max_dim": 7}),
    (checks.predict_momentum_iterations, rate_count, {}),
    (checks.predict_momentum_iterations, rate_count, {"seed": 2, "n_cases": 6, "min_tol": 1e-12}),
]


@pytest.mark.parametrize("check, answer, options", RIGHT)
def test_right_answers_pass_with_one_deterministic_line(check, answer, options, capsys):
    check(answer, **options)
    first = capsys.readouterr().out
    check(answer, **options)
    assert capsys.readouterr().out == first
    assert first.count("\n") == 1 and ": OK, " in first


def test_ema_lr_accepts_tensors_and_numpy(capsys):
    checks.ema_lr(lambda lr, beta: torch.tensor(lr, dtype=torch.float64) / (1 - beta))
    checks.ema_lr(lambda lr, beta: np.float64(lr) / (1 - beta))
    assert capsys.readouterr().out.count("OK") == 2


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda lr, beta: lr, "too short"),  # no conversion at all
        (lambda lr, beta: lr * (1 - beta), "too short"),  # converted the wrong way
        (lambda lr, beta: lr / (1 - beta) ** 2, "too long"),
        (lambda lr, beta: None, "returned None"),
        (lambda lr, beta: (lr, beta), "not one number"),
        (lambda lr, beta: -lr, "positive"),
    ],
)
def test_ema_lr_wrong_answers(answer, words):
    msg = _fails(checks.ema_lr, answer)
    assert msg.startswith("ema_lr, case 1 of 4") and words in msg
    assert "1 - beta" not in msg and "1-beta" not in msg  # never the solution


def test_ema_lr_names_the_step_where_the_paths_part():
    msg = _fails(checks.ema_lr, lambda lr, beta: ema_right(lr, beta) * (1 + 1e-6))
    assert "at step 1" in msg and "expected" in msg and "got" in msg


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda A: (2 / float(torch.linalg.eigvalsh(A).sum()), 0.0), "contracts the error by"),
        (lambda A: (100.0, 0.5), "diverges"),
        (lambda A: (1 / float(torch.linalg.eigvalsh(A).max()), 0.9), "beta expected"),
        (lambda A: optimal_right(A)[0], "two numbers"),
        (lambda A: None, "returned None"),
        (lambda A: (0.1, 1.5), "0 <= beta < 1"),
    ],
)
def test_optimal_momentum_wrong_answers(answer, words):
    msg = _fails(checks.optimal_momentum, answer)
    assert words in msg and "condition number" in msg
    assert "sqrt" not in msg and "eigvalsh" not in msg  # never the formula


def test_optimal_momentum_compares_with_a_measured_run():
    msg = _fails(checks.optimal_momentum, lambda A: (optimal_right(A)[0], 0.0))
    assert "measured over 400 steps" in msg and "lr expected" not in msg


def test_optimal_momentum_detects_in_place_changes():
    def sloppy(A):
        out = optimal_right(A)
        A.mul_(2)
        return out

    assert "in place" in _fails(checks.optimal_momentum, sloppy)


def test_predict_iterations_accepts_the_band_between_rate_and_run(capsys):
    """The rate count (a lower bound) and the measured count are both right answers."""
    check = checks.CHECKS["predict_momentum_iterations"]
    for i, case in enumerate(check.cases(seed=1, n_cases=4)):
        expected = check.expect(case)
        low, high = expected["rate_count"], expected["measured"]
        assert low <= high
        for k in (low - 1, (low + high) // 2, high + 1):
            check.compare(case, {"iterations": float(k)}, expected, f"case {i + 1}")
        for k in (low - 2, high + 2):
            with pytest.raises(AssertionError, match="running heavy ball took"):
                check.compare(case, {"iterations": float(k)}, expected, f"case {i + 1}")


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda k, tol: math.ceil(math.log(tol) / math.log((k - 1) / (k + 1))), "too slow"),
        (lambda k, tol: math.ceil(rate_count(k, tol) / 2), "too fast"),  # used beta* as rate
        (lambda k, tol: rate_count(k, tol) + 0.5, "not a whole number"),
        (lambda k, tol: "many", "returned a str"),
    ],
)
def test_predict_iterations_wrong_answers(answer, words):
    msg = _fails(checks.predict_momentum_iterations, answer)
    assert words in msg and "kappa=" in msg
    assert "sqrt" not in msg


def test_class_check_of_the_chapter_rejects_heavy_ball_for_nesterov():
    """The exercise's hidden test runs momentum_sgd_class with nesterov: a class that ignores
    the flag fails there."""

    class heavy_ball_only(torch.optim.Optimizer):  # torch.optim.SGD would be delegation
        def __init__(self, params, lr, momentum, nesterov=False):
            super().__init__(params, dict(lr=lr, momentum=momentum))

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                for p in group["params"]:
                    b = self.state[p].get("b")
                    b = p.grad.clone() if b is None else b.mul_(group["momentum"]).add_(p.grad)
                    self.state[p]["b"] = b
                    p.add_(b, alpha=-group["lr"])

    checks.momentum_sgd_class(heavy_ball_only)  # fine without nesterov
    msg = _fails(checks.momentum_sgd_class, heavy_ball_only, nesterov=True)
    assert "nesterov=True" in msg


# ------------------------------------------------------------------ the split the grader uses


ANSWERS = {"ema_lr": ema_right, "optimal_momentum": optimal_right,
           "predict_momentum_iterations": rate_count}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_cases_are_json_and_seeded(name):
    check = checks.CHECKS[name]
    a, b, c = check.cases(seed=3), check.cases(seed=3), check.cases(seed=4)
    assert a == b and a != c
    assert json.loads(json.dumps(a)) == a
    assert len(check.cases(seed=0, n_cases=1)) == 1


@pytest.mark.parametrize("name", NAMES)
def test_probe_data_survives_json_and_compares_equal(name):
    check = checks.CHECKS[name]
    for i, case in enumerate(check.cases(seed=5, n_cases=2)):
        got = json.loads(json.dumps(check.probe(ANSWERS[name], case)))
        check.compare(case, got, json.loads(json.dumps(check.expect(case))), f"case {i + 1}")


JSONISH = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["alpha", "lr", "beta", "iterations", "problem", "error", "x"]), inner
        )
    ),
    max_leaves=12,
)


@functools.cache
def _first_case(name):
    check = checks.CHECKS[name]
    case = check.cases(seed=0, n_cases=1)[0]
    return case, check.expect(case)


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(NAMES), got=JSONISH)
def test_compare_turns_any_sandbox_data_into_pass_or_assertion(name, got):
    """Whatever a sandboxed child sends back, the comparison accepts it only if it is a right
    answer, and otherwise raises AssertionError (never another exception)."""
    check = checks.CHECKS[name]
    case, expected = _first_case(name)
    try:
        check.compare(case, got, expected, "case 1")
    except AssertionError:
        return
    right = check.probe(ANSWERS[name], case)
    if name == "predict_momentum_iterations":
        assert expected["rate_count"] - 1 <= got["iterations"] <= expected["measured"] + 1
    else:
        for key, value in right.items():
            assert math.isclose(got[key], value, rel_tol=1e-6), (key, got, right)
