r"""Exercise checks for chapter 1 (gradient descent), registered in
:data:`~optlib.course.checks.CHECKS`.

Each check follows :mod:`optlib.course.checks._core`: seeded JSON ``cases``, a ``probe`` that
runs the learner's code, an ``expect`` that runs the reference, and a ``compare`` that raises
:class:`AssertionError` naming the case, step and quantity that differ without giving the
solution away. The problems are quadratics
:math:`f(\theta) = \tfrac12 \theta^\top A \theta - b^\top \theta` with :math:`A` symmetric
positive definite, :math:`\mu = \lambda_{\min}`, :math:`L = \lambda_{\max}`,
:math:`\kappa = L/\mu`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ...optim.sgd import SGD
from ._core import (
    ATOL,
    RTOL,
    Case,
    Check,
    _as_tensor_answer,
    _first_step_mismatch,
    _fmt_index,
    _generator,
    _log_uniform,
    _number,
    _problem_of,
    _quadratic_grad,
    _raise_if_error,
    _register,
    _rounded,
    _spd,
    _tensor,
    _trajectory_answer,
    _uniform,
    run_check,
)

__all__ = ["gd_step", "largest_stable_lr", "predict_iterations"]

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
    traj, ref = _trajectory_answer(
        got, expected, len(case["theta0"]), where, name="gd_step",
        inputs="its input `theta` or `grad`",
    )
    miss = _first_step_mismatch(traj, ref, RTOL[case["dtype"]], ATOL[case["dtype"]])
    if miss is not None:
        k, index = miss
        at = tuple(int(i) for i in torch.unravel_index(torch.tensor(index[0]), case["shape"]))
        raise AssertionError(
            f"{where}: after step {k + 1} of {len(ref)}, the new theta{_fmt_index(at)} differs "
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
