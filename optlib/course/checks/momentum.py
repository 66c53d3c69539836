r"""Exercise checks for chapter 3 (momentum and Nesterov), registered in
:data:`optlib.course.checks.CHECKS`.

Each check follows :mod:`optlib.course.checks`: seeded JSON ``cases``, a ``probe`` that runs the
learner's code and returns plain data, an ``expect`` that runs the reference (``torch.optim.SGD``,
:class:`optlib.SGD`, an exact eigenvalue computation) and a ``compare`` that raises
:class:`AssertionError` with a message that locates the problem without giving the solution away.
Import it through ``optlib.course.checks`` (``checks.momentum_sgd_class(...)``).

* :func:`momentum_sgd_class`: an SGD-with-momentum optimizer class (PyTorch's convention, with
  and without Nesterov), against :class:`torch.optim.SGD`, with one or two param groups and a
  parameter whose ``.grad`` is ``None``;
* :func:`momentum_constant_step`: the length of step :math:`t` of ``optlib.SGD`` on a constant
  gradient, in units of :math:`\eta |g|`, predicted from PyTorch's buffer recursion (dampening,
  the undamped first step, Nesterov), against runs of :class:`optlib.SGD`;
* :func:`best_momentum_for_lr`: the momentum :math:`\beta` with the smallest rate on a quadratic
  when the step :math:`\eta` is given, against the closed form of the rate's minimum;
* :func:`predict_momentum_iterations`: the steps heavy ball with its optimal
  :math:`(\eta^\star, \beta^\star)` needs on a 2-D quadratic from a given start, predicted with
  the double root's factors, against runs of :class:`optlib.SGD`.

The optimizer-class helpers (several param groups, a parameter without gradient) are shared with
chapter 4's :func:`optlib.course.checks.adagrad_class`.
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
    _no_hint,
    _number,
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
    "best_momentum_for_lr",
    "momentum_constant_step",
    "momentum_sgd_class",
    "predict_momentum_iterations",
]

SGD_IMPLEMENTATIONS = ("torch.optim.SGD", "torch.optim.sgd", "optlib.SGD", "optlib.optim.sgd")


# --------------------------------------------------------------------------- optimizer classes


def _momentum_hyper(nesterov: bool) -> Callable[[torch.Generator, int], dict]:
    def hyper(g: torch.Generator, i: int) -> dict:
        h = {"lr": round(_uniform(g, 0.01, 0.1), 4), "momentum": round(_uniform(g, 0.5, 0.95), 3)}
        if nesterov:
            h["nesterov"] = bool(i % 2)
        return h

    return hyper


def _momentum_groups(nesterov: bool) -> Callable[[torch.Generator, int], list[dict]]:
    def groups(g: torch.Generator, i: int) -> list[dict]:
        second = {
            "lr": round(_uniform(g, 0.05, 0.12), 4),
            "momentum": round(_uniform(g, 0.0, 0.5), 3),
        }
        if nesterov:
            second["nesterov"] = not bool(i % 2)  # the other group's flag differs
            second["momentum"] = round(_uniform(g, 0.2, 0.5), 3)  # nesterov needs momentum > 0
        return [{}, second]

    return groups


def _momentum_cases(
    seed: int = 0,
    n_cases: int = 3,
    steps: int = 20,
    nesterov: bool = False,
    groups: bool = False,
    frozen: bool = False,
) -> list[Case]:
    return _grouped_cases(
        seed,
        n_cases,
        steps,
        _momentum_hyper(nesterov),
        groups=_momentum_groups(nesterov) if groups else None,
        frozen=frozen,
    )


def _momentum_expect(case: Case) -> dict:
    def factory(ps, **h):
        return torch.optim.SGD(ps, foreach=False, **h)

    return {"trajectory": _grouped_run(factory, case)}


def _momentum_success(
    seed: int = 0,
    n_cases: int = 3,
    steps: int = 20,
    nesterov: bool = False,
    groups: bool = False,
    frozen: bool = False,
) -> str:
    extra = [
        text
        for on, text in [
            (nesterov, "with and without nesterov"),
            (groups, "two param groups"),
            (frozen, "a parameter without gradient"),
        ]
        if on
    ]
    return (
        f"momentum_sgd_class: OK, matches torch.optim.SGD(momentum=...) over {steps} steps "
        f"on {n_cases} seeded problems" + (f" ({', '.join(extra)})" if extra else "")
    )


_register(
    Check(
        "momentum_sgd_class",
        _momentum_cases,
        _grouped_probe,
        _momentum_expect,
        _grouped_compare("momentum_sgd_class", "torch.optim.SGD", _no_hint),
        _momentum_success,
    )
)
no_delegation("momentum_sgd_class", "SGD with momentum", *SGD_IMPLEMENTATIONS)


def momentum_sgd_class(
    answer: type,
    *,
    seed: int = 0,
    n_cases: int = 3,
    steps: int = 20,
    nesterov: bool = False,
    groups: bool = False,
    frozen: bool = False,
) -> None:
    r"""Check an SGD-with-momentum optimizer class, constructed as ``answer(params, lr=...,
    momentum=...)`` (and ``nesterov=...`` when ``nesterov=True``), whose ``step()`` reads
    ``p.grad``, against :class:`torch.optim.SGD` (:math:`b_1 = g_1`,
    :math:`b \leftarrow \mu b + g`, :math:`\theta \leftarrow \theta - \eta b`, or
    :math:`\theta \leftarrow \theta - \eta (g + \mu b)` with Nesterov) over ``steps`` steps.

    ``groups=True`` passes each of two parameters in a param group of its own, the second with
    its own ``lr`` and ``momentum`` (and ``nesterov``); ``frozen=True`` sets the second
    parameter's ``.grad`` to ``None`` half-way through (from then on it must not move).
    """
    run_check(
        "momentum_sgd_class",
        answer,
        seed=seed,
        n_cases=n_cases,
        steps=steps,
        nesterov=nesterov,
        groups=groups,
        frozen=frozen,
    )


# --------------------------------------------------------------------------- a constant gradient


def _step_cases(seed: int = 0, n_cases: int = 6) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        beta = round(_uniform(g, 0.5, 0.98), 3)
        kind = i % 3  # plain sum, dampened, Nesterov
        dampening = 0.0
        if kind == 1:
            dampening = beta if _uniform(g, 0, 1) < 0.5 else round(_uniform(g, 0.1, 0.9), 3)
        horizon = max(2, math.ceil(3 / (1 - beta)))  # where the start still shows
        t = int(round(_log_uniform(g, 2, horizon)))
        cases.append({"momentum": beta, "dampening": dampening, "nesterov": kind == 2, "t": t})
    return cases


def _step_probe(answer: Callable, case: Case) -> dict:
    value = answer(case["momentum"], case["dampening"], case["nesterov"], case["t"])
    return _number(value, "momentum_constant_step")


def _measured_step(momentum: float, dampening: float, nesterov: bool, t: int) -> float:
    """|θ_t − θ_{t−1}| / (lr |g|) of optlib.SGD on the constant gradient g."""
    import optlib

    lr, g = 0.1, -0.7
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = optlib.SGD([p], lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov)
    before = p.detach().clone()
    for _ in range(t):
        before = p.detach().clone()
        p.grad = torch.full((1,), g, dtype=torch.float64)
        opt.step()
    return float((p.detach() - before).abs()) / (lr * abs(g))


def _step_expect(case: Case) -> dict:
    args = (case["momentum"], case["dampening"], case["nesterov"], case["t"])
    return {"value": _measured_step(*args)}


def _step_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    beta, tau, t = case["momentum"], case["dampening"], case["t"]
    where = (
        f"momentum_constant_step, {where} (momentum={beta:g}, dampening={tau:g}, "
        f"nesterov={case['nesterov']}, t={t})"
    )
    value = _value_of(got, "momentum_constant_step", where, nonnegative=True, kind="step")
    exp = expected["value"]
    if math.isclose(value, exp, rel_tol=1e-9, abs_tol=1e-12):
        return
    hint = ""
    if math.isclose(value, (1 + beta * (1 - tau) / (1 - beta)) if case["nesterov"]
                    else (1 - tau) / (1 - beta), rel_tol=1e-9):  # fmt: skip
        hint = f" (that is the value for large t; at t = {t} the buffer has not built up yet)"
    raise AssertionError(
        f"{where}: a run of optlib.SGD took a step of {exp:.10g} * lr * |g|; you predicted "
        f"{value:.10g}{hint}"
    )


def _step_success(seed: int = 0, n_cases: int = 6) -> str:
    return (
        f"momentum_constant_step: OK, matches runs of optlib.SGD on {n_cases} constant "
        "gradients (plain, dampened and Nesterov; relative error < 1e-9)"
    )


_register(
    Check(
        "momentum_constant_step",
        _step_cases,
        _step_probe,
        _step_expect,
        _step_compare,
        _step_success,
    )
)
no_delegation(
    "momentum_constant_step",
    "SGD run (predict, do not run)",
    *SGD_IMPLEMENTATIONS,
    "optlib.experiments.momentum",
    "optlib.experiments.train.run",
)


def momentum_constant_step(answer: Callable, *, seed: int = 0, n_cases: int = 6) -> None:
    r"""Check ``answer(momentum, dampening, nesterov, t)``: the length of step :math:`t` of
    ``optlib.SGD(lr=η, momentum=β, dampening=τ, nesterov=...)`` when every gradient so far was
    the same vector :math:`g`, in units of :math:`\eta\,|g|`, predicted without running SGD
    (PyTorch's buffer: :math:`b_1 = g_1`, :math:`b_t = \beta b_{t-1} + (1-\tau) g_t`)."""
    run_check("momentum_constant_step", answer, seed=seed, n_cases=n_cases)


# --------------------------------------------------------------------------- β for a given η


def _beta_cases(seed: int = 0, n_cases: int = 4, max_dim: int = 5) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        d = 2 + i % max(1, max_dim - 1)
        mu = _log_uniform(g, 0.01, 1.0)
        L = mu * _log_uniform(g, 10.0, 1e4)
        A = _spd(g, d, mu, L)
        lr_star = 4 / (math.sqrt(L) + math.sqrt(mu)) ** 2
        lr = round(lr_star * _uniform(g, 0.05, 0.9), 12)
        cases.append({"A": A.tolist(), "lr": lr})
    return cases


def _beta_probe(answer: Callable, case: Case) -> dict:
    A = _tensor(case["A"])
    A_in = A.clone()
    out = _number(answer(case["lr"], A), "best_momentum_for_lr")
    if not torch.equal(A, A_in):
        out["modified_input"] = True
    return out


def _extremes(A: torch.Tensor) -> tuple[float, float]:
    lam = torch.linalg.eigvalsh(A)
    return float(lam[0]), float(lam[-1])


def _beta_expect(case: Case) -> dict:
    mu, _ = _extremes(_tensor(case["A"]))
    return {"value": (1 - math.sqrt(case["lr"] * mu)) ** 2}


def _beta_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    from ...experiments.rates import quadratic_rate

    A = _tensor(case["A"])
    mu, L = _extremes(A)
    lr = case["lr"]
    where = (
        f"best_momentum_for_lr, {where} (lr={lr:.6g}, {A.shape[0]}x{A.shape[0]} quadratic, "
        f"eigenvalues from {mu:.4g} to {L:.4g})"
    )
    beta = _value_of(got, "best_momentum_for_lr", where, kind="momentum")
    if got.get("modified_input"):
        raise AssertionError(f"{where}: best_momentum_for_lr changed its input A in place")
    if not 0 <= beta < 1:
        raise AssertionError(f"{where}: expected a momentum 0 <= beta < 1, got {beta!r}")
    best = expected["value"]
    if math.isclose(beta, best, rel_tol=1e-6, abs_tol=1e-12):
        return
    mine, optimum = quadratic_rate(lr, beta, L, mu), quadratic_rate(lr, best, L, mu)
    seen = (
        "heavy ball diverges with it" if mine >= 1
        else f"heavy ball contracts the error by {mine:.6f} per step with it"
    )  # fmt: skip
    raise AssertionError(
        f"{where}: with your beta = {beta:.8g}, {seen}; the best beta for this lr gives "
        f"{optimum:.6f} per step"
    )


def _beta_success(seed: int = 0, n_cases: int = 4, max_dim: int = 5) -> str:
    return (
        f"best_momentum_for_lr: OK, the fastest momentum for the given step on {n_cases} seeded "
        f"quadratics (dimension 2 to {max(2, min(max_dim, n_cases + 1))}, relative error < 1e-6)"
    )


_register(
    Check(
        "best_momentum_for_lr",
        _beta_cases,
        _beta_probe,
        _beta_expect,
        _beta_compare,
        _beta_success,
    )
)
no_delegation(
    "best_momentum_for_lr",
    "heavy-ball rates (derive the best momentum, do not search for it with the library)",
    "optlib.experiments.rates",
    "optlib.linalg.optimal_heavy_ball_params",
    "optlib.linalg.heavy_ball",
    *SGD_IMPLEMENTATIONS,
)


def best_momentum_for_lr(
    answer: Callable, *, seed: int = 0, n_cases: int = 4, max_dim: int = 5
) -> None:
    r"""Check ``answer(lr, A)``: the momentum :math:`\beta` for which heavy ball
    (``optlib.SGD(lr=lr, momentum=β)``) contracts fastest on
    :math:`f(\theta) = \tfrac12\theta^\top A\theta - b^\top\theta`, when the step ``lr`` is given
    (at most the optimal :math:`4/(\sqrt L + \sqrt\mu)^2`). ``A`` is a symmetric positive definite
    float64 tensor; it must not be changed."""
    run_check("best_momentum_for_lr", answer, seed=seed, n_cases=n_cases, max_dim=max_dim)


# --------------------------------------------------------------------------- predicted iterations


def _hb_rate(kappa: float) -> float:
    s = math.sqrt(kappa)
    return (s - 1) / (s + 1)


def _model_distance(case: Case, k: float) -> float:
    """‖θ_k‖ from the double-root factors (the reference's own prediction, to avoid ties)."""
    rho = _hb_rate(case["kappa"])
    steep = case["c_steep"] * (1 + (1 + rho) * k) * rho**k
    flat = case["c_flat"] * (1 + (1 - rho) * k) * rho**k
    return math.hypot(steep, flat)


def _pred_cases(
    seed: int = 0, n_cases: int = 4, max_kappa: float = 1e4, min_tol: float = 1e-10
) -> list[Case]:
    g = _generator(seed)
    cases = []
    while len(cases) < n_cases:
        i = len(cases)
        kappa = _log_uniform(g, 100.0, max(100.0, max_kappa))
        tol = _log_uniform(g, min_tol, 1e-3)
        big, small = _log_uniform(g, 0.3, 1.0), _log_uniform(g, 1e-3, 0.03)
        c_steep, c_flat = (big, small) if i % 2 else (small, big)  # either mode can dominate
        if i % 3 == 2:
            c_steep, c_flat = big, _log_uniform(g, 0.3, 1.0)
        c_steep *= -1 if _uniform(g, 0, 1) < 0.5 else 1
        c_flat *= -1 if _uniform(g, 0, 1) < 0.5 else 1
        case = {
            "kappa": kappa,
            "tol": tol,
            "c_steep": c_steep,
            "c_flat": c_flat,
            "mu": _log_uniform(g, 0.01, 1.0),
            "angle": _uniform(g, 0.0, math.pi),
        }
        start = math.hypot(c_steep, c_flat)
        ks = [k for k in range(1, 200_000) if _model_distance(case, k) <= tol * start][:1]
        if not ks:
            continue
        k = ks[0]  # away from ties: the distance crosses the threshold clearly at step k
        if _model_distance(case, k) > tol * start * (1 - 1e-6) or _model_distance(
            case, k - 1
        ) < tol * start * (1 + 1e-6):
            continue
        cases.append(case)
    return cases


def _pred_probe(answer: Callable, case: Case) -> dict:
    value = answer(case["kappa"], case["tol"], case["c_steep"], case["c_flat"])
    out = _number(value, "predict_momentum_iterations")
    if "value" in out and not float(out["value"]).is_integer():
        return {"problem": f"predict_momentum_iterations returned {out['value']!r}, "
                "not a whole number"}  # fmt: skip
    return out


def _pred_expect(case: Case) -> dict:
    """Run heavy ball with the optimal (lr, beta) on a rotated diag(κμ, μ) from
    θ₀ = c_steep·u_L + c_flat·u_μ and count the iterations until ‖θ_k‖ ≤ tol·‖θ₀‖ (θ* = 0)."""
    import optlib

    mu, kappa = case["mu"], case["kappa"]
    c, s = math.cos(case["angle"]), math.sin(case["angle"])
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)  # columns: u_L, u_μ
    A = R @ torch.diag(torch.tensor([kappa * mu, mu], dtype=torch.float64)) @ R.T
    L = kappa * mu
    lr = 4 / (math.sqrt(L) + math.sqrt(mu)) ** 2
    beta = _hb_rate(kappa) ** 2
    theta0 = R @ torch.tensor([case["c_steep"], case["c_flat"]], dtype=torch.float64)
    p = theta0.clone().requires_grad_()
    start = float(theta0.norm())
    opt = optlib.SGD([p], lr=lr, momentum=beta)
    k = 0
    while float(p.detach().norm()) > case["tol"] * start:
        p.grad = A @ p.detach()
        opt.step()
        k += 1
    return {"value": k}


def _pred_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"predict_momentum_iterations, {where} (kappa={case['kappa']:.4g}, tol={case['tol']:.3g}, "
        f"c_steep={case['c_steep']:.3g}, c_flat={case['c_flat']:.3g})"
    )
    _raise_if_error(got, "predict_momentum_iterations", where)
    k = _value_of(got, "predict_momentum_iterations", where, nonnegative=True, kind="count")
    measured = expected["value"]
    if abs(k - measured) <= 1:
        return
    rate_only = math.ceil(math.log(case["tol"]) / math.log(_hb_rate(case["kappa"])))
    if k > measured:
        detail = "more than the run needed"
    elif int(k) == rate_only:
        detail = "fewer than the run needed: that is the count the rate alone gives"
    else:
        detail = "fewer than the run needed"
    raise AssertionError(
        f"{where}: running heavy ball took {measured} iterations; you predicted {int(k)}, {detail}"
    )


def _pred_success(
    seed: int = 0, n_cases: int = 4, max_kappa: float = 1e4, min_tol: float = 1e-10
) -> str:
    return (
        f"predict_momentum_iterations: OK, within one step of heavy-ball runs on {n_cases} seeded "
        f"quadratics (kappa up to {max_kappa:g}, tol down to {min_tol:g})"
    )


_register(
    Check(
        "predict_momentum_iterations",
        _pred_cases,
        _pred_probe,
        _pred_expect,
        _pred_compare,
        _pred_success,
    )
)
no_delegation(
    "predict_momentum_iterations",
    "heavy-ball run (predict, do not run)",
    *SGD_IMPLEMENTATIONS,
    "optlib.linalg.richardson",
    "optlib.linalg.heavy_ball",
    "optlib.linalg.iterations_to_tolerance",
    "optlib.experiments.momentum",
    "optlib.experiments.train.run",
    "optlib.experiments.rates.optimal_heavy_ball_factors",
)


def predict_momentum_iterations(
    answer: Callable,
    *,
    seed: int = 0,
    n_cases: int = 4,
    max_kappa: float = 1e4,
    min_tol: float = 1e-10,
) -> None:
    r"""Check ``answer(kappa, tol, c_steep, c_flat)``, the number of iterations :math:`k` heavy
    ball with its optimal :math:`(\eta^\star, \beta^\star)` needs until
    :math:`\|\theta_k - \theta^*\| \le \mathrm{tol}\,\|\theta_0 - \theta^*\|` on a 2-D quadratic of
    condition number ``kappa``, started at rest from the point whose coordinates along the
    eigenvectors of the largest and the smallest eigenvalue are ``c_steep`` and ``c_flat``.

    At the optimum both characteristic roots are double, so each coordinate behaves like
    :math:`(a + b\,k)\,z^k`; a prediction passes within one step of a run of :class:`optlib.SGD`.
    """
    run_check(
        "predict_momentum_iterations",
        answer,
        seed=seed,
        n_cases=n_cases,
        max_kappa=max_kappa,
        min_tol=min_tol,
    )
