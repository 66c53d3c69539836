"""The first cell of every chapter and exercise notebook: the standard set-up
(:mod:`optlib.course.notebook`), which works in a fresh Python with only the course package, or
prints the one command that makes it work.

The notebooks listed in ``NOT_YET_CONVERTED`` still open with their old first cell; the lead
converts them all at once with ``python -m optlib.course.notebook rewrite`` when no one else edits
notebooks, and empties the list. A listed notebook that is already converted fails, so the list
only shrinks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from optlib.course import notebook as nbs

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = nbs.course_notebooks(ROOT)
NOT_YET_CONVERTED: set[str] = set()


def _first_cell(path: Path) -> str:
    cell = nbs.first_code_cell(json.loads(path.read_text()))
    return "" if cell is None else "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_first_cell_is_the_standard_set_up(path):
    rel = path.relative_to(ROOT).as_posix()
    expected = nbs.header(nbs.install_command(nbs.repository_url(ROOT)))
    converted = _first_cell(path).startswith(expected)
    if rel in NOT_YET_CONVERTED:
        assert not converted, f"{rel} is converted: remove it from NOT_YET_CONVERTED"
    else:
        assert converted, (
            f"{rel}: the first code cell must start with the standard set-up; run "
            f"`python -m optlib.course.notebook rewrite {rel}`"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_first_cell_is_folded_on_the_book_pages(path):
    """The set-up is for people who run the notebook; a reader of the site sees it folded."""
    cell = nbs.first_code_cell(json.loads(path.read_text()))
    assert cell is not None and nbs.HIDE_TAG in cell.get("metadata", {}).get("tags", []), (
        f"run `python -m optlib.course.notebook rewrite {path.relative_to(ROOT).as_posix()}`"
    )


def _run(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, "-c", code], capture_output=True, text=True,
                          cwd=cwd, timeout=120)  # fmt: skip


def test_header_without_the_package_prints_the_install_command(tmp_path):
    """In a Python that cannot import optlib (no site-packages, ``-I -S``), the cell stops and
    prints the exact command."""
    command = nbs.install_command("https://github.com/owner/course")
    r = _run(nbs.header(command), "-I", "-S", cwd=tmp_path)
    assert r.returncode != 0
    assert command in r.stdout and "ModuleNotFoundError" in r.stderr
    assert command == '%pip install "optlib-course[notebooks] @ git+https://github.com/owner/course"'


def test_header_with_a_missing_extra_names_the_command_and_otherwise_runs(tmp_path):
    command = nbs.install_command(wheel=True)
    block = textwrap.dedent("""
        import sys
        sys.modules['sklearn'] = None  # as if not installed: importing it raises
    """)
    r = _run(block + nbs.header(command), cwd=tmp_path)
    assert r.returncode != 0 and command in r.stdout and "sklearn" in r.stdout
    ok = _run(nbs.header(command) + "print('ready')", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith("ready")
    assert command.startswith('%pip install "./optlib') and command.endswith('[notebooks]"')


def test_rewrite_keeps_the_cells_own_lines_and_is_idempotent(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "source": ["# T"], "metadata": {}},
                    {"cell_type": "code", "source": ["from myst_nb import glue\n", "x = 1\n"],
                     "metadata": {}, "outputs": [], "execution_count": None}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}  # fmt: skip
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    command = nbs.install_command()
    assert nbs.rewrite(path, command)
    src = _first_cell(path)
    assert src.startswith(nbs.header(command))
    assert src.endswith("from optlib.course.book import glue\nx = 1\n")
    assert not nbs.rewrite(path, command)
    other = nbs.install_command("https://github.com/o/r")
    assert nbs.rewrite(path, other) and _first_cell(path).count("INSTALL = ") == 1
    assert nbs.set_install_command(_first_cell(path), command).startswith(nbs.header(command))
