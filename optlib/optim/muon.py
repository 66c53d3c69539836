r"""Muon: momentum orthogonalised by Newton–Schulz (chapter 10).

Same update rule as the authors' reference code, KellerJordan/Muon ``muon.py``
(``SingleDeviceMuon`` and ``SingleDeviceMuonWithAuxAdam``); Jordan et al., *Muon: An optimizer
for hidden layers in neural networks* (2024). For a hidden weight matrix :math:`\theta` with
gradient :math:`g_t`, momentum :math:`\beta` and learning rate :math:`\eta`:

.. math::

   b_t &\leftarrow \operatorname{lerp}(b_{t-1}, g_t, 1-\beta)
        = \beta\, b_{t-1} + (1-\beta)\, g_t && (b_0 = 0) \\
   u_t &\leftarrow \begin{cases} \operatorname{lerp}(g_t, b_t, \beta) & \text{nesterov} \\
        b_t & \text{otherwise} \end{cases} \\
   o_t &\leftarrow \mathrm{NS}_5(u_t)\, \sqrt{\max(1,\ \text{rows}/\text{cols})} \\
   \theta_t &\leftarrow \theta_{t-1}(1 - \eta\lambda) - \eta\, o_t

A convolution filter ``(out, in, kh, kw)`` is viewed as the matrix ``(out, in·kh·kw)`` for
:math:`\mathrm{NS}_5` and for rows/cols. :math:`\mathrm{NS}_5` (:func:`newton_schulz5`) replaces
:math:`u = U\Sigma V^\top` by approximately :math:`U V^\top`: it is the nearest semi-orthogonal
matrix, so every direction in the update gets the same step length.

Muon is meant for hidden matrices only. Embeddings, the output head and every 1-D parameter
(biases, gains) go to AdamW; :class:`MuonWithAuxAdamW` runs both in one optimizer and
:func:`muon_param_groups` splits a model's parameters the way the authors do.

Deviations from the reference (none changes an update of a parameter that has a gradient):

* a parameter whose ``.grad`` is ``None`` is skipped, as in :mod:`torch.optim` (the reference
  substitutes a zero gradient to keep distributed ranks in step);
* ``p.grad`` is left untouched (the reference overwrites it with the Nesterov blend in place);
* every tensor with more than 2 dimensions is flattened to ``(shape[0], -1)`` (the reference
  flattens 4-D tensors only) and rows/cols are read from that matrix (as the reference does since
  its fix of issue #63; earlier versions read the kernel's ``kh/kw``).

**optlib.Muon and torch.optim.Muon.** torch 2.13 ships its own ``torch.optim.Muon`` with the same
update rule (it cites this reference) but not the same defaults: optlib follows the authors,
``lr=0.02, weight_decay=0``; torch has ``lr=1e-3, weight_decay=0.1``. So
``optlib.Muon(params)`` is *not* ``torch.optim.Muon(params)``; pass torch's values to get
torch's run. Beyond that, optlib takes torch's arguments too (``ns_coefficients``, ``eps``,
``adjust_lr_fn``, with torch's defaults) and keeps torch's state layout (``momentum_buffer``),
so a ``torch.optim.Muon`` state dict loads into ``optlib.Muon`` and an ``optlib.Muon`` state dict
into ``torch.optim.Muon`` (:meth:`Muon.load_state_dict`). With equal hyperparameters the two
agree to the rounding of the bfloat16 iteration, not bit for bit: torch normalises by
:math:`\max(\lVert u\rVert_F, \epsilon)` and fuses the products with ``addmm``, the reference
divides by :math:`\lVert u\rVert_F + \epsilon`. optlib adds ``ns_dtype`` (torch always
iterates in bfloat16) and accepts tensors of more than 2 dimensions (torch: matrices only).
Complex parameters are refused at construction (torch refuses them at the first step): the
iteration would need :math:`XX^H` and a complex dtype, and casting to bfloat16 would drop the
imaginary part.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from ._base import Optimizer, new_step_counter, scalar, step_value
from ._fused import fused_step
from ._fused_updates import ADAMW_AUX_UPDATE
from ._moments import real_views
from ._validate import (
    check_beta,
    check_betas,
    check_choice,
    check_flag,
    check_interval,
    check_nonnegative,
    check_positive_int,
)
from .adam import adam_update

#: Coefficients (a, b, c) of the quintic Newton–Schulz iteration, chosen by the authors to
#: maximise the slope at zero (so small singular values grow fast) at the price of converging to
#: a band around 1 instead of to 1 exactly.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

_MUON_DEFAULTS = dict(
    lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True, ns_steps=5,
    ns_coefficients=NS_COEFFICIENTS, eps=1e-7, adjust_lr_fn=None,
)  # fmt: skip
#: ``adjust_lr_fn`` values (torch.optim.Muon's): the reference's √max(1, rows/cols), or Moonshot's
#: 0.2·√max(rows, cols), which gives the update AdamW's RMS (Liu et al., 2025).
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
_ADAMW_DEFAULTS = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)


def fast_ns_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype Newton–Schulz runs in with ``ns_dtype="auto"``: bfloat16 where ``device``
    multiplies bfloat16 matrices faster than float32 (CUDA with bfloat16 support; a CPU with
    AMX matrix units that oneDNN may use), float32 elsewhere.

    On a CPU without bfloat16 matrix units a bfloat16 product is emulated, several times slower
    than float32 (4x on this project's machine with oneDNN capped below AMX; the issue that asked
    for this measured 22x elsewhere), while with AMX it is about 5x *faster* than float32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and _cpu_bf16_matrix_units():
        return torch.bfloat16
    return torch.float32


def _cpu_bf16_matrix_units() -> bool:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL"
    if cap.upper() != "ALL" and "AMX" not in cap.upper():
        return False  # oneDNN told not to use the matrix units
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(amx is not None and amx() and torch.backends.mkldnn.is_available())


def resolve_ns_dtype(
    ns_dtype: torch.dtype | str | None, device: torch.device
) -> torch.dtype | None:
    """``ns_dtype`` as :func:`newton_schulz5` takes it (``"auto"``: :func:`fast_ns_dtype`)."""
    return fast_ns_dtype(device) if ns_dtype == "auto" else ns_dtype


def newton_schulz5(
    G: Tensor,
    steps: int = 5,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
) -> Tensor:
    r"""Approximately orthogonalise the matrix ``G`` (its "zeroth power" :math:`UV^\top`).

    .. math::

       X_0 = \frac{G}{\lVert G\rVert_F + 10^{-7}} \ (\text{transposed if rows} > \text{cols}),
       \qquad A_k = X_k X_k^\top, \qquad X_{k+1} = a X_k + (b A_k + c A_k^2) X_k

    with :math:`(a, b, c) =` :data:`NS_COEFFICIENTS`. Dividing by the Frobenius norm puts every
    singular value in :math:`[0, 1]`; each step maps a singular value :math:`\sigma` to
    :math:`a\sigma + b\sigma^3 + c\sigma^5`, which pushes it towards a band around 1 (roughly
    0.7–1.2 after five steps), while :math:`U` and :math:`V` are unchanged.

    Args:
        G: a matrix (2-D tensor).
        steps: number of iterations.
        dtype: the dtype the iteration runs in; ``torch.bfloat16`` (the reference's choice, fast
            on accelerators) by default, ``None`` for ``G``'s own dtype (e.g. float64 in tests).
        coefficients: :math:`(a, b, c)`.
        eps: the :math:`10^{-7}` added to the norm.

    Returns:
        the orthogonalised matrix, same shape as ``G``, in ``dtype``.
    """
    if G.ndim != 2:
        raise ValueError(f"newton_schulz5 expects a matrix, got a tensor of shape {tuple(G.shape)}")
    a, b, c = coefficients
    X = G.to(dtype) if dtype is not None else G
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T  # iterate on the wide orientation: A = X Xᵀ is the smaller Gram matrix
    X = X / (X.norm() + eps)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def update_scale(rows: int, cols: int, adjust_lr_fn: str | None = None) -> float:
    r"""The factor on :math:`\mathrm{NS}_5(u)`: the reference's
    :math:`\sqrt{\max(1, \text{rows}/\text{cols})}` (``None``, ``"original"``), or
    :math:`0.2\sqrt{\max(\text{rows}, \text{cols})}` (``"match_rms_adamw"``, as torch)."""
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1.0, rows / cols))


def muon_update(
    theta: Tensor,
    g: Tensor,
    b: Tensor,
    *,
    lr: float,
    momentum: float,
    nesterov: bool,
    ns_steps: int,
    weight_decay: float,
    ns_dtype: torch.dtype | str | None,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    adjust_lr_fn: str | None = None,
) -> None:
    r"""One Muon step on one weight tensor, in place (``b`` is the momentum buffer :math:`b`)."""
    b.lerp_(g, 1 - momentum)
    u = g.lerp(b, momentum) if nesterov else b
    U = u.reshape(len(u), -1) if u.ndim > 2 else u
    dtype = resolve_ns_dtype(ns_dtype, U.device)
    o = newton_schulz5(U, ns_steps, dtype=dtype, coefficients=ns_coefficients, eps=eps)
    o = o * update_scale(U.size(0), U.size(1), adjust_lr_fn)
    theta.mul_(1 - lr * weight_decay)
    theta.add_(o.reshape_as(theta), alpha=-lr)


def _check_muon_params(params: Iterable[Tensor]) -> None:
    for p in params:
        if p.is_complex():
            raise ValueError(
                f"Invalid params: Muon does not support complex parameters (got one of shape "
                f"{tuple(p.shape)}): Newton-Schulz in bfloat16 would drop the imaginary part. "
                "Optimise it with AdamW (MuonWithAuxAdamW's AdamW groups take complex ones)."
            )
        if p.ndim < 2:
            raise ValueError(
                f"Invalid params: Muon only updates matrices (ndim >= 2), got a parameter of "
                f"shape {tuple(p.shape)}. Optimise embeddings, the output head, biases and gains "
                "with AdamW: use MuonWithAuxAdamW with param groups from muon_param_groups(model)."
            )


def _check_muon_hyper(group: dict) -> None:
    check_nonnegative("lr", group["lr"])
    check_beta("momentum", group["momentum"])
    check_nonnegative("weight_decay", group["weight_decay"])
    check_positive_int("ns_steps", group["ns_steps"])
    check_flag("nesterov", group["nesterov"])
    check_nonnegative("eps", group["eps"])
    check_choice("adjust_lr_fn", group["adjust_lr_fn"], ADJUST_LR_FNS)
    coefficients = group["ns_coefficients"]
    if not isinstance(coefficients, tuple | list) or len(coefficients) != 3:
        raise ValueError(f"Invalid ns_coefficients: {coefficients!r}; expected (a, b, c)")
    for name, value in zip("abc", coefficients):
        check_interval(f"ns_coefficients {name}", value, -math.inf)


def _muon_step_group(optimizer: torch.optim.Optimizer, group: dict) -> None:
    hyper = dict(
        lr=scalar(group["lr"]),
        momentum=group["momentum"],
        nesterov=group["nesterov"],
        ns_steps=group["ns_steps"],
        weight_decay=group["weight_decay"],
        ns_dtype=group["ns_dtype"],
        ns_coefficients=tuple(group["ns_coefficients"]),
        eps=group["eps"],
        adjust_lr_fn=group["adjust_lr_fn"],
    )
    params, grads = optimizer._params_and_grads(group)  # refuses sparse gradients by name
    for p, g in zip(params, grads):
        state = optimizer.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        muon_update(p, g, state["momentum_buffer"], **hyper)


class Muon(Optimizer):
    r"""Muon for hidden weight matrices (see the module docstring for the update).

    Args:
        params: parameters or param groups; every parameter must have ``ndim >= 2``.
        lr: learning rate :math:`\eta \ge 0`, in units of spectral norm per step.
        weight_decay: decoupled (AdamW-style) weight decay :math:`\lambda \ge 0`.
        momentum: momentum :math:`\beta \in [0, 1)`.
        nesterov: use the Nesterov blend :math:`\operatorname{lerp}(g, b, \beta)`.
        ns_steps: Newton–Schulz iterations.
        ns_dtype: dtype of the Newton–Schulz iteration: ``"auto"`` (default) picks the dtype
            the device is fast in (:func:`fast_ns_dtype`: bfloat16 on CUDA and on CPUs with AMX,
            as the reference; float32 on CPUs without bfloat16 matrix units, where bfloat16 is
            several times slower); ``torch.bfloat16`` forces the reference's choice; ``None``
            runs it in each parameter's own dtype (exact float64 checks).
        ns_coefficients: :math:`(a, b, c)` of the iteration (torch.optim.Muon's argument).
        eps: added to :math:`\lVert u\rVert_F` before dividing (torch.optim.Muon's argument).
        adjust_lr_fn: ``None``/``"original"`` (the reference's scale) or ``"match_rms_adamw"``
            (torch.optim.Muon's argument, :func:`update_scale`).

    **Defaults differ from torch.optim.Muon** (lr 0.02 and weight decay 0 here, the authors'
    values; 1e-3 and 0.1 in torch): see the module docstring. Its state dicts load both ways.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 0.02,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        *,
        ns_dtype: torch.dtype | str | None = "auto",
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
        adjust_lr_fn: str | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            ns_dtype=ns_dtype,
            ns_coefficients=tuple(ns_coefficients),
            eps=eps,
            adjust_lr_fn=adjust_lr_fn,
        )
        _check_muon_hyper(defaults)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        _check_muon_params(params)
        super().add_param_group(param_group)
        _check_muon_hyper(self.param_groups[-1])

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loader, also for a ``torch.optim.Muon`` state dict (or an older optlib one):
        a hyperparameter the saved groups lack (``ns_dtype``, which torch does not have) keeps
        this optimizer's value; the loaded groups are then checked like the constructor's."""
        _load_filling_groups(self, state_dict)
        for group in self.param_groups:
            _check_muon_hyper(group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            _muon_step_group(self, group)
        return loss


def _load_filling_groups(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """``torch.optim.Optimizer.load_state_dict`` with every saved group completed by the
    current group's hyperparameters where it lacks one (a state dict from torch.optim.Muon or
    from an older optlib)."""
    if len(state_dict["param_groups"]) != len(optimizer.param_groups):
        raise ValueError(
            "loaded state dict has a different number of parameter groups "
            f"({len(state_dict['param_groups'])}, this optimizer {len(optimizer.param_groups)})"
        )
    groups = [
        {**{k: v for k, v in current.items() if k != "params"}, **saved}
        for current, saved in zip(optimizer.param_groups, state_dict["param_groups"])
    ]
    torch.optim.Optimizer.load_state_dict(optimizer, {**state_dict, "param_groups": groups})


class MuonWithAuxAdamW(Optimizer):
    r"""One optimizer for a whole network: Muon on hidden matrices, AdamW on everything else.

    Every param group carries ``use_muon``. Groups with ``use_muon=True`` take :class:`Muon`'s
    hyperparameters (defaults lr 0.02, momentum 0.95, nesterov True, ns_steps 5, weight_decay 0,
    ns_dtype ``"auto"``); groups with ``use_muon=False`` take AdamW's (defaults lr 3e-4,
    betas (0.9, 0.95), eps 1e-10, weight_decay 0, as in the reference) and are updated by optlib's
    Adam step with decoupled weight decay (``fused=True``, for the constructor or per group: on
    optlib's fused path, :mod:`optlib.optim._fused`):

    .. math::

       \theta \leftarrow \theta(1-\eta\lambda); \quad
       m \leftarrow \operatorname{lerp}(m, g, 1-\beta_1); \quad
       v \leftarrow \operatorname{lerp}(v, g^2, 1-\beta_2); \quad
       \theta \leftarrow \theta - \eta\,
       \frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}

    Build the groups with :func:`muon_param_groups`::

        opt = MuonWithAuxAdamW(muon_param_groups(model, muon_lr=0.02, adamw_lr=3e-4))
    """

    def __init__(self, param_groups: Iterable[dict], *, fused: bool = False) -> None:
        param_groups = list(param_groups)
        if not param_groups or not all(isinstance(g, dict) for g in param_groups):
            raise ValueError(
                "Invalid param_groups: MuonWithAuxAdamW takes a list of dicts, each with "
                "'params' and 'use_muon' (see muon_param_groups)"
            )
        self._fused_default = bool(fused)
        super().__init__(param_groups, {})

    def add_param_group(self, param_group: dict) -> None:
        if "use_muon" not in param_group:
            raise ValueError(
                "Invalid param group: missing 'use_muon' (True for Muon, False for AdamW)"
            )
        use_muon = param_group["use_muon"]
        defaults = (
            dict(_MUON_DEFAULTS, ns_dtype="auto")
            if use_muon
            else dict(_ADAMW_DEFAULTS, fused=getattr(self, "_fused_default", False))
        )
        unknown = set(param_group) - set(defaults) - {"params", "use_muon"}
        if unknown:
            kind = "Muon" if use_muon else "AdamW"
            raise ValueError(
                f"Invalid param group keys {sorted(unknown)} for a {kind} group; allowed: "
                f"{sorted(defaults)}"
            )
        group = {**defaults, **param_group}
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if use_muon:
            _check_muon_params(params)
            _check_muon_hyper(group)
        else:
            check_nonnegative("lr", group["lr"])
            check_betas(group["betas"])
            check_nonnegative("eps", group["eps"])
            check_nonnegative("weight_decay", group["weight_decay"])
        super().add_param_group(group)

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loader; a saved group that lacks a hyperparameter (an older optlib state dict)
        keeps this optimizer's value for it."""
        _load_filling_groups(self, state_dict)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Take one step; ``closure`` re-evaluates the loss and returns it."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            if group["use_muon"]:
                _muon_step_group(self, group)
                continue
            if group.get("fused") and fused_step(self, group, ADAMW_AUX_UPDATE):
                continue
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("MuonWithAuxAdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = new_step_counter()
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                # complex parameters as pairs of reals, as torch.optim's AdamW
                (p, g, m, v), = zip(*real_views([p], [p.grad], [state["exp_avg"]],
                                               [state["exp_avg_sq"]]))  # fmt: skip
                adam_update(
                    p,
                    g,
                    m,
                    v,
                    step=step_value(state["step"]),
                    lr=scalar(group["lr"]),
                    beta1=beta1,
                    beta2=beta2,
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                    decoupled=True,
                )
        return loss


def muon_param_groups(
    model: nn.Module,
    *,
    head: nn.Module | None = None,
    muon_lr: float = 0.02,
    adamw_lr: float = 3e-4,
    weight_decay: float = 0.0,
    **muon_kwargs: object,
) -> list[dict]:
    """Split ``model``'s parameters the way Muon's authors do, as groups for MuonWithAuxAdamW.

    * Muon (``use_muon=True``): every hidden weight with ``ndim >= 2``;
    * AdamW (``use_muon=False``): embeddings (weights of ``nn.Embedding``/``nn.EmbeddingBag``
      and parameters whose name contains ``"embed"``), the output ``head`` (by default the last
      ``nn.Linear`` in ``model.modules()``), and every parameter with ``ndim < 2`` (biases, gains).

    A tied parameter (the head sharing the embedding's weight) appears once, on the AdamW side.
    ``muon_kwargs`` (momentum, nesterov, ns_steps, ns_dtype, ns_coefficients, eps,
    adjust_lr_fn) go to the Muon group. Empty groups
    are left out.
    """
    if head is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    adamw_ids: set[int] = set()
    if head is not None:
        adamw_ids.update(id(p) for p in head.parameters())
    for m in model.modules():
        if isinstance(m, nn.Embedding | nn.EmbeddingBag):
            adamw_ids.update(id(p) for p in m.parameters())
    muon, adamw, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        if p.ndim >= 2 and id(p) not in adamw_ids and "embed" not in name:
            muon.append(p)
        else:
            adamw.append(p)
    groups = [
        dict(params=muon, use_muon=True, lr=muon_lr, weight_decay=weight_decay, **muon_kwargs),
        dict(params=adamw, use_muon=False, lr=adamw_lr, weight_decay=weight_decay),
    ]
    return [g for g in groups if g["params"]]
