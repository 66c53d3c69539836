r"""Exercise checks for chapter 9 (curvature on a budget: Sophia), registered in
:data:`optlib.course.checks.CHECKS`.

Same design as :mod:`optlib.course.checks` (``cases``/``probe``/``expect``/``compare``), so the
trusted grader can run the learner's part in a sandbox and the rest in the parent:

* :func:`hvp_double_backward`: a Hessian-vector product of the mean cross-entropy of a small
  ``torch.nn`` model, against :func:`optlib.linalg.exact_hessian` times :math:`v`;
* :func:`hutchinson_estimator`: Hutchinson's diagonal estimate from a Hessian-vector product
  callback, checked *statistically* against the exact diagonal and the exact variance of a
  Rademacher probe (:func:`optlib.linalg.hutchinson_variance`), and for exactness where the
  Hessian is diagonal;
* :func:`gnb_loss`: the Gauss-Newton-Bartlett loss, the mean cross-entropy against labels
  sampled from the logits' own softmax, checked statistically: its expectation over the labels
  is the mean entropy of the softmax rows, and its spread that of one label per row;
* :func:`sophia_clipped_fraction`: which coordinates of a SophiaG or SophiaH step are clipped,
  against steps of :class:`optlib.SophiaG` and :class:`optlib.SophiaH` from the same state.

The statistical checks draw a fixed number of samples from generators seeded by the case, so a
given answer always gets the same verdict; their thresholds are far (many standard deviations)
from what any correct answer produces (see ``tests/test_checks_curvature.py``, which runs
correct answers over many seeds).

In a notebook: ``from optlib.course import checks`` then e.g. ``checks.gnb_loss(gnb_loss)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._core import (
    DTYPES,
    Case,
    Check,
    _as_float_array,
    _fmt_index,
    _generator,
    _number,
    _register,
    _require,
    _rounded,
    _tensor,
    _uniform,
    _value_of,
    no_delegation,
    run_check,
)

__all__ = [
    "gnb_loss",
    "hutchinson_estimator",
    "hvp_double_backward",
    "sophia_clipped_fraction",
]

# What a check of this module must not delegate to: the library's own curvature tools.
CURVATURE = ("optlib.linalg.curvature", "optlib.linalg.hvp", "optlib.linalg.exact_hessian")
SOPHIA = ("optlib.optim.sophia", "optlib.SophiaG", "optlib.SophiaH", "optlib.experiments.sophia")
TORCH_HESSIANS = (
    "torch.autograd.functional.hvp", "torch.autograd.functional.vhp",
    "torch.autograd.functional.hessian", "torch.func.hessian",
)  # fmt: skip


# --------------------------------------------------------------------------- small models


def _model_case(g: torch.Generator, dtype: str, kind: str) -> dict:
    d_in, C = 3 + int(_uniform(g, 0, 3)), 3 + int(_uniform(g, 0, 2))
    hidden = [4 + int(_uniform(g, 0, 4))]
    if kind == "deep":
        hidden.append(3 + int(_uniform(g, 0, 3)))
    if kind == "linear":
        hidden = []
    sizes = [d_in, *hidden, C]
    R = 10 + int(_uniform(g, 0, 10))
    weights = []
    for a, b in zip(sizes, sizes[1:]):
        weights.append(_rounded(torch.randn(b, a, generator=g, dtype=torch.float64), dtype))
        weights.append(_rounded(0.5 * torch.randn(b, generator=g, dtype=torch.float64), dtype))
    v = [_rounded(torch.randn(torch.tensor(w).shape, generator=g, dtype=torch.float64), dtype)
         for w in weights]  # fmt: skip
    return {
        "dtype": dtype,
        "kind": kind,
        "sizes": sizes,
        "weights": weights,
        "X": _rounded(torch.randn(R, d_in, generator=g, dtype=torch.float64), dtype),
        "y": torch.randint(0, C, (R,), generator=g).tolist(),
        "v": v,
    }


def _build(case: Case, dtype: str | None = None) -> tuple[nn.Sequential, torch.Tensor,
                                                            torch.Tensor]:  # fmt: skip
    """The case's ``nn.Sequential`` (tanh between linear layers), inputs and labels."""
    dt = DTYPES[dtype or case["dtype"]]
    layers: list[nn.Module] = []
    sizes = case["sizes"]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    model = nn.Sequential(*layers).to(dt)
    with torch.no_grad():
        for p, w in zip(model.parameters(), case["weights"]):
            p.copy_(torch.tensor(w, dtype=dt))
    return model, torch.tensor(case["X"], dtype=dt), torch.tensor(case["y"], dtype=torch.long)


# --------------------------------------------------------------------------- 1. an HVP


def _hvp_cases(seed: int = 0, n_cases: int = 3, more: bool = False) -> list[Case]:
    g = _generator(seed)
    kinds = ["mlp", "deep", "linear"] if more else ["mlp"]
    return [
        _model_case(g, "float32" if more and i % 2 else "float64", kinds[i % len(kinds)])
        for i in range(n_cases)
    ]


def _hvp_probe(answer: Callable, case: Case) -> dict:
    model, X, y = _build(case)
    dt = DTYPES[case["dtype"]]
    v = [torch.tensor(t, dtype=dt) for t in case["v"]]
    before = [p.detach().clone() for p in model.parameters()] + [t.clone() for t in v]
    out = answer(model, X, y, v)
    after = [p.detach() for p in model.parameters()] + v
    if not all(torch.equal(a, b) for a, b in zip(after, before)):
        return {"problem": "hvp changed the model's parameters or v in place; leave them as "
                           "they are"}  # fmt: skip
    if out is None:
        return {"problem": "hvp returned None (is a `return` missing?)"}
    if isinstance(out, torch.Tensor):
        return {"problem": "hvp returned one tensor; return a list with one tensor per "
                           "parameter, shaped like it"}  # fmt: skip
    try:
        pieces = [torch.as_tensor(t).detach() for t in out]
    except (TypeError, ValueError, RuntimeError):
        return {"problem": f"hvp returned a {type(out).__name__}, not a list of tensors"}
    shapes = [tuple(p.shape) for p in model.parameters()]
    if [tuple(t.shape) for t in pieces] != shapes:
        return {"problem": f"hvp returned tensors of shapes {[tuple(t.shape) for t in pieces]}, "
                           f"expected the parameters' shapes {shapes}"}  # fmt: skip
    return {"hv": torch.cat([t.to(torch.float64).reshape(-1) for t in pieces]).tolist()}


def _hvp_expect(case: Case) -> dict:
    from ...linalg import exact_hessian

    model, X, y = _build(case, "float64")  # the case's (rounded) values, in float64
    params = list(model.parameters())

    def loss():
        return nn.functional.cross_entropy(model(X), y)

    H = exact_hessian(loss, params)
    v = torch.cat([torch.tensor(t, dtype=torch.float64).reshape(-1) for t in case["v"]])
    grad = torch.autograd.grad(loss(), params)
    return {
        "hv": (H @ v).tolist(),
        "gradient": torch.cat([t.reshape(-1) for t in grad]).tolist(),
        "h_ones": H.sum(1).tolist(),
    }


def _hvp_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (f"hvp_double_backward, {where} ({case['dtype']}, layers {case['sizes']}, "
             f"{len(case['y'])} examples)")  # fmt: skip
    got = _require(got, ["hv"], where, "hvp")
    mine = _as_float_array(got["hv"], "the product", where)
    ref = torch.tensor(expected["hv"], dtype=torch.float64)
    if mine.shape != ref.shape:
        raise AssertionError(f"{where}: expected {ref.numel()} numbers")
    scale = float(ref.abs().max())
    rtol, atol = (1e-9, 1e-11 * scale) if case["dtype"] == "float64" else (1e-4, 1e-5 * scale)
    bad = ~torch.isclose(mine, ref, rtol=rtol, atol=atol)
    if not bool(bad.any()):
        return

    def near(key: str) -> bool:
        other = torch.tensor(expected[key], dtype=torch.float64)
        return bool(torch.allclose(mine, other, rtol=1e-3, atol=1e-3 * float(other.abs().max())))

    hint = ""
    if float(mine.abs().max()) == 0.0:
        hint = (" (all zeros: the gradient must keep its graph, create_graph=True, so that it "
                "can be differentiated a second time)")  # fmt: skip
    elif near("gradient"):
        hint = " (this is the gradient itself: differentiate <gradient, v> once more)"
    elif bool(torch.allclose(mine, -ref, rtol=1e-3, atol=1e-3 * scale)):
        hint = " (the sign is flipped)"
    elif near("h_ones"):
        hint = " (this is H times a vector of ones: use v)"
    flat = int(bad.nonzero()[0])
    raise AssertionError(
        f"{where}: entry {_fmt_index((flat,))} of Hv (parameters flattened in order) differs "
        f"from the exact Hessian times v: expected {float(ref[flat]):.10g}, got "
        f"{float(mine[flat]):.10g}{hint}"
    )


def _hvp_success(seed: int = 0, n_cases: int = 3, more: bool = False) -> str:
    extra = " (one and two hidden layers, a linear model; float64 and float32)" if more else ""
    return (f"hvp_double_backward: OK, equals the exact Hessian times v on {n_cases} seeded "
            f"models{extra}")  # fmt: skip


_register(Check("hvp_double_backward", _hvp_cases, _hvp_probe, _hvp_expect, _hvp_compare,
                _hvp_success))  # fmt: skip
no_delegation("hvp_double_backward", "Hessian-vector product", *CURVATURE, *TORCH_HESSIANS,
              *SOPHIA)  # fmt: skip


def hvp_double_backward(
    answer: Callable, *, seed: int = 0, n_cases: int = 3, more: bool = False
) -> None:
    r"""Check ``answer(model, X, y, v)``: the Hessian-vector product :math:`Hv` of the mean
    cross-entropy ``cross_entropy(model(X), y)`` with respect to ``model.parameters()``, for
    ``v`` a list of tensors shaped like the parameters, returned as such a list; the model and
    ``v`` must be left unchanged. Against :func:`optlib.linalg.exact_hessian` times :math:`v`.
    ``more`` adds a deeper model, a linear one and float32.
    """
    run_check("hvp_double_backward", answer, seed=seed, n_cases=n_cases, more=more)


# --------------------------------------------------------------------------- 2. Hutchinson

# A correct estimator's mean squared z-score over the coordinates is ~1 (measured over 2000
# seeds in the tests: never above 1.7); Gaussian probes on these heavy diagonals give > 4.
Q_MAX = 2.5


def _hutchinson_matrix(g: torch.Generator, n: int, kind: str) -> torch.Tensor:
    signs = torch.where(torch.rand(n, generator=g) < 0.3, -1.0, 1.0).to(torch.float64)
    diag = signs * (2.0 + 3.0 * torch.rand(n, generator=g, dtype=torch.float64))
    if kind == "diagonal":
        return torch.diag(diag)
    E = torch.randn(n, n, generator=g, dtype=torch.float64) * 0.4 / math.sqrt(n / 30)
    E = (E + E.T) / math.sqrt(2)
    E.fill_diagonal_(0.0)
    H = torch.diag(diag) + E
    if kind == "zero rows":  # coordinates the loss does not depend on: exact zeros
        zero = torch.randperm(n, generator=g)[: max(2, n // 8)]
        H[zero, :] = 0.0
        H[:, zero] = 0.0
    return H


def _hutchinson_cases(seed: int = 0, n_cases: int = 3, n_probes: int = 300,
                      edge: bool = False) -> list[Case]:  # fmt: skip
    g = _generator(seed)
    kinds = ["dense", "diagonal", "zero rows"]
    cases = []
    for i in range(n_cases):
        kind = kinds[i % len(kinds)]
        n = 60 + int(_uniform(g, 0, 20))
        dtype = "float32" if edge and i % 2 == 1 else "float64"
        probes = n_probes
        if edge and kind == "diagonal":
            probes = 1  # one probe is exact when H is diagonal
        H = _hutchinson_matrix(g, n, kind)
        cases.append({"dtype": dtype, "kind": kind, "H": _rounded(H, dtype), "n_probes": probes,
                      "seed": int(torch.randint(2**31 - 1, (), generator=g))})  # fmt: skip
    return cases


def _estimate_of(out: Any, n: int) -> tuple[torch.Tensor | None, str | None]:
    if out is None:
        return None, "hutchinson_diag returned None (is a `return` missing?)"
    try:
        est = torch.as_tensor(out).detach().to(torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None, f"hutchinson_diag returned a {type(out).__name__}, not a tensor"
    if tuple(est.shape) != (n,):
        return None, f"hutchinson_diag returned shape {tuple(est.shape)}, expected ({n},)"
    if not bool(torch.isfinite(est).all()):
        return None, "hutchinson_diag returned a non-finite value"
    return est, None


def _hutchinson_probe(answer: Callable, case: Case) -> dict:
    H = _tensor(case["H"], case["dtype"])
    n = H.shape[0]
    calls = [0]

    def hvp(v):
        calls[0] += 1
        v = torch.as_tensor(v)
        if tuple(v.shape) != (n,):
            raise ValueError(f"hvp takes a vector of {n} entries, got shape {tuple(v.shape)}")
        return H @ v.to(H.dtype)

    S = case["n_probes"]
    gen = torch.Generator().manual_seed(case["seed"])
    est, problem = _estimate_of(answer(hvp, n, S, gen), n)
    if problem:
        return {"problem": problem}
    if calls[0] != S:
        return {"problem": f"hutchinson_diag called hvp {calls[0]} times for n_probes = {S}: "
                           "one product per probe, no more, no fewer"}  # fmt: skip
    # the same generator state must give the same estimate: the probes come from `generator`
    few = min(S, 4)
    first, problem = _estimate_of(answer(hvp, n, few, torch.Generator().manual_seed(1)), n)
    if problem:
        return {"problem": problem}
    again, problem = _estimate_of(answer(hvp, n, few, torch.Generator().manual_seed(1)), n)
    if problem:
        return {"problem": problem}
    if not torch.equal(first, again):
        return {"problem": "two calls with generators in the same state gave different "
                           "estimates: draw every probe with the generator you are given"}
    return {"estimate": est.tolist()}


def _hutchinson_expect(case: Case) -> dict:
    from ...linalg import hutchinson_variance

    H = _tensor(case["H"])  # the case's (rounded) values, in float64
    return {
        "diag": H.diagonal().tolist(),
        "var": hutchinson_variance(H).tolist(),
        "var_gaussian": hutchinson_variance(H, "gaussian").tolist(),
    }


def _hutchinson_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    S, n = case["n_probes"], len(case["H"])
    where = (f"hutchinson_estimator, {where} ({case['dtype']} H of size {n}, {case['kind']}, "
             f"{S} probes)")  # fmt: skip
    got = _require(got, ["estimate"], where, "hutchinson_diag")
    est = _as_float_array(got["estimate"], "the estimate", where)
    d = torch.tensor(expected["diag"], dtype=torch.float64)
    var = torch.tensor(expected["var"], dtype=torch.float64)
    if est.shape != d.shape:
        raise AssertionError(f"{where}: expected {n} numbers")
    tol = (1e-12 if case["dtype"] == "float64" else 1e-5) * float(d.abs().max())
    exact = var == 0  # no off-diagonal entries in these rows: every Rademacher sample is exact
    if bool(exact.any()):
        gap = (est - d)[exact].abs()
        if float(gap.max()) > tol:
            i = int(torch.nonzero(exact)[int(gap.argmax())])
            hint = ""
            if case["kind"] == "diagonal" and abs(float(est[i] / d[i]) - S / max(S - 1, 1)) < 1e-6:
                hint = " (divide by the number of probes)"
            raise AssertionError(
                f"{where}: coordinate {i} has no off-diagonal entries in its row of H, so every "
                f"Rademacher sample u_i (Hu)_i equals H_ii exactly: expected {float(d[i]):.10g}, "
                f"got {float(est[i]):.10g}{hint} (are your probes +-1?)"
            )
    live = ~exact
    if not bool(live.any()):
        return
    z = (est - d)[live] / (var[live] / S).sqrt()
    q = float((z**2).mean())
    if q <= Q_MAX:
        return
    z_gauss = (est - d)[live] / (torch.tensor(expected["var_gaussian"])[live] / S).sqrt()
    if float((z_gauss**2).mean()) < 2.0:
        hint = ("your estimate scatters like one with Gaussian probes: use Rademacher probes "
                "(+-1 with probability 1/2), whose u_i^2 = 1 removes the diagonal's share of the "
                "variance")  # fmt: skip
    elif abs(float(z.mean())) > 3.0:
        ratio = float((est[live] @ d[live]) / (d[live] @ d[live]))
        hint = (f"it is biased: on average it is {ratio:.3g} times the diagonal (an average of "
                "u * (H u) over the probes is unbiased)")  # fmt: skip
    else:
        hint = "it scatters more than an average of independent Rademacher samples would"
    raise AssertionError(
        f"{where}: the estimate is off the exact diagonal by {math.sqrt(q):.3g} standard errors "
        f"(root mean square over the coordinates; a correct estimator gives about 1): {hint}"
    )


def _hutchinson_success(seed: int = 0, n_cases: int = 3, n_probes: int = 300,
                        edge: bool = False) -> str:  # fmt: skip
    extra = ", one probe on a diagonal H, float32" if edge else ""
    return (
        f"hutchinson_estimator: OK, within the Rademacher estimator's standard error of the exact "
        f"diagonal on {n_cases} seeded Hessians (dense with negative entries, diagonal: exact, "
        f"zero rows{extra}), {n_probes} probes, one product each, from the generator given"
    )


_register(Check("hutchinson_estimator", _hutchinson_cases, _hutchinson_probe,
                _hutchinson_expect, _hutchinson_compare, _hutchinson_success))  # fmt: skip
no_delegation("hutchinson_estimator", "Hutchinson estimator", *CURVATURE, *SOPHIA)


def hutchinson_estimator(
    answer: Callable, *, seed: int = 0, n_cases: int = 3, n_probes: int = 300,
    edge: bool = False,
) -> None:  # fmt: skip
    r"""Check ``answer(hvp, n, n_probes, generator)``: Hutchinson's estimate of the diagonal of
    an :math:`n\times n` symmetric :math:`H` that is known only through ``hvp(v)`` :math:`= Hv`,
    :math:`\frac1S\sum_s u_s\odot Hu_s` with :math:`S` = ``n_probes`` Rademacher probes drawn
    with ``generator``, one product each, as a tensor of :math:`n` numbers. Checked against the
    exact diagonal in units of the estimator's exact standard error
    (:func:`optlib.linalg.hutchinson_variance`), exactly where a row has no off-diagonal
    entries, and for reproducibility from the generator's state. ``edge``: one probe on a
    diagonal :math:`H`, and float32.
    """
    run_check("hutchinson_estimator", answer, seed=seed, n_cases=n_cases, n_probes=n_probes,
              edge=edge)  # fmt: skip


# --------------------------------------------------------------------------- 3. the GNB loss

# The mean squared z-score of `calls` values of a correct answer is a chi-square with `calls`
# degrees of freedom over `calls` (the rows are many: the central limit theorem holds to a few
# percent); for 12 calls P(< 0.05) ~ 1e-7 and P(> 4) ~ 1e-6.
GNB_Q = (0.05, 4.0)


def _gnb_cases(seed: int = 0, n_cases: int = 3, calls: int = 12, sequences: bool = False,
               float32: bool = False) -> list[Case]:  # fmt: skip
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        C = 3 + int(_uniform(g, 0, 10))
        rows = 1500 + int(_uniform(g, 0, 1000))
        kind = ["mixed", "confident", "flat"][i % 3]
        scale = {"mixed": 2.0, "confident": 6.0, "flat": 0.3}[kind]
        logits = torch.randn(rows, C, generator=g, dtype=torch.float64) * scale
        logits *= torch.rand(rows, 1, generator=g, dtype=torch.float64) * 1.5 + 0.25
        shape = [rows, C]
        if sequences:
            B = [2, 3, 4, 5][i % 4]
            rows -= rows % B
            logits, shape = logits[:rows], [B, rows // B, C]
        dtype = "float32" if float32 and i % 2 == 0 else "float64"
        cases.append({"dtype": dtype, "kind": kind, "shape": shape,
                      "logits": _rounded(logits.reshape(shape), dtype), "calls": int(calls),
                      "seed": int(torch.randint(2**31 - 1, (), generator=g))})  # fmt: skip
    return cases


def _gnb_probe(answer: Callable, case: Case) -> dict:
    logits = _tensor(case["logits"], case["dtype"]).requires_grad_()
    before = logits.detach().clone()
    gen = torch.Generator().manual_seed(case["seed"])
    values = []
    def value(generator: torch.Generator) -> dict:
        out = answer(logits, generator)
        return _number(out.detach() if isinstance(out, torch.Tensor) else out, "gnb_loss")

    for _ in range(case["calls"]):
        out = value(gen)
        if "problem" in out:
            return out
        values.append(out["value"])
    if not torch.equal(logits.detach(), before):
        return {"problem": "gnb_loss changed the logits in place"}
    a = value(torch.Generator().manual_seed(case["seed"] + 1))
    b = value(torch.Generator().manual_seed(case["seed"] + 1))
    if "problem" in a or "problem" in b:
        return a if "problem" in a else b
    if a["value"] != b["value"]:
        return {"problem": "two calls with generators in the same state gave different values: "
                           "draw the labels with the generator you are given"}  # fmt: skip
    return {"values": values}


def _gnb_expect(case: Case) -> dict:
    z = _tensor(case["logits"]).reshape(-1, case["shape"][-1])  # the case's values, float64
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    entropy = -(p * logp).sum(-1)
    second = (p * logp**2).sum(-1)
    R = z.shape[0]
    return {
        "mean": float(entropy.mean()),
        "sd": float((second - entropy**2).sum().sqrt() / R),
        "argmax": float(-logp.max(-1).values.mean()),
        "uniform": float(-logp.mean()),
        "rows": R,
    }


def _gnb_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (f"gnb_loss, {where} ({case['dtype']} logits of shape {tuple(case['shape'])}, "
             f"{case['kind']}, {case['calls']} calls)")  # fmt: skip
    got = _require(got, ["values"], where, "gnb_loss")
    values = _as_float_array(got["values"], "the values", where)
    if values.numel() != case["calls"] or not bool(torch.isfinite(values).all()):
        raise AssertionError(f"{where}: expected {case['calls']} finite values")
    mean, sd = expected["mean"], expected["sd"]
    z = (values - mean) / sd
    q = float((z**2).mean())
    if GNB_Q[0] <= q <= GNB_Q[1]:
        return
    average = float(values.mean())
    if float(values.max() - values.min()) <= 1e-9 * max(abs(average), 1.0):
        hint = ("it is the same at every call: draw one label per row from the softmax (a "
                "soft target, or the most likely class, is not a sample)")  # fmt: skip
    elif abs(average / expected["rows"] - mean) < 0.05 * mean + 3 * sd:
        hint = "it is about the number of rows times too large: take the mean, not the sum"
    elif abs(average - expected["argmax"]) < 3 * sd:
        hint = "it matches the most likely class of every row: sample the labels instead"
    elif abs(average - expected["uniform"]) < 3 * sd:
        hint = "it matches labels drawn uniformly: draw them from the softmax of the logits"
    elif q < GNB_Q[0]:
        hint = "it varies less from call to call than independent labels, one per row, would"
    else:
        hint = ("labels drawn from softmax(logits), one per row, give on average the mean "
                f"entropy of the rows, {mean:.6g}; yours average {average:.6g}")  # fmt: skip
    raise AssertionError(
        f"{where}: the values are off by {math.sqrt(q):.3g} standard deviations (root mean "
        f"square over the calls; a correct loss gives about 1): {hint}"
    )


def _gnb_success(seed: int = 0, n_cases: int = 3, calls: int = 12, sequences: bool = False,
                 float32: bool = False) -> str:  # fmt: skip
    extra = "".join([", sequence logits" if sequences else "", ", float32" if float32 else ""])
    return (
        f"gnb_loss: OK, averages the rows' softmax entropy with the spread of one sampled label "
        f"per row, reproducibly from the generator ({n_cases} seeded logit tables{extra}, "
        f"{calls} calls each)"
    )


_register(Check("gnb_loss", _gnb_cases, _gnb_probe, _gnb_expect, _gnb_compare, _gnb_success))
no_delegation("gnb_loss", "Gauss-Newton-Bartlett loss", *SOPHIA, "optlib.bench.hessian_cost")


def gnb_loss(
    answer: Callable, *, seed: int = 0, n_cases: int = 3, calls: int = 12,
    sequences: bool = False, float32: bool = False,
) -> None:  # fmt: skip
    r"""Check ``answer(logits, generator)``: the mean cross-entropy of ``logits`` (classes in
    the last dimension, any leading dimensions: every row counts once) against labels
    :math:`\hat y_r \sim \operatorname{softmax}(z_r)` drawn with ``generator``. Statistically:
    over ``calls`` calls the values must scatter around the mean entropy of the softmax rows
    (:math:`\mathbb E_{\hat y}[-\log p_{\hat y}] = H(p)`) with the exact standard deviation of
    one label per row; two calls with generators in the same state must agree. ``sequences``:
    ``(batch, time, classes)`` logits; ``float32``: float32 logits.
    """
    run_check("gnb_loss", answer, seed=seed, n_cases=n_cases, calls=calls, sequences=sequences,
              float32=float32)  # fmt: skip


# --------------------------------------------------------------------------- 4. clipping


def _clip_case(g: torch.Generator, i: int, edge: bool) -> dict:
    variant = "G" if i % 2 == 0 else "H"
    shape = [[6, 5], [40], [3, 4, 5], [7, 9]][i % 4]
    n = math.prod(shape)
    dtype = "float32" if i % 3 == 2 else "float64"
    rho = round(float(torch.empty(()).uniform_(0.02, 0.5, generator=g)), 4)
    bs = int(2 ** int(_uniform(g, 4, 12))) if variant == "G" else None
    scale = rho * (bs or 1)
    m = torch.randn(n, generator=g, dtype=torch.float64) * 10 ** _uniform(g, -3, 0)
    h = m.abs() / scale * torch.exp(torch.randn(n, generator=g, dtype=torch.float64))
    if variant == "H":  # negative curvature: the estimate and its EMA can be negative
        h = torch.where(torch.rand(n, generator=g) < 0.3, -h, h)
    m[torch.randperm(n, generator=g)[: max(1, n // 10)]] = 0.0  # a gradient that never came
    h[torch.randperm(n, generator=g)[: max(1, n // 10)]] = 0.0  # not refreshed yet
    if i % 4 == 3:
        h.zero_()  # before the first refresh
    eps = 1e-15 if variant == "G" else 1e-12
    if edge:  # where the two denominators differ: rho*bs*h + eps against max(rho*h, eps)
        k = torch.randperm(n, generator=g)[: max(2, n // 5)]
        h[k] = eps / scale
        m[k] = 1.5 * eps * torch.where(torch.rand(len(k), generator=g) < 0.5, -1.0, 1.0).to(
            torch.float64)  # fmt: skip
    m, h = m.to(DTYPES[dtype]), h.to(DTYPES[dtype])
    denominator = (rho * bs * h.double() + eps) if variant == "G" else (
        (rho * h.double()).clamp_min(eps))  # fmt: skip
    ratio = m.double().abs() / denominator
    near = (ratio - 1).abs() < 1e-6
    m[near] *= 2.0  # keep every coordinate clearly on one side of the clip
    return {"variant": variant, "dtype": dtype, "shape": shape, "m": _rounded(m, dtype),
            "h": _rounded(h, dtype), "rho": rho, "eps": eps, "bs": bs}  # fmt: skip


def _clip_cases(seed: int = 0, n_cases: int = 6, edge: bool = False) -> list[Case]:
    g = _generator(seed)
    return [_clip_case(g, i, edge) for i in range(n_cases)]


def _clip_inputs(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    dt = case["dtype"]
    return (_tensor(case["m"], dt).reshape(case["shape"]),
            _tensor(case["h"], dt).reshape(case["shape"]))  # fmt: skip


def _clip_probe(answer: Callable, case: Case) -> dict:
    m, h = _clip_inputs(case)
    m_in, h_in = m.clone(), h.clone()
    out = _number(answer(m, h, case["rho"], case["eps"], case["bs"]), "clipped_fraction")
    if not (torch.equal(m, m_in) and torch.equal(h, h_in)):
        return {"problem": "clipped_fraction changed m or h in place"}
    return out


def _clip_expect(case: Case) -> dict:
    """One step of optlib's Sophia from this state: beta1 = 0 (so the momentum of the step is
    the gradient, set to m), lr = 1, no weight decay, from theta = 0: a clipped coordinate moves
    by exactly 1."""
    import optlib

    m, h = _clip_inputs(case)
    theta = torch.zeros_like(m, requires_grad=True)
    hyper = dict(lr=1.0, betas=(0.0, 0.5), rho=case["rho"], weight_decay=0.0, eps=case["eps"])
    opt = (optlib.SophiaG if case["variant"] == "G" else optlib.SophiaH)([theta], **hyper)
    theta.grad = torch.zeros_like(m)
    opt.step(**({"bs": case["bs"]} if case["variant"] == "G" else {}))  # creates the state
    opt.state[theta]["hessian"].copy_(h)
    theta.grad = m.clone()
    with torch.no_grad():
        theta.zero_()
    opt.step(**({"bs": case["bs"]} if case["variant"] == "G" else {}))
    moved = theta.detach().double().abs()
    clipped = moved == 1.0
    n = m.numel()
    m64, h64 = m.double().reshape(-1), h.double().reshape(-1)
    scale = case["rho"] * (case["bs"] or 1)
    return {
        "fraction": float(clipped.sum()) / n,
        "n": n,
        # plausible mistakes, for the hints: no epsilon (so 0 >= 0 counts where m = h = 0, and
        # every m = 0 against a negative h), and SophiaG's h not scaled by bs
        "no_eps": float((m64.abs() >= scale * h64).sum()) / n,
        "no_bs": float((m64.abs() >= case["rho"] * h64 + case["eps"]).sum()) / n,
    }


def _clip_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    kind = f"SophiaG, bs = {case['bs']}" if case["variant"] == "G" else "SophiaH"
    where = (f"sophia_clipped_fraction, {where} ({kind}, {case['dtype']} m and h of shape "
             f"{tuple(case['shape'])}, rho = {case['rho']})")  # fmt: skip
    value = _value_of(got, "clipped_fraction", where, nonnegative=True, kind="fraction")
    expected_value, n = expected["fraction"], expected["n"]
    if abs(value - expected_value) <= 0.25 / n:
        return
    hint = ""
    if abs(value - (1 - expected_value)) <= 0.25 / n:
        hint = " (that is the fraction NOT clipped, the reference script's 'win rate')"
    elif abs(value - expected["no_eps"]) <= 0.25 / n:
        hint = (" (a coordinate whose momentum is exactly 0 does not move, even where h is 0 or "
                "negative: it is not clipped; mind epsilon)")  # fmt: skip
    elif case["variant"] == "G" and abs(value - expected["no_bs"]) <= 0.25 / n:
        hint = " (SophiaG's denominator scales h by bs as well as rho)"
    raise AssertionError(
        f"{where}: expected a fraction of {expected_value:.6g} ({round(expected_value * n)} of "
        f"{n} coordinates), got {value:.6g}{hint}"
    )


def _clip_success(seed: int = 0, n_cases: int = 6, edge: bool = False) -> str:
    extra = ", and where the two denominators differ" if edge else ""
    return (
        f"sophia_clipped_fraction: OK, matches steps of optlib.SophiaG and optlib.SophiaH on "
        f"{n_cases} seeded states (negative curvature, h = 0 before a refresh, m = 0, float64 "
        f"and float32{extra})"
    )


_register(Check("sophia_clipped_fraction", _clip_cases, _clip_probe, _clip_expect,
                _clip_compare, _clip_success))  # fmt: skip
no_delegation("sophia_clipped_fraction", "Sophia step (predict, do not run)", *SOPHIA)


def sophia_clipped_fraction(
    answer: Callable, *, seed: int = 0, n_cases: int = 6, edge: bool = False
) -> None:
    r"""Check ``answer(m, h, rho, eps, bs)``: the fraction of the coordinates whose next Sophia
    step is clipped (moves by the full :math:`\eta`), given the momentum ``m`` of that step and
    the curvature estimate ``h``: :math:`|m| \ge \rho\,B\,h + \epsilon` for SophiaG (``bs``
    :math:`= B`), :math:`|m| \ge \max(\rho h, \epsilon)` for SophiaH (``bs=None``); a coordinate
    with :math:`m = 0` does not move. Against steps of :class:`optlib.SophiaG` and
    :class:`optlib.SophiaH` from that state. ``edge`` adds coordinates where the two
    denominators differ (:math:`\rho B h = \epsilon`).
    """
    run_check("sophia_clipped_fraction", answer, seed=seed, n_cases=n_cases, edge=edge)
