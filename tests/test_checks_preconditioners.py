"""optlib.course.checks.preconditioners (chapter 7): right answers pass with one deterministic line,
wrong answers fail with a message that locates the problem without giving the solution, and the
probe/expect/compare split survives the sandbox's JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optlib import linalg as la
from optlib.course import checks

NAMES = ["richardson_step", "richardson_plan", "jacobi_preconditioner"]


def step_right(A, b, x, omega):
    return x + omega * (b - A @ x)


def plan_right(A, tol):
    lam = torch.linalg.eigvalsh(A)
    mu, L = float(lam[0]), float(lam[-1])
    rho = (L - mu) / (L + mu)
    return 2 / (L + mu), math.ceil(math.log(tol) / math.log(rho))


def jacobi_right(A):
    d = A.diagonal().clone()
    return lambda r: r / d


ANSWERS = {
    "richardson_step": step_right,
    "richardson_plan": plan_right,
    "jacobi_preconditioner": jacobi_right,
}


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


def test_registered_and_reexported_by_optlib_checks():
    for name in NAMES:
        assert name in checks.CHECKS and callable(getattr(checks, name))


@pytest.mark.parametrize(
    "check, answer, options",
    [
        (checks.richardson_step, step_right, {}),
        (checks.richardson_step, step_right, {"steps": 25, "n_cases": 6}),
        (checks.richardson_plan, plan_right, {}),
        (checks.richardson_plan, plan_right, {"n_cases": 6, "max_kappa": 3000.0}),
        (checks.jacobi_preconditioner, jacobi_right, {}),
        (checks.jacobi_preconditioner, jacobi_right, {"n_cases": 5, "max_dim": 50}),
    ],
)
def test_right_answers_pass_with_one_deterministic_line(check, answer, options, capsys):
    check(answer, **options)
    first = capsys.readouterr().out
    check(answer, **options)
    assert capsys.readouterr().out == first
    assert first.count("\n") == 1 and ": OK, " in first


def test_right_answers_pass_on_other_seeds_and_in_other_forms(capsys):
    for seed in (1, 7, 123):
        checks.richardson_step(lambda A, b, x, om: x - om * (A @ x - b), seed=seed, steps=5)
        checks.richardson_plan(lambda A, tol: tuple(torch.tensor(plan_right(A, tol))), seed=seed)
        checks.jacobi_preconditioner(lambda A: jacobi_right(A.clone()), seed=seed)
    # the optimizer view of a step: SGD on f = ½xᵀAx − bᵀx
    checks.richardson_step(lambda A, b, x, om: x - om * torch.func.grad(
        lambda z: 0.5 * z @ A @ z - b @ z)(x), n_cases=2)  # fmt: skip
    assert capsys.readouterr().out.count("OK") == 10


# ------------------------------------------------------------------ wrong answers, explained


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda A, b, x, om: x - om * (b - A @ x), "opposite direction"),
        (lambda A, b, x, om: x.add_(om * (b - A @ x)), "in place"),
        (lambda A, b, x, om: None, "returned None"),
        (lambda A, b, x, om: (x + om * (b - A @ x))[None], "returned shape"),
        (lambda A, b, x, om: "x", "not a tensor"),
    ],
)
def test_richardson_step_common_mistakes_are_explained(answer, words):
    msg = _fails(checks.richardson_step, answer, steps=3)
    assert msg.startswith("richardson_step, case 1 of 4") and words in msg


def test_richardson_step_small_drift_late_in_a_run_is_caught():
    msg = _fails(checks.richardson_step, lambda A, b, x, om: x + om * (1 + 1e-6) * (b - A @ x),
                 steps=20)  # fmt: skip
    assert "differs from optlib.linalg.richardson's" in msg and "expected" in msg


def test_richardson_step_precision_is_checked_per_dtype(capsys):
    def in_float32(A, b, x, om):
        return step_right(A.float(), b.float(), x.float(), om).to(x.dtype)

    assert "float64" in _fails(checks.richardson_step, in_float32)
    checks.richardson_step(lambda A, b, x, om: x + torch.tensor(om, dtype=x.dtype) * (b - A @ x))
    assert "OK" in capsys.readouterr().out


def _kappa(A):
    lam = torch.linalg.eigvalsh(A)
    return float(lam[-1] / lam[0])


@pytest.mark.parametrize(
    "answer, words",
    [
        # the cautious step 1/L: stable but slower, so "larger"
        (lambda A, tol: (1 / float(torch.linalg.eigvalsh(A)[-1]), 10), "a larger omega"),
        # a step beyond 2/L diverges
        (lambda A, tol: (2.2 / float(torch.linalg.eigvalsh(A)[-1]), 10), "diverges"),
        # the large-kappa approximation (kappa/2) ln(1/tol) fails on the well-conditioned case
        (
            lambda A, tol: (plan_right(A, tol)[0], math.ceil(_kappa(A) / 2 * math.log(1 / tol))),
            "you predicted",
        ),
        (lambda A, tol: (plan_right(A, tol)[0], plan_right(A, tol)[1] + 0.5), "not a whole"),
        (lambda A, tol: 3.0, "two numbers"),
        (lambda A, tol: None, "two numbers"),
    ],
)
def test_richardson_plan_wrong_answers(answer, words):
    msg = _fails(checks.richardson_plan, answer)
    assert words in msg and "condition number" in msg
    assert "2/(L" not in msg and "ceil" not in msg and "eigvalsh" not in msg  # never the solution


def test_richardson_plan_counts_against_a_run_not_a_formula():
    # a count off by two (floor instead of ceil, minus one) fails with the measured count
    def off(A, tol):
        omega, k = plan_right(A, tol)
        return omega, k - 2

    msg = _fails(checks.richardson_plan, off)
    assert "running Richardson with the best omega took" in msg


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda A: lambda r: r * A.diagonal(), "entry"),  # multiplies by D
        (lambda A: lambda r: r / A.diagonal().sqrt(), "entry"),  # D^(-1/2)
        (lambda A: lambda r: torch.linalg.solve(A, r), "entry"),  # the exact inverse
        (lambda A: A.diagonal(), "expected a function"),
        (lambda A: None, "returned None"),
        (lambda A: lambda r: r.div_(A.diagonal()), "in place"),
        (lambda A: lambda r: (r / A.diagonal())[:-1], "returned shape"),
    ],
)
def test_jacobi_preconditioner_wrong_answers(answer, words):
    msg = _fails(checks.jacobi_preconditioner, answer)
    assert msg.startswith("jacobi_preconditioner, case 1 of 3") and words in msg
    assert "diag(A)" not in msg and "1/" not in msg  # never the solution


def test_jacobi_preconditioner_reports_its_effect_on_pcg():
    msg = _fails(checks.jacobi_preconditioner, lambda A: lambda r: r * A.diagonal())
    assert "preconditioned CG needed" in msg and "with Jacobi's" in msg


# ------------------------------------------------------------------ the split the grader uses


@pytest.mark.parametrize("name", NAMES)
def test_cases_are_json_and_seeded(name):
    check = checks.CHECKS[name]
    a, b, c = check.cases(seed=3), check.cases(seed=3), check.cases(seed=4)
    assert a == b and a != c
    assert json.loads(json.dumps(a)) == a


@pytest.mark.parametrize("name", NAMES)
def test_probe_data_survives_json_and_compares_equal(name):
    check = checks.CHECKS[name]
    for i, case in enumerate(check.cases(seed=5, n_cases=2)):
        got = json.loads(json.dumps(check.probe(ANSWERS[name], case)))
        check.compare(case, got, check.expect(case), f"case {i + 1}")


def test_richardson_plan_cases_have_exactly_geometric_residuals():
    """Two distinct eigenvalues: at the best omega the residual shrinks by exactly rho per step,
    so the count is the formula's, and no case sits on a tie."""
    for case in checks.CHECKS["richardson_plan"].cases(seed=9, n_cases=6):
        A = torch.tensor(case["A"], dtype=torch.float64)
        b = torch.tensor(case["b"], dtype=torch.float64)
        lam = torch.linalg.eigvalsh(A)
        mu, L = float(lam[0]), float(lam[-1])
        rho = (L - mu) / (L + mu)
        r = la.richardson(A, b, 2 / (L + mu), max_iter=20, tol=1e-300).residual_norms
        for k in range(1, len(r)):
            if r[k] > 1e-8 * r[0]:  # well above rounding
                assert r[k] / r[k - 1] == pytest.approx(rho, rel=1e-7)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["trajectory", "omega", "iterations", "columns", "converged", "error", "problem"]
            ),
            inner,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(NAMES), got=JSONISH)
def test_compare_turns_any_sandbox_data_into_pass_or_assertion(name, got):
    """Whatever a sandboxed child sends back, the parent's comparison accepts it only if it is
    right, and otherwise raises AssertionError, never anything else."""
    check = checks.CHECKS[name]
    case = check.cases(seed=0, n_cases=1)[0]
    expected = check.expect(case)
    try:
        check.compare(case, got, expected, "case 1")
    except AssertionError:
        return
    assert isinstance(got, dict)
    if name == "richardson_plan":
        assert math.isclose(got["omega"], expected["omega"], rel_tol=1e-6)
        assert abs(got["iterations"] - expected["iterations"]) <= 1
    else:
        key = "trajectory" if name == "richardson_step" else "columns"
        assert torch.allclose(torch.tensor(got[key]), torch.tensor(expected[key]))
