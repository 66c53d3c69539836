"""``optlib.bench.memory``: every exported optimizer's measured state equals its update rule's
count (``EXPECTED``), and the byte counter itself counts what it should."""

import json

import pytest
import torch

import optlib
from optlib.bench import memory


@pytest.mark.parametrize("name", memory.optimizer_names())
def test_measured_state_equals_update_rule(name):
    assert name in memory.EXPECTED, f"{name}: add its update rule's count to EXPECTED"
    row = memory.measure(name)
    assert row.state_bytes > 0
    assert row.state_bytes == row.expected_bytes, (
        f"{name}: measured {row.floats_per_param:.4f} floats/param, update rule says "
        f"{row.expected_floats_per_param:.4f} ({row.formula})"
    )


def test_every_exported_optimizer_is_measured():
    names = memory.optimizer_names()
    assert "Adam" in names and "KFAC" in names and "seed_everything" not in names


def test_state_bytes_counts_each_storage_once_and_skips_parameters():
    W = torch.zeros(3, 4, requires_grad=True)
    opt = optlib.SGD([W], lr=0.1, momentum=0.9)
    assert memory.state_bytes(opt) == 0
    buf = torch.ones(3, 4, dtype=torch.float64)
    opt.state[W]["momentum_buffer"] = buf
    opt.state[W]["alias"] = [buf[0], {"view": buf.T}]  # views of the same storage
    opt.state[W]["param_itself"] = W
    opt.extra_buffer = torch.zeros(5, dtype=torch.float16)  # an attribute, not in state
    assert memory.state_bytes(opt) == 12 * 8 + 5 * 2


def test_blocks_cover_the_tensor():
    blocks = list(memory._blocks((64, 40), 32))
    assert blocks == [(32, 32), (32, 8), (32, 32), (32, 8)]
    assert sum(b[0] * b[1] for b in blocks) == 64 * 40


def test_main_prints_table_and_writes_json(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    memory.add_arguments(parser)
    path = tmp_path / "memory.json"
    code = memory.main(parser.parse_args(["--only", "SGD", "Adam", "--json", str(path)]))
    assert code == 0
    out = capsys.readouterr().out
    assert "Adam" in out and "2N (m, v) + 1 (step)" in out
    rows = json.loads(path.read_text())
    assert [r["optimizer"] for r in rows] == ["SGD", "Adam"]
    # the same formula (2 buffers per parameter + 6 scalars over 3466 parameters): a few ulps
    assert rows[1]["expected_floats_per_param"] == pytest.approx(2 + 6 / 3466, rel=1e-14)
