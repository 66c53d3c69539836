r"""A character-level language model on Python's own standard-library source.

The text ships with every Python installation: the ``.py`` files of the standard library, read
from the running interpreter (``sysconfig.get_paths()["stdlib"]``). :func:`stdlib_corpus`
picks a seeded selection of files, keeps at most ``max_file_chars`` characters of each (cut at
a line end), holds out whole files for validation, maps every character to an id in a fixed
alphabet of 96 symbols (newline and printable ASCII) plus one symbol for everything rarer (tabs,
non-ASCII letters), and cuts both texts into windows of ``context + 1`` characters. The model
predicts each next character; :func:`lm_loss` is the mean cross-entropy in nats per character
and :func:`bits_per_char` converts it (divide by :math:`\ln 2`).

**What varies between Python versions.** The candidate files are a fixed list of modules that
exist as single ``.py`` files in the standard library from Python 3.8 to 3.14
(``CANDIDATES``); the seed permutes that whole list, and the selection takes the first
``n_files`` of the permutation that are present, so the same seed names the same files on every
release that has them (a module missing on some release is replaced by the next candidate in
the permutation). The *text* of those files does change between releases (bug fixes,
docstrings, new features): a patch release typically changes a few lines of a few files, a minor
release more. Losses measured on two releases are therefore close but not bit-identical; every
claim a chapter asserts on this corpus must be a statistic with a margin, never an exact value.
``CharCorpus.files`` and ``CharCorpus.python`` record what was read.

The model is a tiny pre-norm causal transformer (:class:`CharTransformer`, written with plain
matrix products so that :func:`torch.func.vmap` can batch many copies of it) or a GRU
(:class:`CharGRU`); :func:`char_lm` returns the corpus and a seeded model.
"""

from __future__ import annotations

import math
import os
import string
import sys
import sysconfig
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._seed import derive_seed
from .digits import Dataset

__all__ = [
    "ALPHABET",
    "CANDIDATES",
    "CharCorpus",
    "CharGRU",
    "CharTransformer",
    "bits_per_char",
    "char_lm",
    "decode",
    "encode",
    "lm_loss",
    "stdlib_corpus",
]

# Modules that are single .py files in the standard library of CPython 3.8 through 3.14 (none of
# them became a package or was removed in that span; checked against the release notes).
CANDIDATES: tuple[str, ...] = tuple(
    """abc argparse ast base64 bdb bisect calendar cmd code codecs codeop colorsys compileall
    configparser contextlib copy copyreg csv dataclasses datetime difflib dis doctest enum
    filecmp fileinput fnmatch fractions ftplib functools genericpath getopt getpass gettext glob
    gzip hashlib heapq hmac imaplib inspect io ipaddress keyword linecache locale lzma mailbox
    mimetypes netrc ntpath numbers opcode operator optparse os pickle pickletools platform
    plistlib poplib posixpath pprint profile pstats py_compile pyclbr queue quopri random
    reprlib rlcompleter runpy sched secrets selectors shelve shlex shutil signal site smtplib
    socket socketserver ssl stat statistics string stringprep struct subprocess symtable
    tabnanny tarfile tempfile textwrap threading timeit token tokenize trace traceback
    tracemalloc tty types typing uuid warnings wave weakref webbrowser zipapp zipimport""".split()
)

# Id 0 stands for every character outside the alphabet; ids 1..96 are newline, space and the
# 94 visible ASCII characters, in code-point order.
UNKNOWN = "\ufffd"
ALPHABET: str = UNKNOWN + "\n" + " " + "".join(c for c in string.printable if c.isprintable()
                                                 and c != " ")
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def encode(text: str) -> Tensor:
    """The ids of ``text``'s characters (``0`` for a character outside ``ALPHABET``)."""
    return torch.tensor([_INDEX.get(c, 0) for c in text], dtype=torch.long)


def decode(ids: Tensor | list[int]) -> str:
    """The text of a sequence of ids (the unknown symbol shows as U+FFFD)."""
    return "".join(ALPHABET[int(i)] for i in ids)


def bits_per_char(loss_nats: float | Tensor) -> float | Tensor:
    r"""A cross-entropy in nats per character, in bits per character: :math:`\ell / \ln 2`."""
    return loss_nats / math.log(2)


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-character cross-entropy in nats: ``logits (..., T, V)``, ``targets (..., T)``."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@dataclass
class CharCorpus(Dataset):
    """Windows of a character corpus, as a :class:`~optlib.problems.digits.Dataset`.

    ``X_train[i]`` is a window of ``context`` ids and ``y_train[i]`` the same window shifted by
    one character (the next characters); ``X_test``/``y_test`` are the validation windows, cut
    from held-out files. ``files`` lists ``(module, characters used, split)``; ``python`` is the
    interpreter version the text came from.
    """

    files: list[tuple[str, int, str]] | None = None
    python: str = ""
    train_text: str = field(default="", repr=False)
    val_text: str = field(default="", repr=False)

    @property
    def context(self) -> int:
        return self.X_train.shape[1]

    @property
    def vocab_size(self) -> int:
        return len(ALPHABET)

    @property
    def n_classes(self) -> int:
        return len(ALPHABET)

    @property
    def unknown_fraction(self) -> float:
        """Fraction of training characters mapped to the unknown symbol."""
        return float((self.y_train == 0).double().mean())


def stdlib_dir() -> str:
    """The folder of the running interpreter's standard library."""
    return sysconfig.get_paths()["stdlib"]


def _read_head(path: str, max_chars: int) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read(max_chars + 1)
    if len(text) > max_chars:  # cut at the last complete line
        text = text[: text.rfind("\n", 0, max_chars) + 1]
    return text


def _windows(ids: Tensor, context: int, stride: int) -> tuple[Tensor, Tensor]:
    n = (len(ids) - context - 1) // stride + 1
    if n < 1:
        raise ValueError(f"the text ({len(ids)} characters) is shorter than one window")
    starts = torch.arange(n) * stride
    offsets = torch.arange(context + 1)
    w = ids[starts[:, None] + offsets[None, :]]
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def stdlib_corpus(
    *,
    n_files: int = 24,
    n_val_files: int = 4,
    max_file_chars: int = 20_000,
    context: int = 64,
    stride: int | None = None,
    seed: int = 0,
    path: str | None = None,
) -> CharCorpus:
    r"""A seeded character corpus from the standard library's source (see the module docstring).

    Args:
        n_files: how many modules to read (the first ``n_files - n_val_files`` of the seeded
            selection train, the last ``n_val_files`` validate).
        n_val_files: held-out modules for the validation windows.
        max_file_chars: characters kept from the start of each file (cut at a line end).
        context: characters the model sees per window (:math:`T`).
        stride: distance between window starts (default ``context``: non-overlapping).
        seed: permutes the candidate list (moved by ``OPTLIB_SEED``).
        path: the standard-library folder (default: the running interpreter's).
    """
    if not 1 <= n_val_files < n_files:
        raise ValueError(f"Invalid n_val_files: {n_val_files}; need 1 <= n_val_files < n_files")
    if context < 1:
        raise ValueError(f"Invalid context: {context}; need context >= 1")
    stride = context if stride is None else stride
    if stride < 1:
        raise ValueError(f"Invalid stride: {stride}; need stride >= 1")
    folder = stdlib_dir() if path is None else path
    g = torch.Generator().manual_seed(derive_seed(seed))
    order = [CANDIDATES[i] for i in torch.randperm(len(CANDIDATES), generator=g).tolist()]
    chosen = [m for m in order if os.path.isfile(os.path.join(folder, m + ".py"))][:n_files]
    if len(chosen) < n_files:
        raise FileNotFoundError(
            f"found only {len(chosen)} of the {n_files} standard-library source files asked for "
            f"in {folder!r}; this interpreter may ship compiled files only"
        )
    texts = [_read_head(os.path.join(folder, m + ".py"), max_file_chars) for m in chosen]
    n_train = n_files - n_val_files
    train_text = "".join(texts[:n_train])
    val_text = "".join(texts[n_train:])
    X_train, y_train = _windows(encode(train_text), context, stride)
    X_val, y_val = _windows(encode(val_text), context, context)
    files = [(m, len(t), "train" if i < n_train else "val") for i, (m, t) in
             enumerate(zip(chosen, texts))]  # fmt: skip
    return CharCorpus(
        X_train, y_train, X_val, y_val, files=files, python=sys.version.split()[0],
        train_text=train_text, val_text=val_text,
    )  # fmt: skip


# --------------------------------------------------------------------------- models


class _Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and a GELU MLP, each residual."""

    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, T, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)
        q, k, v = (z.reshape(B, T, h, d // h).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)
        att = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        x = x + self.proj(y)
        return x + self.out(nn.functional.gelu(self.fc(self.norm2(x))))


class CharTransformer(nn.Module):
    r"""A tiny causal transformer over characters: token and position embeddings, ``n_layers``
    pre-norm blocks (``n_heads`` heads, MLP width :math:`4d`), a final LayerNorm and a linear
    head. ``forward(ids (B, T)) -> logits (B, T, vocab)``. Attention is written with plain
    matrix products (no fused kernels) so that :func:`torch.func.vmap` can stack copies."""

    def __init__(
        self, vocab: int = len(ALPHABET), *, d: int = 32, n_layers: int = 2, n_heads: int = 4,
        context: int = 64,
    ) -> None:  # fmt: skip
        super().__init__()
        if d % n_heads:
            raise ValueError(f"Invalid n_heads: {n_heads}; must divide d = {d}")
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(context, d))
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(_Block(d, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.register_buffer(
            "mask", torch.ones(context, context, dtype=torch.bool).triu(1), persistent=False
        )

    def forward(self, ids: Tensor) -> Tensor:
        T = ids.shape[-1]
        x = self.embed(ids) + self.pos[:T]
        mask = self.mask[:T, :T]
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x))


class CharGRU(nn.Module):
    """A one-layer GRU over character embeddings: ``forward(ids (B, T)) -> logits (B, T, V)``."""

    def __init__(self, vocab: int = len(ALPHABET), *, d: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.gru = nn.GRU(d, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: Tensor) -> Tensor:
        out, _ = self.gru(self.embed(ids))
        return self.head(out)


def char_model(arch: str = "transformer", *, seed: int = 0, context: int = 64,
               dtype=torch.float32, **kwargs) -> nn.Module:  # fmt: skip
    """A seeded :class:`CharTransformer` (``arch="transformer"``) or :class:`CharGRU`."""
    torch.manual_seed(derive_seed(seed))
    if arch == "transformer":
        model: nn.Module = CharTransformer(context=context, **kwargs)
    elif arch == "gru":
        model = CharGRU(**kwargs)
    else:
        raise ValueError(f"Invalid arch: {arch!r}; allowed are 'transformer', 'gru'")
    return model.to(dtype)


def char_lm(
    *, arch: str = "transformer", seed: int = 0, data_seed: int = 0, context: int = 64,
    dtype=torch.float32, corpus_options: dict | None = None, **model_options,
) -> tuple[CharCorpus, nn.Module]:  # fmt: skip
    """The standard-library corpus (selected by ``data_seed``) and a fresh model initialised from
    ``seed``: ``(corpus, model)``. Train with :func:`lm_loss`; report
    :func:`bits_per_char` of the validation loss."""
    corpus = stdlib_corpus(context=context, seed=data_seed, **(corpus_options or {}))
    model = char_model(arch, seed=seed, context=context, dtype=dtype, **model_options)
    return corpus, model
