"""optlib.problems.logistic: a seeded, non-separable synthetic logistic regression."""

import pytest
import torch

import optlib
from optlib.problems import logistic_regression, synthetic_logistic


def test_seeded_shapes_and_split():
    a = synthetic_logistic(400, 5, seed=3)
    b = synthetic_logistic(400, 5, seed=3)
    c = synthetic_logistic(400, 5, seed=4)
    assert a.X_train.shape == (300, 5) and a.X_test.shape == (100, 5)
    assert a.X_train.dtype == torch.float32 and a.y_train.dtype == torch.long
    assert torch.equal(a.X_train, b.X_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.X_train, c.X_train)
    assert a.n_classes == 2 and set(a.y_train.tolist()) == {0, 1}


def test_classes_overlap_so_the_loss_has_a_positive_floor():
    """Labels are drawn from the logistic model, so even a long full-batch fit cannot drive the
    cross-entropy to zero (a separable data set could)."""
    data, model = logistic_regression(1000, 10, seed=0, dtype=torch.float64)
    opt = optlib.LBFGS(model.parameters(), lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data.X_train), data.y_train)
        loss.backward()
        return loss

    opt.step(closure)
    loss = float(closure().detach())
    assert 0.2 < loss < 0.69  # better than chance (log 2), but bounded away from zero
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    # not rounding: 200 L-BFGS iterations reach a stationary point of this strongly convex
    # float64 fit (the weights stay finite because the classes overlap); 1e-4 separates that
    # from a run still descending towards infinite weights, whose gradient stays ~1e-2
    assert grad.norm() < 1e-4
    assert model.weight.abs().max() < 10


@pytest.mark.parametrize(
    "kwargs", [dict(n=1), dict(d=0), dict(weight_scale=0.0), dict(test_fraction=1.0)]
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        synthetic_logistic(**kwargs)
