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
    (wd_checks.sgd_decoupled_step, sgd_right, {"steps": 30, "n_cases": 6, "edge": True}),
    (wd_checks.predict_decay_rate, rate_right, {}),
    (wd_checks.adamw_class, AdamWRight, {}),
    (wd_checks.adamw_class, AdamWRight, {"frozen": True}),
    (wd_checks.adamw_class, AdamWRight, {"frozen": True, "groups": True, "n_cases": 4}),
    (wd_checks.no_decay_groups, groups_right, {}),
    (wd_checks.no_decay_groups, groups_right, {"head_first": True, "n_cases": 6}),
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

    assert "'tok.weight'" in _fails(wd_checks.no_decay_groups, by_dim)


NAME_RULES = {  # rules that read a parameter's name instead of its module's type
    "norm/bias/embed in the name": lambda n, p: (
        not ("norm" in n or n.endswith("bias") or "embed" in n)
    ),
    "two dimensions, not an embedding by name": lambda n, p: p.dim() >= 2 and "embed" not in n,
    "two dimensions, not the first parameter": lambda n, p: (
        p.dim() >= 2 and not n.startswith(("embed", "tok"))
    ),
}


@pytest.mark.parametrize("rule", sorted(NAME_RULES))
def test_name_heuristics_fail_the_public_cases(rule):
    decide = NAME_RULES[rule]

    def by_name(model, wd):
        named = list(model.named_parameters())
        return [
            {"params": [p for n, p in named if decide(n, p)], "weight_decay": wd},
            {"params": [p for n, p in named if not decide(n, p)], "weight_decay": 0.0},
        ]

    if rule == "two dimensions, not the first parameter":  # reads the public names: passes them
        by_name(wd_checks.build_model(wd_checks._group_cases()[0]), 0.1)
        with pytest.raises(AssertionError, match="'out.weight'"):
            wd_checks.no_decay_groups(by_name, seed=604, n_cases=6, head_first=True)
    else:
        _fails(wd_checks.no_decay_groups, by_name)


def test_public_cases_cover_every_layer_kind_and_a_tied_head():
    cases = wd_checks._group_cases()
    kinds = {k for case in cases for k in case["layers"]}
    assert kinds == set(wd_checks._LAYERS)
    assert any(case["tied"] for case in cases)
    for case in cases:
        names = [n for n, _ in wd_checks.build_model(case).named_parameters()]
        assert not any(word in n for n in names for word in ("norm", "embed", "conv", "linear"))


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


def test_tied_head_counts_as_embedding_in_the_public_cases():
    def decay_tied(model, wd):
        groups = groups_right(model, wd)
        if model.out.weight is model.tok.weight:  # wrongly decays the tied tensor
            groups[1]["params"] = [p for p in groups[1]["params"] if p is not model.tok.weight]
            groups[0]["params"].append(model.tok.weight)
        return groups

    assert "'tok.weight'" in _fails(wd_checks.no_decay_groups, decay_tied)


def test_a_rule_on_the_first_name_of_a_tied_tensor_fails_when_the_head_comes_first():
    def first_owner(model, wd):  # the owner that named_modules meets first decides
        owner = {}
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                owner.setdefault(id(p), (module, name))
        keep = {i for i, (m, n) in owner.items() if isinstance(m, NO_DECAY) or n.endswith("bias")}
        ps = list(model.parameters())
        return [
            {"params": [p for p in ps if id(p) not in keep], "weight_decay": wd},
            {"params": [p for p in ps if id(p) in keep], "weight_decay": 0.0},
        ]

    wd_checks.no_decay_groups(first_owner)  # the embedding comes first in the public cases
    msg = _fails(wd_checks.no_decay_groups, first_owner, seed=604, n_cases=6, head_first=True)
    assert "'out.weight'" in msg


# ----------------------------------------------------------------------------- q3 behaviours


class AdamWDefaultsLR(AdamWRight):
    """Decays with the constructor's lr instead of each group's."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.mul_(1 - self.defaults["lr"] * self.decay)
        return torch.optim.Adam.step(self, closure)


class AdamWDecaysFrozen(AdamWRight):
    """Decays parameters without a gradient too."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.mul_(1 - group["lr"] * self.decay)
        return torch.optim.Adam.step(self, closure)


def test_group_learning_rates_are_tested_only_where_the_hidden_test_asks():
    wd_checks.adamw_class(AdamWDefaultsLR, frozen=True)  # one group: no difference
    _fails(wd_checks.adamw_class, AdamWDefaultsLR, seed=603, n_cases=4, frozen=True, groups=True)


def test_a_parameter_without_gradient_must_not_decay():
    wd_checks.adamw_class(AdamWDecaysFrozen)
    assert "differs from torch.optim.AdamW" in _fails(
        wd_checks.adamw_class, AdamWDecaysFrozen, frozen=True
    )


def test_sgd_edge_cases_catch_a_step_that_assumes_a_vector():
    def row_by_row(theta, grad, lr, l2):  # iterates over the first dimension: no 0-d theta
        return torch.stack([(1 - lr * l2) * t - lr * g for t, g in zip(theta, grad)])

    wd_checks.sgd_decoupled_step(row_by_row)  # right on the public 1-d and 2-d cases
    with pytest.raises(TypeError, match="0-d"):  # the learner's own error, in their kernel
        wd_checks.sgd_decoupled_step(row_by_row, seed=601, n_cases=6, edge=True)


# ----------------------------------------------------------------------------- delegation, None


class AdamWByTorch(torch.optim.AdamW):
    pass


def test_delegating_answers_score_nothing_with_the_reason():
    from optlib.optim import param_groups

    cases = [
        (wd_checks.adamw_class, AdamWByTorch, "torch.optim.AdamW"),
        (wd_checks.no_decay_groups, lambda m, wd: param_groups.decay_groups(m, wd),
         "optlib.optim.param_groups"),
        (wd_checks.sgd_decoupled_step, lambda t, g, lr, l2: _sgd_by_optlib(t, g, lr, l2),
         "optlib.SGD"),
    ]  # fmt: skip
    for check, answer, name in cases:
        with pytest.raises(AssertionError, match="scores nothing") as err:
            check(answer)
        assert name in str(err.value)


def _sgd_by_optlib(theta, grad, lr, l2):
    import optlib

    p = theta.clone().requires_grad_()
    p.grad = grad.clone()
    optlib.SGD([p], lr=lr, weight_decay=l2).step()
    return p.detach()


@pytest.mark.parametrize("check, label", [
    (wd_checks.sgd_decoupled_step, "sgd_decoupled_step"),
    (wd_checks.predict_decay_rate, "predict_decay_rate"),
    (wd_checks.adamw_class, "AdamW"),
    (wd_checks.no_decay_groups, "param_groups"),
])  # fmt: skip
def test_an_answer_never_run_says_which_cell_to_run(check, label):
    # how otter calls a test: with the learner's name, bound to None when it is undefined
    namespace = {"check": check}
    exec(f"def test_q({label}):\n    check({label})\n", namespace)
    with pytest.raises(AssertionError) as err:
        namespace["test_q"](None)
    assert f"run the cell that defines `{label}`" in str(err.value)
    assert "NoneType" not in str(err.value) and "TypeError" not in str(err.value)


# ----------------------------------------------------------------------------- the split


ANSWERS = {
    "sgd_decoupled_step": sgd_right,
    "predict_decay_rate": rate_right,
    "adamw_class": AdamWRight,
    "no_decay_groups": groups_right,
}


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
