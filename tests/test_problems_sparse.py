"""optlib.problems.sparse: the seeded sparse-feature logistic regression of chapter 4."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib.problems import SparseFeatures, logistic_model, sparse_logistic


def test_shapes_dtypes_and_split():
    p = sparse_logistic(300, 100, d_frequent=5, d_rare=15, dtype=torch.float32)
    assert isinstance(p, SparseFeatures) and p.n_features == 20
    assert p.X_train.shape == (300, 20) and p.X_test.shape == (100, 20)
    assert p.y_train.shape == (300,) and p.y_test.shape == (100,)
    for t in (p.X_train, p.y_train, p.X_test, p.y_test, p.w_star, p.frequency):
        assert t.dtype == torch.float32
    assert p.rare.dtype == torch.bool and p.rare.tolist() == [False] * 5 + [True] * 15
    assert set(p.X_train.unique().tolist()) <= {0.0, 1.0}
    assert set(p.y_train.unique().tolist()) == {0.0, 1.0}


def test_seeded_reproducible_and_seed_dependent():
    a, b, c = sparse_logistic(seed=3), sparse_logistic(seed=3), sparse_logistic(seed=4)
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_test, b.y_test)
    assert torch.equal(a.w_star, b.w_star)
    assert not torch.equal(a.X_train, c.X_train)
    # the global generator plays no part
    torch.manual_seed(123)
    assert torch.equal(sparse_logistic(seed=3).X_train, a.X_train)


def test_feature_frequencies_and_weights_are_as_asked():
    p = sparse_logistic(20_000, 0, d_frequent=10, d_rare=40, p_frequent=0.3, p_rare=0.01)
    on = p.X_train.mean(0)
    n = p.X_train.shape[0]
    for i in range(p.n_features):
        q = 0.01 if p.rare[i] else 0.3
        assert abs(on[i] - q) < 5 * math.sqrt(q * (1 - q) / n), (i, on[i].item())
    assert torch.equal(p.frequency, torch.where(p.rare, 0.01, 0.3).double())
    assert torch.equal(p.w_star.abs(), torch.where(p.rare, 4.0, 0.5).double())
    assert 0 < (p.w_star > 0).sum() < p.n_features  # random signs


def test_labels_follow_the_logistic_model():
    """The true weights predict the labels far better than any constant, and the frequency of
    positives among examples with a given logit matches the sigmoid of it."""
    p = sparse_logistic(20_000, 0)
    logits = p.X_train @ p.w_star
    base = p.y_train.mean()
    constant = p.loss_fn(torch.full_like(logits, float(torch.logit(base))), p.y_train)
    assert p.loss_fn(logits, p.y_train) < constant - 0.05
    mid = logits.abs() < 0.5
    assert abs(p.y_train[mid].mean() - torch.sigmoid(logits[mid]).mean()) < 0.03
    # a rare feature moves the label a lot when it is on
    i = int(torch.nonzero(p.rare)[0])
    on = p.X_train[:, i] == 1
    shift = p.y_train[on].mean() - p.y_train[~on].mean()
    assert shift * torch.sign(p.w_star[i]) > 0.3


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 40),
    d_frequent=st.integers(0, 6),
    d_rare=st.integers(0, 6),
    p_rare=st.floats(0.001, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_valid_arguments_give_a_consistent_problem(n, d_frequent, d_rare, p_rare, seed):
    if d_frequent + d_rare == 0:
        with pytest.raises(ValueError, match="feature"):
            sparse_logistic(n, 0, d_frequent=0, d_rare=0)
        return
    p = sparse_logistic(n, 3, d_frequent=d_frequent, d_rare=d_rare, p_rare=p_rare, seed=seed)
    assert p.X_train.shape == (n, d_frequent + d_rare) and p.X_test.shape[0] == 3
    assert int(p.rare.sum()) == d_rare
    assert torch.isfinite(p.w_star).all()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_train": 0}, "n_train"),
        ({"n_test": -1}, "n_test"),
        ({"d_rare": 2.5}, "d_rare"),
        ({"p_rare": 0.0}, "p_rare"),
        ({"p_frequent": 1.5}, "p_frequent"),
        ({"w_rare": -1.0}, "w_rare"),
        ({"w_frequent": math.inf}, "w_frequent"),
        ({"dtype": torch.int64}, "dtype"),
    ],
)
def test_invalid_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=f"Invalid {name}"):
        sparse_logistic(**kwargs)


def test_model_starts_at_zero_and_log_two():
    p = sparse_logistic(50, 10)
    model = p.model()
    out = model(p.X_train)
    assert out.shape == (50,) and out.dtype == torch.float64 and torch.all(out == 0)
    assert math.isclose(p.loss_fn(out, p.y_train).item(), math.log(2), rel_tol=1e-12)
    m32 = logistic_model(7, dtype=torch.float32)
    assert m32(torch.ones(3, 7)).dtype == torch.float32


def _final_loss(problem, make_optimizer, steps=150, batch=20, seed=0):
    model = problem.model()
    opt = make_optimizer(model.parameters())
    g = torch.Generator().manual_seed(seed)
    n = problem.X_train.shape[0]
    for _ in range(steps):
        idx = torch.randint(n, (batch,), generator=g)
        opt.zero_grad()
        problem.loss_fn(model(problem.X_train[idx]), problem.y_train[idx]).backward()
        opt.step()
    with torch.no_grad():
        return problem.loss_fn(model(problem.X_train), problem.y_train).item()


def test_adagrad_beats_sgd_at_their_best_learning_rates():
    """The point of the problem: per-coordinate steps help the rare features (a coarse, fast
    version of chapter 4's sweep)."""
    p = sparse_logistic(1000, 0)
    lrs = [0.3, 1.0, 3.0]  # SGD's best is 1.0 (it diverges at 3.0), AdaGrad's 1.0
    sgd = min(_final_loss(p, lambda ps, lr=lr: optlib.SGD(ps, lr=lr)) for lr in lrs)
    ada = min(_final_loss(p, lambda ps, lr=lr: optlib.Adagrad(ps, lr=lr)) for lr in lrs)
    assert ada < sgd - 0.1, (ada, sgd)
