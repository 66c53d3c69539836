"""optlib.experiments.preconditioning: the rotated copy of the digits MLP computes the same
function as the scaled one, SGD keeps the two on the same path, a per-coordinate method does not,
and the sweep returns plain, seeded JSON data."""

from __future__ import annotations

import json

import numpy as np
import torch

from optlib import linalg as la
from optlib.experiments import preconditioning as pre

F64 = torch.float64


def test_the_rotated_model_computes_the_same_function():
    Q = la.random_orthogonal(64, seed=5)
    scaled = pre._model(64, 8, 10, torch.eye(64, dtype=F64), seed=3, dtype=F64)
    rotated = pre._model(64, 8, 10, Q, seed=3, dtype=F64)
    x = la.random_vector(64 * 4, seed=1).reshape(4, 64)
    # W0 Q^T Q x against W0 x: one extra 64-term product, ~64 ulps of O(1) sums
    torch.testing.assert_close(rotated(x), scaled(x), rtol=1e-12, atol=1e-13)
    assert not rotated[0].R.requires_grad and "0.R" in dict(rotated.named_buffers())


def test_sgd_takes_the_same_steps_in_both_bases_and_adam_does_not():
    options = dict(steps=30, batch_size=16, n_hidden=8, window=5, every=10, dtype="float64")
    sgd = pre.rotated_features_sweep("SGD", [0.05], [0, 1], **options)
    adam = pre.rotated_features_sweep("Adam", [3e-3], [0, 1], **options)
    sgd_loss = np.array(sgd["window_loss"])  # [lr][basis][seed]
    adam_loss = np.array(adam["window_loss"])
    # float64, 30 steps of an 8-unit MLP: the two bases differ by the rounding of Q^T Q = I
    # (~1e-15), carried through the run (measured below 1e-13); rtol 1e-9 leaves a wide margin
    np.testing.assert_allclose(sgd_loss[0, 1], sgd_loss[0, 0], rtol=1e-9)
    np.testing.assert_allclose(sgd["curves"][0][1], sgd["curves"][0][0], rtol=1e-9)
    # Adam's per-coordinate scaling acts on other coordinates in the rotated basis
    assert np.all(np.abs(adam_loss[0, 1] - adam_loss[0, 0]) > 1e-4 * adam_loss[0, 0])


def test_the_sweep_is_plain_seeded_data():
    options = dict(steps=12, batch_size=16, n_hidden=4, window=4, every=4)
    a = pre.rotated_features_sweep("SGD", [0.01, 0.1], [0, 1, 2], **options)
    b = pre.rotated_features_sweep("SGD", [0.01, 0.1], [0, 1, 2], **options)
    assert json.loads(json.dumps(a)) == a
    assert np.array(a["window_loss"]).shape == (2, 2, 3)
    assert np.array(a["curves"]).shape == (2, 2, 3, 3) and a["curve_steps"] == [4, 8, 12]
    assert a["window_loss"] == b["window_loss"] and a["bases"] == ["scaled", "rotated"]
    seeds = np.array(a["window_loss"])[0, 0]
    assert len(set(seeds.tolist())) == 3  # each seed its own initial weights and batches
