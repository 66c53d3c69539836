"""optlib.LBFGS against torch.optim.LBFGS (float64, with and without strong Wolfe), its pieces
against the textbook formulas, state-dict round trips, and validation."""

import copy
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib.optim.lbfgs import (
    Trial,
    cubic_interpolate,
    strong_wolfe_line_search,
    two_loop_direction,
)

from ._parity import assert_close_lists, clone_params

# --- problems: parameters spread over several tensors, as LBFGS flattens them ----------------


def rosenbrock_params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = -1.2 + 0.3 * torch.randn(7, generator=g, dtype=torch.float64)
    return [x[:3].clone().requires_grad_(), x[3:].reshape(2, 2).clone().requires_grad_()]


def rosenbrock(params: list[torch.Tensor]) -> torch.Tensor:
    x = torch.cat([p.reshape(-1) for p in params])
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


_gen = torch.Generator().manual_seed(0)
_X = torch.randn(80, 6, generator=_gen, dtype=torch.float64)
_noise = 0.5 * torch.randn(80, generator=_gen, dtype=torch.float64)
_labels = (_X @ torch.linspace(-1, 1, 6, dtype=torch.float64) + _noise > 0).double()


def logistic_params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 1, generator=g, dtype=torch.float64)
    return [w.requires_grad_(), torch.zeros(1, dtype=torch.float64, requires_grad=True)]


def logistic(params: list[torch.Tensor]) -> torch.Tensor:
    w, b = params
    logits = (_X @ w).squeeze(1) + b
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, _labels)
    return nll + 1e-3 * (w**2).sum()


PROBLEMS = {"rosenbrock": (rosenbrock_params, rosenbrock), "logistic": (logistic_params, logistic)}


def run_lbfgs(opt, params, loss_fn, steps):
    """``steps`` calls of ``opt.step(closure)``; returns the losses they report."""

    def closure():
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward()
        return loss

    return [opt.step(closure).detach().item() for _ in range(steps)]


def assert_same_state(ours, ref):
    a, b = ours.state_dict()["state"][0], ref.state_dict()["state"][0]
    assert a.keys() == b.keys()
    for key in ("func_evals", "n_iter"):
        assert a[key] == b[key], key
    for key in ("old_dirs", "old_stps", "ro"):
        assert len(a[key]) == len(b[key]), key
    for key in ("d", "prev_flat_grad"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-14)


# --- parity with torch --------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    problem=st.sampled_from(sorted(PROBLEMS)),
    line_search_fn=st.sampled_from([None, "strong_wolfe"]),
    lr=st.sampled_from([30.0, 1.0, 0.5, 0.05, 1e-3]),
    tolerance_change=st.sampled_from([1e-9, 1e-6, 1e-3]),
    max_iter=st.sampled_from([1, 2, 5, 20]),
    max_eval=st.sampled_from([None, 3, 40]),
    history_size=st.sampled_from([1, 3, 100]),
    seed=st.integers(0, 2**16),
)
def test_matches_torch(
    problem, line_search_fn, lr, tolerance_change, max_iter, max_eval, history_size, seed
):
    if line_search_fn is None:
        lr = min(lr, 1.0) / (1000 if problem == "rosenbrock" else 1)  # fixed steps: stay finite
    make, loss_fn = PROBLEMS[problem]
    kw = dict(
        lr=lr,
        max_iter=max_iter,
        max_eval=max_eval,
        tolerance_change=tolerance_change,
        history_size=history_size,
        line_search_fn=line_search_fn,
    )
    p0 = make(seed)
    ours_p, ref_p = clone_params(p0), clone_params(p0)
    ours, ref = optlib.LBFGS(ours_p, **kw), torch.optim.LBFGS(ref_p, **kw)
    ours_losses = run_lbfgs(ours, ours_p, loss_fn, 4)
    ref_losses = run_lbfgs(ref, ref_p, loss_fn, 4)
    torch.testing.assert_close(ours_losses, ref_losses, rtol=1e-12, atol=1e-14)
    assert_close_lists([p.detach() for p in ours_p], [p.detach() for p in ref_p])
    assert_same_state(ours, ref)


@pytest.mark.parametrize("seed", [0, 1])
def test_line_search_keeps_its_own_tolerance_change(seed):
    """As in torch, ``tolerance_change`` stops the outer loop; the line search's zoom keeps its
    own 1e-9 (visible with a huge tolerance and a huge first step)."""
    kw = dict(line_search_fn="strong_wolfe", tolerance_change=10.0, lr=100.0)
    p0 = rosenbrock_params(seed)
    ours_p, ref_p = clone_params(p0), clone_params(p0)
    ours = run_lbfgs(optlib.LBFGS(ours_p, **kw), ours_p, rosenbrock, 3)
    ref = run_lbfgs(torch.optim.LBFGS(ref_p, **kw), ref_p, rosenbrock, 3)
    assert ours == ref
    assert_close_lists([p.detach() for p in ours_p], [p.detach() for p in ref_p], rtol=0, atol=0)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_converges_like_torch_on_logistic_regression(line_search_fn):
    p0 = logistic_params(0)
    ours_p, ref_p = clone_params(p0), clone_params(p0)
    kw = dict(max_iter=50, line_search_fn=line_search_fn, tolerance_change=1e-15)
    run_lbfgs(optlib.LBFGS(ours_p, **kw), ours_p, logistic, 5)
    run_lbfgs(torch.optim.LBFGS(ref_p, **kw), ref_p, logistic, 5)
    assert_close_lists([p.detach() for p in ours_p], [p.detach() for p in ref_p])
    logistic(ours_p).backward()
    assert max(p.grad.abs().max().item() for p in ours_p) < 1e-6  # a minimum was reached


def test_strong_wolfe_solves_rosenbrock():
    params = rosenbrock_params(1)
    opt = optlib.LBFGS(params, line_search_fn="strong_wolfe", max_iter=200, tolerance_grad=1e-12)
    run_lbfgs(opt, params, rosenbrock, 3)
    x = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(x, torch.ones_like(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex128])
def test_other_dtypes_match_torch(dtype):
    g = torch.Generator().manual_seed(3)
    p0 = [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in [(4,), (2, 3)]]

    def loss_fn(ps):
        return sum((p.abs() ** 2).sum() + 0.1 * (p.abs() ** 4).sum() for p in ps)

    ours_p, ref_p = clone_params(p0), clone_params(p0)
    kw = dict(line_search_fn="strong_wolfe", max_iter=5)
    run_lbfgs(optlib.LBFGS(ours_p, **kw), ours_p, loss_fn, 2)
    run_lbfgs(torch.optim.LBFGS(ref_p, **kw), ref_p, loss_fn, 2)
    ours_x, ref_x = [p.detach() for p in ours_p], [p.detach() for p in ref_p]
    # Both end at ~1e-6 of the minimiser 0 (measured: identical). A float32 rounding difference
    # is an ulp of the O(1) start (1.2e-7) carried through 10 line-search iterations that
    # contract it: atol 1e-7 is that ulp; rtol 1e-6 is 8 float32 ulps
    assert_close_lists(ours_x, ref_x, rtol=1e-6, atol=1e-7)


# --- state dicts --------------------------------------------------------------------------------


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize(
    "first, second", [("torch", "optlib"), ("optlib", "torch"), ("optlib", "optlib")]
)
def test_state_dict_resume_is_identical(line_search_fn, first, second):
    """2 steps with one implementation, state_dict, 2 more with another == 4 uninterrupted."""
    classes = {"torch": torch.optim.LBFGS, "optlib": optlib.LBFGS}
    kw = dict(lr=0.5, max_iter=3, history_size=4, line_search_fn=line_search_fn)
    p0 = logistic_params(7)
    whole_p = clone_params(p0)
    whole_losses = run_lbfgs(optlib.LBFGS(whole_p, **kw), whole_p, logistic, 4)

    params = clone_params(p0)
    a = classes[first](params, **kw)
    losses = run_lbfgs(a, params, logistic, 2)
    b = classes[second](params, **kw)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    losses += run_lbfgs(b, params, logistic, 2)
    assert losses == whole_losses
    assert_close_lists([p.detach() for p in params], [p.detach() for p in whole_p], rtol=0, atol=0)


# --- the pieces against the textbook ------------------------------------------------------------


def test_two_loop_equals_explicit_bfgs_inverse_update():
    """-H g with H from the BFGS inverse update H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T
    applied to H0 = gamma I over the stored pairs (Nocedal & Wright, eq. 7.19)."""
    g = torch.Generator().manual_seed(0)
    n, m = 6, 4
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = A @ A.T + n * torch.eye(n, dtype=torch.float64)  # SPD Hessian, so y^T s > 0
    s_list = [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(m)]
    y_list = [A @ s for s in s_list]
    rho_list = [1.0 / y.dot(s) for s, y in zip(s_list, y_list)]
    gamma = s_list[-1].dot(y_list[-1]) / y_list[-1].dot(y_list[-1])
    grad = torch.randn(n, generator=g, dtype=torch.float64)

    H = gamma * torch.eye(n, dtype=torch.float64)
    eye = torch.eye(n, dtype=torch.float64)
    for s, y, rho in zip(s_list, y_list, rho_list):
        H = (eye - rho * torch.outer(s, y)) @ H @ (eye - rho * torch.outer(y, s))
        H = H + rho * torch.outer(s, s)
    d = two_loop_direction(grad, s_list, y_list, rho_list, gamma)
    torch.testing.assert_close(d, -H @ grad, rtol=1e-12, atol=1e-13)
    # secant equation: the newest pair is reproduced exactly
    torch.testing.assert_close(H @ y_list[-1], s_list[-1], rtol=1e-12, atol=1e-13)


def test_two_loop_without_history_is_scaled_gradient():
    grad = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(two_loop_direction(grad, [], [], [], 0.5), -0.5 * grad)


def test_cubic_interpolate_finds_the_minimiser_of_a_cubic():
    def c(x):  # local minimum at x = 2 (c'(x) = 3(x - 2)(x + 1))
        return x**3 - 1.5 * x**2 - 6 * x

    def dc(x):
        return 3 * x**2 - 3 * x - 6

    for x1, x2 in [(0.0, 3.0), (3.0, 0.5), (1.0, 2.5)]:
        t = [torch.tensor(v, dtype=torch.float64) for v in (x1, c(x1), dc(x1), x2, c(x2), dc(x2))]
        assert abs(float(cubic_interpolate(*t)) - 2.0) < 1e-12
    t = [torch.tensor(v, dtype=torch.float64) for v in (0.0, c(0.0), dc(0.0), 3.0, c(3.0), dc(3.0))]
    assert float(cubic_interpolate(*t, bounds=(0.0, 1.5))) == 1.5  # clamped to the bounds


@pytest.mark.parametrize("t0", [1e-3, 1.0, 30.0])
def test_strong_wolfe_conditions_hold_at_the_accepted_step(t0):
    """phi(t) = f(x + t d) for f(z) = z^4/4 - z along d = 1 from x = -2."""
    x, d = torch.tensor([-2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)

    def phi(t):
        z = x + t * d
        g = z**3
        return Trial(t, float((z**4 / 4).sum()), g, g.dot(d))

    start = phi(0.0)
    best, n_evals = strong_wolfe_line_search(phi, start, t0, d)
    c1, c2 = 1e-4, 0.9
    assert best.f <= start.f + c1 * best.t * float(start.gtd)
    assert abs(float(best.gtd)) <= c2 * abs(float(start.gtd))
    assert 1 <= n_evals <= 25


def wiggly(z: torch.Tensor, a: float, b: float, w: float) -> tuple[float, torch.Tensor]:
    """A non-convex test function with many local minima, and its gradient."""
    f = (a * z**2 + b * torch.sin(w * z) + 0.01 * z**4).sum()
    g = 2 * a * z + b * w * torch.cos(w * z) + 0.04 * z**3
    return float(f), g


def test_line_search_matches_torch():
    """The strong-Wolfe search against torch's own on 200 seeded wiggly functions, with step
    guesses from far too short to far too long and strict to loose curvature conditions, so
    extrapolation, zoom and zoom's safeguards all run (a random sweep; hypothesis's
    boundary-seeking draws reach the safeguards less often)."""
    from torch.optim.lbfgs import _strong_wolfe

    rng = random.Random(0)
    for seed in range(200):
        a, b, w = rng.uniform(0.01, 1.0), rng.uniform(0.0, 3.0), rng.uniform(0.5, 20.0)
        t0 = rng.choice([1e-4, 1e-2, 0.3, 1.0, 5.0, 100.0])
        kw = dict(
            c2=rng.choice([0.9, 0.1, 0.01]),
            tolerance_change=rng.choice([1e-9, 1e-4]),
            max_ls=rng.choice([1, 3, 25]),
        )
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(3, generator=gen, dtype=torch.float64)
        f0, g0 = wiggly(x, a, b, w)
        d = -g0 / g0.abs().max() * torch.rand(3, generator=gen, dtype=torch.float64)
        gtd = g0.dot(d)

        def phi(t, x=x, d=d, a=a, b=b, w=w):
            f, g = wiggly(x + t * d, a, b, w)
            return Trial(t, f, g, g.dot(d))

        def obj_func(x_, t, d_, a=a, b=b, w=w):
            return wiggly(x_ + t * d_, a, b, w)

        best, n = strong_wolfe_line_search(phi, Trial(0, f0, g0, gtd), t0, d, **kw)
        f_ref, g_ref, t_ref, n_ref = _strong_wolfe(obj_func, x, t0, d, f0, g0, gtd, **kw)
        assert (best.f, float(best.t), n) == (f_ref, float(t_ref), n_ref), (seed, kw)
        torch.testing.assert_close(best.g, g_ref, rtol=0, atol=0)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-1.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(max_iter=0), "max_iter"),
        (dict(max_iter=2.5), "max_iter"),
        (dict(max_eval=0), "max_eval"),
        (dict(tolerance_grad=-1e-7), "tolerance_grad"),
        (dict(tolerance_change=-1.0), "tolerance_change"),
        (dict(history_size=0), "history_size"),
        (dict(line_search_fn="armijo"), "line_search_fn"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=rf"Invalid {name}\b"):
        optlib.LBFGS([torch.zeros(2, requires_grad=True)], **kwargs)


def test_one_param_group_only():
    groups = [{"params": [torch.zeros(2, requires_grad=True)]}, {"params": [torch.zeros(1)]}]
    with pytest.raises(ValueError, match="parameter groups"):
        optlib.LBFGS(groups)
