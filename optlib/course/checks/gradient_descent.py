r"""Exercise checks for chapter 1 (gradient descent), registered in
:data:`~optlib.course.checks.CHECKS`.

Each check follows :mod:`optlib.course.checks._core`: seeded JSON ``cases``, a ``probe`` that
runs the learner's code, an ``expect`` that runs the reference, and a ``compare`` that raises
:class:`AssertionError` naming the case, step and quantity that differ without giving the
solution away. The problems are quadratics
:math:`f(\theta) = \tfrac12 \theta^\top A \theta - b^\top \theta` with :math:`A` symmetric
positive definite, :math:`\mu = \lambda_{\min}`, :math:`L = \lambda_{\max}`,
:math:`\kappa = L/\mu` (for :func:`armijo_step`, plus a quartic term
:math:`q\sum_i \theta_i^4`, so that the best step changes from point to point).

* :func:`armijo_step`: one gradient step with an Armijo backtracking line search, against
  :func:`optlib.experiments.line_search.armijo_step` (exercise 1);
* :func:`largest_stable_lr`: the stability limit :math:`2/L` (exercise 2);
* :func:`predict_iterations`: the exact number of GD iterations with :math:`\eta = 2/(L+\mu)`,
  against runs of :class:`optlib.SGD` (exercise 3);
* :func:`gd_step`: one plain gradient-descent step (kept for the grading machinery's own tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ...experiments.line_search import armijo_step as _armijo_reference
from ...optim.sgd import SGD
from ._core import (
    ATOL,
    DTYPES,
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
    no_delegation,
    run_check,
)

__all__ = ["armijo_step", "gd_step", "largest_stable_lr", "predict_iterations"]

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


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN equal to NaN (a diverging answer is not an in-place one)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _stepping_probe(
    step: Callable[[torch.Tensor, torch.Tensor], Any],
    case: Case,
    grad_of: Callable[[Case, torch.Tensor], torch.Tensor],
    what: str,
    *,
    keep_dtype: bool = False,
) -> dict:
    """Run ``step(theta, grad)`` (the learner's update) for ``case["steps"]`` steps from
    ``theta0``, the gradient from ``grad_of``, and record the trajectory as plain data, noting
    inputs changed in place, and (``keep_dtype``) results in another dtype than ``theta``'s."""
    theta = _tensor(case["theta0"], case["dtype"]).reshape(case["shape"])
    trajectory, modified = [], []
    for k in range(case["steps"]):
        grad = grad_of(case, theta)
        theta_in, grad_in = theta.clone(), grad.clone()
        new = step(theta, grad)
        if not _same(theta, theta_in) or not _same(grad, grad_in):
            modified.append(k + 1)
        values, problem = _as_tensor_answer(new, like=theta, what=what)
        other_dtype = isinstance(new, torch.Tensor) and new.dtype != theta.dtype
        if not problem and keep_dtype and other_dtype:
            problem = {
                "problem": f"{what} returned a {str(new.dtype).replace('torch.', '')} tensor for a "
                f"{case['dtype']} theta: keep theta's dtype"
            }
        if problem:
            return {"trajectory": trajectory, **problem, "step": k + 1}
        trajectory.append(values)
        theta = _tensor(values, case["dtype"]).reshape(case["shape"])
    return {"trajectory": trajectory, "modified_input_at": modified}


def _gd_probe(answer: Callable, case: Case) -> dict:
    return _stepping_probe(lambda theta, grad: answer(theta, grad, case["lr"]), case,
                           _quadratic_grad, "gd_step")  # fmt: skip


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


# --------------------------------------------------------------------------- Armijo backtracking

# A case is kept only if every trial of the reference's search clears Armijo's condition, or
# fails it, by at least this fraction of the loss's scale: a right answer that sums ‖g‖² in
# another order, or evaluates in float32, then takes the same step as the reference.
_TIE_MARGIN = 1e-4


def _armijo_loss(case: Case, theta: torch.Tensor) -> torch.Tensor:
    r"""The case's loss :math:`\tfrac12 x^\top A x - b^\top x + q\sum_i x_i^4`, :math:`x` the
    flattened ``theta``, evaluated in float64 (a 0-d tensor)."""
    x = theta.detach().to(torch.float64).reshape(-1)
    A, b = _tensor(case["A"]), _tensor(case["b"])
    return 0.5 * x @ A @ x - b @ x + case["q"] * (x**4).sum()


def _armijo_grad(case: Case, theta: torch.Tensor) -> torch.Tensor:
    """The exact gradient of :func:`_armijo_loss` at ``theta``, in ``theta``'s dtype and shape."""
    x = theta.detach().to(torch.float64).reshape(-1)
    A, b = _tensor(case["A"]), _tensor(case["b"])
    g = A @ x - b + 4 * case["q"] * x**3
    return g.to(theta.dtype).reshape(theta.shape)


def _armijo_reference_run(case: Case) -> tuple[list[list[float]], list[float], float]:
    """The reference trajectory, its accepted steps and the closest call of the condition."""
    theta = _tensor(case["theta0"], case["dtype"]).reshape(case["shape"])
    trajectory, steps, closest = [], [], math.inf

    def f(x: torch.Tensor) -> torch.Tensor:
        return _armijo_loss(case, x)

    for _ in range(case["steps"]):
        g = _armijo_grad(case, theta)
        f0, slope = float(f(theta)), float((g * g).sum())
        theta_new, t, _ = _armijo_reference(
            f, theta, g, case["lr"], c1=case["c1"], shrink=case["shrink"]
        )
        if slope > 0:  # how close each trial up to the accepted one came to the boundary
            trial = case["lr"]
            while trial >= t * (1 - 1e-12):
                gap = float(f(theta - trial * g)) - (f0 - case["c1"] * trial * slope)
                closest = min(closest, abs(gap) / (abs(f0) + trial * slope))
                trial *= case["shrink"]
        trajectory.append(theta_new.double().reshape(-1).tolist())
        steps.append(t)
        theta = theta_new
    return trajectory, steps, closest


def _armijo_cases(
    seed: int = 0, n_cases: int = 6, steps: int = 3, kind: str = "default"
) -> list[Case]:
    """Seeded problems. ``kind="default"`` cycles through the situations the statement names:
    float64 and float32, several shapes, a first trial that passes, several reductions, large
    gradients, a zero gradient, strict ``c1`` and other ``shrink`` factors. ``kind="hard"``:
    first trials far too large (15 to 40 reductions), ``shrink`` close to 1, large parameters."""
    if kind not in ("default", "hard"):
        raise ValueError(f"Invalid kind: {kind!r}; allowed values are 'default', 'hard'")
    g = _generator(seed)
    cases: list[Case] = []
    attempt = 0
    while len(cases) < n_cases:
        i, attempt = len(cases), attempt + 1
        if attempt > 50 * n_cases:
            raise RuntimeError("could not generate Armijo cases away from ties")
        role = i % 6
        dtype = "float64" if role in (0, 2, 4, 5) else "float32"
        shape = [[3], [2, 2], [4], [2, 3], [3], [2]][role]
        d = math.prod(shape)
        mu, L = _log_uniform(g, 0.05, 1.0), _log_uniform(g, 2.0, 20.0)
        c1, shrink, q, lr = 1e-4, 0.5, _uniform(g, 0.01, 0.1), None
        theta0 = torch.randn(d, generator=g, dtype=torch.float64)
        b = torch.randn(d, generator=g, dtype=torch.float64)
        if kind == "hard":
            L = _log_uniform(g, 50.0, 500.0)
            shrink = [0.5, 0.9, 0.7][i % 3]
            far = (1e4, 1e6) if shrink < 0.8 else (30.0, 300.0)  # 15 to 40 reductions
            lr = _log_uniform(g, *far) / L  # far beyond 2/L
            theta0 = theta0 * _log_uniform(g, 1.0, 30.0)
            c1 = _uniform(g, 1e-4, 0.5)
        elif role == 0:  # a few reductions
            lr = _uniform(g, 4.0, 16.0) / L
        elif role == 1:  # the first trial passes
            lr, c1 = _uniform(g, 0.2, 0.8) / L, 0.3
        elif role == 2:  # large curvature and gradients: a clipped step would show
            L = _log_uniform(g, 300.0, 1000.0)
            theta0 = theta0 * 2.0 + torch.sign(theta0) * 1.0
            lr = 1.0
        elif role == 3:  # a strict condition and another shrink factor
            lr, c1, shrink = _uniform(g, 2.0, 8.0) / L, 0.5, 0.3
        elif role == 4:  # a zero gradient: at the minimiser of a quadratic-plus-quartic at 0
            theta0, b, lr = torch.zeros_like(theta0), torch.zeros_like(b), 1.0
        else:  # c1 close to 1, shrink close to 1: plain decrease is not enough
            lr, c1, shrink = _uniform(g, 1.5, 4.0) / L, 0.9, 0.8
        case = {
            "dtype": dtype,
            "shape": shape,
            "A": _rounded(_spd(g, d, mu, L), "float64"),
            "b": b.tolist(),
            "q": q,
            "theta0": _rounded(theta0, dtype),
            "lr": float(lr),
            "c1": float(c1),
            "shrink": float(shrink),
            "steps": int(steps),
        }
        _, _, closest = _armijo_reference_run(case)
        if closest > _TIE_MARGIN:
            cases.append(case)
    return cases


def _armijo_probe(answer: Callable, case: Case) -> dict:
    def f(x: torch.Tensor) -> torch.Tensor:  # the loss, a callback of the probe's own
        return _armijo_loss(case, x)

    def step(theta: torch.Tensor, grad: torch.Tensor) -> Any:
        return answer(f, theta, grad, case["lr"], case["c1"], case["shrink"])

    return _stepping_probe(step, case, _armijo_grad, "armijo_step", keep_dtype=True)


def _armijo_expect(case: Case) -> dict:
    trajectory, steps, _ = _armijo_reference_run(case)
    return {"trajectory": trajectory, "t": steps}


def _armijo_diagnosis(case: Case, before: torch.Tensor, got: torch.Tensor, t_ref: float) -> str:
    """What kind of step the learner took from ``before`` (flat float64), without the answer."""
    theta = before.to(DTYPES[case["dtype"]]).reshape(case["shape"])
    g = _armijo_grad(case, theta).double().reshape(-1)
    gg = float(g @ g)
    if gg == 0:
        return "the gradient is zero here: the first trial passes and theta stays where it is"
    t = float((before - got) @ g) / gg
    off_line = float((got - (before - t * g)).norm()) > 1e-6 * (float(before.norm()) + t * gg**0.5)
    if off_line or not t > 0:
        return (
            "your new theta is not theta - t * grad for any positive t: step along -grad, "
            "without clipping or rescaling it"
        )
    k = math.log(t / case["lr"]) / math.log(case["shrink"])
    k_ref = math.log(t_ref / case["lr"]) / math.log(case["shrink"])
    if abs(k - round(k)) > 1e-3:
        return (
            f"your step t = {t:.6g} is not lr * shrink**k for a whole k >= 0: start from "
            "t = lr and multiply by shrink"
        )
    if round(k) < round(k_ref):
        return (
            f"your step t = lr * shrink**{round(k)} does not satisfy the sufficient-decrease "
            "condition f(theta - t g) <= f(theta) - c1 * t * ||g||^2 here: keep shrinking"
        )
    return (
        f"your step t = lr * shrink**{round(k)} is smaller than needed: a larger trial "
        "already satisfied the condition (take the first one that does)"
    )


def _armijo_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"armijo_step, {where} ({case['dtype']} theta of shape {tuple(case['shape'])}, "
        f"lr={case['lr']:.4g}, c1={case['c1']:.3g}, shrink={case['shrink']:.3g})"
    )
    _raise_if_error(got, "armijo_step", where)
    if isinstance(got, dict) and got.get("problem"):
        raise AssertionError(f"{where}, step {got.get('step')}: {got['problem']}")
    traj, ref = _trajectory_answer(
        got, expected, len(case["theta0"]), where, name="armijo_step",
        inputs="its input `theta` or `grad`",
    )  # fmt: skip
    miss = _first_step_mismatch(traj, ref, RTOL[case["dtype"]], ATOL[case["dtype"]])
    if miss is None:
        return
    k, index = miss
    before = _tensor(case["theta0"]) if k == 0 else ref[k - 1]
    at = tuple(int(i) for i in torch.unravel_index(torch.tensor(index[0]), case["shape"]))
    hint = _armijo_diagnosis(case, before, traj[k], expected["t"][k])
    raise AssertionError(
        f"{where}: after step {k + 1} of {len(ref)}, the new theta{_fmt_index(at)} is "
        f"{float(traj[k][index]):.10g}, expected {float(ref[k][index]):.10g}: {hint}"
    )


def _armijo_success(seed: int = 0, n_cases: int = 6, steps: int = 3, kind: str = "default"):
    what = "first trials far too large, shrink near 1" if kind == "hard" else "several shapes"
    return (
        f"armijo_step: OK, takes the first sufficient step of lr * shrink**k on {n_cases} "
        f"seeded problems ({steps} steps each, float64 and float32, {what})"
    )


_register(
    Check("armijo_step", _armijo_cases, _armijo_probe, _armijo_expect, _armijo_compare,
          _armijo_success)
)  # fmt: skip
no_delegation(
    "armijo_step", "backtracking line search", "optlib.experiments.line_search",
    "optlib.linalg.newton", "torch.optim.LBFGS", "torch.optim.lbfgs", "optlib.LBFGS",
    "optlib.optim.lbfgs",
)  # fmt: skip


def armijo_step(
    answer: Callable, *, seed: int = 0, n_cases: int = 6, steps: int = 3, kind: str = "default"
) -> None:
    r"""Check ``answer(f, theta, grad, lr, c1, shrink)``: one gradient step with backtracking,
    :math:`\theta - t\,g` with the first :math:`t \in \{\eta_0, \rho\eta_0, \rho^2\eta_0,
    \dots\}` (:math:`\eta_0` = ``lr``, :math:`\rho` = ``shrink``) that satisfies Armijo's
    condition :math:`f(\theta - t g) \le f(\theta) - c_1 t \|g\|^2`, returned as a new tensor of
    ``theta``'s shape and dtype, ``theta`` and ``grad`` unchanged; ``steps`` consecutive steps on
    each seeded problem, against :func:`optlib.experiments.line_search.armijo_step`.
    """
    run_check("armijo_step", answer, seed=seed, n_cases=n_cases, steps=steps, kind=kind)


# --------------------------------------------------------------------------- stability limit


def _lr_cases(
    seed: int = 0, n_cases: int = 4, max_dim: int = 4, close_top: bool = False
) -> list[Case]:
    """Seeded SPD matrices. ``close_top``: the two largest eigenvalues within 1% of each other
    (and larger matrices), where a power iteration stopped after a fixed few iterations has not
    converged."""
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        d = 2 + i % max(1, max_dim - 1)
        mu = _log_uniform(g, 0.01, 1.0)
        L = mu * _log_uniform(g, 2.0, 500.0)
        A = _spd(g, d, mu, L)
        if close_top:
            lam, Q = torch.linalg.eigh(A)
            lam[-2] = lam[-1] * (1 - _uniform(g, 1e-3, 1e-2))  # a near tie at the top
            A = (Q * lam) @ Q.T
            A = (A + A.T) / 2
        cases.append({"A": A.tolist(), "seed": int(seed) * 1000 + i})
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


def _lr_success(
    seed: int = 0, n_cases: int = 4, max_dim: int = 4, close_top: bool = False
) -> str:
    top = ", the top two eigenvalues within 1%" if close_top else ""
    return (
        f"largest_stable_lr: OK, matches the stability limit of {n_cases} seeded quadratics "
        f"(dimension 2 to {max(2, min(max_dim, n_cases + 1))}{top}, relative error < 1e-6)"
    )


_register(Check("largest_stable_lr", _lr_cases, _lr_probe, _lr_expect, _lr_compare, _lr_success))


def largest_stable_lr(
    answer: Callable,
    *,
    seed: int = 0,
    n_cases: int = 4,
    max_dim: int = 4,
    close_top: bool = False,
) -> None:
    r"""Check ``answer(A)``, the largest learning rate :math:`\eta` for which gradient descent
    on :math:`f(\theta) = \tfrac12\theta^\top A\theta - b^\top\theta` converges (the supremum of
    the stable rates), on seeded symmetric positive definite matrices ``A`` (float64 tensors), to
    a relative error of :math:`10^{-6}`.
    """
    run_check(
        "largest_stable_lr",
        answer,
        seed=seed,
        n_cases=n_cases,
        max_dim=max_dim,
        close_top=close_top,
    )


# --------------------------------------------------------------------------- predicted iterations


def _rate(kappa: float) -> float:
    return (kappa - 1) / (kappa + 1)


def _iter_cases(
    seed: int = 0,
    n_cases: int = 4,
    max_kappa: float = 1000.0,
    min_tol: float = 1e-10,
    near_one: bool = False,
    kappa_one: bool = False,
) -> list[Case]:
    """Seeded (kappa, tol) pairs on rotated 2-D quadratics. The first case is well conditioned
    (the large-kappa approximation of the rate fails there); with ``kappa_one`` the second has
    kappa = 1 exactly (one step reaches the minimiser); ``near_one`` draws every case from
    1 < kappa < 1.05, where the count is a few steps and every rounding of the formula shows."""
    g = _generator(seed)
    cases = []
    while len(cases) < n_cases:
        if near_one:
            kappa, tol = 1 + _log_uniform(g, 5e-4, 0.05), _log_uniform(g, min_tol, 1e-2)
        elif len(cases) == 0:  # well conditioned: the large-kappa approximation fails
            kappa, tol = _uniform(g, 1.2, 1.6), _log_uniform(g, min(min_tol, 1e-6), 1e-6)
        elif len(cases) == 1 and kappa_one:  # kappa = 1: the rate is 0, and the count is 1
            kappa, tol = 1.0, _log_uniform(g, min_tol, 1e-2)
        else:
            kappa, tol = _log_uniform(g, 1.5, max_kappa), _log_uniform(g, min_tol, 1e-2)
        mu = _log_uniform(g, 0.01, 1.0)
        angle = _uniform(g, 0.0, math.pi)
        x0 = [_uniform(g, -1.0, 1.0) for _ in range(2)]
        if max(abs(v) for v in x0) < 0.1:
            continue
        # Keep away from ties: where the exact count is within rounding of an integer, a run
        # and a correct formula may legitimately disagree by one.
        if kappa > 1:
            k_real = math.log(tol) / math.log(_rate(kappa))
            if abs(k_real - round(k_real)) < 1e-6:
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
    if value != measured:  # ties are excluded from the cases: the count is exact
        raise AssertionError(
            f"{where}: running gradient descent took {measured} iterations to shrink the "
            f"error by tol; you predicted {int(value)} (the count must be exact: the first k "
            "at which the error is within tol)"
        )


def _iter_success(
    seed: int = 0,
    n_cases: int = 4,
    max_kappa: float = 1000.0,
    min_tol: float = 1e-10,
    near_one: bool = False,
    kappa_one: bool = False,
) -> str:
    if near_one:
        kappas = "kappa between 1 and 1.05"
    else:
        kappas = f"kappa from {1 if kappa_one else 1.2:g} to {max_kappa:g}"
    return (
        f"predict_iterations: OK, exactly the count of gradient-descent runs on {n_cases} "
        f"seeded quadratics ({kappas}, tol down to {min_tol:g})"
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
    near_one: bool = False,
    kappa_one: bool = False,
) -> None:
    r"""Check ``answer(kappa, tol)``, the predicted number of gradient-descent iterations with
    the step :math:`\eta = 2/(L+\mu)` until :math:`\|\theta_k-\theta^*\| \le
    \mathrm{tol}\,\|\theta_0-\theta^*\|` on a 2-D quadratic of condition number ``kappa``
    (:math:`\kappa \ge 1`; ``kappa_one`` includes :math:`\kappa = 1`), against runs of
    :class:`optlib.SGD`: the count must be exact (cases where rounding could decide it are
    excluded).
    """
    run_check(
        "predict_iterations",
        answer,
        seed=seed,
        n_cases=n_cases,
        max_kappa=max_kappa,
        min_tol=min_tol,
        near_one=near_one,
        kappa_one=kappa_one,
    )
