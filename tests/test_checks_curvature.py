"""optlib.course.checks.curvature (chapter 9's exercise checks): right answers pass with one
deterministic line; the known wrong answers listed below fail with a message that locates the
problem without giving the solution away; answers that delegate to the library score nothing;
the statistical thresholds are far from what correct answers produce; the cases/probe/expect/
compare split survives JSON for the sandboxed grader."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import optlib
from optlib import linalg
from optlib.course import checks
from optlib.course.checks import curvature

NAMES = ["hvp_double_backward", "hutchinson_estimator", "gnb_loss", "sophia_clipped_fraction"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ right answers


def hvp(model, X, y, v):
    params = list(model.parameters())
    g = torch.autograd.grad(F.cross_entropy(model(X), y), params, create_graph=True)
    dot = sum((gi * vi).sum() for gi, vi in zip(g, v))
    return list(torch.autograd.grad(dot, params))


def hvp_functional(model, X, y, v):  # forward-over-reverse, by hand with torch.func.jvp
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach() for p in model.parameters())

    def grad_of(*ps):
        def loss(*qs):
            return F.cross_entropy(torch.func.functional_call(model, dict(zip(names, qs)), (X,)),
                                   y)  # fmt: skip

        return torch.func.grad(loss, argnums=tuple(range(len(ps))))(*ps)

    _, tangent = torch.func.jvp(grad_of, params, tuple(v))
    return list(tangent)


def hutchinson(hvp, n, n_probes, generator):
    total = torch.zeros(n, dtype=torch.float64)
    for _ in range(n_probes):
        u = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
        total += u * hvp(u)
    return total / n_probes


def hutchinson_bernoulli(hvp, n, n_probes, generator):  # another way to draw +-1
    samples = []
    for _ in range(n_probes):
        u = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
        samples.append(u * hvp(u).double())
    return torch.stack(samples).mean(0)


def gnb(logits, generator):
    flat = logits.reshape(-1, logits.shape[-1])
    with torch.no_grad():
        labels = torch.multinomial(torch.softmax(flat, -1), 1, generator=generator).squeeze(-1)
    return F.cross_entropy(flat, labels)


def gnb_gumbel(logits, generator):  # the Gumbel-max trick samples from the softmax too
    flat = logits.reshape(-1, logits.shape[-1])
    with torch.no_grad():
        u = torch.rand(flat.shape, generator=generator, dtype=torch.float64).clamp_min(1e-300)
        labels = (flat.double() - torch.log(-torch.log(u))).argmax(-1)
    return F.cross_entropy(flat, labels)


def clipped(m, h, rho, eps, bs):
    denominator = rho * bs * h + eps if bs is not None else (rho * h).clamp_min(eps)
    return float((m.abs() >= denominator).double().mean())


RIGHT = [
    (checks.hvp_double_backward, hvp, {}),
    (checks.hvp_double_backward, hvp, {"seed": 901, "n_cases": 6, "more": True}),
    (checks.hvp_double_backward, hvp_functional, {"more": True}),
    (checks.hutchinson_estimator, hutchinson, {}),
    (checks.hutchinson_estimator, hutchinson, {"seed": 902, "n_cases": 6, "edge": True}),
    (checks.hutchinson_estimator, hutchinson_bernoulli, {"seed": 5}),
    (checks.gnb_loss, gnb, {}),
    (checks.gnb_loss, gnb, {"seed": 903, "n_cases": 6, "sequences": True, "float32": True}),
    (checks.gnb_loss, gnb_gumbel, {"seed": 4}),
    (checks.sophia_clipped_fraction, clipped, {}),
    (checks.sophia_clipped_fraction, clipped, {"seed": 904, "n_cases": 10, "edge": True}),
]


@pytest.mark.parametrize("check, answer, options", RIGHT)
def test_right_answers_pass_with_one_deterministic_line(check, answer, options, capsys):
    check(answer, **options)
    first = capsys.readouterr().out
    check(answer, **options)
    assert capsys.readouterr().out == first
    assert first.count("\n") == 1 and ": OK, " in first


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


# ------------------------------------------------------------------ known wrong answers


def hvp_returns_gradient(model, X, y, v):
    return list(torch.autograd.grad(F.cross_entropy(model(X), y), list(model.parameters())))


def hvp_ignores_v(model, X, y, v):
    return hvp(model, X, y, [torch.ones_like(t) for t in v])


def _fd(model, X, y, v, h=1e-5):
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]

    def grad_at(s):
        with torch.no_grad():
            for p, p0, d in zip(params, saved, v):
                p.copy_(p0 + s * d)
        return torch.autograd.grad(F.cross_entropy(model(X), y), params)

    plus, minus = grad_at(h), grad_at(-h)
    with torch.no_grad():
        for p, p0 in zip(params, saved):
            p.copy_(p0)
    return [(a - b) / (2 * h) for a, b in zip(plus, minus)]


def hvp_sign_flipped(model, X, y, v):
    return [-t for t in hvp(model, X, y, v)]


def hvp_weights_only(model, X, y, v):
    return [t for t, p in zip(hvp(model, X, y, v), model.parameters()) if p.dim() == 2]


def hvp_modifies_v(model, X, y, v):
    out = hvp(model, X, y, v)
    v[0].mul_(2.0)
    return out


def hvp_sum_loss(model, X, y, v):  # the Hessian of the summed, not the mean, loss
    return [t * len(y) for t in hvp(model, X, y, v)]


WRONG_HVP = [
    (hvp_returns_gradient, "gradient itself"),
    (hvp_ignores_v, "vector of ones"),
    (_fd, "differs from the exact Hessian"),
    (hvp_sign_flipped, "sign is flipped"),
    (hvp_weights_only, "shapes"),
    (hvp_modifies_v, "in place"),
    (hvp_sum_loss, "differs from the exact Hessian"),
    (lambda model, X, y, v: None, "None"),
]


@pytest.mark.parametrize("answer, words", WRONG_HVP)
def test_known_wrong_hvps_fail(answer, words):
    assert words in _fails(checks.hvp_double_backward, answer)


def test_finite_differences_fail_even_in_float32_cases_with_the_more_option():
    assert "differs" in _fails(checks.hvp_double_backward, _fd, more=True)


def hutchinson_gaussian(hvp, n, n_probes, generator):
    total = torch.zeros(n, dtype=torch.float64)
    for _ in range(n_probes):
        u = torch.randn(n, generator=generator, dtype=torch.float64)
        total += u * hvp(u)
    return total / n_probes


def hutchinson_uniform(hvp, n, n_probes, generator):  # E[u_i^2] = 1/3: biased
    total = torch.zeros(n, dtype=torch.float64)
    for _ in range(n_probes):
        u = torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1
        total += u * hvp(u)
    return total / n_probes


def hutchinson_without_u(hvp, n, n_probes, generator):
    total = torch.zeros(n, dtype=torch.float64)
    for _ in range(n_probes):
        u = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
        total += hvp(u)
    return total / n_probes


def hutchinson_one_probe_reused(hvp, n, n_probes, generator):
    u = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
    sample = u * hvp(u)
    for _ in range(n_probes - 1):
        hvp(u)
    return sample


def hutchinson_global_rng(hvp, n, n_probes, generator):
    total = torch.zeros(n, dtype=torch.float64)
    for _ in range(n_probes):
        u = torch.randint(0, 2, (n,)).double() * 2 - 1
        total += u * hvp(u)
    return total / n_probes


def hutchinson_extra_product(hvp, n, n_probes, generator):
    hvp(torch.zeros(n, dtype=torch.float64))
    return hutchinson(hvp, n, n_probes, generator)


def hutchinson_off_by_one(hvp, n, n_probes, generator):
    return hutchinson(hvp, n, n_probes, generator) * n_probes / max(n_probes - 1, 1)


def hutchinson_absolute(hvp, n, n_probes, generator):
    return hutchinson(hvp, n, n_probes, generator).abs()


WRONG_HUTCHINSON = [
    (hutchinson_gaussian, {}, "Gaussian"),
    (hutchinson_uniform, {}, "biased"),
    (hutchinson_without_u, {}, "biased"),
    (hutchinson_one_probe_reused, {"n_cases": 1}, "standard errors"),
    (hutchinson_global_rng, {}, "generator"),
    (hutchinson_extra_product, {}, "one product per probe"),
    (hutchinson_off_by_one, {}, "divide by the number of probes"),
    (hutchinson_absolute, {"n_cases": 1}, "biased"),
    (lambda hvp, n, S, g: torch.zeros(n + 1), {}, "shape"),
]


@pytest.mark.parametrize("answer, options, words", WRONG_HUTCHINSON)
def test_known_wrong_hutchinson_estimators_fail(answer, options, words):
    assert words in _fails(checks.hutchinson_estimator, answer, **options)


def test_one_gaussian_probe_is_not_exact_on_a_diagonal_hessian():
    (case,) = [c for c in curvature._hutchinson_cases(seed=902, n_cases=6, edge=True)
               if c["kind"] == "diagonal" and c["n_probes"] == 1][:1]  # fmt: skip
    check = checks.CHECKS["hutchinson_estimator"]
    check.compare(case, check.probe(hutchinson, case), check.expect(case), "case")
    with pytest.raises(AssertionError, match="exactly"):
        check.compare(case, check.probe(hutchinson_gaussian, case), check.expect(case), "case")


def _q(H, S, draw):
    var = linalg.hutchinson_variance(H)
    live = var > 0
    U = draw(S, H.shape[0])
    est = (U * (U @ H)).mean(0)
    z = (est - H.diagonal())[live] / (var[live] / S).sqrt()
    return float((z**2).mean())


def test_the_hutchinson_threshold_is_far_from_correct_and_gaussian_estimators():
    """Mean squared z-scores of the check's own cases: a correct (Rademacher) estimator over 300
    seeds of probes stays below 1.7, a Gaussian one above 4: Q_MAX = 2.5 sits between, several
    standard deviations from both (the spread of Q is about 0.2)."""
    g = torch.Generator().manual_seed(0)

    def rademacher(S, n):
        return torch.randint(0, 2, (S, n), generator=g).double() * 2 - 1

    def gaussian(S, n):
        return torch.randn(S, n, generator=g, dtype=torch.float64)

    for case in curvature._hutchinson_cases(seed=0, n_cases=3) + curvature._hutchinson_cases(
            seed=902, n_cases=6, edge=True):  # fmt: skip
        H = torch.tensor(case["H"], dtype=torch.float64)
        if (linalg.hutchinson_variance(H) == 0).all():
            continue
        S = case["n_probes"]
        correct = [_q(H, S, rademacher) for _ in range(300)]
        assert max(correct) < 1.7 < curvature.Q_MAX, max(correct)
        wrong = [_q(H, S, gaussian) for _ in range(30)]
        assert min(wrong) > 4.0 > curvature.Q_MAX, min(wrong)


def gnb_argmax(logits, generator):
    flat = logits.reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, flat.argmax(-1))


def gnb_soft_targets(logits, generator):
    flat = logits.reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, torch.softmax(flat, -1).detach())


def gnb_uniform_labels(logits, generator):
    flat = logits.reshape(-1, logits.shape[-1])
    labels = torch.randint(0, flat.shape[-1], (flat.shape[0],), generator=generator)
    return F.cross_entropy(flat, labels)


def gnb_sum(logits, generator):
    return gnb(logits, generator) * logits.reshape(-1, logits.shape[-1]).shape[0]


def gnb_sharper(logits, generator):  # samples from softmax(2 z): too confident
    return gnb_from(logits, generator, 2.0)


def gnb_from(logits, generator, temperature):
    flat = logits.reshape(-1, logits.shape[-1])
    with torch.no_grad():
        p = torch.softmax(temperature * flat, -1)
        labels = torch.multinomial(p, 1, generator=generator).squeeze(-1)
    return F.cross_entropy(flat, labels)


def gnb_global_rng(logits, generator):
    flat = logits.reshape(-1, logits.shape[-1])
    labels = torch.multinomial(torch.softmax(flat.detach(), -1), 1).squeeze(-1)
    return F.cross_entropy(flat, labels)


def gnb_last_row_only(logits, generator):  # a sequence's last position, not every token
    return gnb(logits[..., -1, :] if logits.dim() == 3 else logits, generator)


WRONG_GNB = [
    (gnb_argmax, {}, "most likely class"),
    (gnb_soft_targets, {}, "same at every call"),
    (gnb_uniform_labels, {}, "uniformly"),
    (gnb_sum, {}, "not the sum"),
    (gnb_sharper, {}, "mean entropy"),
    (gnb_global_rng, {}, "generator"),
    (gnb_last_row_only, {"sequences": True}, "standard deviations"),
    (lambda logits, g: torch.zeros(3), {}, "3 numbers"),
]


@pytest.mark.parametrize("answer, options, words", WRONG_GNB)
def test_known_wrong_gnb_losses_fail(answer, options, words):
    assert words in _fails(checks.gnb_loss, answer, **options)


def test_the_gnb_thresholds_are_far_from_correct_answers():
    """The mean squared z-score of 12 calls of a correct loss is chi-square(12)/12; over 300
    seeds of labels on the check's own cases it stays well inside GNB_Q = (0.05, 4)."""
    g = torch.Generator().manual_seed(1)
    for case in curvature._gnb_cases(seed=0) + curvature._gnb_cases(seed=903, n_cases=6,
                                                                      sequences=True):  # fmt: skip
        expected = curvature._gnb_expect(case)
        z = torch.tensor(case["logits"], dtype=torch.float64).reshape(-1, case["shape"][-1])
        logp = torch.log_softmax(z, -1)
        qs = []
        for _ in range(300):
            labels = torch.multinomial(logp.exp(), 12, replacement=True, generator=g)  # (R, 12)
            values = -logp.gather(1, labels).mean(0)
            qs.append(float((((values - expected["mean"]) / expected["sd"]) ** 2).mean()))
        assert 0.1 < min(qs) and max(qs) < 3.5, (min(qs), max(qs))


def clipped_win_rate(m, h, rho, eps, bs):
    return 1 - clipped(m, h, rho, eps, bs)


def clipped_reference_script(m, h, rho, eps, bs):  # the training script's win rate, inverted
    scale = rho * (bs if bs is not None else 1)
    return float((~(m.abs() < scale * h)).double().mean())


def clipped_without_bs(m, h, rho, eps, bs):
    return clipped(m, h, rho, eps, None if bs is None else 1)


def clipped_max_for_both(m, h, rho, eps, bs):
    return float((m.abs() >= (rho * (bs or 1) * h).clamp_min(eps)).double().mean())


def clipped_sum_for_both(m, h, rho, eps, bs):
    return float((m.abs() >= rho * (bs or 1) * h + eps).double().mean())


def clipped_count(m, h, rho, eps, bs):
    return clipped(m, h, rho, eps, bs) * m.numel()


WRONG_CLIPPED = [
    (clipped_win_rate, {}, "NOT clipped"),
    (clipped_reference_script, {}, "mind epsilon"),
    (clipped_without_bs, {}, "bs as well as rho"),
    (clipped_max_for_both, {"edge": True}, "expected a fraction"),
    (clipped_sum_for_both, {"edge": True}, "expected a fraction"),
    (clipped_count, {}, "expected a fraction"),
]


@pytest.mark.parametrize("answer, options, words", WRONG_CLIPPED)
def test_known_wrong_clipped_fractions_fail(answer, options, words):
    assert words in _fails(checks.sophia_clipped_fraction, answer, **options)


def test_the_hidden_edge_cases_catch_what_the_public_ones_do_not():
    # mixing up the two denominators only shows where rho B h is comparable to eps
    for answer in (clipped_max_for_both, clipped_sum_for_both):
        checks.sophia_clipped_fraction(answer)
        _fails(checks.sophia_clipped_fraction, answer, seed=904, n_cases=10, edge=True)


def test_delegating_to_the_library_scores_nothing():
    def via_linalg(model, X, y, v):
        from optlib.linalg import hvp as library_hvp

        return library_hvp(lambda: F.cross_entropy(model(X), y), list(model.parameters()), v)

    def via_torch(model, X, y, v):
        names = [n for n, _ in model.named_parameters()]
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        shapes = [p.shape for p in model.parameters()]

        def f(theta):
            pieces, k = {}, 0
            for n, s in zip(names, shapes):
                pieces[n] = theta[k : k + math.prod(s)].view(s)
                k += math.prod(s)
            return F.cross_entropy(torch.func.functional_call(model, pieces, (X,)), y)

        _, out = torch.autograd.functional.hvp(f, flat, torch.cat([t.reshape(-1) for t in v]))
        return list(out.split([math.prod(s) for s in shapes]))

    for answer in (via_linalg, via_torch):
        assert "scores nothing" in _fails(checks.hvp_double_backward, answer)

    def via_sophia(hvp, n, n_probes, generator):
        from optlib.optim.sophia import rademacher_like

        total = torch.zeros(n, dtype=torch.float64)
        for _ in range(n_probes):
            u = rademacher_like(torch.zeros(n, dtype=torch.float64), generator)
            total += u * hvp(u)
        return total / n_probes

    assert "scores nothing" in _fails(checks.hutchinson_estimator, via_sophia)

    def via_gnb(logits, generator):
        from optlib.optim.sophia import gnb_loss

        return gnb_loss(logits, generator=generator)

    assert "scores nothing" in _fails(checks.gnb_loss, via_gnb)

    def via_experiments(m, h, rho, eps, bs):
        theta = torch.zeros_like(m, requires_grad=True)
        opt = optlib.SophiaG([theta], rho=rho, eps=eps)
        opt.state[theta]["exp_avg"] = m
        opt.state[theta]["hessian"] = h
        from optlib.experiments.sophia import clipped_fraction

        return clipped_fraction(opt, opt.param_groups[0], bs)

    assert "scores nothing" in _fails(checks.sophia_clipped_fraction, via_experiments)


# ------------------------------------------------------------------ the split the grader uses


ANSWERS = {
    "hvp_double_backward": hvp,
    "hutchinson_estimator": hutchinson,
    "gnb_loss": gnb,
    "sophia_clipped_fraction": clipped,
}


@pytest.mark.parametrize("name", NAMES)
def test_probe_data_survives_json_and_compares_equal(name):
    check = checks.CHECKS[name]
    for i, case in enumerate(check.cases(seed=5, n_cases=2)):
        got = json.loads(json.dumps(check.probe(ANSWERS[name], case)))
        check.compare(case, got, check.expect(case), f"case {i + 1}")


def test_the_clipped_reference_counts_steps_of_size_lr():
    """expect() detects clipping by running optlib's Sophia: the count agrees with the
    definition on every case (no coordinate sits on the clip's edge)."""
    for case in curvature._clip_cases(seed=11, n_cases=12) + curvature._clip_cases(
            seed=12, n_cases=8, edge=True):  # fmt: skip
        m, h = curvature._clip_inputs(case)
        assert curvature._clip_expect(case)["fraction"] == pytest.approx(
            clipped(m.double(), h.double(), case["rho"], case["eps"], case["bs"]), abs=1e-12)


def test_checks_are_registered_and_declare_what_they_forbid():
    for name in NAMES:
        assert name in checks.CHECKS and name in checks.DELEGATION
        assert callable(getattr(checks, name))
