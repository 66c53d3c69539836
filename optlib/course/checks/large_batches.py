r"""Exercise checks for chapter 11 (large batches and many machines), registered in
:data:`optlib.course.checks.CHECKS`.

Same design as :mod:`optlib.course.checks` (``cases``/``probe``/``expect``/``compare``), so the
trusted grader can run the learner's part in a sandbox and the rest in the parent:

* :func:`noise_scale_two_batches`: signal :math:`\lVert G\rVert^2` and noise
  :math:`\operatorname{tr}\Sigma` from squared gradient norms at two batch sizes, against
  :func:`optlib.experiments.noise_scale.noise_scale_from_norms` (independent draws);
* :func:`fit_critical_batch`: :math:`(S_{\min}, B_{\rm crit})` of
  :math:`S = S_{\min}(1 + B_{\rm crit}/B)` from steps measured at several batch sizes, against
  the exact values the steps were made from;
* :func:`lars_trust_ratio`: LARS's layer-wise trust ratio, against
  :func:`optlib.optim.lars.lars_trust_ratio`;
* :func:`accumulate_gradients`: the gradient of the mean cross-entropy over all examples of
  several (unequal) micro-batches, accumulated in ``.grad``, against the gradient of one
  backward pass over the whole batch.

In a notebook: ``from optlib.course import checks`` then e.g. ``checks.lars_trust_ratio(f)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._core import (
    ATOL,
    DTYPES,
    RTOL,
    Case,
    Check,
    _generator,
    _number,
    _register,
    _require,
    _rounded,
    _uniform,
    _value_of,
    no_delegation,
    run_check,
)

__all__ = [
    "accumulate_gradients",
    "fit_critical_batch",
    "lars_trust_ratio",
    "noise_scale_two_batches",
]

# What a check of this module must not delegate to: the library's own implementations
NOISE = ("optlib.experiments.noise_scale",)
LARS = ("optlib.optim.lars", "optlib.LARS", "optlib.experiments.large_batches")
PARALLEL = ("optlib.experiments.data_parallel", "torch.nn.parallel")


def _pair(out: Any, what: str, names: tuple[str, str]) -> dict:
    """Two numbers from a tuple or list the learner returned, as ``{names[0]: ..,
    names[1]: ..}``, or ``{"problem": ...}``."""
    if out is None:
        return {"problem": f"{what} returned None (is a `return` missing?)"}
    try:
        items = list(out)
    except TypeError:
        return {"problem": f"{what} returned a {type(out).__name__}; return two numbers, "
                           f"({names[0]}, {names[1]})"}  # fmt: skip
    if len(items) != 2:
        return {"problem": f"{what} returned {len(items)} values; return two, "
                           f"({names[0]}, {names[1]})"}  # fmt: skip
    result = {}
    for name, item in zip(names, items):
        number = _number(item, f"{what} ({name})")
        if "problem" in number:
            return number
        result[name] = number["value"]
    return result


def _close(a: float, b: float, rtol: float, scale: float) -> bool:
    return abs(a - b) <= rtol * max(abs(b), scale)


# --------------------------------------------------------------------------- 1. noise scale


def _noise_cases(seed: int = 0, n_cases: int = 4, single: bool = False) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        signal = 10 ** _uniform(g, -3, 1)
        noise = signal * 10 ** _uniform(g, 0, 3)  # B_simple from 1 to 1000
        b_small = 1 if single and i % 2 == 0 else int(2 ** int(_uniform(g, 1, 5)))
        b_big = b_small * int(2 ** int(_uniform(g, 2, 7)))
        n_small, n_big = (1, 1) if single else (3 + int(_uniform(g, 0, 20)),
                                                 2 + int(_uniform(g, 0, 10)))  # fmt: skip

        def draws(b: int, n: int, signal: float = signal, noise: float = noise) -> list[float]:
            mean = signal + noise / b  # E|G_B|^2, scattered around it by a random factor
            return [mean * float(torch.empty(()).uniform_(0.5, 1.5, generator=g))
                    for _ in range(n)]  # fmt: skip

        cases.append({"sq_small": draws(b_small, n_small), "b_small": b_small,
                      "sq_big": draws(b_big, n_big), "b_big": b_big})  # fmt: skip
    return cases


def _noise_probe(answer: Callable, case: Case) -> dict:
    out = answer(list(case["sq_small"]), case["b_small"], list(case["sq_big"]), case["b_big"])
    return _pair(out, "noise_scale_two_batches", ("signal", "noise"))


def _noise_expect(case: Case) -> dict:
    from ...experiments.noise_scale import noise_scale_from_norms

    est = noise_scale_from_norms(case["sq_small"], case["b_small"], case["sq_big"],
                                 case["b_big"])  # fmt: skip
    small = sum(case["sq_small"]) / len(case["sq_small"])
    big = sum(case["sq_big"]) / len(case["sq_big"])
    return {"signal": est.signal, "noise": est.noise, "scale": small,
            "swapped": (big, small)}  # fmt: skip


def _noise_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (f"noise_scale_two_batches, {where} ({len(case['sq_small'])} norms at B = "
             f"{case['b_small']}, {len(case['sq_big'])} at B = {case['b_big']})")  # fmt: skip
    got = _require(got, ["signal", "noise"], where, "noise_scale_two_batches")
    for key in ("signal", "noise"):
        if not _close(got[key], expected[key], 1e-9, 1e-12 * expected["scale"]):
            hint = ""
            if key == "signal" and _close(got[key], expected["swapped"][0], 1e-9, 1e-300):
                hint = (" (that is the mean squared norm at the big batch: the signal is where "
                        "the line in 1/B meets 1/B = 0)")  # fmt: skip
            raise AssertionError(f"{where}: {key} expected {expected[key]:.10g}, got "
                                 f"{got[key]:.10g}{hint}")  # fmt: skip


def _noise_success(seed: int = 0, n_cases: int = 4, single: bool = False) -> str:
    extra = ", one norm per batch size and B_small = 1" if single else ""
    return (f"noise_scale_two_batches: OK, signal and noise match the two-batch estimator on "
            f"{n_cases} seeded cases{extra}")  # fmt: skip


_register(Check("noise_scale_two_batches", _noise_cases, _noise_probe, _noise_expect,
                _noise_compare, _noise_success))  # fmt: skip
no_delegation("noise_scale_two_batches", "noise-scale estimator", *NOISE)


def noise_scale_two_batches(
    answer: Callable, *, seed: int = 0, n_cases: int = 4, single: bool = False
) -> None:
    r"""Check ``answer(sq_small, b_small, sq_big, b_big)`` returning ``(signal, noise)``: the
    intercept :math:`\lVert G\rVert^2` and the slope :math:`\operatorname{tr}\Sigma` of the
    line :math:`\mathbb{E}\lVert G_B\rVert^2 = \lVert G\rVert^2 + \operatorname{tr}\Sigma/B`
    through the mean squared norms (lists) at the two batch sizes. ``single``: one norm per
    batch size, and a small batch of one example."""
    run_check("noise_scale_two_batches", answer, seed=seed, n_cases=n_cases, single=single)


# --------------------------------------------------------------------------- 2. critical batch


def _crit_cases(seed: int = 0, n_cases: int = 4, few: bool = False) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        s_min = 10 ** _uniform(g, 0.5, 3)
        b_crit = 10 ** _uniform(g, 0.5, 3.5)
        k = 2 if few and i % 2 == 0 else 3 + int(_uniform(g, 0, 5))
        sizes = sorted({int(2 ** int(_uniform(g, 0, 14))) for _ in range(4 * k)})[:k]
        while len(sizes) < k:
            sizes.append(2 * sizes[-1])
        if few:  # in any order
            sizes = [sizes[j] for j in torch.randperm(len(sizes), generator=g).tolist()]
        steps = [s_min * (1 + b_crit / b) for b in sizes]
        cases.append({"batch_sizes": sizes, "steps": steps, "s_min": s_min, "b_crit": b_crit})
    return cases


def _crit_probe(answer: Callable, case: Case) -> dict:
    out = answer(list(case["batch_sizes"]), list(case["steps"]))
    return _pair(out, "fit_critical_batch", ("s_min", "b_crit"))


def _crit_expect(case: Case) -> dict:
    return {"s_min": case["s_min"], "b_crit": case["b_crit"]}


def _crit_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = f"fit_critical_batch, {where} (batch sizes {case['batch_sizes']})"
    got = _require(got, ["s_min", "b_crit"], where, "fit_critical_batch")
    for key in ("s_min", "b_crit"):
        if not _close(got[key], expected[key], 1e-6, 0.0):
            hint = ""
            if key == "b_crit" and _close(got[key], expected["s_min"] * expected["b_crit"], 1e-6,
                                          0.0):  # fmt: skip
                hint = " (that is S_min * B_crit, the coefficient of 1/B)"
            raise AssertionError(f"{where}: {key} expected {expected[key]:.8g}, got "
                                 f"{got[key]:.8g}{hint}")  # fmt: skip


def _crit_success(seed: int = 0, n_cases: int = 4, few: bool = False) -> str:
    extra = ", two batch sizes and unsorted ones" if few else ""
    return (f"fit_critical_batch: OK, recovers S_min and B_crit on {n_cases} seeded "
            f"curves{extra}")  # fmt: skip


_register(Check("fit_critical_batch", _crit_cases, _crit_probe, _crit_expect, _crit_compare,
                _crit_success))  # fmt: skip
no_delegation("fit_critical_batch", "critical-batch fit", *NOISE)


def fit_critical_batch(
    answer: Callable, *, seed: int = 0, n_cases: int = 4, few: bool = False
) -> None:
    r"""Check ``answer(batch_sizes, steps)`` returning ``(s_min, b_crit)`` such that
    :math:`S = S_{\min}(1 + B_{\rm crit}/B)` fits the steps (lists of equal length, at least two
    batch sizes), on steps made exactly from that curve. ``few``: only two batch sizes, and
    batch sizes in any order."""
    run_check("fit_critical_batch", answer, seed=seed, n_cases=n_cases, few=few)


# --------------------------------------------------------------------------- 3. LARS


def _lars_cases(seed: int = 0, n_cases: int = 5, edge: bool = False) -> list[Case]:
    g = _generator(seed)
    shapes = [[7, 5], [12], [3, 4, 2], [1], [16, 3]]
    cases = []
    for i in range(n_cases):
        dtype = "float32" if i % 3 == 2 else "float64"
        shape = shapes[i % len(shapes)]
        theta = torch.randn(shape, generator=g, dtype=torch.float64) * 10 ** _uniform(g, -2, 1)
        grad = torch.randn(shape, generator=g, dtype=torch.float64) * 10 ** _uniform(g, -4, 1)
        if edge and i % 2 == 0:
            (theta if i % 4 == 0 else grad).zero_()  # a zero norm: the ratio is 1
        cases.append({
            "dtype": dtype, "shape": shape, "theta": _rounded(theta, dtype),
            "g": _rounded(grad, dtype), "trust_coeff": round(10 ** _uniform(g, -3, -1), 6),
            "weight_decay": 0.0 if i % 2 else round(10 ** _uniform(g, -5, -2), 8),
            "eps": 1e-8,
        })  # fmt: skip
    return cases


def _lars_inputs(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    dt = DTYPES[case["dtype"]]
    return torch.tensor(case["theta"], dtype=dt), torch.tensor(case["g"], dtype=dt)


def _lars_probe(answer: Callable, case: Case) -> dict:
    theta, grad = _lars_inputs(case)
    theta_in, grad_in = theta.clone(), grad.clone()
    out = answer(theta, grad, trust_coeff=case["trust_coeff"],
                 weight_decay=case["weight_decay"], eps=case["eps"])  # fmt: skip
    if not (torch.equal(theta, theta_in) and torch.equal(grad, grad_in)):
        return {"problem": "lars_trust_ratio changed theta or g in place"}
    return _number(out, "lars_trust_ratio")


def _lars_expect(case: Case) -> dict:
    from ...optim.lars import lars_trust_ratio as reference

    theta, grad = (t.double() for t in _lars_inputs(case))
    r = reference(theta, grad, trust_coeff=case["trust_coeff"],
                  weight_decay=case["weight_decay"], eps=case["eps"])  # fmt: skip
    no_decay = case["trust_coeff"] * float(theta.norm()) / (float(grad.norm()) + case["eps"])
    return {"value": float(r), "no_decay": no_decay}


def _lars_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (f"lars_trust_ratio, {where} ({case['dtype']}, shape {tuple(case['shape'])}, "
             f"trust_coeff = {case['trust_coeff']}, weight_decay = {case['weight_decay']})")
    value = _value_of(got, "lars_trust_ratio", where, nonnegative=True, kind="ratio")
    want = expected["value"]
    if _close(value, want, RTOL[case["dtype"]], ATOL[case["dtype"]]):
        return
    hint = ""
    if want == 1.0:
        hint = " (where a norm is zero the ratio is 1, so the step falls back to the plain one)"
    elif case["weight_decay"] and _close(value, expected["no_decay"], RTOL[case["dtype"]], 0.0):
        hint = " (the denominator also holds the weight decay times the weight norm)"
    raise AssertionError(f"{where}: expected {want:.10g}, got {value:.10g}{hint}")


def _lars_success(seed: int = 0, n_cases: int = 5, edge: bool = False) -> str:
    extra = ", with zero weights and zero gradients" if edge else ""
    return (f"lars_trust_ratio: OK, matches optlib's LARS on {n_cases} seeded tensors (float64 "
            f"and float32, with and without weight decay{extra})")  # fmt: skip


_register(Check("lars_trust_ratio", _lars_cases, _lars_probe, _lars_expect, _lars_compare,
                _lars_success))  # fmt: skip
no_delegation("lars_trust_ratio", "LARS trust ratio", *LARS)


def lars_trust_ratio(
    answer: Callable, *, seed: int = 0, n_cases: int = 5, edge: bool = False
) -> None:
    r"""Check ``answer(theta, g, *, trust_coeff, weight_decay, eps)``: LARS's trust ratio
    :math:`\kappa\lVert\theta\rVert/(\lVert g\rVert + \lambda\lVert\theta\rVert + \epsilon)`,
    1 where either norm is zero, as a number; ``theta`` and ``g`` unchanged. ``edge``: zero
    weights and zero gradients."""
    run_check("lars_trust_ratio", answer, seed=seed, n_cases=n_cases, edge=edge)


# --------------------------------------------------------------------------- 4. accumulation


def _acc_cases(seed: int = 0, n_cases: int = 3, stale: bool = False) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        dtype = "float32" if stale and i % 2 else "float64"
        d_in, hidden, C = 3 + int(_uniform(g, 0, 4)), 4 + int(_uniform(g, 0, 5)), 3
        sizes = [d_in, hidden, C]
        weights = []
        for a, b in zip(sizes, sizes[1:]):
            weights.append(_rounded(torch.randn(b, a, generator=g, dtype=torch.float64), dtype))
            weights.append(_rounded(0.5 * torch.randn(b, generator=g, dtype=torch.float64),
                                    dtype))  # fmt: skip
        R = 12 + int(_uniform(g, 0, 12))
        perm = torch.randperm(R, generator=g)
        cuts = sorted(torch.randperm(R - 1, generator=g)[: 2 + i % 2].add(1).tolist())
        parts = [perm[a:b].tolist() for a, b in zip([0, *cuts], [*cuts, R])]  # unequal sizes
        cases.append({
            "dtype": dtype, "sizes": sizes, "weights": weights,
            "X": _rounded(torch.randn(R, d_in, generator=g, dtype=torch.float64), dtype),
            "y": torch.randint(0, C, (R,), generator=g).tolist(), "parts": parts,
            "stale": stale,
        })  # fmt: skip
    return cases


def _acc_build(case: Case, dtype: str | None = None) -> tuple[nn.Sequential, torch.Tensor,
                                                              torch.Tensor]:  # fmt: skip
    dt = DTYPES[dtype or case["dtype"]]
    a, h, c = case["sizes"]
    model = nn.Sequential(nn.Linear(a, h), nn.Tanh(), nn.Linear(h, c)).to(dt)
    with torch.no_grad():
        for p, w in zip(model.parameters(), case["weights"]):
            p.copy_(torch.tensor(w, dtype=dt))
    return model, torch.tensor(case["X"], dtype=dt), torch.tensor(case["y"], dtype=torch.long)


def _acc_probe(answer: Callable, case: Case) -> dict:
    model, X, y = _acc_build(case)
    if case["stale"]:  # gradients left over from an earlier step
        for p in model.parameters():
            p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in model.parameters()]
    parts = [torch.tensor(m, dtype=torch.long) for m in case["parts"]]
    out = answer(model, X, y, parts)
    if not all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before)):
        return {"problem": "accumulate_gradients changed the parameters; leave the step to the "
                           "optimizer"}  # fmt: skip
    if any(p.grad is None for p in model.parameters()):
        return {"problem": "after accumulate_gradients a parameter has no .grad"}
    loss = _number(out, "accumulate_gradients")
    if "problem" in loss:
        return loss
    grads = torch.cat([p.grad.detach().double().reshape(-1) for p in model.parameters()])
    return {"grad": grads.tolist(), "loss": loss["value"]}


def _acc_expect(case: Case) -> dict:
    model, X, y = _acc_build(case, "float64")
    loss = nn.functional.cross_entropy(model(X), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    flat = torch.cat([t.reshape(-1) for t in grads])
    # plausible mistakes, for the hints: micro-batch means summed, and averaged unweighted
    sums, means = torch.zeros_like(flat), torch.zeros_like(flat)
    for m in case["parts"]:
        idx = torch.tensor(m, dtype=torch.long)
        part = torch.autograd.grad(nn.functional.cross_entropy(model(X[idx]), y[idx]),
                                   list(model.parameters()))  # fmt: skip
        part_flat = torch.cat([t.reshape(-1) for t in part])
        sums += part_flat
        means += part_flat / len(case["parts"])
    return {"grad": flat.tolist(), "loss": float(loss.detach()), "summed": sums.tolist(),
            "unweighted": means.tolist()}  # fmt: skip


def _acc_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    sizes = [len(m) for m in case["parts"]]
    where = (f"accumulate_gradients, {where} ({case['dtype']}, micro-batches of {sizes} "
             f"examples{', stale gradients in .grad before the call' if case['stale'] else ''})")
    got = _require(got, ["grad", "loss"], where, "accumulate_gradients")
    rtol = 1e-9 if case["dtype"] == "float64" else 1e-4
    want = torch.tensor(expected["grad"], dtype=torch.float64)
    have = torch.tensor(got["grad"], dtype=torch.float64)
    scale = float(want.abs().max())
    if float((have - want).abs().max()) > rtol * scale:
        hint = ""
        for key, text in (("summed", "the micro-batches' mean gradients added up: weight each "
                                     "by its share of the examples"),
                          ("unweighted", "each micro-batch weighted equally: they have different "
                                         "sizes")):  # fmt: skip
            other = torch.tensor(expected[key], dtype=torch.float64)
            if float((have - other).abs().max()) <= rtol * scale:
                hint = f" (that is {text})"
        if case["stale"] and not hint:
            ones = want + 1.0
            if float((have - ones).abs().max()) <= rtol * scale + rtol:
                hint = " (the gradients already in .grad before the call must be cleared first)"
        raise AssertionError(f"{where}: .grad differs from the gradient of the mean loss over "
                             f"all examples by up to {float((have - want).abs().max()):.3g} "
                             f"(its largest entry is {scale:.3g}){hint}")  # fmt: skip
    if not _close(got["loss"], expected["loss"], rtol, 0.0):
        raise AssertionError(f"{where}: returned mean loss {got['loss']:.10g}, expected the mean "
                             f"over all examples, {expected['loss']:.10g}")  # fmt: skip


def _acc_success(seed: int = 0, n_cases: int = 3, stale: bool = False) -> str:
    extra = ", float32, and stale gradients cleared" if stale else ""
    return (f"accumulate_gradients: OK, equals one backward pass over the whole batch on "
            f"{n_cases} seeded models with unequal micro-batches{extra}")  # fmt: skip


_register(Check("accumulate_gradients", _acc_cases, _acc_probe, _acc_expect, _acc_compare,
                _acc_success))  # fmt: skip
no_delegation("accumulate_gradients", "gradient accumulation", *PARALLEL)


def accumulate_gradients(
    answer: Callable, *, seed: int = 0, n_cases: int = 3, stale: bool = False
) -> None:
    r"""Check ``answer(model, X, y, micro_batches)``: leaves in every parameter's ``.grad`` the
    gradient of the mean cross-entropy over all examples of ``micro_batches`` (a list of index
    tensors of different sizes), computed one micro-batch at a time, and returns that mean
    loss as a number; the parameters unchanged. ``stale``: ``.grad`` holds gradients of an
    earlier step before the call (they must be cleared), and float32 models."""
    run_check("accumulate_gradients", answer, seed=seed, n_cases=n_cases, stale=stale)
