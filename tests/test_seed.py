"""optlib.seed_everything and OPTLIB_SEED: one base moves every seeded helper, and the default
base leaves every seed as it is."""

from __future__ import annotations

import pytest
import torch

import optlib
from optlib._seed import base_seed, derive_seed
from optlib.linalg import spd_matrix
from optlib.problems import digits, mlp


def test_default_base_keeps_seeds(monkeypatch):
    monkeypatch.delenv("OPTLIB_SEED", raising=False)
    assert base_seed() == 0
    assert [derive_seed(s) for s in (0, 1, 7, 12345)] == [0, 1, 7, 12345]
    monkeypatch.setenv("OPTLIB_SEED", "0")
    assert derive_seed(5) == 5


def test_another_base_moves_every_seed_and_keeps_them_distinct(monkeypatch):
    monkeypatch.setenv("OPTLIB_SEED", "1")
    moved = [derive_seed(s) for s in range(1000)]
    assert len(set(moved)) == 1000
    assert not set(moved) & set(range(1000))
    assert all(0 <= s < 2**31 for s in moved)


def test_helpers_draw_differently_under_another_base(monkeypatch):
    monkeypatch.delenv("OPTLIB_SEED", raising=False)

    def draws():
        return (
            digits(seed=0).y_test,
            mlp(4, 3, 2, seed=0)[0].weight,
            spd_matrix(5, 10.0, seed=0),
            torch.randn(3, generator=optlib.seed_everything(0)),
        )

    split0, w0, A0, x0 = draws()
    monkeypatch.setenv("OPTLIB_SEED", "1")
    split1, w1, A1, x1 = draws()
    assert not torch.equal(split0, split1)
    assert not torch.equal(w0, w1)
    assert not torch.equal(A0, A1)
    assert not torch.equal(x0, x1)
    monkeypatch.delenv("OPTLIB_SEED")
    assert torch.equal(digits(seed=0).y_test, split0)  # and back again


@pytest.mark.parametrize("raw", ["-1", "one", "1.5"])
def test_a_bad_base_is_refused_by_name(monkeypatch, raw):
    monkeypatch.setenv("OPTLIB_SEED", raw)
    with pytest.raises(ValueError, match="OPTLIB_SEED"):
        derive_seed(0)
