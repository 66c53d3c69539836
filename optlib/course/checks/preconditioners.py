r"""Exercise checks for chapter 7 (optimizers as preconditioners), registered in
:data:`optlib.course.checks.CHECKS`.

Each check follows :mod:`optlib.course.checks`: seeded JSON ``cases``, a ``probe`` that runs the
learner's code and returns plain data, an ``expect`` that runs the reference
(:mod:`optlib.linalg`) and a ``compare`` that raises :class:`AssertionError` with a message that
locates the problem without giving the solution away. Import it through ``optlib.course.checks``
(``checks.richardson_step(...)``). The systems are :math:`Ax = b` with :math:`A` symmetric
positive definite, the optimality condition of :math:`f(x) = \tfrac12 x^\top A x - b^\top x`.

* :func:`richardson_step`: one step of Richardson's iteration
  :math:`x \leftarrow x + \omega (b - Ax)`, iterated and compared with
  :func:`optlib.linalg.richardson`;
* :func:`richardson_plan`: the best :math:`\omega` and the number of iterations Richardson needs
  with it to shrink the residual by ``tol``, predicted from :math:`A`, against
  :func:`optlib.linalg.optimal_richardson_omega` and a run of :func:`optlib.linalg.richardson`;
* :func:`jacobi_preconditioner`: the map :math:`r \mapsto D^{-1} r`,
  :math:`D = \operatorname{diag}(A)`, compared entry by entry with
  :func:`optlib.linalg.jacobi_preconditioner` and by running :func:`optlib.linalg.pcg` with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ._core import (
    ATOL,
    RTOL,
    Case,
    Check,
    _as_float_array,
    _as_number,
    _first_mismatch,
    _first_step_mismatch,
    _fmt_index,
    _generator,
    _log_uniform,
    _raise_if_error,
    _register,
    _require,
    _rounded,
    _spd,
    _tensor,
    _trajectory_answer,
    _uniform,
    run_check,
)

__all__ = ["jacobi_preconditioner", "richardson_plan", "richardson_step"]


def _vector_answer(value: Any, n: int, what: str) -> tuple[list[float], str | None]:
    """A learner's vector as plain floats, or what is wrong with it."""
    if value is None:
        return [], f"{what} returned None (is a `return` missing?)"
    try:
        t = torch.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError):
        return [], f"{what} returned a {type(value).__name__}, not a tensor"
    if t.is_complex() or tuple(t.shape) != (n,):
        return [], f"{what} returned shape {tuple(t.shape)}, expected a vector of shape ({n},)"
    return t.to(torch.float64).tolist(), None


# --------------------------------------------------------------------------- one Richardson step


def _step_cases(seed: int = 0, n_cases: int = 4, steps: int = 1) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        dtype = "float64" if i % 2 == 0 else "float32"
        n = 2 + i % 4
        A = _spd(g, n, _log_uniform(g, 0.05, 1.0), _log_uniform(g, 2.0, 20.0))
        L = float(torch.linalg.eigvalsh(A).max())
        cases.append(
            {
                "dtype": dtype,
                "A": _rounded(A, dtype),
                "b": _rounded(torch.randn(n, generator=g, dtype=torch.float64), dtype),
                "x0": _rounded(torch.randn(n, generator=g, dtype=torch.float64), dtype),
                "omega": _uniform(g, 0.1, 0.95) * 2 / L,
                "steps": int(steps),
            }
        )
    return cases


def _step_probe(answer: Callable, case: Case) -> dict:
    A, b = _tensor(case["A"], case["dtype"]), _tensor(case["b"], case["dtype"])
    x = _tensor(case["x0"], case["dtype"])
    trajectory, modified = [], []
    for k in range(case["steps"]):
        inputs = (A.clone(), b.clone(), x.clone())
        new = answer(A, b, x, case["omega"])
        if not all(torch.equal(u, v) for u, v in zip((A, b, x), inputs)):
            modified.append(k + 1)
            A, b, x = inputs
        values, problem = _vector_answer(new, len(case["x0"]), "richardson_step")
        if problem:
            return {"trajectory": trajectory, "problem": problem, "step": k + 1}
        trajectory.append(values)
        x = _tensor(values, case["dtype"])
    return {"trajectory": trajectory, "modified_input_at": modified}


def _step_expect(case: Case) -> dict:
    from ...linalg import richardson

    A, b = _tensor(case["A"], case["dtype"]), _tensor(case["b"], case["dtype"])
    res = richardson(
        A,
        b,
        case["omega"],
        x0=_tensor(case["x0"], case["dtype"]),
        max_iter=case["steps"],
        tol=1e-300,
        keep_iterates=True,
    )
    return {"trajectory": [x.double().tolist() for x in res.iterates[1:]]}


def _step_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    n = len(case["x0"])
    where = f"richardson_step, {where} ({case['dtype']}, {n}x{n} system, omega={case['omega']:.4g})"
    traj, ref = _trajectory_answer(
        got, expected, n, where, name="richardson_step", inputs="one of its inputs A, b or x"
    )
    miss = _first_step_mismatch(traj, ref, RTOL[case["dtype"]], ATOL[case["dtype"]])
    if miss is not None:
        k, index = miss
        hint = ""
        previous = ref[k - 1] if k else torch.tensor(case["x0"], dtype=torch.float64)
        if torch.allclose(traj[k] - previous, previous - ref[k], rtol=1e-4, atol=1e-9):
            hint = " (your step has the right length but the opposite direction: uphill on f)"
        raise AssertionError(
            f"{where}: after step {k + 1} of {len(ref)}, x{_fmt_index(index)} differs from "
            f"optlib.linalg.richardson's: expected {float(ref[k][index]):.10g}, "
            f"got {float(traj[k][index]):.10g}{hint}"
        )


def _step_success(seed: int = 0, n_cases: int = 4, steps: int = 1) -> str:
    what = "1 step" if steps == 1 else f"{steps} steps"
    return (
        f"richardson_step: OK, matches optlib.linalg.richardson on {n_cases} seeded systems "
        f"({what} each, float64 and float32)"
    )


_register(
    Check("richardson_step", _step_cases, _step_probe, _step_expect, _step_compare, _step_success)
)


def richardson_step(answer: Callable, *, seed: int = 0, n_cases: int = 4, steps: int = 1) -> None:
    r"""Check ``answer(A, b, x, omega)``, one step of Richardson's iteration
    :math:`x + \omega\,(b - Ax)`, against :func:`optlib.linalg.richardson` over ``steps`` steps
    on seeded SPD systems (float64 and float32). ``answer`` must return a new tensor and leave
    its inputs unchanged."""
    run_check("richardson_step", answer, seed=seed, n_cases=n_cases, steps=steps)


# --------------------------------------------------------------------------- best omega and count


def _two_eigenvalue_matrix(g: torch.Generator, n: int, mu: float, L: float) -> torch.Tensor:
    """A random rotation of diag(μ, L, μ or L, ...): only two distinct eigenvalues, so that
    Richardson's residual at the best ω shrinks by exactly (κ-1)/(κ+1) per step."""
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.tensor([mu if i % 2 == 0 else L for i in range(n)], dtype=torch.float64)
    A = Q @ torch.diag(lam) @ Q.T
    return (A + A.T) / 2


def _plan_cases(
    seed: int = 0, n_cases: int = 4, max_kappa: float = 2000.0, min_tol: float = 1e-10
) -> list[Case]:
    g = _generator(seed)
    cases = []
    while len(cases) < n_cases:
        n = 2 + len(cases) % 5
        if cases:
            kappa = _log_uniform(g, 1.5, max_kappa)
            # Keep tol well above the rounding floor of the computed residual, about
            # eps * kappa * ||b||: near it, rounding shifts the count by ~eps kappa^2 / tol.
            tol = _log_uniform(g, min(max(min_tol, 1e-11 * kappa**2), 1e-3), 1e-2)
        else:  # well conditioned: the large-kappa approximation of the count fails here
            kappa, tol = _uniform(g, 1.2, 1.6), _log_uniform(g, min(min_tol, 1e-6), 1e-6)
        mu = _log_uniform(g, 0.01, 1.0)
        A = _two_eigenvalue_matrix(g, n, mu, kappa * mu)
        b = torch.randn(n, generator=g, dtype=torch.float64)
        lam = torch.linalg.eigvalsh(A)
        k_real = math.log(tol) / math.log(float((lam[-1] - lam[0]) / (lam[-1] + lam[0])))
        if abs(k_real - round(k_real)) < 0.05:
            continue  # near a tie, rounding could legitimately move the count by one
        cases.append({"A": A.tolist(), "b": b.tolist(), "tol": tol})
    return cases


def _plan_probe(answer: Callable, case: Case) -> dict:
    A = _tensor(case["A"])
    A_in = A.clone()
    value = answer(A, case["tol"])
    out: dict[str, Any]
    try:
        pair = list(value) if value is not None else []
    except TypeError:
        pair = []
    if len(pair) != 2:
        out = {"problem": "richardson_plan must return two numbers, (omega, iterations)"}
    else:
        omega, iterations = _as_number(pair[0]), _as_number(pair[1])
        if omega is None or iterations is None:
            out = {"problem": "richardson_plan must return two numbers, (omega, iterations)"}
        elif not math.isfinite(iterations) or not float(iterations).is_integer():
            out = {"problem": f"the predicted iterations, {iterations!r}, are not a whole number"}
        else:
            out = {"omega": omega, "iterations": int(iterations)}
    if not torch.equal(A, A_in):
        out["modified_input"] = True
    return out


def _plan_expect(case: Case) -> dict:
    from ...linalg import eig_extremes, optimal_richardson_omega, richardson

    A, b = _tensor(case["A"]), _tensor(case["b"])
    mu, L = eig_extremes(A)
    omega = optimal_richardson_omega(L, mu)
    run = richardson(A, b, omega, tol=case["tol"], max_iter=1_000_000)
    return {"omega": omega, "iterations": run.iterations}


def _contraction(A: torch.Tensor, omega: float) -> float:
    """Richardson's per-step factor max |1 − ωλ| over the eigenvalues of A."""
    lam = torch.linalg.eigvalsh(A)
    return float((1 - omega * lam).abs().max())


def _plan_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    A = _tensor(case["A"])
    lam = torch.linalg.eigvalsh(A)
    where = (
        f"richardson_plan, {where} ({A.shape[0]}x{A.shape[0]} system, condition number "
        f"{float(lam[-1] / lam[0]):.4g}, tol={case['tol']:.3g})"
    )
    _raise_if_error(got, "richardson_plan", where)
    _require(got, [], where)
    if "omega" not in got or "iterations" not in got:
        raise AssertionError(f"{where}: no result")
    if got.get("modified_input"):
        raise AssertionError(f"{where}: richardson_plan changed its input A in place")
    omega, iterations = got["omega"], got["iterations"]
    if not isinstance(omega, (int, float)) or not math.isfinite(omega) or omega <= 0:
        raise AssertionError(f"{where}: expected a positive, finite omega, got {omega!r}")
    if not math.isclose(omega, expected["omega"], rel_tol=1e-6):
        mine, best = _contraction(A, omega), _contraction(A, expected["omega"])
        direction = "smaller" if omega > expected["omega"] else "larger"
        seen = "diverges" if mine >= 1 else f"contracts the residual by {mine:.6f} per step"
        raise AssertionError(
            f"{where}: with your omega = {omega:.8g} Richardson {seen}; a {direction} omega "
            f"contracts it faster (by {best:.6f} per step at the best one)"
        )
    if not isinstance(iterations, int) or abs(iterations - expected["iterations"]) > 1:
        raise AssertionError(
            f"{where}: running Richardson with the best omega took {expected['iterations']} "
            f"iterations to shrink the residual by tol; you predicted {iterations!r}"
        )


def _plan_success(
    seed: int = 0, n_cases: int = 4, max_kappa: float = 2000.0, min_tol: float = 1e-10
) -> str:
    return (
        f"richardson_plan: OK, the best omega (relative error < 1e-6) and a count within one "
        f"iteration of Richardson runs on {n_cases} seeded systems (condition number up to "
        f"{max_kappa:g})"
    )


_register(
    Check("richardson_plan", _plan_cases, _plan_probe, _plan_expect, _plan_compare, _plan_success)
)


def richardson_plan(
    answer: Callable,
    *,
    seed: int = 0,
    n_cases: int = 4,
    max_kappa: float = 2000.0,
    min_tol: float = 1e-10,
) -> None:
    r"""Check ``answer(A, tol)``, which returns ``(omega, iterations)``: the step
    :math:`\omega` with which Richardson's iteration converges fastest on :math:`Ax = b`, and
    the number of iterations it then needs from :math:`x_0 = 0` until
    :math:`\|b - Ax_k\| \le \mathrm{tol}\,\|b\|`, predicted without running it. Compared with
    :func:`optlib.linalg.optimal_richardson_omega` and with runs of
    :func:`optlib.linalg.richardson` (within one iteration), on seeded SPD matrices with two
    distinct eigenvalues, condition numbers up to ``max_kappa`` and tolerances from 1e-2 down to
    ``min_tol`` (but not below :math:`10^{-11}\kappa^2`, where rounding in the computed residual
    starts to move the count)."""
    run_check(
        "richardson_plan",
        answer,
        seed=seed,
        n_cases=n_cases,
        max_kappa=max_kappa,
        min_tol=min_tol,
    )


# --------------------------------------------------------------------------- Jacobi preconditioner


def _jacobi_cases(seed: int = 0, n_cases: int = 3, max_dim: int = 30) -> list[Case]:
    from ...linalg import badly_scaled_spd

    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        n = int(5 + (max(max_dim, 6) - 5) * _uniform(g, 0.0, 1.0))
        kappa = _log_uniform(g, 2.0, 50.0)
        if i % 3 == 2:  # a well-scaled, rotated matrix: Jacobi barely changes it
            A = _spd(g, n, 1.0, kappa)
        else:  # a badly scaled one: A = S A0 S
            sub_seed = int(torch.randint(0, 2**31 - 1, (), generator=g))
            A = badly_scaled_spd(n, kappa=kappa, scale=_log_uniform(g, 10.0, 1e3), seed=sub_seed)
        b = torch.randn(n, generator=g, dtype=torch.float64)
        cases.append({"A": A.tolist(), "b": b.tolist()})
    return cases


def _jacobi_probe(answer: Callable, case: Case) -> dict:
    from ...linalg import pcg

    A, b = _tensor(case["A"]), _tensor(case["b"])
    n = len(case["b"])
    M_inv = answer(A.clone())
    if M_inv is None:
        return {"problem": "jacobi_preconditioner returned None (is a `return` missing?)"}
    if not callable(M_inv):
        return {
            "problem": f"jacobi_preconditioner returned a {type(M_inv).__name__}; expected a "
            "function r -> M^{-1} r"
        }
    columns = []
    for j in range(n):
        e_j = torch.zeros(n, dtype=torch.float64)
        e_j[j] = 1.0
        e_in = e_j.clone()
        values, problem = _vector_answer(M_inv(e_j), n, "your preconditioner")
        if problem:
            return {"problem": problem}
        if not torch.equal(e_j, e_in):
            return {"problem": "your preconditioner changed its input vector r in place"}
        columns.append(values)

    def applied(r: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(M_inv(r.clone()), dtype=torch.float64)

    run = pcg(A, b, applied, tol=1e-10, max_iter=20 * n)
    return {"columns": columns, "iterations": run.iterations, "converged": run.converged}


def _jacobi_expect(case: Case) -> dict:
    from ...linalg import jacobi_preconditioner as reference
    from ...linalg import pcg

    A, b = _tensor(case["A"]), _tensor(case["b"])
    M_inv = reference(A)
    columns = torch.diag(M_inv.inverse_diagonal).T.tolist()
    run = pcg(A, b, M_inv, tol=1e-10, max_iter=20 * len(case["b"]))
    return {"columns": columns, "iterations": run.iterations, "converged": run.converged}


def _jacobi_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    from ...linalg import condition_number

    A = _tensor(case["A"])
    n = A.shape[0]
    where = (
        f"jacobi_preconditioner, {where} ({n}x{n} SPD matrix, condition number "
        f"{condition_number(A):.4g})"
    )
    _raise_if_error(got, "jacobi_preconditioner", where)
    _require(got, [], where)
    if "columns" not in got:
        raise AssertionError(f"{where}: no result")
    cols = _as_float_array(got["columns"], "the preconditioner's columns", where)
    if tuple(cols.shape) != (n, n):
        raise AssertionError(f"{where}: expected the preconditioner applied to {n} unit vectors")
    ref = torch.tensor(expected["columns"], dtype=torch.float64)
    index = _first_mismatch(cols, ref, 1e-10, 1e-14 * float(ref.abs().max()))
    if index is None:
        return
    j, i = index
    its = got.get("iterations")
    pcg_note = ""
    if isinstance(its, int) and not isinstance(its, bool):
        pcg_note = (
            f"; preconditioned CG needed {its} iteration{'' if its == 1 else 's'} with yours"
            + ("" if got.get("converged") else " without converging")
            + f", {expected['iterations']} with Jacobi's"
        )
    raise AssertionError(
        f"{where}: applied to the unit vector e_{j}, your preconditioner returns a vector whose "
        f"entry {i} is {float(cols[j, i]):.10g}; expected {float(ref[j, i]):.10g}{pcg_note}"
    )


def _jacobi_success(seed: int = 0, n_cases: int = 3, max_dim: int = 30) -> str:
    return (
        f"jacobi_preconditioner: OK, matches optlib.linalg.jacobi_preconditioner on {n_cases} "
        "seeded SPD matrices (badly scaled and rotated), entry by entry and inside PCG"
    )


_register(
    Check(
        "jacobi_preconditioner",
        _jacobi_cases,
        _jacobi_probe,
        _jacobi_expect,
        _jacobi_compare,
        _jacobi_success,
    )
)


def jacobi_preconditioner(
    answer: Callable, *, seed: int = 0, n_cases: int = 3, max_dim: int = 30
) -> None:
    r"""Check ``answer(A)``, which returns the Jacobi preconditioner of an SPD matrix ``A`` as a
    function ``r -> M^{-1} r`` with :math:`M = \operatorname{diag}(A)`: applied to unit vectors
    and used inside :func:`optlib.linalg.pcg`, against
    :func:`optlib.linalg.jacobi_preconditioner`, on seeded badly scaled and rotated matrices."""
    run_check("jacobi_preconditioner", answer, seed=seed, n_cases=n_cases, max_dim=max_dim)
