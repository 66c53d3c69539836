r"""Exercise checks: test a learner's code differentially against optlib and ``torch.optim``.

A check runs the learner's function or class on seeded problems and compares what it produces
with the reference (``optlib.SGD``, ``torch.optim.SGD``, ``torch.optim.Adam``, or an exact
eigenvalue computation) on the same inputs. On success it prints one deterministic line; on
failure it raises :class:`AssertionError` saying which case, which step and which quantity
differ (expected against got), without giving the solution away.

Every check is split into four pure parts so that two graders can share it:

* ``cases(seed, **options)``: fresh inputs, as plain JSON data;
* ``probe(answer, case)``: runs the *learner's* code on one case and returns plain JSON data;
* ``expect(case)``: runs the *reference* on the same case and returns the same kind of data;
* ``compare(case, got, expected, where)``: raises :class:`AssertionError` on a mismatch.

In a notebook, ``checks.gd_step(gd_step)`` runs all four in the learner's kernel (advisory).
The classroom grader (:mod:`optlib.grading`) runs only ``probe`` in a sandboxed child process
and ``cases``/``expect``/``compare`` in the trusted parent, which never runs learner code.

The problems are quadratics :math:`f(\theta) = \tfrac12 \theta^\top A \theta - b^\top \theta`
with :math:`A = Q\,\mathrm{diag}(\lambda_1,\dots,\lambda_d)\,Q^\top` symmetric positive definite,
:math:`\mu = \lambda_{\min}`, :math:`L = \lambda_{\max}`, :math:`\kappa = L/\mu`, generated here
from a seed so that the checks depend only on torch and optlib's optimizers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .optim.sgd import SGD

__all__ = [
    "CHECKS",
    "Check",
    "adam_class",
    "gd_step",
    "largest_stable_lr",
    "momentum_sgd_class",
    "predict_iterations",
    "run_check",
]

Case = dict[str, Any]
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# Agreement asked of the learner, per dtype: a correct answer differs only by rounding.
RTOL = {"float64": 1e-10, "float32": 1e-5}
ATOL = {"float64": 1e-12, "float32": 1e-6}


@dataclass(frozen=True)
class Check:
    """One exercise check: see the module docstring for the roles of the four parts."""

    name: str
    cases: Callable[..., list[Case]]
    probe: Callable[[Any, Case], Any]
    expect: Callable[[Case], Any]
    compare: Callable[[Case, Any, Any, str], None]
    success: Callable[..., str]


CHECKS: dict[str, Check] = {}


def _register(check: Check) -> Check:
    CHECKS[check.name] = check
    return check


def run_check(name: str, answer: Any, **options: Any) -> None:
    """Run check ``name`` on ``answer`` in this process; print its line or raise AssertionError."""
    check = CHECKS[name]
    cases = check.cases(**options)
    for i, case in enumerate(cases):
        got = check.probe(answer, case)
        check.compare(case, got, check.expect(case), f"case {i + 1} of {len(cases)}")
    print(check.success(**options))


# --------------------------------------------------------------------------- seeded problems


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _log_uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return math.exp(_uniform(g, math.log(lo), math.log(hi)))


def _spd(g: torch.Generator, d: int, mu: float, L: float) -> torch.Tensor:
    """A random rotation of diag(λ) with λ_min = mu, λ_max = L exactly (d ≥ 2)."""
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    inner = [_log_uniform(g, mu, L) for _ in range(d - 2)]
    lam = torch.tensor([mu, L, *inner], dtype=torch.float64)
    A = Q @ torch.diag(lam) @ Q.T
    return (A + A.T) / 2


def _rounded(x: torch.Tensor, dtype: str) -> list:
    """Plain nested lists of the values ``x`` takes in ``dtype`` (exact in JSON)."""
    return x.to(DTYPES[dtype]).double().tolist()


def _tensor(data: Any, dtype: str = "float64") -> torch.Tensor:
    return torch.tensor(data, dtype=DTYPES[dtype])


def _quadratic_grad(case: Case, theta: torch.Tensor) -> torch.Tensor:
    A = _tensor(case["A"], case["dtype"])
    b = _tensor(case["b"], case["dtype"])
    return (A @ theta.reshape(-1) - b).reshape(theta.shape)


# --------------------------------------------------------------------------- comparing data


def _as_float_array(data: Any, what: str, where: str) -> torch.Tensor:
    try:
        return torch.tensor(data, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise AssertionError(f"{where}: {what} is not a list of numbers") from None


def _first_mismatch(
    got: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float
) -> tuple[int, ...] | None:
    bad = ~torch.isclose(got, expected, rtol=rtol, atol=atol, equal_nan=False)
    if not bool(bad.any()):
        return None
    return tuple(int(i) for i in bad.nonzero()[0])


def _fmt_index(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def _error_of(got: Any) -> str | None:
    """Probes run in a sandbox report an exception as ``{"error": "..."}``."""
    if isinstance(got, dict) and set(got) == {"error"}:
        return str(got["error"])
    return None


def _problem_of(got: Any) -> str:
    """What went wrong with a probe result that carries no value (never the expected answer)."""
    problem = got.get("problem") if isinstance(got, dict) else None
    return str(problem) if problem else "no result"


def _raise_if_error(got: Any, what: str, where: str) -> None:
    error = _error_of(got)
    if error is not None:
        raise AssertionError(f"{where}: {what} raised {error}")


def _as_tensor_answer(value: Any, *, like: torch.Tensor, what: str) -> tuple[list, dict]:
    """Turn what a learner's function returned into plain data, noting what was wrong with it."""
    if value is None:
        return [], {"problem": f"{what} returned None (is a `return` missing?)"}
    try:
        t = torch.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError):
        return [], {"problem": f"{what} returned a {type(value).__name__}, not a tensor"}
    if tuple(t.shape) != tuple(like.shape):
        return [], {
            "problem": f"{what} returned shape {tuple(t.shape)}, "
            f"expected the shape of theta, {tuple(like.shape)}"
        }
    return t.to(torch.float64).reshape(-1).tolist(), {}


# --------------------------------------------------------------------------- one GD step


def _gd_cases(seed: int = 0, n_cases: int = 4, steps: int = 1) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        dtype = "float64" if i % 2 == 0 else "float32"
        shape = [2 + i % 3] if i % 3 != 2 else [2, 1 + i % 4]
        d = math.prod(shape)
        mu, L = _log_uniform(g, 0.05, 1.0), _log_uniform(g, 2.0, 20.0)
        A = _spd(g, d, mu, L)
        L_true = float(torch.linalg.eigvalsh(A).max())
        cases.append(
            {
                "dtype": dtype,
                "shape": shape,
                "lr": _uniform(g, 0.1, 0.9) * 2 / L_true,
                "A": _rounded(A, dtype),
                "b": _rounded(torch.randn(d, generator=g, dtype=torch.float64), dtype),
                "theta0": _rounded(torch.randn(d, generator=g, dtype=torch.float64), dtype),
                "steps": int(steps),
            }
        )
    return cases


def _gd_probe(answer: Callable, case: Case) -> dict:
    theta = _tensor(case["theta0"], case["dtype"]).reshape(case["shape"])
    trajectory, modified = [], []
    for k in range(case["steps"]):
        grad = _quadratic_grad(case, theta)
        theta_in, grad_in = theta.clone(), grad.clone()
        new = answer(theta, grad, case["lr"])
        if not torch.equal(theta, theta_in) or not torch.equal(grad, grad_in):
            modified.append(k + 1)
        values, problem = _as_tensor_answer(new, like=theta, what="gd_step")
        if problem:
            return {"trajectory": trajectory, **problem, "step": k + 1}
        trajectory.append(values)
        theta = _tensor(values, case["dtype"]).reshape(case["shape"])
    return {"trajectory": trajectory, "modified_input_at": modified}


def _gd_expect(case: Case) -> dict:
    p = _tensor(case["theta0"], case["dtype"]).reshape(case["shape"]).requires_grad_()
    opt = SGD([p], lr=case["lr"])
    trajectory = []
    for _ in range(case["steps"]):
        p.grad = _quadratic_grad(case, p.detach())
        opt.step()
        trajectory.append(p.detach().double().reshape(-1).tolist())
    return {"trajectory": trajectory}


def _gd_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"gd_step, {where} ({case['dtype']} theta of shape {tuple(case['shape'])}, "
        f"lr={case['lr']:.4g})"
    )
    _raise_if_error(got, "gd_step", where)
    if not isinstance(got, dict) or "trajectory" not in got:
        raise AssertionError(f"{where}: no result")
    if got.get("problem"):
        raise AssertionError(f"{where}, step {got.get('step')}: {got['problem']}")
    if got.get("modified_input_at"):
        raise AssertionError(
            f"{where}: gd_step changed its input `theta` or `grad` in place at step "
            f"{got['modified_input_at'][0]}; return a new tensor and leave the inputs unchanged"
        )
    steps = len(expected["trajectory"])
    traj = _as_float_array(got["trajectory"], "the trajectory", where)
    if tuple(traj.shape) != (steps, len(case["theta0"])):
        raise AssertionError(f"{where}: expected {steps} step(s) of {len(case['theta0'])} numbers")
    ref = torch.tensor(expected["trajectory"], dtype=torch.float64)
    for k in range(steps):
        index = _first_mismatch(traj[k], ref[k], RTOL[case["dtype"]], ATOL[case["dtype"]])
        if index is not None:
            at = tuple(int(i) for i in torch.unravel_index(torch.tensor(index[0]), case["shape"]))
            raise AssertionError(
                f"{where}: after step {k + 1} of {steps}, the new theta{_fmt_index(at)} differs "
                f"from optlib.SGD's: expected {float(ref[k][index]):.10g}, "
                f"got {float(traj[k][index]):.10g}"
            )


def _gd_success(seed: int = 0, n_cases: int = 4, steps: int = 1) -> str:
    what = "1 step" if steps == 1 else f"{steps} steps"
    return (
        f"gd_step: OK, matches optlib.SGD on {n_cases} seeded quadratics "
        f"({what} each, float64 and float32)"
    )


_register(Check("gd_step", _gd_cases, _gd_probe, _gd_expect, _gd_compare, _gd_success))


def gd_step(answer: Callable, *, seed: int = 0, n_cases: int = 4, steps: int = 1) -> None:
    r"""Check ``answer(theta, grad, lr)``, one gradient-descent step
    :math:`\theta - \eta\, g`, against :class:`optlib.SGD` over ``steps`` steps on seeded
    quadratics. ``answer`` must return a new tensor and leave ``theta`` and ``grad`` unchanged.
    """
    run_check("gd_step", answer, seed=seed, n_cases=n_cases, steps=steps)


# --------------------------------------------------------------------------- stability limit


def _lr_cases(seed: int = 0, n_cases: int = 4, max_dim: int = 4) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        d = 2 + i % max(1, max_dim - 1)
        mu = _log_uniform(g, 0.01, 1.0)
        L = mu * _log_uniform(g, 2.0, 500.0)
        cases.append({"A": _spd(g, d, mu, L).tolist(), "seed": int(seed) * 1000 + i})
    return cases


def _number(value: Any, what: str) -> dict:
    if value is None:
        return {"problem": f"{what} returned None (is a `return` missing?)"}
    try:
        t = torch.as_tensor(value)
        if t.numel() != 1:
            return {"problem": f"{what} returned {t.numel()} numbers, expected one"}
        return {"value": float(t.reshape(()))}
    except (TypeError, ValueError, RuntimeError):
        return {"problem": f"{what} returned a {type(value).__name__}, not a number"}


def _lr_probe(answer: Callable, case: Case) -> dict:
    A = _tensor(case["A"])
    A_in = A.clone()
    out = _number(answer(A), "largest_stable_lr")
    if not torch.equal(A, A_in):
        out["modified_input"] = True
    return out


def _lr_expect(case: Case) -> dict:
    L = float(torch.linalg.eigvalsh(_tensor(case["A"])).max())
    return {"value": 2.0 / L}


def _gd_error_growth(A: torch.Tensor, lr: float, steps: int, seed: int) -> float:
    """Run optlib.SGD on f = ½θᵀAθ (minimum 0) and return ‖θ_steps‖ / ‖θ_0‖."""
    theta0 = torch.randn(A.shape[0], generator=_generator(seed), dtype=torch.float64)
    p = theta0.clone().requires_grad_()
    opt = SGD([p], lr=lr)
    for _ in range(steps):
        p.grad = A @ p.detach()
        opt.step()
    return float(p.detach().norm() / theta0.norm())


def _lr_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    A = _tensor(case["A"])
    lam = torch.linalg.eigvalsh(A)
    where = (
        f"largest_stable_lr, {where} ({A.shape[0]}x{A.shape[0]} quadratic, "
        f"condition number {float(lam.max() / lam.min()):.4g})"
    )
    _raise_if_error(got, "largest_stable_lr", where)
    if not isinstance(got, dict) or "value" not in got:
        raise AssertionError(f"{where}: {_problem_of(got)}")
    if got.get("modified_input"):
        raise AssertionError(f"{where}: largest_stable_lr changed its input A in place")
    value = got["value"]
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AssertionError(f"{where}: expected a finite learning rate, got {value!r}")
    exp = expected["value"]
    if math.isclose(value, exp, rel_tol=1e-6):
        return
    if value > exp:
        growth = _gd_error_growth(A, value, 200, case["seed"])
        if not math.isfinite(growth):
            seen = " (measured: ||theta - theta*|| overflowed within 200 steps)"
        elif growth > 2:
            seen = f" (measured: ||theta - theta*|| grew x{growth:.3g} in 200 steps)"
        else:
            seen = ""
        detail = "too large: gradient descent diverges at your learning rate" + seen
    else:
        detail = "too small: gradient descent is still stable at larger learning rates"
    raise AssertionError(f"{where}: {detail}; expected {exp:.8g}, got {value:.8g}")


def _lr_success(seed: int = 0, n_cases: int = 4, max_dim: int = 4) -> str:
    return (
        f"largest_stable_lr: OK, matches the stability limit of {n_cases} seeded quadratics "
        f"(dimension 2 to {max(2, min(max_dim, n_cases + 1))}, relative error < 1e-6)"
    )


_register(Check("largest_stable_lr", _lr_cases, _lr_probe, _lr_expect, _lr_compare, _lr_success))


def largest_stable_lr(answer: Callable, *, seed: int = 0, n_cases: int = 4, max_dim: int = 4):
    r"""Check ``answer(A)``, the largest learning rate :math:`\eta` for which gradient descent
    on :math:`f(\theta) = \tfrac12\theta^\top A\theta - b^\top\theta` converges (the supremum of
    the stable rates), on seeded symmetric positive definite matrices ``A`` (float64 tensors).
    """
    run_check("largest_stable_lr", answer, seed=seed, n_cases=n_cases, max_dim=max_dim)


# --------------------------------------------------------------------------- predicted iterations


def _rate(kappa: float) -> float:
    return (kappa - 1) / (kappa + 1)


def _iter_cases(
    seed: int = 0, n_cases: int = 4, max_kappa: float = 1000.0, min_tol: float = 1e-10
) -> list[Case]:
    g = _generator(seed)
    cases = []
    while len(cases) < n_cases:
        if cases:
            kappa, tol = _log_uniform(g, 1.5, max_kappa), _log_uniform(g, min_tol, 1e-2)
        else:  # a well-conditioned case, where the large-kappa approximation of the rate fails
            kappa, tol = _uniform(g, 1.2, 1.6), _log_uniform(g, min(min_tol, 1e-6), 1e-6)
        mu = _log_uniform(g, 0.01, 1.0)
        angle = _uniform(g, 0.0, math.pi)
        x0 = [_uniform(g, -1.0, 1.0) for _ in range(2)]
        # Keep away from ties: where the exact count is within rounding of an integer, a run
        # and a correct formula may legitimately disagree by one.
        k_real = math.log(tol) / math.log(_rate(kappa))
        if abs(k_real - round(k_real)) < 1e-6 or max(abs(v) for v in x0) < 0.1:
            continue
        cases.append({"kappa": kappa, "tol": tol, "mu": mu, "angle": angle, "theta0": x0})
    return cases


def _iter_probe(answer: Callable, case: Case) -> dict:
    value = answer(case["kappa"], case["tol"])
    out = _number(value, "predict_iterations")
    if "value" in out and not float(out["value"]).is_integer():
        out = {"problem": f"predict_iterations returned {out['value']!r}, not a whole number"}
    return out


def _iter_expect(case: Case) -> dict:
    """Run GD with η = 2/(L+μ) on a rotated diag(μ, κμ) from θ₀ and count the iterations until
    ‖θ_k − θ*‖ ≤ tol·‖θ₀ − θ*‖ (here θ* = 0)."""
    mu, kappa = case["mu"], case["kappa"]
    c, s = math.cos(case["angle"]), math.sin(case["angle"])
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    A = R @ torch.diag(torch.tensor([mu, kappa * mu], dtype=torch.float64)) @ R.T
    p = torch.tensor(case["theta0"], dtype=torch.float64).requires_grad_()
    start = float(p.detach().norm())
    opt = SGD([p], lr=2.0 / (mu + kappa * mu))
    k = 0
    while float(p.detach().norm()) > case["tol"] * start:
        p.grad = A @ p.detach()
        opt.step()
        k += 1
    return {"value": k}


def _iter_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"predict_iterations, {where} (kappa={case['kappa']:.4g}, tol={case['tol']:.3g}, "
        "step 2/(L+mu))"
    )
    _raise_if_error(got, "predict_iterations", where)
    if not isinstance(got, dict) or "value" not in got:
        raise AssertionError(f"{where}: {_problem_of(got)}")
    value, measured = got["value"], expected["value"]
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AssertionError(f"{where}: expected a whole number, got {value!r}")
    if abs(value - measured) > 1:
        raise AssertionError(
            f"{where}: running gradient descent took {measured} iterations to shrink the "
            f"error by tol; you predicted {int(value)}"
        )


def _iter_success(
    seed: int = 0, n_cases: int = 4, max_kappa: float = 1000.0, min_tol: float = 1e-10
) -> str:
    return (
        f"predict_iterations: OK, within one iteration of gradient-descent runs on {n_cases} "
        f"seeded quadratics (kappa up to {max_kappa:g}, tol down to {min_tol:g})"
    )


_register(
    Check(
        "predict_iterations", _iter_cases, _iter_probe, _iter_expect, _iter_compare, _iter_success
    )
)


def predict_iterations(
    answer: Callable,
    *,
    seed: int = 0,
    n_cases: int = 4,
    max_kappa: float = 1000.0,
    min_tol: float = 1e-10,
) -> None:
    r"""Check ``answer(kappa, tol)``, the predicted number of gradient-descent iterations with
    the step :math:`\eta = 2/(L+\mu)` until :math:`\|\theta_k-\theta^*\| \le
    \mathrm{tol}\,\|\theta_0-\theta^*\|` on a 2-D quadratic of condition number ``kappa``,
    against runs of :class:`optlib.SGD` (within one iteration).
    """
    run_check(
        "predict_iterations",
        answer,
        seed=seed,
        n_cases=n_cases,
        max_kappa=max_kappa,
        min_tol=min_tol,
    )


# --------------------------------------------------------------------------- optimizer classes


def _class_cases(
    seed: int, n_cases: int, steps: int, hyper: Callable[[torch.Generator, int], dict]
) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        shapes = [[3], [2, 2]] if i % 2 == 0 else [[4]]
        problems = []
        for shape in shapes:
            d = math.prod(shape)
            A = _spd(g, d, _log_uniform(g, 0.1, 1.0), _log_uniform(g, 2.0, 10.0))
            problems.append(
                {
                    "shape": shape,
                    "A": A.tolist(),
                    "b": torch.randn(d, generator=g, dtype=torch.float64).tolist(),
                    "theta0": torch.randn(d, generator=g, dtype=torch.float64).tolist(),
                }
            )
        cases.append({"params": problems, "hyper": hyper(g, i), "steps": int(steps)})
    return cases


def _class_loss(problems: list[dict], params: list[torch.Tensor]) -> torch.Tensor:
    """Quadratic plus a small quartic term, so gradients change from step to step."""
    total = torch.zeros((), dtype=torch.float64)
    for prob, p in zip(problems, params):
        A, b, x = _tensor(prob["A"]), _tensor(prob["b"]), p.reshape(-1)
        total = total + 0.5 * x @ A @ x - b @ x + 0.05 * (x**4).sum()
    return total


def _class_run(factory: Callable, case: Case) -> list[list[list[float]]]:
    params = [
        _tensor(prob["theta0"]).reshape(prob["shape"]).requires_grad_() for prob in case["params"]
    ]
    opt = factory(params, **case["hyper"])
    trajectory = []
    for _ in range(case["steps"]):
        for p in params:
            p.grad = None
        _class_loss(case["params"], params).backward()
        opt.step()
        trajectory.append([p.detach().double().reshape(-1).tolist() for p in params])
    return trajectory


def _class_probe(answer: Callable, case: Case) -> dict:
    return {"trajectory": _class_run(answer, case)}


def _class_compare(name: str, reference: str, hint: Callable[[list[float]], str]):
    def compare(case: Case, got: Any, expected: dict, where: str) -> None:
        hyper = ", ".join(f"{k}={v!r}" for k, v in case["hyper"].items())
        where = f"{name}, {where} ({hyper})"
        _raise_if_error(got, "your optimizer", where)
        if not isinstance(got, dict) or "trajectory" not in got:
            raise AssertionError(f"{where}: no result")
        ref = expected["trajectory"]
        traj = got["trajectory"]
        if not isinstance(traj, list) or len(traj) != len(ref):
            raise AssertionError(f"{where}: expected {len(ref)} steps")
        gaps = []
        first = None
        for k, (mine, theirs) in enumerate(zip(traj, ref)):
            if not isinstance(mine, list) or len(mine) != len(theirs):
                raise AssertionError(f"{where}, step {k + 1}: wrong number of parameters")
            gap = 0.0
            for j, (a, e) in enumerate(zip(mine, theirs)):
                a_t = _as_float_array(a, f"parameter {j}", where)
                e_t = torch.tensor(e, dtype=torch.float64)
                if a_t.shape != e_t.shape:
                    raise AssertionError(f"{where}, step {k + 1}: parameter {j} has a wrong shape")
                idx = _first_mismatch(a_t, e_t, 1e-9, 1e-12)
                rel = float((a_t - e_t).norm() / e_t.norm().clamp_min(1e-300))
                gap = max(gap, rel if math.isfinite(rel) else math.inf)
                if idx is not None and first is None:
                    shape = tuple(case["params"][j]["shape"])
                    at = tuple(int(i) for i in torch.unravel_index(torch.tensor(idx[0]), shape))
                    first = (
                        f"{where}: after step {k + 1}, parameter {j}{_fmt_index(at)} differs "
                        f"from {reference}: expected {float(e_t[idx]):.10g}, "
                        f"got {float(a_t[idx]):.10g}"
                    )
            gaps.append(gap)
        if first is not None:
            raise AssertionError(first + hint(gaps))

    return compare


def _no_hint(gaps: list[float]) -> str:
    first_bad = next((i for i, g in enumerate(gaps) if g > 1e-9), None)
    if first_bad == 1:
        return " (step 1 agrees, step 2 does not: look at how the buffer is updated)"
    return ""


def _momentum_hyper(nesterov: bool) -> Callable[[torch.Generator, int], dict]:
    def hyper(g: torch.Generator, i: int) -> dict:
        h = {"lr": round(_uniform(g, 0.01, 0.1), 4), "momentum": round(_uniform(g, 0.5, 0.95), 3)}
        if nesterov:
            h["nesterov"] = bool(i % 2)
        return h

    return hyper


def _momentum_cases(seed: int = 0, n_cases: int = 3, steps: int = 20, nesterov: bool = False):
    return _class_cases(seed, n_cases, steps, _momentum_hyper(nesterov))


def _momentum_expect(case: Case) -> dict:
    return {"trajectory": _class_run(lambda ps, **h: torch.optim.SGD(ps, foreach=False, **h), case)}


def _momentum_success(seed: int = 0, n_cases: int = 3, steps: int = 20, nesterov: bool = False):
    extra = ", with and without nesterov" if nesterov else ""
    return (
        f"momentum_sgd_class: OK, matches torch.optim.SGD(momentum=...) over {steps} steps "
        f"on {n_cases} seeded problems{extra}"
    )


_register(
    Check(
        "momentum_sgd_class",
        _momentum_cases,
        _class_probe,
        _momentum_expect,
        _class_compare("momentum_sgd_class", "torch.optim.SGD", _no_hint),
        _momentum_success,
    )
)


def momentum_sgd_class(
    answer: type, *, seed: int = 0, n_cases: int = 3, steps: int = 20, nesterov: bool = False
) -> None:
    r"""Check an SGD-with-momentum optimizer class, constructed as ``answer(params, lr=...,
    momentum=...)`` (and ``nesterov=...`` when ``nesterov=True``), whose ``step()`` reads
    ``p.grad``, against :class:`torch.optim.SGD` (heavy ball :math:`b \leftarrow \mu b + g`,
    :math:`\theta \leftarrow \theta - \eta b`) over ``steps`` steps.
    """
    run_check(
        "momentum_sgd_class", answer, seed=seed, n_cases=n_cases, steps=steps, nesterov=nesterov
    )


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


# --------------------------------------------------------------------------- chapter modules
# Each later chapter keeps its checks in its own module, which registers them in CHECKS; they
# are re-exported here so that exercises call them as ``checks.<name>(...)``.
from .checks_adagrad import *  # noqa: E402, F403  (chapter 4)
from .checks_adam import *  # noqa: E402, F403  (chapter 5)
from .checks_momentum import *  # noqa: E402, F403  (chapter 3)
from .checks_preconditioners import *  # noqa: E402, F403  (chapter 7)
from .checks_sgd import *  # noqa: E402, F403  (chapter 2)
from .checks_weight_decay import *  # noqa: E402, F403  (chapter 6)
