"""optlib.experiments.data_parallel: two processes on one CPU (gloo) train exactly as one process
on the whole batch, ZeRO-1 shards the optimizer state as torch partitions it and changes nothing
else, gradient accumulation equals the big batch, and every launch ends with its processes gone.

The ranks start by fork (Linux; spawn elsewhere) and meet through a file in a fresh temporary
folder, so no network port is chosen; every launch has a deadline after which its ranks are
killed, and each collective times out too. The torchrun test lets torchrun pick a free port
itself (``--standalone``) and is bounded by a subprocess timeout.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from optlib.experiments import data_parallel as dp

EPS = float(torch.finfo(torch.float64).eps)
STEPS = 8


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _children() -> set[int]:
    """Our live child processes (Linux), to check that launches leave none behind."""
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(os.getpid())],
                             capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return set()
    return {int(p) for p in out.split() if _alive(int(p))}


@pytest.fixture(scope="module")
def ddp_runs():
    """One 2-rank DDP run, one with ZeRO, and the single-process reference."""
    before = _children()
    plain = dp.launch(dp.ddp_worker, 2, timeout_s=180, steps=STEPS)
    zero = dp.launch(dp.ddp_worker, 2, timeout_s=180, steps=STEPS, zero=True)
    ref = dp.reference_run(steps=STEPS)
    assert _children() <= before  # every rank has exited
    return plain, zero, ref


@pytest.mark.timeout(300)
def test_all_reduced_gradient_is_the_big_batch_gradient():
    out = dp.launch(dp.allreduce_worker, 2, timeout_s=120)
    # a sum of 2 float64 means against one mean of 256 per-example terms: rounding of order
    # log2(256) eps relative to the gradient, far below 1e-13
    assert all(r["rel_diff"] < 1e-13 for r in out)
    assert out[0]["reduced_sq"] == out[1]["reduced_sq"]  # every rank holds the same average


@pytest.mark.timeout(300)
def test_ddp_with_an_optlib_optimizer_matches_one_process_on_the_whole_batch(ddp_runs):
    plain, _, ref = ddp_runs
    a, b = torch.tensor(plain[0]["params"]), torch.tensor(ref["params"])
    assert torch.equal(a, torch.tensor(plain[1]["params"]))  # the ranks stay identical
    # float64, 8 AdamW steps on gradients that differ by the order of sums only (a few eps
    # relative): the parameters agree to far better than 1e-12 of their size
    assert float((a - b).abs().max()) <= 1e-12 * float(b.abs().max())
    assert not torch.equal(a, torch.tensor(dp.reference_run(steps=0)["params"]))  # it trained


@pytest.mark.timeout(300)
def test_zero_shards_the_state_as_torch_partitions_and_changes_nothing_else(ddp_runs):
    plain, zero, ref = ddp_runs
    for r in range(2):
        assert torch.equal(torch.tensor(zero[r]["params"]), torch.tensor(plain[r]["params"]))
    sizes = [p.numel() for p in dp.problem().model(0).parameters()]
    assert [z["stepped"] for z in zero] == dp.zero_partition(sizes, 2)
    assert all(p["stepped"] == list(range(len(sizes))) for p in plain)
    # AdamW keeps m and v (8 bytes each per float64 parameter) and a step counter per tensor
    # (a float32 0-d tensor, as torch.optim stores it: 4 bytes)
    expected = [sum(16 * sizes[i] + 4 for i in part) for part in dp.zero_partition(sizes, 2)]
    assert [z["state_bytes"] for z in zero] == expected
    assert sum(expected) == ref["state_bytes"] == plain[0]["state_bytes"]


def test_noise_scale_from_the_ranks_grows_as_training_proceeds(ddp_runs):
    from optlib.experiments.noise_scale import noise_scale_from_norms

    plain, _, _ = ddp_runs
    local = [sum(r["local_sq"][t] for r in plain) / 2 for t in range(STEPS)]
    reduced = plain[0]["reduced_sq"]
    assert all(loc > red for loc, red in zip(local, reduced))  # a shard is noisier
    first = noise_scale_from_norms(local[0], 128, reduced[0], 256).b_simple
    assert 1 < first < 1000


@pytest.mark.parametrize("sizes", [[4, 4, 4], [5, 1, 6], [12]])
def test_accumulated_gradient_equals_the_big_batch_gradient(sizes):
    work = dp.problem()
    model = work.model(3)
    idx = torch.randperm(len(work.data.y_train), generator=torch.Generator().manual_seed(0))
    idx = idx[: sum(sizes)]
    parts = list(torch.split(idx, sizes))
    for p in model.parameters():
        p.grad = torch.ones_like(p)  # stale gradients must not survive
    loss = dp.accumulate_gradients(model, work.loss_fn, work.data.X_train, work.data.y_train,
                                   parts)  # fmt: skip
    acc = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    big = work.loss_fn(model(work.data.X_train[idx]), work.data.y_train[idx])
    big.backward()
    assert math.isclose(loss, float(big), rel_tol=1e-14)
    for a, p in zip(acc, model.parameters()):
        # float64 sums of 12 terms in another order: a few eps of the gradient's scale
        torch.testing.assert_close(a, p.grad, rtol=1e-13, atol=1e-15)


def test_accumulated_training_equals_big_batch_training():
    one = dp.reference_run(steps=5, batch_size=240)
    many = dp.reference_run(steps=5, batch_size=240, micro_batches=7)
    a, b = torch.tensor(many["params"]), torch.tensor(one["params"])
    assert float((a - b).abs().max()) <= 1e-12 * float(b.abs().max())


def test_zero_partition_is_greedy_by_size():
    assert dp.zero_partition([10, 30, 20, 5], 2) == [[1, 3], [0, 2]]
    assert dp.zero_partition([7, 7, 7], 2) == [[0, 2], [1]]  # ties: stable, lowest rank
    assert dp.zero_partition([3], 4) == [[0], [], [], []]
    with pytest.raises(ValueError, match="world_size"):
        dp.zero_partition([3], 0)


def test_batches_and_shards():
    batches = dp.batch_indices(10, 4, 5, seed=0)
    assert [len(b) for b in batches] == [4] * 5
    first_epoch = torch.cat(batches[:2]).tolist()  # 10 // 4 = 2 disjoint batches per epoch
    assert len(set(first_epoch)) == 8 and set(first_epoch) <= set(range(10))
    assert dp.shard(torch.arange(6), 1, 3).tolist() == [1, 4]
    with pytest.raises(ValueError, match="equal shards"):
        dp.shard(torch.arange(5), 0, 2)
    with pytest.raises(ValueError, match="batch_size"):
        dp.batch_indices(10, 11, 1, seed=0)


# --------------------------------------------------------------------------- launching


def _fails(rank: int, world_size: int) -> None:
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    torch.distributed.barrier()  # rank 0 would wait here for ever without the clean-up


def _sleeps(rank: int, world_size: int) -> None:
    time.sleep(600)


def test_a_failing_rank_ends_the_launch_and_leaves_no_process():
    before = _children()
    start = time.monotonic()
    # rank 1's error, or rank 0's when rank 1's exit broke its barrier first
    with pytest.raises(Exception, match="fails on purpose|Connection reset|Connection closed"):
        dp.launch(_fails, 2, timeout_s=60)
    assert time.monotonic() - start < 50
    assert _children() <= before


def test_a_launch_past_its_deadline_is_killed():
    before = _children()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        dp.launch(_sleeps, 2, timeout_s=3)
    assert time.monotonic() - start < 30
    assert _children() <= before


# --------------------------------------------------------------------------- torchrun


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_torchrun_command_of_the_chapter_runs(tmp_path):
    """The command the chapter shows, on this machine: torchrun starts 2 fresh processes (no
    fork), chooses a free port itself (--standalone), and rank 0 checks against one process."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc-per-node=2", "-m",
           "optlib.experiments.data_parallel", "--steps", "4", "--zero", "--check"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=500)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["zero"]
    assert summary["max_rel_diff_to_one_process"] <= 1e-12
    assert sum(summary["state_bytes_per_rank"]) == dp.reference_run(steps=1)["state_bytes"]


@pytest.mark.timeout(300)
def test_compare_with_one_process_summarises_one_launch():
    out = dp.compare_with_one_process(2, steps=2, batch_size=64, micro_batches=3)
    assert max(out["allreduce_rel_diff"]) < 1e-13
    for key in ("ddp_rel_diff", "zero_rel_diff", "accumulation_rel_diff"):
        assert out[key] <= 1e-12, (key, out[key])
    assert out["ranks_identical"]
    assert sum(out["state_bytes_zero"]) == out["state_bytes_one_process"]
    assert out["zero_stepped"] == dp.zero_partition(out["tensor_sizes"], 2)
    assert len(out["reduced_sq"]) == 2 and len(out["local_sq"]) == 2
    # a shard of 32 examples is noisier than the batch of 64
    assert all(sum(r[t] for r in out["local_sq"]) / 2 > out["reduced_sq"][t] for t in range(2))
    json.dumps(out)  # plain data, as the chapter's cache stores it
