"""optlib.problems.reddi: the online problem of Reddi, Kale & Kumar (2018), its regret, and the
result it was built for: Adam drifts to the worst point x = +1, AMSGrad reaches x* = -1."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib.problems import OnlineRun, ReddiProblem, play_online

EPS = np.finfo(np.float64).eps


def test_losses_gradients_and_the_best_point():
    p = ReddiProblem()  # Theorem 1: C = 3, period 3, small = 1
    assert [p.coefficient(t) for t in range(1, 8)] == [3, -1, -1, 3, -1, -1, 3]
    assert p.loss(4, 0.5) == 1.5 and p.loss(5, 0.5) == -0.5
    assert p.x_star == -1.0 and p.period_loss(1.0) == 1.0
    # Over a period the loss is (C - 2) x: its minimum over [-1, 1] is at -1, its maximum at +1.
    # closed forms of a few operations on small integers: a few ulps
    assert p.limit_regret(-1.0) == 0
    assert p.limit_regret(1.0) == pytest.approx(2 * (3 - 2) / 3, rel=4 * EPS)
    assert p.theorem1_beta2 == pytest.approx(0.1, rel=4 * EPS)  # 1 / (1 + C^2)
    x = torch.tensor([-3.0, -0.2, 0.7, 2.0])
    # projection copies or clips; -0.2 and 0.7 are their float32 roundings (rel 6e-8)
    rel32 = torch.finfo(torch.float32).eps
    assert p.project_(x) is x and x.tolist() == pytest.approx([-1.0, -0.2, 0.7, 1.0], rel=rel32)
    with pytest.raises(ValueError, match="t"):
        p.coefficient(0)


@pytest.mark.parametrize(
    "kwargs, word",
    [(dict(C=2.0), "C"), (dict(period=1), "period"), (dict(small=0.0), "small"),
     (dict(C=math.inf), "C"), (dict(C=15.0, period=11, small=2.0), "C")],
)  # fmt: skip
def test_invalid_problems_are_rejected(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ReddiProblem(**kwargs)


@settings(max_examples=20, deadline=None)
@given(
    xs=st.lists(st.floats(-1, 1), min_size=1, max_size=30),
    C=st.floats(2.1, 20),
)
def test_recorded_regret_is_the_definition(xs, C):
    """play_online's regret bookkeeping, replayed with SGD at lr 0 (x stays put) and checked
    against the definition sum_t f_t(x_t) - f_t(x*) for a constant x."""
    p = ReddiProblem(C=C)
    x0 = xs[0]
    T = len(xs)
    run = play_online(lambda params: optlib.SGD(params, lr=0.0), p, T, x0=x0)
    assert isinstance(run, OnlineRun)
    assert np.all(run.x == x0)
    expected = np.cumsum([p.loss(t, x0) - p.loss(t, -1.0) for t in range(1, T + 1)])
    # running sums of <= 30 terms of size <= 2C = 40 in another order: <= 30 x 40 x eps = 3e-13
    np.testing.assert_allclose(run.average_regret, expected / np.arange(1, T + 1), atol=1e-12)


def test_iterates_follow_projected_sgd():
    p = ReddiProblem()
    run = play_online(lambda params: optlib.SGD(params, lr=0.4), p, 9, x0=0.9)
    x = 0.9
    for t in range(1, 10):
        x = min(1.0, max(-1.0, x - 0.4 * p.coefficient(t)))
        # the same two roundings per step (0.4 c, then the difference), ~ulps of |x| <= 1
        assert run.x[t] == pytest.approx(x, abs=1e-15)


def test_schedule_scales_the_learning_rate():
    p = ReddiProblem()
    run = play_online(
        lambda params: optlib.SGD(params, lr=0.1), p, 4, x0=0.0, schedule=lambda t: 1 / t
    )
    steps = np.diff(run.x)
    # lr x 1/t x c, and a difference of iterates of size <= 0.3: a few ulps of 0.3 (7e-17 each)
    np.testing.assert_allclose(steps, [-0.1 * 3, 0.1 / 2, 0.1 / 3, -0.1 * 3 / 4], atol=1e-15)


def test_theorem1_adam_goes_to_the_worst_point_and_amsgrad_to_the_best():
    """Reddi et al.'s Theorem 1 setting: beta1 = 0, beta2 = 1/(1 + C^2), eta_t = eta/sqrt(t)."""
    p = ReddiProblem(C=3.0)

    def adam(amsgrad):
        return lambda params: optlib.Adam(
            params, lr=0.5, betas=(0.0, p.theorem1_beta2), amsgrad=amsgrad
        )

    adam_run = play_online(adam(False), p, 1500, schedule=lambda t: t**-0.5)
    ams_run = play_online(adam(True), p, 1500, schedule=lambda t: t**-0.5)
    assert adam_run.x[-300:].min() > 0.95  # stuck near +1, the worst point
    assert ams_run.x[-300:].max() < -0.95  # at the optimum, -1
    # The iterate stays near +1 but dips within each period and took ~40 steps to get there, so
    # the average regret sits 0.002-0.012 from the limit 2/3 from step 300 on (0.007 at the end);
    # 0.03 is 2.5 times that, and 20 times below the gap to the best point's regret (0)
    assert adam_run.average_regret[-1] == pytest.approx(p.limit_regret(1.0), abs=0.03)
    assert ams_run.average_regret[-1] < 0.05


def test_play_validates_steps():
    with pytest.raises(ValueError, match="steps"):
        play_online(lambda params: optlib.SGD(params, lr=0.1), ReddiProblem(), 0)
