"""``python -m optlib.bench steps``: a tiny smoke run through the command line, and the pieces
(bytes per parameter from each update's state, the streaming kernels, interleaving)."""

import json
import math

import pytest
import torch

import optlib
from optlib.bench import steps
from optlib.bench.__main__ import main as bench_main

PICKED = ["SGD", "AdamW", "RMSprop", "Lion"]  # torch fused / torch foreach only / not in torch


def test_tiny_run_reports_every_path_against_the_floor(tmp_path, capsys):
    path = tmp_path / "steps.json"
    argv = ["steps", "--sizes", "3k", "--threads", "1", "--rounds", "2", "--warmup", "1"]
    argv += ["--tensors", "7", "--optimizers", *PICKED, "--json", str(path), "--repeats", "2"]
    threads = torch.get_num_threads()
    assert bench_main(argv) == 0
    assert torch.get_num_threads() == threads
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines()]
    assert [r[0] for r in rows if r and r[0] in steps.CONFIGS] == PICKED
    assert f"{len(PICKED)}/{len(PICKED)}" in err  # the progress bar, on stderr
    saved = json.loads(path.read_text())
    assert saved["machine"]["torch"] == torch.__version__
    assert saved["repeats"] == 2 and "in 2 builds" in out
    by_name = {r["optimizer"]: r for r in saved["rows"]}
    assert set(by_name["SGD"]["times_ms"]) == set(steps.PATHS)
    assert set(by_name["RMSprop"]["times_ms"]) == {
        "torch foreach",
        "optlib foreach",
        "optlib fused",
    }
    assert set(by_name["Lion"]["times_ms"]) == {"optlib foreach", "optlib fused"}
    assert [by_name[n]["reference"] for n in PICKED] == [
        "torch fused",
        "torch fused",
        "torch foreach",
        "optlib foreach",
    ]
    assert [by_name[n]["bytes_per_param"] for n in PICKED] == [20, 28, 20, 20]
    for r in saved["rows"]:
        assert r["size"] == 3000 and r["n_tensors"] == 7 and r["threads"] == 1
        assert set(r["stream_gbs"]) == set(steps.STREAMS)
        # derived numbers recomputed from the saved ones by the same formulas: a few ulps, and
        # any formula error (a unit, a factor 1e3) is far outside rel 1e-12
        assert r["bandwidth_gbs"] == max(r["stream_gbs"].values())
        floor_ms = 1e3 * r["bytes_per_param"] * r["size"] / (r["bandwidth_gbs"] * 1e9)
        assert r["floor_ms"] == pytest.approx(floor_ms, rel=1e-12)
        for p, t in r["times_ms"].items():
            assert math.isfinite(t) and t > 0
            assert r["shares"][p] == pytest.approx(r["floor_ms"] / t, rel=1e-12)
        ratio = r["times_ms"]["optlib fused"] / r["times_ms"][r["reference"]]
        assert r["ratio"] == pytest.approx(ratio, rel=1e-12)
        assert r["passed"] == (r["ratio"] <= 1.0)


@pytest.mark.parametrize(
    "name, hyper, k",
    [
        ("SGD", {}, 1),
        ("Adam", {}, 2),
        ("Adam", dict(amsgrad=True), 3),
        ("Adagrad", {}, 1),
        ("RMSprop", dict(centered=True, momentum=0.9), 3),
        ("NAdam", {}, 2),
        ("RAdam", {}, 2),
        ("Lion", {}, 1),
    ],
)
def test_bytes_per_parameter_count_reads_and_writes(name, hyper, k):
    """Read theta, g and k state elements, write theta and the state: (3 + 2k) elements."""
    assert steps.state_tensors(name, **hyper) == k
    assert steps.bytes_per_param(name, **hyper) == 4 * (3 + 2 * k)
    assert steps.bytes_per_param(name, torch.float64, **hyper) == 8 * (3 + 2 * k)


def test_stream_kernels_move_what_they_claim():
    kernels = steps.stream_kernels(4000)
    assert {name: nbytes for name, (_, nbytes) in kernels.items()} == {
        "copy": 4000,
        "scale": 8000,
        "add": 6000,
    }
    for call, _ in kernels.values():
        out = call()
        assert torch.isfinite(out).all()


def test_tensor_sizes_are_seeded_positive_and_sum_to_the_total():
    sizes = steps.tensor_sizes(10**6, 100, seed=0)
    assert len(sizes) == 100 and sum(sizes) == 10**6 and min(sizes) >= 1
    assert sizes == steps.tensor_sizes(10**6, 100, seed=0)
    assert max(sizes) / min(sizes) > 5  # really spread out
    assert steps.tensor_sizes(5, 100) == [1] * 5


def test_every_path_starts_from_the_same_parameters():
    base = steps.make_params(1000, 10)
    a, b = steps.clone_params(base), steps.clone_params(base)
    assert all(torch.equal(p, q) and torch.equal(p.grad, q.grad) for p, q in zip(a, b))
    assert all(p.dtype == torch.float32 for p in a)
    assert sum(p.numel() for p in a) == 1000


def test_each_build_creates_the_paths_in_another_order():
    orders = steps.build_orders(list(steps.PATHS), 4)
    assert [o[0] for o in orders] == list(steps.PATHS)  # every path built first once
    assert all(sorted(o) == sorted(steps.PATHS) for o in orders)
    for position in range(4):
        assert sorted(o[position] for o in orders) == sorted(steps.PATHS)
    assert steps.build_orders(["a", "b"], 3) == [["a", "b"], ["b", "a"], ["a", "b"]]


def test_time_builds_pools_the_builds_and_returns_the_last():
    base = steps.make_params(500, 5)
    factories = {
        "torch": lambda ps: torch.optim.SGD(ps, lr=0.1),
        "optlib": lambda ps: optlib.SGD(ps, lr=0.1),
    }
    times, opts, streams = steps.time_builds(factories, base, 4000, warmup=1, rounds=5, repeats=2)
    assert set(times) == {"torch", "optlib"} | {f"stream {s}" for s in steps.STREAMS}
    assert all(len(t) == 2 * 3 for t in times.values())  # 5 rounds: 3 per build, 2 builds
    assert set(opts) == set(factories) and set(streams) == set(steps.STREAMS)
    p_torch, p_optlib = (o.param_groups[0]["params"] for o in opts.values())
    torch.testing.assert_close(p_torch, p_optlib, rtol=0, atol=0)  # same steps from the same start
    assert not torch.equal(p_torch[0], base[0])  # ... 1 + 3 of them


def test_interleaving_alternates_the_order():
    calls = []
    steps.interleaved_times(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, rounds=3
    )
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]


@pytest.mark.parametrize("text, n", [("1M", 10**6), ("10M", 10**7), ("2.5k", 2500), ("77", 77)])
def test_parse_size(text, n):
    assert steps.parse_size(text) == n
    assert steps.parse_size(steps.format_size(n)) == n


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match="Shampoo"):
        steps.available(["Adam", "Shampoo"])


def test_traffic_counts_operations_and_bytes_as_written():
    x, y = torch.randn(100), torch.randn(100)
    t = steps.traffic(lambda: x.add_(y))  # reads x and y, writes x
    assert (t.ops, t.kernels, t.bytes_read, t.bytes_written) == (1, 1, 800, 400)
    t = steps.traffic(lambda: torch.sqrt(x[:50].view(5, 10)))  # views move nothing
    assert (t.ops, t.bytes_read, t.bytes_written) == (1, 200, 200)
    xs, ys = [torch.randn(10), torch.randn(20)], [torch.randn(10), torch.randn(20)]
    t = steps.traffic(lambda: torch._foreach_mul_(xs, ys))  # one operation on both tensors
    assert (t.ops, t.bytes_read, t.bytes_written) == (1, 240, 120)
    counter = torch.zeros(())
    t = steps.traffic(lambda: counter.add_(1))  # a step counter: an operation, not a kernel
    assert (t.ops, t.kernels) == (1, 0)
