r"""The workload suite of chapters 8–12, behind one interface.

A :class:`Workload` bundles fixed data (a :class:`~optlib.problems.digits.Dataset`: training
inputs and targets, held-out test or validation ones), a factory ``make_model(seed)`` of fresh
seeded models, and the mean loss ``loss_fn(output, target)``. :func:`workload` builds one by
name:

* ``"digits_mlp"``: scikit-learn's 8×8 digits, a one-hidden-layer tanh MLP (64→32→10);
* ``"digits_cnn"``: the same images, the small CNN of :mod:`optlib.problems.digits_cnn`;
  both take ``n_train`` (use only the first training examples) and ``label_noise`` (replace
  that fraction of the training labels by seeded random classes), so that regularisation
  matters;
* ``"char_lm"``: next-character prediction on the standard library's source with the tiny
  transformer (or ``arch="gru"``) of :mod:`optlib.problems.charlm`; its loss is in nats per
  character, :func:`~optlib.problems.charlm.bits_per_char` converts;
* ``"moe"``: the mixture-of-experts toy of :mod:`optlib.problems.moe`.

The data depend on ``data_seed`` (default 0) and the model on the ``seed`` given to
``make_model``; both are moved by ``OPTLIB_SEED``. :func:`evaluate` is the cheap batched
evaluation: the mean loss over a split in chunks, without building a graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._seed import derive_seed
from .charlm import char_model, lm_loss, stdlib_corpus
from .digits import Dataset, digits, mlp
from .digits_cnn import cnn, digit_images
from .moe import moe_clusters, moe_model

__all__ = ["WORKLOADS", "Workload", "evaluate", "workload"]

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Workload:
    """Fixed data, a seeded model factory and a loss (see the module docstring)."""

    name: str
    data: Dataset
    make_model: Callable[[int], nn.Module]
    #: the loss of a batch, ``loss_fn(logits, targets)`` (cross-entropy unless set)
    loss_fn: LossFn = nn.functional.cross_entropy
    options: dict | None = None

    def model(self, seed: int = 0) -> nn.Module:
        """A fresh model initialised from ``seed``."""
        return self.make_model(seed)

    def loss(self, model: nn.Module, split: str = "test", **kwargs: Any) -> float:
        """Mean loss of ``model`` on the ``"train"`` or ``"test"`` split (:func:`evaluate`)."""
        if split not in ("train", "test"):
            raise ValueError(f"Invalid split: {split!r}; allowed are 'train', 'test'")
        X, y = (self.data.X_train, self.data.y_train) if split == "train" else (
            self.data.X_test, self.data.y_test)  # fmt: skip
        return evaluate(model, X, y, self.loss_fn, **kwargs)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model(0).parameters())


@torch.no_grad()
def evaluate(
    model: Callable[[Tensor], Tensor], X: Tensor, y: Tensor, loss_fn: LossFn = nn.functional.
    cross_entropy, *, chunk: int = 512, max_examples: int | None = None,
) -> float:  # fmt: skip
    """Mean of ``loss_fn`` over ``X, y`` (or their first ``max_examples``), ``chunk`` examples at
    a time, weighted by chunk size; no autograd graph is built."""
    if max_examples is not None:
        X, y = X[:max_examples], y[:max_examples]
    total, n = 0.0, len(X)
    if n == 0:
        raise ValueError("nothing to evaluate: X is empty")
    for start in range(0, n, chunk):
        Xb, yb = X[start : start + chunk], y[start : start + chunk]
        total += float(loss_fn(model(Xb), yb)) * len(Xb)
    return total / n


def _subset_and_noise(data: Dataset, n_train: int | None, label_noise: float,
                      seed: int) -> Dataset:  # fmt: skip
    """The first ``n_train`` training examples, a fraction ``label_noise`` of whose labels are
    replaced by seeded random classes (the test set is untouched)."""
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"Invalid label_noise: {label_noise}; allowed range is [0, 1]")
    X, y = data.X_train[:n_train], data.y_train[:n_train].clone()
    if label_noise:
        g = torch.Generator().manual_seed(derive_seed(seed + 1))
        flip = torch.rand(len(y), generator=g) < label_noise
        y[flip] = torch.randint(0, data.n_classes, (int(flip.sum()),), generator=g)
    return Dataset(X, y, data.X_test, data.y_test)


def _digits_mlp(data_seed: int = 0, n_hidden: int = 32, depth: int = 1, n_train: int | None = None,
                label_noise: float = 0.0, dtype=torch.float32):  # fmt: skip
    data = _subset_and_noise(digits(seed=data_seed, dtype=dtype), n_train, label_noise, data_seed)
    return data, lambda seed: mlp(data.n_features, n_hidden, data.n_classes, depth=depth,
                                  seed=seed, dtype=dtype)  # fmt: skip


def _digits_cnn(data_seed: int = 0, channels: tuple[int, int] = (8, 16), n_train: int | None = None,
                label_noise: float = 0.0, dtype=torch.float32):  # fmt: skip
    data = _subset_and_noise(digit_images(seed=data_seed, dtype=dtype), n_train, label_noise,
                             data_seed)  # fmt: skip
    return data, lambda seed: cnn(channels=channels, seed=seed, dtype=dtype)


def _char_lm(data_seed: int = 0, arch: str = "transformer", context: int = 64,
             dtype=torch.float32, corpus_options: dict | None = None, **model_options):  # fmt: skip
    data = stdlib_corpus(context=context, seed=data_seed, **(corpus_options or {}))
    return data, lambda seed: char_model(arch, seed=seed, context=context, dtype=dtype,
                                         **model_options)  # fmt: skip


def _moe(data_seed: int = 0, n_experts: int = 4, top_k: int = 1, n_hidden: int = 16,
         dtype=torch.float32, data_options: dict | None = None):  # fmt: skip
    data = moe_clusters(seed=data_seed, dtype=dtype, **(data_options or {}))
    return data, lambda seed: moe_model(data.n_features, n_hidden, data.n_classes,
                                        n_experts=n_experts, top_k=top_k, seed=seed,
                                        dtype=dtype)  # fmt: skip


WORKLOADS: dict[str, tuple[Callable[..., tuple[Dataset, Callable]], LossFn]] = {
    "digits_mlp": (_digits_mlp, nn.functional.cross_entropy),
    "digits_cnn": (_digits_cnn, nn.functional.cross_entropy),
    "char_lm": (_char_lm, lm_loss),
    "moe": (_moe, nn.functional.cross_entropy),
}


def workload(name: str, **options: Any) -> Workload:
    """The workload ``name`` (one of ``WORKLOADS``), built with ``options`` (``data_seed``
    and the keyword arguments of its builder, e.g. ``n_hidden`` or ``arch``)."""
    if name not in WORKLOADS:
        raise ValueError(f"Invalid workload: {name!r}; allowed are {sorted(WORKLOADS)}")
    build, loss_fn = WORKLOADS[name]
    data, make_model = build(**options)
    return Workload(name, data, make_model, loss_fn, dict(options))
