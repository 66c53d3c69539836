"""optlib.course.checks.preconditioners (chapter 7): right answers pass with one deterministic line,
every known wrong answer fails with a message that locates the problem without giving the solution
away, answers that delegate to the library score nothing, and the probe/expect/compare split
survives the sandbox's JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optlib import linalg as la
from optlib.course import checks
from optlib.course.checks import preconditioners as pre

NAMES = ["richardson_step", "richardson_plan", "jacobi_preconditioner", "lbfgs_direction"]


# ------------------------------------------------------------------ right answers


def step_right(A, b, x, omega):
    return x + omega * (b - A @ x)


def plan_right(A, tol):
    lam = torch.linalg.eigvalsh(A)
    mu, L = float(lam[0]), float(lam[-1])
    rho = (L - mu) / (L + mu)
    return 2 / (L + mu), 1 if rho == 0 else math.ceil(math.log(tol) / math.log(rho))


def jacobi_right(A):
    d = A.diagonal().clone()
    return lambda r: r / d


def two_loop_right(g, s_list, y_list):
    q, alphas = g.clone(), []
    for s, y in zip(reversed(s_list), reversed(y_list)):
        alphas.append((s @ q) / (y @ s))
        q = q - alphas[-1] * y
    gamma = (s_list[-1] @ y_list[-1]) / (y_list[-1] @ y_list[-1]) if s_list else 1.0
    r = gamma * q
    for s, y, a in zip(s_list, y_list, reversed(alphas)):
        r = r + (a - (y @ r) / (y @ s)) * s
    return -r


def two_loop_dense(g, s_list, y_list):
    """The same direction by forming B^{-1} with the BFGS update (eq-bfgs): slower, also right."""
    n = g.numel()
    if not s_list:
        return -g.clone()
    H = (s_list[-1] @ y_list[-1]) / (y_list[-1] @ y_list[-1]) * torch.eye(n, dtype=g.dtype)
    for s, y in zip(s_list, y_list):
        rho = 1 / (y @ s)
        V = torch.eye(n, dtype=g.dtype) - rho * torch.outer(y, s)
        H = V.T @ H @ V + rho * torch.outer(s, s)
    return -(H @ g)


ANSWERS = {
    "richardson_step": step_right,
    "richardson_plan": plan_right,
    "jacobi_preconditioner": jacobi_right,
    "lbfgs_direction": two_loop_right,
}


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


def test_registered_reexported_and_declared_against_delegation():
    for name in NAMES:
        assert name in checks.CHECKS and callable(getattr(checks, name))
        assert name in checks.DELEGATION


@pytest.mark.parametrize(
    "check, answer, options",
    [
        (checks.richardson_step, step_right, {}),
        (checks.richardson_step, step_right, {"steps": 25, "n_cases": 6, "nonsymmetric": 3}),
        (checks.richardson_plan, plan_right, {}),
        (checks.richardson_plan, plan_right, {"n_cases": 6, "max_kappa": 3000.0, "large": 2}),
        (checks.jacobi_preconditioner, jacobi_right, {}),
        (checks.jacobi_preconditioner, jacobi_right, {"n_cases": 5, "max_dim": 50}),
        (checks.lbfgs_direction, two_loop_right, {}),
        (checks.lbfgs_direction, two_loop_right, {"n_cases": 5, "max_pairs": 10, "max_dim": 40}),
    ],
)
def test_right_answers_pass_with_one_deterministic_line(check, answer, options, capsys):
    check(answer, **options)
    first = capsys.readouterr().out
    check(answer, **options)
    assert capsys.readouterr().out == first
    assert first.count("\n") == 1 and ": OK, " in first


def test_right_answers_pass_on_other_seeds_and_in_other_forms(capsys):
    for seed in (1, 7):
        checks.richardson_step(lambda A, b, x, om: x - om * (A @ x - b), seed=seed, steps=5)
        checks.richardson_plan(lambda A, tol: tuple(torch.tensor(plan_right(A, tol))), seed=seed)
        checks.jacobi_preconditioner(lambda A: jacobi_right(A.clone()), seed=seed)
        checks.lbfgs_direction(two_loop_dense, seed=seed)
    # the optimizer view of a step: SGD on f = ½xᵀAx − bᵀx (A symmetric there)
    checks.richardson_step(lambda A, b, x, om: x - om * torch.func.grad(
        lambda z: 0.5 * z @ A @ z - b @ z)(x), n_cases=2, nonsymmetric=0)  # fmt: skip
    assert capsys.readouterr().out.count("OK") == 9


# ------------------------------------------------------------------ known wrong answers


def _in_float32(A, b, x, om):
    return step_right(A.float(), b.float(), x.float(), om).to(x.dtype)


def _plan_approximate(A, tol):  # the large-kappa approximation (kappa/2) ln(1/tol)
    lam = torch.linalg.eigvalsh(A)
    kappa = float(lam[-1] / lam[0])
    return plan_right(A, tol)[0], math.ceil(kappa / 2 * math.log(1 / tol))


def _plan_naive(A, tol):  # the formula without the identity's one step: ln(0) = -inf gives 0
    lam = torch.linalg.eigvalsh(A)
    mu, L = lam[0], lam[-1]
    rho = (L - mu) / (L + mu)
    return plan_right(A, tol)[0], int(torch.ceil(torch.log(torch.tensor(tol)) / torch.log(rho)))


def _plan_off_by(delta):
    def plan(A, tol):
        omega, k = plan_right(A, tol)
        return omega, k + delta

    return plan


def _two_loop_variant(*, sign=1.0, gamma="newest", reverse_first=True, rho_power=-1):
    def direction(g, s_list, y_list):
        q, alphas = g.clone(), []
        pairs = list(zip(s_list, y_list))
        for s, y in reversed(pairs) if reverse_first else pairs:
            alphas.append((s @ q) * (y @ s) ** rho_power)
            q = q - alphas[-1] * y
        if s_list and gamma != "none":
            s, y = (s_list[-1], y_list[-1]) if gamma == "newest" else (s_list[0], y_list[0])
            q = (s @ y) / (y @ y) * q
        r = q
        for (s, y), a in zip(pairs, reversed(alphas) if reverse_first else alphas):
            r = r + (a - (y @ r) * (y @ s) ** rho_power) * s
        return -sign * r

    return direction


def _two_loop_in_place(g, s_list, y_list):
    r = two_loop_right(g, s_list, y_list)
    g.mul_(2.0)
    return r


WRONG = {
    "richardson_step": [
        (lambda A, b, x, om: x - om * (b - A @ x), {}, "opposite direction"),
        (lambda A, b, x, om: x + om * (b - x @ A), {"nonsymmetric": 1}, "transpose"),
        (lambda A, b, x, om: x + om * (b - (A + A.T) / 2 @ x), {"nonsymmetric": 1}, "differs"),
        (lambda A, b, x, om: x.add_(om * (b - A @ x)), {}, "in place"),
        (lambda A, b, x, om: None, {}, "returned None"),
        (lambda A, b, x, om: (x + om * (b - A @ x))[None], {}, "returned shape"),
        (lambda A, b, x, om: "x", {}, "not a tensor"),
        (lambda A, b, x, om: x + om * (1 + 1e-6) * (b - A @ x), {"steps": 20}, "differs"),
        (_in_float32, {}, "float64"),
    ],
    "richardson_plan": [
        # the cautious step 1/L (right only for a multiple of the identity) with a right count
        (lambda A, tol: (1 / float(torch.linalg.eigvalsh(A)[-1]), plan_right(A, tol)[1]),
         "a larger omega"),
        (lambda A, tol: (2.2 / float(torch.linalg.eigvalsh(A)[-1]), 10), "diverges"),
        (_plan_approximate, "you predicted"),
        (_plan_naive, "you predicted"),
        (_plan_off_by(1), "you predicted"),  # ceil + 1, or floor + 1 off a tie
        (_plan_off_by(-1), "you predicted"),  # floor instead of ceil
        (lambda A, tol: (plan_right(A, tol)[0], plan_right(A, tol)[1] + 0.5), "not a whole"),
        (lambda A, tol: 3.0, "two numbers"),
        (lambda A, tol: None, "two numbers"),
        (lambda A, tol: (A.mul_(2), plan_right(A, tol))[1], "in place"),
    ],
    "jacobi_preconditioner": [
        (lambda A: lambda r: r * A.diagonal(), "entry"),  # multiplies by D
        (lambda A: lambda r: r / A.diagonal().sqrt(), "entry"),  # D^(-1/2)
        (lambda A: lambda r: r / A.diagonal().abs(), "entry"),  # a sign lost
        (lambda A: lambda r: r / A.diagonal().sqrt() / A.diagonal().sqrt(), "square root"),
        (lambda A: lambda r: r / A.sum(1), "entry"),  # row sums
        (lambda A: lambda r: torch.linalg.solve(A, r), "entry"),  # the exact inverse
        (lambda A: A.diagonal(), "expected a function"),
        (lambda A: torch.diag(1 / A.diagonal()), "expected a function"),  # a matrix
        (lambda A: None, "returned None"),
        (lambda A: lambda r: r.div_(A.diagonal()), "in place"),
        (lambda A: lambda r: (r / A.diagonal())[:-1], "returned shape"),
    ],
    "lbfgs_direction": [
        (_two_loop_variant(sign=-1.0), "opposite direction"),
        (_two_loop_variant(gamma="none"), "scaling gamma"),
        (_two_loop_variant(gamma="oldest"), "initial scaling"),
        (_two_loop_variant(reverse_first=False), "differs"),
        (_two_loop_variant(rho_power=1), "differs"),
        (_two_loop_in_place, "in place"),
        (lambda g, s, y: two_loop_right(g, s, y).double(), "dtype"),
        (lambda g, s, y: None, "returned None"),
        (lambda g, s, y: -g, "differs"),  # gradient descent: no curvature at all
    ],
}  # fmt: skip


@pytest.mark.parametrize("answer, options, words", WRONG["richardson_step"])
def test_every_known_wrong_step_fails(answer, options, words):
    msg = _fails(checks.richardson_step, answer, **options)
    assert msg.startswith("richardson_step, case") and words in msg, msg


@pytest.mark.parametrize("name", ["richardson_plan", "jacobi_preconditioner", "lbfgs_direction"])
def test_every_known_wrong_answer_fails(name):
    for answer, words in WRONG[name]:
        msg = _fails(getattr(checks, name), answer)
        assert msg.startswith(name) and words in msg, msg


def test_wrong_answers_fail_on_the_hidden_options_too():
    for answer, _ in WRONG["richardson_plan"][:6]:
        _fails(checks.richardson_plan, answer, seed=702, n_cases=6, max_kappa=3000.0, large=2)
    for answer, _ in WRONG["lbfgs_direction"][:5]:
        _fails(checks.lbfgs_direction, answer, seed=705, n_cases=6, max_pairs=10, max_dim=40)


def test_messages_do_not_give_the_solution_away():
    for name in ["richardson_plan", "jacobi_preconditioner", "lbfgs_direction"]:
        for answer, _ in WRONG[name]:
            msg = _fails(getattr(checks, name), answer)
            for formula in ("2/(L", "ceil", "eigvalsh", "diag(A)", "1/", "alpha_i", "rho_i"):
                assert formula not in msg, (formula, msg)


def test_the_transpose_is_caught_only_by_a_nonsymmetric_matrix(capsys):
    transposed = WRONG["richardson_step"][1][0]
    checks.richardson_step(transposed, nonsymmetric=0)  # on symmetric systems it is right
    assert "OK" in capsys.readouterr().out


def test_the_identity_case_needs_its_one_step():
    """The first case is a multiple of the identity: the best omega lands in one step, and a
    formula without that case predicts zero (or fails on ln 0)."""
    case = checks.CHECKS["richardson_plan"].cases(seed=0)[0]
    A = torch.tensor(case["A"], dtype=torch.float64)
    assert torch.equal(A, A[0, 0] * torch.eye(len(A), dtype=torch.float64))
    assert checks.CHECKS["richardson_plan"].expect(case)["iterations"] == 1
    assert "you predicted 0" in _fails(checks.richardson_plan, _plan_naive)


def test_the_large_cases_cannot_be_run_in_the_time_limit():
    """Running is no shortcut: the large cases take millions of iterations."""
    for case in checks.CHECKS["richardson_plan"].cases(seed=0, large=2)[-2:]:
        lam = torch.linalg.eigvalsh(torch.tensor(case["A"], dtype=torch.float64))
        assert pre._law(float(lam[0]), float(lam[-1]), case["tol"]) > 1_000_000


def test_the_law_is_what_richardson_does():
    """The exact geometric law that the check uses beyond RUN_LIMIT gives Richardson's own count
    on every run-able case: the check's matrices have two eigenvalues, so at the best omega the
    residual shrinks by exactly (kappa - 1)/(kappa + 1) per step (up to rounding, which the
    cases keep away from ties)."""
    check = checks.CHECKS["richardson_plan"]
    for seed in (0, 9):
        for case in check.cases(seed=seed, n_cases=6, max_kappa=2e4, large=0):
            A = torch.tensor(case["A"], dtype=torch.float64)
            b = torch.tensor(case["b"], dtype=torch.float64)
            mu, L = la.eig_extremes(A)
            run = la.richardson(A, b, 2 / (L + mu), tol=case["tol"], max_iter=10**6)
            assert run.iterations == pre._law(mu, L, case["tol"]), case["tol"]


def test_richardson_plan_cases_have_exactly_geometric_residuals():
    for case in checks.CHECKS["richardson_plan"].cases(seed=9, n_cases=6)[1:]:
        A = torch.tensor(case["A"], dtype=torch.float64)
        b = torch.tensor(case["b"], dtype=torch.float64)
        lam = torch.linalg.eigvalsh(A)
        mu, L = float(lam[0]), float(lam[-1])
        rho = (L - mu) / (L + mu)
        r = la.richardson(A, b, 2 / (L + mu), max_iter=20, tol=1e-300).residual_norms
        for k in range(1, len(r)):
            if r[k] > 1e-8 * r[0]:  # well above rounding
                assert r[k] / r[k - 1] == pytest.approx(rho, rel=1e-7)


def test_jacobi_preconditioner_reports_its_effect_on_pcg():
    msg = _fails(checks.jacobi_preconditioner, lambda A: lambda r: r * A.diagonal())
    assert "preconditioned CG needed" in msg and "with Jacobi's" in msg


def test_lbfgs_secant_equation_is_named_when_it_fails():
    """An answer that is wrong in its second loop but passes the other diagnoses is told that the
    secant equation fails."""
    msg = _fails(checks.lbfgs_direction, _two_loop_variant(reverse_first=False))
    assert "secant equation" in msg


def test_the_nearest_wrong_two_loop_answers_are_far_outside_the_tolerance():
    """The tolerances (1e-10 in float64, 1e-4 in float32) against the nearest wrong answers:
    every one is off by far more on every case with pairs."""
    check = checks.CHECKS["lbfgs_direction"]
    for case in check.cases(seed=3, n_cases=6, max_pairs=10):
        if not case["s"]:
            continue
        ref = pre._reference_direction(case, case["g"])
        for gamma in ("none", "oldest"):
            if gamma == "oldest" and len(case["s"]) == 1:
                continue
            wrong = pre._reference_direction(case, case["g"], gamma)
            assert float((wrong - ref).norm() / ref.norm()) > 1e-2


def test_delegating_answers_score_nothing():
    from optlib.optim.lbfgs import two_loop_direction

    def delegating(g, s_list, y_list):
        rho = [1 / (y @ s) for s, y in zip(s_list, y_list)]
        gamma = (s_list[-1] @ y_list[-1]) / (y_list[-1] @ y_list[-1]) if s_list else 1.0
        return two_loop_direction(g, s_list, y_list, rho, gamma)

    msg = _fails(checks.lbfgs_direction, delegating)
    assert "scores nothing" in msg and "optlib.optim.lbfgs" in msg

    def running(A, tol):
        lam = torch.linalg.eigvalsh(A)
        omega = 2 / float(lam[0] + lam[-1])
        b = torch.ones(len(A), dtype=A.dtype)
        return omega, la.richardson(A, b, omega, tol=tol, max_iter=100).iterations

    msg = _fails(checks.richardson_plan, running)
    assert "scores nothing" in msg and "optlib.linalg.richardson" in msg


# ------------------------------------------------------------------ the split the grader uses


@pytest.mark.parametrize("name", NAMES)
def test_probe_data_survives_json_and_compares_equal(name):
    check = checks.CHECKS[name]
    for i, case in enumerate(check.cases(seed=5, n_cases=2)):
        got = json.loads(json.dumps(check.probe(ANSWERS[name], case)))
        check.compare(case, got, check.expect(case), f"case {i + 1}")


JSONISH = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["trajectory", "omega", "iterations", "columns", "converged", "error", "problem",
                 "direction", "dtype", "secant", "modified_input"]
            ),
            inner,
        )
    ),
    max_leaves=12,
)  # fmt: skip


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
        assert got["iterations"] == expected["iterations"]
    else:
        key = {"richardson_step": "trajectory", "jacobi_preconditioner": "columns"}.get(
            name, "direction"
        )
        assert torch.allclose(torch.tensor(got[key]), torch.tensor(expected[key]))


@pytest.mark.parametrize("name", NAMES)
def test_an_answer_never_run_says_which_cell_to_run(name):
    """How otter calls a test: with the learner's name, None when its cell was never run."""
    namespace = {"checks": checks}
    exec(f"def test({name}):\n    checks.{name}({name})", namespace)
    with pytest.raises(AssertionError) as err:
        namespace["test"](None)
    assert f"`{name}` is still None: run the cell that defines `{name}`" in str(err.value)
    assert "NoneType" not in str(err.value)


def test_the_public_q5_test_has_a_full_history_and_the_hidden_one_longer_ones(capsys):
    """The public cases include a history of all ``max_pairs`` pairs, so an answer that drops the
    oldest pairs fails there; the hidden test's histories (up to 10 pairs, a full default history)
    catch an answer that only ever looks at the last five."""
    public = checks.CHECKS["lbfgs_direction"].cases()
    assert max(len(c["s"]) for c in public) == 5 and min(len(c["s"]) for c in public) == 0

    def last(k):
        return lambda g, s, y: two_loop_right(g, s[-k:], y[-k:])

    assert "differs" in _fails(checks.lbfgs_direction, last(3))
    checks.lbfgs_direction(last(5))
    assert "OK" in capsys.readouterr().out
    hidden = {"seed": 705, "n_cases": 6, "max_pairs": 10, "max_dim": 40}
    assert "differs" in _fails(checks.lbfgs_direction, last(5), **hidden)


def test_the_hidden_q1_test_iterates_the_step(capsys):
    """The public test takes one step per system; the hidden one iterates 25, and so catches a
    step with a memory, such as heavy ball's (which equals Richardson's on a first step)."""
    previous: dict = {}

    def with_memory(A, b, x, omega):
        key = (tuple(A.flatten().tolist()), tuple(b.tolist()))
        x_prev = previous.get(key, x)
        previous[key] = x.clone()
        return x + omega * (b - A @ x) + 0.5 * (x - x_prev)

    checks.richardson_step(with_memory)
    assert "OK" in capsys.readouterr().out
    previous.clear()
    hidden = {"seed": 701, "n_cases": 6, "steps": 25, "nonsymmetric": 3}
    assert "after step 2 of 25" in _fails(checks.richardson_step, with_memory, **hidden)
