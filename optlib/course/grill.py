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
"""

from __future__ import annotations

import html
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DIFFICULTIES",
    "Bank",
    "GrillError",
    "GrillQuestion",
    "Quiz",
    "default_dir",
    "load_bank",
    "load_banks",
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


def default_dir() -> Path:
    """``./grill`` if there is one (a notebook next to the banks), else ``exercises/grill`` of
    the checkout optlib is installed from."""
    here = Path("grill")
    if here.is_dir() and any(here.glob("*.yml")):
        return here
    return Path(__file__).resolve().parents[2] / "exercises" / "grill"


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

    The widget (:attr:`widget`) has filters for chapter, difficulty and tag; changing one
    starts a fresh, shuffled deck. The state is plain attributes, so it can be driven (and
    tested) without a browser: :meth:`reveal`, :meth:`mark`, :meth:`next`.
    """

    def __init__(self, banks: list[Bank], seed: int | None = 0) -> None:
        import ipywidgets as w

        self.banks = banks
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
        self.reveal_button.on_click(lambda _: self.reveal())
        self.right_button.on_click(lambda _: self.mark(True))
        self.wrong_button.on_click(lambda _: self.mark(False))
        self.next_button.on_click(lambda _: self.next())
        for control in (self.chapter, self.difficulty, self.tag):
            control.observe(lambda _: self.restart(), names="value")
        self.widget = w.VBox(
            [
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
            self.question_box.value = f"<p><i>{html.escape(badges)}</i></p>" + _to_html(q.question)
        self.answer_box.value = ""
        self._update()

    def reveal(self) -> None:
        if self.current is None:
            return
        self.revealed = True
        trap = "<p><b>Trap question.</b></p>" if self.current.trap else ""
        self.answer_box.value = trap + _to_html(self.current.answer)
        self._update()

    def mark(self, correct: bool) -> None:
        """Score the current question (only once, and only after revealing it)."""
        if self.current is None or not self.revealed:
            return
        self.asked += 1
        self.right += bool(correct)
        self.next()

    def _update(self) -> None:
        waiting = self.current is None or not self.revealed
        self.reveal_button.disabled = self.current is None or self.revealed
        self.right_button.disabled = self.wrong_button.disabled = waiting
        pct = f" ({100 * self.right / self.asked:.0f}%)" if self.asked else ""
        self.score.value = f"score: {self.right}/{self.asked}{pct}, {len(self.deck)} left"


def quiz(directory: str | Path | None = None, *, seed: int | None = None):
    """Build the self-quiz over every bank and return its widget (display it in a notebook)."""
    return Quiz(load_banks(directory), seed=seed).widget
