"""optlib.course.checks.adam (chapter 5's exercise checks): right answers pass with one
deterministic line, plausible wrong answers fail with a message that locates the problem without
giving the
solution away, and the cases/probe/expect/compare split works for the sandboxed grader."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optlib.course import checks

NAMES = ["uncorrected_step_ratio", "adam_first_step", "radam_threshold"]


def ratio_right(beta1, beta2, t):
    return (1 - beta1**t) / math.sqrt(1 - beta2**t)


def first_step_right(grad, lr, betas):
    return lr * math.sqrt(int((grad != 0).sum()))


def first_step_exact(grad, lr, betas):
    return float((lr * grad / (grad.abs() + 1e-8)).norm())


def threshold_right(beta2):  # optlib's radam_rectification would be delegation
    return threshold_from_rho(beta2)


def threshold_from_rho(beta2):
    rho_inf = 2 / (1 - beta2) - 1
    t = 1
    while rho_inf - 2 * t * beta2**t / (1 - beta2**t) <= 5:
        t += 1
    return t


RIGHT = [
    (checks.uncorrected_step_ratio, ratio_right, {}),
    (checks.uncorrected_step_ratio, ratio_right, {"n_cases": 8, "max_t": 5000, "seed": 9}),
    (checks.adam_first_step, first_step_right, {}),
    (checks.adam_first_step, first_step_exact, {"n_cases": 8, "seed": 4}),
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
        checks.adam_first_step(first_step_right, seed=seed)
        checks.radam_threshold(threshold_right, seed=seed)
    assert capsys.readouterr().out.count(": OK, ") == 9


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


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


def test_ratio_must_be_a_finite_number():
    assert "returned None" in _fails(checks.uncorrected_step_ratio, lambda b1, b2, t: None)
    assert "finite" in _fails(checks.uncorrected_step_ratio, lambda b1, b2, t: math.inf)
    assert "3 numbers" in _fails(checks.uncorrected_step_ratio, lambda b1, b2, t: torch.ones(3))


# ------------------------------------------------------------------ adam_first_step


def test_first_step_proportional_to_the_gradient_is_explained_by_a_run():
    msg = _fails(checks.adam_first_step, lambda g, lr, betas: lr * float(g.norm()))
    assert "proportional to the gradient's norm" in msg
    assert "multiplied by 1000" in msg and "measured" in msg


def test_first_step_without_bias_correction_is_recognised():
    def uncorrected(g, lr, betas):
        b1, b2 = betas
        return lr * (1 - b1) / math.sqrt(1 - b2) * math.sqrt(int((g != 0).sum()))

    assert "without* bias correction" in _fails(checks.adam_first_step, uncorrected)


def test_first_step_counting_zero_gradients_is_recognised():
    msg = _fails(checks.adam_first_step, lambda g, lr, betas: lr * math.sqrt(g.numel()))
    assert "exactly zero" in msg


def test_first_step_other_wrong_answer_gets_a_generic_hint():
    msg = _fails(checks.adam_first_step, lambda g, lr, betas: 2 * lr)
    assert "work out m_1, v_1" in msg


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
    "uncorrected_step_ratio": ratio_right,
    "adam_first_step": first_step_right,
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
