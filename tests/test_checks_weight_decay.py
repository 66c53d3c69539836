"""optlib.course.checks.weight_decay (chapter 6): right answers pass with one line, plausible wrong
answers fail with a message that locates the problem without giving the solution away, and the
probe/expect/compare split survives the sandbox's JSON."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from optlib.course import checks
from optlib.course.checks import weight_decay as wd_checks

# ----------------------------------------------------------------------------- right answers


def sgd_right(theta, grad, lr, l2):
    return (1 - lr * l2) * theta - lr * grad


def rate_right(lr, weight_decay, sigma, decoupled):
    return lr * weight_decay if decoupled else lr * weight_decay / sigma


class AdamWRight(torch.optim.Adam):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=0.0)
        self.decay = weight_decay

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.mul_(1 - group["lr"] * self.decay)
        return super().step(closure)


NO_DECAY = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.BatchNorm1d)


def groups_right(model, weight_decay):
    exempt = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, NO_DECAY) or name.endswith("bias"):
                exempt.add(id(p))
    decay = [p for p in model.parameters() if id(p) not in exempt]
    keep = [p for p in model.parameters() if id(p) in exempt]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


RIGHT = [
    (wd_checks.sgd_decoupled_step, sgd_right, {}),
    (wd_checks.sgd_decoupled_step, sgd_right, {"steps": 30, "n_cases": 6}),
    (wd_checks.predict_decay_rate, rate_right, {}),
    (wd_checks.adamw_class, AdamWRight, {}),
    (wd_checks.no_decay_groups, groups_right, {}),
    (wd_checks.no_decay_groups, groups_right, {"exotic": True, "n_cases": 6}),
]


@pytest.mark.parametrize("check, answer, options", RIGHT)
def test_right_answers_pass_with_one_deterministic_line(check, answer, options, capsys):
    check(answer, **options)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and ": OK" in out
    check(answer, **options)
    assert capsys.readouterr().out == out


def test_checks_are_registered_and_reachable_through_optlib_checks():
    for name in ("sgd_decoupled_step", "predict_decay_rate", "adamw_class", "no_decay_groups"):
        assert name in checks.CHECKS
        assert getattr(checks, name) is getattr(wd_checks, name)


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


# ----------------------------------------------------------------------------- q1


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda th, g, lr, l2: th - lr * g, "never shrunk"),
        (lambda th, g, lr, l2: (1 - l2) * th - lr * g, "learning rate enter"),
        (lambda th, g, lr, l2: (1 - lr * l2) * th - lr * (g + l2 * th), "twice"),
    ],
)
def test_sgd_common_mistakes_are_named(answer, words):
    msg = _fails(wd_checks.sgd_decoupled_step, answer)
    assert msg.startswith("sgd_decoupled_step, case 1 of 4") and words in msg
    assert "1 - lr" not in msg and "lr * l2" not in msg


def test_sgd_in_place_and_missing_return_are_reported():
    def in_place(theta, grad, lr, l2):
        return theta.mul_(1 - lr * l2).sub_(lr * grad)

    assert "in place" in _fails(wd_checks.sgd_decoupled_step, in_place)
    assert "None" in _fails(wd_checks.sgd_decoupled_step, lambda *a: None)


# ----------------------------------------------------------------------------- q2


def test_rate_prediction_without_sigma_fails_with_the_measured_rate():
    msg = _fails(wd_checks.predict_decay_rate, lambda lr, wd, sigma, dec: lr * wd)
    assert "Adam + L2" in msg and "the run shrank the mean weight by" in msg
    assert "sigma" in msg  # the case says which sigma, not the formula


def test_rate_prediction_for_adamw_must_not_depend_on_sigma():
    msg = _fails(wd_checks.predict_decay_rate, lambda lr, wd, sigma, dec: lr * wd / sigma)
    assert "AdamW (decoupled)" in msg


def test_rate_expectation_matches_the_theory_within_the_tolerance():
    check = checks.CHECKS["predict_decay_rate"]
    for case in check.cases(seed=11, n_cases=4):
        measured = check.expect(case)["value"]
        predicted = rate_right(case["lr"], case["weight_decay"], case["sigma"], case["decoupled"])
        assert abs(predicted / measured - 1) < 0.08, (case, measured, predicted)


# ----------------------------------------------------------------------------- q3


def test_adamw_as_adam_l2_is_explained():
    def adam_l2(params, **hyper):
        return torch.optim.Adam(params, **hyper)

    msg = _fails(wd_checks.adamw_class, adam_l2)
    assert "torch.optim.AdamW" in msg and "L2 penalty" in msg


def test_adamw_decay_not_scaled_by_lr_is_explained():
    class Unscaled(AdamWRight):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.mul_(1 - self.decay)
            return torch.optim.Adam.step(self, closure)

    assert "learning rate" in _fails(wd_checks.adamw_class, Unscaled)


def test_adamw_decay_after_the_step_is_explained():
    class After(AdamWRight):
        @torch.no_grad()
        def step(self, closure=None):
            torch.optim.Adam.step(self, closure)
            for group in self.param_groups:
                for p in group["params"]:
                    p.mul_(1 - group["lr"] * self.decay)

    assert "order matters" in _fails(wd_checks.adamw_class, After)


# ----------------------------------------------------------------------------- q4


def test_decaying_everything_names_an_exempt_parameter():
    msg = _fails(
        wd_checks.no_decay_groups, lambda m, wd: [{"params": m.parameters(), "weight_decay": wd}]
    )
    assert "gets weight_decay" in msg and "expected 0" in msg


def test_the_two_dimensional_rule_fails_on_the_embedding():
    def by_dim(model, wd):
        ps = list(model.parameters())
        return [
            {"params": [p for p in ps if p.dim() >= 2], "weight_decay": wd},
            {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0},
        ]

    assert "'embed.weight'" in _fails(wd_checks.no_decay_groups, by_dim)


def test_group_structure_problems_are_reported():
    def twice(model, wd):
        ps = list(model.parameters())
        return [{"params": ps, "weight_decay": wd}, {"params": ps[:1], "weight_decay": 0.0}]

    def missing(model, wd):
        return [{"params": list(model.parameters())[1:], "weight_decay": 0.0}]

    def no_key(model, wd):
        return [{"params": list(model.parameters())}]

    assert "more than one place" in _fails(wd_checks.no_decay_groups, twice)
    assert "in no group" in _fails(wd_checks.no_decay_groups, missing)
    assert "no 'weight_decay'" in _fails(wd_checks.no_decay_groups, no_key)


def test_tied_head_counts_as_embedding_in_the_exotic_cases():
    def decay_tied(model, wd):
        groups = groups_right(model, wd)
        if model.head.weight is model.embed.weight:  # wrongly decays the tied tensor
            groups[1]["params"] = [p for p in groups[1]["params"] if p is not model.embed.weight]
            groups[0]["params"].append(model.embed.weight)
        return groups

    assert "'embed.weight'" in _fails(wd_checks.no_decay_groups, decay_tied, exotic=True)


# ----------------------------------------------------------------------------- the split


ANSWERS = {
    "sgd_decoupled_step": sgd_right,
    "predict_decay_rate": rate_right,
    "adamw_class": AdamWRight,
    "no_decay_groups": groups_right,
}


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_cases_are_json_and_seeded(name):
    check = checks.CHECKS[name]
    a, b, c = check.cases(seed=3), check.cases(seed=3), check.cases(seed=4)
    assert a == b and a != c
    assert json.loads(json.dumps(a)) == a


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_probe_data_survives_json_and_compares_equal(name):
    check = checks.CHECKS[name]
    for i, case in enumerate(check.cases(seed=5, n_cases=2)):
        got = json.loads(json.dumps(check.probe(ANSWERS[name], case)))
        expected = json.loads(json.dumps(check.expect(case)))
        check.compare(case, got, expected, f"case {i + 1}")


@pytest.mark.parametrize("name", sorted(ANSWERS))
@pytest.mark.parametrize(
    "got", [None, {}, {"error": "ValueError: x"}, {"trajectory": "x"}, {"assigned": []}, [1, 2]]
)
def test_compare_turns_junk_into_assertion_errors(name, got):
    check = checks.CHECKS[name]
    case = check.cases(seed=0, n_cases=1)[0]
    with pytest.raises(AssertionError):
        check.compare(case, got, check.expect(case), "case 1")
