r"""Read a submitted notebook as data and lay out how Jupyter would run it.

The notebook is parsed as JSON only (a byte-order mark is allowed): outputs, execution counts,
cell tags and otter's saved results are ignored, nothing in it is executed here, and a file that
is not a regular file is not opened (see :func:`read_notebook`). Its code cells become a list of
:class:`Cell`, in order, each as the Python that Jupyter would run:

* IPython syntax is turned into Python by IPython's own input transformer, so ``%%time`` and
  ``%time`` run their code, and ``!cmd``, ``%pip`` and other magics become calls that the
  learner's side skips with a note (see :mod:`optlib.course.grading.serve`);
* the course's set-up lines that open every notebook (:func:`optlib.course.notebook.header`: the
  grader's sandbox is the set-up, and it hides the course package), statements that only drive
  otter (``import otter``, ``grader = otter.Notebook(...)``) and the release's self-check set-up
  cell are blanked, line numbers kept; ``grader.check("q1")`` is kept (it does nothing
  in the sandbox) and marks the *check point* of question q1: the question is graded right after
  that cell has run, with every cell before it run as well, as in Jupyter. A question whose check
  cell is missing is graded after the last cell.
"""

from __future__ import annotations

import ast
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..notebook import HEADER_END, HEADER_FIRST_LINE

__all__ = ["Cell", "Submission", "read_notebook", "read_submission", "to_python"]

SELF_CHECK_MARK = "# optlib self-check set-up"
MAX_BYTES = 50 * 2**20
_TIMED_MAGICS = ("time", "capture")  # cell magics whose body runs in the learner's namespace
_FALLBACK_LINE = re.compile(r"(?m)^(\s*)([!%].*)$")


@dataclass
class Cell:
    index: int  # 1-based, among the notebook's code cells
    source: str  # Python, as run in the sandbox
    checks: list[str] = field(default_factory=list)  # grader.check("...") at top level
    bodies: list[str] = field(default_factory=list)  # Python of the cell for static reading


@dataclass
class Submission:
    path: Path
    error: str | None = None
    cells: list[Cell] = field(default_factory=list)

    def check_points(self) -> dict[str, int]:
        """Question name -> position (in ``cells``) of the first cell that checks it."""
        points: dict[str, int] = {}
        for pos, cell in enumerate(self.cells):
            for q in cell.checks:
                points.setdefault(q, pos)
        return points

    def sources_until(self, pos: int) -> list[str]:
        """The Python of every cell up to position ``pos`` (for static reading)."""
        return [body for cell in self.cells[: pos + 1] for body in cell.bodies]


def read_notebook(path: str | Path, max_bytes: int = MAX_BYTES) -> tuple[dict | None, str | None]:
    """``(notebook, None)`` or ``(None, why it cannot be read)``, never raising: the file is
    opened without following a symbolic link and without blocking, and must be a regular file
    of at most ``max_bytes``; UTF-8 with or without a byte-order mark; any JSON depth."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if os.path.islink(path):
            return None, "skipped: a symbolic link"
        return None, f"unreadable file ({type(err).__name__})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "skipped: not a regular file"
        if info.st_size > max_bytes:
            return None, f"unreadable notebook (larger than {max_bytes // 2**20} MiB)"
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                return None, f"unreadable notebook (larger than {max_bytes // 2**20} MiB)"
    except OSError as err:
        return None, f"unreadable file ({type(err).__name__})"
    finally:
        os.close(fd)
    try:
        nb = json.loads(b"".join(chunks).decode("utf-8-sig"))
    except UnicodeDecodeError:
        return None, "unreadable notebook (not UTF-8)"
    except RecursionError:
        return None, "unreadable notebook (nested too deeply)"
    except (ValueError, MemoryError) as err:
        return None, f"unreadable notebook ({type(err).__name__})"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return None, "unreadable notebook (no list of cells)"
    return nb, None


def _text(cell: dict) -> str:
    src = cell.get("source", "")
    if isinstance(src, list):
        return "".join(s for s in src if isinstance(s, str))
    return src if isinstance(src, str) else ""


def to_python(source: str) -> str:
    """Jupyter's own translation of IPython syntax (magics, ``!``, ``?``) into Python."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # without IPython: line magics and shell lines become skipped calls
        return _FALLBACK_LINE.sub(r"\1get_ipython().system(\2)", source)
    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # IPython chokes on some invalid input: the sandbox reports the error
        return source


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _otter_only(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Import):
        return all(a.name.split(".")[0] == "otter" for a in stmt.names)
    if isinstance(stmt, ast.ImportFrom):
        return (stmt.module or "").split(".")[0] == "otter"
    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
        return _root_name(stmt.value) == "otter"
    return False


def _check_target(stmt: ast.stmt) -> str | None:
    """``q1`` for a top-level ``grader.check("q1")`` statement."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return None
    call = stmt.value
    func = call.func
    if (
        isinstance(func, ast.Attribute)
        and func.attr == "check"
        and isinstance(func.value, ast.Name)
        and func.value.id == "grader"
        and call.args
        and isinstance(call.args[0], ast.Constant)
        and isinstance(call.args[0].value, str)
    ):
        return call.args[0].value
    return None


def _magic_body(stmt: ast.stmt) -> str | None:
    """The body of a top-level ``%%time``/``%%capture`` cell (run in the learner's namespace)."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return None
    call = stmt.value
    if (
        isinstance(call.func, ast.Attribute)
        and call.func.attr == "run_cell_magic"
        and len(call.args) == 3
        and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args)
        and call.args[0].value in _TIMED_MAGICS
    ):
        return call.args[2].value
    return None


def _without_course_setup(raw: str) -> str:
    """``raw`` with the course's set-up header (its first line to ``course.setup(INSTALL)``)
    turned into comment lines, so that the lines after it keep their numbers."""
    if not raw.startswith(HEADER_FIRST_LINE):
        return raw
    lines = raw.split("\n")
    for i, line in enumerate(lines):
        if line.strip() == HEADER_END:
            return "#\n" * (i + 1) + "\n".join(lines[i + 1 :])
    return raw


def _prepare_cell(index: int, raw: str) -> Cell | None:
    """The cell as the sandbox runs it (None: a cell that only drives otter)."""
    if raw.lstrip().startswith(SELF_CHECK_MARK):
        return None
    raw = _without_course_setup(raw)
    source = to_python(raw)
    cell = Cell(index, source)
    pending = [source]
    lines = source.split("\n")
    blank: list[tuple[int, int]] = []
    first = True
    while pending:
        text = pending.pop()
        cell.bodies.append(text)
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue  # the sandbox reports the error when the cell runs
        for stmt in tree.body:
            q = _check_target(stmt)
            if q is not None:
                cell.checks.append(q)
            body = _magic_body(stmt)
            if body is not None:
                python = to_python(body)  # IPython runs a %%time body through the same steps
                pending.append(python)
                if first and stmt.lineno == stmt.end_lineno:
                    call = stmt.value  # type: ignore[attr-defined]
                    magic = call.args[0].value
                    lines[stmt.lineno - 1] = (
                        f"get_ipython().run_cell_magic({magic!r}, '', {python!r})"
                    )
            if first and _otter_only(stmt):
                blank.append((stmt.lineno, stmt.end_lineno or stmt.lineno))
        first = False
    source = "\n".join(lines)
    cell.source = source
    cell.bodies[0] = source
    if blank:
        for start, end in blank:
            shared = any(
                s <= start <= e or s <= end <= e
                for s, e in _statement_lines(source)
                if (s, e) != (start, end)
            )
            if not shared:
                for i in range(start - 1, end):
                    lines[i] = ""
        cell.source = "\n".join(lines)
        cell.bodies[0] = cell.source
        if not cell.source.strip() and not cell.checks:
            return None
    return cell


def _statement_lines(source: str) -> list[tuple[int, int]]:
    try:
        return [(s.lineno, s.end_lineno or s.lineno) for s in ast.parse(source).body]
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []


def read_submission(path: str | Path, max_bytes: int = MAX_BYTES) -> Submission:
    """Parse ``path`` into cells (never raises: a problem is recorded in ``error``)."""
    sub = Submission(Path(path))
    nb, error = read_notebook(path, max_bytes)
    if error is not None:
        sub.error = error
        return sub
    assert nb is not None
    index = 0
    try:
        for raw in nb["cells"]:
            if not isinstance(raw, dict) or raw.get("cell_type") != "code":
                continue
            index += 1
            cell = _prepare_cell(index, _text(raw))
            if cell is not None:
                sub.cells.append(cell)
    except RecursionError:
        sub.error = "unreadable notebook (a cell nested too deeply)"
        sub.cells = []
    return sub
