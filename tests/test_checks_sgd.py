"""optlib.course.checks.sgd (chapter 2): right answers pass with one line, plausible wrong answers
fail with a message that locates the problem and does not contain the solution, and the
probe/expect/compare split survives JSON (the sandboxed grader's path)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from optlib.course import checks


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


# --------------------------------------------------------------------------- q1: the estimator


def estimator(G, batch_size, replace, generator):
    n = len(G)
    if replace:
        idx = torch.randint(n, (batch_size,), generator=generator)
    else:
        idx = torch.randperm(n, generator=generator)[:batch_size]
    return G[idx].mean(0)


def always_with_replacement(G, batch_size, replace, generator):
    return G[torch.randint(len(G), (batch_size,), generator=generator)].mean(0)


def always_without_replacement(G, batch_size, replace, generator):
    return G[torch.randperm(len(G), generator=generator)[:batch_size]].mean(0)


def first_rows(G, batch_size, replace, generator):
    return G[:batch_size].mean(0)


def sums(G, batch_size, replace, generator):
    return estimator(G, batch_size, replace, generator) * batch_size


def one_too_few(G, batch_size, replace, generator):
    return estimator(G, batch_size - 1, replace, generator)


def skips_the_last_example(G, batch_size, replace, generator):
    return estimator(G[:-1], batch_size, replace, generator)


def rows_not_mean(G, batch_size, replace, generator):
    return G[torch.randperm(len(G), generator=generator)[:batch_size]]


def in_place(G, batch_size, replace, generator):
    G.mul_(1.0001)
    return estimator(G, batch_size, replace, generator)


def test_right_estimator_passes(capsys):
    checks.minibatch_gradient(estimator)
    checks.minibatch_gradient(estimator, seed=9, n_cases=3, draws=2000)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("minibatch_gradient: OK") for line in out)


# The tests the exercise master runs (exercises/02_stochastic_gradient_descent.ipynb).
EXERCISE = {
    "minibatch_gradient": [{}, {"seed": 101, "edge": True}],
    "predict_minibatch_variance": [{}, {"seed": 202, "n_cases": 8, "edge": True}],
    "warmup_cosine_lr": [{}, {"seed": 303, "n_cases": 8, "edge": True}],
}


def _fails_somewhere(name, answer) -> str:
    """The message of the first of the exercise's tests that the answer fails ('' if none)."""
    for options in EXERCISE[name]:
        try:
            getattr(checks, name)(answer, **options)
        except AssertionError as err:
            return str(err)
        except (ValueError, ZeroDivisionError, RuntimeError, IndexError) as err:
            return f"raised {type(err).__name__}: {err}"  # the learner's own error
    return ""


def test_global_rng_fails_even_though_its_statistics_are_right():
    def global_rng(G, batch_size, replace, generator):
        return estimator(G, batch_size, replace, None)

    torch.manual_seed(0)
    msg = _fails(checks.minibatch_gradient, global_rng)
    assert "generator you are given was not used" in msg


def test_a_generator_derived_from_the_given_one_is_fine(capsys):
    def derived(G, batch_size, replace, generator):
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        return estimator(G, batch_size, replace, torch.Generator().manual_seed(seed))

    checks.minibatch_gradient(derived)
    assert "OK" in capsys.readouterr().out


def test_edge_batches_pass_for_the_right_answer_and_need_no_noise_at_b_equal_n(capsys):
    for options in EXERCISE["minibatch_gradient"]:
        checks.minibatch_gradient(estimator, **options)
    assert capsys.readouterr().out.count("minibatch_gradient: OK") == 2
    cases = checks.CHECKS["minibatch_gradient"].cases(seed=101, edge=True)
    shapes = {
        (c["replace"], c["batch_size"] == len(c["G"]), c["batch_size"] > len(c["G"])) for c in cases
    }
    assert (False, True, False) in shapes and (True, False, True) in shapes
    assert any(c["batch_size"] == 1 for c in cases)


def frozen_generator(G, batch_size, replace, generator):
    return estimator(G, batch_size, replace, torch.Generator().manual_seed(0))


def _rows_with_replacement_when_b_is_n(G, batch_size, replace, generator):
    if batch_size == len(G) and not replace:
        replace = True  # "random enough"? no: without replacement B = N is the full gradient
    return estimator(G, batch_size, replace, generator)


def _randperm_for_both(G, batch_size, replace, generator):
    idx = torch.randperm(len(G), generator=generator)[: min(batch_size, len(G))]
    return G[idx].mean(0)


ESTIMATOR_WRONG = {
    "always with replacement": always_with_replacement,
    "always without replacement": always_without_replacement,
    "first rows": first_rows,
    "sum, not mean": sums,
    "one example too few": one_too_few,
    "one example too many": lambda G, B, r, g: estimator(G, B + 1 if r or B < len(G) else B, r, g),
    "skips the last example": skips_the_last_example,
    "rows, not their mean": rows_not_mean,
    "changes G in place": in_place,
    "global generator": lambda G, B, r, g: estimator(G, B, r, None),
    "a fresh generator each call": frozen_generator,
    "B = N treated as with replacement": _rows_with_replacement_when_b_is_n,
    "randperm for both schemes": _randperm_for_both,
    "returns None": lambda G, B, r, g: None,
}


@pytest.mark.parametrize("name", sorted(ESTIMATOR_WRONG))
def test_every_known_wrong_estimator_fails(name):
    assert _fails_somewhere("minibatch_gradient", ESTIMATOR_WRONG[name]), name


def test_ignoring_replace_is_caught_both_ways():
    msg = _fails(checks.minibatch_gradient, always_with_replacement)
    assert "without replacement" in msg and "too noisy" in msg
    msg = _fails(checks.minibatch_gradient, always_without_replacement)
    assert "with replacement" in msg and "less noisy" in msg
    assert "N-B" not in msg and "N - B" not in msg  # does not give the formula away


@pytest.mark.parametrize(
    "answer, words",
    [
        (first_rows, "generator you are given was not used"),
        (sums, "biased"),
        (skips_the_last_example, "biased"),
        (one_too_few, "too noisy"),
        (rows_not_mean, "shape"),
        (in_place, "in place"),
        (lambda G, B, r, g: None, "None"),
        (lambda G, B, r, g: "x", "str"),
    ],
)
def test_wrong_estimators_fail_with_a_located_message(answer, words):
    msg = _fails(checks.minibatch_gradient, answer)
    assert words in msg and re.search(r"case \d of 4 \(N = \d+ examples, B = \d+", msg)


# --------------------------------------------------------------------------- q2: the prediction


def predict(v, b, b_new, n, replace):
    if replace:
        return v * b / b_new
    return v * b / b_new * (n - b_new) / (n - b)


def test_right_prediction_passes(capsys):
    checks.predict_minibatch_variance(predict)
    checks.predict_minibatch_variance(predict, seed=5, n_cases=12, max_n=100_000)
    assert capsys.readouterr().out.count("predict_minibatch_variance: OK") == 2


def test_forgetting_the_finite_population_is_named_without_the_formula():
    msg = _fails(checks.predict_minibatch_variance, lambda v, b, b_new, n, r: v * b / b_new)
    assert "without" in msg and "with replacement" in msg
    assert "n - b" not in msg.lower() and "(n-b" not in msg.lower()


def test_the_wrong_direction_is_named():
    msg = _fails(checks.predict_minibatch_variance, lambda v, b, b_new, n, r: v * b_new / b)
    assert "wrong way" in msg


def test_edge_predictions_pass_for_the_right_answer(capsys):
    for options in EXERCISE["predict_minibatch_variance"]:
        checks.predict_minibatch_variance(predict, **options)
    assert capsys.readouterr().out.count("predict_minibatch_variance: OK") == 2


def _fpc_with_n(v, b, b_new, n, replace):  # N in place of N - 1: the same ratio, harmless
    if replace:
        return v * b / b_new
    return v * b / b_new * (1 - b_new / n) / (1 - b / n)


def test_the_finite_population_correction_with_n_instead_of_n_minus_1_is_the_same_ratio(capsys):
    """Review note: only ratios of the correction enter the prediction, so N or N - 1 gives the
    same answer; the check cannot (and need not) tell them apart."""
    for options in EXERCISE["predict_minibatch_variance"]:
        checks.predict_minibatch_variance(_fpc_with_n, **options)
    assert capsys.readouterr().out.count("OK") == 2


PREDICT_WRONG = {
    "ignores the finite population": lambda v, b, b_new, n, r: v * b / b_new,
    "always the correction": lambda v, b, b_new, n, r: v * b / b_new * (n - b_new) / (n - b),
    "wrong direction": lambda v, b, b_new, n, r: v * b_new / b,
    "standard deviation scaling": lambda v, b, b_new, n, r: v * (b / b_new) ** 0.5,
    "correction only at the new size": lambda v, b, b_new, n, r: (
        v * b / b_new * ((n - b_new) / (n - 1) if not r else 1.0)
    ),
    "unchanged": lambda v, b, b_new, n, r: v,
}


@pytest.mark.parametrize("name", sorted(PREDICT_WRONG))
def test_every_known_wrong_prediction_fails(name):
    assert _fails_somewhere("predict_minibatch_variance", PREDICT_WRONG[name]), name


def test_prediction_type_problems():
    assert "None" in _fails(checks.predict_minibatch_variance, lambda *a: None)
    assert "2 numbers" in _fails(checks.predict_minibatch_variance, lambda *a: [1.0, 2.0])
    # a float32 tensor is rounded: a right answer must keep float64 precision to pass
    assert "OK" not in _fails(
        checks.predict_minibatch_variance, lambda *a: torch.tensor(predict(*a)) * (1 + 1e-4)
    )


# --------------------------------------------------------------------------- q3: the schedule


def warmup_cosine(t, peak_lr, warmup_steps, total_steps, start_factor, eta_min):
    if t < warmup_steps:
        return peak_lr * (start_factor + (1 - start_factor) * t / warmup_steps)
    s = (t - warmup_steps) / (total_steps - warmup_steps)
    return eta_min + (peak_lr - eta_min) * (1 + math.cos(math.pi * s)) / 2


def test_right_schedule_passes(capsys):
    checks.warmup_cosine_lr(warmup_cosine)
    checks.warmup_cosine_lr(warmup_cosine, seed=3, n_cases=3, max_steps=600)
    assert capsys.readouterr().out.count("warmup_cosine: OK") == 2


@pytest.mark.parametrize(
    "wrong, phase",
    [
        (  # cosine over the whole run, ignoring where the warm-up ends
            lambda t, p, W, T, sf, m: (
                warmup_cosine(t, p, W, T, sf, m)
                if t < W
                else m + (p - m) * (1 + math.cos(math.pi * t / T)) / 2
            ),
            "where the warm-up ends",
        ),
        (  # warm-up one step ahead
            lambda t, p, W, T, sf, m: warmup_cosine(min(t + 1, W) if t < W else t, p, W, T, sf, m),
            "at the first step",
        ),
        (  # decays to zero, not to eta_min
            lambda t, p, W, T, sf, m: warmup_cosine(t, p, W, T, sf, 0.0),
            "during the decay",
        ),
        (  # warm-up from zero, ignoring start_factor
            lambda t, p, W, T, sf, m: warmup_cosine(t, p, W, T, 0.0, m),
            "at the first step",
        ),
    ],
)
def test_wrong_schedules_say_where(wrong, phase):
    msg = _fails(checks.warmup_cosine_lr, wrong)
    assert phase in msg and "torch's schedulers give" in msg
    assert "cos(" not in msg  # no formula in the message


def test_edge_schedules_pass_for_the_right_answer(capsys):
    for options in EXERCISE["warmup_cosine_lr"]:
        checks.warmup_cosine_lr(warmup_cosine, **options)
    assert capsys.readouterr().out.count("warmup_cosine: OK") == 2


SCHEDULE_WRONG = {
    "cosine over the whole run": lambda t, p, W, T, sf, m: (
        warmup_cosine(t, p, W, T, sf, m)
        if t < W
        else m + (p - m) * (1 + math.cos(math.pi * t / T)) / 2
    ),
    "warm-up one step ahead": lambda t, p, W, T, sf, m: warmup_cosine(
        min(t + 1, W) if t < W else t, p, W, T, sf, m
    ),
    "decays to zero": lambda t, p, W, T, sf, m: warmup_cosine(t, p, W, T, sf, 0.0),
    "warm-up from zero": lambda t, p, W, T, sf, m: warmup_cosine(t, p, W, T, 0.0, m),
    "decay over T - W - 1 steps": lambda t, p, W, T, sf, m: (
        warmup_cosine(t, p, W, T, sf, m)
        if t < W
        else m + (p - m) * (1 + math.cos(math.pi * (t - W) / (T - W - 1))) / 2
    ),
    "linear decay": lambda t, p, W, T, sf, m: (
        warmup_cosine(t, p, W, T, sf, m) if t < W else p - (p - m) * (t - W) / (T - W)
    ),
    "floor added to the cosine": lambda t, p, W, T, sf, m: (
        warmup_cosine(t, p, W, T, sf, m)
        if t < W
        else m + p * (1 + math.cos(math.pi * (t - W) / (T - W))) / 2
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEDULE_WRONG))
def test_every_known_wrong_schedule_fails(name):
    assert _fails_somewhere("warmup_cosine_lr", SCHEDULE_WRONG[name]), name


def test_schedule_type_problems():
    assert "None" in _fails(checks.warmup_cosine_lr, lambda *a: None)
    assert "numbers" in _fails(checks.warmup_cosine_lr, lambda *a: [0.1, 0.2])


# --------------------------------------------------------------------------- the grader's path


RIGHT = {
    "minibatch_gradient": estimator,
    "predict_minibatch_variance": predict,
    "warmup_cosine_lr": warmup_cosine,
}


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_cases_probe_and_expect_travel_as_json(name):
    check = checks.CHECKS[name]
    cases = check.cases(seed=11, n_cases=2)
    assert json.loads(json.dumps(cases)) == cases and cases != check.cases(seed=12, n_cases=2)
    for i, case in enumerate(cases):
        got = json.loads(json.dumps(check.probe(RIGHT[name], case)))
        expected = json.loads(json.dumps(check.expect(case)))
        check.compare(case, got, expected, f"case {i + 1}")


@pytest.mark.parametrize("name", sorted(RIGHT))
@pytest.mark.parametrize(
    "junk", [None, {}, {"error": "ZeroDivisionError: x"}, {"mean": "a", "mse": 1}, [1, 2]]
)
def test_junk_from_the_sandbox_is_an_assertion(name, junk):
    check = checks.CHECKS[name]
    case = check.cases(seed=0, n_cases=1)[0]
    with pytest.raises(AssertionError):
        check.compare(case, junk, check.expect(case), "case 1")


def test_an_error_in_the_sandbox_is_reported():
    check = checks.CHECKS["minibatch_gradient"]
    case = check.cases(seed=0, n_cases=1)[0]
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        check.compare(case, {"error": "ZeroDivisionError: x"}, check.expect(case), "case 1")


def test_variance_cases_never_ask_for_more_examples_than_the_data_set_has():
    """Every seed: both batch sizes within 1..N (the grader draws a fresh seed per run; before
    the fix, 4 of these 400 seeds drew a new batch larger than N without replacement, e.g. seed
    28: N = 55, B' = 59)."""
    for seed in range(400):
        for case in checks.CHECKS["predict_minibatch_variance"].cases(seed=seed, n_cases=6):
            assert 1 <= case["b"] < case["n"] and 1 <= case["b_new"] <= case["n"], (seed, case)
