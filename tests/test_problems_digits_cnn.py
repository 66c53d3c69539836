"""optlib.problems.digits_cnn: the small CNN on scikit-learn's 8×8 digits."""

from __future__ import annotations

import time

import torch
from torch import nn

import optlib
from optlib.problems import digits, digits_cnn
from optlib.problems.digits_cnn import DigitsCNN, cnn, digit_images


def test_images_are_the_digits_reshaped():
    flat, images = digits(seed=3), digit_images(seed=3)
    assert images.X_train.shape[1:] == (1, 8, 8) and images.X_test.shape[1:] == (1, 8, 8)
    assert torch.equal(images.X_train.reshape(len(flat.X_train), 64), flat.X_train)
    assert torch.equal(images.y_test, flat.y_test) and images.n_classes == 10


def test_shapes_parameter_count_and_dtype():
    data, model = digits_cnn()
    assert isinstance(model, DigitsCNN)
    assert model(data.X_test[:5]).shape == (5, 10)
    assert sum(p.numel() for p in model.parameters()) == 3818
    assert [p.dim() for p in model.parameters()] == [4, 1, 4, 1, 2, 1]
    wide = cnn(channels=(4, 8), dtype=torch.float64)
    assert wide.conv2.weight.shape == (8, 4, 3, 3) and wide.fc.weight.dtype == torch.float64


def test_seeded_and_moved_by_optlib_seed(monkeypatch):
    a, b, c = cnn(seed=0), cnn(seed=0), cnn(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    monkeypatch.setenv("OPTLIB_SEED", "1")
    assert not torch.equal(a.conv1.weight, cnn(seed=0).conv1.weight)


def test_adamw_reduces_the_loss():
    data, model = digits_cnn(seed=0)
    opt = optlib.AdamW(model.parameters(), lr=3e-3)
    X, y = data.X_train, data.y_train
    start = nn.functional.cross_entropy(model(X), y).item()
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(60):
        idx = torch.randint(len(y), (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
    per_step = (time.perf_counter() - t0) / 60
    with torch.no_grad():
        end = nn.functional.cross_entropy(model(X), y).item()
        acc = (model(data.X_test).argmax(1) == data.y_test).double().mean().item()
    print(f"digits CNN: {1e3 * per_step:.2f} ms per AdamW step (batch 32); loss {start:.2f} -> "
          f"{end:.2f}, test accuracy {acc:.3f} after 60 steps")  # fmt: skip
    assert end < 0.5 * start and acc > 0.7
