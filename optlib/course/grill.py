"""The interview grill: one bank of questions per chapter, kept as data in ``exercises/grill/``.

A bank is a YAML file named like its chapter (``01_gradient_descent.yml``)::

    chapter: 1
    title: Gradient descent
    questions:
      - id: gd-smaller-lr-safer          # unique across all banks: [a-z0-9-]
        question: A smaller learning rate is always safer. True?
        answer: |                         # Markdown, $math$ allowed
          Safer against divergence only ...
        difficulty: easy                  # easy | medium | hard
        tags: [learning-rate, stability]
        trap: true                        # the question invites a wrong answer

:func:`load_bank` and :func:`load_banks` validate as they read (:class:`GrillError` names
the file, the question and the problem). The book renders the banks with the ``grill`` and
``grill-all`` directives of :mod:`optlib.course.sphinxext`; :func:`quiz` drills them in a notebook.

**Numbers.** A number the chapter computes is never typed into a bank: the text names the value
the chapter glues, ``{glue:text}`catch_up_epochs:.0f``` (MyST's role; the key must be glued by
the bank's own chapter, ``tests/test_glued_numbers.py`` checks it). The book fills it in from the
executed chapter, on the chapter's page and in the appendix; the build also writes every glued
value to ``_static/glue_values.json`` in the site, which :func:`quiz` reads
(:func:`load_glue_values`); where no value is available it shows a placeholder saying which
chapter computes it (:func:`fill_glue`).
"""

from __future__ import annotations

import ast
import html
import json
import os
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DIFFICULTIES",
    "GLUE_ROLE",
    "GLUE_VALUES",
    "Bank",
    "GlueRef",
    "GrillError",
    "GrillQuestion",
    "Quiz",
    "default_dir",
    "fill_glue",
    "format_glued",
    "glue_refs",
    "load_bank",
    "load_banks",
    "load_glue_values",
    "quiz",
]

FIELDS = ("id", "question", "answer", "difficulty", "tags", "trap")
DIFFICULTIES = ("easy", "medium", "hard")
_ID = re.compile(r"[a-z0-9][a-z0-9-]*")


class GrillError(ValueError):
    """A bank breaks the format above."""


@dataclass(frozen=True)
class GrillQuestion:
    id: str
    question: str
    answer: str
    difficulty: str
    tags: tuple[str, ...]
    trap: bool
    chapter: int
    bank: str


@dataclass(frozen=True)
class Bank:
    name: str
    chapter: int
    title: str
    questions: tuple[GrillQuestion, ...]


_CHECKOUT = Path(__file__).resolve().parents[2]  # optlib/course/grill.py -> the checkout
PACKAGE_BANKS = Path(__file__).resolve().with_name("grill_banks")  # installed as package data


def _has_banks(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.yml"))


def default_dir() -> Path:
    """Where the banks are, first match of:

    1. ``./grill`` (a notebook run next to a folder of banks, as in ``exercises/``);
    2. ``exercises/grill`` of the checkout optlib runs from (an editable install);
    3. ``optlib/course/grill_banks``, the copy installed with optlib as package data (so the
       self-quiz notebook works when downloaded alone).

    If none holds a bank, the checkout's folder (where :func:`load_banks` then says none was
    found)."""
    candidates = [Path("grill"), _CHECKOUT / "exercises" / "grill", PACKAGE_BANKS]
    return next((c for c in candidates if _has_banks(c)), candidates[1])


def _validate_question(raw: Any, where: str, chapter: int, bank: str) -> GrillQuestion:
    if not isinstance(raw, dict):
        raise GrillError(f"{where}: each question must be a mapping of {', '.join(FIELDS)}")
    missing = [f for f in FIELDS if f not in raw]
    if missing:
        raise GrillError(f"{where}: missing field(s) {', '.join(missing)}")
    extra = sorted(set(raw) - set(FIELDS))
    if extra:
        raise GrillError(f"{where}: unknown field(s) {', '.join(extra)}")
    qid = raw["id"]
    if not isinstance(qid, str) or not _ID.fullmatch(qid):
        raise GrillError(f"{where}: id must be lowercase letters, digits and '-', got {qid!r}")
    where = f"{where} ({qid})"
    for text in ("question", "answer"):
        if not isinstance(raw[text], str) or not raw[text].strip():
            raise GrillError(f"{where}: empty {text}")
    if raw["difficulty"] not in DIFFICULTIES:
        raise GrillError(f"{where}: difficulty must be one of {DIFFICULTIES}")
    tags = raw["tags"]
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise GrillError(f"{where}: tags must be a list of words")
    if not isinstance(raw["trap"], bool):
        raise GrillError(f"{where}: trap must be true or false")
    return GrillQuestion(
        id=qid,
        question=raw["question"].strip(),
        answer=raw["answer"].strip(),
        difficulty=raw["difficulty"],
        tags=tuple(t.strip() for t in tags),
        trap=raw["trap"],
        chapter=chapter,
        bank=bank,
    )


def load_bank(path: str | Path) -> Bank:
    """Read and validate one bank (see the module docstring)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise GrillError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise GrillError(f"{path}: expected 'chapter', 'title' and a list of 'questions'")
    chapter, title = data.get("chapter"), data.get("title")
    if not isinstance(chapter, int) or not isinstance(title, str) or not title.strip():
        raise GrillError(f"{path}: 'chapter' must be a number and 'title' a non-empty string")
    if not data["questions"]:
        raise GrillError(f"{path}: no questions")
    questions, seen = [], set()
    for i, raw in enumerate(data["questions"], 1):
        q = _validate_question(raw, f"{path.name}, question {i}", chapter, path.stem)
        if q.id in seen:
            raise GrillError(f"{path.name}: duplicate id {q.id!r}")
        seen.add(q.id)
        questions.append(q)
    return Bank(path.stem, chapter, title.strip(), tuple(questions))


def load_banks(directory: str | Path | None = None) -> list[Bank]:
    """Every ``*.yml`` bank in ``directory`` (default :func:`default_dir`), by chapter; ids
    must be unique across banks."""
    directory = Path(directory) if directory is not None else default_dir()
    if not any(directory.glob("*.yml")):
        raise GrillError(
            f"no question banks (*.yml) in {directory}; run from the repository's exercises/ "
            "folder or pass the folder of the banks"
        )
    banks = sorted(
        (load_bank(p) for p in directory.glob("*.yml")), key=lambda b: (b.chapter, b.name)
    )
    owner: dict[str, str] = {}
    for bank in banks:
        for q in bank.questions:
            if q.id in owner:
                raise GrillError(f"duplicate id {q.id!r} in {owner[q.id]} and {bank.name}")
            owner[q.id] = bank.name
    return banks


def select(
    questions: Iterable[GrillQuestion],
    *,
    chapter: int | None = None,
    difficulty: str | None = None,
    tag: str | None = None,
) -> list[GrillQuestion]:
    """The questions matching every filter given (None: no filter)."""
    return [
        q
        for q in questions
        if (chapter is None or q.chapter == chapter)
        and (difficulty is None or q.difficulty == difficulty)
        and (tag is None or tag in q.tags)
    ]


# --- numbers glued by the chapters -------------------------------------------------------------

#: Matches the MyST glue roles ``{glue:text}`key:fmt```, ``{glue}`key```, ``{glue:md}`key```.
GLUE_ROLE = re.compile(r"\{(glue(?::[a-z]*)?)\}`([^`]+)`")
#: The name of the file the book build writes into its site's ``_static/`` folder, and
#: :func:`quiz` reads.
GLUE_VALUES = "glue_values.json"


@dataclass(frozen=True)
class GlueRef:
    """One glue role in a text: ``{role}`doc::key:fmt``` (``doc`` and ``fmt`` optional)."""

    role: str
    key: str
    doc: str | None = None
    fmt: str | None = None

    @classmethod
    def parse(cls, role: str, content: str) -> GlueRef:
        fmt = None
        if role == "glue:text" and ":" in content.replace("::", ""):
            content, fmt = content.rsplit(":", 1)  # as myst-nb reads it: the last colon
        doc, _, key = content.rpartition("::")
        return cls(role, key.strip(), doc.strip() or None, fmt)

    def content(self, doc: str | None = None) -> str:
        """The role's content, pointed at ``doc`` (``path::key``) if given."""
        doc = doc if doc is not None else self.doc
        out = f"{doc}::{self.key}" if doc else self.key
        return f"{out}:{self.fmt}" if self.fmt is not None else out


def glue_refs(text: str) -> list[GlueRef]:
    """Every glue role in ``text``, in order."""
    return [GlueRef.parse(m[1], m[2]) for m in GLUE_ROLE.finditer(text)]


def format_glued(plain_text: str, fmt: str | None) -> str:
    """A glued value's ``text/plain`` formatted as myst-nb's ``{glue:text}`` does: the repr read
    back as a Python literal, then ``format(value, fmt)`` (the type letter decides int, float or
    str)."""
    try:
        value = ast.literal_eval(plain_text)
    except (SyntaxError, ValueError):
        value = plain_text
    if not fmt:
        return str(value)
    kind = fmt[-1]
    if kind == "s":
        value = str(value)
    elif kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    return format(value, fmt)


def fill_glue(text: str, values: Mapping[str, str] | None, chapter: int | None = None) -> str:
    """``text`` with every glue role replaced by its value from ``values`` (key -> the glued
    ``text/plain``, as in :data:`GLUE_VALUES`), or by a placeholder naming the chapter that
    computes it when the value is unavailable."""
    values = values or {}

    def one(match: re.Match) -> str:
        ref = GlueRef.parse(match[1], match[2])
        if ref.key in values:
            try:
                return format_glued(values[ref.key], ref.fmt)
            except (TypeError, ValueError):
                pass
        where = f"chapter {chapter}" if chapter is not None else "the chapter"
        return f"[a value computed in {where}]"

    return GLUE_ROLE.sub(one, text)


def _glue_values_candidates() -> list[Path]:
    out = []
    if os.environ.get("OPTLIB_GLUE_VALUES"):
        out.append(Path(os.environ["OPTLIB_GLUE_VALUES"]).expanduser())
    out.append(Path(GLUE_VALUES))  # next to the notebook (downloaded from the book's appendix)
    out.append(_CHECKOUT / "_build" / "html" / "_static" / GLUE_VALUES)  # this checkout's book
    return out


def load_glue_values(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """The values every chapter glued, by chapter name (``01_gradient_descent``) and key, as
    the book build wrote them (``{"chapters": {name: {key: text/plain}}}``).

    From ``path`` if given, else the first file found of: ``$OPTLIB_GLUE_VALUES``,
    ``./glue_values.json``, the checkout's ``_build/html/_static/glue_values.json``. Nothing
    found (or a file that is not such JSON): ``{}``, and the quiz shows placeholders."""
    for candidate in [Path(path)] if path is not None else _glue_values_candidates():
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        chapters = data.get("chapters") if isinstance(data, dict) else None
        if isinstance(chapters, dict):
            return {
                str(name): {str(k): str(v) for k, v in keys.items()}
                for name, keys in chapters.items()
                if isinstance(keys, dict)
            }
    return {}


def _math(content: str, config: dict) -> str:
    delim = "$$" if config.get("display_mode") else "$"
    return html.escape(f"{delim}{content}{delim}")


def _to_html(markdown: str) -> str:
    """Markdown to HTML with ``$math$`` passed through untouched for MathJax."""
    try:
        from markdown_it import MarkdownIt
        from mdit_py_plugins.dollarmath import dollarmath_plugin
    except ImportError:  # pragma: no cover - both ship with the book toolchain
        return f"<p>{html.escape(markdown)}</p>"
    md = MarkdownIt("commonmark").use(dollarmath_plugin, renderer=_math)
    return md.render(markdown)


class Quiz:
    """A self-quiz over grill questions: a question, *Reveal*, mark yourself, running score.

    The widget (``widget``) has filters for chapter, difficulty and tag; changing one
    starts a fresh, shuffled deck. The state is plain attributes, so it can be driven (and
    tested) without a browser: ``reveal()``, ``mark()``, ``next()``. ``values`` are the
    chapters' glued numbers (:func:`load_glue_values`); numbers missing there show as
    placeholders, and a note says how to get them.
    """

    def __init__(
        self,
        banks: list[Bank],
        seed: int | None = 0,
        values: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        import ipywidgets as w

        self.banks = banks
        self.values = dict(values or {})
        self.all = [q for b in banks for q in b.questions]
        self.rng = random.Random(seed)
        self.right = self.asked = 0
        self.deck: list[GrillQuestion] = []
        self.current: GrillQuestion | None = None
        self.revealed = False

        chapters = [("all chapters", None)] + [
            (f"{b.chapter}. {b.title}", b.chapter) for b in banks
        ]
        tags = sorted({t for q in self.all for t in q.tags})
        self.chapter = w.Dropdown(options=chapters, value=None, description="Chapter")
        self.difficulty = w.Dropdown(
            options=[("any", None)] + [(d, d) for d in DIFFICULTIES], description="Difficulty"
        )
        self.tag = w.Dropdown(options=[("any", None)] + [(t, t) for t in tags], description="Tag")
        self.question_box = w.HTMLMath()
        self.answer_box = w.HTMLMath()
        self.reveal_button = w.Button(description="Reveal the answer", icon="eye")
        self.right_button = w.Button(description="I got it", button_style="success")
        self.wrong_button = w.Button(description="I missed it", button_style="danger")
        self.next_button = w.Button(description="Next question")
        self.score = w.HTML()
        self.note = w.HTML(self._missing_values_note())
        self.reveal_button.on_click(lambda _: self.reveal())
        self.right_button.on_click(lambda _: self.mark(True))
        self.wrong_button.on_click(lambda _: self.mark(False))
        self.next_button.on_click(lambda _: self.next())
        for control in (self.chapter, self.difficulty, self.tag):
            control.observe(lambda _: self.restart(), names="value")
        self.widget = w.VBox(
            [
                self.note,
                w.HBox([self.chapter, self.difficulty, self.tag]),
                self.question_box,
                w.HBox([self.reveal_button, self.right_button, self.wrong_button]),
                self.answer_box,
                w.HBox([self.next_button, self.score]),
            ]
        )
        self.restart()

    def restart(self) -> None:
        """A fresh shuffled deck of the questions matching the filters; the score resets."""
        self.deck = select(
            self.all,
            chapter=self.chapter.value,
            difficulty=self.difficulty.value,
            tag=self.tag.value,
        )
        self.rng.shuffle(self.deck)
        self.right = self.asked = 0
        self.next()

    def next(self) -> None:
        """Show the next question of the deck (or say the deck is done)."""
        self.current = self.deck.pop() if self.deck else None
        self.revealed = False
        if self.current is None:
            self.question_box.value = "<p><b>No more questions</b> with these filters.</p>"
        else:
            q = self.current
            badges = f"chapter {q.chapter} · {q.difficulty} · {', '.join(q.tags)}"
            question = _to_html(self._filled(q, q.question))
            self.question_box.value = f"<p><i>{html.escape(badges)}</i></p>" + question
        self.answer_box.value = ""
        self._update()

    def reveal(self) -> None:
        if self.current is None:
            return
        self.revealed = True
        trap = "<p><b>Trap question.</b></p>" if self.current.trap else ""
        self.answer_box.value = trap + _to_html(self._filled(self.current, self.current.answer))
        self._update()

    def mark(self, correct: bool) -> None:
        """Score the current question (only once, and only after revealing it)."""
        if self.current is None or not self.revealed:
            return
        self.asked += 1
        self.right += bool(correct)
        self.next()

    def _filled(self, q: GrillQuestion, text: str) -> str:
        return fill_glue(text, self.values.get(q.bank), q.chapter)

    def _missing_values_note(self) -> str:
        missing = sorted(
            {
                q.chapter
                for q in self.all
                for ref in glue_refs(q.question + q.answer)
                if ref.key not in self.values.get(q.bank, {})
            }
        )
        if not missing:
            return ""
        chapters = ", ".join(str(c) for c in missing)
        return (
            f"<p><i>Some answers quote numbers that chapters {html.escape(chapters)} compute; "
            "they show as [a value computed in chapter N] until the book is built in this "
            f"checkout (<code>make book</code>), or until <code>{GLUE_VALUES}</code> from the "
            "book's appendix page sits next to this notebook.</i></p>"
        )

    @property
    def left(self) -> int:
        """Questions not yet marked, the one on screen included."""
        return len(self.deck) + (self.current is not None)

    def _update(self) -> None:
        waiting = self.current is None or not self.revealed
        self.reveal_button.disabled = self.current is None or self.revealed
        self.right_button.disabled = self.wrong_button.disabled = waiting
        pct = f" ({100 * self.right / self.asked:.0f}%)" if self.asked else ""
        self.score.value = f"score: {self.right}/{self.asked}{pct}, {self.left} left"


def quiz(
    directory: str | Path | None = None,
    *,
    seed: int | None = None,
    values: str | Path | Mapping[str, Mapping[str, str]] | None = None,
):
    """Build the self-quiz over every bank and return its widget (display it in a notebook).

    ``values``: the chapters' glued numbers, as a mapping or the path of a
    :data:`GLUE_VALUES` file; default: :func:`load_glue_values` finds the book's."""
    if values is None or isinstance(values, (str, Path)):
        values = load_glue_values(values)
    return Quiz(load_banks(directory), seed=seed, values=values).widget
