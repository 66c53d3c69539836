"""optlib.course.checks.momentum: right answers pass with one line, every known wrong answer
fails with a message that locates the problem without giving the solution away, and the split is
safe for the grader."""

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

NAMES = [
    "momentum_sgd_class",
    "momentum_constant_step",
    "best_momentum_for_lr",
    "predict_momentum_iterations",
]


# ------------------------------------------------------------------ right answers, by hand


class MomentumSGD(torch.optim.Optimizer):
    """PyTorch's convention, written from the statement."""

    def __init__(self, params, lr, momentum, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov))

    def _buffer(self, state, g, beta):
        if "b" not in state:
            state["b"] = g.clone()
        else:
            state["b"].mul_(beta).add_(g)
        return state["b"]

    def _skip(self, p):
        return p.grad is None

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, beta = group["lr"], group["momentum"]
            for p in group["params"]:
                if self._skip(p):
                    continue
                b = self._buffer(self.state[p], p.grad, beta)
                p.add_(p.grad + beta * b if group["nesterov"] else b, alpha=-lr)


class VelocityForm(torch.optim.Optimizer):
    """The velocity form v = βv - ηg, θ += v (numpy inside): the same iterates without Nesterov."""

    def __init__(self, params, lr, momentum, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.numpy()
                v = self.state[p].get("v", np.zeros_like(g))
                v = group["momentum"] * v - group["lr"] * g
                self.state[p]["v"] = v
                p.add_(torch.from_numpy(v))


def step_right(beta, tau, nesterov, t):
    b = beta ** (t - 1) + (1 - tau) * (1 - beta ** (t - 1)) / (1 - beta)
    return 1 + beta * b if nesterov else b


def step_by_recursion(beta, tau, nesterov, t):
    b = 1.0
    for _ in range(t - 1):
        b = beta * b + (1 - tau)
    return np.float64(1 + beta * b if nesterov else b)


def beta_right(lr, A):
    mu = float(torch.linalg.eigvalsh(A)[0])
    return (1 - math.sqrt(lr * mu)) ** 2


def beta_as_tensor(lr, A):
    mu = torch.linalg.eigvalsh(A)[0]
    return (1 - (lr * mu).sqrt()) ** 2


def _count(kappa, tol, cs, cf, steep, flat):
    rho = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    start, k = math.hypot(cs, cf), 0
    while math.hypot(cs * steep(rho, k) * rho**k, cf * flat(rho, k) * rho**k) > tol * start:
        k += 1
    return k


def iterations_right(kappa, tol, cs, cf):
    return _count(kappa, tol, cs, cf, lambda r, k: 1 + (1 + r) * k, lambda r, k: 1 + (1 - r) * k)


def iterations_with_2t(kappa, tol, cs, cf):
    """The approximation 1 + (1 ± ρ)t ≈ 1 + 2t / 1: within a step, accepted."""
    return _count(kappa, tol, cs, cf, lambda r, k: 1 + 2 * k, lambda r, k: 1 + (1 - r) * k)


RIGHT = [
    (checks.momentum_sgd_class, MomentumSGD, {}),
    (checks.momentum_sgd_class, MomentumSGD, {"nesterov": True, "groups": True, "frozen": True}),
    (checks.momentum_sgd_class, MomentumSGD, {"seed": 31, "n_cases": 4, "steps": 40,
                                              "nesterov": True, "groups": True}),
    (checks.momentum_sgd_class, VelocityForm, {"groups": True, "frozen": True}),
    (checks.momentum_constant_step, step_right, {}),
    (checks.momentum_constant_step, step_by_recursion, {"seed": 7, "n_cases": 9}),
    (checks.best_momentum_for_lr, beta_right, {}),
    (checks.best_momentum_for_lr, beta_as_tensor, {"seed": 4, "n_cases": 7, "max_dim": 7}),
    (checks.predict_momentum_iterations, iterations_right, {}),
    (checks.predict_momentum_iterations, iterations_with_2t, {"seed": 2, "n_cases": 6,
                                                              "min_tol": 1e-12}),
]  # fmt: skip


@pytest.mark.parametrize("check, answer, options", RIGHT)
def test_right_answers_pass_with_one_deterministic_line(check, answer, options, capsys):
    check(answer, **options)
    first = capsys.readouterr().out
    check(answer, **options)
    assert capsys.readouterr().out == first
    assert first.count("\n") == 1 and ": OK, " in first


# ------------------------------------------------------------------ known wrong answers


class IgnoresGroups(MomentumSGD):
    """Reads lr and momentum once, from the constructor: wrong as soon as a group overrides."""

    def __init__(self, params, lr, momentum, nesterov=False):
        super().__init__(params, lr, momentum, nesterov)
        self.lr, self.beta = lr, momentum

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                b = self._buffer(self.state[p], p.grad, self.beta)
                p.add_(p.grad + self.beta * b if group["nesterov"] else b, alpha=-self.lr)


class MovesWithoutGradient(MomentumSGD):
    """Treats a missing gradient as zero and keeps coasting on the buffer."""

    def _skip(self, p):
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        return False


class EMABuffer(MomentumSGD):
    def _buffer(self, state, g, beta):
        if "b" not in state:
            state["b"] = torch.zeros_like(g)
        state["b"].mul_(beta).add_(g, alpha=1 - beta)
        return state["b"]


class ZeroStartBuffer(MomentumSGD):
    """b_0 = 0, b_1 = βb_0 + g: the same as b_1 = g; right (a learner may well write this)."""


class NesterovIgnored(MomentumSGD):
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.add_(self._buffer(self.state[p], p.grad, group["momentum"]), alpha=-group["lr"])


class Subclassed(torch.optim.SGD):
    def __init__(self, params, lr, momentum, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov)


WRONG = {
    "momentum_sgd_class": [
        (IgnoresGroups, {"groups": True}, "param group"),
        (MovesWithoutGradient, {"frozen": True}, "no gradient"),
        (EMABuffer, {}, "after step 1"),
        (NesterovIgnored, {"nesterov": True}, "nesterov=True"),
        (Subclassed, {}, "scores nothing"),
    ],
    "momentum_constant_step": [
        (lambda b, tau, n, t: 1 - b**t, "you predicted"),  # the EMA's weight
        (lambda b, tau, n, t: (1 - tau) * (1 - b**t) / (1 - b), "you predicted"),  # damped b_1
        (lambda b, tau, n, t: (1 - b**t) / (1 - b), "you predicted"),  # dampening ignored
        (lambda b, tau, n, t: b ** (t - 1) + (1 - tau) * (1 - b ** (t - 1)) / (1 - b),
         "you predicted"),  # Nesterov ignored
        (lambda b, tau, n, t: b**t + (1 - tau) * (1 - b**t) / (1 - b), "you predicted"),
        (lambda b, tau, n, t: (1 - tau) / (1 - b), "value for large t"),
        (lambda b, tau, n, t: None, "returned None"),
    ],
    "best_momentum_for_lr": [
        (lambda lr, A: ((math.sqrt(float(torch.linalg.cond(A))) - 1)
                        / (math.sqrt(float(torch.linalg.cond(A))) + 1)) ** 2, "best beta"),
        (lambda lr, A: (1 - math.sqrt(lr * float(torch.linalg.eigvalsh(A)[-1]))) ** 2,
         "per step"),
        (lambda lr, A: 1 - math.sqrt(lr * float(torch.linalg.eigvalsh(A)[0])), "per step"),
        (lambda lr, A: 0.9, "per step"),
        (lambda lr, A: 1.2, "0 <= beta < 1"),
        (lambda lr, A: (A.mul_(2), 0.5)[1], "in place"),
    ],
    "predict_momentum_iterations": [
        (lambda k, tol, cs, cf: math.ceil(math.log(tol) / math.log((k**0.5 - 1) / (k**0.5 + 1))),
         "the rate alone"),
        (lambda k, tol, cs, cf: math.ceil(1.2 * math.log(tol)
                                          / math.log((k**0.5 - 1) / (k**0.5 + 1))), "predicted"),
        (lambda k, tol, cs, cf: _count(k, tol, cs, cf, lambda r, j: 1 + j, lambda r, j: 1 + j),
         "predicted"),  # the factor of a start with c_{-1} = 0
        (lambda k, tol, cs, cf: _count(k, tol, cs, 0.0, lambda r, j: 1 + (1 + r) * j,
                                       lambda r, j: 1.0), "predicted"),  # the steep mode only
        (lambda k, tol, cs, cf: _count(k, tol, 0.0, cf, lambda r, j: 1.0,
                                       lambda r, j: 1 + (1 - r) * j), "predicted"),  # flat only
        (lambda k, tol, cs, cf: iterations_right(k, tol, cs, cf) + 0.5, "not a whole number"),
    ],
}  # fmt: skip


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


@pytest.mark.parametrize(
    "answer, options, words", WRONG["momentum_sgd_class"], ids=lambda x: getattr(x, "__name__", "")
)
def test_every_known_wrong_class_fails(answer, options, words):
    msg = _fails(checks.momentum_sgd_class, answer, **options)
    assert words in msg and msg.startswith("momentum_sgd_class")


def test_the_zero_start_buffer_is_not_a_wrong_answer(capsys):
    checks.momentum_sgd_class(ZeroStartBuffer, nesterov=True, groups=True)


@pytest.mark.parametrize("name", ["momentum_constant_step", "best_momentum_for_lr",
                                  "predict_momentum_iterations"])  # fmt: skip
def test_every_known_wrong_answer_fails(name):
    check = getattr(checks, name)
    for answer, words in WRONG[name]:
        msg = _fails(check, answer)
        assert msg.startswith(name) and words in msg, msg


def test_wrong_answers_fail_on_the_hidden_options_too():
    for answer, _ in WRONG["momentum_constant_step"][:5]:
        _fails(checks.momentum_constant_step, answer, seed=303, n_cases=9)
    for answer, _ in WRONG["predict_momentum_iterations"][:5]:
        _fails(checks.predict_momentum_iterations, answer, seed=404, n_cases=6, min_tol=1e-12)


def test_messages_do_not_give_the_formulas_away():
    for name in ["momentum_constant_step", "best_momentum_for_lr", "predict_momentum_iterations"]:
        for answer, _ in WRONG[name]:
            msg = _fails(getattr(checks, name), answer)
            assert "sqrt" not in msg and "**" not in msg and "(1 - " not in msg, msg


def test_the_count_the_rate_gives_is_far_from_the_run():
    """The nearest wrong answer (the rate alone) misses by many steps in every case: the window
    of one step is not what separates it."""
    check = checks.CHECKS["predict_momentum_iterations"]
    for case in check.cases(seed=1, n_cases=6):
        rate_only = math.log(case["tol"]) / math.log(
            (case["kappa"] ** 0.5 - 1) / (case["kappa"] ** 0.5 + 1)
        )
        assert check.expect(case)["value"] > rate_only + 5


def test_the_best_momentum_is_the_minimum_of_the_rate():
    """The reference's closed form beats a fine grid of momenta (the theory of the rate)."""
    from optlib.experiments.rates import quadratic_rate

    check = checks.CHECKS["best_momentum_for_lr"]
    for case in check.cases(seed=2, n_cases=5):
        lam = torch.linalg.eigvalsh(torch.tensor(case["A"], dtype=torch.float64))
        mu, L = float(lam[0]), float(lam[-1])
        beta = check.expect(case)["value"]
        grid = np.linspace(0.0, 0.9999, 20_001)
        best_on_grid = quadratic_rate(case["lr"], grid, L, mu).min()
        assert quadratic_rate(case["lr"], beta, L, mu) <= best_on_grid + 1e-12


def test_constant_step_runs_agree_with_the_recursion():
    check = checks.CHECKS["momentum_constant_step"]
    for case in check.cases(seed=5, n_cases=9):
        args = (case["momentum"], case["dampening"], case["nesterov"], case["t"])
        assert math.isclose(check.expect(case)["value"], step_right(*args), rel_tol=1e-12)


# ------------------------------------------------------------------ the split the grader uses


ANSWERS = {
    "momentum_sgd_class": MomentumSGD,
    "momentum_constant_step": step_right,
    "best_momentum_for_lr": beta_right,
    "predict_momentum_iterations": iterations_right,
}


@pytest.mark.parametrize("name", NAMES)
def test_one_case_on_request(name):
    assert len(checks.CHECKS[name].cases(seed=0, n_cases=1)) == 1


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
            st.sampled_from(["trajectory", "value", "problem", "error", "modified_input"]), inner
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
@given(name=st.sampled_from(NAMES[1:]), got=JSONISH)
def test_compare_turns_any_sandbox_data_into_pass_or_assertion(name, got):
    """Whatever a sandboxed child sends back, the comparison accepts it only if it is a right
    answer, and otherwise raises AssertionError (never another exception)."""
    check = checks.CHECKS[name]
    case, expected = _first_case(name)
    try:
        check.compare(case, got, expected, "case 1")
    except AssertionError:
        return
    tolerance = 1 if name == "predict_momentum_iterations" else 1e-6 * abs(expected["value"])
    assert abs(got["value"] - expected["value"]) <= tolerance
