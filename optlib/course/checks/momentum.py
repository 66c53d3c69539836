r"""Exercise checks for chapter 3 (momentum and Nesterov), registered in
:data:`optlib.course.checks.CHECKS`.

Each check follows :mod:`optlib.course.checks`: seeded JSON ``cases``, a ``probe`` that runs the
learner's code and returns plain data, an ``expect`` that runs the reference (:class:`optlib.SGD`,
an exact eigenvalue computation) and a ``compare`` that raises :class:`AssertionError` with a
message that locates the problem without giving the solution away. Import it through
``optlib.course.checks`` (``checks.ema_lr(...)``). The problems are quadratics
:math:`f(\theta) = \tfrac12 \theta^\top A \theta - b^\top \theta`.

* :func:`ema_lr`: the learning rate :math:`\alpha` with which momentum written as an exponential
  moving average, :math:`m_t = \beta m_{t-1} + (1-\beta) g_t`, :math:`\theta_t = \theta_{t-1} -
  \alpha m_t`, follows the same path as ``optlib.SGD(lr=η, momentum=β)``; the learner's
  :math:`\alpha` is run through :func:`optlib.experiments.momentum.ema_momentum` and the paths
  compared;
* :func:`optimal_momentum`: the heavy-ball pair :math:`(\eta, \beta)` with the smallest rate on
  a quadratic (Polyak, 1964), against :func:`optlib.linalg.optimal_heavy_ball_params` of the
  exact extreme eigenvalues;
* :func:`predict_momentum_iterations`: the steps heavy ball with those parameters needs to shrink
  the error by ``tol`` on a 2-D quadratic of condition number :math:`\kappa`, predicted from the
  rate, against runs of :class:`optlib.SGD`.

The chapter's optimizer-class exercise uses :func:`optlib.course.checks.momentum_sgd_class`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._core import (
    Case,
    Check,
    _as_number,
    _class_cases,
    _class_compare,
    _class_probe,
    _class_run,
    _finite,
    _generator,
    _log_uniform,
    _no_hint,
    _raise_if_error,
    _register,
    _require,
    _spd,
    _tensor,
    _uniform,
    run_check,
)

__all__ = ["ema_lr", "momentum_sgd_class", "optimal_momentum", "predict_momentum_iterations"]


def _sgd_path(A: torch.Tensor, b: torch.Tensor, theta0: torch.Tensor, steps: int, **hyper):
    """Iterates of optlib.SGD on ½θᵀAθ − bᵀθ, shape (steps + 1, d)."""
    import optlib

    p = theta0.clone().requires_grad_()
    opt = optlib.SGD([p], **hyper)
    path = [p.detach().clone()]
    for _ in range(steps):
        p.grad = A @ p.detach() - b
        opt.step()
        path.append(p.detach().clone())
    return torch.stack(path)


# --------------------------------------------------------------------------- a momentum SGD class


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


# --------------------------------------------------------------------------- the EMA learning rate


def _ema_cases(seed: int = 0, n_cases: int = 4, steps: int = 30) -> list[Case]:
    g = _generator(seed)
    cases = []
    for _ in range(n_cases):
        A = _spd(g, 3, _log_uniform(g, 0.05, 0.5), _log_uniform(g, 1.0, 5.0))
        cases.append(
            {
                "lr": round(_log_uniform(g, 0.005, 0.1), 5),
                "beta": round(_uniform(g, 0.5, 0.98), 3),
                "A": A.tolist(),
                "b": torch.randn(3, generator=g, dtype=torch.float64).tolist(),
                "theta0": torch.randn(3, generator=g, dtype=torch.float64).tolist(),
                "steps": int(steps),
            }
        )
    return cases


def _ema_probe(answer: Callable, case: Case) -> dict:
    value = answer(case["lr"], case["beta"])
    alpha = _as_number(value)
    if value is None:
        return {"problem": "ema_lr returned None (is a `return` missing?)"}
    if alpha is None:
        return {"problem": f"ema_lr returned a {type(value).__name__}, not one number"}
    return {"alpha": alpha}


def _ema_expect(case: Case) -> dict:
    A, b, x0 = _tensor(case["A"]), _tensor(case["b"]), _tensor(case["theta0"])
    path = _sgd_path(A, b, x0, case["steps"], lr=case["lr"], momentum=case["beta"])
    return {"trajectory": path.tolist()}


def _ema_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    from ...experiments.momentum import ema_momentum

    where = f"ema_lr, {where} (lr={case['lr']:g}, beta={case['beta']:g})"
    _raise_if_error(got, "ema_lr", where)
    _require(got, ["alpha"], where)
    alpha = got["alpha"]
    if not _finite(alpha) or alpha <= 0:
        raise AssertionError(f"{where}: expected a positive learning rate, got {alpha!r}")
    A, b, x0 = _tensor(case["A"]), _tensor(case["b"]), _tensor(case["theta0"])
    with np.errstate(all="ignore"):
        mine = ema_momentum(lambda x: A @ x - b, x0, float(alpha), case["beta"], case["steps"])
    ref = torch.tensor(expected["trajectory"], dtype=torch.float64)
    for k in range(1, len(ref)):
        bad = ~torch.isclose(mine[k], ref[k], rtol=1e-9, atol=1e-12)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            first = float(torch.linalg.vector_norm(mine[1] - mine[0]))
            want = float(torch.linalg.vector_norm(ref[1] - ref[0]))
            size = "too long" if first > want else "too short"
            raise AssertionError(
                f"{where}: with your alpha, the EMA form leaves the path of "
                f"optlib.SGD(lr, momentum=beta) at step {k}: theta[{i}] expected "
                f"{float(ref[k][i]):.10g}, got {float(mine[k][i]):.10g}; its steps are {size}"
            )


def _ema_success(seed: int = 0, n_cases: int = 4, steps: int = 30) -> str:
    return (
        f"ema_lr: OK, the EMA form with your learning rate follows optlib.SGD(lr, momentum) "
        f"for {steps} steps on {n_cases} seeded quadratics"
    )


_register(Check("ema_lr", _ema_cases, _ema_probe, _ema_expect, _ema_compare, _ema_success))


def ema_lr(answer: Callable, *, seed: int = 0, n_cases: int = 4, steps: int = 30) -> None:
    r"""Check ``answer(lr, beta)``: the learning rate :math:`\alpha` for which momentum as an
    exponential moving average (:math:`m_0 = 0`, :math:`m_t = \beta m_{t-1} + (1-\beta) g_t`,
    :math:`\theta_t = \theta_{t-1} - \alpha m_t`) produces the same iterates as
    ``optlib.SGD(lr=lr, momentum=beta)``, by running both on seeded quadratics."""
    run_check("ema_lr", answer, seed=seed, n_cases=n_cases, steps=steps)


# --------------------------------------------------------------------------- optimal (lr, beta)


def _opt_cases(seed: int = 0, n_cases: int = 4, max_dim: int = 5) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        d = 2 + i % max(1, max_dim - 1)
        mu = _log_uniform(g, 0.01, 1.0)
        L = mu * _log_uniform(g, 2.0, 1e4)
        cases.append({"A": _spd(g, d, mu, L).tolist(), "seed": int(seed) * 1000 + i})
    return cases


def _opt_probe(answer: Callable, case: Case) -> dict:
    A = _tensor(case["A"])
    A_in = A.clone()
    value = answer(A)
    out: dict[str, Any]
    if value is None:
        out = {"problem": "optimal_momentum returned None (is a `return` missing?)"}
    else:
        try:
            pair = list(value)
        except TypeError:
            pair = []
        numbers = [_as_number(v) for v in pair]
        if len(numbers) != 2 or None in numbers:
            out = {"problem": "optimal_momentum must return two numbers, (lr, beta)"}
        else:
            out = {"lr": numbers[0], "beta": numbers[1]}
    if not torch.equal(A, A_in):
        out["modified_input"] = True
    return out


def _opt_expect(case: Case) -> dict:
    from ...linalg import optimal_heavy_ball_params

    lam = torch.linalg.eigvalsh(_tensor(case["A"]))
    lr, beta = optimal_heavy_ball_params(float(lam[-1]), float(lam[0]))
    return {"best_lr": lr, "best_beta": beta}


def _measured_rate(A: torch.Tensor, lr: float, beta: float, seed: int, steps: int = 400) -> float:
    """Heavy ball's measured per-step factor on ½θᵀAθ (nan when it blows up at once)."""
    from ...experiments.rates import measured_rate, state_norms

    x0 = torch.randn(A.shape[0], generator=_generator(seed), dtype=torch.float64)
    with np.errstate(all="ignore"):
        path = _sgd_path(A, torch.zeros_like(x0), x0, steps, lr=lr, momentum=beta)
        return measured_rate(state_norms(path.numpy()))


def _opt_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    A = _tensor(case["A"])
    lam = torch.linalg.eigvalsh(A)
    where = (
        f"optimal_momentum, {where} ({A.shape[0]}x{A.shape[0]} quadratic, "
        f"condition number {float(lam[-1] / lam[0]):.4g})"
    )
    _raise_if_error(got, "optimal_momentum", where)
    _require(got, ["lr", "beta"], where)
    if got.get("modified_input"):
        raise AssertionError(f"{where}: optimal_momentum changed its input A in place")
    lr, beta = got["lr"], got["beta"]
    if not (_finite(lr) and _finite(beta) and lr > 0 and 0 <= beta < 1):
        raise AssertionError(
            f"{where}: expected a positive lr and 0 <= beta < 1, got ({lr!r}, {beta!r})"
        )
    ok_lr = math.isclose(lr, expected["best_lr"], rel_tol=1e-6)
    ok_beta = math.isclose(beta, expected["best_beta"], rel_tol=1e-6, abs_tol=1e-12)
    if ok_lr and ok_beta:
        return
    best = _measured_rate(A, expected["best_lr"], expected["best_beta"], case["seed"])
    mine = _measured_rate(A, lr, beta, case["seed"])
    if not math.isfinite(mine) or mine >= 1:
        seen = "heavy ball with your (lr, beta) diverges on it"
    else:
        seen = f"heavy ball with your (lr, beta) contracts the error by {mine:.4f} per step"
    wrong = [name for name, ok in (("lr", ok_lr), ("beta", ok_beta)) if not ok]
    detail = ", ".join(
        f"{name} expected {expected['best_' + name]:.8g}, got {got[name]:.8g}" for name in wrong
    )
    raise AssertionError(
        f"{where}: {seen}, the best pair by {best:.4f} (measured over 400 steps); {detail}"
    )


def _opt_success(seed: int = 0, n_cases: int = 4, max_dim: int = 5) -> str:
    return (
        f"optimal_momentum: OK, the fastest heavy-ball (lr, beta) on {n_cases} seeded quadratics "
        f"(dimension 2 to {max(2, min(max_dim, n_cases + 1))}, relative error < 1e-6)"
    )


_register(
    Check("optimal_momentum", _opt_cases, _opt_probe, _opt_expect, _opt_compare, _opt_success)
)


def optimal_momentum(answer: Callable, *, seed: int = 0, n_cases: int = 4, max_dim: int = 5):
    r"""Check ``answer(A)``: the pair ``(lr, beta)`` for which heavy ball
    (``optlib.SGD(lr=lr, momentum=beta)``) converges fastest on
    :math:`f(\theta) = \tfrac12\theta^\top A\theta - b^\top\theta`, for seeded symmetric positive
    definite ``A`` (float64 tensors)."""
    run_check("optimal_momentum", answer, seed=seed, n_cases=n_cases, max_dim=max_dim)


# --------------------------------------------------------------------------- predicted iterations


def _hb_rate(kappa: float) -> float:
    s = math.sqrt(kappa)
    return (s - 1) / (s + 1)


def _pred_cases(
    seed: int = 0, n_cases: int = 4, max_kappa: float = 1e4, min_tol: float = 1e-10
) -> list[Case]:
    g = _generator(seed)
    cases = []
    while len(cases) < n_cases:
        kappa, tol = _log_uniform(g, 4.0, max_kappa), _log_uniform(g, min_tol, 1e-3)
        x0 = [_uniform(g, -1.0, 1.0) for _ in range(2)]
        k_real = math.log(tol) / math.log(_hb_rate(kappa))
        if abs(k_real - round(k_real)) < 1e-6 or min(abs(v) for v in x0) < 0.1:
            continue  # away from ties, and with both eigen-directions in the start
        cases.append(
            {
                "kappa": kappa,
                "tol": tol,
                "mu": _log_uniform(g, 0.01, 1.0),
                "angle": _uniform(g, 0.0, math.pi),
                "theta0": x0,
            }
        )
    return cases


def _pred_probe(answer: Callable, case: Case) -> dict:
    value = answer(case["kappa"], case["tol"])
    k = _as_number(value)
    if value is None:
        return {"problem": "predict_momentum_iterations returned None (is a `return` missing?)"}
    if k is None:
        return {"problem": f"predict_momentum_iterations returned a {type(value).__name__}"}
    if not (math.isfinite(k) and k.is_integer()):
        return {"problem": f"predict_momentum_iterations returned {k!r}, not a whole number"}
    return {"iterations": k}


def _pred_expect(case: Case) -> dict:
    """Run heavy ball with the optimal (lr, beta) on a rotated diag(μ, κμ) from θ₀ and count the
    iterations until ‖θ_k − θ*‖ ≤ tol·‖θ₀ − θ*‖ (θ* = 0); ``rate_count`` is what the rate alone
    gives, ⌈ln tol / ln ρ⌉, a lower bound of the count."""
    from ...linalg import optimal_heavy_ball_params

    mu, kappa = case["mu"], case["kappa"]
    c, s = math.cos(case["angle"]), math.sin(case["angle"])
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    A = R @ torch.diag(torch.tensor([mu, kappa * mu], dtype=torch.float64)) @ R.T
    lr, beta = optimal_heavy_ball_params(kappa * mu, mu)
    import optlib

    p = torch.tensor(case["theta0"], dtype=torch.float64).requires_grad_()
    start = float(p.detach().norm())
    opt = optlib.SGD([p], lr=lr, momentum=beta)
    k = 0
    while float(p.detach().norm()) > case["tol"] * start:
        p.grad = A @ p.detach()
        opt.step()
        k += 1
    rate_count = math.ceil(math.log(case["tol"]) / math.log(_hb_rate(kappa)))
    return {"measured": k, "rate_count": rate_count}


def _pred_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"predict_momentum_iterations, {where} (kappa={case['kappa']:.4g}, "
        f"tol={case['tol']:.3g}, optimal heavy ball)"
    )
    _raise_if_error(got, "predict_momentum_iterations", where)
    _require(got, ["iterations"], where)
    k = got["iterations"]
    if not _finite(k):
        raise AssertionError(f"{where}: expected a whole number, got {k!r}")
    measured, low = expected["measured"], expected["rate_count"]
    if low - 1 <= k <= measured + 1:
        return
    if k > measured:
        detail = "more than the run needed: the rate you assumed is too slow"
    else:
        detail = "fewer than the rate allows: the rate you assumed is too fast"
    raise AssertionError(
        f"{where}: running heavy ball took {measured} iterations; you predicted {int(k)}, {detail}"
    )


def _pred_success(
    seed: int = 0, n_cases: int = 4, max_kappa: float = 1e4, min_tol: float = 1e-10
) -> str:
    return (
        f"predict_momentum_iterations: OK, consistent with heavy-ball runs on {n_cases} seeded "
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


def predict_momentum_iterations(
    answer: Callable,
    *,
    seed: int = 0,
    n_cases: int = 4,
    max_kappa: float = 1e4,
    min_tol: float = 1e-10,
) -> None:
    r"""Check ``answer(kappa, tol)``, the predicted number of iterations :math:`k` of heavy ball
    with its optimal :math:`(\eta, \beta)` until :math:`\|\theta_k - \theta^*\| \le
    \mathrm{tol}\,\|\theta_0 - \theta^*\|` on a 2-D quadratic of condition number ``kappa``.

    At the optimum the iteration matrix has a double eigenvalue, so the error behaves like
    :math:`(a + b\,k)\,\rho^k` and a run needs somewhat more steps than the rate :math:`\rho`
    alone predicts. A prediction passes if it lies between the count that the rate gives and the
    count of an actual run of :class:`optlib.SGD` (one iteration of slack on either side).
    """
    run_check(
        "predict_momentum_iterations",
        answer,
        seed=seed,
        n_cases=n_cases,
        max_kappa=max_kappa,
        min_tol=min_tol,
    )
