"""Read a submitted notebook as data and find the code that answers each question.

The notebook is parsed as JSON only: outputs, execution counts and otter's saved results are
ignored, nothing in it is executed here. Its code cells are split into regions:

* **set-up**: code cells before the first answer cell (tagged ``otter_answer_cell`` by
  ``otter assign``; if a notebook editor dropped the tags, the first *n* code cells, where *n*
  is the number of set-up code cells in the master);
* **question q**: code cells after the previous ``grader.check(...)`` cell (or after the
  set-up) up to ``grader.check("q")``.

A question is graded by running set-up + its own region, so an earlier answer that hangs or
breaks cannot cost a later question. Cells that only drive otter (``import otter``,
``grader = otter.Notebook(...)``, ``grader.check...``) are dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .master import Master

__all__ = ["Submission", "read_submission"]

ANSWER_TAGS = {"otter_answer_cell", "otter_assign_solution_cell"}
_CHECK = re.compile(r"""grader\.check\(\s*(['"])(?P<q>[\w.\-]+)\1\s*\)\s*;?""")
_OTTER_ONLY = re.compile(
    r"""(import\s+otter|grader\s*=\s*otter\.Notebook\(.*\)|grader\.\w+\(.*\)|"""
    r"""from\s+otter\b.*|.*\botter\.Notebook\(.*\))\s*;?"""
)
SELF_CHECK_MARK = "# optlib self-check set-up"


@dataclass
class Submission:
    path: Path
    error: str | None = None
    setup: list[str] = field(default_factory=list)
    regions: dict[str, list[str]] = field(default_factory=dict)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    if isinstance(src, list):
        return "".join(s for s in src if isinstance(s, str))
    return src if isinstance(src, str) else ""


def _statements(source: str) -> list[str]:
    return [
        ln.strip() for ln in source.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]


def _check_target(source: str) -> str | None:
    lines = _statements(source)
    if len(lines) == 1:
        m = _CHECK.fullmatch(lines[0])
        if m:
            return m.group("q")
    return None


def _otter_only(source: str) -> bool:
    if source.lstrip().startswith(SELF_CHECK_MARK):
        return True
    lines = _statements(source)
    return bool(lines) and all(_OTTER_ONLY.fullmatch(ln) for ln in lines)


def _tags(cell: dict) -> set[str]:
    meta = cell.get("metadata")
    tags = meta.get("tags", []) if isinstance(meta, dict) else []
    return {t for t in tags if isinstance(t, str)} if isinstance(tags, list) else set()


def read_submission(path: str | Path, master: Master, max_bytes: int = 50 * 2**20) -> Submission:
    """Parse ``path`` and split its code into set-up and per-question regions (never raises
    on a bad notebook: the problem is recorded in ``error``)."""
    path = Path(path)
    sub = Submission(path)
    try:
        if path.stat().st_size > max_bytes:
            raise ValueError(f"larger than {max_bytes // 2**20} MiB")
        nb = json.loads(path.read_bytes().decode("utf-8"))
        cells = nb["cells"]
        if not isinstance(cells, list):
            raise TypeError("'cells' is not a list")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        sub.error = f"unreadable notebook ({type(err).__name__})"
        return sub

    code = [c for c in cells if isinstance(c, dict) and c.get("cell_type") == "code"]
    first_answer = next((i for i, c in enumerate(code) if _tags(c) & ANSWER_TAGS), None)
    if first_answer is None:  # tags lost: fall back on the master's number of set-up cells
        n_setup, seen, first_answer = len(master.setup_sources), 0, len(code)
        for i, c in enumerate(code):
            if _otter_only(_source(c)) or _check_target(_source(c)):
                continue
            if seen == n_setup:
                first_answer = i
                break
            seen += 1
    region: list[str] = []
    for i, cell in enumerate(code):
        src = _source(cell)
        target = _check_target(src)
        if target is not None:
            sub.regions.setdefault(target, region)
            region = []
        elif _otter_only(src):
            continue
        elif i < first_answer:
            sub.setup.append(src)
        else:
            region.append(src)
    return sub
