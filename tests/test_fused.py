"""The fused path (``fused=True``, optlib.optim._fused): one compiled kernel per update.

Every kernel in ``optlib.optim._fused_updates`` mirrors its optimizer's single-tensor update; the
tests hold each pair together on every configuration the parity tests cover (each static flag
combination, and the switches that become scalars: maximize, decoupled decay, bias correction,
edge betas, eps 0, a second param group), in float64 to rounding, and in float32/bfloat16 to
their precision. Then: uneven step counts (segments), checkpoints in both directions (fused,
foreach, single-tensor, torch.optim), schedulers that change lr and betas without recompiling,
the flat layout itself, complex parameters, ``foreach=None`` as torch picks it, and the fallback
when no C++ compiler is available (simulated in a subprocess).

Compilation is the cost: each (update, flags, dtype) compiles once per process (about 3 s on two
cores; inductor's on-disk cache makes later runs fast), so the configurations are chosen to
cover every flag combination once rather than a product of everything.
"""

import copy
import functools
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch._dynamo.utils import counters

import optlib
from optlib.optim import _fused

from . import _elementwise as E
from ._parity import assert_close_lists, clone_params, make_params, quartic_loss, run

SCALAR_SHAPES = [(), (7,), (6, 1), (1, 5)]  # 0-d and one-element tensors: segments of size 1

CONFIGS = [
    # SGD: (l2, momentum, nesterov) in every combination torch allows
    (optlib.SGD, dict(lr=0.05)),
    (optlib.SGD, dict(lr=0.05, weight_decay=0.01, maximize=True)),
    (optlib.SGD, dict(lr=0.02, momentum=0.9, dampening=0.1)),
    (optlib.SGD, dict(lr=0.02, momentum=0.5, weight_decay=0.01)),
    (optlib.SGD, dict(lr=0.02, momentum=0.9, nesterov=True, maximize=True)),
    (optlib.SGD, dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.01)),
    # Adam / AdamW: (l2, amsgrad); decoupled decay, bias correction, maximize as scalars
    (optlib.Adam, dict(lr=0.01)),
    (optlib.Adam, dict(lr=0.01, weight_decay=0.1, maximize=True, betas=(0.0, 0.9))),
    (optlib.Adam, dict(lr=0.01, amsgrad=True, eps=0.0)),
    (optlib.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1, bias_correction=False)),
    (optlib.Adam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    (optlib.AdamW, dict(lr=0.01, weight_decay=0.3, betas=(0.5, 0.0))),
    (optlib.AdamW, dict(lr=0.01, amsgrad=True, maximize=True, bias_correction=False)),
    # Adagrad: (l2,)
    (optlib.Adagrad, dict(lr=0.1)),
    (
        optlib.Adagrad,
        dict(lr=0.1, weight_decay=0.1, lr_decay=0.01, initial_accumulator_value=0.5, maximize=True),
    ),
    # RMSprop: (l2, centered, momentum), all eight
    (optlib.RMSprop, dict(lr=0.01)),
    (optlib.RMSprop, dict(lr=0.01, weight_decay=0.1, alpha=0.9)),
    (optlib.RMSprop, dict(lr=0.01, centered=True)),
    (optlib.RMSprop, dict(lr=0.01, momentum=0.5, maximize=True)),
    (optlib.RMSprop, dict(lr=0.01, centered=True, momentum=0.5, eps=1e-3)),
    (optlib.RMSprop, dict(lr=0.01, centered=True, weight_decay=0.1)),
    (optlib.RMSprop, dict(lr=0.01, momentum=0.9, weight_decay=0.1)),
    (optlib.RMSprop, dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.1, maximize=True)),
    # NAdam, RAdam: (l2,); decoupled decay as a scalar
    (optlib.NAdam, dict(lr=0.01)),
    (optlib.NAdam, dict(lr=0.01, weight_decay=0.1)),
    (
        optlib.NAdam,
        dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, momentum_decay=0.01),
    ),
    (optlib.RAdam, dict(lr=0.01)),
    (optlib.RAdam, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    (optlib.RAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, betas=(0.9, 0.9))),
    # Lion: no flags
    (optlib.Lion, dict(lr=1e-3)),
    (optlib.Lion, dict(lr=1e-3, weight_decay=0.5, betas=(0.95, 0.98), maximize=True)),
]


def _id(config):
    cls, kw = config
    return cls.__name__ + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


def fused(cls, **extra):
    """``cls`` with ``fused=True`` (and ``extra``), named for assertion messages."""
    factory = functools.partial(cls, fused=True, **extra)
    factory.__name__ = f"{cls.__name__}(fused=True)"
    return factory


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_fused_matches_the_single_tensor_update(config):
    cls, kw = config
    loss_fn = E.loss_for(kw.get("maximize", False))
    for shapes in (E.SHAPES, SCALAR_SHAPES):
        p0 = make_params(shapes, seed=len(shapes))
        got = run(lambda ps: cls(ps, fused=True, **kw), clone_params(p0), 12, loss_fn)
        expected = run(lambda ps: cls(ps, foreach=False, **kw), clone_params(p0), 12, loss_fn)
        assert_close_lists(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "cls, kw, group_kw",
    [
        (optlib.Adam, dict(lr=0.01), dict(lr=0.03, weight_decay=0.2, betas=(0.8, 0.99))),
        (optlib.SGD, dict(lr=0.02, momentum=0.9), dict(lr=0.05, nesterov=True)),
        (optlib.RMSprop, dict(lr=0.01), dict(alpha=0.9, centered=True)),
    ],
)
def test_each_param_group_keeps_its_own_hyperparameters(cls, kw, group_kw):
    p0 = make_params(E.SHAPES, seed=5)
    got = run(lambda ps: cls(E.two_groups(ps, group_kw), fused=True, **kw), clone_params(p0), 10)
    expected = run(lambda ps: cls(E.two_groups(ps, group_kw), **kw), clone_params(p0), 10)
    assert_close_lists(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "cls, kw",
    [
        (optlib.Adam, dict(lr=0.01, amsgrad=True)),
        (optlib.NAdam, dict(lr=0.01)),
        (optlib.SGD, dict(lr=0.02, momentum=0.9, nesterov=True)),
        (optlib.RAdam, dict(lr=0.01)),
    ],
)
def test_uneven_step_counts_split_the_kernel_into_segments(cls, kw):
    """Parameters without a gradient are skipped, so step counts (and NAdam's products, SGD's
    first steps) differ between parameters: the kernel runs once per run of equal ones."""
    p0 = make_params(E.SHAPES, seed=7)
    expected, ref_opt = E.run_uneven(lambda ps: cls(ps, **kw), clone_params(p0))
    got, opt = E.run_uneven(lambda ps: cls(ps, fused=True, **kw), clone_params(p0))
    assert_close_lists(got, expected, rtol=1e-12, atol=1e-14)
    if "step" in ref_opt.state_dict()["state"][0]:
        counts = [int(s["step"]) for s in opt.state_dict()["state"].values()]
        assert len(set(counts)) > 1
        assert counts == [int(s["step"]) for s in ref_opt.state_dict()["state"].values()]


@pytest.mark.parametrize(
    "cls, kw, dtype, rtol, atol",
    [
        (optlib.AdamW, dict(lr=0.01), torch.float32, 1e-5, 1e-6),
        (optlib.SGD, dict(lr=0.02, momentum=0.9), torch.float32, 1e-5, 1e-6),
        (optlib.AdamW, dict(lr=0.01), torch.bfloat16, 2e-2, 2e-2),
    ],
)
def test_low_precision_keeps_its_dtype_and_agrees_to_its_precision(cls, kw, dtype, rtol, atol):
    p0 = make_params(E.SHAPES, dtype=dtype, seed=2)
    got = run(lambda ps: cls(ps, fused=True, **kw), clone_params(p0), 10)
    expected = run(lambda ps: cls(ps, **kw), clone_params(p0), 10)
    assert all(g.dtype == dtype for g in got)
    assert_close_lists(got, expected, rtol=rtol, atol=atol)


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, kw, with_torch",
    [
        (optlib.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.1), True),
        (optlib.SGD, dict(lr=0.02, momentum=0.9), True),
        (optlib.Adagrad, dict(lr=0.1, weight_decay=0.1), True),
        (optlib.RMSprop, dict(lr=0.01, centered=True, momentum=0.5), True),
        # torch's loader casts NAdam's mu_product to float64 and goes on in float64 (optlib keeps
        # torch's float32), so a run continued in torch differs at 1e-10: optlib's paths only
        (optlib.NAdam, dict(lr=0.01), False),
    ],
)
def test_checkpoints_move_between_fused_foreach_single_tensor_and_torch(cls, kw, with_torch):
    """A fused checkpoint resumes on the foreach and single-tensor paths and in torch.optim, and
    theirs resume on the fused path: the same state keys, dtypes and shapes, and the same run."""
    torch_cls = getattr(torch.optim, cls.__name__)
    others = [functools.partial(cls, foreach=True), functools.partial(cls, foreach=False)]
    if with_torch:
        others.append(functools.partial(torch_cls, foreach=False))
    for other in others:
        other.__name__ = f"{other.func.__name__}(foreach={other.keywords['foreach']})"
        E.assert_state_dict_interop(fused(cls), other, kw)
    E.assert_same_fresh_state(fused(cls), torch_cls, kw)


@pytest.mark.parametrize(
    "cls, kw",
    [(optlib.AdamW, dict(lr=0.01, amsgrad=True)), (optlib.RMSprop, dict(lr=0.01, centered=True))],
)
def test_resume_is_bit_identical(cls, kw):
    E.assert_resume_bit_identical(cls, dict(kw, fused=True))


def test_loading_a_checkpoint_keeps_the_fused_path():
    """torch.optim would take ``foreach``/``fused`` from the checkpoint; optlib keeps its own."""
    params = make_params(E.SHAPES)
    single = optlib.Adam(params, lr=0.01)
    E.take_steps(single, params, 2)
    opt = optlib.Adam(clone_params(params), lr=0.01, fused=True)
    opt.load_state_dict(single.state_dict())
    assert opt.param_groups[0]["fused"] is True
    assert opt.param_groups[0]["lr"] == 0.01


# --- schedulers, the layout, the fallback --------------------------------------------------------


def test_schedulers_change_lr_and_betas_without_recompiling():
    """OneCycleLR moves the learning rate and beta1 every step; the scalars are tensors, so the
    compiled kernel is reused (no new graph after the first step)."""
    p0 = make_params(E.SHAPES, seed=9)

    def schedule(opt):
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=20)

    expected = run(
        lambda ps: optlib.Adam(ps, lr=0.01), clone_params(p0), 20, scheduler_factory=schedule
    )
    params = clone_params(p0)
    opt = optlib.Adam(params, lr=0.01, fused=True)
    sched = schedule(opt)
    E.take_steps(opt, params, 1)
    sched.step()
    graphs = counters["stats"]["unique_graphs"]
    for _ in range(19):
        E.take_steps(opt, params, 1)
        sched.step()
    assert counters["stats"]["unique_graphs"] == graphs
    assert opt.param_groups[0]["betas"][0] != 0.9  # the scheduler did move beta1
    assert_close_lists(params, expected, rtol=1e-12, atol=1e-14)


def test_parameters_and_state_live_in_flat_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    params = list(model.parameters())
    opt = optlib.AdamW(params, lr=0.01, fused=True)
    x = torch.randn(8, 4)
    for _ in range(2):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    flat = params[0].untyped_storage().data_ptr()
    assert all(p.untyped_storage().data_ptr() == flat for p in params)
    assert all(p.is_leaf and p.requires_grad for p in params)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        storages = {opt.state[p][key].untyped_storage().data_ptr() for p in params}
        assert len(storages) == 1, key
    assert all(opt.state[p]["exp_avg"].shape == p.shape for p in params)
    # the module still trains: moving a parameter out of the buffer is noticed and rebuilt
    before = [p.detach().clone() for p in params]
    params[0].data = params[0].data.clone()
    opt.zero_grad()
    model(x).square().sum().backward()
    opt.step()
    assert params[0].untyped_storage().data_ptr() == params[1].untyped_storage().data_ptr()
    assert all(not torch.equal(a, p) for a, p in zip(before, params))


def test_persistent_gradients_are_gathered_once():
    """After the first step ``p.grad`` is a view of the flat gradient buffer, so gradients that
    persist (accumulation with ``zero_grad(set_to_none=False)``) are never copied again."""
    params = make_params(E.SHAPES)
    ref_params = clone_params(params)
    opt = optlib.SGD(params, lr=0.01, momentum=0.9, fused=True)
    ref = optlib.SGD(ref_params, lr=0.01, momentum=0.9)
    E.take_steps(opt, params, 1)
    E.take_steps(ref, ref_params, 1)
    grads = [p.grad for p in params]
    assert len({g.untyped_storage().data_ptr() for g in grads}) == 1
    for o, ps in ((opt, params), (ref, ref_params)):
        o.zero_grad(set_to_none=False)
        quartic_loss(ps).backward()
        o.step()
    assert all(p.grad is g for p, g in zip(params, grads))
    assert_close_lists(params, ref_params, rtol=1e-12, atol=1e-14)


def test_complex_parameters_take_the_foreach_path():
    """As pairs of reals, as torch.optim's AdamW treats them (torch's own fused path refuses
    complex parameters)."""
    g = torch.Generator().manual_seed(4)
    p0 = [torch.randn(s, dtype=torch.complex128, generator=g) for s in [(3,), (2, 4)]]
    p0 = [p.requires_grad_() for p in p0]
    kw = dict(lr=0.01, weight_decay=0.1)
    got = run(lambda ps: optlib.AdamW(ps, fused=True, **kw), clone_params(p0), 8, E.complex_loss)
    expected = run(lambda ps: torch.optim.AdamW(ps, **kw), clone_params(p0), 8, E.complex_loss)
    assert_close_lists(got, expected)


def test_fused_and_foreach_together_are_refused_as_in_torch():
    for cls in (optlib.SGD, optlib.Adam, optlib.AdamW, optlib.Adagrad, optlib.RMSprop):
        with pytest.raises(RuntimeError, match="cannot be `True` together"):
            cls([torch.zeros(2)], fused=True, foreach=True)
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        torch.optim.Adam([torch.zeros(2)], fused=True, foreach=True)


def test_foreach_none_picks_as_torch(monkeypatch):
    """On the CPU torch's default is the per-tensor loop; where foreach kernels exist (CUDA; here
    the CPU is declared one) it is foreach, except with a tensor learning rate."""
    from torch.optim.optimizer import _default_to_fused_or_foreach
    from torch.utils import _foreach_utils

    params = make_params(E.SHAPES)
    group = dict(foreach=None, lr=0.01)
    assert _fused.use_foreach(group, params) is False
    assert _default_to_fused_or_foreach(params, False)[1] is False
    monkeypatch.setattr(_foreach_utils, "_get_foreach_kernels_supported_devices", lambda: ["cpu"])
    import torch.optim.optimizer as torch_optimizer

    monkeypatch.setattr(torch_optimizer, "_get_foreach_kernels_supported_devices", lambda: ["cpu"])
    assert _default_to_fused_or_foreach(params, False)[1] is True
    assert _fused.use_foreach(group, params) is True
    assert _fused.use_foreach(dict(group, lr=torch.tensor(0.01)), params) is False
    assert _fused.use_foreach(dict(group, foreach=False), params) is False
    assert _fused.use_foreach(dict(group, foreach=None, fused=True), params) is True


FALLBACK = """
import warnings
import torch
import optlib
from tests._parity import clone_params, make_params, run
torch.set_num_threads(1)
p0 = make_params([(3,), (4, 5)])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    got = run(lambda ps: optlib.AdamW(ps, lr=0.01, fused=True), clone_params(p0), 5)
    also = run(lambda ps: optlib.SGD(ps, lr=0.01, momentum=0.9, fused=True), clone_params(p0), 3)
expected = run(lambda ps: optlib.AdamW(ps, lr=0.01, foreach=True), clone_params(p0), 5)
assert all(torch.equal(a, b) for a, b in zip(got, expected)), "not the foreach result"
messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
assert len(messages) == 1, messages
assert "foreach" in messages[0] and "compiler" in messages[0], messages[0]
print("fell back once")
"""


def test_without_a_compiler_it_falls_back_to_foreach_with_one_warning(tmp_path):
    """A machine without a C++ compiler, simulated: ``CXX`` names a missing program and
    inductor's cache is empty, so nothing can be compiled or loaded."""
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"))
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FALLBACK)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fell back once" in done.stdout


def test_a_state_dict_copy_is_independent_of_the_buffers():
    params = make_params(E.SHAPES)
    opt = optlib.Adam(params, lr=0.01, fused=True)
    E.take_steps(opt, params, 2)
    saved = copy.deepcopy(opt.state_dict())
    E.take_steps(opt, params, 1)
    assert not torch.equal(saved["state"][0]["exp_avg"], opt.state[params[0]]["exp_avg"])
    assert int(saved["state"][0]["step"]) == 2 and int(opt.state[params[0]]["step"]) == 3


def test_muon_with_aux_adamw_runs_its_adamw_groups_fused():
    """MuonWithAuxAdamW's AdamW half (biases, gains, the head) on the fused path: the same run,
    and the Muon half untouched by it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    model = model.double()
    x = torch.randn(10, 6, dtype=torch.float64)
    runs = []
    for fused_flag in (False, True):
        m = copy.deepcopy(model)
        groups = optlib.optim.muon.muon_param_groups(m, ns_dtype=None, weight_decay=0.01)
        opt = optlib.MuonWithAuxAdamW(groups, fused=fused_flag)
        assert [g.get("fused", False) for g in opt.param_groups] == [False, fused_flag]
        for _ in range(6):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
        runs.append([p.detach().clone() for p in m.parameters()])
    assert_close_lists(runs[1], runs[0], rtol=1e-12, atol=1e-14)


# --- the direct entry to the compiled graph ------------------------------------------------------


def _direct_key(opt, update):
    group = opt.param_groups[0]
    return _fused._kernel_key(update, update.flags(group), group["params"][0])


def test_the_step_calls_the_compiled_graph_directly(monkeypatch):
    """After the first step the kernel runs without torch.compile's front end: the direct entry
    exists for this kernel, and later steps never call the torch.compile'd function (here made
    to fail) yet agree with the single-tensor path."""
    from optlib.optim._fused_updates import ADAM_UPDATE

    p0 = make_params(E.SHAPES, dtype=torch.float32, seed=11)
    params = clone_params(p0)
    opt = optlib.AdamW(params, lr=0.01, fused=True)
    E.take_steps(opt, params, 1)
    direct = _fused._direct.get(_direct_key(opt, ADAM_UPDATE))
    assert direct is not None, "torch.compile's first call could not be mapped (another torch?)"
    assert sorted(j for j in direct.layout if j >= 0) == list(range(2 + 2 + 1))

    def not_called(*args, **kwargs):
        raise AssertionError("the step went through torch.compile's front end")

    for key in list(_fused._kernels):
        monkeypatch.setitem(_fused._kernels, key, not_called)
    E.take_steps(opt, params, 3)
    expected = clone_params(p0)
    E.take_steps(optlib.AdamW(expected, lr=0.01), expected, 4)
    assert_close_lists(params, expected, rtol=1e-5, atol=1e-6)


def test_first_call_layouts_that_cannot_be_mapped_give_no_direct_entry():
    s, a, b = torch.zeros(3), torch.zeros(8), torch.zeros(8)
    graph = object()
    ok = _fused._Direct.from_first_call(graph, (b, 8, s, a), [s, a, b], 8)
    assert ok is not None and ok.layout == (2, -1, 0, 1)
    assert _fused._Direct.from_first_call(graph, (b, 8, s), [s, a, b], 8) is None  # a missing
    assert _fused._Direct.from_first_call(graph, (b, 7, s, a), [s, a, b], 8) is None  # not n
    assert _fused._Direct.from_first_call(graph, (b, a.clone(), s, a), [s, a, b], 8) is None
    assert _fused._Direct.from_first_call(graph, (b, 8.0, s, a), [s, a, b], 8) is None


def test_without_a_direct_entry_the_step_calls_the_compiled_function(monkeypatch):
    """Where the first call cannot be mapped the fused path runs through torch.compile as
    usual: the same results."""
    for name in ("_kernels", "_direct"):
        monkeypatch.setattr(_fused, name, {})
    monkeypatch.setattr(_fused, "_ready_keys", set())
    monkeypatch.setattr(_fused._Direct, "from_first_call", classmethod(lambda *a: None))
    p0 = make_params(E.SHAPES, seed=12)
    kw = dict(lr=0.02, momentum=0.9)
    got = run(lambda ps: optlib.SGD(ps, fused=True, **kw), clone_params(p0), 6)
    expected = run(lambda ps: optlib.SGD(ps, foreach=False, **kw), clone_params(p0), 6)
    assert _fused._direct == {}
    assert_close_lists(got, expected, rtol=1e-12, atol=1e-14)


def test_sgd_follows_a_learning_rate_that_changes_now_and_then():
    """SGD's scalars do not depend on the step, so their tensor is reused while they stay the
    same; a scheduler that changes the learning rate every third step must still be followed."""
    p0 = make_params(E.SHAPES, seed=13)

    def schedule(opt):
        return torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    kw = dict(lr=0.05, momentum=0.9)
    got = run(lambda ps: optlib.SGD(ps, fused=True, **kw), clone_params(p0), 10,
              scheduler_factory=schedule)  # fmt: skip
    expected = run(lambda ps: optlib.SGD(ps, foreach=False, **kw), clone_params(p0), 10,
                   scheduler_factory=schedule)  # fmt: skip
    assert_close_lists(got, expected, rtol=1e-12, atol=1e-14)


CAPABILITY_RUN = """
import torch, optlib
torch.manual_seed(0)
ps = [torch.randn(1000, requires_grad=True) for _ in range(3)]
for p in ps:
    p.grad = torch.randn(1000)
qs = [p.detach().clone().requires_grad_() for p in ps]
for p, q in zip(ps, qs):
    q.grad = p.grad.clone()
fused, single = optlib.AdamW(ps, fused=True), optlib.AdamW(qs)
for _ in range(3):
    fused.step()
    single.step()
gap = max(float((p - q).abs().max()) for p, q in zip(ps, qs))
assert gap < 1e-6, gap
print("agrees")
"""


def test_a_kernel_cached_under_one_cpu_capability_is_not_reused_under_another(tmp_path):
    """Two processes share inductor's on-disk cache, the second with AVX2 kernels forced (as
    ``make test``'s perturbed run does): each fused step agrees with the single-tensor one. On
    torch 2.13 the second reused the first's cached kernel and got half the elements wrong."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    base.pop("ATEN_CPU_CAPABILITY", None)
    for extra in ({}, {"ATEN_CPU_CAPABILITY": "avx2"}):
        done = subprocess.run(
            [sys.executable, "-c", CAPABILITY_RUN],
            cwd=root,
            env={**base, **extra},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0 and "agrees" in done.stdout, (extra, done.stderr[-2000:])
