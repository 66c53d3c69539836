r"""Exercise checks for chapter 7 (optimizers as preconditioners), registered in
:data:`optlib.course.checks.CHECKS`.

Each check follows :mod:`optlib.course.checks`: seeded JSON ``cases``, a ``probe`` that runs the
learner's code and returns plain data, an ``expect`` that runs the reference
(:mod:`optlib.linalg`) and a ``compare`` that raises :class:`AssertionError` with a message that
locates the problem without giving the solution away. Import it through ``optlib.course.checks``
(``checks.richardson_step(...)``). The systems are :math:`Ax = b` with :math:`A` symmetric
positive definite, the optimality condition of :math:`f(x) = \tfrac12 x^\top A x - b^\top x`.

* :func:`richardson_step`: one step of Richardson's iteration
  :math:`x \leftarrow x + \omega (b - Ax)` (for any square :math:`A`, symmetric or not),
  iterated and compared with :func:`optlib.linalg.richardson`;
* :func:`richardson_plan`: the best :math:`\omega` and the number of iterations Richardson needs
  with it to shrink the residual by ``tol``, predicted from :math:`A`, against
  :func:`optlib.linalg.optimal_richardson_omega` and a run of :func:`optlib.linalg.richardson`
  (or, for condition numbers whose runs take millions of iterations, the exact geometric law of
  the check's two-eigenvalue matrices, which the tests check against runs);
* :func:`jacobi_preconditioner`: the map :math:`r \mapsto D^{-1} r`,
  :math:`D = \operatorname{diag}(A)`, compared entry by entry with
  :func:`optlib.linalg.jacobi_preconditioner` and by running :func:`optlib.linalg.pcg` with it;
* :func:`lbfgs_direction`: the L-BFGS direction :math:`-B^{-1}g` from a history of curvature
  pairs by the two-loop recursion, against :func:`optlib.optim.lbfgs.two_loop_direction`.
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
    no_delegation,
    run_check,
)

__all__ = ["jacobi_preconditioner", "lbfgs_direction", "richardson_plan", "richardson_step"]


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


def _step_cases(
    seed: int = 0, n_cases: int = 4, steps: int = 1, nonsymmetric: int = 1
) -> list[Case]:
    r"""SPD systems, then ``nonsymmetric`` systems :math:`A = cI + \frac{r}{\sqrt n}G` (Richardson
    is defined for any square matrix; a step that uses :math:`A^\top` passes symmetric cases)."""
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        dtype = "float64" if i % 2 == 0 else "float32"
        n = 2 + i % 4
        if i >= n_cases - nonsymmetric:
            c = _uniform(g, 1.0, 3.0)
            G = torch.randn(n, n, generator=g, dtype=torch.float64)
            A = c * torch.eye(n, dtype=torch.float64) + 0.5 * c / math.sqrt(n) * G
            omega = _uniform(g, 0.2, 0.9) / c
        else:
            A = _spd(g, n, _log_uniform(g, 0.05, 1.0), _log_uniform(g, 2.0, 20.0))
            omega = _uniform(g, 0.1, 0.95) * 2 / float(torch.linalg.eigvalsh(A).max())
        cases.append(
            {
                "dtype": dtype,
                "A": _rounded(A, dtype),
                "b": _rounded(torch.randn(n, generator=g, dtype=torch.float64), dtype),
                "x0": _rounded(torch.randn(n, generator=g, dtype=torch.float64), dtype),
                "omega": omega,
                "steps": int(steps),
                "symmetric": i < n_cases - nonsymmetric,
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
    trajectory = [x.double().tolist() for x in res.iterates[1:]]
    # a run that reached a residual of exactly 0 (float32) stopped: later steps stay put
    trajectory += [trajectory[-1]] * (case["steps"] - len(trajectory))
    return {"trajectory": trajectory}


def _step_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    n = len(case["x0"])
    kind = "" if case.get("symmetric", True) else " non-symmetric"
    where = (
        f"richardson_step, {where} ({case['dtype']},{kind} {n}x{n} system, "
        f"omega={case['omega']:.4g})"
    )
    traj, ref = _trajectory_answer(
        got, expected, n, where, name="richardson_step", inputs="one of its inputs A, b or x"
    )
    miss = _first_step_mismatch(traj, ref, RTOL[case["dtype"]], ATOL[case["dtype"]])
    if miss is not None:
        k, index = miss
        hint = ""
        previous = ref[k - 1] if k else torch.tensor(case["x0"], dtype=torch.float64)
        A = torch.tensor(case["A"], dtype=torch.float64)
        b = torch.tensor(case["b"], dtype=torch.float64)
        transposed = previous + case["omega"] * (b - A.T @ previous)
        if torch.allclose(traj[k] - previous, previous - ref[k], rtol=1e-4, atol=1e-9):
            hint = " (your step has the right length but the opposite direction: uphill on f)"
        elif not case["symmetric"] and torch.allclose(traj[k], transposed, rtol=1e-4, atol=1e-9):
            hint = (
                " (this A is not symmetric, and your step multiplies by its transpose: "
                "x @ A is the product with A^T)"
            )
        raise AssertionError(
            f"{where}: after step {k + 1} of {len(ref)}, x{_fmt_index(index)} differs from "
            f"optlib.linalg.richardson's: expected {float(ref[k][index]):.10g}, "
            f"got {float(traj[k][index]):.10g}{hint}"
        )


def _step_success(seed: int = 0, n_cases: int = 4, steps: int = 1, nonsymmetric: int = 1) -> str:
    what = "1 step" if steps == 1 else f"{steps} steps"
    return (
        f"richardson_step: OK, matches optlib.linalg.richardson on {n_cases} seeded systems "
        f"({what} each, float64 and float32, {nonsymmetric} of them not symmetric)"
    )


_register(
    Check("richardson_step", _step_cases, _step_probe, _step_expect, _step_compare, _step_success)
)


def richardson_step(
    answer: Callable, *, seed: int = 0, n_cases: int = 4, steps: int = 1, nonsymmetric: int = 1
) -> None:
    r"""Check ``answer(A, b, x, omega)``, one step of Richardson's iteration
    :math:`x + \omega\,(b - Ax)`, against :func:`optlib.linalg.richardson` over ``steps`` steps
    on seeded systems (float64 and float32): SPD ones, and ``nonsymmetric`` non-symmetric ones
    (the step is defined for any square :math:`A`). ``answer`` must return a new tensor and leave
    its inputs unchanged."""
    run_check(
        "richardson_step", answer, seed=seed, n_cases=n_cases, steps=steps,
        nonsymmetric=nonsymmetric,
    )  # fmt: skip


# --------------------------------------------------------------------------- best omega and count


def _two_eigenvalue_matrix(g: torch.Generator, n: int, mu: float, L: float) -> torch.Tensor:
    """A random rotation of diag(μ, L, μ or L, ...): only two distinct eigenvalues, so that
    Richardson's residual at the best ω shrinks by exactly (κ-1)/(κ+1) per step."""
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.tensor([mu if i % 2 == 0 else L for i in range(n)], dtype=torch.float64)
    A = Q @ torch.diag(lam) @ Q.T
    return (A + A.T) / 2


#: The reference runs Richardson for counts up to this; beyond it, the check's two-eigenvalue
#: matrices follow the exact geometric law (tests/test_checks_preconditioners.py checks the law
#: against runs), and running is no way to answer: a run takes millions of iterations.
RUN_LIMIT = 50_000


def _law(mu: float, L: float, tol: float) -> int:
    r"""Iterations at :math:`\omega^\star` for a matrix with the two eigenvalues :math:`\mu, L`:
    the residual shrinks by exactly :math:`\rho = (L-\mu)/(L+\mu)` per step, and by
    :math:`\rho = 0` (one step) when :math:`A` is a multiple of the identity."""
    rho = (L - mu) / (L + mu)
    return 1 if rho <= 0 else max(1, math.ceil(math.log(tol) / math.log(rho)))


def _plan_cases(
    seed: int = 0,
    n_cases: int = 4,
    max_kappa: float = 2000.0,
    min_tol: float = 1e-10,
    large: int = 1,
    large_kappa: float = 1e7,
) -> list[Case]:
    """A multiple of the identity first (one step), then a well-conditioned matrix, matrices
    with condition numbers up to ``max_kappa``, and ``large`` with condition numbers between
    ``large_kappa``/10 and ``large_kappa`` (counts in the millions: predicted, never run)."""
    g = _generator(seed)
    mu0 = _log_uniform(g, 0.1, 10.0)
    n0 = 3
    cases = [
        {"A": (mu0 * torch.eye(n0, dtype=torch.float64)).tolist(),
         "b": torch.randn(n0, generator=g, dtype=torch.float64).tolist(), "tol": 1e-6}
    ]  # fmt: skip
    while len(cases) < n_cases + large:
        n = 2 + len(cases) % 5
        if len(cases) == 1:  # well conditioned: the large-kappa approximation of the count fails
            kappa, tol = _uniform(g, 1.2, 1.6), _log_uniform(g, min(min_tol, 1e-6), 1e-6)
        elif len(cases) < n_cases:
            kappa = _log_uniform(g, 1.5, max_kappa)
            # Keep tol well above the rounding floor of the computed residual, about
            # eps * kappa * ||b||: near it, rounding shifts the count by ~eps kappa^2 / tol.
            tol = _log_uniform(g, min(max(min_tol, 1e-11 * kappa**2), 1e-3), 1e-2)
        else:
            kappa = _log_uniform(g, large_kappa / 10, large_kappa)
            tol = _log_uniform(g, 1e-4, 1e-2)
        mu = _log_uniform(g, 0.01, 1.0)
        A = _two_eigenvalue_matrix(g, n, mu, kappa * mu)
        b = torch.randn(n, generator=g, dtype=torch.float64)
        lam = torch.linalg.eigvalsh(A)
        k_real = math.log(tol) / math.log(float((lam[-1] - lam[0]) / (lam[-1] + lam[0])))
        # near a tie, rounding could legitimately move the count by one: keep away from ties, by
        # more for the large condition numbers, where kappa's own rounding (~eps kappa relative)
        # moves k_real by up to ~0.1
        if abs(k_real - round(k_real)) < (0.05 if kappa < 1e4 else 0.25):
            continue
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
    law = _law(mu, L, case["tol"])
    if law > RUN_LIMIT:
        return {"omega": omega, "iterations": law}
    run = richardson(A, b, omega, tol=case["tol"], max_iter=2 * RUN_LIMIT)
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
    if not isinstance(iterations, int) or iterations != expected["iterations"]:
        raise AssertionError(
            f"{where}: Richardson with the best omega takes {expected['iterations']} "
            f"iteration{'' if expected['iterations'] == 1 else 's'} to shrink the residual by "
            f"tol; you predicted {iterations!r}"
        )


def _plan_success(
    seed: int = 0,
    n_cases: int = 4,
    max_kappa: float = 2000.0,
    min_tol: float = 1e-10,
    large: int = 1,
    large_kappa: float = 1e7,
) -> str:
    return (
        f"richardson_plan: OK, the best omega (relative error < 1e-6) and Richardson's exact "
        f"count on {n_cases + large} seeded systems (a multiple of the "
        f"identity, condition numbers up to {max_kappa:g}, and {large} up to {large_kappa:g})"
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
    large: int = 1,
    large_kappa: float = 1e7,
) -> None:
    r"""Check ``answer(A, tol)``, which returns ``(omega, iterations)``: the step
    :math:`\omega` with which Richardson's iteration converges fastest on :math:`Ax = b`, and
    the number of iterations it then needs from :math:`x_0 = 0` until
    :math:`\|b - Ax_k\| \le \mathrm{tol}\,\|b\|`, predicted without running it. Compared with
    :func:`optlib.linalg.optimal_richardson_omega` and with the exact counts of runs of
    :func:`optlib.linalg.richardson` (cases stay away from ties), on seeded SPD matrices with two
    distinct eigenvalues: a multiple of the identity (one step), condition numbers up to
    ``max_kappa`` and tolerances from 1e-2 down to ``min_tol`` (but not below
    :math:`10^{-11}\kappa^2`, where rounding in the computed residual starts to move the count),
    and ``large`` matrices with condition numbers up to ``large_kappa``, whose runs would take
    millions of iterations (there the count is the exact geometric law, ``RUN_LIMIT``)."""
    run_check(
        "richardson_plan",
        answer,
        seed=seed,
        n_cases=n_cases,
        max_kappa=max_kappa,
        min_tol=min_tol,
        large=large,
        large_kappa=large_kappa,
    )


# --------------------------------------------------------------------------- Jacobi preconditioner


def _jacobi_cases(
    seed: int = 0, n_cases: int = 3, max_dim: int = 30, indefinite: int = 1
) -> list[Case]:
    r"""Badly scaled and rotated SPD matrices, then ``indefinite`` symmetric matrices with
    negative entries on their diagonal (Jacobi's :math:`D^{-1}` is defined for any non-zero
    diagonal; a square root of :math:`D` is not)."""
    from ...linalg import badly_scaled_spd

    g = _generator(seed)
    cases = []
    for i in range(n_cases + indefinite):
        n = int(5 + (max(max_dim, 6) - 5) * _uniform(g, 0.0, 1.0))
        kappa = _log_uniform(g, 2.0, 50.0)
        spd = i < n_cases
        if not spd:  # a signed diagonal of magnitudes 1 to 10, plus a small symmetric coupling
            signs = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
            signs[0], signs[1] = 1.0, -1.0
            d = signs * torch.exp(torch.rand(n, generator=g, dtype=torch.float64) * math.log(10))
            E = 0.1 * torch.randn(n, n, generator=g, dtype=torch.float64)
            A = torch.diag(d) + (E + E.T) / 2
        elif i % 3 == 2:  # a well-scaled, rotated matrix: Jacobi barely changes it
            A = _spd(g, n, 1.0, kappa)
        else:  # a badly scaled one: A = S A0 S
            sub_seed = int(torch.randint(0, 2**31 - 1, (), generator=g))
            A = badly_scaled_spd(n, kappa=kappa, scale=_log_uniform(g, 10.0, 1e3), seed=sub_seed)
        b = torch.randn(n, generator=g, dtype=torch.float64)
        cases.append({"A": A.tolist(), "b": b.tolist(), "spd": spd})
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

    if not case.get("spd", True):  # PCG needs an SPD matrix: the columns say everything
        return {"columns": columns}
    run = pcg(A, b, applied, tol=1e-10, max_iter=20 * n)
    return {"columns": columns, "iterations": run.iterations, "converged": run.converged}


def _jacobi_expect(case: Case) -> dict:
    from ...linalg import jacobi_preconditioner as reference
    from ...linalg import pcg

    A, b = _tensor(case["A"]), _tensor(case["b"])
    M_inv = reference(A)
    columns = torch.diag(M_inv.inverse_diagonal).T.tolist()
    if not case.get("spd", True):
        return {"columns": columns}
    run = pcg(A, b, M_inv, tol=1e-10, max_iter=20 * len(case["b"]))
    return {"columns": columns, "iterations": run.iterations, "converged": run.converged}


def _jacobi_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    from ...linalg import condition_number

    A = _tensor(case["A"])
    n = A.shape[0]
    kind = "SPD matrix" if case.get("spd", True) else "symmetric indefinite matrix"
    where = (
        f"jacobi_preconditioner, {where} ({n}x{n} {kind}, condition number "
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
    if not math.isfinite(float(cols[j, i])) and float(A[i, i]) < 0:
        pcg_note = " (this diagonal entry is negative: Jacobi's M^{-1} needs no square root)"
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


def _jacobi_success(seed: int = 0, n_cases: int = 3, max_dim: int = 30, indefinite: int = 1) -> str:
    return (
        f"jacobi_preconditioner: OK, matches optlib.linalg.jacobi_preconditioner on {n_cases} "
        "seeded SPD matrices (badly scaled and rotated), entry by entry and inside PCG, and on "
        f"{indefinite} symmetric indefinite {'one' if indefinite == 1 else 'ones'}"
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
    answer: Callable, *, seed: int = 0, n_cases: int = 3, max_dim: int = 30, indefinite: int = 1
) -> None:
    r"""Check ``answer(A)``, which returns the Jacobi preconditioner of a symmetric matrix ``A``
    with a non-zero diagonal as a function ``r -> M^{-1} r`` with
    :math:`M = \operatorname{diag}(A)`: applied to unit vectors, and used inside
    :func:`optlib.linalg.pcg` for the SPD ones, against
    :func:`optlib.linalg.jacobi_preconditioner`, on seeded badly scaled and rotated SPD matrices
    and ``indefinite`` symmetric indefinite ones (negative diagonal entries)."""
    run_check(
        "jacobi_preconditioner", answer, seed=seed, n_cases=n_cases, max_dim=max_dim,
        indefinite=indefinite,
    )  # fmt: skip


# --------------------------------------------------------------------------- L-BFGS two-loop


def _lbfgs_cases(
    seed: int = 0, n_cases: int = 3, max_pairs: int = 5, max_dim: int = 8, empty: bool = True
) -> list[Case]:
    r"""Curvature pairs :math:`(s_i, y_i = A s_i)` of seeded SPD quadratics (condition numbers up
    to 20, so that float32 keeps four or five digits through the recursion), oldest first, a
    gradient :math:`g`, in float64 and float32; :math:`m \le` ``max_pairs`` pairs in
    :math:`n = m + 2` to :math:`m + 1 +` ``max_dim`` unknowns; with ``empty``, the first case has
    no pairs, and the last one all ``max_pairs``."""
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        dtype = "float64" if i % 2 == 0 else "float32"
        m = 0 if (empty and i == 0) else 1 + int(max_pairs * _uniform(g, 0.0, 0.999))
        if i == n_cases - 1 and n_cases > 1:  # one full history: all max_pairs pairs
            m = max_pairs
        # more unknowns than pairs, so that gamma scales a part of the space the pairs leave
        # alone: with as many pairs as unknowns a wrong gamma can change the direction by less
        # than the float32 tolerance
        n = m + 2 + int((max_dim - 1) * _uniform(g, 0.0, 0.999))
        A = _spd(g, n, 1.0, _log_uniform(g, 2.0, 20.0)) * _log_uniform(g, 0.1, 10.0)
        S = [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(m)]
        cases.append(
            {
                "dtype": dtype,
                "g": _rounded(torch.randn(n, generator=g, dtype=torch.float64), dtype),
                "s": [_rounded(s, dtype) for s in S],
                "y": [_rounded(A @ s, dtype) for s in S],
            }
        )
    return cases


def _lbfgs_inputs(case: Case) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    dt = case["dtype"]
    return (
        _tensor(case["g"], dt),
        [_tensor(s, dt) for s in case["s"]],
        [_tensor(y, dt) for y in case["y"]],
    )


def _lbfgs_call(answer: Callable, g: torch.Tensor, S: list, Y: list, n: int) -> dict:
    before = (g.clone(), [s.clone() for s in S], [y.clone() for y in Y])
    value = answer(g, S, Y)
    unchanged = torch.equal(g, before[0]) and all(
        torch.equal(u, v) for u, v in zip(S + Y, before[1] + before[2])
    )
    values, problem = _vector_answer(value, n, "lbfgs_direction")
    out: dict[str, Any] = {"problem": problem} if problem else {"direction": values}
    if not problem:
        out["dtype"] = str(torch.as_tensor(value).dtype).removeprefix("torch.")
    if not unchanged:
        out["modified_input"] = True
    return out


def _lbfgs_probe(answer: Callable, case: Case) -> dict:
    g, S, Y = _lbfgs_inputs(case)
    out = _lbfgs_call(answer, g, S, Y, len(case["g"]))
    if S and "direction" in out:  # the secant equation: for g = y_k the direction is -s_k
        out["secant"] = _lbfgs_call(answer, Y[-1].clone(), S, Y, len(case["g"])).get("direction")
    return out


def _reference_direction(case: Case, g: list, gamma: str = "newest") -> torch.Tensor:
    from ...optim.lbfgs import two_loop_direction

    S = [torch.tensor(s, dtype=torch.float64) for s in case["s"]]
    Y = [torch.tensor(y, dtype=torch.float64) for y in case["y"]]
    rho = [1.0 / float(y @ s) for s, y in zip(S, Y)]
    H_diag = 1.0
    if S and gamma != "none":
        s, y = (S[-1], Y[-1]) if gamma == "newest" else (S[0], Y[0])
        H_diag = float(s @ y) / float(y @ y)
    return two_loop_direction(torch.tensor(g, dtype=torch.float64), S, Y, rho, H_diag)


def _lbfgs_expect(case: Case) -> dict:
    return {"direction": _reference_direction(case, case["g"]).tolist()}


# float64: a few ulps per operation of a recursion over at most ~10 pairs; float32: the inputs'
# rounding (1e-7) amplified by condition numbers up to 20 through both loops (measured < 1e-5)
_LBFGS_RTOL = {"float64": 1e-10, "float32": 1e-4}


def _lbfgs_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    n, m = len(case["g"]), len(case["s"])
    where = f"lbfgs_direction, {where} ({case['dtype']}, n = {n}, {m} pair(s))"
    _raise_if_error(got, "lbfgs_direction", where)
    _require(got, ["direction"], where)
    if got.get("modified_input"):
        raise AssertionError(
            f"{where}: lbfgs_direction changed g or one of the pairs in place; work on copies"
        )
    if got.get("dtype") != case["dtype"]:
        raise AssertionError(
            f"{where}: returned a {got.get('dtype')} tensor for {case['dtype']} inputs; return "
            "the direction in the gradient's dtype"
        )
    d = _as_float_array(got["direction"], "the direction", where)
    ref = torch.tensor(expected["direction"], dtype=torch.float64)
    rtol = _LBFGS_RTOL[case["dtype"]]
    atol = rtol * float(ref.abs().max())
    index = _first_mismatch(d, ref, rtol, atol)
    if index is None:
        return
    (i,) = index
    hint = ""
    if torch.allclose(d, -ref, rtol=rtol, atol=atol):
        hint = " (the opposite direction: B^{-1}g points uphill; L-BFGS steps along -B^{-1}g)"
    elif m and torch.allclose(d, _reference_direction(case, case["g"], "none"), rtol, atol):
        hint = " (the initial matrix B_0^{-1} = gamma I is missing its scaling gamma)"
    elif m > 1 and torch.allclose(d, _reference_direction(case, case["g"], "oldest"), rtol, atol):
        hint = " (check which pair sets the initial scaling gamma)"
    elif m and got.get("secant") is not None:
        secant = _as_float_array(got["secant"], "the direction", where)
        s_new = torch.tensor(case["s"][-1], dtype=torch.float64)
        if not torch.allclose(secant, -s_new, rtol=100 * rtol, atol=100 * rtol):
            hint = (
                " (for g = y_k, the newest pair's gradient change, your direction is not -s_k: "
                "the secant equation B^{-1} y_k = s_k fails)"
            )
    raise AssertionError(
        f"{where}: entry {i} of the direction differs from "
        f"optlib.optim.lbfgs.two_loop_direction's: expected {float(ref[i]):.10g}, "
        f"got {float(d[i]):.10g}{hint}"
    )


def _lbfgs_success(
    seed: int = 0, n_cases: int = 3, max_pairs: int = 5, max_dim: int = 8, empty: bool = True
) -> str:
    none = ", one without pairs" if empty else ""
    return (
        f"lbfgs_direction: OK, matches optlib.optim.lbfgs.two_loop_direction on {n_cases} seeded "
        f"histories (up to {max_pairs} pairs, float64 and float32{none})"
    )


_register(
    Check(
        "lbfgs_direction", _lbfgs_cases, _lbfgs_probe, _lbfgs_expect, _lbfgs_compare,
        _lbfgs_success,
    )
)  # fmt: skip
no_delegation(
    "lbfgs_direction",
    "L-BFGS two-loop recursion",
    "optlib.optim.lbfgs",
    "optlib.LBFGS",
    "torch.optim.LBFGS",
    "torch.optim.lbfgs",
)


def lbfgs_direction(
    answer: Callable,
    *,
    seed: int = 0,
    n_cases: int = 3,
    max_pairs: int = 5,
    max_dim: int = 8,
    empty: bool = True,
) -> None:
    r"""Check ``answer(g, s_list, y_list)``, the L-BFGS direction :math:`d = -B^{-1}g`: the
    inverse-Hessian estimate :math:`B^{-1}` of BFGS updates through the pairs
    :math:`(s_i, y_i)` (oldest first) from :math:`B_0^{-1} = \gamma I`,
    :math:`\gamma = s_k^\top y_k / y_k^\top y_k` for the newest pair, and :math:`d = -g` without
    pairs. Compared with :func:`optlib.optim.lbfgs.two_loop_direction` on seeded histories in
    float64 and float32 (the direction in the gradient's dtype, the inputs unchanged)."""
    run_check(
        "lbfgs_direction", answer, seed=seed, n_cases=n_cases, max_pairs=max_pairs,
        max_dim=max_dim, empty=empty,
    )  # fmt: skip
