r"""Exercise checks for chapter 6, AdamW versus L2 regularisation.

Same design as :mod:`optlib.course.checks` (``cases``/``probe``/``expect``/``compare``, registered
in
:data:`optlib.course.checks.CHECKS` so that the trusted grader knows them):

* :func:`sgd_decoupled_step`: one step written as decoupled weight decay that must reproduce
  SGD on :math:`f + \tfrac{\lambda}{2}\|\theta\|^2`, i.e. ``optlib.SGD(weight_decay=λ)``;
* :func:`predict_decay_rate`: the per-step decay rate of Adam + L2 and of AdamW when the
  gradient of the loss is pure noise of standard deviation :math:`\sigma`, checked against runs;
* :func:`adamw_class`: decoupled weight decay added to an Adam step, against
  :class:`torch.optim.AdamW`;
* :func:`no_decay_groups`: param groups that exempt biases, normalisation layers and
  embeddings, against :func:`optlib.optim.param_groups.decay_mask` on seeded models.

In a notebook: ``from optlib.course import checks`` then, e.g., ``checks.adamw_class(AdamW)``.
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
    _as_tensor_answer,
    _class_cases,
    _class_compare,
    _class_loss,
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

__all__ = ["adamw_class", "no_decay_groups", "predict_decay_rate", "sgd_decoupled_step"]


# --------------------------------------------------------------------------- SGD as decay


def _sgd_cases(seed: int = 0, n_cases: int = 4, steps: int = 5, edge: bool = False) -> list[Case]:
    """Seeded quadratics; ``edge`` adds a 0-d and a 3-d ``theta`` and ``l2 = 0`` (plain SGD)."""
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        dtype = "float64" if i % 2 == 0 else "float32"
        shape = [3 + i % 2] if i % 3 != 1 else [2, 3]
        if edge:
            shape = [[], [2, 1, 3], [4]][i % 3]
        d = math.prod(shape)
        if d == 1:
            A = torch.tensor([[_log_uniform(g, 0.05, 5.0)]], dtype=torch.float64)
        else:
            A = _spd(g, d, _log_uniform(g, 0.05, 0.5), _log_uniform(g, 1.0, 5.0))
        l2 = round(_log_uniform(g, 0.05, 2.0), 4)
        cases.append(
            {
                "dtype": dtype,
                "shape": shape,
                "lr": round(_uniform(g, 0.05, 0.3), 4),
                "l2": 0.0 if edge and i % 3 == 2 else l2,
                "A": _rounded(A, dtype),
                "b": _rounded(torch.randn(d, generator=g, dtype=torch.float64), dtype),
                "theta0": _rounded(3 * torch.randn(d, generator=g, dtype=torch.float64), dtype),
                "steps": int(steps),
            }
        )
    return cases


def _sgd_probe(answer: Callable, case: Case) -> dict:
    theta = _tensor(case["theta0"], case["dtype"]).reshape(case["shape"])
    trajectory, modified = [], []
    for k in range(case["steps"]):
        grad = _quadratic_grad(case, theta)
        theta_in, grad_in = theta.clone(), grad.clone()
        new = answer(theta, grad, case["lr"], case["l2"])
        if not torch.equal(theta, theta_in) or not torch.equal(grad, grad_in):
            modified.append(k + 1)
        values, problem = _as_tensor_answer(new, like=theta, what="sgd_decoupled_step")
        if problem:
            return {"trajectory": trajectory, **problem, "step": k + 1}
        trajectory.append(values)
        theta = _tensor(values, case["dtype"]).reshape(case["shape"])
    return {"trajectory": trajectory, "modified_input_at": modified}


def _sgd_variant(case: Case, shrink: Callable[[float, float], float], l2_in_grad: float) -> list:
    """Trajectory of θ ← shrink(lr, l2)·θ − lr·(∇f(θ) + l2_in_grad·l2·θ), in the case's dtype."""
    theta = _tensor(case["theta0"], case["dtype"]).reshape(case["shape"])
    lr, l2 = case["lr"], case["l2"]
    out = []
    for _ in range(case["steps"]):
        grad = _quadratic_grad(case, theta) + l2_in_grad * l2 * theta
        theta = shrink(lr, l2) * theta - lr * grad
        out.append(theta.double().reshape(-1).tolist())
    return out


def _sgd_expect(case: Case) -> dict:
    import optlib

    p = _tensor(case["theta0"], case["dtype"]).reshape(case["shape"]).requires_grad_()
    opt = optlib.SGD([p], lr=case["lr"], weight_decay=case["l2"])
    trajectory = []
    for _ in range(case["steps"]):
        p.grad = _quadratic_grad(case, p.detach())
        opt.step()
        trajectory.append(p.detach().double().reshape(-1).tolist())
    return {
        "trajectory": trajectory,
        "variants": {  # plausible mistakes, to say what went wrong without the fix
            "no decay": _sgd_variant(case, lambda lr, l2: 1.0, 0.0),
            "rate not scaled by lr": _sgd_variant(case, lambda lr, l2: 1.0 - l2, 0.0),
            "penalty applied twice": _sgd_variant(case, lambda lr, l2: 1.0 - lr * l2, 1.0),
        },
    }


_SGD_HINTS = {
    "no decay": "theta is never shrunk, so the penalty has no effect",
    "rate not scaled by lr": (
        "the shrink factor per step differs from SGD's on the penalty term: how does the "
        "learning rate enter that term?"
    ),
    "penalty applied twice": "the penalty acts twice per step (once is enough)",
}


def _matches(traj: torch.Tensor, ref: list, dtype: str) -> bool:
    r = torch.tensor(ref, dtype=torch.float64)
    return traj.shape == r.shape and bool(
        torch.allclose(traj, r, rtol=100 * RTOL[dtype], atol=100 * ATOL[dtype])
    )


def _sgd_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    where = (
        f"sgd_decoupled_step, {where} ({case['dtype']} theta of shape {tuple(case['shape'])}, "
        f"lr={case['lr']:.4g}, l2={case['l2']:.4g})"
    )
    traj, ref = _trajectory_answer(
        got, expected, len(case["theta0"]), where, name="sgd_decoupled_step",
        inputs="`theta` or `grad`",
    )
    miss = _first_step_mismatch(traj, ref, RTOL[case["dtype"]], ATOL[case["dtype"]])
    if miss is not None:
        k, index = miss
        hint = next(
            (h for name, h in _SGD_HINTS.items() if _matches(traj, expected["variants"][name],
                                                            case["dtype"])),
            "",
        )  # fmt: skip
        at = (
            tuple(int(i) for i in torch.unravel_index(torch.tensor(index[0]), case["shape"]))
            if case["shape"]
            else ()
        )
        raise AssertionError(
            f"{where}: after step {k + 1} of {len(ref)}, theta{_fmt_index(at)} differs from SGD "
            f"on f + (l2/2)||theta||^2: expected {float(ref[k][index]):.10g}, got "
            f"{float(traj[k][index]):.10g}" + (f" ({hint})" if hint else "")
        )


def _sgd_success(seed: int = 0, n_cases: int = 4, steps: int = 5, edge: bool = False) -> str:
    extra = "; 0-d and 3-d theta, l2 = 0" if edge else ""
    return (
        f"sgd_decoupled_step: OK, reproduces optlib.SGD(weight_decay=l2) for {steps} steps on "
        f"{n_cases} seeded quadratics (float64 and float32{extra})"
    )


_register(
    Check("sgd_decoupled_step", _sgd_cases, _sgd_probe, _sgd_expect, _sgd_compare, _sgd_success)
)


def sgd_decoupled_step(
    answer: Callable, *, seed: int = 0, n_cases: int = 4, steps: int = 5, edge: bool = False
):
    r"""Check ``answer(theta, grad, lr, l2)``: a step that shrinks :math:`\theta` by a factor and
    then steps along ``grad`` (:math:`\nabla f` alone), which must equal one SGD step on
    :math:`f + \tfrac{l_2}{2}\|\theta\|^2` (``optlib.SGD(weight_decay=l2)``), over ``steps``
    steps on seeded quadratics. It must return a new tensor and leave its inputs unchanged.
    ``edge`` adds a 0-d and a 3-d ``theta`` and ``l2 = 0``.
    """
    run_check("sgd_decoupled_step", answer, seed=seed, n_cases=n_cases, steps=steps, edge=edge)


# --------------------------------------------------------------------------- predicted decay

_NOISE_COORDS, _NOISE_STEPS, _NOISE_BURN_IN = 20_000, 500, 100


def _rate_cases(seed: int = 0, n_cases: int = 4) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        decoupled = i % 2 == 1
        sigma = _log_uniform(g, 0.05, 20.0)
        lr = _log_uniform(g, 0.03, 0.06)
        rate = _log_uniform(g, 5e-4, 1.5e-3)  # the mean weight decays by 18-45 % in the window
        wd = rate / lr if decoupled else rate * sigma / lr  # L2: lambda/sigma <= 0.05
        cases.append(
            {
                "lr": round(lr, 6),
                "weight_decay": float(f"{wd:.4g}"),
                "sigma": float(f"{sigma:.4g}"),
                "decoupled": decoupled,
                "seed": int(torch.randint(0, 2**31 - 1, (), generator=g)),
            }
        )
    return cases


def _rate_probe(answer: Callable, case: Case) -> dict:
    value = answer(case["lr"], case["weight_decay"], case["sigma"], case["decoupled"])
    return _number(value, "predict_decay_rate")


def _rate_expect(case: Case) -> dict:
    r"""Run Adam (L2) or AdamW from :math:`\theta_0 = 1` on 20 000 coordinates whose loss
    gradient is pure noise :math:`\sigma\,\xi_t`, and measure the mean per-step shrink of
    :math:`\bar\theta_t` between steps 100 and 500."""
    import optlib

    g = torch.Generator().manual_seed(case["seed"])
    theta = torch.ones(_NOISE_COORDS, dtype=torch.float64, requires_grad=True)
    cls = optlib.AdamW if case["decoupled"] else optlib.Adam
    opt = cls([theta], lr=case["lr"], weight_decay=case["weight_decay"])
    means = []
    for _ in range(_NOISE_STEPS):
        theta.grad = case["sigma"] * torch.randn(_NOISE_COORDS, generator=g, dtype=torch.float64)
        opt.step()
        means.append(float(theta.detach().mean()))
    ratio = means[-1] / means[_NOISE_BURN_IN - 1]
    return {"value": 1.0 - ratio ** (1.0 / (_NOISE_STEPS - _NOISE_BURN_IN))}


def _rate_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    kind = "AdamW (decoupled)" if case["decoupled"] else "Adam + L2"
    where = (
        f"predict_decay_rate, {where} ({kind}, lr={case['lr']:.4g}, "
        f"weight_decay={case['weight_decay']:.4g}, sigma={case['sigma']:.4g})"
    )
    _raise_if_error(got, "predict_decay_rate", where)
    if not isinstance(got, dict) or "value" not in got:
        raise AssertionError(f"{where}: {_problem_of(got)}")
    if "value" not in got:
        raise AssertionError(f"{where}: no result")
    value, measured = got["value"], expected["value"]
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AssertionError(f"{where}: expected a finite rate, got {value!r}")
    if abs(value - measured) > 0.15 * abs(measured):
        raise AssertionError(
            f"{where}: the run shrank the mean weight by {measured:.4g} per step; you "
            f"predicted {value:.4g} (off by a factor {value / measured:.3g})"
            if measured and value
            else f"{where}: the run shrank the mean weight by {measured:.4g} per step; "
            f"you predicted {value:.4g}"
        )


def _rate_success(seed: int = 0, n_cases: int = 4) -> str:
    return (
        f"predict_decay_rate: OK, within 15% of the measured decay in {n_cases} seeded runs "
        "(Adam + L2 and AdamW, noisy gradients)"
    )


_register(
    Check("predict_decay_rate", _rate_cases, _rate_probe, _rate_expect, _rate_compare,
          _rate_success)
)  # fmt: skip


def predict_decay_rate(answer: Callable, *, seed: int = 0, n_cases: int = 4) -> None:
    r"""Check ``answer(lr, weight_decay, sigma, decoupled)``, the predicted per-step decay rate
    :math:`r` (weights shrink like :math:`(1-r)^t`) of Adam with an L2 penalty
    (``decoupled=False``) or of AdamW (``decoupled=True``) when the loss gradient of every
    coordinate is pure noise of standard deviation ``sigma``, against runs of
    :class:`optlib.Adam`/:class:`optlib.AdamW` (within 15 %).
    """
    run_check("predict_decay_rate", answer, seed=seed, n_cases=n_cases)


# --------------------------------------------------------------------------- AdamW class


def _adamw_hyper(g: torch.Generator, i: int) -> dict:
    return {
        "lr": round(_uniform(g, 0.01, 0.08), 4),
        "betas": [round(_uniform(g, 0.8, 0.95), 3), round(_uniform(g, 0.99, 0.999), 4)],
        "eps": 1e-8,
        "weight_decay": round(_uniform(g, 0.2, 2.0), 3),
    }


def _adamw_cases(
    seed: int = 0, n_cases: int = 3, steps: int = 20, frozen: bool = False, groups: bool = False
) -> list[Case]:
    """``frozen``: the last parameter gets no gradient (``.grad`` None) in the second half of
    the run; ``groups``: where a case has two parameters, the first is in a param group of its
    own at half the learning rate."""
    cases = _class_cases(seed, n_cases, steps, _adamw_hyper)
    for case in cases:
        case["frozen"] = bool(frozen)
        case["groups"] = bool(groups and len(case["params"]) > 1)
    return cases


def _adamw_run(factory: Callable, case: Case) -> list[list[list[float]]]:
    """The trajectory of ``factory(params_or_groups, **hyper)`` on the case's problems."""
    params = [
        _tensor(prob["theta0"]).reshape(prob["shape"]).requires_grad_() for prob in case["params"]
    ]
    hyper = case["hyper"]
    spec: Any = params
    if case.get("groups"):
        spec = [{"params": params[:1], "lr": hyper["lr"] / 2}, {"params": params[1:]}]
    opt = factory(spec, **hyper)
    trajectory = []
    for k in range(case["steps"]):
        for p in params:
            p.grad = None
        _class_loss(case["params"], params).backward()
        if case.get("frozen") and k >= case["steps"] // 2:
            params[-1].grad = None
        opt.step()
        trajectory.append([p.detach().double().reshape(-1).tolist() for p in params])
    return trajectory


def _torch_factory(**fixed: Any) -> Callable:
    def factory(ps, betas, **h):
        return torch.optim.AdamW(ps, betas=tuple(betas), foreach=False, **{**h, **fixed})

    return factory


class _DecayAfter(torch.optim.Adam):
    """A plausible mistake: the decay applied after the Adam step."""

    def __init__(self, params, weight_decay, **kw):
        super().__init__(params, **kw)
        self.wd = weight_decay

    @torch.no_grad()
    def step(self, closure=None):
        super().step()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.mul_(1 - group["lr"] * self.wd)


def _adamw_expect(case: Case) -> dict:
    hyper = case["hyper"]
    variants = {
        "L2": lambda ps, betas, **h: torch.optim.Adam(ps, betas=tuple(betas), foreach=False, **h),
        "unscaled": lambda ps, betas, lr, weight_decay, **h: torch.optim.AdamW(
            ps, betas=tuple(betas), lr=lr, weight_decay=weight_decay / lr, foreach=False, **h
        ),
        "after": lambda ps, betas, weight_decay, **h: _DecayAfter(
            ps, weight_decay, betas=tuple(betas), foreach=False, **h
        ),
    }
    return {
        "trajectory": _adamw_run(_torch_factory(), case),
        "variants": {name: _adamw_run(f, case) for name, f in variants.items()},
        "hyper": hyper,
    }


def _adamw_probe(answer: Callable, case: Case) -> dict:
    def factory(ps, betas, **h):
        return answer(ps, betas=tuple(betas), **h)

    return {"trajectory": _adamw_run(factory, case)}


_ADAMW_HINTS = {
    "L2": (
        "your optimizer takes the same steps as Adam with an L2 penalty: the decay goes "
        "through the moments and is divided by sqrt(v_hat)"
    ),
    "unscaled": (
        "the weights shrink by a different factor per step than torch's AdamW: check how "
        "that factor depends on the learning rate"
    ),
    "after": "close: the decay is applied at a different point of the step (order matters)",
}


def _same_trajectory(a: Any, b: list) -> bool:
    try:
        return all(
            torch.allclose(
                torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64),
                rtol=1e-9, atol=1e-12,
            )
            for xs, ys in zip(a, b, strict=True)
            for x, y in zip(xs, ys, strict=True)
        )  # fmt: skip
    except (TypeError, ValueError, RuntimeError):
        return False


def _adamw_hint(got: Any, expected: dict) -> str:
    traj = got.get("trajectory") if isinstance(got, dict) else None
    for name, hint in _ADAMW_HINTS.items():
        if _same_trajectory(traj, expected.get("variants", {}).get(name, [])):
            return f" ({hint})"
    return ""


_adamw_base_compare = _class_compare("adamw_class", "torch.optim.AdamW", lambda gaps: "")


def _adamw_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    try:
        _adamw_base_compare(case, got, expected, where)
    except AssertionError as err:
        raise AssertionError(str(err) + _adamw_hint(got, expected)) from None


def _adamw_success(
    seed: int = 0, n_cases: int = 3, steps: int = 20, frozen: bool = False, groups: bool = False
) -> str:
    extra = [x for x, on in (("a parameter without a gradient", frozen),
                             ("two param groups", groups)) if on]  # fmt: skip
    return (
        f"adamw_class: OK, matches torch.optim.AdamW over {steps} steps on {n_cases} seeded "
        "problems" + (f" ({', '.join(extra)})" if extra else "")
    )


_register(
    Check("adamw_class", _adamw_cases, _adamw_probe, _adamw_expect, _adamw_compare,
          _adamw_success)
)  # fmt: skip


def adamw_class(
    answer: type, *, seed: int = 0, n_cases: int = 3, steps: int = 20, frozen: bool = False,
    groups: bool = False,
) -> None:  # fmt: skip
    r"""Check an AdamW optimizer class, constructed as ``answer(params, lr=..., betas=(β1, β2),
    eps=..., weight_decay=...)``, against :class:`torch.optim.AdamW` (Loshchilov & Hutter,
    2019): :math:`\theta \leftarrow (1-\eta\lambda)\theta`, then Adam's step on the loss
    gradient alone, over ``steps`` steps on seeded problems. ``frozen``: a parameter stops
    receiving gradients half-way (it must then not move, decay included); ``groups``: two param
    groups with different learning rates."""
    run_check(
        "adamw_class", answer, seed=seed, n_cases=n_cases, steps=steps, frozen=frozen,
        groups=groups,
    )  # fmt: skip


# --------------------------------------------------------------------------- param groups

_LAYERS = ("linear", "linear_nobias", "layernorm", "batchnorm", "rmsnorm", "groupnorm", "conv1d")


def _group_cases(seed: int = 0, n_cases: int = 3, head_first: bool = False) -> list[Case]:
    """Seeded models. Every case has a linear layer, and the cases together hold every layer kind
    (each case's first layers cycle through them) and a tied head (cases 1, 3, ...).
    ``head_first`` registers the output layer before the embedding (a tied tensor is then
    named after the head) and nests the layers one level deeper."""
    g = _generator(seed)
    kinds = _LAYERS
    cases = []
    for i in range(n_cases):
        n_layers = 4 + int(torch.randint(0, 3, (), generator=g))
        layers = [
            kinds[int(torch.randint(0, len(kinds), (), generator=g))] for _ in range(n_layers)
        ]
        layers[0] = "linear"  # always something to decay
        for j in range(1, 4):  # three of the other kinds in turn, so that all are covered
            layers[j] = kinds[1 + (3 * i + j - 1) % (len(kinds) - 1)]
        cases.append(
            {
                "vocab": 5 + int(torch.randint(0, 8, (), generator=g)),
                "d": 4 * (1 + int(torch.randint(0, 3, (), generator=g))),
                "layers": layers,
                "tied": i % 2 == 0,
                "head_first": bool(head_first),
                "weight_decay": round(_log_uniform(g, 1e-3, 0.3), 5),
                "seed": int(torch.randint(0, 2**31 - 1, (), generator=g)),
            }
        )
    return cases


class _Layers(nn.Module):
    """A container of named layers (no forward: the exercise only inspects its modules)."""


def build_model(case: Case) -> nn.Module:
    """The seeded model of a case: an embedding ``tok``, the listed layers ``blocks.l0``,
    ``blocks.l1``... (names that do not say what a layer is), an output layer ``out`` (possibly
    tied to the embedding, possibly registered first)."""
    torch.manual_seed(case["seed"])
    d, vocab = case["d"], case["vocab"]
    model = _Layers()
    if case.get("head_first"):
        model.out = nn.Linear(d, vocab, bias=False)
    model.tok = nn.Embedding(vocab, d)
    blocks = nn.Module()
    for i, kind in enumerate(case["layers"]):
        layer = {
            "linear": lambda: nn.Linear(d, d),
            "linear_nobias": lambda: nn.Linear(d, d, bias=False),
            "layernorm": lambda: nn.LayerNorm(d),
            "batchnorm": lambda: nn.BatchNorm1d(d),
            "rmsnorm": lambda: nn.RMSNorm(d),
            "groupnorm": lambda: nn.GroupNorm(2, d),
            "conv1d": lambda: nn.Conv1d(d, d, 3),
        }[kind]()
        blocks.add_module(f"l{i}", layer)
    if case.get("head_first"):
        outer = nn.Module()
        outer.inner = blocks
        blocks = outer
    model.blocks = blocks
    if not case.get("head_first"):
        model.out = nn.Linear(d, vocab, bias=False)
    if case["tied"]:
        model.out.weight = model.tok.weight
    return model


def _group_probe(answer: Callable, case: Case) -> dict:
    model = build_model(case)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = answer(model, case["weight_decay"])
    if groups is None:
        return {"problem": "param_groups returned None (is a `return` missing?)"}
    try:
        groups = list(groups)
    except TypeError:
        return {"problem": f"param_groups returned a {type(groups).__name__}, not a list"}
    assigned: dict[str, float] = {}
    for j, group in enumerate(groups):
        if not isinstance(group, dict) or "params" not in group:
            return {"problem": f"group {j} is not a dict with a 'params' entry"}
        if "weight_decay" not in group:
            return {"problem": f"group {j} has no 'weight_decay' entry"}
        try:
            wd = float(group["weight_decay"])
        except (TypeError, ValueError):
            return {"problem": f"group {j}'s weight_decay is not a number"}
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            if id(p) not in names:
                return {"problem": f"group {j} holds a tensor that is not a parameter of the model"}
            name = names[id(p)]
            if name in assigned:
                return {"problem": f"parameter {name!r} appears in more than one place"}
            assigned[name] = wd
    try:
        torch.optim.AdamW(groups, lr=1e-3)
    except (TypeError, ValueError) as err:
        return {"problem": f"torch.optim.AdamW rejects the groups: {err}"[:200]}
    return {"assigned": assigned}


def _group_expect(case: Case) -> dict:
    from ...optim.param_groups import decay_mask

    model = build_model(case)
    shapes = {n: list(p.shape) for n, p in model.named_parameters()}
    wd = case["weight_decay"]
    mask = decay_mask(model)
    return {"assigned": {n: (wd if d else 0.0) for n, d in mask.items()}, "shapes": shapes}


def _group_compare(case: Case, got: Any, expected: dict, where: str) -> None:
    layers = ", ".join(case["layers"])
    tied = ", out tied to the embedding" if case["tied"] else ""
    order = ", out registered first" if case.get("head_first") else ""
    where = (
        f"no_decay_groups, {where} (tok = embedding, blocks = {layers}, out = linear{tied}"
        f"{order}; weight_decay={case['weight_decay']:g})"
    )
    _raise_if_error(got, "param_groups", where)
    if not isinstance(got, dict) or "assigned" not in got:
        raise AssertionError(f"{where}: {_problem_of(got)}")
    assigned = got.get("assigned")
    if not isinstance(assigned, dict):
        raise AssertionError(f"{where}: no result")
    want = expected["assigned"]
    missing = [n for n in want if n not in assigned]
    if missing:
        raise AssertionError(f"{where}: parameter {missing[0]!r} is in no group")
    for name, wd in want.items():
        value = assigned[name]
        if not isinstance(value, (int, float)) or not math.isclose(
            float(value), wd, rel_tol=1e-12, abs_tol=0.0
        ):
            shape = tuple(expected["shapes"][name])
            raise AssertionError(
                f"{where}: parameter {name!r} (shape {shape}) gets weight_decay {value!r}, "
                f"expected {wd:g}"
            )


def _group_success(seed: int = 0, n_cases: int = 3, head_first: bool = False) -> str:
    extra = " (output layer registered before the embedding)" if head_first else ""
    return (
        f"no_decay_groups: OK, every parameter of {n_cases} seeded models in the right group{extra}"
    )


_register(
    Check("no_decay_groups", _group_cases, _group_probe, _group_expect, _group_compare,
          _group_success)
)  # fmt: skip


def no_decay_groups(
    answer: Callable, *, seed: int = 0, n_cases: int = 3, head_first: bool = False
) -> None:
    """Check ``answer(model, weight_decay)``, a list of param groups in which every trainable
    parameter appears once: weight matrices (and conv kernels) with ``weight_decay``; biases,
    normalisation layers and embeddings with ``0.0``; against
    :func:`optlib.optim.param_groups.decay_mask` on seeded models whose module names do not
    say what each layer is. ``head_first``: see ``_group_cases``."""
    run_check("no_decay_groups", answer, seed=seed, n_cases=n_cases, head_first=head_first)
