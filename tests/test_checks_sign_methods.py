"""optlib.course.checks.sign_methods (chapter 8's exercise checks): right answers pass with one
deterministic line; the known wrong answers listed below fail with a message that locates the
problem without giving the solution away; answers that delegate to the library score nothing;
the cases/probe/expect/compare split survives JSON for the sandboxed grader; and the closed form
the Lion check trusts beyond the reach of runs agrees with runs."""

from __future__ import annotations

import json
import math

import pytest
import torch

import optlib
from optlib.course import checks
from optlib.course.checks import sign_methods

NAMES = ["lion_class", "factored_second_moment", "optimizer_state_floats", "lion_constant_gradient"]


# ------------------------------------------------------------------ right answers


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m.lerp(p.grad, 1 - beta1)), alpha=-group["lr"])
                m.lerp_(p.grad, 1 - beta2)


def factored(V):
    r, c = V.mean(-1, keepdim=True), V.mean(-2, keepdim=True)
    mean = r.mean(-2, keepdim=True)
    return torch.nan_to_num(r @ c / mean, nan=0.0)


def factored_with_sums(V):  # Shazeer & Stern's form: R C / (1^T R) with row and column sums
    R, C = V.sum(-1, keepdim=True), V.sum(-2, keepdim=True)
    total = R.sum(-2, keepdim=True)
    return torch.where(total > 0, R @ C / total.clamp_min(1e-300), torch.zeros_like(V))


def floats(name, shapes):
    total = 0
    for s in shapes:
        n = math.prod(s)
        if name in ("SGD", "Lion"):
            total += n
        elif name == "Adam":
            total += 2 * n + 1
        elif len(s) < 2:  # Adafactor: a full second moment for vectors
            total += n + 1
        else:  # rows and columns of the last two dimensions
            total += math.prod(s[:-1]) + math.prod(s[:-2]) * s[-1] + 1
    return total


def closed(theta0, grad, lr, weight_decay, steps):
    s = (grad > 0) - (grad < 0)
    if weight_decay == 0:
        return theta0 - s * lr * steps
    keep = (1 - lr * weight_decay) ** steps
    return keep * theta0 - s * (1 - keep) / weight_decay


RIGHT = [
    (checks.lion_class, Lion, {}),
    (checks.lion_class, Lion, {"seed": 801, "n_cases": 5, "steps": 30, "frozen": True}),
    (checks.factored_second_moment, factored, {}),
    (checks.factored_second_moment, factored_with_sums, {"seed": 7, "n_cases": 8}),
    (checks.optimizer_state_floats, floats, {}),
    (checks.optimizer_state_floats, floats, {"seed": 3, "n_cases": 8}),
    (checks.lion_constant_gradient, closed, {}),
    (checks.lion_constant_gradient, closed, {"seed": 11, "n_cases": 10}),
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


def lion_variant(kind):
    class Wrong(Lion):
        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                lr, wd = group["lr"], group["weight_decay"]
                if kind == "defaults only":
                    lr, wd = self.defaults["lr"], self.defaults["weight_decay"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    m = self.state[p].setdefault("m", torch.zeros_like(p))
                    g = p.grad
                    if kind != "decay after":
                        p.mul_(1 - (wd if kind == "decay unscaled" else lr * wd))
                    if kind == "momentum first":
                        m.mul_(beta2).add_(g, alpha=1 - beta2)
                    b = beta2 if kind == "betas swapped" else beta1
                    c = b * m + (1 - b) * g
                    if kind == "adam-like":
                        step = c / (c.abs() + 1e-8)
                    elif kind == "sign zero is one":
                        step = torch.where(c >= 0, 1.0, -1.0).to(p.dtype)
                    else:
                        step = c.sign()
                    p.add_(step, alpha=-lr)
                    if kind == "decay after":
                        p.mul_(1 - lr * wd)
                    if kind != "momentum first":
                        b2 = beta1 if kind == "betas swapped" else beta2
                        m.mul_(b2).add_(g, alpha=1 - b2)

    return Wrong


class LionSkipsNothing(Lion):
    """Treats a missing gradient as zero: the parameter still decays."""

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
        super().step()


WRONG_LION = [
    ("momentum first", "before"),
    ("betas swapped", "roles"),
    ("decay unscaled", "decoupled"),
    ("decay after", "another point"),
    ("sign zero is one", "exactly 0"),
    ("adam-like", "differs from optlib.Lion"),
    ("defaults only", "differs from optlib.Lion"),
]


@pytest.mark.parametrize("kind, words", WRONG_LION)
def test_known_wrong_lion_classes_fail_with_a_hint(kind, words):
    message = _fails(checks.lion_class, lion_variant(kind))
    assert "differs from optlib.Lion" in message and words in message


def test_lion_that_updates_parameters_without_gradient_fails_the_hidden_case():
    checks.lion_class(LionSkipsNothing)  # the public cases give every parameter a gradient
    assert "differs" in _fails(checks.lion_class, LionSkipsNothing, frozen=True)


def test_delegating_to_the_library_scores_nothing():
    class Subclass(optlib.Lion):
        pass

    for answer in (optlib.Lion, Subclass):
        assert "scores nothing" in _fails(checks.lion_class, answer)

    def run_lion(theta0, grad, lr, weight_decay, steps):
        t = torch.tensor([theta0], dtype=torch.float64, requires_grad=True)
        opt = optlib.Lion([t], lr=lr, weight_decay=weight_decay)
        t.grad = torch.tensor([grad], dtype=torch.float64)
        for _ in range(min(steps, 10)):
            opt.step()
        return float(t.detach())

    assert "scores nothing" in _fails(checks.lion_constant_gradient, run_lion)

    def uses_rank_one(V):
        from optlib.experiments.memory_light import rank_one

        return rank_one(V)

    assert "scores nothing" in _fails(checks.factored_second_moment, uses_rank_one)

    def measures(name, shapes):
        from optlib.bench import memory

        return memory.EXPECTED[name].floats(None, [torch.zeros(s) for s in shapes])

    assert "scores nothing" in _fails(checks.optimizer_state_floats, measures)


def outer_without_normalising(V):
    return V.mean(-1, keepdim=True) @ V.mean(-2, keepdim=True)


def nan_when_zero(V):
    r, c = V.mean(-1, keepdim=True), V.mean(-2, keepdim=True)
    return r @ c / r.mean(-2, keepdim=True)


def first_two_dims(V):  # factors a stack of matrices over its first two dimensions
    if V.dim() == 2:
        return factored(V)
    return factored(V.transpose(0, -1)).transpose(0, -1)


def in_place(V):
    out = factored(V)
    V.zero_()
    return out


WRONG_FACTORED = [
    (outer_without_normalising, "differs", {}),
    (nan_when_zero, "NaN", {}),
    (lambda V: V.clone(), "differs", {}),
    (lambda V: factored(V).T.contiguous() if V.dim() == 2 else factored(V), "shape", {}),
    (first_two_dims, "differs", {}),
    (in_place, "in place", {}),
    (lambda V: None, "None", {}),
]


@pytest.mark.parametrize("answer, words, options", WRONG_FACTORED)
def test_known_wrong_factored_estimates_fail(answer, words, options):
    assert words in _fails(checks.factored_second_moment, answer, **options)


def test_rank_one_hint_when_the_input_is_rank_one():
    message = _fails(checks.factored_second_moment, outer_without_normalising)
    assert "rank one" in message or "differs" in message


def floats_without_steps(name, shapes):
    return floats(name, shapes) - (len(shapes) if name in ("Adam", "Adafactor") else 0)


def adafactor_factors_everything(name, shapes):
    if name != "Adafactor":
        return floats(name, shapes)
    return sum((s[0] + math.prod(s[1:]) + 1) if len(s) >= 2 else (s[0] + 1) for s in shapes)


def lion_like_adam(name, shapes):
    return floats("Adam" if name == "Lion" else name, shapes)


WRONG_STATE = [
    (floats_without_steps, "one number per tensor", {"n_cases": 8}),
    (adafactor_factors_everything, "expected", {}),
    (lion_like_adam, "expected", {"n_cases": 4}),
    (lambda name, shapes: 2.5, "whole number", {}),
    (lambda name, shapes: sum(math.prod(s) for s in shapes), "expected", {}),
]


@pytest.mark.parametrize("answer, words, options", WRONG_STATE)
def test_known_wrong_state_counts_fail(answer, words, options):
    assert words in _fails(checks.optimizer_state_floats, answer, **options)


def closed_unscaled_decay(theta0, grad, lr, weight_decay, steps):
    s = (grad > 0) - (grad < 0)
    keep = (1 - weight_decay) ** steps
    if weight_decay == 0:
        return theta0 - s * lr * steps
    return keep * theta0 - s * lr * (1 - keep) / weight_decay


WRONG_CLOSED = [
    (closed_unscaled_decay, "not scaled"),
    (lambda t0, g, lr, wd, T: t0 - ((g > 0) - (g < 0)) * lr * T, "ignores the weight decay"),
    (lambda t0, g, lr, wd, T: closed(t0, -g, lr, wd, T), "wrong way"),
    (lambda t0, g, lr, wd, T: -((g > 0) - (g < 0)) / wd if wd else t0, "unroll"),
    (lambda t0, g, lr, wd, T: closed(t0, g, lr, wd, T) + 1e-3 * lr, "unroll"),
]


@pytest.mark.parametrize("answer, words", WRONG_CLOSED)
def test_known_wrong_closed_forms_fail(answer, words):
    assert words in _fails(checks.lion_constant_gradient, answer)


def test_a_loop_cannot_reach_the_long_cases():
    cases = checks.CHECKS["lion_constant_gradient"].cases(seed=0)
    assert max(c["steps"] for c in cases) >= 10**7
    kinds = {c["kind"] for c in cases}
    assert {"decay", "no decay", "zero gradient", "long"} <= kinds


@pytest.mark.parametrize("T", [1, 7, 300, 5000])
def test_the_trusted_closed_form_agrees_with_runs(T):
    """The expectation beyond the reach of runs is the closed form; it agrees with optlib.Lion
    runs (float64, tolerance: a few thousand steps of rounding of |theta| ~ 1)."""
    for theta0, grad, lr, wd in [(1.5, -0.3, 1e-3, 0.5), (-2.0, 4.0, 3e-4, 0.0),
                                 (0.7, 0.0, 1e-2, 2.0), (0.1, 1e-3, 5e-3, 10.0)]:  # fmt: skip
        theta = torch.tensor([theta0], dtype=torch.float64, requires_grad=True)
        opt = optlib.Lion([theta], lr=lr, betas=(0.5, 0.9), weight_decay=wd)
        theta.grad = torch.tensor([grad], dtype=torch.float64)
        for _ in range(T):
            opt.step()
        assert float(theta.detach()) == pytest.approx(
            sign_methods._closed_form(theta0, grad, lr, wd, T), rel=1e-10, abs=1e-12
        )


def test_state_counts_of_large_shapes_use_the_rules_that_measurement_confirms():
    from optlib.bench import memory

    small = [[5], [4, 6], [3, 2, 3, 3], [2, 4, 5]]
    for name in sign_methods.STATE_OPTIMIZERS:
        rule = sum(memory.EXPECTED[name].per_tensor(tuple(s)) for s in small)
        assert sign_methods._measured_floats(name, small) == rule == floats(name, small)


# ------------------------------------------------------------------ the split the grader uses


ANSWERS = {
    "lion_class": Lion,
    "factored_second_moment": factored,
    "optimizer_state_floats": floats,
    "lion_constant_gradient": closed,
}


@pytest.mark.parametrize("name", NAMES)
def test_probe_data_survives_json_and_compares_equal(name):
    check = checks.CHECKS[name]
    for i, case in enumerate(check.cases(seed=5, n_cases=2)):
        got = json.loads(json.dumps(check.probe(ANSWERS[name], case)))
        check.compare(case, got, check.expect(case), f"case {i + 1}")


def test_checks_are_registered_and_declare_what_they_forbid():
    for name in NAMES:
        assert name in checks.CHECKS and name in checks.DELEGATION
        assert callable(getattr(checks, name))
