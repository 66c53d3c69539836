"""Checks on the book's sources that a build would only show as a wrong page: every "chapter N"
names a chapter that exists, every docstring with LaTeX is a raw string (or the API page prints
"f(⇥heta)"), and the bibliography holds no TeX math (it would print raw ``$...$``)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# --- every "chapter N" resolves --------------------------------------------------------------

_CHAPTER_REF = re.compile(
    r"\b[Cc]hapters?\s+(\d+)((?:\s*(?:[-–—]|to|and|or|,)\s*\d+\b)*)"
)  # chapter 3; Chapters 8–12; chapters 3, 4 and 5


def chapter_numbers(text: str) -> set[int]:
    """The chapter numbers a text names ("chapter 3", "chapters 8–12", "chapters 3 and 5")."""
    out = set()
    for m in _CHAPTER_REF.finditer(text):
        first, rest = int(m[1]), m[2]
        out.add(first)
        for sep, n in re.findall(r"([-–—]|to|and|or|,)\s*(\d+)", rest):
            n = int(n)
            out.update(range(first + 1, n + 1) if sep in "-–—to" else [n])
            first = n
    return out


def existing_chapters() -> set[int]:
    """The numbers of the chapters the table of contents lists (``chapters/NN_slug``)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [ch["file"] for part in toc.get("parts", []) for ch in part.get("chapters", [])]
    return {int(m[1]) for f in files if (m := re.match(r"chapters/(\d+)_", f))}


def _markdown_of_notebook(path: Path) -> list[tuple[str, str]]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [
        (f"cell {i}", "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown"
    ]


def reader_texts() -> list[tuple[str, str, str]]:
    """(file, where, text) for everything a reader reads: the chapters' markdown cells and pages,
    the exercise masters' markdown, and every grill question and answer."""
    out = []
    for path in sorted((ROOT / "chapters").glob("*.ipynb")) + sorted(
        (ROOT / "exercises").glob("[0-9]*.ipynb")
    ):
        rel = path.relative_to(ROOT).as_posix()
        out += [(rel, where, text) for where, text in _markdown_of_notebook(path)]
    for path in sorted((ROOT / "chapters").glob("*.md")):
        out.append((path.relative_to(ROOT).as_posix(), "page", path.read_text(encoding="utf-8")))
    for path in sorted((ROOT / "exercises" / "grill").glob("*.yml")):
        rel = path.relative_to(ROOT).as_posix()
        for q in yaml.safe_load(path.read_text(encoding="utf-8"))["questions"]:
            out.append((rel, q["id"], f"{q['question']}\n{q['answer']}"))
    return out


#: References to chapters that do not exist yet, per file, as they stood when this test was
#: written (the chapter engineers write "a later chapter" instead, or the chapter lands). Only
#: shrinks: a new reference fails, and so does an entry that is no longer needed.
KNOWN_MISSING_CHAPTER_REFS: dict[str, tuple[int, ...]] = {}


def _missing_refs() -> dict[str, dict[str, set[int]]]:
    """{file: {where: chapter numbers that are not in _toc.yml}}."""
    exist = existing_chapters()
    out: dict[str, dict[str, set[int]]] = {}
    for file, where, text in reader_texts():
        missing = chapter_numbers(text) - exist
        if missing:
            out.setdefault(file, {})[where] = missing
    return out


def test_every_chapter_reference_names_an_existing_chapter():
    known = {file: set(nums) for file, nums in KNOWN_MISSING_CHAPTER_REFS.items()}
    new = [
        f"{file} [{where}]: chapter(s) {sorted(nums - known.get(file, set()))}"
        for file, items in _missing_refs().items()
        for where, nums in items.items()
        if nums - known.get(file, set())
    ]
    assert not new, (
        f"references to chapters that are not in _toc.yml (chapters {sorted(existing_chapters())} "
        "are): write 'a later chapter' until it lands:\n" + "\n".join(new)
    )


def test_known_missing_chapter_refs_only_shrink():
    now = {file: set().union(*items.values()) for file, items in _missing_refs().items()}
    fixed = {
        file: sorted(set(nums) - now.get(file, set()))
        for file, nums in KNOWN_MISSING_CHAPTER_REFS.items()
        if set(nums) - now.get(file, set())
    }
    assert not fixed, (
        "fixed (or the chapter landed): remove these from KNOWN_MISSING_CHAPTER_REFS in "
        f"tests/test_build_checks.py: {fixed}"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("see chapter 3, and Chapter 12's table", {3, 12}),
        ("chapters 8–12 cover it", {8, 9, 10, 11, 12}),
        ("chapters 3 and 5, or chapters 2, 4 or 6", {2, 3, 4, 5, 6}),
        ("chapters 9 to 10", {9, 10}),
        ("this chapter, a later chapter, the chapter's 3 figures", set()),
    ],
)
def test_chapter_numbers(text, expected):
    assert chapter_numbers(text) == expected


# --- docstrings with LaTeX are raw strings -----------------------------------------------------


def _docstrings(path: Path):
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    segment = ast.get_source_segment(source, body[0].value) or ""
                    yield getattr(node, "name", "<module>"), body[0].value.lineno, segment


def test_docstrings_with_backslashes_are_raw():
    """A docstring with a backslash (LaTeX: \\theta, \\nabla) must be a raw string: in a plain
    string ``\\t`` is a tab and ``\\n`` a newline, and the API page shows "f(⇥heta)". Written
    ``\\\\theta`` it renders, but reads badly and invites the next mistake."""
    bad = [
        f"{path.relative_to(ROOT)}:{line} ({name})"
        for path in sorted((ROOT / "optlib").rglob("*.py"))
        for name, line, segment in _docstrings(path)
        if "\\" in segment and segment[:1] not in "rR"
    ]
    assert not bad, "docstrings with backslashes that are not raw strings:\n" + "\n".join(bad)


# --- the bibliography ----------------------------------------------------------------------------


def test_bibliography_has_no_tex_math():
    """sphinxcontrib-bibtex prints ``$...$`` in a title as it stands; write such a title in words
    or with Unicode (O(1/k²))."""
    text = (ROOT / "references.bib").read_text(encoding="utf-8")
    lines = [f"{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1) if "$" in line]
    assert not lines, "TeX math in references.bib:\n" + "\n".join(lines)
