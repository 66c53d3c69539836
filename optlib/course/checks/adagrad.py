r"""Exercise checks for chapter 4 (AdaGrad and RMSProp), registered in
:data:`optlib.course.checks.CHECKS`.

Each check follows :mod:`optlib.course.checks`: seeded JSON ``cases``, a ``probe`` that runs the
learner's code, an ``expect`` that runs the reference (``torch.optim.Adagrad``,
:class:`optlib.Adagrad`, :class:`optlib.RMSprop`, an exact eigenvalue computation) and a
``compare`` that raises :class:`AssertionError` with a message that locates the problem without
giving the solution away. Import it through ``optlib.course.checks``
(``checks.adagrad_class(...)``).

* :func:`adagrad_class`: an AdaGrad optimizer class, against :class:`torch.optim.Adagrad`, with
  weight decay, an initial accumulator and a large :math:`\epsilon`, two param groups and a
  parameter that loses its gradient;
* :func:`preconditioned_kappa`: the condition number of
  :math:`D^{-1/2} H D^{-1/2}`, the Hessian that a diagonally preconditioned step sees;
* :func:`adagrad_effective_lr`: a prediction of the effective learning rate
  :math:`\eta_t = |\Delta\theta_t| / |g|` after :math:`t` steps of a constant gradient :math:`g`,
  against runs of :class:`optlib.Adagrad`;
* :func:`rmsprop_recovery_steps`: a prediction of how many steps RMSProp's effective learning
  rate needs to recover a given fraction of its new level after the gradient scale drops,
  against runs of :class:`optlib.RMSprop`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ._core import (
    Case,
    Check,
    _generator,
    _grouped_cases,
    _grouped_compare,
    _grouped_probe,
    _grouped_run,
    _log_uniform,
    _number,
    _problem_of,
    _raise_if_error,
    _register,
    _spd,
    _tensor,
    _uniform,
    _value_of,
    no_delegation,
    run_check,
)

__all__ = [
    "adagrad_class",
    "adagrad_effective_lr",
    "preconditioned_kappa",
    "rmsprop_recovery_steps",
]

ADAGRAD = ("torch.optim.Adagrad", "torch.optim.adagrad", "optlib.Adagrad", "optlib.optim.adagrad")
RMSPROP = ("torch.optim.RMSprop", "torch.optim.rmsprop", "optlib.RMSprop", "optlib.optim.rmsprop")
UPDATE_PIECES = ("optlib.optim._moments",)

# --------------------------------------------------------------------------- an AdaGrad class



def _adagrad_hyper(extras: bool) -> Callable[[torch.Generator, int], dict]:
    def hyper(g: torch.Generator, i: int) -> dict:
        h: dict[str, Any] = {"lr": round(_uniform(g, 0.05, 0.5), 4), "eps": 1e-10}
        if extras:
            h["initial_accumulator_value"] = round(_uniform(g, 0.1, 1.0), 3) if i % 4 else 0.0
            h["weight_decay"] = round(_uniform(g, 0.0, 0.1), 3)
            h["eps"] = [1e-10, 1e-3, 0.1][i % 3]
        return h

    return hyper


def _adagrad_groups(g: torch.Generator, i: int) -> list[dict]:
    second = {
        "lr": round(_uniform(g, 0.05, 0.5), 4),
        "eps": [1e-3, 0.1, 1e-10][i % 3],
        "weight_decay": round(_uniform(g, 0.01, 0.1), 3),
    }  # not initial_accumulator_value: torch.optim.Adagrad reads it from its constructor only
    return [{}, second]


def _adagrad_cases(
    seed: int = 0,
    n_cases: int = 3,
    steps: int = 20,
    extras: bool = False,
    groups: bool = False,
    frozen: bool = False,
):
    return _grouped_cases(
        seed,
        n_cases,
        steps,
        _adagrad_hyper(extras),
        groups=_adagrad_groups if groups else None,
        frozen=frozen,
    )


def _adagrad_expect(case: Case) -> dict:
    def factory(ps, **h):
        return torch.optim.Adagrad(ps, foreach=False, **h)

    return {"trajectory": _grouped_run(factory, case)}


def _adagrad_hint(gaps: list[float]) -> str:
    """Where the discrepancy starts says where to look, not what to write."""
    first_bad = next((i for i, g in enumerate(gaps) if g > 1e-9), None)
    if first_bad == 0:
        return (
            " (already at step 1: work out by hand what the update gives for t = 1, starting "
            "from the initial accumulator)"
        )
    if first_bad == 1:
        return (
            " (step 1 agrees, step 2 does not: look at what the accumulator holds after two "
            "gradients)"
        )
    return ""


def _adagrad_success(
    seed: int = 0,
    n_cases: int = 3,
    steps: int = 20,
    extras: bool = False,
    groups: bool = False,
    frozen: bool = False,
):
    extra = [
        text
        for on, text in [
            (extras, "initial accumulator, weight decay and larger eps"),
            (groups, "two param groups"),
            (frozen, "a parameter without gradient"),
        ]
        if on
    ]
    return (
        f"adagrad_class: OK, matches torch.optim.Adagrad over {steps} steps on {n_cases} seeded "
        "problems" + (f" ({', '.join(extra)})" if extra else "")
    )


_register(
    Check(
        "adagrad_class",
        _adagrad_cases,
        _grouped_probe,
        _adagrad_expect,
        _grouped_compare("adagrad_class", "torch.optim.Adagrad", _adagrad_hint),
        _adagrad_success,
    )
)
no_delegation("adagrad_class", "AdaGrad", *ADAGRAD, *UPDATE_PIECES)


def adagrad_class(
    answer: type,
    *,
    seed: int = 0,
    n_cases: int = 3,
    steps: int = 20,
    extras: bool = False,
    groups: bool = False,
    frozen: bool = False,
) -> None:
    r"""Check an AdaGrad optimizer class, constructed as ``answer(params, lr=..., eps=...)``
    (and ``initial_accumulator_value=...``, ``weight_decay=...`` when ``extras=True``), whose
    ``step()`` reads ``p.grad``, against :class:`torch.optim.Adagrad` (Duchi et al., 2011):
    :math:`G \leftarrow G + g^2`, :math:`\theta \leftarrow \theta - \eta\, g / (\sqrt G +
    \epsilon)` with :math:`G_0` the initial accumulator value and :math:`g` including the L2
    term :math:`\lambda\theta`.

    ``groups=True`` puts each of two parameters in a param group of its own, the second with its
    own ``lr``, ``eps`` and ``weight_decay``; ``frozen=True`` sets
    the second parameter's ``.grad`` to ``None`` half-way through (it must not move from then on,
    weight decay included).
    """
    run_check(
        "adagrad_class",
        answer,
        seed=seed,
        n_cases=n_cases,
        steps=steps,
        extras=extras,
        groups=groups,
        frozen=frozen,
    )


# --------------------------------------------------------------------------- preconditioned kappa


def _kappa_cases(seed: int = 0, n_cases: int = 4, max_dim: int = 5) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        n = 2 + i % max(1, max_dim - 1)
        H = _spd(g, n, _log_uniform(g, 0.01, 1.0), _log_uniform(g, 2.0, 100.0))
        if i % 3 == 1:  # an axis-aligned, badly scaled Hessian: D H0 D
            s = torch.tensor([_log_uniform(g, 0.1, 10.0) for _ in range(n)], dtype=torch.float64)
            H = s[:, None] * torch.diag(torch.diag(H)) * s[None, :] + 0.05 * H
        kind = ["random", "jacobi", "random", "jacobi"][i % 4]
        if kind == "jacobi":
            d = torch.diag(H).clone()
        else:
            d = torch.tensor([_log_uniform(g, 0.05, 20.0) for _ in range(n)], dtype=torch.float64)
        cases.append({"H": ((H + H.T) / 2).tolist(), "d": d.tolist()})
    return cases


def _kappa_probe(answer: Callable, case: Case) -> dict:
    H, d = _tensor(case["H"]), _tensor(case["d"])
    H_in, d_in = H.clone(), d.clone()
    out = _number(answer(H, d), "preconditioned_kappa")
    if not torch.equal(H, H_in) or not torch.equal(d, d_in):
        out["modified_input"] = True
    return out


def _eig_ratio(M: torch.Tensor) -> float:
    lam = torch.linalg.eigvalsh((M + M.T) / 2)
    return float(lam[-1] / lam[0])


def _kappa_expect(case: Case) -> dict:
    H, d = _tensor(case["H"]), _tensor(case["d"])
    s = d.rsqrt()
    return {"value": _eig_ratio(s[:, None] * H * s[None, :])}


def _kappa_diagnosis(case: Case, value: float) -> str:
    """Name a recognisable wrong quantity, if the answer is one, without saying the right one."""
    H, d = _tensor(case["H"]), _tensor(case["d"])

    def close(x: float) -> bool:
        return math.isclose(value, x, rel_tol=1e-6)

    inv = 1 / d
    if close(_eig_ratio(H)):
        return " (that is the condition number of H itself, as if there were no preconditioner)"
    if close(_eig_ratio(inv[:, None] * H * inv[None, :])):
        return " (that is what scaling both sides of H by D itself gives: check the power of D)"
    M = inv[:, None] * H
    if close(float(torch.linalg.cond(M))):
        return (
            " (that is a ratio of singular values of a non-symmetric matrix; the convergence "
            "of the preconditioned step depends on eigenvalues)"
        )
    return ""


def _kappa_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    n = len(case["d"])
    where = f"preconditioned_kappa, {where} ({n}x{n} H)"
    _raise_if_error(got, "preconditioned_kappa", where)
    if not isinstance(got, dict) or "value" not in got:
        raise AssertionError(f"{where}: {_problem_of(got)}")
    if got.get("modified_input"):
        raise AssertionError(f"{where}: preconditioned_kappa changed its input H or d in place")
    value = got.get("value")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AssertionError(f"{where}: expected a finite condition number, got {value!r}")
    exp = expected["value"]
    if math.isclose(value, exp, rel_tol=1e-6):
        return
    raise AssertionError(
        f"{where}: expected {exp:.8g}, got {value:.8g}{_kappa_diagnosis(case, value)}"
    )


def _kappa_success(seed: int = 0, n_cases: int = 4, max_dim: int = 5) -> str:
    return (
        f"preconditioned_kappa: OK, matches the eigenvalues of {n_cases} seeded preconditioned "
        f"Hessians (dimension 2 to {max(2, min(max_dim, n_cases + 1))}, relative error < 1e-6)"
    )


_register(
    Check(
        "preconditioned_kappa",
        _kappa_cases,
        _kappa_probe,
        _kappa_expect,
        _kappa_compare,
        _kappa_success,
    )
)


def preconditioned_kappa(answer: Callable, *, seed: int = 0, n_cases: int = 4, max_dim: int = 5):
    r"""Check ``answer(H, d)``: the condition number :math:`\lambda_{\max}/\lambda_{\min}` of
    :math:`D^{-1/2} H D^{-1/2}`, :math:`D = \operatorname{diag}(d)`, the Hessian that the
    preconditioned step :math:`\theta \leftarrow \theta - \eta D^{-1}\nabla f` sees. ``H`` is a
    symmetric positive definite float64 matrix, ``d`` a float64 vector of positive numbers.
    """
    run_check("preconditioned_kappa", answer, seed=seed, n_cases=n_cases, max_dim=max_dim)


# --------------------------------------------------------------------------- effective lr


def _measured_lr(optimizer: Callable, g: float, t: int) -> float:
    """|θ_t − θ_{t−1}| / |g| after ``t`` steps of ``optimizer`` on a constant gradient ``g``."""
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = optimizer([p])
    grad = torch.full((1,), g, dtype=torch.float64)
    before = p.detach().clone()
    for _ in range(t):
        before = p.detach().clone()
        p.grad = grad.clone()
        opt.step()
    return float((p.detach() - before).abs()) / abs(g)


def _scale_hint(value: float, exp: float, t: int) -> str:
    if t > 4 and value > 0 and math.isclose(value / exp, math.sqrt(t), rel_tol=0.05):
        return f" (off by a factor close to sqrt(t) = {math.sqrt(t):.4g}: how does the sum grow?)"
    if t > 4 and value > 0 and math.isclose(exp / value, math.sqrt(t), rel_tol=0.05):
        return f" (off by a factor close to 1/sqrt(t) = {1 / math.sqrt(t):.4g})"
    return ""


def _ada_lr_cases(seed: int = 0, n_cases: int = 4, max_t: int = 3000) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        kind = i % 4
        grad = _log_uniform(g, 1e-2, 10.0) * (-1 if _uniform(g, 0, 1) < 0.5 else 1)
        eps, tau = 1e-10, 0.0
        if kind == 1:  # a tiny gradient: eps is no longer negligible
            grad, eps = grad * 1e-4, 1e-4
        elif kind == 2:  # a nonzero initial accumulator
            tau = round(_uniform(g, 0.1, 5.0), 3)
        elif kind == 3:
            eps, tau = 1e-3, round(_uniform(g, 0.0, 1.0), 3)
        t = 1 if i == 0 else int(round(_log_uniform(g, 2, max(2, max_t))))
        lr = round(_log_uniform(g, 0.01, 1.0), 4)
        cases.append({"lr": lr, "g": grad, "t": t, "eps": eps, "initial_accumulator_value": tau})
    return cases


def _ada_lr_probe(answer: Callable, case: Case) -> dict:
    value = answer(case["lr"], case["g"], case["t"], case["eps"], case["initial_accumulator_value"])
    return _number(value, "adagrad_effective_lr")


def _ada_lr_expect(case: Case) -> dict:
    import optlib

    def make(ps):
        return optlib.Adagrad(
            ps,
            lr=case["lr"],
            eps=case["eps"],
            initial_accumulator_value=case["initial_accumulator_value"],
        )

    return {"value": _measured_lr(make, case["g"], case["t"])}


def _ada_lr_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"adagrad_effective_lr, {where} (lr={case['lr']:.4g}, g={case['g']:.4g}, t={case['t']}, "
        f"eps={case['eps']:g}, initial_accumulator_value={case['initial_accumulator_value']:g})"
    )
    value = _value_of(got, "adagrad_effective_lr", where, nonnegative=True, kind="learning rate")
    exp = expected["value"]
    if math.isclose(value, exp, rel_tol=1e-6):
        return
    raise AssertionError(
        f"{where}: a run of optlib.Adagrad took a step of {exp:.8g} * |g| at step t; you "
        f"predicted {value:.8g}{_scale_hint(value, exp, case['t'])}"
    )


def _ada_lr_success(seed: int = 0, n_cases: int = 4, max_t: int = 3000) -> str:
    return (
        f"adagrad_effective_lr: OK, matches runs of optlib.Adagrad on {n_cases} constant "
        f"gradients (t up to {max_t}, relative error < 1e-6)"
    )


_register(
    Check(
        "adagrad_effective_lr",
        _ada_lr_cases,
        _ada_lr_probe,
        _ada_lr_expect,
        _ada_lr_compare,
        _ada_lr_success,
    )
)


def adagrad_effective_lr(answer: Callable, *, seed: int = 0, n_cases: int = 4, max_t: int = 3000):
    r"""Check ``answer(lr, g, t, eps, initial_accumulator_value)``: the effective learning rate
    :math:`|\theta_t - \theta_{t-1}| / |g|` of :class:`optlib.Adagrad` at step :math:`t` when
    every gradient so far was the same number :math:`g`, predicted without running AdaGrad.
    """
    run_check("adagrad_effective_lr", answer, seed=seed, n_cases=n_cases, max_t=max_t)


def _recovery_cases(seed: int = 0, n_cases: int = 4) -> list[Case]:
    g = _generator(seed)
    cases = []
    while len(cases) < n_cases:
        i = len(cases)
        alpha = [0.9, 0.99, 0.95, 0.995][i % 4]
        drop = _log_uniform(g, 2.0, 5.0) if i % 2 == 0 else _log_uniform(g, 5.0, 1000.0)
        fraction = round(_uniform(g, 0.3, 0.95), 3)
        case = {"alpha": alpha, "drop": drop, "fraction": fraction}
        k_real = _recovery_real(case)
        if k_real < 2 or abs(k_real - round(k_real)) < 0.02:
            continue  # away from ties between two steps
        cases.append(case)
    return cases


def _recovery_real(case: Case) -> float:
    """The step k (real) at which sqrt(v_k) = σ₂/fraction, v_k = α^k + (1 - α^k) σ₂², σ₁ = 1."""
    s2 = (1 / case["drop"]) ** 2
    return math.log(s2 * (1 / case["fraction"] ** 2 - 1) / (1 - s2)) / math.log(case["alpha"])


def _recovery_probe(answer: Callable, case: Case) -> dict:
    return _number(answer(case["alpha"], case["drop"], case["fraction"]), "rmsprop_recovery_steps")


def _recovery_expect(case: Case) -> dict:
    """Run optlib.RMSprop (ε = 0) on the gradient 1 until its average holds 1 to 1e-14, then on
    1/drop, and count the steps until the effective learning rate |Δθ|/|g| reaches
    ``fraction`` of its new level lr·drop."""
    import optlib

    alpha, lr = case["alpha"], 0.01
    warm = math.ceil(math.log(1e-14) / math.log(alpha))
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = optlib.RMSprop([p], lr=lr, alpha=alpha, eps=0.0)
    for _ in range(warm):
        p.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
    g = 1 / case["drop"]
    for k in range(1, 100_000):
        before = p.detach().clone()
        p.grad = torch.full((1,), g, dtype=torch.float64)
        opt.step()
        if float((p.detach() - before).abs()) / g >= case["fraction"] * lr * case["drop"]:
            return {"value": k}
    raise RuntimeError("RMSprop did not recover")  # unreachable for alpha < 1


def _recovery_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"rmsprop_recovery_steps, {where} (alpha={case['alpha']:g}, drop={case['drop']:.4g}, "
        f"fraction={case['fraction']:g})"
    )
    k = _value_of(got, "rmsprop_recovery_steps", where, nonnegative=True, kind="count")
    exp = expected["value"]
    if k == exp:
        return
    memory = 1 / (1 - case["alpha"])
    hint = ""
    if not float(k).is_integer():
        hint = " (a whole number of steps, please)"
    elif math.isclose(k, memory, rel_tol=0.02):
        hint = " (that is the average's memory 1/(1 - alpha), a rule of thumb, not the count)"
    raise AssertionError(
        f"{where}: a run of optlib.RMSprop reached that fraction after {exp} steps; you "
        f"predicted {k:g}{hint}"
    )


def _recovery_success(seed: int = 0, n_cases: int = 4) -> str:
    return (
        f"rmsprop_recovery_steps: OK, the exact step count of {n_cases} runs of optlib.RMSprop "
        "after a drop in gradient scale"
    )


_register(
    Check(
        "rmsprop_recovery_steps",
        _recovery_cases,
        _recovery_probe,
        _recovery_expect,
        _recovery_compare,
        _recovery_success,
    )
)
no_delegation(
    "rmsprop_recovery_steps",
    "RMSProp run (predict, do not run)",
    *RMSPROP,
    *UPDATE_PIECES,
    "optlib.experiments.adaptive",
    "optlib.experiments.train.run",
)


def rmsprop_recovery_steps(answer: Callable, *, seed: int = 0, n_cases: int = 4) -> None:
    r"""Check ``answer(alpha, drop, fraction)``: after RMSProp (:math:`\epsilon = 0`, not centred,
    no momentum) has averaged the constant gradient :math:`\sigma_1` long enough that
    :math:`v = \sigma_1^2`, the gradient becomes :math:`\sigma_2 = \sigma_1/\mathrm{drop}`; the
    first step :math:`k \ge 1` of the new gradient at which the effective learning rate
    :math:`|\Delta\theta_k|/|g|` reaches ``fraction`` of its new level :math:`\eta/\sigma_2`,
    predicted without running RMSProp, against runs of :class:`optlib.RMSprop`."""
    run_check("rmsprop_recovery_steps", answer, seed=seed, n_cases=n_cases)
