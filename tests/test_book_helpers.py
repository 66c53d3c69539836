"""optlib.course.book.glue: numbers computed with NumPy or torch can be formatted in the prose."""

import numpy as np
import pytest
import torch

from optlib.course.book import plain


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
