r"""What chapter 8 measures about memory-light optimizers: Adafactor's factored second moment,
and the parameter shapes of large language models for optimizer-state budgets.

**The factored estimate.** For a non-negative matrix :math:`V \in \mathbb{R}^{n\times m}` (a
second-moment estimate), Adafactor keeps only its row means :math:`r = V\mathbf{1}/m` and column
means :math:`c = \mathbf{1}^\top V/n` and rebuilds

.. math::

   \hat V = \frac{r\, c^\top}{\operatorname{mean}(r)},

which has the same row and column means as :math:`V` and is exact when :math:`V` has rank one
(Shazeer & Stern, 2018, who show that it minimises the generalised Kullback–Leibler divergence
to :math:`V` among rank-one matrices). :func:`rank_one` computes it over the last two
dimensions (as :class:`optlib.Adafactor` does for tensors of higher order); the tests check it
against the state of :class:`optlib.Adafactor`. :func:`scalar_estimate` is the cruder
baseline that keeps one number per matrix. :func:`step_size_error` turns an estimate into what
it does to the step: Adam divides each gradient entry by :math:`\sqrt{V_{ij}}`, Adafactor by
:math:`\sqrt{\hat V_{ij}}`, so :math:`\sqrt{V_{ij}/\hat V_{ij}}` is the factor by which
Adafactor's step of that entry is larger than Adam's.

**Model shapes.** :func:`llama_shapes` lists every parameter tensor of a LLaMA-style decoder
(embedding, per layer four attention projections with grouped key/value heads, a SwiGLU MLP of
three matrices and two RMSNorm gains, a final norm, an untied head), so that the optimizer-state
formulas of :mod:`optlib.bench.memory` can be evaluated at 7B and 70B parameters.
``LLAMA2_7B`` and ``LLAMA2_70B`` are the published configurations of Touvron et al.
(2023).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = [
    "LLAMA2_70B",
    "LLAMA2_7B",
    "DecoderConfig",
    "llama_shapes",
    "rank_one",
    "scalar_estimate",
    "step_size_error",
]


def rank_one(V: Tensor, eps: float = 0.0) -> Tensor:
    r"""Adafactor's rank-one estimate :math:`r c^\top / \max(\operatorname{mean}(r), \epsilon)`
    of a non-negative ``V`` over its last two dimensions (a batch of matrices for order > 2)."""
    if V.dim() < 2:
        raise ValueError(f"rank_one needs a tensor of order >= 2, got shape {tuple(V.shape)}")
    r = V.mean(dim=-1, keepdim=True)
    c = V.mean(dim=-2, keepdim=True)
    return (r @ c) / r.mean(dim=-2, keepdim=True).clamp(min=eps)


def scalar_estimate(V: Tensor) -> Tensor:
    """One number per matrix: the mean of ``V`` over its last two dimensions, broadcast."""
    return V.mean(dim=(-2, -1), keepdim=True).expand_as(V)


def step_size_error(V: Tensor, V_hat: Tensor, floor: float = 0.0) -> Tensor:
    r""":math:`\sqrt{V / \hat V}` entry by entry: how much larger the step of an entry is under
    the estimate :math:`\hat V` than under :math:`V` (1 = no error). Entries with
    :math:`V \le` ``floor`` (no gradient seen) are left out of the returned flat tensor."""
    keep = V > floor
    return (V[keep] / V_hat[keep]).sqrt()


@dataclass(frozen=True)
class DecoderConfig:
    """The sizes of a LLaMA-style decoder (see :func:`llama_shapes`)."""

    d_model: int
    n_layers: int
    d_ff: int
    vocab: int
    n_heads: int
    n_kv_heads: int


LLAMA2_7B = DecoderConfig(d_model=4096, n_layers=32, d_ff=11008, vocab=32000, n_heads=32,
                          n_kv_heads=32)  # fmt: skip
LLAMA2_70B = DecoderConfig(d_model=8192, n_layers=80, d_ff=28672, vocab=32000, n_heads=64,
                           n_kv_heads=8)  # fmt: skip


def llama_shapes(config: DecoderConfig) -> list[tuple[str, tuple[int, ...], str]]:
    """Every parameter tensor of the decoder as ``(name, shape, role)``, with role
    ``"embedding"``, ``"hidden"`` (the matrices inside the blocks), ``"norm"`` or ``"head"``.
    Weights are stored as torch's ``nn.Linear`` stores them, ``(out, in)``."""
    d, f = config.d_model, config.d_ff
    kv = d * config.n_kv_heads // config.n_heads
    shapes = [("embed", (config.vocab, d), "embedding")]
    for i in range(config.n_layers):
        shapes += [
            (f"layers.{i}.attn.q", (d, d), "hidden"),
            (f"layers.{i}.attn.k", (kv, d), "hidden"),
            (f"layers.{i}.attn.v", (kv, d), "hidden"),
            (f"layers.{i}.attn.o", (d, d), "hidden"),
            (f"layers.{i}.mlp.gate", (f, d), "hidden"),
            (f"layers.{i}.mlp.up", (f, d), "hidden"),
            (f"layers.{i}.mlp.down", (d, f), "hidden"),
            (f"layers.{i}.attn_norm", (d,), "norm"),
            (f"layers.{i}.mlp_norm", (d,), "norm"),
        ]
    shapes += [("norm", (d,), "norm"), ("head", (config.vocab, d), "head")]
    return shapes
