"""Produce the student release and the autograder version of a master with ``otter assign``.

``otter assign <master> _build/assignments/<name>`` writes ``student/<name>.ipynb`` (solutions
replaced by ``...``, hidden tests removed, public tests in the notebook's metadata) and
``autograder/`` (the solution notebook, every test, otter's autograder zip). Two small steps
follow:

* the init cell of both notebooks is replaced by one that carries the public tests itself and
  writes them to a temporary folder, so ``grader.check("q1")`` works from the single ``.ipynb``
  wherever it is opened: renamed, moved, in Jupyter offline, or on Colab (where otter cannot
  read a notebook's metadata);
* the student release is verified: no solution marker, no line of any hidden test, no output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .master import Master, read_master
from .submission import SELF_CHECK_MARK

__all__ = ["assign", "self_check_cell"]

INIT_TEMPLATE = """{mark} (otter-grader). The public tests travel in this cell.
# On Colab, first run:  !pip install -q "otter-grader>=7,<8" and the course library, optlib.
import pathlib
import tempfile

import otter

_PUBLIC_TESTS = {tests}
_tests_dir = pathlib.Path(tempfile.mkdtemp(prefix="otter-tests-"))
for _name, _source in _PUBLIC_TESTS.items():
    (_tests_dir / f"{{_name}}.py").write_text(_source)
grader = otter.Notebook(tests_dir=str(_tests_dir))"""


def self_check_cell(tests: dict[str, str]) -> str:
    """The source of the self-contained init cell for the given public test files."""
    body = "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in sorted(tests.items())) + "}"
    return INIT_TEMPLATE.format(mark=SELF_CHECK_MARK, tests=body)


def _replace_init_cell(nb: dict, tests: dict[str, str]) -> None:
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and "otter.Notebook(" in src:
            cell["source"] = self_check_cell(tests)
            return
    raise RuntimeError("otter assign produced no init cell")


def _verify_student(master: Master, nb: dict) -> None:
    text = json.dumps(nb)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "# SOLUTION"):
        if marker in text:
            raise RuntimeError(f"student release of {master.name} still contains {marker!r}")
    for q in master.questions:
        for t in q.tests:
            if not t.hidden:
                continue
            body = [ln.strip() for ln in t.source.splitlines()[1:] if "checks." in ln]
            if any(ln in text for ln in body):
                raise RuntimeError(f"student release of {master.name} leaks a hidden test")
    if any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"):
        raise RuntimeError(f"student release of {master.name} has outputs")


def assign(master_path: str | Path, out_root: str | Path = "_build/assignments") -> Path:
    """Run ``otter assign`` on one master into ``out_root/<name>/`` and post-process it."""
    master_path = Path(master_path)
    master = read_master(master_path)
    out = Path(out_root) / master_path.stem
    cmd = [sys.executable, "-m", "otter", "assign", "--no-pdfs", str(master_path), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"otter assign failed for {master_path}:\n{done.stderr[-3000:]}")
    for version in ("student", "autograder"):
        nb_path = out / version / master_path.name
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        tests = nb["metadata"]["otter"]["tests"]
        if version == "autograder":  # its metadata holds every test; learners see public ones
            tests = json.loads((out / "student" / master_path.name).read_text())["metadata"][
                "otter"
            ]["tests"]
        _replace_init_cell(nb, tests)
        if version == "student":
            _verify_student(master, nb)
        nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out
