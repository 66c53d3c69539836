r"""Exercise checks for chapter 10 (matrix preconditioners), registered in
:data:`optlib.course.checks.CHECKS`.

Same design as :mod:`optlib.course.checks` (``cases``/``probe``/``expect``/``compare``), so the
trusted grader can run the learner's part in a sandbox and the rest in the parent:

* :func:`shampoo_direction`: Shampoo's direction :math:`(L+\epsilon I)^{-1/4} G_t
  (R+\epsilon I)^{-1/4}` after the gradients :math:`G_1, \dots, G_t` of one matrix, against the
  steps of :class:`optlib.Shampoo` (no momentum, summed factors, roots at every step);
* :func:`inverse_root`: :math:`(A + \epsilon I)^{-1/p}` of a symmetric positive semi-definite
  matrix by eigendecomposition, with the eigenvalue shift of the reference implementation,
  against :func:`optlib.optim._matrix.matrix_inverse_root` (the routine Shampoo uses);
* :func:`newton_schulz_singular_values`: where Muon's Newton–Schulz iteration sends the singular
  values of a matrix, predicted from the singular values alone (lists far too long for any
  matrix to hold them), against :func:`optlib.linalg.kronecker.newton_schulz_map`, which the
  tests hold to :func:`optlib.optim.muon.newton_schulz5` run in float64;
* :func:`kfac_factors`: K-FAC's Kronecker factors :math:`A` and :math:`G` of a linear layer from
  its inputs and the gradients of the batch-mean loss with respect to its outputs, against the
  statistics :class:`optlib.KFAC` gathers (:func:`optlib.optim.kfac.input_factor`,
  :func:`~optlib.optim.kfac.output_factor`).

In a notebook: ``from optlib.course import checks`` then e.g.
``checks.shampoo_direction(shampoo_direction)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._core import (
    Case,
    Check,
    _as_float_array,
    _generator,
    _log_uniform,
    _raise_if_error,
    _register,
    _require,
    _rounded,
    _tensor,
    _uniform,
    no_delegation,
    run_check,
)

__all__ = ["inverse_root", "kfac_factors", "newton_schulz_singular_values", "shampoo_direction"]

# Agreement asked of a matrix answer, as a fraction of the reference's norm: a correct answer
# differs by rounding only (float32 factors and roots carry about 1e-7 relative error, which a
# few steps and a fourth root can grow by a couple of orders of magnitude).
MATRIX_RTOL = {"float64": 1e-8, "float32": 1e-3}


def _as_matrix(value: Any, shape: tuple[int, ...], what: str) -> dict:
    """``{"matrix": flat list}`` for a tensor-like ``value`` of ``shape``, else a problem."""
    if value is None:
        return {"problem": f"{what} returned None (is a `return` missing?)"}
    try:
        t = torch.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError):
        return {"problem": f"{what} returned a {type(value).__name__}, not a tensor"}
    if t.is_complex():
        return {"problem": f"{what} returned a complex tensor"}
    if tuple(t.shape) != tuple(shape):
        return {"problem": f"{what} returned shape {tuple(t.shape)}, expected {tuple(shape)}"}
    return {"matrix": t.to(torch.float64).reshape(-1).tolist(), "dtype": str(t.dtype)}


def _relative_gap(mine: torch.Tensor, ref: torch.Tensor) -> float:
    if not bool(torch.isfinite(mine).all()):
        return math.inf
    return float((mine - ref).norm() / ref.norm().clamp_min(1e-300))


def _matrix_compare(name: str, reference: str, got: Any, expected: dict, where: str,
                    dtype: str, hints: dict[str, str]) -> None:  # fmt: skip
    """Compare a learner's matrix with the reference (norm-wise, :data:`MATRIX_RTOL`); on a
    mismatch, name the plausible mistake whose result the answer matches, if any."""
    got = _require(got, ["matrix"], where, name)
    mine = _as_float_array(got["matrix"], "the result", where)
    ref = torch.tensor(expected["matrix"], dtype=torch.float64)
    if mine.shape != ref.shape:
        raise AssertionError(f"{where}: expected {ref.numel()} numbers")
    if not bool(torch.isfinite(mine).all()):
        raise AssertionError(f"{where}: the result has NaN or infinite entries")
    gap = _relative_gap(mine, ref)
    if gap <= MATRIX_RTOL[dtype]:
        return
    hint = next((text for kind, text in hints.items()
                 if kind in expected["variants"] and _relative_gap(
                     mine, torch.tensor(expected["variants"][kind], dtype=torch.float64))
                 <= 10 * MATRIX_RTOL[dtype]), "")  # fmt: skip
    raise AssertionError(
        f"{where}: differs from {reference} by {gap:.2e} of its norm (allowed "
        f"{MATRIX_RTOL[dtype]:.0e})" + (f"; {hint}" if hint else "")
    )


# --------------------------------------------------------------------------- Shampoo's direction


def _gradient_sequence(g: torch.Generator, shape: tuple[int, int], steps: int, kind: str,
                       dtype: str) -> list:  # fmt: skip
    m, n = shape
    scale = _log_uniform(g, 1e-3, 1.0) if kind != "tiny" else 1e-4
    out = []
    for _ in range(steps):
        if kind == "low rank":  # rank one: the factors stay singular for min(m, n) steps
            G = torch.randn(m, 1, generator=g, dtype=torch.float64) @ torch.randn(
                1, n, generator=g, dtype=torch.float64)  # fmt: skip
        else:
            G = torch.randn(m, n, generator=g, dtype=torch.float64)
        out.append(_rounded(G * scale, dtype))
    return out


def _shampoo_cases(seed: int = 0, n_cases: int = 4, max_steps: int = 5) -> list[Case]:
    g = _generator(seed)
    kinds = ["random", "low rank", "tiny", "random"]
    cases = []
    for i in range(n_cases):
        dtype = "float32" if i % 4 == 3 else "float64"
        kind = kinds[i % len(kinds)]
        m = 2 + int(_uniform(g, 0, 5))
        n = m + 1 + int(_uniform(g, 0, 4)) if i % 2 == 0 else m
        if i % 3 == 2:
            m, n = n, m  # tall as well as wide
        steps = 1 + int(_uniform(g, 0, max_steps))
        if dtype == "float32":
            epsilon = round(_log_uniform(g, 1e-4, 1e-2), 6)  # float32 factors: no tiny epsilon
        elif kind == "tiny":
            epsilon = round(_log_uniform(g, 1e-9, 1e-7), 12)  # comparable to sigma^2
        else:
            epsilon = float(10 ** round(_uniform(g, -12, -4)))
        cases.append({"dtype": dtype, "kind": kind, "shape": [m, n], "epsilon": epsilon,
                      "grads": _gradient_sequence(g, (m, n), steps, kind, dtype)})  # fmt: skip
    return cases


def _shampoo_probe(answer: Callable, case: Case) -> dict:
    grads = [_tensor(G, case["dtype"]) for G in case["grads"]]
    copies = [G.clone() for G in grads]
    out = answer(grads, case["epsilon"])
    if any(not torch.equal(a, b) for a, b in zip(grads, copies)):
        return {"problem": "shampoo_direction changed its input gradients in place"}
    return _as_matrix(out, tuple(case["shape"]), "shampoo_direction")


def _optlib_shampoo_direction(grads: list[torch.Tensor], epsilon: float) -> torch.Tensor:
    """The step of :class:`optlib.Shampoo` (learning rate 1) at the last of ``grads``."""
    import optlib

    W = torch.zeros_like(grads[0], requires_grad=True)
    opt = optlib.Shampoo([W], lr=1.0, betas=(0.0, 1.0), epsilon=epsilon, merge_dims=False,
                         max_preconditioner_dim=max(W.shape), precondition_frequency=1)  # fmt: skip
    for G in grads:
        before = W.detach().clone()
        W.grad = G.clone()
        opt.step()
    return before - W.detach()


def _shampoo_variant(grads: list[torch.Tensor], epsilon: float, kind: str) -> torch.Tensor:
    """The direction of a plausible mistake (for a hint that does not give the answer away)."""
    from optlib.linalg.kronecker import psd_power

    G = torch.stack([x.double() for x in grads])
    if kind == "last gradient only":
        G = G[-1:]
    L = torch.einsum("tij,tkj->ik", G, G)
    R = torch.einsum("tij,tik->jk", G, G)
    power = -0.5 if kind == "exponent -1/2" else -0.25
    return psd_power(L, power, epsilon) @ G[-1] @ psd_power(R, power, epsilon)


_SHAMPOO_HINTS = {
    "exponent -1/2": "each factor's root is the fourth root: the two factors share AdaGrad's -1/2",
    "last gradient only": "the factors accumulate every gradient so far, not only the last one",
}


def _shampoo_expect(case: Case) -> dict:
    grads = [_tensor(G, case["dtype"]) for G in case["grads"]]
    variants = {}
    for kind in _SHAMPOO_HINTS:
        if kind == "last gradient only" and len(grads) == 1:
            continue
        variants[kind] = _shampoo_variant(grads, case["epsilon"], kind).reshape(-1).tolist()
    D = _optlib_shampoo_direction(grads, case["epsilon"])
    return {"matrix": D.double().reshape(-1).tolist(), "variants": variants}


def _shampoo_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    m, n = case["shape"]
    where = (
        f"shampoo_direction, {where} ({case['dtype']} {m}x{n} gradients, {len(case['grads'])} "
        f"step(s), {case['kind']}, epsilon={case['epsilon']:g})"
    )
    _matrix_compare("shampoo_direction", "optlib.Shampoo's step", got, expected, where,
                    case["dtype"], _SHAMPOO_HINTS)  # fmt: skip


def _shampoo_success(seed: int = 0, n_cases: int = 4, max_steps: int = 5) -> str:
    return (
        f"shampoo_direction: OK, matches optlib.Shampoo's steps on {n_cases} seeded gradient "
        "sequences (wide, tall and square matrices, rank-one and tiny gradients, float64 and "
        "float32)"
    )


_register(Check("shampoo_direction", _shampoo_cases, _shampoo_probe, _shampoo_expect,
                _shampoo_compare, _shampoo_success))  # fmt: skip
no_delegation(
    "shampoo_direction", "Shampoo's preconditioner", "optlib.Shampoo", "optlib.optim.shampoo",
    "optlib.optim._matrix", "optlib.linalg.kronecker", "optlib.experiments.matrix_preconditioners",
    "optlib.SOAP", "optlib.optim.soap",
)  # fmt: skip


def shampoo_direction(
    answer: Callable, *, seed: int = 0, n_cases: int = 4, max_steps: int = 5
) -> None:
    r"""Check ``answer(grads, epsilon)``: Shampoo's direction after the gradients
    ``grads`` :math:`= [G_1, \dots, G_t]` (``m × n`` tensors, float64 or float32) of one matrix,
    :math:`(L_t+\epsilon I)^{-1/4}\, G_t\, (R_t+\epsilon I)^{-1/4}` with
    :math:`L_t = \sum_s G_sG_s^\top`, :math:`R_t = \sum_s G_s^\top G_s`, against the steps of
    :class:`optlib.Shampoo` (``betas=(0, 1)``, ``merge_dims=False``, roots at every step).
    """
    run_check("shampoo_direction", answer, seed=seed, n_cases=n_cases, max_steps=max_steps)


# --------------------------------------------------------------------------- inverse roots


def _root_cases(seed: int = 0, n_cases: int = 5, float32: bool = True) -> list[Case]:
    g = _generator(seed)
    kinds = ["positive definite", "singular", "rounding-negative", "positive definite", "zero"]
    cases = []
    for i in range(n_cases):
        kind = kinds[i % len(kinds)]
        dtype = "float32" if float32 and i % 4 == 3 else "float64"
        d = 2 + int(_uniform(g, 0, 6))
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        lam = torch.tensor([_log_uniform(g, 1e-3, 10.0) for _ in range(d)], dtype=torch.float64)
        if kind in ("singular", "rounding-negative", "zero"):
            epsilon = round(_log_uniform(g, 1e-6, 1e-3), 9)
        else:
            epsilon = float(10 ** round(_uniform(g, -12, -6)))
        if kind == "singular":
            lam[: max(1, d // 2)] = 0.0
        if kind == "rounding-negative":  # slightly indefinite, by about epsilon: the shift shows
            lam = torch.tensor([_log_uniform(g, epsilon, 100 * epsilon) for _ in range(d)],
                               dtype=torch.float64)  # fmt: skip
            lam[0] = -_uniform(g, 1.2, 3.0) * epsilon
        if kind == "zero":
            lam[:] = 0.0
        A = Q @ torch.diag(lam) @ Q.T
        A = (A + A.T) / 2
        p = [1, 2, 4, 8, 6][int(_uniform(g, 0, 5))]
        cases.append({"dtype": dtype, "kind": kind, "d": d, "p": p, "epsilon": epsilon,
                      "A": _rounded(A, dtype)})  # fmt: skip
    return cases


def _root_probe(answer: Callable, case: Case) -> dict:
    A = _tensor(case["A"], case["dtype"])
    A_in = A.clone()
    out = answer(A, case["p"], case["epsilon"])
    if not torch.equal(A, A_in):
        return {"problem": "inverse_root changed A in place; return a new tensor"}
    result = _as_matrix(out, (case["d"], case["d"]), "inverse_root")
    if "matrix" in result and result["dtype"] != str(A.dtype):
        return {"problem": f"inverse_root returned {result['dtype']} for a {A.dtype} matrix; "
                           "return the result in A's dtype"}  # fmt: skip
    return result


def _root_variant(A: torch.Tensor, p: float, epsilon: float, kind: str) -> torch.Tensor:
    A = A.double()
    d = len(A)
    lam, Q = torch.linalg.eigh(A + (0.0 if kind == "no epsilon" else epsilon) * torch.eye(
        d, dtype=torch.float64))  # fmt: skip
    if kind == "clipped instead of shifted":
        lam = lam.clamp_min(epsilon)
    elif kind == "no shift" or kind == "no epsilon":
        pass
    else:
        lam = lam + max(epsilon - float(lam.min()), 0.0)
    power = 1.0 / p if kind == "positive power" else -1.0 / p
    return (Q * lam.pow(power)) @ Q.T


_ROOT_HINTS = {
    "positive power": "this is A^(+1/p); the preconditioner needs the inverse root",
    "clipped instead of shifted": (
        "eigenvalues below epsilon must be raised by one common shift, not clipped one by one"
    ),
    "no epsilon": "epsilon is added to A before the root",
}


def _root_expect(case: Case) -> dict:
    from optlib.optim._matrix import matrix_inverse_root

    A = _tensor(case["A"], case["dtype"])
    R = matrix_inverse_root(A, case["p"], case["epsilon"])
    variants = {}
    for kind in _ROOT_HINTS:
        V = _root_variant(A, case["p"], case["epsilon"], kind)
        if bool(torch.isfinite(V).all()):
            variants[kind] = V.reshape(-1).tolist()
    return {"matrix": R.double().reshape(-1).tolist(), "variants": variants}


def _root_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"inverse_root, {where} ({case['dtype']} {case['d']}x{case['d']} {case['kind']} matrix, "
        f"p={case['p']}, epsilon={case['epsilon']:g})"
    )
    if isinstance(got, dict) and got.get("matrix") is not None:
        mine = torch.tensor(got["matrix"], dtype=torch.float64)
        if not bool(torch.isfinite(mine).all()):
            extra = (" (an eigenvalue of A + epsilon I can still be below epsilon, even "
                     "negative: see the shift in the statement)")  # fmt: skip
            raise AssertionError(f"{where}: the result has NaN or infinite entries"
                                 + (extra if case["kind"] != "positive definite" else ""))
    _matrix_compare("inverse_root", "optlib's matrix_inverse_root", got, expected, where,
                    case["dtype"], _ROOT_HINTS)  # fmt: skip


def _root_success(seed: int = 0, n_cases: int = 5, float32: bool = True) -> str:
    return (
        f"inverse_root: OK, matches optlib's matrix_inverse_root on {n_cases} seeded matrices "
        "(positive definite, singular, slightly indefinite, zero; several p and epsilon)"
    )


_register(Check("inverse_root", _root_cases, _root_probe, _root_expect, _root_compare,
                _root_success))  # fmt: skip
no_delegation(
    "inverse_root", "matrix inverse root", "optlib.optim._matrix", "optlib.linalg.kronecker",
    "optlib.Shampoo", "optlib.optim.shampoo",
)  # fmt: skip


def inverse_root(
    answer: Callable, *, seed: int = 0, n_cases: int = 5, float32: bool = True
) -> None:
    r"""Check ``answer(A, p, epsilon)``: :math:`(A + \epsilon I)^{-1/p}` of a symmetric positive
    semi-definite ``A`` by eigendecomposition, :math:`Q\Lambda^{-1/p}Q^\top`, where every
    eigenvalue of :math:`A + \epsilon I` is raised by the common shift
    :math:`\max(\epsilon - \lambda_{\min}, 0)` (rounding can leave :math:`\lambda_{\min}`
    below :math:`\epsilon`), returned in ``A``'s dtype, against
    :func:`optlib.optim._matrix.matrix_inverse_root`.
    """
    run_check("inverse_root", answer, seed=seed, n_cases=n_cases, float32=float32)


# --------------------------------------------------------------------------- Newton-Schulz

_NS_RUN_MAX = 64  # lists up to this length are also checked against newton_schulz5 in the tests
NS_CUBIC = (1.5, -0.5, 0.0)  # the classical Newton-Schulz iteration


def _ns_cases(seed: int = 0, n_cases: int = 5, huge: bool = True) -> list[Case]:
    from optlib.optim.muon import NS_COEFFICIENTS

    g = _generator(seed)
    kinds = ["spread", "huge", "equal", "zeros", "spread"]
    cases = []
    for i in range(n_cases):
        kind = kinds[i % len(kinds)]
        if kind == "huge" and not huge:
            kind = "spread"
        k = 50_000 if kind == "huge" else 1 + int(_uniform(g, 0, 12))
        sigma = torch.exp(torch.empty(k, dtype=torch.float64).uniform_(
            math.log(1e-5), math.log(10.0), generator=g))  # fmt: skip
        sigma = sigma * _log_uniform(g, 1e-3, 1e3)
        if kind == "equal":
            sigma = torch.full((k,), float(sigma[0]), dtype=torch.float64)
        if kind == "zeros":
            sigma[: max(1, k // 3)] = 0.0
        steps = int(_uniform(g, 0, 9))
        coefficients = list(NS_COEFFICIENTS) if i % 3 != 2 else list(NS_CUBIC)
        cases.append({"kind": kind, "sigma": sigma.tolist(), "steps": steps,
                      "coefficients": coefficients})  # fmt: skip
    return cases


def _ns_probe(answer: Callable, case: Case) -> dict:
    sigma = torch.tensor(case["sigma"], dtype=torch.float64)
    copy = sigma.clone()
    out = answer(sigma, case["steps"], tuple(case["coefficients"]))
    if not torch.equal(sigma, copy):
        return {"problem": "newton_schulz_singular_values changed sigma in place"}
    if out is None:
        return {"problem": "newton_schulz_singular_values returned None (is a `return` missing?)"}
    try:
        t = torch.as_tensor(out, dtype=torch.float64).detach().reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        return {"problem": f"newton_schulz_singular_values returned a {type(out).__name__}, "
                           "not a list of numbers"}  # fmt: skip
    if t.numel() != sigma.numel():
        return {"problem": f"newton_schulz_singular_values returned {t.numel()} numbers for "
                           f"{sigma.numel()} singular values"}  # fmt: skip
    return {"values": t.tolist()}


def _ns_variant(sigma: torch.Tensor, steps: int, coefficients, kind: str) -> torch.Tensor:
    a, b, c = coefficients
    if kind == "not normalised":
        x = sigma.clone()
    elif kind == "divided by the largest":
        x = sigma / (sigma.max() + 1e-7)
    else:
        x = sigma / (sigma.norm() + 1e-7)
    for _ in range(steps + (1 if kind == "one step too many" else 0)):
        x = a * x + b * x**3 + c * x**5
    return x


_NS_HINTS = {
    "divided by the largest": "the iteration starts from u / ||u||_F: divide by the Frobenius "
                              "norm, which for singular values is sqrt(sum sigma_i^2)",
    "not normalised": "the iteration starts from u / (||u||_F + 1e-7), not from u itself",
    "one step too many": "count the iterations: `steps` applications of the polynomial",
}


def _ns_expect(case: Case) -> dict:
    from optlib.linalg.kronecker import newton_schulz_map

    sigma = torch.tensor(case["sigma"], dtype=torch.float64)
    values = newton_schulz_map(sigma, case["steps"], coefficients=tuple(case["coefficients"]))
    variants = {}
    with torch.no_grad():
        for kind in _NS_HINTS:  # an unnormalised start can overflow: inf/NaN kept, as answers
            variants[kind] = _ns_variant(sigma, case["steps"], case["coefficients"], kind).tolist()
    return {"values": values.tolist(), "variants": variants}


def _ns_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"newton_schulz_singular_values, {where} ({len(case['sigma'])} singular values, "
        f"{case['kind']}, {case['steps']} step(s), coefficients {tuple(case['coefficients'])})"
    )
    got = _require(got, ["values"], where, "newton_schulz_singular_values")
    mine = _as_float_array(got["values"], "the result", where).reshape(-1)
    ref = torch.tensor(expected["values"], dtype=torch.float64)
    if mine.shape != ref.shape:
        raise AssertionError(f"{where}: expected {ref.numel()} numbers")
    # a polynomial of degree 5 iterated up to 8 times: rounding grows with the slopes (|p'| <= 4)
    close = torch.isclose(mine, ref, rtol=1e-9, atol=1e-12)
    if bool(close.all()):
        return
    i = int((~close).nonzero()[0])
    hint = next((text for kind, text in _NS_HINTS.items() if kind in expected["variants"]
                 and bool(torch.allclose(mine, torch.tensor(expected["variants"][kind],
                                                            dtype=torch.float64),
                                         rtol=1e-8, atol=1e-11, equal_nan=True))),
                "")  # fmt: skip
    raise AssertionError(
        f"{where}: value {i} differs from the prediction: expected {float(ref[i]):.10g}, got "
        f"{float(mine[i]):.10g}" + (f" ({hint})" if hint else "")
    )


def _ns_success(seed: int = 0, n_cases: int = 5, huge: bool = True) -> str:
    return (
        f"newton_schulz_singular_values: OK, matches the iteration on {n_cases} seeded lists of "
        "singular values (spread, all equal, zeros, a list no matrix could hold; Muon's and the "
        "classical coefficients)"
    )


_register(Check("newton_schulz_singular_values", _ns_cases, _ns_probe, _ns_expect, _ns_compare,
                _ns_success))  # fmt: skip
no_delegation(
    "newton_schulz_singular_values", "Newton-Schulz iteration (predict, do not run)",
    "optlib.Muon", "optlib.MuonWithAuxAdamW", "optlib.optim.muon", "optlib.linalg.kronecker",
    "torch.optim.Muon", "torch.optim._muon",
)  # fmt: skip


def newton_schulz_singular_values(
    answer: Callable, *, seed: int = 0, n_cases: int = 5, huge: bool = True
) -> None:
    r"""Check ``answer(sigma, steps, coefficients)``: the singular values of
    :math:`\mathrm{NS}(u)` for a matrix :math:`u` with singular values ``sigma`` (a float64
    tensor), in the same order: :math:`x = \sigma/(\lVert\sigma\rVert_2 + 10^{-7})`, then
    ``steps`` times :math:`x \leftarrow ax + bx^3 + cx^5` with ``coefficients`` :math:`(a,b,c)`,
    against :func:`optlib.linalg.kronecker.newton_schulz_map`.
    """
    run_check("newton_schulz_singular_values", answer, seed=seed, n_cases=n_cases, huge=huge)


# --------------------------------------------------------------------------- K-FAC factors


def _kfac_cases(seed: int = 0, n_cases: int = 4, leading: bool = True) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        dtype = "float32" if i % 4 == 3 else "float64"
        d_in, d_out = 2 + int(_uniform(g, 0, 6)), 2 + int(_uniform(g, 0, 5))
        rows = [3 + int(_uniform(g, 0, 12))]
        if leading and i % 3 == 2:
            rows = [2 + int(_uniform(g, 0, 3)), 2 + int(_uniform(g, 0, 5))]  # (batch, positions)
        bias = i % 2 == 0
        x = torch.randn(*rows, d_in, generator=g, dtype=torch.float64) * _log_uniform(g, 0.1, 3)
        s = torch.randn(*rows, d_out, generator=g, dtype=torch.float64) * _log_uniform(
            g, 1e-4, 1e-1)  # fmt: skip
        cases.append({"dtype": dtype, "bias": bias, "rows": rows, "d_in": d_in, "d_out": d_out,
                      "x": _rounded(x, dtype), "s": _rounded(s, dtype)})  # fmt: skip
    return cases


def _kfac_probe(answer: Callable, case: Case) -> dict:
    x, s = _tensor(case["x"], case["dtype"]), _tensor(case["s"], case["dtype"])
    x_in, s_in = x.clone(), s.clone()
    out = answer(x, s, case["bias"])
    if not (torch.equal(x, x_in) and torch.equal(s, s_in)):
        return {"problem": "kfac_factors changed x or s in place"}
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return {"problem": "kfac_factors must return a pair (A, G)"}
    a = case["d_in"] + (1 if case["bias"] else 0)
    A = _as_matrix(out[0], (a, a), "kfac_factors's A")
    G = _as_matrix(out[1], (case["d_out"], case["d_out"]), "kfac_factors's G")
    if "problem" in A and case["bias"]:
        A["problem"] += " (with a bias, every input row gets a constant 1 appended)"
    for part in (A, G):
        if "problem" in part:
            return part
    return {"A": A["matrix"], "G": G["matrix"]}


def _kfac_expect(case: Case) -> dict:
    from optlib.optim.kfac import input_factor, output_factor

    x, s = _tensor(case["x"], case["dtype"]), _tensor(case["s"], case["dtype"])
    layer = nn.Linear(case["d_in"], case["d_out"], bias=case["bias"]).to(x.dtype)
    A = input_factor(layer, x)
    G = output_factor(layer, s, batch_averaged=True)
    n = math.prod(case["rows"])
    variants = {"G without the factor n": (G / n**2).reshape(-1).tolist()}
    return {"A": A.double().reshape(-1).tolist(), "G": G.double().reshape(-1).tolist(),
            "variants": variants}  # fmt: skip


def _kfac_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"kfac_factors, {where} ({case['dtype']}, rows {tuple(case['rows'])}, d_in={case['d_in']}, "
        f"d_out={case['d_out']}, bias={case['bias']})"
    )
    _raise_if_error(got, "kfac_factors", where)
    got = _require(got, ["A", "G"], where, "kfac_factors")
    for key in ("A", "G"):
        mine = _as_float_array(got[key], key, where)
        ref = torch.tensor(expected[key], dtype=torch.float64)
        gap = _relative_gap(mine, ref)
        if gap <= MATRIX_RTOL[case["dtype"]] / 100:
            continue
        hint = ""
        if key == "G":
            wrong = torch.tensor(expected["variants"]["G without the factor n"],
                                 dtype=torch.float64)  # fmt: skip
            if _relative_gap(mine, wrong) <= 1e-6 or _relative_gap(mine * math.prod(
                    case["rows"]), ref) <= 1e-6:  # fmt: skip
                hint = ("; s is the gradient of the batch *mean*: undo the mean's 1/n before "
                        "averaging the outer products")  # fmt: skip
        raise AssertionError(f"{where}: {key} differs from optlib.KFAC's by {gap:.2e} of its "
                             f"norm{hint}")  # fmt: skip


def _kfac_success(seed: int = 0, n_cases: int = 4, leading: bool = True) -> str:
    return (
        f"kfac_factors: OK, matches optlib.KFAC's statistics on {n_cases} seeded batches (with "
        "and without bias, several leading dimensions, float64 and float32)"
    )


_register(Check("kfac_factors", _kfac_cases, _kfac_probe, _kfac_expect, _kfac_compare,
                _kfac_success))  # fmt: skip
no_delegation(
    "kfac_factors", "K-FAC's Kronecker factors", "optlib.KFAC", "optlib.optim.kfac",
    "optlib.linalg.kronecker",
)  # fmt: skip


def kfac_factors(
    answer: Callable, *, seed: int = 0, n_cases: int = 4, leading: bool = True
) -> None:
    r"""Check ``answer(x, s, bias)``: K-FAC's factors of a linear layer, ``(A, G)``, from its
    inputs ``x`` (``(..., d_in)``, every leading index a row) and the gradients ``s`` of the
    batch-mean loss with respect to its outputs (``(..., d_out)``): with :math:`n` rows,
    :math:`A = \frac1n\sum_i \bar a_i\bar a_i^\top` (:math:`\bar a_i` the input row, with a 1
    appended when ``bias``) and :math:`G = \frac1n\sum_i (n s_i)(n s_i)^\top`, against
    :func:`optlib.optim.kfac.input_factor` and :func:`~optlib.optim.kfac.output_factor`.
    """
    run_check("kfac_factors", answer, seed=seed, n_cases=n_cases, leading=leading)
