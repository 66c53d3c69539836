"""optlib.experiments.adaptive: chapter 4's baselines (AdaGrad-Norm, the 1/sqrt(t) schedule) and
the effective-learning-rate reading."""

from __future__ import annotations

import math

import pytest
import torch

import optlib
from optlib.experiments.adaptive import AdagradNorm, effective_lr_profile, inverse_sqrt_schedule


def _grads(seed: int, steps: int, shapes):
    g = torch.Generator().manual_seed(seed)
    return [
        [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for _ in range(steps)
    ]


def test_adagrad_norm_is_one_scalar_accumulator_per_group():
    """b_t^2 = tau + sum_s ||g_s||^2 over all tensors of the group; theta -= lr g / (b_t + eps)."""
    shapes = [(3,), (2, 2)]
    params = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    opt = AdagradNorm(params, lr=0.3, initial_accumulator_value=0.5, eps=1e-3)
    ref = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    b2 = 0.5
    for gs in _grads(0, 12, shapes):
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        b2 += sum(float((g * g).sum()) for g in gs)
        ref = [r - 0.3 * g / (math.sqrt(b2) + 1e-3) for r, g in zip(ref, gs)]
        for p, r in zip(params, ref):
            assert torch.allclose(p.detach(), r, rtol=1e-13, atol=1e-15)


def test_adagrad_norm_on_one_coordinate_is_adagrad():
    a = torch.ones(1, dtype=torch.float64, requires_grad=True)
    b = torch.ones(1, dtype=torch.float64, requires_grad=True)
    norm, ada = AdagradNorm([a], lr=0.1), optlib.Adagrad([b], lr=0.1)
    for (g,) in _grads(1, 20, [(1,)]):
        a.grad, b.grad = g.clone(), g.clone()
        norm.step()
        ada.step()
    assert torch.allclose(a, b, rtol=1e-14, atol=0)


def test_adagrad_norm_groups_are_separate_and_resume_from_a_state_dict():
    def make():
        ps = [torch.zeros(3, dtype=torch.float64, requires_grad=True) for _ in range(2)]
        return ps, AdagradNorm([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.05}], lr=0.2)

    grads = _grads(2, 10, [(3,), (3,)])
    ps, opt = make()
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
    qs, opt2 = make()
    for gs in grads[:5]:
        for q, g in zip(qs, gs):
            q.grad = g.clone()
        opt2.step()
    saved = opt2.state_dict()
    rs, opt3 = make()
    with torch.no_grad():
        for r, q in zip(rs, qs):
            r.copy_(q)
    opt3.load_state_dict(saved)
    for gs in grads[5:]:
        for r, g in zip(rs, gs):
            r.grad = g.clone()
        opt3.step()
    for p, r in zip(ps, rs):
        assert torch.equal(p, r)
    b0 = float(opt.state[ps[0]]["norm_sum"])
    assert math.isclose(b0, sum(float((gs[0] ** 2).sum()) for gs in grads), rel_tol=1e-13)


@pytest.mark.parametrize(
    "kwargs, name", [({"lr": -1.0}, "lr"), ({"eps": -1.0}, "eps"),
                     ({"initial_accumulator_value": -1.0}, "initial_accumulator_value")],
)  # fmt: skip
def test_adagrad_norm_rejects_bad_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AdagradNorm([torch.zeros(1, requires_grad=True)], **kwargs)


def test_inverse_sqrt_schedule_sets_lr0_over_sqrt_t_for_step_t():
    p = torch.zeros(1, requires_grad=True)
    opt = optlib.SGD([p], lr=3.0)
    sched = inverse_sqrt_schedule(opt)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(1)
        opt.step()
        sched.step()
    assert all(math.isclose(lr, 3.0 / math.sqrt(t), rel_tol=1e-15) for t, lr in enumerate(seen, 1))


def test_effective_lr_profile_reads_adagrad_and_rmsprop_state():
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="no accumulator"):
        effective_lr_profile(optlib.SGD([p], lr=0.1))
    ada = optlib.Adagrad([p], lr=0.1, eps=1e-6)
    p.grad = torch.tensor([1.0, 2.0, 0.0, -3.0], dtype=torch.float64)
    ada.step()
    expected = 0.1 / (p.grad.abs() + 1e-6)
    assert torch.allclose(effective_lr_profile(ada), expected, rtol=1e-15)
    q = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    rms = optlib.RMSprop([q], lr=0.01, alpha=0.9)
    q.grad = torch.tensor([1.0, -2.0], dtype=torch.float64)
    rms.step()
    v = 0.1 * q.grad**2
    assert torch.allclose(effective_lr_profile(rms), 0.01 / (v.sqrt() + 1e-8), rtol=1e-15)
    centred = optlib.RMSprop([q], lr=0.01, centered=True)
    centred.step()
    with pytest.raises(ValueError, match="centred"):
        effective_lr_profile(centred)


def test_fit_sparse_scores_what_the_model_learned():
    from optlib.experiments.adaptive import fit_sparse
    from optlib.problems import sparse_logistic

    problem = sparse_logistic(n_train=200, n_test=100, seed=3)
    untouched = fit_sparse(problem, lambda p: optlib.SGD(p, lr=0.0), 5, batch_size=20)
    assert math.isclose(untouched["train"], math.log(2), rel_tol=1e-12)  # zero weights
    assert untouched["rare"] == untouched["frequent"] == 1.0 and not untouched["diverged"]
    bayes = float(problem.loss_fn(problem.X_test @ problem.w_star, problem.y_test))
    assert math.isclose(untouched["excess_test"], math.log(2) - bayes, rel_tol=1e-12)
    trained = fit_sparse(problem, lambda p: optlib.Adagrad(p, lr=0.5), 50, batch_size=20)
    assert trained["train"] < 0.9 * math.log(2) and trained["frequent"] < 1.0
    again = fit_sparse(problem, lambda p: optlib.Adagrad(p, lr=0.5), 50, batch_size=20)
    assert again == trained  # seeded: the same batches, the same result
    decayed = fit_sparse(problem, lambda p: optlib.SGD(p, lr=1.0), 50, batch_size=20,
                         scheduler=inverse_sqrt_schedule)  # fmt: skip
    constant = fit_sparse(problem, lambda p: optlib.SGD(p, lr=1.0), 50, batch_size=20)
    assert decayed != constant  # the scheduler is stepped
