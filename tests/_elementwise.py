"""Checks shared by the element-wise torch.optim family (Adagrad, RMSprop, Adam/AdamW, NAdam,
RAdam): parity with torch, foreach vs single tensor, uneven step counts, state-dict interop,
bit-identical resume, other dtypes and complex parameters."""

from __future__ import annotations

import copy
import inspect
import io

import torch

from ._parity import assert_close_lists, clone_params, make_params, quartic_loss, run

SHAPES = [(3,), (4, 5), (2, 3, 2)]
SHAPE_SETS = [[(5,), (2,)], [(4, 6), (3,)], SHAPES, [(), (7,), (6, 1), (1, 5)]]


def loss_for(maximize: bool):
    """``maximize=True`` ascends, so give it a loss with a maximum."""
    return (lambda ps: -quartic_loss(ps)) if maximize else quartic_loss


def assert_matches_torch(
    ours, ref, kw, *, shapes=SHAPES, seed=0, steps=15, foreach=False, group_kw=None
):
    """optlib ``ours(params, foreach=foreach, **kw)`` vs torch's for-loop ``ref(params, **kw)``;
    with ``group_kw`` the first parameter sits in a second param group with those settings."""
    p0 = make_params(shapes, seed=seed)
    loss_fn = loss_for(kw.get("maximize", False))

    def groups(ps):
        return ps if group_kw is None else two_groups(ps, group_kw)

    got = run(lambda ps: ours(groups(ps), foreach=foreach, **kw), clone_params(p0), steps, loss_fn)
    expected = run(
        lambda ps: ref(groups(ps), foreach=False, **kw), clone_params(p0), steps, loss_fn
    )
    assert_close_lists(got, expected)


def assert_foreach_agrees(cls, kw, *, shapes=SHAPES, seed=0, steps=15):
    p0 = make_params(shapes, seed=seed)
    loss_fn = loss_for(kw.get("maximize", False))
    a = run(lambda ps: cls(ps, foreach=True, **kw), clone_params(p0), steps, loss_fn)
    b = run(lambda ps: cls(ps, foreach=False, **kw), clone_params(p0), steps, loss_fn)
    # the same arithmetic through torch._foreach kernels: identical or an ulp apart per step,
    # 15 steps: rtol 1e-14 (45 ulps), and 45 ulps of the scale for entries near 0
    assert_close_lists(a, b, rtol=1e-14)


def two_groups(params, group_kw):
    """The first parameter in a group of its own with ``group_kw``, the rest with the defaults."""
    return [{"params": params[:1], **group_kw}, {"params": params[1:]}]


def run_uneven(factory, params, steps=14):
    """Steps in which some parameters get no gradient, so per-tensor step counts differ."""
    opt = factory(params)
    for k in range(steps):
        opt.zero_grad()
        used = [p for i, p in enumerate(params) if (k + i) % 3 != 0]
        quartic_loss(used).backward()
        opt.step()
    return [p.detach().clone() for p in params], opt


def assert_uneven_steps_match(ours, ref, kw):
    p0 = make_params(SHAPES, seed=7)
    expected, ref_opt = run_uneven(lambda ps: ref(ps, foreach=False, **kw), clone_params(p0))
    counts = {int(s["step"]) for s in ref_opt.state.values()}
    assert len(counts) > 1, "the scenario must give the parameters different step counts"
    for foreach in (False, True):
        got, _ = run_uneven(lambda ps, f=foreach: ours(ps, foreach=f, **kw), clone_params(p0))
        assert_close_lists(got, expected)


def take_steps(opt, params, n, loss_fn=quartic_loss):
    for _ in range(n):
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()


def assert_state_dict_interop(ours, ref, kw, *, before=4, after=8):
    """A state dict saved by torch loads into optlib and vice versa; both runs then continue
    identically, and the two classes keep the same state keys, shapes and dtypes."""
    for first, second in [(ref, ours), (ours, ref)]:
        pa = make_params(SHAPES, seed=11)
        opt_a = first(pa, **kw)
        take_steps(opt_a, pa, before)
        pb = clone_params(pa)
        opt_b = second(pb, **kw)
        opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
        take_steps(opt_a, pa, after)
        take_steps(opt_b, pb, after)
        assert_close_lists(pb, pa)
        sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            assert sa[i].keys() == sb[i].keys(), (first.__name__, second.__name__)
            for key in sa[i]:
                assert sb[i][key].dtype == sa[i][key].dtype, key
                assert sb[i][key].shape == sa[i][key].shape, key
                # the state after the same 12 steps: as for the parameters (_parity)
                tol = 1e-12 * float(sa[i][key].abs().max())
                torch.testing.assert_close(sb[i][key], sa[i][key], rtol=1e-12, atol=tol)


def assert_same_fresh_state(ours, ref, kw):
    """One step from scratch creates exactly torch's state keys, dtypes and param-group keys."""
    p1, p2 = make_params(SHAPES), make_params(SHAPES)
    o, r = ours(p1, **kw), ref(p2, **kw)
    take_steps(o, p1, 1)
    take_steps(r, p2, 1)
    so, sr = o.state_dict(), r.state_dict()
    for i in sr["state"]:
        assert so["state"][i].keys() == sr["state"][i].keys()
        for key, value in sr["state"][i].items():
            assert so["state"][i][key].dtype == value.dtype, key
            assert so["state"][i][key].shape == value.shape, key
    assert set(sr["param_groups"][0]) <= set(so["param_groups"][0])


def assert_resume_bit_identical(cls, kw, *, before=5, after=7):
    """Interrupt, save (torch.save), restore into a fresh optimizer, resume: bit-identical."""
    p0 = make_params(SHAPES, seed=3)
    straight = clone_params(p0)
    take_steps(cls(straight, **kw), straight, before + after)
    resumed = clone_params(p0)
    opt = cls(resumed, **kw)
    take_steps(opt, resumed, before)
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in resumed], "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)
    restored = [p.clone().requires_grad_() for p in saved["params"]]
    opt2 = cls(restored, **kw)
    opt2.load_state_dict(saved["opt"])
    take_steps(opt2, restored, after)
    for a, b in zip(restored, straight):
        assert torch.equal(a, b)


def assert_low_precision_close(ours, ref, kw, dtype, *, rtol, atol, steps=10):
    """float32/bfloat16 parameters: same dtype out, and close to torch (rounding differs)."""
    p0 = make_params(SHAPES, dtype=dtype, seed=2)
    for foreach in (False, True):
        got = run(lambda ps, f=foreach: ours(ps, foreach=f, **kw), clone_params(p0), steps)
        expected = run(lambda ps, f=foreach: ref(ps, foreach=f, **kw), clone_params(p0), steps)
        assert all(g.dtype == dtype for g in got)
        assert_close_lists(got, expected, rtol=rtol, atol=atol)


def complex_loss(params):
    return quartic_loss([torch.view_as_real(p) for p in params])


def assert_complex_matches(ours, ref, kw):
    """Complex parameters are updated as (real, imaginary) pairs, as torch does."""
    g = torch.Generator().manual_seed(4)
    p0 = [torch.randn(s, dtype=torch.complex128, generator=g) for s in [(3,), (2, 4)]]
    p0 = [p.requires_grad_() for p in p0]
    for foreach in (False, True):
        got = run(
            lambda ps, f=foreach: ours(ps, foreach=f, **kw), clone_params(p0), 12, complex_loss
        )
        expected = run(lambda ps: ref(ps, foreach=False, **kw), clone_params(p0), 12, complex_loss)
        assert_close_lists(got, expected)


def assert_signature_matches(ours, ref, *, extra=()):
    """Same argument names, order, kinds (positional / keyword-only) and defaults as torch;
    ``extra`` names optlib's additions, which must come last and be keyword-only."""
    got = list(inspect.signature(ours.__init__).parameters.values())
    expected = list(inspect.signature(ref.__init__).parameters.values())
    added = got[len(got) - len(extra) :] if extra else []
    assert [p.name for p in added] == list(extra)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in added)
    got = got[: len(got) - len(extra)]
    assert [(p.name, p.kind, p.default) for p in got] == [
        (p.name, p.kind, p.default) for p in expected
    ]
