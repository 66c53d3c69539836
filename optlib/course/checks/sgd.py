r"""Exercise checks for chapter 2 (stochastic gradient descent), registered in
:data:`optlib.course.checks.CHECKS`.

Each check follows :mod:`optlib.course.checks`: seeded JSON ``cases``, a ``probe`` that runs the
learner's code, an ``expect`` that computes the reference (:mod:`optlib.experiments.stochastic`'s
exact variance, ``torch.optim.lr_scheduler`` driving :class:`optlib.SGD`) and a ``compare`` that
raises
:class:`AssertionError` with a message that locates the problem without giving the solution
away. Import it through ``optlib.course.checks`` (``checks.minibatch_gradient(...)``).

* :func:`minibatch_gradient`: a mini-batch gradient estimator
  :math:`g_{\mathcal B} = \frac1B\sum_{i\in\mathcal B} g_i` drawn with or without replacement,
  tested statistically: its mean must be the full gradient and its mean squared error
  :math:`\frac{\sigma^2}{B}` (with replacement) or :math:`\frac{\sigma^2}{B}\frac{N-B}{N-1}`
  (without), over thousands of draws;
* :func:`predict_minibatch_variance`: the variance at batch size :math:`B'` predicted from the
  variance at :math:`B`, against the exact value;
* :func:`warmup_cosine_lr`: linear warm-up then cosine decay as a function of the step, against
  ``SequentialLR(LinearLR, CosineAnnealingLR)`` driving :class:`optlib.SGD`.
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
    _number,
    _problem_of,
    _raise_if_error,
    _register,
    _tensor,
    _uniform,
    run_check,
)

__all__ = ["minibatch_gradient", "predict_minibatch_variance", "warmup_cosine_lr"]


# --------------------------------------------------------------------------- the estimator

# Agreement asked of a statistical answer. The sample mean must lie within MEAN_SE standard
# errors of the full gradient. The measured mean squared error must lie within MSE_RTOL of the
# exact one, or within MSE_SE of its own standard errors where that is wider: over 240 seeded
# cases of a right answer (3000 draws) the relative error had a standard deviation of 1.7% and a
# maximum of 6.2%, and a case's own relative standard error reached 2.9% (heavy-tailed rows); a
# batch one example too large or too small moves the error by 11% (with replacement) to 29%.
MEAN_SE = 5.0
MSE_RTOL = 0.08
MSE_SE = 4.0
MSE_RTOL_MAX = 0.15  # above 4 x the largest standard error seen (2.9%)


def _estimator_cases(
    seed: int = 0, n_cases: int = 4, draws: int = 3000, edge: bool = False
) -> list[Case]:
    """Seeded per-example gradient matrices, with a batch of about half the data (there the two
    sampling schemes differ by about 2x). ``edge``: the extremes the statement names instead,
    a batch of one, the whole data set without replacement (no noise at all) and, with
    replacement, more draws than examples."""
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        n = 8 + int(_uniform(g, 0, 17))  # 8 to 24 examples
        d = 2 + i % 3
        replace = i % 2 == 1
        B = max(2, n // 2 + (i % 3) - 1)
        if edge:
            replace, B = [(False, 1), (False, n), (True, 1), (True, n + 1 + i)][i % 4]
        G = torch.randn(n, d, generator=g, dtype=torch.float64)
        G = G * torch.rand(n, 1, generator=g, dtype=torch.float64) * 3 + torch.randn(
            d, generator=g, dtype=torch.float64
        )
        cases.append(
            {
                "G": G.tolist(),
                "batch_size": B,
                "replace": replace,
                "draws": int(draws),
                "draw_seed": int(seed) * 1000 + i,
            }
        )
    return cases


def _as_estimate(value: Any, d: int) -> tuple[torch.Tensor | None, str | None]:
    """The learner's estimate as a float64 vector, or what is wrong with it."""
    if value is None:
        return None, "minibatch_gradient returned None (is a `return` missing?)"
    try:
        est = torch.as_tensor(value).detach().to(torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None, f"minibatch_gradient returned a {type(value).__name__}"
    if tuple(est.shape) != (d,):
        return None, (
            f"minibatch_gradient returned shape {tuple(est.shape)}, expected ({d},): one "
            "gradient with as many entries as a row of G"
        )
    if not bool(torch.isfinite(est).all()):
        return None, "minibatch_gradient returned a non-finite value"
    return est, None


def _generator_problem(answer: Callable, case: Case, G: torch.Tensor) -> str | None:
    """Two calls with generators in the same state must give the same estimate, and must move
    the generator on: then the randomness comes from the generator given, not from elsewhere."""
    n, d = G.shape
    if not case["replace"] and case["batch_size"] == n:
        return None  # the whole data set: nothing is random, a generator may stay untouched
    seed = case["draw_seed"] + 7919
    g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    before, G_in = g1.get_state().clone(), G.clone()
    first, problem = _as_estimate(answer(G, case["batch_size"], case["replace"], g1), d)
    if problem:
        return problem
    if not torch.equal(G, G_in):
        return "minibatch_gradient changed its input G in place"
    second, problem = _as_estimate(answer(G, case["batch_size"], case["replace"], g2), d)
    if problem:
        return problem
    if torch.equal(g1.get_state(), before):
        return (
            "the generator you are given was not used: draw the batch's indices with it "
            "(pass generator=... to the random function)"
        )
    if not torch.equal(first, second):
        return (
            "two calls with generators in the same state gave different batches: every random "
            "draw must use the generator you are given (not torch's global generator)"
        )
    return None


def _estimator_probe(answer: Callable, case: Case) -> dict:
    G = _tensor(case["G"])
    G_in = G.clone()
    n, d = G.shape
    problem = _generator_problem(answer, case, G)
    if problem:
        return {"problem": problem}
    if not torch.equal(G, G_in):
        return {"problem": "minibatch_gradient changed its input G in place"}
    gen = torch.Generator().manual_seed(case["draw_seed"])
    g_full = G.mean(0)
    total = torch.zeros(d, dtype=torch.float64)
    sq_err, sq_sq = 0.0, 0.0
    for _ in range(case["draws"]):
        est, problem = _as_estimate(answer(G, case["batch_size"], case["replace"], gen), d)
        if problem:
            return {"problem": problem}
        total += est
        e2 = float(((est - g_full) ** 2).sum())
        sq_err, sq_sq = sq_err + e2, sq_sq + e2 * e2
    draws = case["draws"]
    mse = sq_err / draws
    # the standard error of mse, from the sample (the probe runs on the trusted side)
    se = math.sqrt(max(sq_sq / draws - mse * mse, 0.0) / draws)
    return {"mean": (total / draws).tolist(), "mse": mse, "mse_se": se}


def _estimator_expect(case: Case) -> dict:
    from ...experiments.stochastic import gradient_spread, minibatch_variance

    G = _tensor(case["G"])
    n = len(G)
    var = minibatch_variance(gradient_spread(G), n, case["batch_size"], replace=case["replace"])
    return {"mean": G.mean(0).tolist(), "mse": var}


def _estimator_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    n, B = len(case["G"]), case["batch_size"]
    scheme = "with" if case["replace"] else "without"
    where = (
        f"minibatch_gradient, {where} (N = {n} examples, B = {B}, {scheme} replacement, "
        f"{case['draws']} draws)"
    )
    _raise_if_error(got, "minibatch_gradient", where)
    if not isinstance(got, dict):
        raise AssertionError(f"{where}: no result")
    if got.get("problem"):
        raise AssertionError(f"{where}: {got['problem']}")
    if "mean" not in got or "mse" not in got:
        raise AssertionError(f"{where}: no result")
    try:
        mean = torch.tensor(got["mean"], dtype=torch.float64)
        mse = float(got["mse"])
        se = float(got.get("mse_se", 0.0))
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise AssertionError(f"{where}: malformed result") from None
    full = torch.tensor(expected["mean"], dtype=torch.float64)
    if (
        mean.shape != full.shape
        or not bool(torch.isfinite(mean).all())
        or not (math.isfinite(mse) and math.isfinite(se) and se >= 0)
    ):
        raise AssertionError(f"{where}: malformed result")
    var = expected["mse"]
    scale = float(full.norm()) + math.sqrt(max(mse, 0.0)) + 1e-300
    if var == 0.0:  # the whole data set, without replacement: no noise at all
        if mse > 1e-24 * scale**2 or float((mean - full).norm()) > 1e-12 * scale:
            raise AssertionError(
                f"{where}: a batch of all N examples drawn without replacement is the whole data "
                f"set, so every estimate must be the full gradient; yours vary by {mse:.3g}"
            )
        return
    # the spread of the estimates around their own average: E|g|^2 - |E g|^2, relative to g-bar
    spread = mse - float((mean - full).norm()) ** 2
    if spread <= 1e-12 * max(mse, 1e-300):
        raise AssertionError(
            f"{where}: your estimates never vary: a mini-batch must be drawn at random on every "
            f"call (use the generator you are given)"
        )
    distance = float((mean - full).norm())
    allowed = MEAN_SE * math.sqrt(var / case["draws"]) + 1e-12
    if distance > allowed:
        raise AssertionError(
            f"{where}: biased: the average of your estimates is {distance:.4g} away from the "
            f"full gradient (the mean of the rows of G); an unbiased estimator would be within "
            f"{allowed:.2g}. Is every example equally likely to be in a batch, and is the "
            f"result an average?"
        )
    rtol = max(MSE_RTOL, min(MSE_SE * se / var, MSE_RTOL_MAX))  # never wider than MSE_RTOL_MAX
    if abs(mse / var - 1) > rtol:
        detail = "too noisy" if mse > var else "less noisy than a random batch of this size"
        raise AssertionError(
            f"{where}: E|g_B - grad f|^2 measured over your estimates is {mse:.4g}, expected "
            f"{var:.4g} for a batch of {B} drawn {scheme} replacement: {detail}. Check how the "
            f"indices are drawn, and the batch size"
        )


def _estimator_success(
    seed: int = 0, n_cases: int = 4, draws: int = 3000, edge: bool = False
) -> str:
    what = "batches of 1, of N and larger" if edge else "with and without replacement"
    return (
        f"minibatch_gradient: OK, unbiased, with the variance of a uniformly drawn batch, and "
        f"drawn with the generator given ({what}, {n_cases} seeded problems, {draws} draws each)"
    )


_register(
    Check(
        "minibatch_gradient",
        _estimator_cases,
        _estimator_probe,
        _estimator_expect,
        _estimator_compare,
        _estimator_success,
    )
)


def minibatch_gradient(
    answer: Callable, *, seed: int = 0, n_cases: int = 4, draws: int = 3000, edge: bool = False
) -> None:
    r"""Check ``answer(G, batch_size, replace, generator)``: one mini-batch gradient, the mean of
    ``batch_size`` rows of the per-example gradient matrix ``G`` (float64, ``(N, d)``) at
    indices drawn uniformly with (``replace=True``) or without replacement, using the
    ``torch.Generator`` given (two calls with generators in the same state must agree). Over
    ``draws`` calls the estimates must average to the full gradient :math:`\bar g` and have the
    mean squared error :math:`\mathbb E\|g_{\mathcal B} - \bar g\|^2` of
    :func:`optlib.experiments.stochastic.minibatch_variance`. ``edge`` tests batches of one
    example, of all :math:`N` without replacement, and larger than :math:`N` with replacement.
    """
    run_check("minibatch_gradient", answer, seed=seed, n_cases=n_cases, draws=draws, edge=edge)


# --------------------------------------------------------------------------- predict the variance


def _variance_cases(
    seed: int = 0, n_cases: int = 6, max_n: int = 5000, edge: bool = False
) -> list[Case]:
    """Seeded (sigma2, N, b, b') cases, with and without replacement. ``edge``: the extremes
    instead, predictions for a batch of one example and for the whole data set (no noise left
    without replacement), and a measurement at a batch of one example."""
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        n = int(round(math.exp(_uniform(g, math.log(50), math.log(max_n)))))
        replace = i % 3 == 2
        b = int(round(math.exp(_uniform(g, 0.0, math.log(n / 4)))))
        # the new batch size: sometimes small, sometimes a large share of the data set
        # (at most N: a small data set can be smaller than the "small" batch)
        b_new = int(round(_uniform(g, 0.3, 0.9) * n)) if i % 2 else max(1, int(_uniform(g, 1, 64)))
        b_new = min(b_new, n)
        if edge:
            replace = i % 2 == 1
            b, b_new = [(1, n), (n // 3, 1), (1, n), (n - 1, 2)][i % 4]
        sigma2 = math.exp(_uniform(g, math.log(0.01), math.log(100.0)))
        cases.append({"sigma2": sigma2, "n": n, "b": b, "b_new": b_new, "replace": replace})
    return cases


def _measured(case: Case, batch_size: int) -> float:
    from ...experiments.stochastic import minibatch_variance

    return minibatch_variance(case["sigma2"], case["n"], batch_size, replace=case["replace"])


def _variance_probe(answer: Callable, case: Case) -> dict:
    v = _measured(case, case["b"])
    return _number(
        answer(v, case["b"], case["b_new"], case["n"], case["replace"]),
        "predict_minibatch_variance",
    )


def _variance_expect(case: Case) -> dict:
    return {"value": _measured(case, case["b_new"])}


def _variance_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    scheme = "with" if case["replace"] else "without"
    where = (
        f"predict_minibatch_variance, {where} (N = {case['n']}, variance measured at B = "
        f"{case['b']}, predicted at B = {case['b_new']}, {scheme} replacement)"
    )
    _raise_if_error(got, "predict_minibatch_variance", where)
    if not isinstance(got, dict) or "value" not in got:
        raise AssertionError(f"{where}: {_problem_of(got)}")
    value = got["value"]
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AssertionError(f"{where}: expected a finite variance, got {value!r}")
    exp = expected["value"]
    if math.isclose(value, exp, rel_tol=1e-6, abs_tol=1e-15):
        return
    hint = ""
    v = _measured(case, case["b"])
    naive = v * case["b"] / case["b_new"]
    if not case["replace"] and math.isclose(value, naive, rel_tol=1e-6):
        hint = (
            " (your prediction would be right for batches drawn with replacement; these are "
            "drawn without, from a finite data set)"
        )
    elif (value - v) * (exp - v) < 0:
        hint = " (your prediction moves the wrong way as the batch size changes)"
    raise AssertionError(
        f"{where}: the exact variance at B = {case['b_new']} is {exp:.8g}, you predicted "
        f"{value:.8g}{hint}"
    )


def _variance_success(
    seed: int = 0, n_cases: int = 6, max_n: int = 5000, edge: bool = False
) -> str:
    what = ", batches of one and of N" if edge else ""
    return (
        f"predict_minibatch_variance: OK, matches the exact variance on {n_cases} seeded "
        f"cases (N up to {max_n}, with and without replacement{what}, relative error < 1e-6)"
    )


_register(
    Check(
        "predict_minibatch_variance",
        _variance_cases,
        _variance_probe,
        _variance_expect,
        _variance_compare,
        _variance_success,
    )
)


def predict_minibatch_variance(
    answer: Callable, *, seed: int = 0, n_cases: int = 6, max_n: int = 5000, edge: bool = False
) -> None:
    r"""Check ``answer(v, b, b_new, n, replace)``: the mean squared error
    :math:`\mathbb E\|g_{\mathcal B} - \nabla f\|^2` of a mini-batch gradient of ``b_new``
    examples, predicted from its value ``v`` at ``b`` examples, for a data set of ``n`` examples
    and batches drawn with (``replace=True``) or without replacement. The expected value is
    exact (:func:`optlib.experiments.stochastic.minibatch_variance`): what sampling many batches
    converges to. ``edge`` tests batches of one example and of the whole data set.
    """
    run_check(
        "predict_minibatch_variance", answer, seed=seed, n_cases=n_cases, max_n=max_n, edge=edge
    )


# --------------------------------------------------------------------------- warm-up + cosine


def _schedule_cases(
    seed: int = 0, n_cases: int = 4, max_steps: int = 200, edge: bool = False
) -> list[Case]:
    """Seeded schedules. ``edge``: the extremes instead, a one-step warm-up, a decay of a
    single step, no ramp at all (``start_factor = 1``) and a floor half the peak."""
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        warmup = 1 + int(_uniform(g, 0, 20))
        total = warmup + 5 + int(_uniform(g, 0, max(1, max_steps - warmup - 5)))
        peak = round(math.exp(_uniform(g, math.log(1e-3), math.log(1.0))), 6)
        start_factor = round(_uniform(g, 0.01, 0.5), 4)
        eta_min = 0.0 if i % 2 == 0 else round(peak * _uniform(g, 0.001, 0.1), 8)
        if edge:
            warmup, total, start_factor, eta_min = [
                (1, 1 + int(_uniform(g, 2, 50)), start_factor, eta_min),
                (warmup, warmup + 1, start_factor, eta_min),
                (warmup, total, 1.0, eta_min),
                (warmup, total, start_factor, round(peak / 2, 8)),
            ][i % 4]
        cases.append(
            {
                "peak_lr": peak,
                "warmup_steps": warmup,
                "total_steps": total,
                "start_factor": start_factor,
                "eta_min": eta_min,
            }
        )
    return cases


def _schedule_probe(answer: Callable, case: Case) -> dict:
    out = []
    for t in range(case["total_steps"] + 1):
        got = _number(
            answer(
                t,
                case["peak_lr"],
                case["warmup_steps"],
                case["total_steps"],
                case["start_factor"],
                case["eta_min"],
            ),
            "warmup_cosine",
        )
        if "problem" in got:
            return {"trajectory": out, "problem": got["problem"], "step": t}
        out.append(got["value"])
    return {"trajectory": out}


def _schedule_expect(case: Case) -> dict:
    from torch.optim import lr_scheduler

    from ...optim import SGD

    p = torch.zeros(1, requires_grad=True)
    opt = SGD([p], lr=case["peak_lr"])
    W, T = case["warmup_steps"], case["total_steps"]
    sched = lr_scheduler.SequentialLR(
        opt,
        [
            lr_scheduler.LinearLR(opt, start_factor=case["start_factor"], total_iters=W),
            lr_scheduler.CosineAnnealingLR(opt, T_max=T - W, eta_min=case["eta_min"]),
        ],
        milestones=[W],
    )
    lrs = []
    for _ in range(T + 1):
        lrs.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()
    return {"trajectory": lrs}


def _schedule_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    W, T = case["warmup_steps"], case["total_steps"]
    where = (
        f"warmup_cosine, {where} (peak_lr={case['peak_lr']:g}, warmup_steps={W}, "
        f"total_steps={T}, start_factor={case['start_factor']:g}, eta_min={case['eta_min']:g})"
    )
    _raise_if_error(got, "warmup_cosine", where)
    if not isinstance(got, dict) or "trajectory" not in got:
        raise AssertionError(f"{where}: no result")
    if got.get("problem"):
        raise AssertionError(f"{where}, step t={got.get('step')}: {got['problem']}")
    ref = expected["trajectory"]
    lrs = got["trajectory"]
    if not isinstance(lrs, list) or len(lrs) != len(ref):
        raise AssertionError(f"{where}: expected one learning rate for each t = 0..{T}")
    for t, (mine, theirs) in enumerate(zip(lrs, ref)):
        if not isinstance(mine, (int, float)) or not math.isfinite(mine):
            raise AssertionError(f"{where}, t={t}: expected a finite number, got {mine!r}")
        if not math.isclose(mine, theirs, rel_tol=1e-9, abs_tol=1e-12):
            if t == 0:
                phase = "at the first step"
            elif t < W:
                phase = "during the warm-up"
            elif t == W:
                phase = "where the warm-up ends"
            elif t == T:
                phase = "at the last step"
            else:
                phase = "during the decay"
            raise AssertionError(
                f"{where}: {phase}, t={t}: torch's schedulers give lr = {theirs:.10g}, "
                f"your function {mine:.10g}"
            )


def _schedule_success(
    seed: int = 0, n_cases: int = 4, max_steps: int = 200, edge: bool = False
) -> str:
    what = " (one-step warm-ups and decays, no ramp, a high floor)" if edge else ""
    return (
        f"warmup_cosine: OK, matches SequentialLR(LinearLR, CosineAnnealingLR) driving "
        f"optlib.SGD at every step of {n_cases} seeded schedules{what}"
    )


_register(
    Check(
        "warmup_cosine_lr",
        _schedule_cases,
        _schedule_probe,
        _schedule_expect,
        _schedule_compare,
        _schedule_success,
    )
)


def warmup_cosine_lr(
    answer: Callable, *, seed: int = 0, n_cases: int = 4, max_steps: int = 200, edge: bool = False
) -> None:
    r"""Check ``answer(t, peak_lr, warmup_steps, total_steps, start_factor, eta_min)``: the
    learning rate at step ``t`` (``0 <= t <= total_steps``) of a linear warm-up from
    ``start_factor * peak_lr`` to ``peak_lr`` over ``warmup_steps`` steps followed by a cosine
    decay to ``eta_min`` at ``total_steps``, against ``torch.optim.lr_scheduler.SequentialLR``
    of ``LinearLR`` and ``CosineAnnealingLR`` (Loshchilov & Hutter, 2017) driving
    :class:`optlib.SGD`. ``edge`` tests one-step warm-ups and decays, no ramp and a high floor.
    """
    run_check(
        "warmup_cosine_lr", answer, seed=seed, n_cases=n_cases, max_steps=max_steps, edge=edge
    )
