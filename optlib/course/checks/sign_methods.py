r"""Exercise checks for chapter 8 (sign and memory-light methods), registered in
:data:`optlib.course.checks.CHECKS`.

Same design as :mod:`optlib.course.checks` (``cases``/``probe``/``expect``/``compare``), so the
trusted grader can run the learner's part in a sandbox and the rest in the parent:

* :func:`lion_class`: a Lion optimizer class, against :class:`optlib.Lion` (which matches the
  authors' ``lion_pytorch.py``), with several param groups, decoupled weight decay, float64 and
  float32 parameters, and coordinates whose interpolation :math:`c` is exactly zero;
* :func:`factored_second_moment`: Adafactor's rank-one estimate
  :math:`\hat V = r c^\top / \operatorname{mean}(r)` of a non-negative tensor over its last two
  dimensions, against the row and column statistics that :class:`optlib.Adafactor` keeps;
* :func:`optimizer_state_floats`: how many numbers SGD with momentum, Adam, Lion or Adafactor
  keep for a list of parameter shapes, against a measurement of the real optimizers where the
  shapes are small enough and the update rules' counts of :mod:`optlib.bench.memory` (which its
  tests hold to the measurement) at the size of a large language model's layers;
* :func:`lion_constant_gradient`: Lion's parameter after :math:`T` steps on a gradient of
  constant sign, in closed form, against runs of :class:`optlib.Lion` (and, for step counts no
  run can reach, the same closed form checked against runs in the tests).

In a notebook: ``from optlib.course import checks`` then e.g. ``checks.lion_class(Lion)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._core import (
    ATOL,
    RTOL,
    Case,
    Check,
    _as_float_array,
    _fmt_index,
    _generator,
    _log_uniform,
    _number,
    _register,
    _require,
    _rounded,
    _spd,
    _tensor,
    _uniform,
    _value_of,
    no_delegation,
    run_check,
)

__all__ = [
    "factored_second_moment",
    "lion_class",
    "lion_constant_gradient",
    "optimizer_state_floats",
]


# --------------------------------------------------------------------------- a Lion class


def _lion_problem(g: torch.Generator, shape: list[int], dtype: str, n_zero: int) -> dict:
    d = math.prod(shape)
    A = _spd(g, d, _log_uniform(g, 0.1, 1.0), _log_uniform(g, 2.0, 10.0))
    zero = torch.randperm(d, generator=g)[:n_zero].tolist()
    return {
        "shape": shape,
        "A": _rounded(A, dtype),
        "b": _rounded(torch.randn(d, generator=g, dtype=torch.float64), dtype),
        "theta0": _rounded(torch.randn(d, generator=g, dtype=torch.float64), dtype),
        "zero": sorted(zero),  # flat indices whose gradient is always exactly 0
    }


def _lion_hyper(g: torch.Generator) -> dict:
    return {
        "lr": round(_log_uniform(g, 1e-3, 3e-2), 5),
        "betas": [round(_uniform(g, 0.8, 0.95), 3), round(_uniform(g, 0.95, 0.999), 4)],
        "weight_decay": round(_uniform(g, 0.1, 2.0), 3),
    }


def _lion_cases(
    seed: int = 0, n_cases: int = 3, steps: int = 12, frozen: bool = False, n_groups: int = 2
):
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        dtype = "float64" if i % 2 == 0 else "float32"
        groups = []
        for j in range(n_groups if i % 3 != 1 else 1):
            shapes = [[3], [2, 3]] if j == 0 else [[4]] if j == 1 else [[2, 2, 2]]
            params = [_lion_problem(g, s, dtype, n_zero=1 + (i + j) % 2) for s in shapes]
            hyper = _lion_hyper(g)
            if i == 1 and j == 0:
                hyper["weight_decay"] = 0.0
            if i % 3 == 2 and j == 0:  # beta1 = 0: the step is the sign of the gradient
                hyper["betas"][0] = 0.0
            groups.append({"params": params, "hyper": hyper})
        case = {"dtype": dtype, "groups": groups, "steps": int(steps), "no_grad": [],
                "noise_seed": int(torch.randint(2**31 - 1, (), generator=g))}  # fmt: skip
        if frozen:  # one parameter gets no gradient at all (p.grad is None): skip it
            case["no_grad"] = [[0, len(groups[0]["params"]) - 1]]
        cases.append(case)
    return cases


def _lion_params(case: Case) -> list[list[torch.Tensor]]:
    return [
        [_tensor(p["theta0"], case["dtype"]).reshape(p["shape"]).requires_grad_()
         for p in group["params"]]
        for group in case["groups"]
    ]  # fmt: skip


def _lion_grads(case: Case, params: list[list[torch.Tensor]], noise: torch.Generator) -> None:
    """Gradients of a quadratic plus a small quartic plus unit noise (so that the gradient and
    the momentum often disagree in sign), with the case's zero entries and parameters without
    a gradient."""
    frozen = {tuple(x) for x in case["no_grad"]}
    for gi, (group, ps) in enumerate(zip(case["groups"], params)):
        for pi, (prob, p) in enumerate(zip(group["params"], ps)):
            if (gi, pi) in frozen:
                p.grad = None
                continue
            x = p.detach().double().reshape(-1)
            A, b = _tensor(prob["A"]), _tensor(prob["b"])
            grad = A @ x - b + 0.2 * x**3
            grad = grad + torch.randn(grad.shape, generator=noise, dtype=torch.float64)
            grad[prob["zero"]] = 0.0
            p.grad = grad.to(p.dtype).reshape(p.shape)


def _lion_run(make: Callable[[list[dict]], Any], case: Case) -> list[list[list[float]]]:
    params = _lion_params(case)
    groups = [
        {"params": ps, **{k: tuple(v) if k == "betas" else v for k, v in g["hyper"].items()}}
        for ps, g in zip(params, case["groups"])
    ]
    opt = make(groups)
    noise = _generator(case["noise_seed"])
    trajectory = []
    for _ in range(case["steps"]):
        _lion_grads(case, params, noise)
        opt.step()
        trajectory.append([p.detach().double().reshape(-1).tolist() for ps in params for p in ps])
    return trajectory


def _lion_probe(answer: Any, case: Case) -> dict:
    return {"trajectory": _lion_run(lambda groups: answer(groups), case)}


def _lion_variant(case: Case, kind: str) -> list:
    """Trajectories of plausible mistakes, to say what went wrong without giving the fix."""
    import optlib

    class Variant(optlib.Lion):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                lr, wd = group["lr"], group["weight_decay"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    m = self.state[p].setdefault("m", torch.zeros_like(p))
                    g = p.grad
                    if kind == "decay not scaled by lr":
                        p.mul_(1 - wd)
                    elif kind != "decay after the step":
                        p.mul_(1 - lr * wd)
                    if kind == "momentum updated first":
                        m.mul_(beta2).add_(g, alpha=1 - beta2)
                        c = m.mul(beta1).add(g, alpha=1 - beta1)
                    elif kind == "betas swapped":
                        c = m.mul(beta2).add(g, alpha=1 - beta2)
                    else:
                        c = m.mul(beta1).add(g, alpha=1 - beta1)
                    if kind == "sign of zero is one":
                        p.add_(torch.where(c >= 0, 1.0, -1.0).to(p.dtype), alpha=-lr)
                    else:
                        p.add_(c.sign(), alpha=-lr)
                    if kind == "decay after the step":
                        p.mul_(1 - lr * wd)
                    if kind == "betas swapped":
                        m.mul_(beta1).add_(g, alpha=1 - beta1)
                    elif kind != "momentum updated first":
                        m.mul_(beta2).add_(g, alpha=1 - beta2)

    return _lion_run(lambda groups: Variant(groups), case)


_LION_HINTS = {
    "momentum updated first": (
        "step 1 agrees but later steps do not: the step must use the momentum from *before* "
        "this step's update"
    ),
    "betas swapped": "the two betas play different roles: which one mixes in the fresh gradient?",
    "decay not scaled by lr": "the weight decay per step is not scaled as in decoupled decay",
    "decay after the step": (
        "the weight decay is applied at another point of the step than in the reference"
    ),
    "sign of zero is one": "a coordinate whose c is exactly 0 must not move",
}


def _lion_expect(case: Case) -> dict:
    import optlib

    return {
        "trajectory": _lion_run(lambda groups: optlib.Lion(groups, foreach=False), case),
        "variants": {kind: _lion_variant(case, kind) for kind in _LION_HINTS},
    }


def _flat_steps(traj: Any, where: str) -> list[torch.Tensor]:
    if not isinstance(traj, list):
        raise AssertionError(f"{where}: no result")
    out = []
    for k, step in enumerate(traj):
        if not isinstance(step, list):
            raise AssertionError(f"{where}, step {k + 1}: no parameters")
        parts = [_as_float_array(p, f"parameter {j}", where).reshape(-1) for j, p in
                 enumerate(step)]  # fmt: skip
        out.append(torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64))
    return out


def _same(a: list[torch.Tensor], b: list, dtype: str, factor: float = 1.0) -> bool:
    ref = _flat_steps(b, "reference")
    return len(a) == len(ref) and all(
        x.shape == y.shape
        and bool(torch.allclose(x, y, rtol=factor * RTOL[dtype], atol=factor * ATOL[dtype]))
        for x, y in zip(a, ref)
    )


def _lion_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    sizes = [len(p["theta0"]) for g in case["groups"] for p in g["params"]]
    where = (
        f"lion_class, {where} ({case['dtype']}, {len(case['groups'])} param group(s), "
        f"{case['steps']} steps)"
    )
    got = _require(got, ["trajectory"], where, "your optimizer")
    mine = _flat_steps(got["trajectory"], where)
    ref = _flat_steps(expected["trajectory"], where)
    if len(mine) != len(ref):
        raise AssertionError(f"{where}: expected {len(ref)} steps")
    dtype = case["dtype"]
    for k, (a, e) in enumerate(zip(mine, ref)):
        if a.shape != e.shape:
            raise AssertionError(f"{where}, step {k + 1}: expected {sum(sizes)} numbers")
        bad = ~torch.isclose(a, e, rtol=RTOL[dtype], atol=ATOL[dtype])
        if not bool(bad.any()):
            continue
        flat = int(bad.nonzero()[0])
        j = next(i for i, s in enumerate(torch.tensor(sizes).cumsum(0).tolist()) if flat < s)
        hint = next((h for kind, h in _LION_HINTS.items()
                     if _same(mine, expected["variants"][kind], dtype, 100.0)), "")  # fmt: skip
        raise AssertionError(
            f"{where}: after step {k + 1}, parameter {j}{_fmt_index((flat - sum(sizes[:j]),))} "
            f"differs from optlib.Lion: expected {float(e[flat]):.10g}, got {float(a[flat]):.10g}"
            + (f" ({hint})" if hint else "")
        )


def _lion_success(
    seed: int = 0, n_cases: int = 3, steps: int = 12, frozen: bool = False, n_groups: int = 2
):
    extra = ", one parameter without a gradient" if frozen else ""
    return (
        f"lion_class: OK, matches optlib.Lion over {steps} steps on {n_cases} seeded problems "
        f"(up to {n_groups} param groups, weight decay, beta1 = 0, float64 and float32, zero "
        f"gradients{extra})"
    )


_register(Check("lion_class", _lion_cases, _lion_probe, _lion_expect, _lion_compare,
                _lion_success))  # fmt: skip
no_delegation("lion_class", "Lion", "optlib.Lion", "optlib.optim.lion", "optlib.optim._fused")


def lion_class(
    answer: type, *, seed: int = 0, n_cases: int = 3, steps: int = 12, frozen: bool = False,
    n_groups: int = 2,
) -> None:  # fmt: skip
    r"""Check a Lion optimizer class ``answer(param_groups)`` (each group with ``lr``,
    ``betas=(β1, β2)`` and ``weight_decay``) against :class:`optlib.Lion` (Chen et al., 2023):
    :math:`\theta \leftarrow (1-\eta\lambda)\theta`, :math:`c = \beta_1 m + (1-\beta_1) g`,
    :math:`\theta \leftarrow \theta - \eta\,\operatorname{sign}(c)`,
    :math:`m \leftarrow \beta_2 m + (1-\beta_2) g`. With ``frozen`` one parameter has no
    gradient (``p.grad is None``) and must be left alone; ``n_groups`` param groups (up to 3)
    have their own hyperparameters.
    """
    run_check(
        "lion_class", answer, seed=seed, n_cases=n_cases, steps=steps, frozen=frozen,
        n_groups=n_groups,
    )  # fmt: skip


# --------------------------------------------------------------------------- factored moment


def _factor_cases(seed: int = 0, n_cases: int = 4, batched: bool = True) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        dtype = "float64" if i % 2 == 0 else "float32"
        n, m = 2 + int(_uniform(g, 0, 6)), 2 + int(_uniform(g, 0, 6))
        if n == m:
            m += 1  # a transposed answer must not pass by accident
        shape = [n, m] if not batched or i % 3 != 2 else [1 + i % 3, n, m]
        kind = ["rank-one", "random", "zero row", "all zero"][i % 4]
        a = torch.rand(*shape[:-1], 1, generator=g, dtype=torch.float64) * 3
        b = torch.rand(*shape[:-2], 1, m, generator=g, dtype=torch.float64) * 3
        V = a @ b if kind == "rank-one" else torch.rand(*shape, generator=g, dtype=torch.float64)
        V = V * torch.tensor(_log_uniform(g, 1e-6, 1e2), dtype=torch.float64)
        if kind == "zero row":
            V[..., 0, :] = 0.0
        if kind == "all zero":
            V = torch.zeros(shape, dtype=torch.float64)
        cases.append({"dtype": dtype, "shape": shape, "kind": kind, "V": _rounded(V, dtype)})
    return cases


def _factor_probe(answer: Callable, case: Case) -> dict:
    V = _tensor(case["V"], case["dtype"])
    V_in = V.clone()
    out = answer(V)
    if not torch.equal(V, V_in):
        return {"problem": "factored_second_moment changed V in place; return a new tensor"}
    if out is None:
        return {"problem": "factored_second_moment returned None (is a `return` missing?)"}
    try:
        t = torch.as_tensor(out).detach()
    except (TypeError, ValueError, RuntimeError):
        return {"problem": f"factored_second_moment returned a {type(out).__name__}, not a tensor"}
    if tuple(t.shape) != tuple(case["shape"]):
        return {"problem": f"factored_second_moment returned shape {tuple(t.shape)}, expected "
                           f"the shape of V, {tuple(case['shape'])}"}  # fmt: skip
    return {"matrix": t.to(torch.float64).reshape(-1).tolist()}


def _factor_expect(case: Case) -> dict:
    """Run one step of optlib.Adafactor on the gradient sqrt(V): at t = 1 its row and column
    statistics are exactly the row and column means of V; rebuild from them."""
    import optlib

    V = _tensor(case["V"], case["dtype"])
    theta = torch.zeros(case["shape"], dtype=V.dtype, requires_grad=True)
    opt = optlib.Adafactor([theta], lr=1e-2)
    theta.grad = V.sqrt()
    opt.step()
    state = opt.state[theta]
    R, C = state["row_var"], state["col_var"]
    V_hat = (R @ C) / R.mean(dim=-2, keepdim=True).clamp(min=torch.finfo(V.dtype).tiny)
    return {"matrix": V_hat.double().reshape(-1).tolist()}


def _factor_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"factored_second_moment, {where} ({case['dtype']} V of shape {tuple(case['shape'])}, "
        f"{case['kind']})"
    )
    got = _require(got, ["matrix"], where, "factored_second_moment")
    mine = _as_float_array(got["matrix"], "the estimate", where).reshape(-1)
    ref = torch.tensor(expected["matrix"], dtype=torch.float64)
    if mine.shape != ref.shape:
        raise AssertionError(f"{where}: expected {ref.numel()} numbers")
    if not bool(torch.isfinite(mine).all()):
        raise AssertionError(f"{where}: the estimate has NaN or infinite entries (what happens "
                             "to your normaliser when V is zero?)")  # fmt: skip
    dtype = case["dtype"]
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    atol = ATOL[dtype] * max(scale, 1e-300)
    bad = ~torch.isclose(mine, ref, rtol=10 * RTOL[dtype], atol=atol)
    if bool(bad.any()):
        flat = int(bad.nonzero()[0])
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), case["shape"]))
        hint = ""
        if case["kind"] == "rank-one":
            hint = " (V has rank one here, so the estimate must reproduce V exactly)"
        raise AssertionError(
            f"{where}: entry {_fmt_index(index)} differs from the estimate optlib.Adafactor "
            f"builds: expected {float(ref[flat]):.10g}, got {float(mine[flat]):.10g}{hint}"
        )


def _factor_success(seed: int = 0, n_cases: int = 4, batched: bool = True) -> str:
    return (
        f"factored_second_moment: OK, matches optlib.Adafactor's factored estimate on {n_cases} "
        "seeded tensors (rank one, random, a zero row, all zero; float64 and float32)"
    )


_register(Check("factored_second_moment", _factor_cases, _factor_probe, _factor_expect,
                _factor_compare, _factor_success))  # fmt: skip
no_delegation(
    "factored_second_moment", "Adafactor's factored second moment", "torch.optim.Adafactor",
    "torch.optim._adafactor", "optlib.Adafactor", "optlib.optim.adafactor",
    "optlib.experiments.memory_light",
)  # fmt: skip


def factored_second_moment(
    answer: Callable, *, seed: int = 0, n_cases: int = 4, batched: bool = True
) -> None:
    r"""Check ``answer(V)``: Adafactor's factored estimate of a non-negative tensor ``V`` of
    shape ``(..., n, m)`` over its last two dimensions, :math:`\hat V = r c^\top /
    \operatorname{mean}(r)` with :math:`r` the row means and :math:`c` the column means (zeros,
    not NaN, when ``V`` is zero), against the statistics :class:`optlib.Adafactor` keeps.
    ``V`` must be left unchanged.
    """
    run_check("factored_second_moment", answer, seed=seed, n_cases=n_cases, batched=batched)


# --------------------------------------------------------------------------- state memory

STATE_OPTIMIZERS = ("SGD", "Adam", "Lion", "Adafactor")
# Shapes of a large language model's layers: too large to allocate Adam's state for in a check.
_LARGE = ([4096, 11008], [11008, 4096], [32000, 4096], [8192, 28672], [1024, 8192])
_SMALL_MAX = 50_000  # parameters up to this count are measured on the real optimizers


def _state_cases(seed: int = 0, n_cases: int = 4, large: bool = True) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        name = STATE_OPTIMIZERS[i % len(STATE_OPTIMIZERS)]
        shapes = [[int(_uniform(g, 2, 40))], [int(_uniform(g, 2, 30)), int(_uniform(g, 2, 30))]]
        shapes.append([int(_uniform(g, 2, 9)), int(_uniform(g, 1, 5)), 3, 3])  # a conv kernel
        if i % 2 == 1:
            shapes.append([int(_uniform(g, 2, 5)), int(_uniform(g, 2, 12)),
                           int(_uniform(g, 2, 12))])  # a stack of experts' matrices
        if large and i % 2 == 0:
            shapes.append(list(_LARGE[int(_uniform(g, 0, len(_LARGE)))]))
        order = torch.randperm(len(shapes), generator=g).tolist()
        cases.append({"optimizer": name, "shapes": [shapes[j] for j in order]})
    return cases


def _state_probe(answer: Callable, case: Case) -> dict:
    out = _number(answer(case["optimizer"], [tuple(s) for s in case["shapes"]]),
                  "optimizer_state_floats")  # fmt: skip
    if "value" in out and not float(out["value"]).is_integer():
        out = {"problem": f"optimizer_state_floats returned {out['value']!r}, not a whole number"}
    return out


def _measured_floats(name: str, shapes: list[list[int]]) -> int:
    """Step the real optimizer once on parameters of these shapes and count its state."""
    from optlib.bench import memory

    params = nn.ParameterList(nn.Parameter(torch.randn(s)) for s in shapes)
    holder = nn.Module()
    holder.params = params
    opt = memory.build(name, holder)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    return memory.state_bytes(opt) // 4


def _state_expect(case: Case) -> dict:
    from optlib.bench import memory

    shapes = [list(s) for s in case["shapes"]]
    rule = memory.EXPECTED[case["optimizer"]].per_tensor
    by_rule = sum(rule(tuple(s)) for s in shapes)
    if sum(math.prod(s) for s in shapes) <= _SMALL_MAX:
        measured = _measured_floats(case["optimizer"], shapes)
        if measured != by_rule:  # pragma: no cover - the bench tests hold these together
            raise RuntimeError(f"measured {measured} != rule {by_rule} for {case}")
    return {"value": by_rule, "tensors": len(shapes),
            "parameters": sum(math.prod(s) for s in shapes)}  # fmt: skip


def _state_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"optimizer_state_floats, {where} ({case['optimizer']}, shapes "
        f"{[tuple(s) for s in case['shapes']]})"
    )
    value = _value_of(got, "optimizer_state_floats", where, nonnegative=True)
    exp = expected["value"]
    if value == exp:
        return
    diff = exp - value
    if abs(diff) == expected["tensors"]:
        detail = "off by exactly one number per tensor: what else does the optimizer store?"
    elif value == expected["parameters"] or value == 2 * expected["parameters"]:
        detail = "that is what an optimizer with one or two full buffers keeps; this one?"
    else:
        detail = "count tensor by tensor, and look at how each optimizer treats 1-D, 2-D and 4-D"
    raise AssertionError(f"{where}: {detail} (expected {exp}, got {int(value)})")


def _state_success(seed: int = 0, n_cases: int = 4, large: bool = True) -> str:
    return (
        f"optimizer_state_floats: OK, matches the state of SGD (momentum), Adam, Lion and "
        f"Adafactor on {n_cases} seeded lists of shapes"
    )


_register(Check("optimizer_state_floats", _state_cases, _state_probe, _state_expect,
                _state_compare, _state_success))  # fmt: skip
no_delegation(
    "optimizer_state_floats", "optimizer-state count (count, do not measure)",
    "optlib.bench.memory", "optlib.SGD", "optlib.optim.sgd", "optlib.Adam", "optlib.optim.adam",
    "optlib.Lion", "optlib.optim.lion", "optlib.Adafactor", "optlib.optim.adafactor",
    "torch.optim.SGD", "torch.optim.sgd", "torch.optim.Adam", "torch.optim.adam",
    "torch.optim.Adafactor", "torch.optim._adafactor",
)  # fmt: skip


def optimizer_state_floats(
    answer: Callable, *, seed: int = 0, n_cases: int = 4, large: bool = True
) -> None:
    r"""Check ``answer(name, shapes)``: the number of float32 numbers that optimizer ``name``
    (``"SGD"`` with momentum, ``"Adam"``, ``"Lion"`` or ``"Adafactor"``, torch's defaults
    otherwise) keeps as state for parameters of the given shapes, step counters included,
    against measurements of the real optimizers (small shapes) and the update rules' counts
    (shapes of a large language model's layers).
    """
    run_check("optimizer_state_floats", answer, seed=seed, n_cases=n_cases, large=large)


# --------------------------------------------------------------------------- Lion closed form

_RUN_MAX = 5000  # step counts up to this are checked against runs of optlib.Lion


def _closed_form(theta0: float, grad: float, lr: float, wd: float, steps: int) -> float:
    s = (grad > 0) - (grad < 0)
    if wd == 0:
        return theta0 - s * lr * steps
    keep = math.exp(steps * math.log1p(-lr * wd))
    return keep * theta0 - s * (1 - keep) / wd


def _closed_cases(seed: int = 0, n_cases: int = 5, huge: bool = True) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        kind = ["decay", "no decay", "zero gradient", "long", "decay"][i % 5]
        steps = int(round(_log_uniform(g, 5, _RUN_MAX)))
        if kind == "long" and huge:
            steps = int(round(_log_uniform(g, 1e7, 1e10)))
        grad = _log_uniform(g, 1e-4, 1e2) * (1 if i % 2 else -1)
        cases.append({
            "theta0": round(_uniform(g, -3.0, 3.0), 4),
            "grad": 0.0 if kind == "zero gradient" else round(grad, 6),
            "lr": round(_log_uniform(g, 1e-5, 1e-2), 7),
            "weight_decay": 0.0 if kind == "no decay" else round(_log_uniform(g, 0.01, 3.0), 4),
            "steps": steps,
            "kind": kind if kind != "long" or huge else "decay",
        })  # fmt: skip
    return cases


def _closed_probe(answer: Callable, case: Case) -> dict:
    out = answer(case["theta0"], case["grad"], case["lr"], case["weight_decay"], case["steps"])
    return _number(out, "lion_constant_gradient")


def _closed_expect(case: Case) -> dict:
    if case["steps"] > _RUN_MAX:
        args = (case["theta0"], case["grad"], case["lr"], case["weight_decay"], case["steps"])
        return {"value": _closed_form(*args)}
    import optlib

    theta = torch.tensor([case["theta0"]], dtype=torch.float64, requires_grad=True)
    opt = optlib.Lion([theta], lr=case["lr"], weight_decay=case["weight_decay"])
    theta.grad = torch.tensor([case["grad"]], dtype=torch.float64)
    for _ in range(case["steps"]):
        opt.step()
    return {"value": float(theta.detach()[0])}


def _closed_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"lion_constant_gradient, {where} (theta0={case['theta0']}, grad={case['grad']:g}, "
        f"lr={case['lr']:g}, weight_decay={case['weight_decay']:g}, steps={case['steps']})"
    )
    value = _value_of(got, "lion_constant_gradient", where)
    exp = expected["value"]
    # float64 runs of thousands of steps accumulate rounding of order steps * eps * |theta|
    tol = 1e-9 * max(abs(exp), abs(case["theta0"]), case["lr"], 1e-12)
    if abs(value - exp) <= tol:
        return
    lr, wd, T, theta0 = case["lr"], case["weight_decay"], case["steps"], case["theta0"]
    s = (case["grad"] > 0) - (case["grad"] < 0)

    def unrolled(factor: float, sign: int) -> float:
        """theta_t = factor * theta_{t-1} - sign * lr, unrolled T times."""
        if factor == 1.0:
            return theta0 - sign * lr * T
        keep = factor**T
        return keep * theta0 - sign * lr * (1 - keep) / (1 - factor)

    variants = {
        "the decay per step is not scaled as in decoupled weight decay": (1 - wd, s),
        "your answer ignores the weight decay": (1.0, s),
        "the parameter moves the wrong way: Lion descends": (1 - lr * wd, -s),
    }
    detail = "write theta_t in terms of theta_{t-1} and unroll it"
    for text, (factor, sign) in variants.items():
        if (factor, sign) != (1 - lr * wd, s) and 0 <= factor and math.isclose(
                value, unrolled(factor, sign), rel_tol=1e-9, abs_tol=1e-12):  # fmt: skip
            detail = text
            break
    raise AssertionError(f"{where}: {detail} (expected {exp:.12g}, got {value:.12g})")


def _closed_success(seed: int = 0, n_cases: int = 5, huge: bool = True) -> str:
    return (
        f"lion_constant_gradient: OK, matches optlib.Lion on {n_cases} seeded settings (with "
        "and without weight decay, a zero gradient, and step counts no loop can reach)"
    )


_register(Check("lion_constant_gradient", _closed_cases, _closed_probe, _closed_expect,
                _closed_compare, _closed_success))  # fmt: skip
no_delegation("lion_constant_gradient", "Lion run (predict, do not run)", "optlib.Lion",
              "optlib.optim.lion", "optlib.optim._fused")  # fmt: skip


def lion_constant_gradient(
    answer: Callable, *, seed: int = 0, n_cases: int = 5, huge: bool = True
) -> None:
    r"""Check ``answer(theta0, grad, lr, weight_decay, steps)``: the value of a scalar parameter
    after ``steps`` steps of :class:`optlib.Lion` (any betas) from ``theta0`` when every gradient
    is the same number ``grad``, in closed form: :math:`\theta_T = (1-\eta\lambda)^T\theta_0 -
    \operatorname{sign}(g)\,(1-(1-\eta\lambda)^T)/\lambda` (and :math:`\theta_0 -
    \operatorname{sign}(g)\,\eta T` without decay), against runs of optlib.Lion.
    """
    run_check("lion_constant_gradient", answer, seed=seed, n_cases=n_cases, huge=huge)
