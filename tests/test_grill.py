"""Interview-grill banks: the format is enforced, the shipped banks pass, the self-quiz works."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from optlib.course import grill

GOOD = """\
chapter: 9
title: A test chapter
questions:
  - id: q-one
    question: What is one?
    answer: One is one.
    difficulty: easy
    tags: [numbers]
    trap: false
  - id: q-two
    question: Is two always more than one?
    answer: Among the naturals, yes.
    difficulty: hard
    tags: [numbers, order]
    trap: true
"""


def _write(tmp_path: Path, text: str, name: str = "09_test.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_good_bank_loads(tmp_path):
    bank = grill.load_bank(_write(tmp_path, GOOD))
    assert (bank.name, bank.chapter, bank.title) == ("09_test", 9, "A test chapter")
    assert [q.id for q in bank.questions] == ["q-one", "q-two"]
    assert bank.questions[1].trap and bank.questions[1].tags == ("numbers", "order")


@pytest.mark.parametrize("field", grill.FIELDS)
def test_missing_field_is_rejected(tmp_path, field):
    data = yaml.safe_load(GOOD)
    del data["questions"][1][field]
    with pytest.raises(grill.GrillError, match=f"missing field\\(s\\) {field}"):
        grill.load_bank(_write(tmp_path, yaml.safe_dump(data)))


@pytest.mark.parametrize("bad", ["answer: ''", "answer: '   '", "answer:", "question: ''"])
def test_empty_answer_or_question_is_rejected(tmp_path, bad):
    key = bad.split(":")[0]
    text = GOOD.replace(f"{key}: One is one." if key == "answer" else "question: What is one?", bad)
    with pytest.raises(grill.GrillError, match=f"empty {key}"):
        grill.load_bank(_write(tmp_path, text))


def test_duplicate_id_is_rejected(tmp_path):
    with pytest.raises(grill.GrillError, match="duplicate id 'q-one'"):
        grill.load_bank(_write(tmp_path, GOOD.replace("id: q-two", "id: q-one")))


def test_duplicate_id_across_banks_is_rejected(tmp_path):
    _write(tmp_path, GOOD)
    _write(tmp_path, GOOD.replace("chapter: 9", "chapter: 10"), "10_other.yml")
    with pytest.raises(grill.GrillError, match="duplicate id"):
        grill.load_banks(tmp_path)


@pytest.mark.parametrize(
    "old, new",
    [
        ("difficulty: easy", "difficulty: trivial"),
        ("trap: false", "trap: maybe"),
        ("tags: [numbers]", "tags: numbers"),
        ("id: q-one", "id: Q One"),
        ("chapter: 9", "chapter: nine"),
    ],
)
def test_malformed_values_are_rejected(tmp_path, old, new):
    with pytest.raises(grill.GrillError):
        grill.load_bank(_write(tmp_path, GOOD.replace(old, new, 1)))


def test_shipped_banks_are_valid():
    banks = grill.load_banks(grill.default_dir())
    chapter1 = next(b for b in banks if b.name == "01_gradient_descent")
    assert len(chapter1.questions) >= 10
    traps = [q for q in chapter1.questions if q.trap]
    assert len(traps) >= 3
    texts = " ".join(q.question.lower() for q in traps)
    assert "smaller learning rate" in texts and "optimal fixed step" in texts


def test_select_filters():
    qs = [q for b in grill.load_banks(grill.default_dir()) for q in b.questions]
    hard = grill.select(qs, difficulty="hard")
    assert hard and all(q.difficulty == "hard" for q in hard)
    tagged = grill.select(qs, chapter=1, tag="stability")
    assert tagged and all("stability" in q.tags and q.chapter == 1 for q in tagged)


def test_quiz_reveal_mark_score_and_filters(tmp_path):
    _write(tmp_path, GOOD)
    quiz = grill.Quiz(grill.load_banks(tmp_path), seed=0)
    assert quiz.current is not None and quiz.answer_box.value == ""
    assert quiz.right_button.disabled  # cannot mark before revealing
    quiz.right_button.click()
    assert quiz.asked == 0
    quiz.reveal_button.click()
    assert quiz.current.answer.split()[0] in quiz.answer_box.value
    quiz.right_button.click()
    quiz.reveal_button.click()
    quiz.wrong_button.click()
    assert (quiz.right, quiz.asked) == (1, 2)
    assert "score: 1/2 (50%)" in quiz.score.value
    assert quiz.current is None and "No more questions" in quiz.question_box.value
    quiz.difficulty.value = "hard"  # a filter starts a fresh deck
    assert quiz.current.id == "q-two" and (quiz.right, quiz.asked) == (0, 0)
    quiz.reveal_button.click()
    assert "Trap question" in quiz.answer_box.value


def test_answers_render_math_untouched():
    html = grill._to_html(r"Use $\eta < 2/L$, i.e. $(1-\eta\lambda_i)\,e_i$.")
    assert r"$\eta &lt; 2/L$" in html and r"\,e_i$" in html
