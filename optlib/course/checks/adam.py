r"""Exercise checks for chapter 5 (Adam and bias correction), registered in
:data:`optlib.course.checks.CHECKS`.

Each check follows :mod:`optlib.course.checks`: seeded JSON ``cases``, a ``probe`` that runs the
learner's code, an ``expect`` that *runs* the reference optimizer (:class:`optlib.Adam` with and
without ``bias_correction``, :class:`optlib.RAdam`) and a ``compare`` that raises
:class:`AssertionError` with a message that locates the problem without giving the solution away.
Import it through ``optlib.course.checks`` (``checks.reddi_drift(...)``).

* :func:`adam_class`: an Adam optimizer class against :class:`torch.optim.Adam`, optionally with
  a large :math:`\epsilon` (where adding it before or after the bias correction differs by far
  more than rounding), one param group per tensor with its own hyperparameters, and a parameter
  that has no gradient for a few steps (its step count must not advance);
* :func:`uncorrected_step_ratio`: the factor by which Adam's step *without* bias correction
  differs from Adam's at step :math:`t`, for a constant gradient,
  :math:`(1-\beta_1^t)/\sqrt{1-\beta_2^t}` (most cases at small :math:`t`, where forgetting
  either factor shows);
* :func:`reddi_drift`: the net move of Adam per period on Reddi, Kale & Kumar's problem once its
  state is periodic, predicted without running Adam;
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
    _class_loss,
    _generator,
    _grouped_notes,
    _log_uniform,
    _number,
    _register,
    _uniform,
    _value_of,
    run_check,
)

__all__ = ["adam_class", "radam_threshold", "reddi_drift", "uncorrected_step_ratio"]


# --------------------------------------------------------------------------- an Adam class

#: Large epsilons: next to gradients of order 1, adding epsilon before the bias correction (as
#: TensorFlow's Adam does) instead of after it changes the first steps by far more than rounding.
LARGE_EPS = (0.1, 1.0, 0.03)


def _adam_hyper(weight_decay: bool, extras: bool) -> Callable[[torch.Generator, int], dict]:
    def hyper(g: torch.Generator, i: int) -> dict:
        h = {
            "lr": round(_uniform(g, 0.005, 0.05), 4),
            "betas": [round(_uniform(g, 0.8, 0.95), 3), round(_uniform(g, 0.99, 0.999), 4)],
            "eps": LARGE_EPS[i % len(LARGE_EPS)] if extras else 1e-8,
        }
        if weight_decay:
            h["weight_decay"] = round(_uniform(g, 0.0, 0.1), 3)
        return h

    return hyper


def _adam_groups(g: torch.Generator, i: int) -> list[dict]:
    """Param-group overrides for the second tensor (the first keeps the constructor's)."""
    return [
        {},
        {
            "lr": round(_uniform(g, 0.005, 0.05), 4),
            "betas": [round(_uniform(g, 0.5, 0.8), 3), round(_uniform(g, 0.9, 0.99), 3)],
            "eps": [1e-8, 0.3, 1e-3][i % 3],
        },
    ]


def _adam_cases(
    seed: int = 0,
    n_cases: int = 3,
    steps: int = 20,
    weight_decay: bool = False,
    extras: bool = False,
    groups: bool = False,
    frozen: bool = False,
) -> list[Case]:
    """Seeded problems (see :func:`~optlib.course.checks._core._class_cases`). With ``groups``
    or ``frozen`` every case has two tensors: ``groups`` puts each in a param group of its own
    (the second with its own ``lr``, ``betas`` and ``eps``); ``frozen`` leaves the second
    tensor's ``.grad`` at ``None`` for a few steps in the middle of the run, after which it
    gets gradients again."""
    hyper = _adam_hyper(weight_decay, extras)
    if not (groups or frozen):
        return _class_cases(seed, n_cases, steps, hyper)
    cases = _class_cases(seed, 2 * n_cases, steps, hyper)[::2]  # the cases with two tensors
    g = _generator(20_000 + int(seed))
    for i, case in enumerate(cases):
        if groups:
            case["groups"] = _adam_groups(g, i)
        if frozen:
            start = max(1, steps // 3 + int(torch.randint(0, 3, (), generator=g)))
            case["frozen"] = {"param": 1, "from_step": start, "to_step": min(steps - 2, start + 4)}
    return cases


def _adam_run(factory: Callable, case: Case) -> list[list[list[float]]]:
    """Step ``factory(params_or_groups, **hyper)`` on the case's loss and record every parameter
    after every step; a frozen tensor's ``.grad`` is ``None`` at the steps ``k`` (from 0) with
    ``from_step <= k < to_step``."""
    params = [
        torch.tensor(prob["theta0"], dtype=torch.float64).reshape(prob["shape"]).requires_grad_()
        for prob in case["params"]
    ]
    overrides = case.get("groups")
    arg = [{"params": [p], **_tuple_betas(o)} for p, o in zip(params, overrides)] if overrides \
        else params  # fmt: skip
    opt = factory(arg, **_tuple_betas(case["hyper"]))
    frozen = case.get("frozen")
    trajectory = []
    for k in range(case["steps"]):
        for p in params:
            p.grad = None
        _class_loss(case["params"], params).backward()
        if frozen is not None and frozen["from_step"] <= k < frozen["to_step"]:
            params[frozen["param"]].grad = None
        opt.step()
        trajectory.append([p.detach().double().reshape(-1).tolist() for p in params])
    return trajectory


def _tuple_betas(h: dict) -> dict:
    """JSON has no tuples: the betas go back to one before they reach an optimizer."""
    return {k: tuple(v) if k == "betas" else v for k, v in h.items()}


def _adam_expect(case: Case) -> dict:
    def factory(ps, **h):
        return torch.optim.Adam(ps, foreach=False, **h)

    return {"trajectory": _adam_run(factory, case)}


def _adam_probe(answer: Callable, case: Case) -> dict:
    return {"trajectory": _adam_run(answer, case)}


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


_adam_inner_compare = _class_compare("adam_class", "torch.optim.Adam", _adam_hint)


def _adam_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    """:func:`~optlib.course.checks._core._class_compare`, saying which case had param groups
    and a parameter without gradient."""
    _adam_inner_compare(case, got, expected, where + _grouped_notes(case))


def _adam_success(
    seed: int = 0,
    n_cases: int = 3,
    steps: int = 20,
    weight_decay: bool = False,
    extras: bool = False,
    groups: bool = False,
    frozen: bool = False,
) -> str:
    extra = [
        text
        for flag, text in [
            (weight_decay, "L2 weight decay"),
            (extras, "large eps"),
            (groups, "a param group per tensor"),
            (frozen, "a parameter without gradient for a few steps"),
        ]
        if flag
    ]
    return (
        f"adam_class: OK, matches torch.optim.Adam over {steps} steps on {n_cases} seeded "
        f"problems" + (f" ({', '.join(extra)})" if extra else "")
    )


_register(Check("adam_class", _adam_cases, _adam_probe, _adam_expect, _adam_compare, _adam_success))


def adam_class(
    answer: type,
    *,
    seed: int = 0,
    n_cases: int = 3,
    steps: int = 20,
    weight_decay: bool = False,
    extras: bool = False,
    groups: bool = False,
    frozen: bool = False,
) -> None:
    r"""Check an Adam optimizer class with bias correction, constructed as ``answer(params,
    lr=..., betas=(β1, β2), eps=...)`` (and ``weight_decay=...`` when ``weight_decay=True``),
    against :class:`torch.optim.Adam` (Kingma & Ba, 2015):
    :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v + (1-\beta_2)
    g^2`, :math:`\theta \leftarrow \theta - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)` with
    :math:`\hat m = m/(1-\beta_1^t)`, :math:`\hat v = v/(1-\beta_2^t)`. ``extras`` uses large
    :math:`\epsilon`; ``groups`` gives each tensor its own param group (own ``lr``, ``betas``,
    ``eps``); ``frozen`` takes one tensor's gradient away for a few steps (it is skipped, and its
    step count :math:`t` does not advance).
    """
    run_check(
        "adam_class", answer, seed=seed, n_cases=n_cases, steps=steps, weight_decay=weight_decay,
        extras=extras, groups=groups, frozen=frozen,
    )  # fmt: skip


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
    """Case 1 is the first step with the default betas; then mostly small t (2 to 7, with
    beta1 >= 0.6), where the first moment's factor 1 - beta1^t is far from 1, and some large t
    (up to ``max_t``), where the second moment's factor dominates."""
    g = _generator(seed)
    kinds = ["first", "small", "small", "large", "small"]
    cases = []
    for i in range(n_cases):
        kind = kinds[i] if i < len(kinds) else ("small", "large")[i % 2]
        beta2 = round(1 - _log_uniform(g, 1e-4, 1e-1), 6)
        if kind == "first":
            beta1, beta2, t = 0.9, 0.999, 1
        elif kind == "small":
            beta1 = round(_uniform(g, 0.6, 0.95), 3)
            t = 2 + int(torch.randint(0, 6, (), generator=g))
        else:
            beta1 = [0.9, 0.0, round(_uniform(g, 0.5, 0.99), 3)][(i // 2) % 3]
            t = int(round(_log_uniform(g, 20, max(max_t, 21))))
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


# --------------------------------------------------------------------------- Reddi's drift

_REDDI_PERIODS = 200  # beta2 <= 0.9: beta2^600 < 1e-27, the state is periodic to rounding


def _reddi_cases(seed: int = 0, n_cases: int = 4) -> list[Case]:
    """Seeded (C, beta2): Theorem 1's beta2 = 1/(1 + C^2), a long memory (beta2 near 0.9, where
    Adam moves towards the optimum), and values in between."""
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        C = round(_uniform(g, 2.5, 8.0), 3)
        kind = i % 4
        if kind == 0:
            beta2 = round(1 / (1 + C**2), 6)
        elif kind == 1:
            beta2 = round(_uniform(g, 0.8, 0.9), 4)
        else:
            beta2 = round(_log_uniform(g, 0.01, 0.6), 5)
        cases.append({"C": C, "beta2": beta2})
    return cases


def _reddi_probe(answer: Callable, case: Case) -> dict:
    return _number(answer(case["C"], case["beta2"]), "reddi_drift")


def _reddi_run(C: float, beta2: float, amsgrad: bool = False, uncorrected: bool = False) -> float:
    """Run optlib.Adam (lr = 1, beta1 = 0, eps = 0) on the periodic gradients C, -1, -1, ...
    without projection; the net move of x over the last period."""
    import optlib

    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = optlib.Adam([x], lr=1.0, betas=(0.0, beta2), eps=0.0, amsgrad=amsgrad,
                      bias_correction=not uncorrected)  # fmt: skip
    start = 0.0
    for t in range(1, 3 * _REDDI_PERIODS + 1):
        if t == 3 * _REDDI_PERIODS - 2:
            start = x.item()
        x.grad = torch.full_like(x, C if t % 3 == 1 else -1.0)
        opt.step()
    return x.item() - start


def _reddi_expect(case: Case) -> dict:
    return {"value": _reddi_run(case["C"], case["beta2"])}


def _reddi_wrong(C: float, beta2: float) -> dict[str, float]:
    """Plausible mistakes, named by what they assume (the diagnosis says which one, not why)."""
    mean_sq = (C**2 + 2) / 3
    before = {}  # each step divided by v before that step's gradient entered it
    v = [0.0, 0.0, 0.0]  # periodic v after the C step and after each -1 step
    s3 = 1 - beta2**3
    v[0] = (1 - beta2) * (C**2 + beta2 + beta2**2) / s3
    v[1] = (1 - beta2) * (1 + beta2 * C**2 + beta2**2) / s3
    v[2] = (1 - beta2) * (1 + beta2 + beta2**2 * C**2) / s3
    before["v of the previous step"] = -C / math.sqrt(v[2]) + 1 / math.sqrt(v[0]) + \
        1 / math.sqrt(v[1])  # fmt: skip
    return {
        "one average for the whole period": (2 - C) / math.sqrt(mean_sq),
        **before,
        "moves of the period added without the square root": -C / v[0] + 1 / v[1] + 1 / v[2],
    }


def _reddi_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = f"reddi_drift, {where} (C={case['C']}, beta2={case['beta2']})"
    value = _value_of(got, "reddi_drift", where)
    exp = expected["value"]
    if math.isclose(value, exp, rel_tol=1e-6, abs_tol=1e-9):
        return
    if math.isclose(value, -exp, rel_tol=1e-6, abs_tol=1e-9):
        detail = "right size, wrong direction: positive means x grows (away from x* = -1)"
    else:
        wrong = _reddi_wrong(case["C"], case["beta2"])
        if any(
            math.isclose(value, w, rel_tol=1e-6)
            for w in (wrong["one average for the whole period"],)
        ):
            detail = (
                "you divided every step of the period by the same number; with this beta2, "
                "how much does v change between the three steps?"
            )
        elif math.isclose(value, wrong["v of the previous step"], rel_tol=1e-6):
            detail = "which v divides the step at t: the one before g_t arrives, or after?"
        elif (value > 0) != (exp > 0):
            detail = "the measured drift goes the other way: towards the optimum or away from it?"
        else:
            detail = "work out the three values that v_t cycles through once it is periodic"
    raise AssertionError(
        f"{where}: {detail}; measured (optlib.Adam, lr=1, eps=0, {_REDDI_PERIODS} periods) "
        f"{exp:+.8g} per period, predicted {value:+.8g}"
    )


def _reddi_success(seed: int = 0, n_cases: int = 4) -> str:
    return (
        f"reddi_drift: OK, matches the drift per period of optlib.Adam (beta1 = 0, lr = 1) on "
        f"{n_cases} seeded (C, beta2) of Reddi et al.'s problem"
    )


_register(
    Check("reddi_drift", _reddi_cases, _reddi_probe, _reddi_expect, _reddi_compare,
          _reddi_success)
)  # fmt: skip


def reddi_drift(answer: Callable, *, seed: int = 0, n_cases: int = 4) -> None:
    r"""Check ``answer(C, beta2)``: the net move of :math:`x`, divided by :math:`\eta`, over one
    period of Reddi, Kale & Kumar's gradients :math:`C, -1, -1` (2018), once the state of Adam
    with :math:`\beta_1 = 0`, :math:`\epsilon = 0`, a constant :math:`\eta` and no projection
    has become periodic
    (positive: :math:`x` grows, away from :math:`x^\star = -1`). The prediction must match a run
    of :class:`optlib.Adam` to a relative :math:`10^{-6}`: in the periodic state
    :math:`v_t` cycles through three values
    :math:`v = (1-\beta_2)\,\frac{g_a^2 + \beta_2 g_b^2 + \beta_2^2 g_c^2}{1-\beta_2^3}` and the
    bias corrections are 1.
    """
    run_check("reddi_drift", answer, seed=seed, n_cases=n_cases)


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
