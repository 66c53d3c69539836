"""optlib.course.checks.large_batches (chapter 11's exercise checks): right answers pass with one
deterministic line, in the public and the hidden variants; the known wrong answers listed below
fail with a message that locates the problem; answers that delegate to the library score
nothing; the cases/probe/expect/compare split survives JSON for the sandboxed grader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from optlib.course import checks

NAMES = ["noise_scale_two_batches", "fit_critical_batch", "lars_trust_ratio",
         "accumulate_gradients"]  # fmt: skip
HIDDEN = {"noise_scale_two_batches": {"single": True}, "fit_critical_batch": {"few": True},
          "lars_trust_ratio": {"edge": True}, "accumulate_gradients": {"stale": True}}  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fails(check, answer, **options) -> str:
    with pytest.raises(AssertionError) as err:
        check(answer, **options)
    return str(err.value)


# ------------------------------------------------------------------ right answers


def noise_scale(sq_small, b_small, sq_big, b_big):
    small, big = sum(sq_small) / len(sq_small), sum(sq_big) / len(sq_big)
    noise = (small - big) / (1 / b_small - 1 / b_big)
    return big - noise / b_big, noise


def critical_batch(batch_sizes, steps):  # least squares on S = a + c / B
    B, S = np.asarray(batch_sizes, float), np.asarray(steps, float)
    (a, c), *_ = np.linalg.lstsq(np.stack([np.ones_like(B), 1 / B], 1), S, rcond=None)
    return a, c / a


def lars_ratio(theta, g, *, trust_coeff, weight_decay, eps):
    w, gn = float(theta.double().norm()), float(g.double().norm())
    if w == 0 or gn == 0:
        return 1.0
    return trust_coeff * w / (gn + weight_decay * w + eps)


def accumulate(model, X, y, micro_batches):
    model.zero_grad(set_to_none=True)
    total = sum(len(m) for m in micro_batches)
    mean = 0.0
    for m in micro_batches:
        loss = F.cross_entropy(model(X[m]), y[m]) * (len(m) / total)
        loss.backward()
        mean += float(loss.detach())
    return mean


ANSWERS = {"noise_scale_two_batches": noise_scale, "fit_critical_batch": critical_batch,
           "lars_trust_ratio": lars_ratio, "accumulate_gradients": accumulate}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_right_answers_pass_public_and_hidden(name, capsys):
    check = getattr(checks, name)
    check(ANSWERS[name])
    check(ANSWERS[name], seed=7, **HIDDEN[name])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{name}: OK") for line in lines)


@pytest.mark.parametrize("name", NAMES)
def test_probe_data_survives_json_and_compares_equal(name):
    check = checks.CHECKS[name]
    for case in check.cases(seed=5, **HIDDEN[name]):
        got = json.loads(json.dumps(check.probe(ANSWERS[name], case)))
        check.compare(case, got, json.loads(json.dumps(check.expect(case))), "case")


def test_noise_scale_reference_is_the_line_in_one_over_b():
    # two exact points on E|G_B|^2 = 2 + 30 / B: signal 2, noise 30
    assert noise_scale([2 + 30 / 4], 4, [2 + 30 / 64], 64) == pytest.approx((2.0, 30.0))
    checks.noise_scale_two_batches(noise_scale, n_cases=20, seed=11)


# ------------------------------------------------------------------ known wrong answers


def noise_big_batch_as_signal(sq_small, b_small, sq_big, b_big):
    small, big = np.mean(sq_small), np.mean(sq_big)
    return big, (small - big) / (1 / b_small - 1 / b_big)


def noise_first_norm_only(sq_small, b_small, sq_big, b_big):
    return noise_scale(sq_small[:1], b_small, sq_big[:1], b_big)


def crit_returns_coefficient(batch_sizes, steps):
    a, b_crit = critical_batch(batch_sizes, steps)
    return a, a * b_crit


def crit_two_end_points(batch_sizes, steps):  # uses the first and last listed only
    return critical_batch([batch_sizes[0], batch_sizes[-1]], [steps[0], steps[-1]])


def crit_sorted_assumption(batch_sizes, steps):  # pairs sorted sizes with unsorted steps
    return critical_batch(sorted(batch_sizes), steps)


def lars_no_decay(theta, g, *, trust_coeff, weight_decay, eps):
    return lars_ratio(theta, g, trust_coeff=trust_coeff, weight_decay=0.0, eps=eps)


def lars_no_zero_guard(theta, g, *, trust_coeff, weight_decay, eps):
    w, gn = float(theta.double().norm()), float(g.double().norm())
    return trust_coeff * w / (gn + weight_decay * w + eps)


def lars_in_place(theta, g, *, trust_coeff, weight_decay, eps):
    r = lars_ratio(theta, g, trust_coeff=trust_coeff, weight_decay=weight_decay, eps=eps)
    theta.mul_(1.0)
    g.mul_(r)
    return r


def accumulate_summed(model, X, y, micro_batches):
    model.zero_grad(set_to_none=True)
    for m in micro_batches:
        F.cross_entropy(model(X[m]), y[m]).backward()
    return float(F.cross_entropy(model(X), y).detach())


def accumulate_unweighted(model, X, y, micro_batches):
    model.zero_grad(set_to_none=True)
    for m in micro_batches:
        (F.cross_entropy(model(X[m]), y[m]) / len(micro_batches)).backward()
    return float(F.cross_entropy(model(X), y).detach())


def accumulate_keeps_stale(model, X, y, micro_batches):
    total = sum(len(m) for m in micro_batches)
    for m in micro_batches:
        (F.cross_entropy(model(X[m]), y[m]) * (len(m) / total)).backward()
    return float(F.cross_entropy(model(X), y).detach())


def accumulate_steps(model, X, y, micro_batches):
    out = accumulate(model, X, y, micro_batches)
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    return out


def test_known_wrong_answers_fail_with_a_useful_message():
    assert "meets 1/B = 0" in _fails(checks.noise_scale_two_batches, noise_big_batch_as_signal)
    _fails(checks.noise_scale_two_batches, noise_first_norm_only)
    assert "coefficient of 1/B" in _fails(checks.fit_critical_batch, crit_returns_coefficient)
    checks.fit_critical_batch(crit_two_end_points)  # exact data: any two points suffice ...
    checks.fit_critical_batch(crit_sorted_assumption)  # ... and the public sizes are sorted
    _fails(checks.fit_critical_batch, crit_sorted_assumption, few=True)  # the hidden are not
    assert "weight decay" in _fails(checks.lars_trust_ratio, lars_no_decay)
    checks.lars_trust_ratio(lars_no_zero_guard)  # public tensors have no zero norm ...
    assert "ratio is 1" in _fails(checks.lars_trust_ratio, lars_no_zero_guard, edge=True)
    assert "in place" in _fails(checks.lars_trust_ratio, lars_in_place)
    assert "share of the examples" in _fails(checks.accumulate_gradients, accumulate_summed)
    assert "different sizes" in _fails(checks.accumulate_gradients, accumulate_unweighted)
    checks.accumulate_gradients(accumulate_keeps_stale)  # public .grad starts empty ...
    assert "cleared" in _fails(checks.accumulate_gradients, accumulate_keeps_stale, stale=True)
    assert "changed the parameters" in _fails(checks.accumulate_gradients, accumulate_steps)


def test_delegating_to_the_library_scores_nothing():
    def via_noise_scale(sq_small, b_small, sq_big, b_big):
        from optlib.experiments.noise_scale import noise_scale_from_norms

        est = noise_scale_from_norms(sq_small, b_small, sq_big, b_big)
        return est.signal, est.noise

    def via_fit(batch_sizes, steps):
        from optlib.experiments.noise_scale import fit_critical_batch

        return fit_critical_batch(batch_sizes, steps)

    def via_lars(theta, g, *, trust_coeff, weight_decay, eps):
        from optlib.optim.lars import lars_trust_ratio

        return float(lars_trust_ratio(theta, g, trust_coeff=trust_coeff,
                                      weight_decay=weight_decay, eps=eps))  # fmt: skip

    def via_data_parallel(model, X, y, micro_batches):
        from optlib.experiments.data_parallel import accumulate_gradients

        return accumulate_gradients(model, F.cross_entropy, X, y, micro_batches)

    for check, answer in ((checks.noise_scale_two_batches, via_noise_scale),
                          (checks.fit_critical_batch, via_fit),
                          (checks.lars_trust_ratio, via_lars),
                          (checks.accumulate_gradients, via_data_parallel)):  # fmt: skip
        assert "scores nothing" in _fails(check, answer)
