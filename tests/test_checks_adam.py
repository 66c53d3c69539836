"""optlib.course.checks.adam (chapter 5's exercise checks): right answers pass with one
deterministic line, every known wrong answer (listed per check below) fails with a message that
locates the problem without giving the solution away, and the cases/probe/expect/compare split
works for the sandboxed grader."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optlib.course import checks

NAMES = ["adam_class", "uncorrected_step_ratio", "reddi_drift", "radam_threshold"]


class AdamRight(torch.optim.Optimizer):
    """The exercise's model answer: per-parameter state, each group's own hyperparameters."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    def _direction(self, m_hat, v_hat, eps):
        return m_hat / (v_hat.sqrt() + eps)

    def _corrections(self, beta1, beta2, t):
        return 1 - beta1**t, 1 - beta2**t

    def _skip(self, p):
        return p.grad is None

    def _grad(self, p):
        return p.grad

    def _hyper(self, group):
        return group["lr"], group["betas"], group["eps"]

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), eps = self._hyper(group)
            for p in group["params"]:
                if self._skip(p):
                    continue
                state = self.state[p]
                if not state:
                    state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["t"] = self._next_t(state)
                g = self._grad(p)
                state["m"].mul_(beta1).add_(g, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                c1, c2 = self._corrections(beta1, beta2, state["t"])
                p.sub_(lr * self._direction(state["m"] / c1, state["v"] / c2, eps))

    def _next_t(self, state):
        return state["t"] + 1


class AdamNoCorrection(AdamRight):
    def _corrections(self, beta1, beta2, t):
        return 1.0, 1.0


class AdamOnlyFirstCorrected(AdamRight):
    def _corrections(self, beta1, beta2, t):
        return 1 - beta1**t, 1.0


class AdamEpsBeforeCorrection(AdamRight):
    """TensorFlow's placement: eps added to sqrt(v), the correction folded into the step size.
    Equal to torch's Adam up to eps; with a large eps the two differ clearly."""

    def _corrections(self, beta1, beta2, t):
        self._c2 = 1 - beta2**t
        return 1 - beta1**t, 1 - beta2**t

    def _direction(self, m_hat, v_hat, eps):
        return m_hat * math.sqrt(self._c2) / ((v_hat * self._c2).sqrt() + eps)


class AdamEpsInsideRoot(AdamRight):
    def _direction(self, m_hat, v_hat, eps):
        return m_hat / (v_hat + eps).sqrt()


class AdamConstructorHyperparameters(AdamRight):
    """Reads lr, betas and eps once, from the constructor: wrong when a group overrides them."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr=lr, betas=betas, eps=eps)
        self.fixed = (lr, betas, eps)

    def _hyper(self, group):
        return self.fixed


class AdamGlobalStepCount(AdamRight):
    """One step count for the whole optimizer: wrong for a parameter that misses steps."""

    @torch.no_grad()
    def step(self):
        self.global_t = getattr(self, "global_t", 0) + 1
        AdamRight.step(self)

    def _next_t(self, state):
        return self.global_t


class AdamMissingGradientAsZero(AdamRight):
    """Steps a parameter without gradient as if its gradient were zero."""

    def _skip(self, p):
        return False

    def _grad(self, p):
        return torch.zeros_like(p) if p.grad is None else p.grad


WRONG_ADAM = [  # (wrong class, options of the public test it must fail, words of the message)
    (AdamNoCorrection, {}, "after step 1"),
    (AdamOnlyFirstCorrected, {}, "after step 1"),
    (AdamEpsBeforeCorrection, {"extras": True}, "after step 1"),
    (AdamEpsInsideRoot, {"extras": True}, "after step 1"),
    (AdamConstructorHyperparameters, {"groups": True}, "one param group per parameter"),
    (AdamGlobalStepCount, {"frozen": True}, "gets no gradient (.grad is None) at steps"),
    (AdamMissingGradientAsZero, {"frozen": True}, "gets no gradient (.grad is None) at steps"),
]
PUBLIC_ADAM = {"extras": True, "groups": True, "frozen": True}  # exercise 5, q1


def ratio_right(beta1, beta2, t):
    return (1 - beta1**t) / math.sqrt(1 - beta2**t)


def threshold_right(beta2):  # optlib's radam_rectification would be delegation
    return threshold_from_rho(beta2)


def threshold_from_rho(beta2):
    rho_inf = 2 / (1 - beta2) - 1
    t = 1
    while rho_inf - 2 * t * beta2**t / (1 - beta2**t) <= 5:
        t += 1
    return t


def drift_right(C, beta2):
    s3 = 1 - beta2**3
    v = [
        (1 - beta2) * (a + beta2 * b + beta2**2 * c) / s3
        for a, b, c in ((C**2, 1, 1), (1, C**2, 1), (1, 1, C**2))
    ]  # after C, -1, -1
    return -C / math.sqrt(v[0]) + 1 / math.sqrt(v[1]) + 1 / math.sqrt(v[2])


RIGHT = [
    (checks.adam_class, AdamRight, {}),
    (checks.adam_class, AdamRight, PUBLIC_ADAM),
    (checks.adam_class, AdamRight, {**PUBLIC_ADAM, "seed": 105, "n_cases": 5, "steps": 40}),
    (checks.reddi_drift, drift_right, {}),
    (checks.reddi_drift, drift_right, {"seed": 305, "n_cases": 8}),
    (checks.uncorrected_step_ratio, ratio_right, {}),
    (checks.uncorrected_step_ratio, ratio_right, {"n_cases": 8, "max_t": 5000, "seed": 9}),
    (checks.radam_threshold, threshold_right, {}),
    (checks.radam_threshold, threshold_from_rho, {"n_cases": 8, "seed": 2}),
]


@pytest.mark.parametrize("check, answer, options", RIGHT)
def test_right_answers_pass_with_one_deterministic_line(check, answer, options, capsys):
    check(answer, **options)
    first = capsys.readouterr().out
    check(answer, **options)
    assert capsys.readouterr().out == first
    assert first.count("\n") == 1 and ": OK, " in first


def test_right_answers_pass_on_other_seeds(capsys):
    for seed in (1, 17, 321):
        checks.uncorrected_step_ratio(ratio_right, seed=seed, max_t=500)
        checks.radam_threshold(threshold_right, seed=seed)
        checks.reddi_drift(drift_right, seed=seed)
        checks.adam_class(AdamRight, seed=seed, n_cases=2, **PUBLIC_ADAM)
    assert capsys.readouterr().out.count(": OK, ") == 12


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


# ------------------------------------------------------------------ adam_class


@pytest.mark.parametrize(
    "answer, options, words", WRONG_ADAM, ids=lambda x: getattr(x, "__name__", "")
)
def test_every_known_wrong_adam_fails_the_public_test(answer, options, words):
    msg = _fails(checks.adam_class, answer, **PUBLIC_ADAM)
    assert msg.startswith("adam_class, case ")
    assert "bias" not in msg.split("(", 1)[0]  # locates the problem, does not name the fix
    # ... and the option that exposes it is enough on its own, with the message it gives
    assert words in _fails(checks.adam_class, answer, **options)


def _relative_gap(msg: str) -> float:
    expected, got = (float(x) for x in re.findall(r"expected (\S+), got (\S+)", msg)[0])
    return abs(got / expected - 1)


def test_eps_before_the_correction_is_separated_by_far_more_than_the_tolerance():
    # The nearest wrong answer: with eps = 1e-8 it differs from torch's Adam by about 1e-9
    # relative, a hair above the tolerance (1e-9): any loosening would let it through. With the
    # large eps of the public test its parameters differ by more than 1e5 times the tolerance.
    tiny = _relative_gap(_fails(checks.adam_class, AdamEpsBeforeCorrection))
    large = _relative_gap(_fails(checks.adam_class, AdamEpsBeforeCorrection, extras=True))
    assert tiny < 1e-7 and large > 1e-4, (tiny, large)


def test_the_adam_hidden_test_fails_every_known_wrong_answer_too():
    for answer, _, _ in WRONG_ADAM:
        _fails(checks.adam_class, answer, **PUBLIC_ADAM, seed=105, n_cases=5, steps=40)


def test_adam_cases_cover_what_the_statement_names():
    cases = checks.CHECKS["adam_class"].cases(**PUBLIC_ADAM)
    assert all(c["hyper"]["eps"] >= 0.03 for c in cases)  # large eps everywhere
    assert all(c.get("groups") and c["groups"][1] for c in cases)  # a second group, overridden
    for c in cases:  # a tensor loses its gradient for a few steps, then gets it back
        f = c["frozen"]
        assert 1 <= f["from_step"] < f["to_step"] < c["steps"] - 1


# ------------------------------------------------------------------ uncorrected_step_ratio


def test_ratio_that_forgets_the_second_moment_fails_with_a_direction():
    msg = _fails(checks.uncorrected_step_ratio, lambda b1, b2, t: 1 - b1**t)
    assert msg.startswith("uncorrected_step_ratio, case 1 of 5 (beta1=0.9, beta2=0.999, t=1)")
    assert "larger than Adam's" in msg and "which of the two corrections wins" in msg
    assert "measured" in msg and "sqrt" not in msg  # a number, not the formula


def test_ratio_upside_down_and_no_square_root_are_caught():
    inverted = lambda b1, b2, t: 1 / ratio_right(b1, b2, t)  # noqa: E731
    assert "upside down" in _fails(checks.uncorrected_step_ratio, inverted)
    no_root = lambda b1, b2, t: (1 - b1**t) / (1 - b2**t)  # noqa: E731
    msg = _fails(checks.uncorrected_step_ratio, no_root)
    assert "compare each moment's bias" in msg


WRONG_RATIO = [
    (lambda b1, b2, t: 1 / math.sqrt(1 - b2**t), "only the second moment's factor"),
    (lambda b1, b2, t: 1 - b1**t, "only the first moment's factor"),
    (lambda b1, b2, t: (1 - b1**t) / (1 - b2**t), "no square root"),
    (lambda b1, b2, t: math.sqrt(1 - b2**t) / (1 - b1**t), "upside down"),
    (
        lambda b1, b2, t: (1 - b1 ** (t - 1)) / math.sqrt(1 - b2 ** (t - 1)) if t > 1 else 1.0,
        "t counted from 0",
    ),
    (lambda b1, b2, t: (1 - b1) / math.sqrt(1 - b2), "the first step's factor at every t"),
]


@pytest.mark.parametrize("answer, name", WRONG_RATIO, ids=[n for _, n in WRONG_RATIO])
def test_every_known_wrong_ratio_fails_on_more_than_one_case(answer, name):
    """Each wrong answer is caught by at least two of the public cases (not by the first step
    alone), so no single case decides."""
    check = checks.CHECKS["uncorrected_step_ratio"]
    caught = 0
    for i, case in enumerate(check.cases()):
        try:
            check.compare(case, check.probe(answer, case), check.expect(case), f"case {i + 1}")
        except AssertionError:
            caught += 1
    assert caught >= 2, name


def test_ratio_cases_are_mostly_small_t():
    cases = checks.CHECKS["uncorrected_step_ratio"].cases()
    small = [c for c in cases if 2 <= c["t"] <= 7 and c["beta1"] >= 0.6]
    assert cases[0]["t"] == 1 and len(small) >= 3


def test_ratio_must_be_a_finite_number():
    assert "returned None" in _fails(checks.uncorrected_step_ratio, lambda b1, b2, t: None)
    assert "finite" in _fails(checks.uncorrected_step_ratio, lambda b1, b2, t: math.inf)
    assert "3 numbers" in _fails(checks.uncorrected_step_ratio, lambda b1, b2, t: torch.ones(3))


# ------------------------------------------------------------------ reddi_drift


def test_reddi_drift_covers_both_directions():
    cases = checks.CHECKS["reddi_drift"].cases()
    signs = {drift_right(c["C"], c["beta2"]) > 0 for c in cases}
    assert signs == {True, False}  # away from the optimum on some cases, towards it on others


def _one_average(C, b2):
    return (2 - C) / math.sqrt((C**2 + 2) / 3)


def _v_before(C, b2):
    s3 = 1 - b2**3
    v = [
        (1 - b2) * (a + b2 * b + b2**2 * c) / s3
        for a, b, c in ((C**2, 1, 1), (1, C**2, 1), (1, 1, C**2))
    ]
    return -C / math.sqrt(v[2]) + 1 / math.sqrt(v[0]) + 1 / math.sqrt(v[1])


def _no_correction_factor(C, b2):
    return drift_right(C, b2) * math.sqrt(1 - b2)  # forgot (1 - beta2) in v


WRONG_DRIFT = [
    (lambda C, b2: -drift_right(C, b2), "wrong direction"),
    (_one_average, "divided every step of the period by the same number"),
    (_v_before, "the one before g_t arrives"),
    (_no_correction_factor, "work out the three values"),
    (lambda C, b2: (2 - C) / C, "measured"),  # steps proportional to the gradient
]


@pytest.mark.parametrize("answer, words", WRONG_DRIFT)
def test_every_known_wrong_drift_fails(answer, words):
    msg = _fails(checks.reddi_drift, answer)
    assert msg.startswith("reddi_drift, case ") and "measured" in msg
    assert "sqrt" not in msg  # says where to look, not the formula
    assert any(words in _fails(checks.reddi_drift, answer, seed=s) for s in (0, 1, 2, 3))


def test_reddi_drift_matches_the_chapter_at_theorem_1():
    # The chapter measures +0.681 eta per period at C = 3, beta2 = 0.1 (Theorem 1's setting).
    assert drift_right(3.0, 0.1) == pytest.approx(0.68095, abs=1e-4)
    check = checks.CHECKS["reddi_drift"]
    assert check.expect({"C": 3.0, "beta2": 0.1})["value"] == pytest.approx(
        drift_right(3.0, 0.1), rel=1e-9
    )


def _drift_by_running(adam):
    """A "prediction" that runs Adam on the periodic gradients: delegation, whatever the Adam."""

    def answer(C, beta2):
        x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = adam([x], lr=1.0, betas=(0.0, beta2), eps=0.0)
        for t in range(1, 601):
            if t == 598:
                start = x.item()
            x.grad = torch.full_like(x, C if t % 3 == 1 else -1.0)
            opt.step()
        return x.item() - start

    return answer


def _drift_from_the_problem(C, beta2):
    import optlib
    from optlib import problems

    reddi = problems.ReddiProblem(C=C)
    run = problems.play_online(lambda p: optlib.Adam(p, lr=1.0, betas=(0.0, beta2)), reddi, 30)
    return float(run.final_x)


@pytest.mark.parametrize(
    "answer, used",
    [
        (_drift_by_running(torch.optim.Adam), "torch.optim.Adam"),
        (_drift_by_running(lambda *a, **k: __import__("optlib").Adam(*a, **k)), "optlib.Adam"),
        (_drift_from_the_problem, "optlib"),
    ],
)
def test_running_adam_to_predict_the_drift_scores_nothing(answer, used):
    msg = _fails(checks.reddi_drift, answer, n_cases=2)
    assert "scores nothing" in msg and used in msg


def test_a_drift_cell_never_run_says_which_cell_to_run():
    def test_q3(reddi_drift):  # how otter calls a test: the learner's name, None when undefined
        checks.reddi_drift(reddi_drift)

    with pytest.raises(AssertionError) as err:
        test_q3(None)
    assert "`reddi_drift` is still None: run the cell that defines `reddi_drift`" in str(err.value)


# ------------------------------------------------------------------ radam_threshold


def test_threshold_too_early_and_too_late_do_not_reveal_the_step():
    early = _fails(checks.radam_threshold, lambda b2: 5)
    assert "still taking plain momentum steps at step 5" in early
    late = _fails(checks.radam_threshold, lambda b2: 50)
    assert "switched to adaptive steps before your step" in late
    for msg in (early, late):
        assert "expected" not in msg and "measured with optlib.RAdam" in msg


def test_threshold_depends_on_beta2_and_is_a_whole_number():
    # A constant answer cannot pass: the seeded cases span beta2 with different thresholds.
    expected = {threshold_right(c["beta2"]) for c in checks.CHECKS["radam_threshold"].cases()}
    assert len(expected) >= 2
    assert "not a whole number" in _fails(checks.radam_threshold, lambda b2: 6.5)
    checks.radam_threshold(lambda b2: float(threshold_right(b2)))  # 6.0 is a whole number


# ------------------------------------------------------------------ the grader's split


ANSWERS = {
    "adam_class": AdamRight,
    "reddi_drift": drift_right,
    "uncorrected_step_ratio": ratio_right,
    "radam_threshold": threshold_right,
}


@pytest.mark.parametrize("name", NAMES)
def test_registered_cases_are_json_and_seeded(name):
    check = checks.CHECKS[name]
    a, b, c = check.cases(seed=3), check.cases(seed=3), check.cases(seed=4)
    assert a == b and a != c
    assert json.loads(json.dumps(a)) == a


@pytest.mark.parametrize("name", NAMES)
def test_probe_data_survives_json_and_compares_equal(name):
    check = checks.CHECKS[name]
    for i, case in enumerate(check.cases(seed=5, n_cases=3)):
        got = json.loads(json.dumps(check.probe(ANSWERS[name], case)))
        check.compare(case, got, check.expect(case), f"case {i + 1}")


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    got=st.none()
    | st.dictionaries(
        st.sampled_from(["value", "error", "problem"]),
        st.none() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=4),
    ),
)
def test_compare_turns_sandbox_data_into_pass_or_assertion(name, got):
    check = checks.CHECKS[name]
    case = check.cases(seed=0, n_cases=1)[0]
    expected = check.expect(case)
    try:
        check.compare(case, got, expected, "case 1")
    except AssertionError:
        return
    assert got["value"] == pytest.approx(expected["value"], rel=1e-3)
