"""``python -m optlib.bench steps``: a tiny smoke run through the command line, and the pieces."""

import json
import math

import pytest
import torch

import optlib
from optlib.bench import steps
from optlib.bench.__main__ import main as bench_main


def test_tiny_run_prints_one_row_per_optimizer(tmp_path, capsys):
    path = tmp_path / "steps.json"
    argv = ["steps", "--sizes", "3k", "--rounds", "2", "--warmup", "1", "--tensors", "7"]
    threads = torch.get_num_threads()
    assert bench_main([*argv, "--no-model-table", "--json", str(path)]) == 0
    assert torch.get_num_threads() == threads
    out, err = capsys.readouterr()
    expected = [n for n in steps.CONFIGS if n in optlib.__all__]
    assert "SGD" in expected
    rows = [line.split() for line in out.splitlines()]
    rows = [r for r in rows if r and r[0] in expected]
    assert [r[0] for r in rows] == expected
    for r in rows:
        assert r[1] == "3k"
        torch_ms, optlib_ms, ratio = float(r[2]), float(r[3]), float(r[4].rstrip("x"))
        assert all(math.isfinite(x) and x > 0 for x in (torch_ms, optlib_ms, ratio))
        assert r[5] == ("PASS" if ratio <= 1.25 else "FAIL")
    assert err.count("\n") == len(expected)  # one progress line each, on stderr
    saved = json.loads(path.read_text())
    assert [r["optimizer"] for r in saved["rows"]] == expected
    for r in saved["rows"]:
        assert r["size"] == 3000 and r["n_tensors"] == 7
        assert r["ratio"] == pytest.approx(r["optlib_ms"] / r["torch_ms"])
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0


def test_tensor_sizes_are_seeded_positive_and_sum_to_the_total():
    sizes = steps.tensor_sizes(10**6, 100, seed=0)
    assert len(sizes) == 100 and sum(sizes) == 10**6 and min(sizes) >= 1
    assert sizes == steps.tensor_sizes(10**6, 100, seed=0)
    assert max(sizes) / min(sizes) > 5  # really spread out
    assert steps.tensor_sizes(5, 100) == [1] * 5


def test_both_implementations_start_from_the_same_parameters():
    base = steps.make_params(1000, 10)
    a, b = steps.clone_params(base), steps.clone_params(base)
    assert all(torch.equal(p, q) and torch.equal(p.grad, q.grad) for p, q in zip(a, b))
    assert all(p.dtype == torch.float32 for p in a)
    assert sum(p.numel() for p in a) == 1000


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
    with pytest.raises(ValueError, match="Lion"):
        steps.available(["Adam", "Lion"])
