r"""Exercise checks for chapter 12 (choosing an optimizer), registered in
:data:`optlib.course.checks.CHECKS`.

Same design as :mod:`optlib.course.checks` (``cases``/``probe``/``expect``/``compare``):

* :func:`minimum_norm_solution`: the interpolating solution of least norm,
  :math:`w^\star = X^\top (XX^\top)^{-1} y`, of an underdetermined least-squares problem, against
  :func:`optlib.problems.wilson.minimum_norm` and the row-space and interpolation properties
  that define it (Wilson et al.'s construction among the cases);
* :func:`es_gradient_estimate`: the antithetic evolution-strategies estimate
  :math:`\hat g = \frac{1}{2\sigma n}\sum_i (f(\theta+\sigma\varepsilon_i) -
  f(\theta-\sigma\varepsilon_i))\,\varepsilon_i` for given directions, against
  :func:`optlib.experiments.evolution.es_gradient`;
* :func:`steps_to_target`: the first step at which a loss curve, linearly interpolated between
  its evaluations, reaches a target (``inf`` if never; NaN counts as not reached), against
  :func:`optlib.experiments.sophia.steps_to_target`, which the benchmark uses;
* :func:`performance_profile`: Dolan & Moré's :math:`\rho_s(\tau)`, against
  :func:`optlib.bench.suite.performance_profile`.

In a notebook: ``from optlib.course import checks`` then e.g. ``checks.steps_to_target(answer)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ._core import (
    Case,
    Check,
    _as_float_array,
    _generator,
    _log_uniform,
    _number,
    _register,
    _require,
    _uniform,
    _value_of,
    no_delegation,
    run_check,
)

__all__ = [
    "es_gradient_estimate",
    "minimum_norm_solution",
    "performance_profile",
    "steps_to_target",
]


def _randn(g: torch.Generator, *shape: int) -> list:
    return torch.randn(*shape, generator=g, dtype=torch.float64).tolist()


def _vector(got: Any, what: str, where: str, n: int) -> torch.Tensor:
    data = _require(got, ["values"], where, what)["values"]
    t = _as_float_array(data, what, where).reshape(-1)
    if t.numel() != n:
        raise AssertionError(f"{where}: expected {n} numbers, got {t.numel()}")
    if not torch.isfinite(t).all():
        raise AssertionError(f"{where}: the result has non-finite entries")
    return t


def _values(out: Any, what: str) -> dict:
    if out is None:
        return {"problem": f"{what} returned None (is a `return` missing?)"}
    try:
        t = torch.as_tensor(out, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return {"problem": f"{what} returned a {type(out).__name__}, not numbers"}
    return {"values": t.reshape(-1).tolist(), "shape": list(t.shape)}


# --------------------------------------------------------------------------- minimum norm


def _mn_cases(seed: int = 0, n_cases: int = 4) -> list[Case]:
    from ...problems.wilson import wilson_problem

    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        if i % 4 == 3:  # Wilson et al.'s construction (n examples, 6n features)
            P = wilson_problem(int(_uniform(g, 4, 9)), 0.7, n_test=4, seed=int(seed + i))
            X, y = P.X, P.y
        else:
            n = int(_uniform(g, 2, 7))
            d = n + int(_uniform(g, 1, 12))
            X = torch.randn(n, d, generator=g, dtype=torch.float64)
            X[:, 0] *= _log_uniform(g, 0.1, 10.0)  # uneven column scales
            y = torch.randn(n, generator=g, dtype=torch.float64)
        cases.append({"X": X.tolist(), "y": y.tolist(), "dtype": "float64"})
    return cases


def _mn_probe(answer: Callable, case: Case) -> dict:
    X = torch.tensor(case["X"], dtype=torch.float64)
    y = torch.tensor(case["y"], dtype=torch.float64)
    return _values(answer(X, y), "minimum_norm_solution")


def _mn_expect(case: Case) -> dict:
    from ...problems.wilson import minimum_norm

    X = torch.tensor(case["X"], dtype=torch.float64)
    y = torch.tensor(case["y"], dtype=torch.float64)
    return {"values": minimum_norm(X, y).tolist()}


def _mn_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    X = torch.tensor(case["X"], dtype=torch.float64)
    y = torch.tensor(case["y"], dtype=torch.float64)
    n, d = X.shape
    where = f"minimum_norm_solution, {where} (X of shape {n}x{d})"
    w = _vector(got, "minimum_norm_solution", where, d)
    exp = torch.tensor(expected["values"], dtype=torch.float64)
    scale = float(exp.norm()) + 1e-300
    # float64 solves of small well-posed systems: rounding of order cond(X X^T) * eps
    tol = 1e-8 * scale
    if float((w - exp).norm()) <= tol:
        return
    residual = float((X @ w - y).norm()) / (float(y.norm()) + 1e-300)
    if residual > 1e-6:
        raise AssertionError(
            f"{where}: X w differs from y (relative residual {residual:.2e}): the solution must "
            "interpolate the data"
        )
    outside = w - X.T @ torch.linalg.lstsq(X.T, w.unsqueeze(1)).solution.squeeze(1)
    raise AssertionError(
        f"{where}: it interpolates, but it is not the solution of least norm (norm "
        f"{float(w.norm()):.6g} against {scale:.6g}); a part of size {float(outside.norm()):.3g} "
        "lies outside the row space of X, which gradient descent from zero never enters"
    )


def _mn_success(seed: int = 0, n_cases: int = 4) -> str:
    return (
        f"minimum_norm_solution: OK, matches X^T (X X^T)^-1 y on {n_cases} seeded problems "
        "(including Wilson et al.'s construction)"
    )


_register(Check("minimum_norm_solution", _mn_cases, _mn_probe, _mn_expect, _mn_compare,
                _mn_success))  # fmt: skip
no_delegation("minimum_norm_solution", "minimum-norm solution", "optlib.problems.wilson",
              "torch.linalg.pinv", "torch.linalg.lstsq", "numpy.linalg.pinv",
              "numpy.linalg.lstsq")  # fmt: skip


def minimum_norm_solution(answer: Callable, *, seed: int = 0, n_cases: int = 4) -> None:
    r"""Check ``answer(X, y)``: for ``X`` of shape ``(n, d)`` with ``n < d`` and full row rank,
    the interpolating solution of least norm :math:`X^\top (XX^\top)^{-1} y`, shape ``(d,)``."""
    run_check("minimum_norm_solution", answer, seed=seed, n_cases=n_cases)


# --------------------------------------------------------------------------- ES estimate


def _es_cases(seed: int = 0, n_cases: int = 4) -> list[Case]:
    g = _generator(seed)
    kinds = ["quadratic", "linear", "abs", "quadratic"]
    cases = []
    for i in range(n_cases):
        d = int(_uniform(g, 2, 9))
        n = int(_uniform(g, 1, 7))
        cases.append({
            "kind": kinds[i % len(kinds)],
            "d": d, "n": n,
            "sigma": round(_log_uniform(g, 1e-2, 1.0), 5),
            "theta": _randn(g, d),
            "eps": _randn(g, n, d),
            "h": [round(_log_uniform(g, 0.1, 10.0), 5) for _ in range(d)],
            "b": _randn(g, d),
        })  # fmt: skip
    return cases


def _es_function(case: Case) -> Callable[[torch.Tensor], torch.Tensor]:
    h = torch.tensor(case["h"], dtype=torch.float64)
    b = torch.tensor(case["b"], dtype=torch.float64)
    kind = case["kind"]

    def f(points: torch.Tensor) -> torch.Tensor:  # a batch (..., d) of points -> values (...)
        points = torch.as_tensor(points, dtype=torch.float64)
        if kind == "linear":
            return points @ b
        if kind == "abs":  # not differentiable where a coordinate is 0
            return (h * points.abs()).sum(-1) + points @ b
        return 0.5 * (h * points * points).sum(-1) - points @ b

    return f


def _es_probe(answer: Callable, case: Case) -> dict:
    theta = torch.tensor(case["theta"], dtype=torch.float64)
    eps = torch.tensor(case["eps"], dtype=torch.float64)
    return _values(answer(_es_function(case), theta, case["sigma"], eps), "es_gradient_estimate")


def _es_expect(case: Case) -> dict:
    from ...experiments.evolution import es_gradient

    theta = torch.tensor(case["theta"], dtype=torch.float64)
    eps = torch.tensor(case["eps"], dtype=torch.float64)
    g = es_gradient(_es_function(case), theta, case["sigma"], case["n"], eps=eps)
    return {"values": g.tolist()}


def _es_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (f"es_gradient_estimate, {where} ({case['kind']} f, d={case['d']}, "
             f"n={case['n']} directions, sigma={case['sigma']:g})")  # fmt: skip
    value = _vector(got, "es_gradient_estimate", where, case["d"])
    exp = torch.tensor(expected["values"], dtype=torch.float64)
    scale = float(exp.abs().max()) + 1e-12
    if float((value - exp).abs().max()) <= 1e-9 * scale:
        return
    hints = [
        (2.0, "twice the estimate: divide by 2 sigma n (each pair spans 2 sigma)"),
        (0.5, "half the estimate: divide by 2 sigma n, not 4 sigma n"),
        (-1.0, "the estimate points the wrong way: f(theta + sigma eps) comes first"),
        (float(case["n"]), "n times the estimate: average over the directions, do not sum"),
        (case["sigma"], "sigma times the estimate: divide the difference by sigma"),
    ]
    for factor, text in hints:
        if factor != 1.0 and torch.allclose(value, factor * exp, rtol=1e-8, atol=1e-12):
            raise AssertionError(f"{where}: {text}")
    raise AssertionError(f"{where}: expected {exp.tolist()}, got {value.tolist()}")


def _es_success(seed: int = 0, n_cases: int = 4) -> str:
    return (
        f"es_gradient_estimate: OK, matches the antithetic estimate on {n_cases} seeded cases "
        "(quadratic, linear and non-differentiable f)"
    )


_register(Check("es_gradient_estimate", _es_cases, _es_probe, _es_expect, _es_compare,
                _es_success))  # fmt: skip
no_delegation("es_gradient_estimate", "evolution-strategies estimate",
              "optlib.experiments.evolution")  # fmt: skip


def es_gradient_estimate(answer: Callable, *, seed: int = 0, n_cases: int = 4) -> None:
    r"""Check ``answer(f, theta, sigma, eps)``: the antithetic estimate
    :math:`\frac{1}{2\sigma n}\sum_i (f(\theta+\sigma\varepsilon_i) -
    f(\theta-\sigma\varepsilon_i))\varepsilon_i` for the directions ``eps`` (shape ``(n, d)``),
    where ``f`` maps a batch of points ``(..., d)`` to values ``(...)``; shape ``(d,)``."""
    run_check("es_gradient_estimate", answer, seed=seed, n_cases=n_cases)


# --------------------------------------------------------------------------- steps to target


def _st_cases(seed: int = 0, n_cases: int = 6) -> list[Case]:
    g = _generator(seed)
    kinds = ["between", "never", "first", "nan", "exact", "between"]
    cases = []
    for i in range(n_cases):
        kind = kinds[i % len(kinds)]
        m = int(_uniform(g, 4, 12))
        every = int(_uniform(g, 5, 50))
        steps = [every * k for k in range(m)]
        start = _log_uniform(g, 1.0, 5.0)
        rates = [_uniform(g, 0.05, 0.5) for _ in range(m)]
        losses = [start]
        for r in rates[1:]:
            losses.append(losses[-1] * math.exp(-r) * (1.3 if _uniform(g, 0, 1) < 0.2 else 1.0))
        losses = [round(v, 6) for v in losses]
        j = int(_uniform(g, 2, m - 1))
        if kind == "never":
            target = round(0.5 * min(losses), 6)
        elif kind == "first":
            target = round(1.2 * losses[0], 6)
        elif kind == "exact":
            target = min(losses[: j + 1])
        else:
            target = round(0.5 * (losses[j - 1] + min(losses[: j + 1])), 6)
        if kind == "nan":  # a run that diverged: NaN from an evaluation on
            losses = losses[:j] + [math.nan] * (m - j)
            losses[j - 1] = round(min(losses[: j]) * 0.9, 6)
            target = round(min(losses[: j]) * 1.01, 6)
        # plain JSON: a NaN loss is stored as None (the learner's code gets math.nan)
        losses = [None if math.isnan(v) else v for v in losses]
        cases.append({"kind": kind, "steps": steps, "losses": losses, "target": target})
    return cases


def _curve(case: Case) -> list[float]:
    return [math.nan if v is None else float(v) for v in case["losses"]]


def _st_probe(answer: Callable, case: Case) -> dict:
    out = _number(answer(list(case["steps"]), _curve(case), case["target"]), "steps_to_target")
    value = out.get("value")
    if value is not None and math.isnan(value):
        return {"problem": "steps_to_target returned NaN"}
    if value is not None and math.isinf(value):
        return {"never": value > 0}  # JSON has no inf
    return out


def _st_expect(case: Case) -> dict:
    from ...experiments.sophia import steps_to_target as reference

    value = reference(case["steps"], _curve(case), case["target"])
    return {"never": True} if math.isinf(value) else {"value": value}


def _st_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = f"steps_to_target, {where} ({case['kind']}: target {case['target']:g})"
    if isinstance(got, dict) and "never" in got and not got.get("problem"):
        if expected.get("never") and got["never"] is True:
            return
        raise AssertionError(f"{where}: got {'' if got['never'] else '-'}inf, but the curve "
                             "reaches the target" if not expected.get("never") else
                             f"{where}: the curve never reaches the target: return math.inf, "
                             "not -inf")  # fmt: skip
    if expected.get("never"):
        _require(got, ["value"], where, "steps_to_target")
        raise AssertionError(f"{where}: the curve never reaches the target: return math.inf "
                             f"(got {got['value']!r})")  # fmt: skip
    value = _value_of(got, "steps_to_target", where)
    exp = expected["value"]
    if abs(value - exp) <= 1e-9 * max(1.0, abs(exp)):
        return
    steps = case["steps"]
    if value in steps and exp not in steps:
        raise AssertionError(f"{where}: got the evaluation step {value:g}; interpolate linearly "
                             "between the evaluation before and the first one at or below "
                             "the target")  # fmt: skip
    raise AssertionError(f"{where}: expected {exp:.10g}, got {value:.10g}")


def _st_success(seed: int = 0, n_cases: int = 6) -> str:
    return (
        f"steps_to_target: OK, matches the benchmark's steps-to-target on {n_cases} seeded "
        "curves (reached between evaluations, at one, at the start, never, after a divergence)"
    )


_register(Check("steps_to_target", _st_cases, _st_probe, _st_expect, _st_compare,
                _st_success))  # fmt: skip
no_delegation("steps_to_target", "steps-to-target", "optlib.experiments.sophia.steps_to_target",
              "optlib.experiments.race.steps_to_target", "optlib.bench.suite")  # fmt: skip


def steps_to_target(answer: Callable, *, seed: int = 0, n_cases: int = 6) -> None:
    r"""Check ``answer(steps, losses, target)``: the first step at which the curve through
    ``(steps[i], losses[i])``, linearly interpolated, falls to ``target`` (``steps[0]`` if the
    first loss already does; ``math.inf`` if none does; a NaN loss counts as not reached, and an
    interval starting at NaN gives its end)."""
    run_check("steps_to_target", answer, seed=seed, n_cases=n_cases)


# --------------------------------------------------------------------------- performance profile


def _pp_cases(seed: int = 0, n_cases: int = 4) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        n_s, n_p = int(_uniform(g, 2, 5)), int(_uniform(g, 3, 9))
        times = {}
        for s in range(n_s):
            row = [round(_log_uniform(g, 0.5, 50.0), 3) for _ in range(n_p)]
            for p in range(n_p):
                if _uniform(g, 0, 1) < 0.2:
                    row[p] = None  # failed (plain JSON: the learner's code gets math.inf)
            times[f"solver{s}"] = row
        if i % 2 == 1:  # a tie, and a problem that no solver solves
            times["solver1"][0] = times["solver0"][0]
            for row in times.values():
                row[-1] = None
        taus = sorted({1.0, 2.0, *[round(_log_uniform(g, 1.0, 30.0), 3) for _ in range(5)]})
        cases.append({"times": times, "taus": taus})
    return cases


def _times(case: Case) -> dict[str, list[float]]:
    return {k: [math.inf if t is None else float(t) for t in v] for k, v in case["times"].items()}


def _pp_probe(answer: Callable, case: Case) -> dict:
    out = answer(_times(case), list(case["taus"]))
    if not isinstance(out, dict):
        return {"problem": f"performance_profile returned a {type(out).__name__}, not a dict"}
    result = {}
    for name, values in out.items():
        got = _values(values, "performance_profile")
        if "problem" in got:
            return got
        result[str(name)] = got["values"]
    return {"profiles": result}


def _pp_expect(case: Case) -> dict:
    from ...bench.suite import performance_profile as reference

    out = reference(_times(case), case["taus"])
    return {"profiles": {k: [float(x) for x in v] for k, v in out.items()}}


def _pp_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = f"performance_profile, {where} ({len(case['times'])} solvers, taus {case['taus']})"
    profiles = _require(got, ["profiles"], where, "performance_profile")["profiles"]
    exp = expected["profiles"]
    if not isinstance(profiles, dict) or set(profiles) != set(exp):
        keys = sorted(map(str, profiles)) if isinstance(profiles, dict) else "no dict"
        raise AssertionError(f"{where}: expected one profile per solver, keys {sorted(exp)}; "
                             f"got {keys}")  # fmt: skip
    for name, values in exp.items():
        mine = profiles[name]
        if not isinstance(mine, list) or len(mine) != len(values):
            raise AssertionError(f"{where}: {name}: expected a list of one value per tau "
                                 f"({len(values)})")  # fmt: skip
        for tau, a, b in zip(case["taus"], mine, values):
            if not (isinstance(a, float) and abs(a - b) <= 1e-12):
                hint = ""
                if tau == 1.0:
                    hint = " (at tau = 1: the share of problems where it is the fastest, ties " \
                           "included)"
                raise AssertionError(f"{where}: {name} at tau = {tau:g}: expected {b:.6g}, "
                                     f"got {a!r}{hint}")  # fmt: skip


def _pp_success(seed: int = 0, n_cases: int = 4) -> str:
    return (
        f"performance_profile: OK, matches Dolan & Moré's profiles on {n_cases} seeded "
        "benchmarks (failures, ties, a problem no solver solves)"
    )


_register(Check("performance_profile", _pp_cases, _pp_probe, _pp_expect, _pp_compare,
                _pp_success))  # fmt: skip
no_delegation("performance_profile", "performance profile",
              "optlib.bench.suite.performance_profile")  # fmt: skip


def performance_profile(answer: Callable, *, seed: int = 0, n_cases: int = 4) -> None:
    r"""Check ``answer(times, taus)``: for ``times[s][p]`` (solver ``s``, problem ``p``,
    ``math.inf`` for a failure), a dict mapping every solver to its profile
    :math:`\rho_s(\tau) = |\{p : t_{p,s} \le \tau \min_{s'} t_{p,s'}\}| / n_p` at each ``tau``
    (a problem no solver solves counts as failed for all)."""
    run_check("performance_profile", answer, seed=seed, n_cases=n_cases)
