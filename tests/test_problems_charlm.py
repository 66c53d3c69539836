"""optlib.problems.charlm: the character-level language model on the standard library's source."""

from __future__ import annotations

import math
import os
import time

import pytest
import torch

import optlib
from optlib.problems import charlm
from optlib.problems.charlm import (
    ALPHABET,
    CANDIDATES,
    CharGRU,
    CharTransformer,
    bits_per_char,
    char_lm,
    char_model,
    decode,
    encode,
    lm_loss,
    stdlib_corpus,
)


@pytest.fixture(scope="module")
def corpus():
    return stdlib_corpus(context=32)


def test_alphabet_is_small_fixed_and_round_trips():
    assert len(ALPHABET) == 97 and len(set(ALPHABET)) == 97
    assert ALPHABET[1] == "\n" and ALPHABET[2] == " " and "\t" not in ALPHABET
    text = "def f(x):\n    return x ** 2  # ~`@$\n"
    assert decode(encode(text)) == text
    ids = encode("naïve\ttab é")
    assert ids.dtype == torch.long and (ids == 0).sum() == 3  # ï, tab, é -> the rare symbol
    assert decode(ids).count(charlm.UNKNOWN) == 3


def test_windows_shapes_and_targets_are_the_next_characters(corpus):
    T = 32
    assert corpus.X_train.shape[1] == T == corpus.context and corpus.y_train.shape == (
        corpus.X_train.shape
    )
    assert corpus.X_test.shape[1] == T and len(corpus.X_test) > 100
    assert corpus.X_train.dtype == torch.long and corpus.y_train.dtype == torch.long
    assert torch.equal(corpus.y_train[:, :-1], corpus.X_train[:, 1:])
    assert decode(corpus.X_train[0]) == corpus.train_text[:T]
    assert decode(corpus.y_test[0]) == corpus.val_text[1 : T + 1]
    # non-overlapping windows cover the text in order
    assert decode(corpus.X_train[1]) == corpus.train_text[T : 2 * T]
    assert corpus.vocab_size == corpus.n_classes == 97
    assert 0 <= corpus.unknown_fraction < 1e-3  # the source is almost all ASCII


def test_files_split_and_python_version(corpus):
    names = [m for m, _, _ in corpus.files]
    splits = [s for _, _, s in corpus.files]
    assert len(names) == 24 and len(set(names)) == 24 and set(names) <= set(CANDIDATES)
    assert splits.count("val") == 4 and splits[-4:] == ["val"] * 4
    assert all(0 < n <= 20_000 for _, n, _ in corpus.files)
    assert sum(n for _, n, s in corpus.files if s == "train") == len(corpus.train_text)
    assert corpus.python.count(".") == 2


def test_seeded_and_moved_by_optlib_seed(monkeypatch):
    a, b = stdlib_corpus(seed=0, n_files=6, n_val_files=2), stdlib_corpus(
        seed=0, n_files=6, n_val_files=2
    )
    assert a.files == b.files and torch.equal(a.X_train, b.X_train)
    c = stdlib_corpus(seed=1, n_files=6, n_val_files=2)
    assert [m for m, _, _ in c.files] != [m for m, _, _ in a.files]
    monkeypatch.setenv("OPTLIB_SEED", "1")
    d = stdlib_corpus(seed=0, n_files=6, n_val_files=2)
    assert [m for m, _, _ in d.files] != [m for m, _, _ in a.files]


def _fake_stdlib(folder, names):
    for name in names:
        (folder / f"{name}.py").write_text(f"# {name}\n" + "x = 1\n" * 40)


def test_selection_survives_a_missing_module(tmp_path):
    """Another Python release may lack a module: the same seed keeps every other choice and
    takes the next candidate of the same permutation in its place."""
    _fake_stdlib(tmp_path, CANDIDATES)
    full = [m for m, _, _ in stdlib_corpus(path=str(tmp_path), n_files=6, n_val_files=2,
                                           context=8).files]  # fmt: skip
    os.remove(tmp_path / f"{full[2]}.py")
    fewer = [m for m, _, _ in stdlib_corpus(path=str(tmp_path), n_files=6, n_val_files=2,
                                            context=8).files]  # fmt: skip
    assert fewer[:2] == full[:2] and fewer[2:5] == full[3:6] and fewer[5] not in full


def test_too_few_source_files_is_a_clear_error(tmp_path):
    _fake_stdlib(tmp_path, CANDIDATES[:3])
    with pytest.raises(FileNotFoundError, match="compiled files only"):
        stdlib_corpus(path=str(tmp_path), n_files=6, n_val_files=2)
    with pytest.raises(ValueError, match="n_val_files"):
        stdlib_corpus(n_files=4, n_val_files=4)
    with pytest.raises(ValueError, match="context"):
        stdlib_corpus(context=0)


def test_long_files_are_cut_at_a_line_end(tmp_path):
    _fake_stdlib(tmp_path, CANDIDATES)
    c = stdlib_corpus(path=str(tmp_path), n_files=3, n_val_files=1, max_file_chars=50, context=8)
    assert all(n <= 50 for _, n, _ in c.files)
    assert c.train_text.endswith("\n") and c.val_text.endswith("\n")


def test_bits_per_char():
    assert bits_per_char(math.log(2)) == pytest.approx(1.0, rel=1e-15)
    assert bits_per_char(torch.tensor(2 * math.log(2))).item() == pytest.approx(2.0, rel=1e-6)
    # a uniform prediction over the alphabet costs log2(97) bits per character
    logits = torch.zeros(3, 5, len(ALPHABET))
    targets = torch.randint(len(ALPHABET), (3, 5))
    assert bits_per_char(lm_loss(logits, targets).item()) == pytest.approx(math.log2(97), 1e-6)


def test_models_shapes_causality_and_seeds(monkeypatch):
    ids = torch.randint(97, (3, 16))
    for arch in ("transformer", "gru"):
        model = char_model(arch, seed=0, context=16)
        out = model(ids)
        assert out.shape == (3, 16, 97)
        changed = ids.clone()
        changed[:, 10] = (changed[:, 10] + 1) % 97
        # position t sees characters 0..t only
        assert torch.allclose(model(changed)[:, :10], out[:, :10], atol=1e-6)
        assert not torch.allclose(model(changed)[:, 10:], out[:, 10:])
        same = char_model(arch, seed=0, context=16)
        other = char_model(arch, seed=1, context=16)
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))
        assert not torch.equal(next(model.parameters()), next(other.parameters()))
        monkeypatch.setenv("OPTLIB_SEED", "1")
        moved = char_model(arch, seed=0, context=16)
        monkeypatch.delenv("OPTLIB_SEED")
        assert not torch.equal(next(model.parameters()), next(moved.parameters()))
    assert isinstance(char_model("transformer", context=8), CharTransformer)
    assert isinstance(char_model("gru"), CharGRU)
    with pytest.raises(ValueError, match="arch"):
        char_model("lstm")
    with pytest.raises(ValueError, match="n_heads"):
        CharTransformer(d=30, n_heads=4)


def test_initial_loss_is_near_uniform_and_adamw_reduces_it():
    corpus, model = char_lm(seed=0, context=32)
    X, y = corpus.X_train[:16], corpus.y_train[:16]
    start = lm_loss(model(X), y).item()
    assert abs(bits_per_char(start) - math.log2(97)) < 0.3
    opt = optlib.AdamW(model.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    steps = 30
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(corpus.X_train), (16,), generator=g)
        opt.zero_grad()
        lm_loss(model(corpus.X_train[idx]), corpus.y_train[idx]).backward()
        opt.step()
    per_step = (time.perf_counter() - t0) / steps
    with torch.no_grad():
        val = lm_loss(model(corpus.X_test[:128]), corpus.y_test[:128]).item()
    print(f"char-LM (transformer, {sum(p.numel() for p in model.parameters())} parameters, "
          f"batch 16 x 32): {1e3 * per_step:.1f} ms per AdamW step; val {bits_per_char(val):.2f} "
          "bits/char after 30 steps")  # fmt: skip
    assert bits_per_char(val) < bits_per_char(start) - 1.5  # well below uniform (6.6 bits)


def test_gru_trains_too():
    corpus, model = char_lm(arch="gru", seed=0, context=16, hidden=32)
    X, y = corpus.X_train[:32], corpus.y_train[:32]
    opt = optlib.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(20):
        opt.zero_grad()
        loss = lm_loss(model(X), y)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0
