"""The grader's handling of files and text, without a sandbox: reading notebooks as Jupyter would
lay them out, safe CSV cells, clean-up that cannot recurse, the static reading of answers."""

from __future__ import annotations

import csv
import json
import os

import pytest

from optlib.course.grading.report import CsvOut, clean, clean_name
from optlib.course.grading.review import review_flags, static_delegation
from optlib.course.grading.sandbox import remove_tree
from optlib.course.grading.submission import read_notebook, read_submission


def _nb(*sources: str, tags: list[str] | None = None) -> dict:
    cells = [{"cell_type": "code", "metadata": {"tags": tags or []}, "source": s, "outputs": []}
             for s in sources]  # fmt: skip
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
        ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
        ("a\x1b[31mred\x1b[0m b", "ared b"),
        ("line\nbreak\ttab\r", "line break tab"),
        ("bad \udc80 surrogate", "bad \\udc80 surrogate"),
        ("bidi \u202e override", "bidi override"),
        ("\x00\x07=1", "'=1"),
    ],
)  # fmt: skip
def test_clean_makes_one_safe_line(text, expected):
    assert clean(text) == expected


def test_file_names_with_invalid_utf8_are_escaped():
    assert clean_name(os.fsdecode(b"p_\xff\xfe.ipynb")) == "p_\\xff\\xfe.ipynb"


def test_csv_rows_are_flushed_one_by_one_and_resume_reads_them(tmp_path):
    out = tmp_path / "g.csv"
    header = ["file", "q1", "total", "notes"]
    w = CsvOut(out, header, resume=False)
    w.write(["a.ipynb", "2", "2", "=cmd|' /C calc'!A0"])
    with open(out, newline="", encoding="utf-8") as f:  # on disk before the writer closes
        assert list(csv.reader(f))[1] == ["a.ipynb", "2", "2", "'=cmd|' /C calc'!A0"]
    w.close()
    again = CsvOut(out, header, resume=True)
    assert again.done == {"a.ipynb"}
    again.close()
    with pytest.raises(ValueError, match="columns"):
        CsvOut(out, ["file", "other"], resume=True)


def test_remove_tree_handles_a_tree_deeper_than_any_recursion_or_path_limit(tmp_path):
    top = tmp_path / "top"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(3000):  # 3000 levels: beyond PATH_MAX and Python's recursion limit
            os.mkdir("d", dir_fd=fd)
            new = os.open("d", os.O_RDONLY, dir_fd=fd)
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=new), "w") as f:
                f.write("x")
            os.close(fd)
            fd = new
    finally:
        os.close(fd)
    (top / "link").symlink_to(tmp_path)  # never followed out of the tree
    (tmp_path / "outside").write_text("keep")
    remove_tree(top)
    assert not top.exists() and (tmp_path / "outside").read_text() == "keep"


def test_notebooks_are_read_without_following_links_or_blocking(tmp_path):
    nb = _nb("x = 1")
    (tmp_path / "bom.ipynb").write_bytes(b"\xef\xbb\xbf" + json.dumps(nb).encode())
    assert read_notebook(tmp_path / "bom.ipynb") == (nb, None)
    (tmp_path / "deep.ipynb").write_text("[" * 200_000)
    assert read_notebook(tmp_path / "deep.ipynb")[1] == "unreadable notebook (nested too deeply)"
    (tmp_path / "latin1.ipynb").write_bytes(b'{"cells": ["\xff"]}')
    assert "not UTF-8" in read_notebook(tmp_path / "latin1.ipynb")[1]
    os.mkfifo(tmp_path / "fifo.ipynb")  # opening it for reading would block forever
    assert read_notebook(tmp_path / "fifo.ipynb")[1] == "skipped: not a regular file"
    (tmp_path / "link.ipynb").symlink_to(tmp_path / "bom.ipynb")
    assert read_notebook(tmp_path / "link.ipynb")[1] == "skipped: a symbolic link"


def test_cells_are_laid_out_as_jupyter_runs_them(tmp_path):
    nb = _nb(
        "# optlib self-check set-up (otter-grader)\nimport otter\ngrader = otter.Notebook()",
        "!pip install foo\nimport numpy as np",
        "%%time\ndef f(x):\n    return np.sqrt(x)\n",
        "import otter\ngrader = otter.Notebook('x.ipynb')\ny = f(4.0)",
        'def g():\n    return 1\ngrader.check("q1")',
        'grader.check("q2")\n',
    )
    path = tmp_path / "s.ipynb"
    path.write_text(json.dumps(nb))
    sub = read_submission(path)
    assert [c.index for c in sub.cells] == [2, 3, 4, 5, 6]  # the self-check cell is dropped
    assert "get_ipython().system('pip install foo')" in sub.cells[0].source
    assert "run_cell_magic('time'" in sub.cells[1].source
    assert "otter" not in sub.cells[2].source and "y = f(4.0)" in sub.cells[2].source
    assert sub.cells[2].source.splitlines()[2] == "y = f(4.0)"  # line numbers are kept
    assert sub.check_points() == {"q1": 3, "q2": 4}
    assert any("def f" in body for body in sub.sources_until(1))  # the %%time body is read


def test_the_course_set_up_lines_are_not_run_and_line_numbers_are_kept(tmp_path):
    """Every course notebook opens with the set-up header (optlib.course.notebook.header): the
    sandbox hides the course package, so the grader leaves those lines out (as comments) and runs
    the cell's own lines after them."""
    from optlib.course.notebook import header

    first = header('%pip install -e "..[notebooks]"') + "\nimport math\nx = math.pi"
    path = tmp_path / "s.ipynb"
    path.write_text(json.dumps(_nb(first, "y = x")))
    cell = read_submission(path).cells[0]
    assert "optlib.course" not in cell.source and "INSTALL" not in cell.source
    lines = cell.source.splitlines()
    assert len(lines) == len(first.splitlines()) and lines[-1] == "x = math.pi"
    assert review_flags([cell.source]) == []  # no longer "imports optlib.course"


def test_static_reading_of_a_delegating_definition():
    forbidden = ["torch.optim.SGD", "torch.optim.sgd", "optlib.SGD", "optlib.optim.sgd"]
    cases = {
        "import torch\nclass MomentumSGD(torch.optim.SGD):\n    pass": {"torch.optim.SGD"},
        "from torch.optim import SGD as S\nMomentumSGD = S": {"torch.optim.SGD"},
        "import torch.optim as O\ndef MomentumSGD(p, **h):\n    return O.SGD(p, **h)":
            {"torch.optim.SGD"},
        "import optlib\nMomentumSGD = optlib.SGD": {"optlib.SGD"},
        "from optlib.optim.sgd import sgd_update\ndef MomentumSGD():\n    sgd_update()":
            {"optlib.optim.sgd"},
        "import torch\nclass MomentumSGD(torch.optim.Optimizer):\n    pass": set(),
        "import torch\nref = torch.optim.SGD\nclass MomentumSGD(torch.optim.Optimizer):\n    pass":
            set(),  # a comparison elsewhere in the notebook is not the answer
    }  # fmt: skip
    for source, expected in cases.items():
        assert static_delegation([source], "MomentumSGD", forbidden) == expected, source
    # a learner-chosen module is never imported to resolve a name
    assert static_delegation(["import antigravity\nf = antigravity.x"], "f", forbidden) == set()


def test_review_flags_name_what_deserves_a_look():
    flags = review_flags(["import sys\nf = sys._getframe(1)\nimport os\nos.kill(1, 9)"])
    assert any("frames" in f for f in flags) and any("signals" in f for f in flags)
    assert review_flags(["def gd_step(theta, grad, lr):\n    return theta - lr * grad"]) == []
