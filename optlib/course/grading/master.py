"""Read an exercise master notebook (otter-grader's master format) into a grading spec.

A master has raw cells that open and close blocks::

    # ASSIGNMENT CONFIG           (YAML: otter assign's settings)
    # BEGIN QUESTION              (YAML: name, points, manual)
      <prompt: markdown cells>
    # BEGIN SOLUTION  ... # END SOLUTION      (code or markdown cells)
    # BEGIN TESTS     ... # END TESTS         (exception-based test cells)
    # END QUESTION

Each test cell is a function and a call to it, as otter requires; its body must be a call into
:mod:`optlib.course.checks` whose first argument is one of the function's parameters (the name the
learner defines), with literal keyword options. A first line ``# HIDDEN`` hides the test from
students. Because the tests are only such calls, the trusted grader can rebuild every test from
the master without executing it: ``checks.gd_step(gd_step, steps=25)`` becomes "run check
``gd_step`` on the learner's ``gd_step`` with ``steps=25``".
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..checks import CHECKS

__all__ = ["Master", "MasterFormatError", "Question", "TestCall", "read_master"]

_SOLUTION_LINE = re.compile(r"^\s*# (BEGIN|END) SOLUTION( NO PROMPT)?\s*$")


class MasterFormatError(ValueError):
    """The master notebook does not follow the format above."""


@dataclass(frozen=True)
class TestCall:
    """One test cell: run ``optlib.course.checks.<check>`` on the learner's ``target``."""

    check: str
    target: str
    options: dict[str, Any]
    hidden: bool
    source: str


@dataclass
class Question:
    name: str
    points: float
    manual: bool
    prompt: list[dict] = field(default_factory=list)  # markdown cells
    solution: list[dict] = field(default_factory=list)  # code and markdown cells
    tests: list[TestCall] = field(default_factory=list)

    @property
    def title(self) -> str:
        """The prompt's first heading, without the ``#`` marks (or the question name)."""
        for cell in self.prompt:
            for line in _source(cell).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
        return self.name


@dataclass
class Master:
    path: Path
    name: str
    config: dict[str, Any]
    intro: list[dict]  # cells before the first question
    questions: list[Question]

    @property
    def setup_sources(self) -> list[str]:
        """Code run before any question: the code cells before the first question."""
        return [_source(c) for c in self.intro if c.get("cell_type") == "code"]

    @property
    def autograded(self) -> list[Question]:
        return [q for q in self.questions if not q.manual]


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def strip_solution_markers(source: str) -> str:
    """A solution cell as readers should see it: without ``# BEGIN/END SOLUTION`` lines."""
    lines = [ln for ln in source.splitlines() if not _SOLUTION_LINE.match(ln)]
    return "\n".join(ln.removesuffix(" # SOLUTION") for ln in lines).strip("\n")


def _boundary(cell: dict) -> tuple[str, str] | None:
    """``("begin"/"end", block)`` for a raw block cell, ``("config", "")``, or None."""
    if cell.get("cell_type") != "raw":
        return None
    first = _source(cell).strip().splitlines()[0] if _source(cell).strip() else ""
    m = re.fullmatch(r"#\s*(BEGIN|END)\s+(QUESTION|SOLUTION|TESTS|PROMPT)\s*", first, re.I)
    if m:
        return m.group(1).lower(), m.group(2).lower()
    if re.fullmatch(r"#\s*ASSIGNMENT\s+CONFIG\s*", first, re.I):
        return "config", ""
    return None


def _yaml_body(cell: dict) -> dict:
    body = "\n".join(_source(cell).splitlines()[1:])
    data = yaml.safe_load(body) or {}
    if not isinstance(data, dict):
        raise MasterFormatError(f"expected YAML settings under {_source(cell).splitlines()[0]!r}")
    return data


def _checks_call(node: ast.AST) -> str | None:
    """``checks.NAME(...)`` or ``optlib.course.checks.NAME(...)`` → NAME."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return None
    owner = node.func.value
    if isinstance(owner, ast.Name) and owner.id == "checks":
        return node.func.attr
    if (
        isinstance(owner, ast.Attribute)
        and owner.attr == "checks"
        and isinstance(owner.value, ast.Name)
        and owner.value.id == "optlib"
    ):
        return node.func.attr
    return None


def parse_test(source: str, question: str) -> list[TestCall]:
    """The check calls in one exception-based test cell (see the module docstring)."""
    lines = source.strip().splitlines()
    hidden = bool(lines) and lines[0].lstrip().startswith("#") and "hidden" in lines[0].lower()
    where = f"question {question}, test cell starting {lines[0] if lines else ''!r}"
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise MasterFormatError(f"{where}: {err}") from None
    if not tree.body or not isinstance(tree.body[0], ast.FunctionDef) or len(tree.body) > 2:
        raise MasterFormatError(f"{where}: expected a test function and one call to it")
    fn = tree.body[0]
    params = {a.arg for a in fn.args.args}
    calls = []
    for stmt in fn.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring
        name = _checks_call(stmt.value) if isinstance(stmt, ast.Expr) else None
        if name is None:
            raise MasterFormatError(
                f"{where}: only `checks.<name>(answer, option=literal)` calls are allowed in "
                f"a test body, found {ast.unparse(stmt)!r}"
            )
        call = stmt.value
        if name not in CHECKS:
            raise MasterFormatError(f"{where}: optlib.course.checks has no check named {name!r}")
        if len(call.args) != 1 or not isinstance(call.args[0], ast.Name):
            raise MasterFormatError(f"{where}: {name}() takes the learner's name as its argument")
        if call.args[0].id not in params:
            raise MasterFormatError(f"{where}: {call.args[0].id!r} is not a test parameter")
        try:
            options = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        except ValueError:
            raise MasterFormatError(f"{where}: options of {name}() must be literals") from None
        if None in options:
            raise MasterFormatError(f"{where}: **options are not allowed")
        json.dumps(options)  # options travel as JSON
        calls.append(TestCall(name, call.args[0].id, options, hidden, source))
    if not calls:
        raise MasterFormatError(f"{where}: no optlib.course.checks call")
    return calls


def read_master(path: str | Path) -> Master:
    """Parse the master notebook at ``path``."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    config: dict[str, Any] = {}
    intro: list[dict] = []
    questions: list[Question] = []
    stack: list[str] = []
    q: Question | None = None
    for cell in nb["cells"]:
        mark = _boundary(cell)
        if mark == ("config", ""):
            config.update(_yaml_body(cell))
            continue
        if mark and mark[0] == "begin":
            block = mark[1]
            if block == "question":
                if stack:
                    raise MasterFormatError(f"{path}: a question begins inside {stack[-1]}")
                settings = _yaml_body(cell)
                if "name" not in settings:
                    raise MasterFormatError(f"{path}: a question has no name")
                q = Question(
                    name=str(settings["name"]),
                    points=float(settings.get("points", 1)),
                    manual=bool(settings.get("manual", False)),
                )
                questions.append(q)
            elif not stack:
                raise MasterFormatError(f"{path}: a {block} block outside a question")
            stack.append(block)
            continue
        if mark and mark[0] == "end":
            if not stack or stack[-1] != mark[1]:
                raise MasterFormatError(f"{path}: unexpected END {mark[1].upper()}")
            stack.pop()
            if mark[1] == "question":
                q = None
            continue
        if not stack:
            if cell.get("cell_type") != "raw" and not questions:
                intro.append(cell)
            continue
        assert q is not None
        block = stack[-1]
        if block == "tests":
            if cell.get("cell_type") != "code":
                raise MasterFormatError(f"{path}: question {q.name}: a non-code test cell")
            q.tests.extend(parse_test(_source(cell), q.name))
        elif block == "solution":
            q.solution.append(cell)
        elif cell.get("cell_type") == "markdown":
            q.prompt.append(cell)
    if stack:
        raise MasterFormatError(f"{path}: unclosed {stack[-1]} block")
    names = [q.name for q in questions]
    if len(set(names)) != len(names):
        raise MasterFormatError(f"{path}: duplicate question names {names}")
    for q in questions:
        if not q.manual and not q.tests:
            raise MasterFormatError(f"{path}: autograded question {q.name} has no tests")
    return Master(path, str(config.get("name", path.stem)), config, intro, questions)
