r"""Optimizer-state memory per parameter: measured on a real model, next to the update rule's count.

Every optimizer exported by ``optlib`` takes a few steps on the digits MLP (64→32→32→10, tanh,
float32; on a synthetic batch of the digits' shape where scikit-learn is not installed, which
changes no byte of the state); then the bytes of every tensor it holds (its ``state``, including
nested lists and dicts, and any tensor attribute, each storage counted once, the parameters
themselves excluded) are summed and divided by the number of parameters it optimises. The
expected count comes from the update rule alone (table ``EXPECTED``: for a tensor of shape
:math:`m\times n` with :math:`N = mn` entries, Adam keeps :math:`2N + 1` numbers, Adafactor
:math:`m + n + 1`, Shampoo :math:`2(m^2 + n^2) + 2N` per block…); both are in float32 numbers
(4 bytes), step counters included where they are tensors (torch.optim's convention; Shampoo and
SOAP count their steps in Python ints).

``python -m optlib.bench memory [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import optlib
from optlib.bench.model_steps import data_source, digits_batch
from optlib.optim.muon import muon_param_groups
from optlib.optim.sophia import gnb_loss
from optlib.problems import mlp

Shape = tuple[int, ...]
Batch = tuple[Tensor, Tensor]

# Settings that make each optimizer's state visible (momentum on, a short L-BFGS history,
# Shampoo blocks of 32 so blocking shows, frequent K-FAC refreshes).
HISTORY = 5
SHAMPOO_BLOCK = 32


def benchmark_model(seed: int = 0) -> tuple[nn.Sequential, Batch]:
    """The digits MLP 64→32→32→10 (3466 parameters) and a batch of 256 training images
    (:func:`optlib.bench.model_steps.digits_batch`)."""
    model = mlp(64, 32, 10, depth=2, seed=seed)
    return model, digits_batch(256, seed)


# --- construction and stepping recipes ---------------------------------------------------------


def _loss(model: nn.Module, batch: Batch) -> Tensor:
    X, y = batch
    return F.cross_entropy(model(X), y)


def closure_step(opt: torch.optim.Optimizer, model: nn.Module, batch: Batch) -> None:
    """One ordinary step through a closure (forward, backward)."""

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _loss(model, batch)
        loss.backward()
        return loss

    opt.step(closure)


def _sophiag_step(opt, model, batch) -> None:
    closure_step(opt, model, batch)
    opt.zero_grad()
    gnb_loss(model(batch[0])).backward()
    opt.update_hessian()


def _sophiah_step(opt, model, batch) -> None:
    closure_step(opt, model, batch)
    opt.update_hessian(lambda: _loss(model, batch))


def _schedule_free(model: nn.Module) -> torch.optim.Optimizer:
    opt = optlib.AdamWScheduleFree(model.parameters())
    opt.train()
    return opt


def _muon_only(model: nn.Module) -> torch.optim.Optimizer:
    hidden = [g for g in muon_param_groups(model) if g["use_muon"]][0]["params"]
    return optlib.Muon(hidden)


BUILDERS: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
    "SGD": lambda m: optlib.SGD(m.parameters(), lr=0.1, momentum=0.9),
    "LARS": lambda m: optlib.LARS(m.parameters(), momentum=0.9),
    "LBFGS": lambda m: optlib.LBFGS(m.parameters(), lr=0.5, max_iter=HISTORY + 2,
                                    history_size=HISTORY),
    "AdamWScheduleFree": _schedule_free,
    "Shampoo": lambda m: optlib.Shampoo(m.parameters(), merge_dims=False,
                                        max_preconditioner_dim=SHAMPOO_BLOCK, grafting="adam"),
    "Muon": _muon_only,
    "MuonWithAuxAdamW": lambda m: optlib.MuonWithAuxAdamW(muon_param_groups(m)),
    "KFAC": lambda m: optlib.KFAC(m, TCov=1, TInv=1),
}  # fmt: skip
STEPPERS: dict[str, Callable] = {"SophiaG": _sophiag_step, "SophiaH": _sophiah_step}


def build(name: str, model: nn.Module) -> torch.optim.Optimizer:
    """``name``'s optimizer on ``model`` (its recipe, or ``cls(model.parameters())``)."""
    if name in BUILDERS:
        return BUILDERS[name](model)
    return getattr(optlib, name)(model.parameters())


def step(name: str, opt: torch.optim.Optimizer, model: nn.Module, batch: Batch) -> None:
    """One training step of ``name``'s optimizer, with its special protocol if it has one."""
    STEPPERS.get(name, closure_step)(opt, model, batch)


# --- what the update rules say (in float32 numbers) ---------------------------------------------


def _numel(shape: Shape) -> int:
    return math.prod(shape)


def _blocks(shape: Shape, size: int) -> Iterator[Shape]:
    """Shapes of the blocks when every dimension is cut into pieces of at most ``size``."""
    pieces = [[min(size, d - i) for i in range(0, d, size)] for d in shape]
    if not pieces:
        yield ()
        return
    grids: list[Shape] = [()]
    for ds in pieces:
        grids = [(*g, d) for g in grids for d in ds]
    yield from grids


def _adafactor(s: Shape) -> int:
    if len(s) < 2:
        return _numel(s) + 1
    return _numel(s[:-1]) + _numel(s[:-2]) * s[-1] + 1  # row and column second moments


def _shampoo(s: Shape) -> int:
    per_block = [2 * sum(d * d for d in b) + 2 * _numel(b) for b in _blocks(s, SHAMPOO_BLOCK)]
    return sum(per_block)


def _soap(s: Shape) -> int:
    factors = 2 * sum(d * d for d in s) if len(s) >= 2 else 0  # vectors: plain Adam
    return 2 * _numel(s) + factors


@dataclass(frozen=True)
class Expectation:
    """What the update rule keeps: ``per_tensor(shape)`` numbers for each optimised tensor,
    plus ``extra(opt, params)`` for state that is not per tensor."""

    formula: str
    per_tensor: Callable[[Shape], int] | None = None
    extra: Callable[[torch.optim.Optimizer, list[Tensor]], int] | None = None

    def floats(self, opt: torch.optim.Optimizer, params: list[Tensor]) -> int:
        total = sum(self.per_tensor(tuple(p.shape)) for p in params) if self.per_tensor else 0
        return total + (self.extra(opt, params) if self.extra else 0)


def _lbfgs(opt, params) -> int:
    N = sum(p.numel() for p in params)
    return (2 * HISTORY + 2) * N + 2 * HISTORY + 1


def _muon_aux(opt, params) -> int:
    total = 0
    for group in opt.param_groups:
        for p in group["params"]:
            total += p.numel() if group["use_muon"] else 2 * p.numel() + 1
    return total


def _kfac(opt, params) -> int:
    total = sum(p.numel() for p in params)  # momentum buffers
    for layer in opt.layers:
        a = layer.weight[0].numel() + (layer.bias is not None)  # fan-in (+1 bias column)
        g = layer.weight.shape[0]
        total += 2 * a * a + a + 2 * g * g + g  # A, Q_A, d_A, G, Q_G, d_G
    return total


EXPECTED: dict[str, Expectation] = {
    "SGD": Expectation("N (momentum b)", _numel),
    "Adagrad": Expectation("N (sum) + 1 (step)", lambda s: _numel(s) + 1),
    "RMSprop": Expectation("N (v) + 1 (step)", lambda s: _numel(s) + 1),
    "Adam": Expectation("2N (m, v) + 1 (step)", lambda s: 2 * _numel(s) + 1),
    "AdamW": Expectation("2N (m, v) + 1 (step)", lambda s: 2 * _numel(s) + 1),
    "NAdam": Expectation("2N (m, v) + 2 (step, mu product)", lambda s: 2 * _numel(s) + 2),
    "RAdam": Expectation("2N (m, v) + 1 (step)", lambda s: 2 * _numel(s) + 1),
    "Adafactor": Expectation("m + n (row, column v) + 1; vectors N + 1", _adafactor),
    "LBFGS": Expectation(
        "(2h + 2)·N over all tensors (h pairs s, y; d; last g) + 2h + 1 (rho, alpha, gamma); h=5",
        extra=_lbfgs,
    ),
    "Lion": Expectation("N (m)", _numel),
    "SophiaG": Expectation("2N (m, h) + 1 (step)", lambda s: 2 * _numel(s) + 1),
    "SophiaH": Expectation("2N (m, h) + 1 (step)", lambda s: 2 * _numel(s) + 1),
    "LARS": Expectation("N (momentum b)", _numel),
    "LAMB": Expectation("2N (m, v); step per group", lambda s: 2 * _numel(s)),
    "AdamWScheduleFree": Expectation("2N (z, v); x comes from y and z", lambda s: 2 * _numel(s)),
    "Shampoo": Expectation(
        "per block ≤32: 2(m² + n²) (factors, roots) + 2Nb (M, graft v)",
        _shampoo,
    ),
    "SOAP": Expectation("2N (m, v) + 2(m² + n²) (factors, bases); vectors 2N", _soap),
    "Muon": Expectation("N (momentum b), hidden matrices only", _numel),
    "MuonWithAuxAdamW": Expectation("Muon N; AdamW 2N + 1", extra=_muon_aux),
    "KFAC": Expectation(
        "N (momentum); per layer 2a² + a + 2g² + g (A, G, eigenbases), a = fan-in + 1",
        extra=_kfac,
    ),
}  # fmt: skip


# --- measurement ----------------------------------------------------------------------------------


def _tensors(obj: object, seen: set[int]) -> Iterator[Tensor]:
    if id(obj) in seen or isinstance(obj, nn.Module):
        return
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, Tensor):  # ``opt.state`` is keyed by the parameters
                k = None
            yield from _tensors(k, seen)
            yield from _tensors(v, seen)
    elif isinstance(obj, list | tuple | set):
        for v in obj:
            yield from _tensors(v, seen)


def held_tensors(opt: torch.optim.Optimizer) -> list[Tensor]:
    """Every tensor ``opt`` holds besides the parameters: its state and its attributes."""
    params = [p for g in opt.param_groups for p in g["params"]]
    seen = {id(p) for p in params}
    attrs = {k: v for k, v in vars(opt).items() if k != "param_groups"}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return list(_tensors([attrs, groups], seen))


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of the storages behind :func:`held_tensors`, each storage counted once."""
    params = {p.untyped_storage().data_ptr() for g in opt.param_groups for p in g["params"]}
    storages: dict[int, int] = {}
    for t in held_tensors(opt):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
    return sum(storages.values())


@dataclass
class Row:
    optimizer: str
    params: int
    state_bytes: int
    bytes_per_param: float
    floats_per_param: float
    expected_floats_per_param: float | None
    expected_bytes: int | None
    formula: str

    @property
    def ok(self) -> bool:
        return self.expected_bytes == self.state_bytes


def optimizer_names() -> list[str]:
    """The optimizers ``optlib`` exports (every ``torch.optim.Optimizer`` in ``__all__``)."""
    return [
        n
        for n in optlib.__all__
        if isinstance(getattr(optlib, n), type)
        and issubclass(getattr(optlib, n), torch.optim.Optimizer)
    ]


def measure(name: str, *, steps: int = 3, seed: int = 0) -> Row:
    """Step ``name``'s optimizer ``steps`` times on :func:`benchmark_model` and count."""
    torch.manual_seed(seed)
    model, batch = benchmark_model(seed)
    opt = build(name, model)
    for _ in range(steps):
        step(name, opt, model, batch)
    params = [p for g in opt.param_groups for p in g["params"]]
    n = sum(p.numel() for p in params)
    measured = state_bytes(opt)
    exp = EXPECTED.get(name)
    expected_bytes = 4 * exp.floats(opt, params) if exp else None
    return Row(
        optimizer=name,
        params=n,
        state_bytes=measured,
        bytes_per_param=measured / n,
        floats_per_param=measured / 4 / n,
        expected_floats_per_param=None if expected_bytes is None else expected_bytes / 4 / n,
        expected_bytes=expected_bytes,
        formula=exp.formula if exp else "(no formula in optlib.bench.memory.EXPECTED)",
    )


def run(names: Iterable[str] | None = None, *, steps: int = 3) -> list[Row]:
    return [measure(n, steps=steps) for n in (optimizer_names() if names is None else names)]


def format_table(rows: list[Row]) -> str:
    head = f"{'optimizer':<18} {'params':>6} {'state B':>9} {'B/param':>8} {'floats/param':>12} "
    head += f"{'expected':>9}  ok  update rule (float32 numbers per tensor)"
    lines = [head, "-" * len(head)]
    for r in rows:
        exp = "?" if r.expected_floats_per_param is None else f"{r.expected_floats_per_param:.3f}"
        lines.append(
            f"{r.optimizer:<18} {r.params:>6} {r.state_bytes:>9} {r.bytes_per_param:>8.2f} "
            f"{r.floats_per_param:>12.3f} {exp:>9}  {'✓' if r.ok else '✗'}   {r.formula}"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=3, help="steps before measuring (default 3)")
    parser.add_argument("--only", nargs="*", help="measure only these optimizers")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")


def main(args: argparse.Namespace) -> int:
    rows = run(args.only, steps=args.steps)
    print(
        "Optimizer-state memory on the digits MLP 64-32-32-10 (float32), measured vs expected; "
        f"data: {data_source()}"
    )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**asdict(r), "ok": r.ok} for r in rows], f, indent=1)
    return 0 if all(r.ok for r in rows) else 1
