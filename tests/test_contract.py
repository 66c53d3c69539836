"""The optlib contract (COURSE.md §4), checked for every optimizer the package exports.

* an interrupted run, saved with ``torch.save`` and resumed in a fresh optimizer, is
  bit-identical to an uninterrupted one;
* ``step(closure)`` returns the closure's loss;
* float32, float64 and bfloat16 parameters train (the loss goes down) without NaN;
* several param groups with their own hyperparameters, and ``torch.optim.lr_scheduler``;
* for the torch.optim family: param groups and schedulers give torch's results to rounding.

Optimizers with a special protocol (a model argument, a Hessian refresh, a train/eval switch,
closures only) get a recipe in ``RECIPES``; every other one is built as ``cls(params, lr=...)``.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import optlib

from ._parity import assert_close_lists

TORCH_FAMILY = [
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "NAdam",
    "RAdam",
    "Adafactor",
    "LBFGS",
]
ADVANCED = [
    "Lion", "SophiaG", "SophiaH", "LARS", "LAMB", "AdamWScheduleFree",
    "Shampoo", "SOAP", "Muon", "MuonWithAuxAdamW", "KFAC",
]  # fmt: skip
ALL = TORCH_FAMILY + ADVANCED
LR = {"SGD": 0.1, "Adagrad": 0.1, "LBFGS": 0.5, "LARS": 1.0, "Muon": 0.02, "Lion": 1e-3}


def _data(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 6, generator=g).to(dtype)
    y = torch.randint(0, 3, (64,), generator=g)
    return X, y


def _model(dtype, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def _loss(model, X, y):
    return nn.functional.cross_entropy(model(X).float(), y)


class Recipe:
    """How to build and step one optimizer on ``_model``."""

    def build(self, name: str, model: nn.Module, **kw) -> torch.optim.Optimizer:
        return getattr(optlib, name)(model.parameters(), **{"lr": LR.get(name, 1e-2), **kw})

    def step(self, opt, model, X, y) -> torch.Tensor:
        def closure():
            opt.zero_grad()
            loss = _loss(model, X, y)
            loss.backward()
            return loss

        return opt.step(closure)


def _steps_done(opt) -> int:
    """Steps taken so far, read from the optimizer's own (saved) state, to seed per-step noise."""
    steps = [int(st["step"]) for st in opt.state.values() if "step" in st]
    return max(steps, default=0)


class SophiaGRecipe(Recipe):
    """Reference loop: step on the loss, then refresh h from a loss on labels sampled from the
    model (the Gauss-Newton-Bartlett estimator), every step here."""

    def build(self, name, model, **kw):
        return optlib.SophiaG(model.parameters(), **{"lr": 1e-2, **kw})

    def step(self, opt, model, X, y):
        loss = super().step(opt, model, X, y)
        gen = torch.Generator().manual_seed(_steps_done(opt))
        opt.zero_grad()
        optlib.optim.sophia.gnb_loss(model(X).float(), generator=gen).backward()
        opt.update_hessian()
        opt.zero_grad()
        return loss


class SophiaHRecipe(Recipe):
    """Hutchinson's estimate u⊙(Hu) refreshed before every step."""

    def build(self, name, model, **kw):
        return optlib.SophiaH(model.parameters(), **{"lr": 1e-2, **kw})

    def step(self, opt, model, X, y):
        gen = torch.Generator().manual_seed(_steps_done(opt))
        opt.update_hessian(lambda: _loss(model, X, y), generator=gen)
        return super().step(opt, model, X, y)


class ScheduleFreeRecipe(Recipe):
    """Schedule-free optimizers step only in train mode."""

    def build(self, name, model, **kw):
        opt = super().build(name, model, **kw)
        opt.train()
        return opt


class MuonRecipe(Recipe):
    """Muon takes matrices only; the biases stay fixed in this recipe."""

    def build(self, name, model, **kw):
        return optlib.Muon([p for p in model.parameters() if p.ndim >= 2], **{"lr": 0.02, **kw})


class MuonAuxRecipe(Recipe):
    """Hidden matrices to Muon, the head and biases to AdamW, split as Muon's authors do."""

    def build(self, name, model, **kw):
        groups = optlib.optim.muon.muon_param_groups(model, muon_lr=0.02, adamw_lr=1e-2)
        return optlib.MuonWithAuxAdamW(groups)


class KFACRecipe(Recipe):
    """K-FAC takes the model (it hooks its Linear layers); refresh often in a short run."""

    def build(self, name, model, **kw):
        return optlib.KFAC(model, **{"lr": 1e-2, "TCov": 2, "TInv": 4, **kw})


class LBFGSRecipe(Recipe):
    """L-BFGS with its strong-Wolfe line search (without it, a fixed lr diverges in bfloat16,
    for torch.optim.LBFGS exactly as for optlib's)."""

    def build(self, name, model, **kw):
        return optlib.LBFGS(
            model.parameters(), **{"lr": 1.0, "line_search_fn": "strong_wolfe", **kw}
        )


RECIPES: dict[str, Recipe] = {
    "LBFGS": LBFGSRecipe(),
    "SophiaG": SophiaGRecipe(),
    "SophiaH": SophiaHRecipe(),
    "AdamWScheduleFree": ScheduleFreeRecipe(),
    "Muon": MuonRecipe(),
    "MuonWithAuxAdamW": MuonAuxRecipe(),
    "KFAC": KFACRecipe(),
}


def recipe(name: str) -> Recipe:
    return RECIPES.get(name, Recipe())


def _present(names):
    return [n for n in names if hasattr(optlib, n)]


def test_every_planned_optimizer_is_exported():
    missing = [n for n in ALL if n not in optlib.__all__]
    assert not missing, f"optimizers in COURSE.md §4 not exported by optlib: {missing}"


@pytest.mark.parametrize("name", _present(ALL))
def test_resume_is_bit_identical(name):
    X, y = _data(torch.float64)
    r = recipe(name)

    def fresh():
        model = _model(torch.float64)
        return model, r.build(name, model)

    model_a, opt_a = fresh()
    for _ in range(8):
        r.step(opt_a, model_a, X, y)

    model_b, opt_b = fresh()
    for _ in range(4):
        r.step(opt_b, model_b, X, y)
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    model_c, opt_c = fresh()
    model_c.load_state_dict(saved["model"])
    opt_c.load_state_dict(saved["opt"])
    for _ in range(4):
        r.step(opt_c, model_c, X, y)
    for (k, a), c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert torch.equal(a, c), f"{name}: {k} differs after save/load/resume"


@pytest.mark.parametrize("name", _present(ALL))
def test_step_with_closure_returns_loss(name):
    X, y = _data(torch.float64)
    model = _model(torch.float64)
    opt = recipe(name).build(name, model)
    loss = recipe(name).step(opt, model, X, y)
    assert isinstance(loss, torch.Tensor) and torch.isfinite(loss)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", _present(ALL))
def test_trains_in_every_dtype(name, dtype):
    X, y = _data(dtype)
    model = _model(dtype)
    r = recipe(name)
    opt = r.build(name, model)
    with torch.no_grad():
        before = _loss(model, X, y).item()
    for _ in range(20):
        r.step(opt, model, X, y)
    with torch.no_grad():
        after = _loss(model, X, y).item()
    assert all(p.dtype == dtype for p in model.parameters()), "parameters changed dtype"
    for state in opt.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                assert torch.isfinite(v).all(), f"{name}: non-finite state {k!r} in {dtype}"
    assert after < before, f"{name} in {dtype}: loss {before:.4f} -> {after:.4f}"


def _two_groups(model, **group1):
    return [
        {"params": model[0].parameters()},
        {"params": model[2].parameters(), **group1},
    ]


@pytest.mark.parametrize("name", _present([n for n in TORCH_FAMILY if n != "LBFGS"]))
def test_param_groups_and_scheduler_match_torch(name):
    X, y = _data(torch.float64)
    results = []
    for lib in (optlib, torch.optim):
        model = _model(torch.float64)
        lr = LR.get(name, 1e-2)
        opt = getattr(lib, name)(_two_groups(model, lr=lr / 3, weight_decay=1e-2), lr=lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        for _ in range(10):
            opt.zero_grad()
            _loss(model, X, y).backward()
            opt.step()
            sched.step()
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr / 8, lr / 24])
        results.append([p.detach().clone() for p in model.parameters()])
    assert_close_lists(results[0], results[1])


@pytest.mark.parametrize("name", _present(TORCH_FAMILY))
def test_torch_state_dict_loads_into_optlib(name):
    """Drop-in: a checkpoint written by torch.optim resumes under optlib, and vice versa.

    A torch checkpoint resumed by optlib follows torch's *uninterrupted* run. An optlib checkpoint
    resumed by torch follows torch's own resumed run: torch.optim casts every floating state
    entry to the parameter's dtype on load, which for NAdam's float32 ``mu_product`` changes the
    rounding (about 5e-10 relative); optlib restores the saved dtype so that resuming is exact.
    """
    X, y = _data(torch.float64)
    r = Recipe()
    lr = LR.get(name, 1e-2)

    def run(first, second):
        model = _model(torch.float64)
        opt = getattr(first, name)(model.parameters(), lr=lr)
        for _ in range(3):
            r.step(opt, model, X, y)
        if second is not None:
            opt2 = getattr(second, name)(model.parameters(), lr=lr)
            opt2.load_state_dict(opt.state_dict())
            opt = opt2
        for _ in range(3):
            r.step(opt, model, X, y)
        return [p.detach().clone() for p in model.parameters()]

    uninterrupted = run(torch.optim, None)
    assert_close_lists(run(torch.optim, optlib), uninterrupted, what=f"{name} torch->optlib")
    assert_close_lists(
        run(optlib, torch.optim), run(torch.optim, torch.optim), what=f"{name} optlib->torch"
    )
