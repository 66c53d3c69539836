r"""Param groups that exempt biases, normalisation layers and embeddings from weight decay.

Weight decay shrinks every parameter it touches, :math:`\theta \leftarrow (1-\eta\lambda)\,\theta`
(decoupled, as in AdamW) or through an L2 penalty :math:`\tfrac{\lambda}{2}\|\theta\|^2`. That
suits the weight matrices of linear and convolutional layers, whose size sets how sharply the
network can fit its data. It does not suit

* **biases**, which shift a unit's input and do not multiply anything, so their size says
  nothing about the function's complexity;
* **normalisation gains and shifts** (LayerNorm, RMSNorm, BatchNorm, GroupNorm...): the layer
  divides out the scale of its input, and decaying the gain towards 0 shrinks the layer's
  output towards a constant;
* **embeddings**: a row is only trained when its token occurs, but decoupled decay shrinks every
  row at every step, so rare tokens' vectors decay towards 0 between their occurrences.

:func:`decay_groups` splits a model's trainable parameters into a decayed group and a
``weight_decay=0`` group that any :class:`torch.optim.Optimizer` accepts, as in the GPT-style
training code that popularised the recipe; :func:`decay_mask` says, parameter by parameter, which
group it went to. Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, is the
decay itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from ._validate import check_nonnegative

__all__ = ["CATEGORIES", "NORM_LAYERS", "EMBEDDING_LAYERS", "decay_groups", "decay_mask"]

#: Module types whose parameters are normalisation gains and shifts.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm1d/2d/3d
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

#: Module types whose parameters are lookup tables.
EMBEDDING_LAYERS: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)

#: The categories that ``no_decay`` may name.
CATEGORIES = ("bias", "norm", "embedding")

NoDecay = Iterable[str | type[nn.Module]]


def _check_no_decay(no_decay: NoDecay) -> tuple[set[str], tuple[type[nn.Module], ...]]:
    names, types = set(), []
    for item in no_decay:
        if isinstance(item, str):
            if item not in CATEGORIES:
                raise ValueError(
                    f"Invalid no_decay entry: {item!r}; allowed are {', '.join(CATEGORIES)} "
                    "or nn.Module subclasses"
                )
            names.add(item)
        elif isinstance(item, type) and issubclass(item, nn.Module):
            types.append(item)
        else:
            raise ValueError(
                f"Invalid no_decay entry: {item!r}; allowed are {', '.join(CATEGORIES)} "
                "or nn.Module subclasses"
            )
    return names, tuple(types)


def _exempt_module(module: nn.Module, names: set[str], types: tuple) -> bool:
    """Whether every parameter of ``module`` (and of its submodules) is exempt."""
    if "norm" in names and isinstance(module, NORM_LAYERS):
        return True
    if "embedding" in names and isinstance(module, EMBEDDING_LAYERS):
        return True
    return bool(types) and isinstance(module, types)


def decay_mask(model: nn.Module, no_decay: NoDecay = CATEGORIES) -> dict[str, bool]:
    """``{name: decayed?}`` for every trainable parameter of ``model``, in ``named_parameters``
    order.

    ``no_decay`` lists what is exempt: the categories ``"bias"`` (any parameter whose own name
    ends in ``bias``, such as ``bias`` or ``in_proj_bias``), ``"norm"`` (every parameter of a
    :data:`NORM_LAYERS` module), ``"embedding"`` (every parameter of an :data:`EMBEDDING_LAYERS`
    module), and any ``nn.Module`` subclasses (every parameter of such a module, submodules
    included). A parameter shared by several modules (tied weights) appears once, under its
    first name, and is exempt if *any* of its owners exempts it. Frozen parameters
    (``requires_grad=False``) are left out, as no optimizer updates them.
    """
    names, types = _check_no_decay(no_decay)
    exempt: set[int] = set()
    for module in model.modules():
        if _exempt_module(module, names, types):
            exempt.update(id(p) for p in module.parameters())
        elif "bias" in names:
            exempt.update(
                id(p) for n, p in module.named_parameters(recurse=False) if n.endswith("bias")
            )
    return {name: id(p) not in exempt for name, p in model.named_parameters() if p.requires_grad}


def decay_groups(
    model: nn.Module, weight_decay: float, no_decay: NoDecay = CATEGORIES
) -> list[dict]:
    r"""Two param groups for ``model``: ``{"params": [...], "weight_decay": weight_decay}`` for
    the weight matrices and ``{"params": [...], "weight_decay": 0.0}`` for what ``no_decay``
    exempts (see :func:`decay_mask`). An empty group is left out. Pass the result to any
    optimizer, e.g. ``optlib.AdamW(decay_groups(model, 0.1), lr=3e-4)``; options such as
    ``lr`` apply to both groups.
    """
    weight_decay = check_nonnegative("weight_decay", weight_decay)
    mask = decay_mask(model, no_decay)
    params = dict(model.named_parameters())
    decay: list[Tensor] = [params[n] for n, d in mask.items() if d]
    keep: list[Tensor] = [params[n] for n, d in mask.items() if not d]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    return groups
