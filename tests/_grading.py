"""Helpers of the grading tests: exercise 1's releases, notebooks built from them, the CLI."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MASTER = ROOT / "tests" / "grading_master.ipynb"  # a fixed copy of exercise 1's master
NAME = MASTER.stem
IS_ROOT = os.geteuid() == 0


def require_bwrap() -> None:
    """The sandbox tests need bubblewrap (.ci/run installs it): fail with what to install."""
    if shutil.which("bwrap") is None:
        pytest.fail("the grading sandbox needs bubblewrap: `apt-get install bubblewrap`")


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def tagged(nb: dict, tag: str) -> list[dict]:
    return [
        c
        for c in nb["cells"]
        if c["cell_type"] == "code" and tag in c.get("metadata", {}).get("tags", [])
    ]


def with_answers(student: dict, answers: list[str | None]) -> dict:
    """The student release with its code answer cells (q1, q2, q3) replaced where not None."""
    nb = copy.deepcopy(student)
    for cell, new in zip(tagged(nb, "otter_answer_cell"), answers):
        if new is not None:
            cell["source"] = new
    return nb


def code_cell(text: str, tags: list[str] | None = None) -> dict:
    meta = {"tags": tags} if tags else {}
    return {"cell_type": "code", "metadata": meta, "source": text, "outputs": [],
            "execution_count": None}  # fmt: skip


def insert_after_setup(nb: dict, text: str) -> dict:
    """An extra cell right after the set-up cell (the first code cell that imports optlib)."""
    nb = copy.deepcopy(nb)
    code = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    at = next((i for i in code if "seed_everything" in source(nb["cells"][i])), code[0])
    nb["cells"].insert(at + 1, code_cell(text))
    return nb


def solutions(solution_nb: dict) -> list[str]:
    return [source(c) for c in tagged(solution_nb, "otter_assign_solution_cell")]


def write(folder: Path, name: str | bytes, nb: dict | str | bytes) -> Path:
    path = os.path.join(os.fsencode(folder), os.fsencode(name) + b".ipynb")
    data = nb if isinstance(nb, (str, bytes)) else json.dumps(nb)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(os.fsdecode(path))


def grade(
    folder: Path,
    out: Path,
    *extra: str,
    master: Path = MASTER,
    timeout: float = 900,
    env: dict | None = None,
    prefix: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """``python -m optlib.course.grading grade`` on ``folder`` (the command instructors run)."""
    cmd = [*(prefix or []), sys.executable, "-m", "optlib.course.grading", "grade", str(master),
           str(folder), str(out), *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def rows(out: Path) -> dict[str, dict]:
    with open(out, newline="", encoding="utf-8") as f:
        return {r["file"].removesuffix(".ipynb"): r for r in csv.DictReader(f)}


def scores(row: dict, names: tuple[str, ...] = ("q1", "q2", "q3", "total")) -> tuple:
    return tuple(float(row[k]) for k in names)


def notebook_from_master(master: Path, *, answers: bool = True) -> dict:
    """What a learner hands in, built from a master without otter: every code cell outside the
    tests, the solutions (markers stripped; ``answers=False``: left out), and a
    ``grader.check("qN")`` cell after each autograded question."""
    from optlib.course.grading.master import _boundary, _yaml_body, strip_solution_markers

    nb = json.loads(master.read_text(encoding="utf-8"))
    cells: list[dict] = []
    stack: list[str] = []
    question: dict = {}
    for cell in nb["cells"]:
        mark = _boundary(cell)
        if mark == ("config", ""):
            continue
        if mark and mark[0] == "begin":
            if mark[1] == "question":
                question = _yaml_body(cell)
            stack.append(mark[1])
            continue
        if mark and mark[0] == "end":
            stack.pop()
            if mark[1] == "question" and not question.get("manual"):
                cells.append(code_cell(f'grader.check("{question["name"]}")'))
            continue
        if cell["cell_type"] != "code" or "tests" in stack:
            continue
        if "solution" in stack:
            if answers:
                cells.append(code_cell(strip_solution_markers(source(cell))))
            continue
        cells.append(code_cell(source(cell)))
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4,
            "nbformat_minor": 5}  # fmt: skip
