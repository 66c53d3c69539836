"""optlib.course.sphinxext in a tiny Sphinx project: exercises with dropdown solutions, the grill,
the appendix, and the student build with every solution (plain or gated) removed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAME = "01_gradient_descent"

CONF = """\
extensions = ["myst_nb", "sphinx_exercise", "sphinx_design", "optlib.course.sphinxext"]
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "colon_fence"]
optlib_assignments_dir = "releases"
optlib_make_assignments = False
# the chapter is not executed here: numbers glued into the banks show as placeholders
optlib_resolve_glue = False
exclude_patterns = ["_build", "releases", "exercises"]
"""

INDEX = """\
# Book

```{toctree}
chapter
appendix
gated
```
"""

# The chapter is a notebook, like the book's: the directives sit in a markdown cell.
CHAPTER = {
    "cells": [
        {"cell_type": "markdown", "id": "c1", "metadata": {}, "source": "# Chapter"},
        {"cell_type": "code", "id": "c2", "metadata": {}, "execution_count": None, "outputs": [],
         "source": "x = 1"},
        {
            "cell_type": "markdown",
            "id": "c3",
            "metadata": {},
            "source": f"## Exercises\n\n```{{chapter-exercises}} {NAME}\n```\n\n"
            f"## Interview grill\n\n```{{grill}} {NAME}\n```\n",
        },
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}  # fmt: skip

APPENDIX = (ROOT / "chapters" / "interview_grill.md").read_text()  # the book's own page

GATED = """\
# Gated

```{exercise-start}
:label: ex-gated
```
Compute it.
```{exercise-end}
```

```{solution-start} ex-gated
:class: dropdown
```
GATED-SOLUTION-TEXT
```{solution-end}
```
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("book")
    (src / "exercises" / "grill").mkdir(parents=True)
    shutil.copy(ROOT / "exercises" / f"{NAME}.ipynb", src / "exercises")
    shutil.copy(ROOT / "exercises" / "grill_quiz.ipynb", src / "exercises")
    for bank in (ROOT / "exercises" / "grill").glob("*.yml"):
        shutil.copy(bank, src / "exercises" / "grill")
    release = src / "releases" / NAME / "student"
    release.mkdir(parents=True)
    (release / f"{NAME}.ipynb").write_text(json.dumps({"cells": [], "student": True}))
    (src / "chapter.ipynb").write_text(json.dumps(CHAPTER))
    for name, text in [("conf.py", CONF), ("index.md", INDEX), ("appendix.md", APPENDIX),
                       ("gated.md", GATED)]:  # fmt: skip
        (src / name).write_text(text)
    return src


def _build(src: Path, out: Path, hide: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPTLIB_HIDE_SOLUTIONS"}
    if hide:
        env["OPTLIB_HIDE_SOLUTIONS"] = "1"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "-n", "--keep-going", "-q",
           str(src), str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    pages = {p.name: p.read_text() for p in out.glob("*.html")}
    pages["searchindex.js"] = (out / "searchindex.js").read_text()
    pages["_sources"] = str((out / "_sources").exists())
    pages["_downloads"] = " ".join(p.name for p in (out / "_downloads").rglob("*.ipynb"))
    pages["notebooks"] = " ".join(p.name for p in (out / "notebooks").glob("*.ipynb"))
    return pages


@pytest.fixture(scope="module")
def site(project, tmp_path_factory):
    return _build(project, tmp_path_factory.mktemp("html"), hide=False)


@pytest.fixture(scope="module")
def student_site(project, tmp_path_factory):
    return _build(project, tmp_path_factory.mktemp("student-html"), hide=True)


def test_exercises_with_dropdown_solutions(site):
    page = site["chapter.html"]
    titles = re.findall(r'caption-number">Exercise (\d) </span> \(([^)]*)\)', page)
    assert [t for _, t in titles] == [
        "A backtracking line search",
        "The largest stable learning rate",
        "Predict the number of iterations",
        "Why a smaller learning rate does not cure a narrow valley",
    ]
    assert page.count('class="solution dropdown admonition"') == 4
    assert "eigvalsh" in page and "Model answer" in page  # solution code and free-response
    assert "BEGIN SOLUTION" not in page and "checks." not in page  # no markers, no tests
    assert "grader.check(&quot;q1&quot;)" in page
    # the student notebook, linked for download under a name apart from the chapter's
    assert f'href="notebooks/{NAME}_exercises.ipynb" download=' in page
    assert f"{NAME}_exercises.ipynb" in site["notebooks"]


def test_grill_in_chapter_with_hidden_answers_and_traps(site):
    page = site["chapter.html"]
    details = re.findall(r"<details[^>]*>", page)
    assert len(details) >= 10 and not any(" open" in d for d in details)  # closed until clicked
    assert page.count("<em>(trap)</em>") >= 3
    assert 'id="grill-gd-smaller-lr-always-safer"' in page
    assert "{glue" not in page


def test_appendix_collects_every_bank(site):
    page = site["appendix.html"]
    assert "Chapter 1: Gradient descent" in page
    assert "{glue" not in page  # numbers from the chapters: values or placeholders, never raw
    assert "grill_quiz.ipynb" in site["_downloads"]  # the self-quiz notebook
    from optlib.course.grill import load_banks

    banks = load_banks(ROOT / "exercises" / "grill")
    for bank in banks:
        assert f"Chapter {bank.chapter}: {bank.title}" in page
    assert len(re.findall(r"<details", page)) == sum(len(b.questions) for b in banks)


def test_gated_solution_renders(site):
    assert "GATED-SOLUTION-TEXT" in site["gated.html"]


def test_student_build_has_no_solutions(student_site):
    page = student_site["chapter.html"]
    assert page.count('class="exercise admonition"') == 4
    assert 'class="solution' not in page
    assert "eigvalsh" not in page and "Model answer" not in page
    assert "eigvalsh" not in student_site["searchindex.js"]
    assert "GATED-SOLUTION-TEXT" not in student_site["gated.html"]
    assert student_site["_sources"] == "False"  # no copies of the sources
    assert len(re.findall(r"<details", page)) >= 10  # grill answers stay (study material)
