"""``torch.compile(opt.step)`` for every optimizer, on the CPU, with the default backend (inductor).

What it checks, against the same steps taken eagerly:

* the compiled steps give the eager parameters to rounding. Two allowances, the larger counts:
  the run's own response to rounding (``tests/_rounding.py``: the eager run repeated from a start
  moved by one ulp, times steps and roundings per step), and ``SCALARS`` of how far the
  parameters moved: under torch.compile the step counters and tensor learning rates stay 0-d
  float32 tensors (``optlib.optim._base.step_value``), so bias corrections are computed in
  float32, as torch.optim's compiled optimizers do, and 1 - beta2**t loses up to about 1e-5 of
  its value at small t. Measured (float32, 6 steps): at most about 3e-6 of the movement, so
  ``SCALARS`` leaves a factor of 30. A miscompiled step is off by a factor: SOAP's second step was
  20 times too large before the workaround for inductor's add(x, mm, alpha) (``soap.py``), and
  KFAC's step counter did not advance (dynamo drops an optimizer's attribute assignments);
* no step recompiles once the first steps have built the state: the number of compiled graphs
  stops growing (the element-wise optimizers after their second step, the preconditioners after
  their first refresh cycle, whose refresh runs eagerly);
* the element-wise optimizers compile without a single graph break (no ``.item()`` in the step);
* ``LBFGS.step`` is not compiled, as ``torch.optim.LBFGS.step`` is not (it branches on losses).

Compilation is slow on two cores, so the work is shared: the sixteen optimizers without a refresh
step, and four ``foreach=True`` paths (what ``fused=True`` falls back to under compile), are
stepped by *one* compiled function (one graph, one C++ compilation), on one small model each.
Measured here, the whole module: about 100 s of CPU time with a cold inductor cache (5 minutes of
wall time while other jobs loaded the two cores), 40 s with a warm one; marked slow.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch._dynamo as dynamo
from torch import nn

import optlib
from optlib.optim.muon import muon_param_groups

from ._rounding import one_ulp_response, rounding_tolerance

pytestmark = pytest.mark.slow

SCALARS = 1e-4
STEPS = 6
ELEMENTWISE = [
    "SGD", "Adam", "AdamW", "NAdam", "RAdam", "Adagrad", "RMSprop", "Adafactor", "Lion",
    "SophiaG", "SophiaH", "LARS", "LAMB", "AdamWScheduleFree", "Muon", "MuonWithAuxAdamW",
    "Adam foreach", "NAdam foreach", "RAdam foreach", "Adagrad foreach",  # (fused=True's fallback)
]  # fmt: skip
REFRESHING = ["Shampoo", "SOAP", "KFAC"]


def _model(square: bool = False) -> nn.Module:
    """Three layers of different shapes; ``square``: 6x6 weights, for the preconditioners,
    whose factors are then of full rank from the first gradient on (a rank-deficient factor's
    eigenvectors for its zero eigenvalue are arbitrary, so rounding alone can rotate them and
    change the step: that would test conditioning, not compilation)."""
    torch.manual_seed(0)
    if square:
        return nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(),
                             nn.Linear(6, 6))  # fmt: skip
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3))


def _data(t: int = 0):
    """Mini-batch ``t``: fresh data every step (with one fixed batch, SOAP's rotated gradient
    has exact zeros whose rounding noise Adam's normalisation turns into unit steps)."""
    g = torch.Generator().manual_seed(100 + t)
    return torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)


def _build(name: str, model: nn.Module) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if name.endswith(" foreach"):  # the multi-tensor path, where step counters are lists
        return getattr(optlib, name.split()[0])(params, lr=1e-2, foreach=True)
    if name == "SGD":
        return optlib.SGD(params, lr=0.05, momentum=0.9, nesterov=True)
    if name == "AdamW":  # a tensor learning rate, changed by a scheduler: no recompile
        return optlib.AdamW(params, lr=torch.tensor(1e-2))
    if name == "Muon":
        return optlib.Muon([p for p in params if p.ndim == 2], lr=0.02, ns_dtype=None)
    if name == "MuonWithAuxAdamW":
        return optlib.MuonWithAuxAdamW(muon_param_groups(model, adamw_lr=1e-2, ns_dtype=None))
    if name == "Shampoo":  # whole matrices (merged, a 6x6 weight is a vector of 36)
        return optlib.Shampoo(params, lr=1e-2, precondition_frequency=2, merge_dims=False)
    if name == "SOAP":
        return optlib.SOAP(params, lr=1e-2, precondition_frequency=2)
    if name == "KFAC":
        return optlib.KFAC(model, lr=1e-2, TCov=1, TInv=2)
    opt = getattr(optlib, name)(params, lr=1e-2)
    if name == "AdamWScheduleFree":
        opt.train()
    return opt


class Run:
    """One model and optimizer per name, stepped together; ``step_all`` is what is compiled."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.models = [_model(square=n in REFRESHING) for n in names]
        self.opts = [_build(n, m) for n, m in zip(names, self.models)]
        self.start = [[p.detach().clone() for p in m.parameters()] for m in self.models]
        self.scheduler = None
        if "AdamW" in names:
            opt = self.opts[names.index("AdamW")]
            self.scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.8)
    def gradients(self, t: int) -> None:
        X, y = _data(t)
        for name, model, opt in zip(self.names, self.models, self.opts):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X), y).backward()
            if name == "SophiaG":  # a Hessian estimate to divide by (GNB's square of .grad)
                opt.update_hessian()

    def step_all(self) -> None:
        for opt in self.opts:
            opt.step()

    def after_step(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def params(self) -> list[list[torch.Tensor]]:
        return [[p.detach().clone() for p in m.parameters()] for m in self.models]


def _eager(name: str, start: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``STEPS`` eager steps of ``name`` (from ``start`` if given); the parameters at the end."""
    run = Run([name])
    if start is not None:
        with torch.no_grad():
            for p, s in zip(run.models[0].parameters(), start):
                p.copy_(s)
    for t in range(STEPS):
        run.gradients(t)
        run.step_all()
        run.after_step()
    return run.params()[0]


def _assert_close_to_eager(run: Run) -> None:
    for name, start, got in zip(run.names, run.start, run.params()):
        want = _eager(name)
        response = one_ulp_response(lambda s, name=name: _eager(name, s), start)
        size = max(w.abs().max().item() for w in want)
        moved = max((w - s).abs().max().item() for w, s in zip(want, start))
        allowed = max(rounding_tolerance(STEPS, response, size, torch.float32), SCALARS * moved)
        error = max((g - w).abs().max().item() for g, w in zip(got, want))
        assert moved > 0, name
        assert error <= allowed, (
            f"{name}: compiled is {error:.2e} from eager (allowed {allowed:.2e}: one-ulp "
            f"response {response:.1e}, movement {moved:.2e})"
        )


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch.set_num_threads(1)
    dynamo.reset()
    dynamo.utils.counters.clear()
    yield
    dynamo.reset()


def _graphs() -> int:
    return dynamo.utils.counters["stats"]["unique_graphs"]


def test_elementwise_steps_compile_once_without_graph_breaks_and_match_eager():
    run = Run(ELEMENTWISE)
    compiled = torch.compile(run.step_all)
    graphs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Profiler function ... will be ignored"
        for t in range(STEPS):
            run.gradients(t)
            compiled()
            run.after_step()
            graphs.append(_graphs())
    breaks = dict(dynamo.utils.counters["graph_break"])
    assert not breaks, f"graph breaks in the element-wise steps: {list(breaks)}"
    assert graphs[1] == graphs[-1], f"recompiled after the second step: graphs {graphs}"
    _assert_close_to_eager(run)


@pytest.mark.parametrize("name", REFRESHING)
def test_preconditioner_steps_stop_recompiling_and_match_eager(name):
    run = Run([name])
    (opt,) = run.opts
    compiled = torch.compile(opt.step)
    graphs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for t in range(STEPS):
            run.gradients(t)
            compiled()
            graphs.append(_graphs())
    # refreshes every 2 steps: by step 4 both kinds of step (and the first) have compiled
    assert graphs[3] == graphs[-1], f"{name} recompiled after its first refresh cycle: {graphs}"
    _assert_close_to_eager(run)


def test_lbfgs_step_runs_eagerly_as_torch_does():
    X, y = _data(0)
    results = []
    for compile_it in (False, True):
        model = _model()
        opt = optlib.LBFGS(model.parameters(), lr=0.5, max_iter=4, line_search_fn="strong_wolfe")

        def closure(opt=opt, model=model):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X), y)
            loss.backward()
            return loss

        step = torch.compile(opt.step) if compile_it else opt.step
        for _ in range(3):
            step(closure)
        results.append([p.detach() for p in model.parameters()])
    assert _graphs() == 0
    assert all(torch.equal(a, b) for a, b in zip(*results))
