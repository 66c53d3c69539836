"""optlib.course.cache: JSON results memoised by function, arguments and optlib's source hash."""

from __future__ import annotations

import json
import math
import re

import pytest

from optlib.course import cache

CALLS: list[tuple] = []


@cache.memoize
def experiment(n: int, scale: float = 1.0, *, tag: str = "a") -> dict:
    CALLS.append((n, scale, tag))
    return {"values": [scale * k for k in range(n)], "pair": (n, tag)}


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OPTLIB_CACHE", raising=False)
    CALLS.clear()
    return tmp_path / "cache"


def test_second_call_reads_the_file_and_returns_the_same_data(tmp_cache):
    first = experiment(3, 0.5)
    assert first == {"values": [0.0, 0.5, 1.0], "pair": [3, "a"]}  # as JSON reads it back
    assert experiment(3, 0.5) == first and len(CALLS) == 1
    files = list(tmp_cache.glob("experiment-*.json"))
    assert len(files) == 1 and files[0] == experiment.cache_path(3, 0.5)
    stored = json.loads(files[0].read_text())
    assert stored["arguments"] == {"n": 3, "scale": 0.5, "tag": "a"}
    assert stored["optlib_source"] == cache.source_hash()
    assert stored["function"] == f"{__name__}.experiment"


def test_arguments_are_bound_to_the_signature():
    experiment(2)
    experiment(n=2, scale=1.0)
    experiment(2, tag="a")
    assert len(CALLS) == 1
    experiment(2, tag="b")
    experiment(2, 2.0)
    assert len(CALLS) == 3


def test_floats_round_trip_exactly():
    x = 0.1 + 0.2
    assert experiment(2, x)["values"][1] == x
    assert experiment(2, x)["values"][1] == x and len(CALLS) == 1


def test_a_change_in_optlib_source_recomputes(monkeypatch):
    experiment(4)
    monkeypatch.setattr(cache, "source_hash", lambda: "0" * 64)
    experiment(4)
    assert len(CALLS) == 2


def test_corrupt_or_mismatched_entries_are_recomputed(tmp_cache):
    experiment(5)
    path = experiment.cache_path(5)
    path.write_text("{not json")
    assert experiment(5)["values"][-1] == 4.0 and len(CALLS) == 2
    stored = json.loads(path.read_text())
    stored["arguments"]["n"] = 6  # a file that does not belong to this key
    stored["result"] = {"values": "forged"}
    path.write_text(json.dumps(stored))
    assert experiment(5)["values"] != "forged" and len(CALLS) == 3


def test_disabled_cache_always_computes_and_writes_nothing(tmp_cache, monkeypatch):
    monkeypatch.setenv("OPTLIB_CACHE", "0")
    assert not cache.enabled()
    assert experiment(2) == experiment(2) and len(CALLS) == 2
    assert not tmp_cache.exists()


def test_uncached_computes_and_clear_removes(tmp_cache):
    experiment(2)
    assert experiment.uncached(2) == experiment(2) and len(CALLS) == 2
    experiment(3)
    assert len(CALLS) == 3
    assert cache.clear(experiment) == 2
    assert cache.clear() == 0
    experiment(2)
    assert len(CALLS) == 4


def test_non_json_arguments_and_results_are_rejected():
    with pytest.raises(TypeError, match="arguments of .*must be plain JSON data"):
        experiment(2, tag={1, 2})

    @cache.memoize
    def bad() -> object:
        return object()

    with pytest.raises(TypeError, match="result of .*must be plain JSON data"):
        bad()


def test_unwritable_folder_still_computes(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("OPTLIB_CACHE_DIR", str(blocker / "sub"))  # a file in the way
    assert experiment(2) == experiment(2) and len(CALLS) == 2


def test_default_folder_is_in_the_checkout(monkeypatch):
    monkeypatch.delenv("OPTLIB_CACHE_DIR")
    folder = cache.cache_dir()
    assert folder.name == ".optlib-cache" and (folder.parent / "pyproject.toml").is_file()


def test_source_hash_is_stable_and_hex():
    h = cache.source_hash()
    assert h == cache.source_hash() and len(h) == 64 and int(h, 16) >= 0


def test_source_hash_follows_file_changes(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    monkeypatch.setattr(cache, "_PACKAGE", pkg)
    first = cache.source_hash()
    assert cache.source_hash() == first
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    second = cache.source_hash()
    assert second != first
    (pkg / "c.py").write_text("")
    assert cache.source_hash() not in (first, second)


def test_the_base_seed_is_part_of_the_key(tmp_path, monkeypatch):
    """Under OPTLIB_SEED every seeded helper draws differently, so a result cached under one base
    must not be served under another."""
    monkeypatch.setenv("OPTLIB_CACHE_DIR", str(tmp_path))
    calls = []

    @cache.memoize
    def draw(n: int) -> list:
        calls.append(n)
        return [n]

    monkeypatch.delenv("OPTLIB_SEED", raising=False)
    draw(3)
    draw(3)
    monkeypatch.setenv("OPTLIB_SEED", "1")
    draw(3)
    assert calls == [3, 3]


# --- the cached and the recomputed path give the same objects ----------------------------------

TRICKY = {
    "tuple": (1, 2.5),
    "int_keys": {3: "three", 10: [0.1, -0.0]},
    "floats": [0.1 + 0.2, 1e-310, 1.7976931348623157e308, -2.5e-8, math.pi],
    "nan_inf": [math.nan, math.inf, -math.inf],
    "nested": [{"a": [1, [2, (3, 4)]]}, True, None, "x"],
    "big": 2**70,
}


@cache.memoize
def tricky(seed: int) -> dict:
    CALLS.append(seed)
    return {**TRICKY, "seed": seed}


def _same(a, b) -> bool:
    """Equal, of the same types all the way down, with NaN equal to NaN and -0.0 kept apart from
    0.0 (what an assert on a result can tell apart)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_cached_and_recomputed_results_are_identical_objects(tmp_cache, monkeypatch):
    """A chapter's asserts see the same object whether the experiment was computed now (cold: a
    fresh clone, or the second chapter run's empty cache), read back from disk (cached), or
    recomputed after optlib or OPTLIB_SEED changed."""
    cold = tricky(0)
    cached = tricky(0)
    assert len(CALLS) == 1 and _same(cold, cached)
    assert _same(cold, tricky.uncached(0))
    monkeypatch.setattr(cache, "source_hash", lambda: "f" * 64)  # optlib changed
    recomputed = tricky(0)
    assert len(CALLS) == 3 and _same(cold, recomputed)
    monkeypatch.setenv("OPTLIB_CACHE", "0")  # no cache at all
    assert _same(cold, tricky(0))
    # what JSON makes of the data, on every path alike: tuples become lists, keys strings
    assert cold["tuple"] == [1, 2.5] and cold["int_keys"] == {"3": "three", "10": [0.1, -0.0]}
    assert _same(cold["floats"], TRICKY["floats"]) and cold["big"] == 2**70


def test_same_tells_apart_what_an_assert_could():
    assert _same([math.nan], [math.nan]) and not _same([0.0], [-0.0])
    assert not _same((1,), [1]) and not _same({"1": 1}, {1: 1}) and not _same(1, 1.0)


def test_a_real_change_in_optlib_source_recomputes(tmp_path, monkeypatch):
    """Not a mocked hash: editing a file of the package changes the key."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "optim.py").write_text("lr = 0.1\n")
    monkeypatch.setattr(cache, "_PACKAGE", pkg)
    experiment(3)
    experiment(3)
    assert len(CALLS) == 1
    (pkg / "optim.py").write_text("lr = 0.2\n")
    experiment(3)
    assert len(CALLS) == 2
    experiment(3)
    assert len(CALLS) == 2  # and the new entry is cached in turn


def test_another_optlib_seed_recomputes_and_each_base_keeps_its_entry(monkeypatch):
    monkeypatch.delenv("OPTLIB_SEED", raising=False)
    experiment(4)
    monkeypatch.setenv("OPTLIB_SEED", "1")
    experiment(4)
    assert len(CALLS) == 2
    monkeypatch.setenv("OPTLIB_SEED", "0")  # the default base: the first entry again
    experiment(4)
    monkeypatch.setenv("OPTLIB_SEED", "1")
    experiment(4)
    assert len(CALLS) == 2


def test_the_perturbed_chapter_run_recomputes_every_memoised_experiment():
    """`make test` runs the chapters a second time under OPTLIB_SEED=1 with its own experiment
    cache, emptied right before: every memoised experiment is recomputed there (the recompute
    path), whatever an earlier run left behind."""
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    cache_dir = re.search(r"^PERTURBED_CACHE := (\S+)$", makefile, re.M)
    assert cache_dir and "OPTLIB_CACHE_DIR=$(PERTURBED_CACHE)" in makefile
    assert cache_dir[1] != ".optlib-cache"  # not the first run's cache
    lines = makefile.splitlines()
    runs = [i for i, line in enumerate(lines) if line.startswith("\t$(PERTURBED) ")]
    assert runs, "no perturbed chapter run in the Makefile"
    for i in runs:
        assert lines[i - 1].strip() == "rm -rf $(PERTURBED_CACHE)", lines[i]
