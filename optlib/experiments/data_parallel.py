r"""Data-parallel training with :mod:`torch.distributed` (chapter 11).

:math:`W` processes ("ranks") hold the same model. At every step they cut one global batch of
:math:`B` examples into :math:`W` shards of :math:`b = B/W` (rank :math:`r` takes examples
:math:`r, r+W, r+2W, \dots` of it, as :class:`torch.utils.data.DistributedSampler` does), each
computes the mean gradient :math:`g_r` of its shard, and an *all-reduce* gives every rank

.. math::

   \bar g = \frac1W \sum_{r=1}^{W} g_r = \frac1B \sum_{i \in \text{batch}} \nabla \ell_i ,

the gradient of the whole batch. Every rank then takes the same optimizer step, so the ranks stay
identical and the run is single-process training with batch :math:`B`, up to the order of the
floating-point sums. :class:`~torch.nn.parallel.DistributedDataParallel` (DDP) does the
all-reduce during ``backward()``; :class:`~torch.distributed.optim.ZeroRedundancyOptimizer`
(ZeRO stage 1, Rajbhandari et al. 2020) additionally gives each rank the optimizer state of
only a share of the parameters: each rank steps its share and broadcasts the new values.
Gradient accumulation (:func:`accumulate_gradients`) is the same sum taken over micro-batches
one after another in one process.

The functions named ``*_worker`` run in every rank (``worker(rank, world_size, ...)``, the
process group already initialised) and return plain data; :func:`launch` starts the ranks on
this machine with :mod:`torch.multiprocessing` (fork where the platform allows it, so the ranks
start in a fraction of a second) and a file-based rendezvous (no network port), and always stops
them. Run as a script, the module trains under ``torchrun``, on one machine or on several::

    torchrun --nproc-per-node=2 -m optlib.experiments.data_parallel --steps 20
    torchrun --nnodes=2 --nproc-per-node=4 --rdzv-backend=c10d \
        --rdzv-endpoint=HOST:29500 -m optlib.experiments.data_parallel --steps 20 --zero

The workload is the digits MLP of :func:`optlib.problems.workload`, in float64 by default so
that "equal up to the order of the sums" is visible as agreement to about :math:`10^{-15}`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .._seed import derive_seed
from ..problems.workloads import Workload, workload

__all__ = [
    "accumulate_gradients",
    "allreduce_worker",
    "compare_with_one_process",
    "batch_indices",
    "ddp_worker",
    "launch",
    "problem",
    "reference_run",
    "shard",
    "state_bytes",
    "zero_partition",
]

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def problem(dtype: str = "float64", n_hidden: int = 64, depth: int = 2) -> Workload:
    """The workload every rank trains: the digits MLP (64 → ``n_hidden`` × ``depth`` → 10)."""
    return workload("digits_mlp", n_hidden=n_hidden, depth=depth, dtype=DTYPES[dtype])


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> list[Tensor]:
    """The global batches of a run, the same on every rank: a seeded permutation of
    ``range(n)`` per epoch, cut into ``n // batch_size`` batches."""
    if not 1 <= batch_size <= n:
        raise ValueError(f"Invalid batch_size: {batch_size}; need 1 <= batch_size <= {n}")
    g = torch.Generator().manual_seed(derive_seed(seed))
    per_epoch, out = n // batch_size, []
    while len(out) < steps:
        perm = torch.randperm(n, generator=g)
        out += [perm[i * batch_size : (i + 1) * batch_size] for i in range(per_epoch)]
    return out[:steps]


def shard(idx: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s share of a global batch: entries ``rank, rank + W, ...`` (equal shares
    when :math:`W` divides the batch)."""
    if len(idx) % world_size:
        raise ValueError(f"Invalid batch: {len(idx)} examples do not split into {world_size} "
                         "equal shards")  # fmt: skip
    return idx[rank::world_size]


def _flat_grad(model: nn.Module) -> Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def _flat_params(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _loss_grad(work: Workload, model: nn.Module, idx: Tensor) -> float:
    model.zero_grad(set_to_none=True)
    loss = work.loss_fn(model(work.data.X_train[idx]), work.data.y_train[idx])
    loss.backward()
    return float(loss.detach())


# --------------------------------------------------------------------------- the workers


def allreduce_worker(rank: int, world_size: int, *, batch_size: int = 256, seed: int = 0,
                     dtype: str = "float64") -> dict[str, Any]:  # fmt: skip
    r"""Each rank computes the mean gradient of its shard of one global batch; an all-reduce
    (sum, then :math:`/W`) averages them. Returns the averaged gradient's distance to the
    gradient of the whole batch (computed by every rank alone), relative to its norm, and the
    squared norms of the local and averaged gradients."""
    work = problem(dtype)
    model = work.model(seed)
    (idx,) = batch_indices(len(work.data.y_train), batch_size, 1, seed)
    _loss_grad(work, model, shard(idx, rank, world_size))
    local = _flat_grad(model)
    reduced = local.clone()
    dist.all_reduce(reduced)  # the sum over ranks
    reduced /= world_size
    _loss_grad(work, model, idx)
    big = _flat_grad(model)
    return {
        "rel_diff": float((reduced - big).norm() / big.norm()),
        "local_sq": float(local.double().pow(2).sum()),
        "reduced_sq": float(reduced.double().pow(2).sum()),
        "n_params": local.numel(),
    }


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in ``optimizer.state`` (each storage counted once)."""
    seen, total = set(), 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, Tensor) and value.untyped_storage().data_ptr() not in seen:
                seen.add(value.untyped_storage().data_ptr())
                total += value.untyped_storage().nbytes()
    return total


def _make_optimizer(name: str, params: Any, lr: float, zero: bool) -> torch.optim.Optimizer:
    import optlib

    cls = getattr(optlib, name)
    if zero:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(params, optimizer_class=cls, lr=lr)
    return cls(params, lr=lr)


def ddp_worker(rank: int, world_size: int, *, steps: int = 20, batch_size: int = 256,
               lr: float = 1e-2, optimizer: str = "AdamW", zero: bool = False, seed: int = 0,
               dtype: str = "float64") -> dict[str, Any]:  # fmt: skip
    r"""Train the model with DDP for ``steps`` steps of a global batch of ``batch_size`` with
    optlib's ``optimizer`` (through :class:`~torch.distributed.optim.ZeroRedundancyOptimizer`
    with ``zero``). Returns the final parameters (flattened), the losses of rank 0's shards, the
    bytes of optimizer state this rank holds, which parameter tensors it steps, and per step the
    squared norm of this rank's own gradient (read by a DDP communication hook before the
    all-reduce) and of the all-reduced one."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel

    work = problem(dtype)
    model = work.model(seed)
    ddp = DistributedDataParallel(model)
    local_sq: list[float] = []

    def hook(state, bucket):  # noqa: ANN001, ANN202 (DDP checks the annotations, none is fine)
        # the local gradients, before the all-reduce
        local_sq[-1] += float(bucket.buffer().double().pow(2).sum())
        return default_hooks.allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, hook)
    opt = _make_optimizer(optimizer, ddp.parameters(), lr, zero)
    losses, reduced_sq = [], []
    for idx in batch_indices(len(work.data.y_train), batch_size, steps, seed):
        mine = shard(idx, rank, world_size)
        opt.zero_grad(set_to_none=True)
        local_sq.append(0.0)
        loss = work.loss_fn(ddp(work.data.X_train[mine]), work.data.y_train[mine])
        loss.backward()  # DDP averages the gradients over the ranks here
        reduced_sq.append(float(_flat_grad(model).double().pow(2).sum()))
        opt.step()
        losses.append(float(loss.detach()))
    local = opt.optim if zero else opt
    mine_ids = {id(p) for g in local.param_groups for p in g["params"]}
    return {
        "params": _flat_params(model).tolist(),
        "losses": losses,
        "state_bytes": state_bytes(local),
        "stepped": [i for i, p in enumerate(model.parameters()) if id(p) in mine_ids],
        "local_sq": local_sq,
        "reduced_sq": reduced_sq,
    }


def reference_run(*, steps: int = 20, batch_size: int = 256, lr: float = 1e-2,
                  optimizer: str = "AdamW", seed: int = 0, dtype: str = "float64",
                  micro_batches: int = 1) -> dict[str, Any]:  # fmt: skip
    """The same training in one process on the whole global batch (with ``micro_batches`` > 1:
    by :func:`accumulate_gradients` over that many micro-batches). Returns the final parameters,
    the losses of the whole batches and the optimizer's state bytes."""
    import optlib

    work = problem(dtype)
    model = work.model(seed)
    opt = getattr(optlib, optimizer)(model.parameters(), lr=lr)
    losses = []
    for idx in batch_indices(len(work.data.y_train), batch_size, steps, seed):
        opt.zero_grad(set_to_none=True)
        if micro_batches == 1:
            loss = work.loss_fn(model(work.data.X_train[idx]), work.data.y_train[idx])
            loss.backward()
            losses.append(float(loss.detach()))
        else:
            parts = list(torch.tensor_split(idx, micro_batches))
            losses.append(accumulate_gradients(model, work.loss_fn, work.data.X_train,
                                               work.data.y_train, parts))  # fmt: skip
        opt.step()
    return {"params": _flat_params(model).tolist(), "losses": losses,
            "state_bytes": state_bytes(opt)}  # fmt: skip


def accumulate_gradients(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], X: Tensor, y: Tensor,
    micro_batches: Sequence[Tensor],
) -> float:  # fmt: skip
    r"""Leave in ``.grad`` the gradient of the mean loss over all examples of ``micro_batches``
    (index tensors), computed one micro-batch at a time: each micro-batch's mean loss is weighted
    by its share :math:`b_k/B` of the examples, so unequal micro-batches are exact too. Existing
    gradients are cleared first. Returns the mean loss."""
    total = sum(len(m) for m in micro_batches)
    if total == 0:
        raise ValueError("Invalid micro_batches: no examples")
    model.zero_grad(set_to_none=True)
    mean = 0.0
    for m in micro_batches:
        if len(m) == 0:
            continue
        loss = loss_fn(model(X[m]), y[m]) * (len(m) / total)
        loss.backward()  # adds to .grad
        mean += float(loss.detach())
    return mean


def zero_partition(sizes: Sequence[int], world_size: int) -> list[list[int]]:
    """Which parameter tensors (by index) each rank steps under ZeroRedundancyOptimizer with one
    param group: largest first (a stable sort), each to the rank with the fewest elements so
    far (the lowest rank on a tie), as torch's ``_partition_parameters``."""
    if world_size < 1:
        raise ValueError(f"Invalid world_size: {world_size}; need world_size >= 1")
    loads, out = [0] * world_size, [[] for _ in range(world_size)]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        r = loads.index(min(loads))
        out[r].append(i)
        loads[r] += sizes[i]
    return [sorted(x) for x in out]


def _all_worker(rank: int, world_size: int, *, steps: int, batch_size: int, lr: float,
                optimizer: str, seed: int, dtype: str) -> dict[str, Any]:  # fmt: skip
    hyper = dict(steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
                 dtype=dtype)  # fmt: skip
    return {
        "allreduce": allreduce_worker(rank, world_size, batch_size=batch_size, seed=seed,
                                      dtype=dtype),  # fmt: skip
        "ddp": ddp_worker(rank, world_size, **hyper),
        "zero": ddp_worker(rank, world_size, zero=True, **hyper),
    }


def compare_with_one_process(world_size: int = 2, *, steps: int = 10, batch_size: int = 256,
                             lr: float = 1e-2, optimizer: str = "AdamW", seed: int = 0,
                             dtype: str = "float64", micro_batches: int = 4,
                             timeout_s: float = 180.0) -> dict[str, Any]:  # fmt: skip
    r"""Everything chapter 11 compares, in one launch of ``world_size`` ranks
    (:func:`launch`): the all-reduced gradient against the whole batch's
    (:func:`allreduce_worker`), DDP training with optlib's ``optimizer`` and the same under
    ZeroRedundancyOptimizer (:func:`ddp_worker`), against one process on the whole batch and one
    accumulating ``micro_batches`` micro-batches (:func:`reference_run`).

    Returns plain JSON data: ``allreduce_rel_diff`` (per rank), ``ddp_rel_diff``,
    ``zero_rel_diff``, ``accumulation_rel_diff`` (the largest parameter difference to the
    one-process run, relative to its largest parameter), ``ranks_identical`` (every rank ends
    with the same parameters, with and without ZeRO), ``state_bytes_one_process``,
    ``state_bytes_ddp`` and ``state_bytes_zero`` (per rank), ``zero_stepped`` (the tensors each
    rank steps), ``tensor_sizes``, ``losses`` (the one-process run's) and, per step,
    ``local_sq`` (per rank) and ``reduced_sq``, the squared norms of the shard gradients and of
    their average."""
    hyper = dict(steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
                 dtype=dtype)  # fmt: skip
    ranks = launch(_all_worker, world_size, timeout_s=timeout_s, **hyper)
    ref = reference_run(**hyper)
    acc = reference_run(micro_batches=micro_batches, **hyper)
    b = torch.tensor(ref["params"])

    def rel(params: list[float]) -> float:
        return float((torch.tensor(params) - b).abs().max() / b.abs().max())

    return {
        "world_size": world_size, **hyper, "micro_batches": micro_batches,
        "allreduce_rel_diff": [r["allreduce"]["rel_diff"] for r in ranks],
        "ddp_rel_diff": max(rel(r["ddp"]["params"]) for r in ranks),
        "zero_rel_diff": max(rel(r["zero"]["params"]) for r in ranks),
        "accumulation_rel_diff": rel(acc["params"]),
        "ranks_identical": all(r[k]["params"] == ranks[0][k]["params"]
                               for r in ranks for k in ("ddp", "zero")),
        "state_bytes_one_process": ref["state_bytes"],
        "state_bytes_ddp": [r["ddp"]["state_bytes"] for r in ranks],
        "state_bytes_zero": [r["zero"]["state_bytes"] for r in ranks],
        "zero_stepped": [r["zero"]["stepped"] for r in ranks],
        "tensor_sizes": [p.numel() for p in problem(dtype).model(seed).parameters()],
        "losses": ref["losses"],
        "local_sq": [r["ddp"]["local_sq"] for r in ranks],
        "reduced_sq": ranks[0]["ddp"]["reduced_sq"],
    }  # fmt: skip


# --------------------------------------------------------------------------- launching


def _entry(rank: int, fn: Callable[..., Any], world_size: int, store: str, results: str,
           timeout_s: float, kwargs: dict) -> None:  # fmt: skip
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))  # fmt: skip
    try:
        out = fn(rank, world_size, **kwargs)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(out, os.path.join(results, f"rank{rank}.pt"))


def _start_method() -> str:
    import multiprocessing

    # fork starts a rank in milliseconds (nothing to import again); macOS's system libraries
    # are not fork-safe, so spawn there and where fork does not exist
    if sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def _import_for_ranks() -> None:
    """Import what the workers use (DDP imports torch._dynamo, seconds on a laptop) once here,
    so that forked ranks share it instead of each importing it again."""
    import torch._dynamo  # noqa: F401
    import torch.distributed.algorithms.ddp_comm_hooks.default_hooks  # noqa: F401
    import torch.distributed.optim  # noqa: F401
    import torch.nn.parallel  # noqa: F401

    import optlib  # noqa: F401


def launch(fn: Callable[..., Any], world_size: int, *, timeout_s: float = 120.0,
           start_method: str | None = None, **kwargs: Any) -> list[Any]:  # fmt: skip
    """Run ``fn(rank, world_size, **kwargs)`` in ``world_size`` new processes joined in a gloo
    process group (rendezvous through a file in a fresh temporary folder: no port to choose),
    and return what each rank returned, in rank order.

    The ranks are always stopped: a rank that raises ends the run with its error (the others
    are terminated), and so does ``timeout_s`` seconds without all ranks finishing (each
    collective also times out then); the temporary folder is removed."""
    import torch.multiprocessing as mp

    if world_size < 1:
        raise ValueError(f"Invalid world_size: {world_size}; need world_size >= 1")
    method = start_method or _start_method()
    if method == "fork":
        _import_for_ranks()
    folder = tempfile.mkdtemp(prefix="optlib-dp-")
    store = os.path.join(folder, "store")
    context = None
    try:
        context = mp.start_processes(
            _entry, args=(fn, world_size, store, folder, timeout_s, kwargs), nprocs=world_size,
            join=False, start_method=method,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not context.join(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the {world_size} ranks did not finish in {timeout_s:g} s")
        return [torch.load(os.path.join(folder, f"rank{r}.pt"), weights_only=False)
                for r in range(world_size)]  # fmt: skip
    finally:
        if context is not None:
            for p in context.processes:
                if p.is_alive():
                    p.terminate()
            for p in context.processes:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join(5)
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- torchrun


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Train with DDP under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``
    and ``MASTER_PORT``); rank 0 prints a JSON summary and, with ``--check``, compares the result
    with one process training on the whole batch."""
    parser = argparse.ArgumentParser(prog="python -m optlib.experiments.data_parallel",
                                     description=main.__doc__)  # fmt: skip
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256, help="global batch")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--optimizer", default="AdamW", help="an optlib optimizer")
    parser.add_argument("--zero", action="store_true", help="ZeroRedundancyOptimizer")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="compare with one process")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    hyper = dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                 optimizer=args.optimizer, seed=args.seed, dtype=args.dtype)  # fmt: skip
    try:
        out = ddp_worker(rank, world_size, zero=args.zero, **hyper)
        gathered = [None] * world_size
        dist.all_gather_object(gathered, out["state_bytes"])
    finally:
        dist.destroy_process_group()
    if rank != 0:
        return None
    summary = {"world_size": world_size, **hyper, "zero": args.zero,
               "first_loss": out["losses"][0], "last_loss": out["losses"][-1],
               "state_bytes_per_rank": gathered}  # fmt: skip
    if args.check:
        ref = reference_run(**hyper)
        a, b = torch.tensor(out["params"]), torch.tensor(ref["params"])
        summary["max_rel_diff_to_one_process"] = float((a - b).abs().max() / b.abs().max())
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
