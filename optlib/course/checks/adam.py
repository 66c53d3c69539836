r"""Exercise checks for chapter 5 (Adam and bias correction), registered in
:data:`optlib.course.checks.CHECKS`.

Each check follows :mod:`optlib.course.checks`: seeded JSON ``cases``, a ``probe`` that runs the
learner's code, an ``expect`` that *runs* the reference optimizer (:class:`optlib.Adam` with and
without ``bias_correction``, :class:`optlib.RAdam`) and a ``compare`` that raises
:class:`AssertionError` with a message that locates the problem without giving the solution away.
Import it through ``optlib.course.checks`` (``checks.adam_first_step(...)``). Chapter 5's Adam
class is checked by :func:`optlib.course.checks.adam_class`.

* :func:`uncorrected_step_ratio`: the factor by which Adam's step *without* bias correction
  differs from Adam's at step :math:`t`, for a constant gradient,
  :math:`(1-\beta_1^t)/\sqrt{1-\beta_2^t}`;
* :func:`adam_first_step`: the norm of Adam's first step :math:`\|\theta_1 - \theta_0\|` from a
  given gradient, predicted without running Adam;
* :func:`radam_threshold`: the first step at which RAdam takes an adaptive (Adam-like) step,
  the first :math:`t` with :math:`\rho_t > 5`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ._core import (
    Case,
    Check,
    _class_cases,
    _class_compare,
    _class_run,
    _generator,
    _log_uniform,
    _number,
    _register,
    _uniform,
    _value_of,
    run_check,
)

__all__ = ["adam_class", "adam_first_step", "radam_threshold", "uncorrected_step_ratio"]


# --------------------------------------------------------------------------- an Adam class


def _adam_hyper(weight_decay: bool) -> Callable[[torch.Generator, int], dict]:
    def hyper(g: torch.Generator, i: int) -> dict:
        h = {
            "lr": round(_uniform(g, 0.005, 0.05), 4),
            "betas": (round(_uniform(g, 0.8, 0.95), 3), round(_uniform(g, 0.99, 0.999), 4)),
            "eps": 1e-8,
        }
        if weight_decay:
            h["weight_decay"] = round(_uniform(g, 0.0, 0.1), 3)
        return h

    return hyper


def _adam_cases(seed: int = 0, n_cases: int = 3, steps: int = 20, weight_decay: bool = False):
    cases = _class_cases(seed, n_cases, steps, _adam_hyper(weight_decay))
    for case in cases:  # JSON has no tuples
        case["hyper"]["betas"] = list(case["hyper"]["betas"])
    return cases


def _adam_expect(case: Case) -> dict:
    def factory(ps, betas, **h):
        return torch.optim.Adam(ps, betas=tuple(betas), foreach=False, **h)

    return {"trajectory": _class_run(factory, case)}


def _adam_probe(answer: Callable, case: Case) -> dict:
    def factory(ps, betas, **h):
        return answer(ps, betas=tuple(betas), **h)

    return {"trajectory": _class_run(factory, case)}


def _adam_hint(gaps: list[float]) -> str:
    """Where the discrepancy starts and how it evolves says where to look, not what to write."""
    first_bad = next((i for i, g in enumerate(gaps) if g > 1e-9), None)
    if first_bad is None:
        return ""
    if first_bad == 0:
        return (
            " (the difference is already there at step 1: work out by hand what each line of "
            "the update gives when t = 1 and m, v start at zero)"
        )
    if len(gaps) - first_bad < 4:
        return ""
    early = max(gaps[first_bad : first_bad + 2])
    late = gaps[-1]
    if early > 0 and late < early / 3:
        return (
            f" (the relative gap is largest in the first steps, {early:.2g}, and shrinks to "
            f"{late:.2g} by step {len(gaps)}: what matters most when t is small?)"
        )
    return ""


def _adam_success(seed: int = 0, n_cases: int = 3, steps: int = 20, weight_decay: bool = False):
    extra = " with L2 weight decay" if weight_decay else ""
    return (
        f"adam_class: OK, matches torch.optim.Adam over {steps} steps on {n_cases} seeded "
        f"problems{extra}"
    )


_register(
    Check(
        "adam_class",
        _adam_cases,
        _adam_probe,
        _adam_expect,
        _class_compare("adam_class", "torch.optim.Adam", _adam_hint),
        _adam_success,
    )
)


def adam_class(
    answer: type, *, seed: int = 0, n_cases: int = 3, steps: int = 20, weight_decay: bool = False
) -> None:
    r"""Check an Adam optimizer class with bias correction, constructed as ``answer(params,
    lr=..., betas=(β1, β2), eps=...)`` (and ``weight_decay=...`` when ``weight_decay=True``),
    against :class:`torch.optim.Adam` (Kingma & Ba, 2015):
    :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v + (1-\beta_2)
    g^2`, :math:`\theta \leftarrow \theta - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)` with
    :math:`\hat m = m/(1-\beta_1^t)`, :math:`\hat v = v/(1-\beta_2^t)`.
    """
    run_check(
        "adam_class", answer, seed=seed, n_cases=n_cases, steps=steps, weight_decay=weight_decay
    )


# --------------------------------------------------------------------------- uncorrected moments


def _constant_gradient_steps(
    make: Callable[[list[torch.Tensor]], torch.optim.Optimizer], g: float, steps: int
) -> list[float]:
    """|θ_t - θ_{t-1}| for t = 1..steps of ``make`` on one float64 coordinate with gradient g."""
    theta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = make([theta])
    theta.grad = torch.full((1,), g, dtype=torch.float64)
    sizes = []
    for _ in range(steps):
        before = theta.item()
        opt.step()
        sizes.append(abs(theta.item() - before))
    return sizes


# --------------------------------------------------------------------------- uncorrected ratio


def _ratio_cases(seed: int = 0, n_cases: int = 5, max_t: int = 2000) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        beta1 = [0.9, 0.0, round(_uniform(g, 0.5, 0.99), 3)][i % 3]
        beta2 = round(1 - _log_uniform(g, 1e-4, 1e-1), 6)
        t = int(round(_log_uniform(g, 2, max_t)))
        if i == 0:  # the first step with the default betas
            beta2, t = 0.999, 1
        # A large gradient, so that epsilon is negligible next to sqrt(v_t).
        grad = round(_log_uniform(g, 1e3, 1e5), 2) * (1 if i % 2 == 0 else -1)
        cases.append({"beta1": beta1, "beta2": beta2, "t": t, "g": grad})
    return cases


def _ratio_probe(answer: Callable, case: Case) -> dict:
    return _number(answer(case["beta1"], case["beta2"], case["t"]), "uncorrected_step_ratio")


def _ratio_expect(case: Case) -> dict:
    import optlib

    betas = (case["beta1"], case["beta2"])
    sizes = {}
    for corrected in (True, False):
        steps = _constant_gradient_steps(
            lambda p, c=corrected: optlib.Adam(p, lr=1e-3, betas=betas, bias_correction=c),
            case["g"],
            case["t"],
        )
        sizes[corrected] = steps[-1]
    return {"value": sizes[False] / sizes[True]}


def _ratio_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"uncorrected_step_ratio, {where} (beta1={case['beta1']}, beta2={case['beta2']}, "
        f"t={case['t']})"
    )
    value = _value_of(got, "uncorrected_step_ratio", where)
    exp = expected["value"]
    if math.isclose(value, exp, rel_tol=1e-6):
        return
    if math.isclose(value * exp, 1.0, rel_tol=1e-6):
        detail = "your ratio is upside down (uncorrected step / corrected step is asked)"
    elif (value - 1) * (exp - 1) < 0:
        bigger = "larger" if exp > 1 else "smaller"
        detail = (
            f"at this step the uncorrected step is {bigger} than Adam's, your ratio says the "
            "opposite: which of the two corrections wins?"
        )
    else:
        detail = "compare each moment's bias at this step with what your formula assumes"
    raise AssertionError(
        f"{where}: {detail}; measured (optlib.Adam with and without bias_correction) "
        f"{exp:.8g}, got {value:.8g}"
    )


def _ratio_success(seed: int = 0, n_cases: int = 5, max_t: int = 2000) -> str:
    return (
        f"uncorrected_step_ratio: OK, matches runs of optlib.Adam with and without "
        f"bias_correction on {n_cases} seeded settings (t up to {max_t})"
    )


_register(
    Check(
        "uncorrected_step_ratio",
        _ratio_cases,
        _ratio_probe,
        _ratio_expect,
        _ratio_compare,
        _ratio_success,
    )
)


def uncorrected_step_ratio(
    answer: Callable, *, seed: int = 0, n_cases: int = 5, max_t: int = 2000
) -> None:
    r"""Check ``answer(beta1, beta2, t)``: the ratio of the step of Adam *without* bias
    correction to the step of Adam (with it) at step :math:`t`, when every gradient so far was
    the same number :math:`g` (with :math:`|g| \gg \epsilon`), against runs of
    :class:`optlib.Adam` with ``bias_correction=False`` and ``True``.
    """
    run_check("uncorrected_step_ratio", answer, seed=seed, n_cases=n_cases, max_t=max_t)


# --------------------------------------------------------------------------- Adam's first step


def _first_cases(seed: int = 0, n_cases: int = 4) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        shape = [[7], [3, 4], [2, 3, 2], [11]][i % 4]
        n = math.prod(shape)
        scale = _log_uniform(g, 1e-2, 1e2)
        magnitudes = [scale * _log_uniform(g, 1e-2, 1e1) for _ in range(n)]
        signs = torch.randint(0, 2, (n,), generator=g).tolist()
        grad = [m if s else -m for m, s in zip(magnitudes, signs)]
        for k in torch.randperm(n, generator=g)[: 1 + i % 3].tolist():
            grad[k] = 0.0  # some coordinates get no gradient at all
        cases.append(
            {
                "shape": shape,
                "grad": grad,
                "lr": round(_log_uniform(g, 1e-4, 1e-1), 6),
                "betas": [
                    round(_uniform(g, 0.0, 0.95), 3),
                    round(1 - _log_uniform(g, 1e-4, 0.1), 6),
                ],
            }
        )
    return cases


def _first_probe(answer: Callable, case: Case) -> dict:
    grad = torch.tensor(case["grad"], dtype=torch.float64).reshape(case["shape"])
    return _number(answer(grad, case["lr"], tuple(case["betas"])), "adam_first_step")


def _first_step_norm(grad: list[float], shape: list[int], lr: float, betas, corrected: bool):
    import optlib

    theta = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    opt = optlib.Adam([theta], lr=lr, betas=tuple(betas), bias_correction=corrected)
    theta.grad = torch.tensor(grad, dtype=torch.float64).reshape(shape)
    opt.step()
    return float(theta.detach().norm())


def _first_expect(case: Case) -> dict:
    norm = _first_step_norm(case["grad"], case["shape"], case["lr"], case["betas"], True)
    return {"value": norm}


def _first_diagnosis(case: Case, value: float, exp: float) -> str:
    """Compare the prediction with other measured runs, to say what it resembles."""
    grad = case["grad"]
    scaled = [1000 * x for x in grad]
    norm_scaled = _first_step_norm(scaled, case["shape"], case["lr"], case["betas"], True)
    uncorrected = _first_step_norm(grad, case["shape"], case["lr"], case["betas"], False)
    gnorm = math.sqrt(sum(x * x for x in grad))
    if math.isclose(value, uncorrected, rel_tol=1e-3):
        return "your prediction matches Adam *without* bias correction"
    if math.isclose(value, case["lr"] * gnorm, rel_tol=1e-3):
        return (
            "your prediction is proportional to the gradient's norm, but the measured step "
            f"did not change when the gradient was multiplied by 1000 ({norm_scaled:.6g})"
        )
    if math.isclose(value, case["lr"] * math.sqrt(len(grad)), rel_tol=1e-3):
        return "some coordinates have a gradient of exactly zero: what does Adam do with them?"
    return "work out m_1, v_1 and their corrections for one coordinate first"


def _first_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"adam_first_step, {where} (gradient of shape {tuple(case['shape'])}, "
        f"lr={case['lr']:g}, betas={tuple(case['betas'])})"
    )
    value = _value_of(got, "adam_first_step", where)
    exp = expected["value"]
    if math.isclose(value, exp, rel_tol=1e-3):
        return
    raise AssertionError(
        f"{where}: {_first_diagnosis(case, value, exp)}; measured ||theta_1 - theta_0|| of "
        f"optlib.Adam: {exp:.8g}, predicted {value:.8g}"
    )


def _first_success(seed: int = 0, n_cases: int = 4) -> str:
    return (
        f"adam_first_step: OK, within 0.1% of the first step of optlib.Adam on {n_cases} "
        "seeded gradients"
    )


_register(
    Check(
        "adam_first_step", _first_cases, _first_probe, _first_expect, _first_compare, _first_success
    )
)


def adam_first_step(answer: Callable, *, seed: int = 0, n_cases: int = 4) -> None:
    r"""Check ``answer(grad, lr, betas)``: the predicted norm :math:`\|\theta_1 - \theta_0\|` of
    the first step of :class:`optlib.Adam` (bias-corrected, :math:`\epsilon = 10^{-8}`) from
    the gradient ``grad`` (a float64 tensor whose entries are 0 or much larger than
    :math:`\epsilon`), against a run, to 0.1%.
    """
    run_check("adam_first_step", answer, seed=seed, n_cases=n_cases)


# --------------------------------------------------------------------------- RAdam's threshold


def _rho_t(beta2: float, t: int) -> float:
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * t * beta2**t / (1 - beta2**t)


def _threshold_cases(seed: int = 0, n_cases: int = 4) -> list[Case]:
    g = _generator(seed)
    cases: list[Case] = []
    ranges = [(0.7, 0.8), (0.8, 0.9), (0.9, 0.999), (0.999, 0.9999)]
    while len(cases) < n_cases:
        lo, hi = ranges[len(cases) % len(ranges)]
        beta2 = round(_uniform(g, lo, hi), 5)
        # Keep away from ties, where rho_t is within rounding of the threshold 5.
        if any(abs(_rho_t(beta2, t) - 5) < 1e-6 for t in range(1, 40)):
            continue
        cases.append({"beta2": beta2})
    return cases


def _threshold_probe(answer: Callable, case: Case) -> dict:
    out = _number(answer(case["beta2"]), "radam_threshold")
    if "value" in out and not float(out["value"]).is_integer():
        out = {"problem": f"radam_threshold returned {out['value']!r}, not a whole number"}
    return out


def _threshold_expect(case: Case, max_steps: int = 200) -> dict:
    """Run optlib.RAdam on a constant gradient a: momentum steps have size lr * a exactly;
    the first step of another size is the first adaptive one."""
    import optlib

    a, lr = 0.01, 1.0
    sizes = _constant_gradient_steps(
        lambda p: optlib.RAdam(p, lr=lr, betas=(0.9, case["beta2"])), a, max_steps
    )
    for t, size in enumerate(sizes, 1):
        if not math.isclose(size, lr * a, rel_tol=1e-9):
            return {"value": t}
    raise RuntimeError(f"RAdam took no adaptive step in {max_steps} steps")  # pragma: no cover


def _threshold_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = f"radam_threshold, {where} (beta2={case['beta2']})"
    value = _value_of(got, "radam_threshold", where)
    exp = expected["value"]
    if value == exp:
        return
    if value < exp:
        detail = f"RAdam was still taking plain momentum steps at step {int(value)}"
    else:
        detail = "RAdam had switched to adaptive steps before your step"
    raise AssertionError(f"{where}: {detail} (measured with optlib.RAdam)")


def _threshold_success(seed: int = 0, n_cases: int = 4) -> str:
    return (
        f"radam_threshold: OK, matches the first adaptive step of optlib.RAdam for {n_cases} "
        "seeded beta2"
    )


_register(
    Check(
        "radam_threshold",
        _threshold_cases,
        _threshold_probe,
        _threshold_expect,
        _threshold_compare,
        _threshold_success,
    )
)


def radam_threshold(answer: Callable, *, seed: int = 0, n_cases: int = 4) -> None:
    r"""Check ``answer(beta2)``: the first step :math:`t` (counting from 1) at which RAdam takes
    an adaptive, Adam-like step instead of a plain momentum step, that is the first :math:`t`
    with :math:`\rho_t > 5`, against runs of :class:`optlib.RAdam`.
    """
    run_check("radam_threshold", answer, seed=seed, n_cases=n_cases)
