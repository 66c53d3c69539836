"""Glued numbers in grill banks and exercise text render everywhere the text appears: on the
chapter's page (from the page's own glue), in the grill appendix (pasted from the executed
chapter, and refreshed when only the chapter changes), and in ``_static/glue_values.json`` for the
self-quiz. A tiny Sphinx project whose chapter notebook carries stored glue outputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CONF = """\
extensions = ["myst_nb", "sphinx_exercise", "sphinx_design", "optlib.course.sphinxext"]
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "colon_fence"]
optlib_assignments_dir = "releases"
optlib_make_assignments = False
exclude_patterns = ["_build", "releases", "exercises"]
"""

INDEX = """\
# Book

```{toctree}
chapters/01_demo
appendix
```
"""

APPENDIX = """\
# Interview grill

```{grill-all}
```
"""

BANK = """\
chapter: 1
title: Demo
questions:
  - id: demo-rate
    question: 'Is a rate of {glue:text}`rate:.2f` fast?'
    answer: 'It needs {glue:text}`steps:.0f` steps, about {glue:text}`ratio` times fewer.'
    difficulty: easy
    tags: [rate]
    trap: false
"""


def _glue_output(key: str, value: float) -> dict:
    """A stored output of ``myst_nb.glue(key, value, display=False)``."""
    prefix = "application/papermill.record/"
    return {
        "output_type": "display_data",
        "data": {prefix + "text/plain": repr(value)},
        "metadata": {"scrapbook": {"name": key, "mime_prefix": prefix}},
    }


def _cell(kind: str, source: str, **extra) -> dict:
    cell = {"cell_type": kind, "metadata": {}, "source": source, **extra}
    if kind == "code":
        cell.setdefault("outputs", [])
        cell["execution_count"] = 1
    return cell


def _notebook(cells: list[dict]) -> str:
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    for i, c in enumerate(cells):
        c["id"] = f"c{i}"
    return json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5})


def _chapter(rate: float) -> str:
    glued = [_glue_output("rate", rate), _glue_output("steps", 412.0), _glue_output("ratio", 3.25)]
    return _notebook(
        [
            _cell("markdown", "# Demo chapter\n\nThe rate is {glue:text}`rate:.3f`."),
            _cell("code", "glue('rate', rate)", outputs=glued),
            _cell("markdown", "## Exercises\n\n```{chapter-exercises} 01_demo\n```\n"),
            _cell("markdown", "## Interview grill\n\n```{grill} 01_demo\n```\n"),
        ]
    )


MASTER = _notebook(
    [
        _cell("raw", "# ASSIGNMENT CONFIG\nname: 01_demo"),
        _cell("markdown", "# Demo exercises"),
        _cell("raw", "# BEGIN QUESTION\nname: q1\nmanual: true\npoints: 1"),
        _cell("markdown", "## Explain the rate\n\nWhy does the chapter measure "
                          "{glue:text}`rate:.2f` and not more?"),  # fmt: skip
        _cell("raw", "# BEGIN SOLUTION"),
        _cell("markdown", "Because {glue:text}`steps:.0f` steps are needed."),
        _cell("raw", "# END SOLUTION"),
        _cell("raw", "# END QUESTION"),
    ]
)


def _project(root: Path, rate: float) -> Path:
    (root / "chapters").mkdir(parents=True, exist_ok=True)
    (root / "exercises" / "grill").mkdir(parents=True, exist_ok=True)
    release = root / "releases" / "01_demo" / "student"
    release.mkdir(parents=True, exist_ok=True)
    (release / "01_demo.ipynb").write_text(_notebook([]))
    for name, text in [("conf.py", CONF), ("index.md", INDEX), ("appendix.md", APPENDIX),
                       ("chapters/01_demo.ipynb", _chapter(rate)),
                       ("exercises/01_demo.ipynb", MASTER),
                       ("exercises/grill/01_demo.yml", BANK)]:  # fmt: skip
        (root / name).write_text(text)
    return root


def _build(src: Path, out: Path) -> tuple[dict[str, str], str]:
    """Build (incrementally when ``out`` exists); the pages and the warnings about glue."""
    env = {k: v for k, v in os.environ.items() if k != "OPTLIB_HIDE_SOLUTIONS"}
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", str(src), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    pages = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*.html")}
    return pages, "\n".join(ln for ln in done.stderr.splitlines() if "glue" in ln.lower())


def _text(page: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    src = _project(tmp_path_factory.mktemp("book"), rate=0.123456)
    out = tmp_path_factory.mktemp("html")
    pages, warnings = _build(src, out)
    return src, out, pages, warnings


def test_no_glue_warnings(built):
    assert built[3] == ""


def test_chapter_page_fills_its_grill_and_exercises(built):
    page = _text(built[2]["chapters/01_demo.html"])
    assert "Is a rate of 0.12 fast?" in page  # grill question (the dropdown's title)
    assert "It needs 412 steps, about 3.25 times fewer." in page  # grill answer
    assert "Why does the chapter measure 0.12 and not more?" in page  # exercise statement
    assert "Because 412 steps are needed." in page  # model answer
    assert "{glue" not in page  # no role left raw


def test_appendix_pastes_values_from_the_chapter(built):
    page = _text(built[2]["appendix.html"])
    assert "Is a rate of 0.12 fast?" in page
    assert "It needs 412 steps, about 3.25 times fewer." in page
    assert "{glue" not in page  # no role left raw


def test_glue_values_file_for_the_quiz(built):
    from optlib.course import grill

    path = built[1] / "_static" / grill.GLUE_VALUES
    values = grill.load_glue_values(path)
    assert values == {"01_demo": {"rate": "0.123456", "steps": "412.0", "ratio": "3.25"}}
    bank = grill.load_bank(built[0] / "exercises" / "grill" / "01_demo.yml")
    answer = grill.fill_glue(bank.questions[0].answer, values["01_demo"], bank.chapter)
    assert answer == "It needs 412 steps, about 3.25 times fewer."


def test_appendix_follows_a_changed_chapter(tmp_path):
    """Only the chapter changes (a new execution): the appendix, whose source did not change,
    is re-read on the next incremental build and shows the new value."""
    src, out = _project(tmp_path / "book", rate=0.123456), tmp_path / "html"
    pages, _ = _build(src, out)
    assert "Is a rate of 0.12 fast?" in _text(pages["appendix.html"])
    (src / "chapters" / "01_demo.ipynb").write_text(_chapter(rate=0.987654))
    pages, warnings = _build(src, out)
    assert warnings == ""
    assert "Is a rate of 0.99 fast?" in _text(pages["appendix.html"])
    assert "Is a rate of 0.99 fast?" in _text(pages["chapters/01_demo.html"])


def test_a_key_the_chapter_does_not_glue_is_a_build_warning(tmp_path):
    src = _project(tmp_path / "book", rate=0.5)
    bank = src / "exercises" / "grill" / "01_demo.yml"
    bank.write_text(BANK.replace("{glue:text}`ratio`", "{glue:text}`missing_key:.1f`"))
    _, warnings = _build(src, tmp_path / "html")
    assert "missing_key" in warnings
    assert "appendix" in warnings and "01_demo" in warnings  # both pages say so


def test_placeholders_without_executed_chapters(tmp_path):
    src = _project(tmp_path / "book", rate=0.5)
    (src / "conf.py").write_text(CONF + "optlib_resolve_glue = False\n")
    pages, warnings = _build(src, tmp_path / "html")
    assert warnings == ""
    for name in ("appendix.html", "chapters/01_demo.html"):
        assert "Is a rate of [a value computed in chapter 1] fast?" in _text(pages[name])
