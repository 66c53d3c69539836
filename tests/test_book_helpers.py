"""optlib.course.book.glue: numbers computed with NumPy or torch can be formatted in the prose,
a non-finite value fails with the glue key named, and gluing without myst_nb is a checked no-op."""

import math
import sys
import types

import numpy as np
import pytest
import torch

from optlib.course.book import NonFiniteGlueError, check_finite, glue, plain


@pytest.mark.parametrize(
    "value, expected, kind",
    [
        (np.float64(0.5741), 0.5741, float),
        (np.float32(2.5), 2.5, float),
        (np.int64(7), 7, int),
        (torch.tensor(3.25, dtype=torch.float64), 3.25, float),
        (torch.tensor(4), 4, int),
        (1.5, 1.5, float),
        ("text", "text", str),
    ],
)
def test_plain_gives_python_numbers(value, expected, kind):
    got = plain(value)
    assert type(got) is kind and got == expected
    if kind is not str:
        assert format(float(repr(got)), ".3f")  # its repr parses as a number, as myst-nb needs


# --- glue refuses non-finite values, and works without myst_nb --------------------------------


class _FakeMystNb(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("myst_nb")
        self.calls: list[tuple] = []

    def glue(self, name, value, display=True):
        self.calls.append((name, value, display))


@pytest.fixture
def fake_myst_nb(monkeypatch):
    fake = _FakeMystNb()
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    return fake


def test_glue_passes_plain_numbers_to_myst_nb(fake_myst_nb):
    glue("loss", np.float64(0.25))
    glue("steps", torch.tensor(12))
    glue("shown", "text", display=True)
    assert fake_myst_nb.calls == [
        ("loss", 0.25, False),
        ("steps", 12, False),
        ("shown", "text", True),
    ]
    assert type(fake_myst_nb.calls[0][1]) is float and type(fake_myst_nb.calls[1][1]) is int


@pytest.mark.parametrize(
    "value",
    [
        math.inf,
        -math.inf,
        math.nan,
        np.float64("inf"),
        np.float32("nan"),
        torch.tensor(float("inf")),
        torch.tensor([1.0, float("nan")]),
        np.array([0.5, np.inf]),
        [1.0, 2.0, math.inf],
        (3, math.nan),
        {"MLP": math.inf, "logreg": 21.0},
        complex(1.0, math.inf),
        "inf",
        " NaN ",
        "-Infinity",
    ],
    ids=repr,
)
def test_glue_refuses_non_finite_values_naming_the_key(fake_myst_nb, value):
    with pytest.raises(NonFiniteGlueError, match=r"glue key 'catch_up_epochs'.*not finite"):
        glue("catch_up_epochs", value)
    assert fake_myst_nb.calls == []  # nothing reaches the page
    assert issubclass(NonFiniteGlueError, ValueError)


@pytest.mark.parametrize(
    "value",
    [
        0.0,
        -1e300,
        5e-324,
        7,
        True,
        "more than 1000 epochs",
        "information",
        "nanometre",
        [1.0, [2.0, 3]],
        {"a": np.float64(1.5)},
        np.arange(3),
        torch.ones(2, 2),
        None,
    ],
    ids=repr,
)
def test_glue_accepts_finite_values_and_words(fake_myst_nb, value):
    glue("ok", value)
    assert len(fake_myst_nb.calls) == 1


def test_glue_without_myst_nb_is_a_checked_no_op(monkeypatch):
    """A learner's Jupyter without the book toolchain: gluing does nothing, but a non-finite
    value still fails (the same cell fails in the book)."""
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # `import myst_nb` raises ImportError
    with pytest.raises(ImportError):
        import myst_nb  # noqa: F401
    assert glue("fine", np.float64(0.5)) is None
    with pytest.raises(NonFiniteGlueError, match="glue key 'bad'"):
        glue("bad", float("inf"))


def test_check_finite_is_usable_alone():
    check_finite("x", [1.0, 2.0])
    with pytest.raises(NonFiniteGlueError, match="glue key 'x'"):
        check_finite("x", [1.0, float("nan")])
