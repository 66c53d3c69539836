"""A small convolutional network on scikit-learn's 8×8 digits (beside the MLP of
:mod:`optlib.problems.digits`).

The images are the same standardised pixels as :func:`~optlib.problems.digits.digits` (same
seeded split), reshaped to ``(N, 1, 8, 8)``. The network has two 3×3 convolutions (padding 1,
ReLU), a 2×2 max-pool and a linear classifier: with the default ``channels=(8, 16)`` it has
3,818 parameters in six tensors (two 4-D kernels, one matrix, three bias vectors), so it gives
the optimizers of chapters 8–12 convolution kernels to precondition next to a matrix.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._seed import derive_seed
from .digits import Dataset, digits

__all__ = ["DigitsCNN", "digit_images", "digits_cnn"]


def digit_images(*, test_fraction: float = 0.25, seed: int = 0, dtype=torch.float32) -> Dataset:
    """:func:`~optlib.problems.digits.digits` with the inputs as ``(N, 1, 8, 8)`` images."""
    flat = digits(test_fraction=test_fraction, seed=seed, dtype=dtype)
    return Dataset(
        flat.X_train.reshape(-1, 1, 8, 8), flat.y_train, flat.X_test.reshape(-1, 1, 8, 8),
        flat.y_test,
    )  # fmt: skip


class DigitsCNN(nn.Module):
    """conv 3×3 (1→c1) → ReLU → conv 3×3 (c1→c2) → ReLU → max-pool 2×2 → linear (16·c2 → 10)."""

    def __init__(self, channels: tuple[int, int] = (8, 16), n_classes: int = 10) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(c2 * 16, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv1(x))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(-3))


def cnn(*, channels: tuple[int, int] = (8, 16), seed: int = 0, dtype=torch.float32) -> DigitsCNN:
    """A seeded :class:`DigitsCNN` (torch's default initialisation under ``seed``)."""
    torch.manual_seed(derive_seed(seed))
    return DigitsCNN(tuple(channels)).to(dtype)


def digits_cnn(
    *, channels: tuple[int, int] = (8, 16), seed: int = 0, dtype=torch.float32
) -> tuple[Dataset, DigitsCNN]:
    """The digit images and a fresh seeded CNN for them: ``(data, model)``."""
    return digit_images(seed=seed, dtype=dtype), cnn(channels=channels, seed=seed, dtype=dtype)
