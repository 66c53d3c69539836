"""optlib.course.checks.adagrad (chapter 4's exercise checks): right answers pass with one
deterministic line, every known wrong answer fails with a message that locates the problem
without giving the solution, and the cases/probe/expect/compare split works for the sandboxed
grader."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optlib.course import checks

NAMES = ["adagrad_class", "preconditioned_kappa", "adagrad_effective_lr", "rmsprop_recovery_steps"]


class MyAdagrad(torch.optim.Optimizer):
    """A from-scratch AdaGrad, as a learner would write it."""

    def __init__(self, params, lr=1e-2, eps=1e-10, initial_accumulator_value=0.0, weight_decay=0):
        super().__init__(
            params,
            dict(lr=lr, eps=eps, initial_accumulator_value=initial_accumulator_value,
                 weight_decay=weight_decay),
        )  # fmt: skip

    def _direction(self, g, G, eps):
        return g / (G.sqrt() + eps)

    def _skip(self, p):
        return p.grad is None

    def _gradient(self, p, group):
        return p.grad + group["weight_decay"] * p

    def _start(self, p, group):
        return torch.full_like(p, group["initial_accumulator_value"])

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if self._skip(p):
                    continue
                state = self.state[p]
                if not state:
                    state["G"] = self._start(p, group)
                g = self._gradient(p, group)
                state["G"].add_(g * g)
                p.sub_(group["lr"] * self._direction(g, state["G"], group["eps"]))


class EpsInsideRoot(MyAdagrad):
    def _direction(self, g, G, eps):
        return g / (G + eps).sqrt()


class MeanNotSum(MyAdagrad):
    """Divides by the root of the *mean* square gradient: right at step 1, wrong from step 2."""

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["G"], state["t"] = torch.full_like(p, 0.0), 0
                state["t"] += 1
                state["G"].add_(p.grad * p.grad)
                p.sub_(group["lr"] * p.grad / ((state["G"] / state["t"]).sqrt() + group["eps"]))


class NoWeightDecay(MyAdagrad):
    def _gradient(self, p, group):
        return p.grad


class DecayOutsideTheAccumulator(MyAdagrad):
    """Decoupled decay instead of torch's L2 term inside the gradient."""

    def _gradient(self, p, group):
        p.mul_(1 - group["lr"] * group["weight_decay"])
        return p.grad


class IgnoresInitialAccumulator(MyAdagrad):
    def _start(self, p, group):
        return torch.zeros_like(p)


class ReadsDefaults(MyAdagrad):
    """Uses the constructor's hyperparameters for every group."""

    def __init__(self, params, lr=1e-2, eps=1e-10, initial_accumulator_value=0.0, weight_decay=0):
        super().__init__(params, lr, eps, initial_accumulator_value, weight_decay)
        self.fixed = dict(self.defaults)

    @torch.no_grad()
    def step(self):
        saved = [dict(g) for g in self.param_groups]
        for group in self.param_groups:
            group.update({k: v for k, v in self.fixed.items() if k != "params"})
        super().step()
        for group, old in zip(self.param_groups, saved):
            group.update(old)


class ZeroForMissingGradient(MyAdagrad):
    """Treats a missing gradient as zero: the L2 term then keeps moving the parameter."""

    def _skip(self, p):
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        return False


class Aliased(torch.optim.Adagrad):
    pass


def kappa_right(H, d):
    s = d.rsqrt()
    lam = torch.linalg.eigvalsh(s[:, None] * H * s[None, :])
    return float(lam[-1] / lam[0])


def kappa_via_similar_matrix(H, d):
    """D^{-1}H has the same eigenvalues as D^{-1/2} H D^{-1/2}: also right."""
    lam = torch.linalg.eigvals(H / d[:, None]).real.sort().values
    return float(lam[-1] / lam[0])


def ada_lr_right(lr, g, t, eps, tau):
    return lr / (math.sqrt(tau + t * g * g) + eps)


def recovery_right(alpha, drop, fraction):
    s2 = (1 / drop) ** 2
    return math.ceil(math.log(s2 * (1 / fraction**2 - 1) / (1 - s2)) / math.log(alpha))


def recovery_by_simulation(alpha, drop, fraction):
    """Iterating the average by hand (no optimizer): also right."""
    v, s2, k = 1.0, (1 / drop) ** 2, 0
    while math.sqrt(v) > math.sqrt(s2) / fraction:
        v = alpha * v + (1 - alpha) * s2
        k += 1
    return k


ANSWERS = {
    "adagrad_class": MyAdagrad,
    "preconditioned_kappa": kappa_right,
    "adagrad_effective_lr": ada_lr_right,
    "rmsprop_recovery_steps": recovery_right,
}

RIGHT = [
    (checks.adagrad_class, MyAdagrad, {}),
    (checks.adagrad_class, MyAdagrad, {"extras": True, "groups": True}),
    (checks.adagrad_class, MyAdagrad, {"seed": 104, "n_cases": 6, "steps": 40, "extras": True,
                                       "groups": True, "frozen": True}),
    (checks.preconditioned_kappa, kappa_right, {"n_cases": 6, "max_dim": 7}),
    (checks.preconditioned_kappa, kappa_via_similar_matrix, {}),
    (checks.adagrad_effective_lr, ada_lr_right, {"n_cases": 6}),
    (checks.rmsprop_recovery_steps, recovery_right, {}),
    (checks.rmsprop_recovery_steps, recovery_by_simulation, {"seed": 404, "n_cases": 8}),
]  # fmt: skip


def test_the_checks_are_registered_and_reachable_from_optlib_checks():
    for name in NAMES:
        assert name in checks.CHECKS and callable(getattr(checks, name))
        assert name in checks.DELEGATION


@pytest.mark.parametrize("check, answer, options", RIGHT)
def test_right_answers_pass_with_one_deterministic_line(check, answer, options, capsys):
    check(answer, **options)
    first = capsys.readouterr().out
    check(answer, **options)
    assert capsys.readouterr().out == first
    assert first.count("\n") == 1 and ": OK, " in first


def test_right_answers_pass_on_other_seeds(capsys):
    for seed in (1, 17):
        checks.adagrad_class(MyAdagrad, seed=seed, extras=True, groups=True, frozen=True, steps=10)
        checks.preconditioned_kappa(kappa_right, seed=seed)
        checks.adagrad_effective_lr(ada_lr_right, seed=seed, max_t=500)
        checks.rmsprop_recovery_steps(recovery_right, seed=seed)
    assert capsys.readouterr().out.count(": OK, ") == 8


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


# ------------------------------------------------------------------ known wrong answers

PUBLIC_Q1 = [{}, {"extras": True, "groups": True}]  # what the exercise's public test runs
WRONG_CLASSES = [
    (EpsInsideRoot, "differs from torch.optim.Adagrad"),
    (MeanNotSum, "after step 2"),
    (NoWeightDecay, "weight_decay="),
    (DecayOutsideTheAccumulator, "weight_decay="),
    (IgnoresInitialAccumulator, "initial_accumulator_value"),
    (ReadsDefaults, "param group"),
    (Aliased, "scores nothing"),
]


@pytest.mark.parametrize("answer, words", WRONG_CLASSES, ids=lambda x: getattr(x, "__name__", ""))
def test_every_known_wrong_class_fails_the_public_test(answer, words):
    """Every requirement of the statement is in the public test: no hidden surprise."""
    messages = []
    for options in PUBLIC_Q1:
        try:
            checks.adagrad_class(answer, **options)
        except AssertionError as err:
            messages.append(str(err))
    assert messages and any(words in m for m in messages), messages


def test_a_missing_gradient_treated_as_zero_fails():
    msg = _fails(checks.adagrad_class, ZeroForMissingGradient, extras=True, groups=True,
                 frozen=True)  # fmt: skip
    assert "no gradient" in msg


def test_adagrad_mean_instead_of_sum_fails_at_step_two_with_a_hint():
    msg = _fails(checks.adagrad_class, MeanNotSum)
    assert msg.startswith("adagrad_class, case 1 of 3") and "after step 2" in msg
    assert "torch.optim.Adagrad" in msg and "accumulator" in msg
    assert "sum" not in msg.split("(lr=")[0]  # the hint does not name the fix


def test_adagrad_class_that_raises_is_reported():
    class Broken(MyAdagrad):
        def step(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # in the learner's kernel, the error itself
        checks.adagrad_class(Broken)
    case = checks.CHECKS["adagrad_class"].cases(n_cases=1)[0]
    exp = checks.CHECKS["adagrad_class"].expect(case)
    with pytest.raises(AssertionError, match="raised RuntimeError: boom"):  # from the sandbox
        checks.CHECKS["adagrad_class"].compare(case, {"error": "RuntimeError: boom"}, exp, "c")


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda H, d: float(torch.linalg.cond(H)), "condition number of H itself"),
        (lambda H, d: kappa_right(H, d * d), "power of D"),
        (lambda H, d: float(torch.linalg.cond(H / d[:, None])), "non-symmetric"),
        (lambda H, d: kappa_right(H, d) * 1.01, "expected"),
        (lambda H, d: None, "returned None"),
        (lambda H, d: torch.ones(2), "returned 2 numbers"),
    ],
)
def test_preconditioned_kappa_wrong_answers_are_diagnosed(answer, words):
    msg = _fails(checks.preconditioned_kappa, answer)
    assert words in msg and msg.startswith("preconditioned_kappa")
    assert "rsqrt" not in msg and "-1/2" not in msg and "eigvalsh" not in msg


def test_preconditioned_kappa_rejects_changing_the_inputs():
    def in_place(H, d):
        d.sqrt_()
        return 1.0

    assert "in place" in _fails(checks.preconditioned_kappa, in_place)


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda lr, g, t, eps, tau: lr / (abs(g) + eps), "you predicted"),
        (lambda lr, g, t, eps, tau: lr / (math.sqrt(t * g * g) + eps), "initial_accumulator"),
        (lambda lr, g, t, eps, tau: lr / math.sqrt(tau + t * g * g + eps), "eps=0.0001"),
        (lambda lr, g, t, eps, tau: float("nan"), "finite"),
    ],
)
def test_adagrad_effective_lr_wrong_answers(answer, words):
    msg = _fails(checks.adagrad_effective_lr, answer, n_cases=4)
    assert words in msg and msg.startswith("adagrad_effective_lr, case")


def test_adagrad_effective_lr_hints_at_a_sqrt_t_error():
    msg = _fails(checks.adagrad_effective_lr, lambda lr, g, t, eps, tau: lr / (t * abs(g)))
    assert "sqrt(t)" in msg


def _recovery_wrong(alpha, drop, fraction, *, square=True, minus=True, root=True):
    s2 = (1 / drop) ** 2 if square else 1 / drop
    target = (1 / fraction**2 - 1) if root else (1 / fraction - 1)
    return math.ceil(math.log(s2 * target / ((1 - s2) if minus else 1)) / math.log(alpha))


WRONG_RECOVERY = [
    (lambda a, d, f: _recovery_wrong(a, d, f, square=False), "you predicted"),  # σ, not σ²
    (lambda a, d, f: _recovery_wrong(a, d, f, minus=False), "you predicted"),  # σ₂² dropped
    (lambda a, d, f: _recovery_wrong(a, d, f, root=False), "you predicted"),  # v, not sqrt(v)
    (lambda a, d, f: round(1 / (1 - a)), "memory"),
    (lambda a, d, f: recovery_right(a, d, f) - 1, "you predicted"),  # off by one
    (lambda a, d, f: recovery_right(a, d, f) + 0.5, "whole number"),
]


@pytest.mark.parametrize("answer, words", WRONG_RECOVERY)
def test_every_known_wrong_recovery_count_fails(answer, words):
    msg = _fails(checks.rmsprop_recovery_steps, answer)
    assert words in msg and msg.startswith("rmsprop_recovery_steps")
    assert "log" not in msg and "sqrt" not in msg


def test_recovery_counts_agree_with_the_closed_form():
    """The runs that the check takes as truth agree with the formula of the statement."""
    check = checks.CHECKS["rmsprop_recovery_steps"]
    for case in check.cases(seed=2, n_cases=8):
        args = (case["alpha"], case["drop"], case["fraction"])
        assert check.expect(case)["value"] == recovery_right(*args)


def test_effective_lr_matches_the_formula_of_the_chapter():
    ada = checks.CHECKS["adagrad_effective_lr"]
    for case in ada.cases(seed=2, n_cases=6):
        args = (case["lr"], case["g"], case["t"], case["eps"], case["initial_accumulator_value"])
        assert math.isclose(ada.expect(case)["value"], ada_lr_right(*args), rel_tol=1e-9)


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
            st.sampled_from(["trajectory", "value", "error", "problem", "modified_input"]), inner
        )
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(NAMES), got=JSONISH)
def test_compare_turns_any_sandbox_data_into_pass_or_assertion(name, got):
    check = checks.CHECKS[name]
    case = check.cases(seed=0, n_cases=1)[0]
    expected = check.expect(case)
    try:
        check.compare(case, got, expected, "case 1")
    except AssertionError:
        return
    assert isinstance(got, dict)  # accepted: then it must be the right answer
    if "value" in expected:
        assert math.isclose(got["value"], expected["value"], rel_tol=1e-6)
    else:
        assert torch.allclose(torch.tensor(got["trajectory"]), torch.tensor(expected["trajectory"]))
