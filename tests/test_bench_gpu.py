"""``python -m optlib.bench gpu``: its CPU dry run (no GPU here, nor in ``make test``) goes
through every path, the streaming kernels and the JSON; without CUDA it refuses to run."""

import json

import pytest
import torch

from optlib.bench import gpu
from optlib.bench.__main__ import main as bench_main


def test_dry_run_times_every_path_and_writes_json(tmp_path, capsys):
    path = tmp_path / "gpu.json"
    argv = ["gpu", "--dry-run", "--params", "6k", "--tensors", "6", "--rounds", "2"]
    threads = torch.get_num_threads()
    assert bench_main([*argv, "--warmup", "1", "--json", str(path)]) == 0
    assert torch.get_num_threads() == threads
    out, _ = capsys.readouterr()
    result = json.loads(path.read_text())
    assert result["dry_run"] is True and result["machine"]["device"] == "cpu"
    assert result["optimizer"] == "AdamW" and result["bytes_per_param"] == 28
    assert result["params"] == 6000 and result["tensors"] == 6
    assert list(result["paths"]) == list(gpu.PATHS)
    assert result["bandwidth_gbs"] == pytest.approx(max(result["stream_gbs"].values()))
    for path, row in result["paths"].items():
        assert row["ms"] > 0 and row["share_of_floor"] == pytest.approx(
            result["floor_ms"] / row["ms"]
        )
        assert path in out


def test_every_path_takes_the_same_step():
    """The paths are the same update: one step of each from the same start agrees."""
    params = gpu.make_params(500, 5, torch.device("cpu"))
    steps = gpu.path_steps("AdamW", params, tuple(p for p in gpu.PATHS if p != "torch compiled"))
    assert set(steps) == {"torch for-loop", "torch foreach", "torch fused", "optlib fused"}
    results = []
    for step in steps.values():
        step()
        opt = step.__self__
        results.append(torch.cat([p.detach().reshape(-1) for p in opt.param_groups[0]["params"]]))
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_it_asks_for_the_dry_run(capsys):
    assert bench_main(["gpu", "--json", "unused.json"]) == 2
    assert "--dry-run" in capsys.readouterr().err
