"""Interview-grill banks: the format is enforced, the shipped banks pass, the self-quiz works."""

from __future__ import annotations

import json
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
    assert "2 left" in quiz.score.value  # the question on screen counts
    quiz.reveal_button.click()
    assert quiz.current.answer.split()[0] in quiz.answer_box.value
    quiz.right_button.click()
    assert "1 left" in quiz.score.value  # the last question is on screen: not "0 left"
    quiz.reveal_button.click()
    quiz.wrong_button.click()
    assert (quiz.right, quiz.asked) == (1, 2)
    assert "score: 1/2 (50%), 0 left" in quiz.score.value
    assert quiz.current is None and "No more questions" in quiz.question_box.value
    quiz.difficulty.value = "hard"  # a filter starts a fresh deck
    assert quiz.current.id == "q-two" and (quiz.right, quiz.asked) == (0, 0)
    quiz.reveal_button.click()
    assert "Trap question" in quiz.answer_box.value


def test_answers_render_math_untouched():
    html = grill._to_html(r"Use $\eta < 2/L$, i.e. $(1-\eta\lambda_i)\,e_i$.")
    assert r"$\eta &lt; 2/L$" in html and r"\,e_i$" in html


# --- glued numbers: parsing, filling, the values file, the quiz ----------------------------------

GLUED = GOOD.replace(
    "answer: One is one.",
    "answer: 'It took {glue:text}`steps:.0f` steps, a rate of {glue:text}`rate:.2f`.'",
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{glue:text}`rate:.3f`", grill.GlueRef("glue:text", "rate", None, ".3f")),
        ("{glue:text}`rate`", grill.GlueRef("glue:text", "rate", None, None)),
        ("{glue}`fig_rate`", grill.GlueRef("glue", "fig_rate")),
        ("{glue:md}`sentence`", grill.GlueRef("glue:md", "sentence")),
        (
            "{glue:text}`/chapters/02_x.ipynb::catch_up:.1f`",
            grill.GlueRef("glue:text", "catch_up", "/chapters/02_x.ipynb", ".1f"),
        ),
        ("{glue}`other.ipynb::k`", grill.GlueRef("glue", "k", "other.ipynb")),
    ],
)
def test_glue_refs_parse_like_myst_nb(text, expected):
    assert grill.glue_refs(f"see {text}, twice: {text}.") == [expected, expected]
    assert expected.content() == text.split("`")[1]


def test_glue_ref_points_at_another_document():
    ref = grill.glue_refs("{glue:text}`rate:.2f`")[0]
    assert ref.content("/chapters/01_a.ipynb") == "/chapters/01_a.ipynb::rate:.2f"


@pytest.mark.parametrize(
    "plain, fmt",
    [("0.123456", ".3f"), ("12", ".0f"), ("1234567.0", ",.0f"), ("0.5", ".1%"), ("7", "d"),
     ("3.0", None), ("'more than 1000 epochs'", "s"), ("2.5e-07", ".1e"), ("0.25", "")],
)  # fmt: skip
def test_format_glued_matches_myst_nb(plain, fmt):
    variables = pytest.importorskip("myst_nb.core.variables")
    assert grill.format_glued(plain, fmt) == variables.format_plain_text(plain, fmt or "")


def test_fill_glue_uses_values_or_says_which_chapter_computes_them():
    text = "It took {glue:text}`steps:.0f` steps at rate {glue:text}`rate:.2f`."
    filled = grill.fill_glue(text, {"steps": "42.0", "rate": "0.12345"})
    assert filled == "It took 42 steps at rate 0.12."
    partial = grill.fill_glue(text, {"steps": "42.0"}, chapter=3)
    assert partial == "It took 42 steps at rate [a value computed in chapter 3]."
    assert "[a value computed in the chapter]" in grill.fill_glue(text, None)
    assert grill.fill_glue("no roles, 0.9", {}) == "no roles, 0.9"


def _values_file(path: Path, chapters: dict) -> Path:
    path.write_text(json.dumps({"chapters": chapters}))
    return path


def test_load_glue_values_search_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPTLIB_GLUE_VALUES", raising=False)
    monkeypatch.setattr(grill, "_CHECKOUT", tmp_path / "checkout")
    assert grill.load_glue_values() == {}  # no book built anywhere: placeholders
    built = tmp_path / "checkout" / "_build" / "html" / "_static"
    built.mkdir(parents=True)
    _values_file(built / grill.GLUE_VALUES, {"09_test": {"steps": "5"}})
    assert grill.load_glue_values() == {"09_test": {"steps": "5"}}  # the checkout's book
    _values_file(tmp_path / grill.GLUE_VALUES, {"09_test": {"steps": "42"}})
    assert grill.load_glue_values()["09_test"]["steps"] == "42"  # next to the notebook
    env = _values_file(tmp_path / "elsewhere.json", {"09_test": {"steps": "7"}})
    monkeypatch.setenv("OPTLIB_GLUE_VALUES", str(env))
    assert grill.load_glue_values()["09_test"]["steps"] == "7"  # the variable wins
    (tmp_path / "bad.json").write_text("{not json")
    assert grill.load_glue_values(tmp_path / "bad.json") == {}


def test_quiz_fills_glued_numbers_and_notes_missing_ones(tmp_path):
    _write(tmp_path, GLUED)
    banks = grill.load_banks(tmp_path)
    filled = grill.Quiz(banks, seed=0, values={"09_test": {"steps": "42", "rate": "0.3333"}})
    assert filled.note.value == ""
    missing = grill.Quiz(banks, seed=0, values={})
    assert "chapters 9 compute" in missing.note.value and "make book" in missing.note.value
    for quiz, shown in [
        (filled, "It took 42 steps, a rate of 0.33."),
        (missing, "It took [a value computed in chapter 9] steps"),
    ]:
        while quiz.current.id != "q-one":
            quiz.reveal_button.click()
            quiz.right_button.click()
        quiz.reveal_button.click()
        assert shown in quiz.answer_box.value and "glue" not in quiz.answer_box.value


def test_quiz_function_reads_a_values_file(tmp_path):
    _write(tmp_path, GLUED)
    values = _values_file(tmp_path / "v.json", {"09_test": {"steps": "42", "rate": "0.5"}})
    widget = grill.quiz(tmp_path, seed=0, values=values)
    assert widget.children[0].value == ""  # the note stays empty: every value was found


def test_default_dir_prefers_a_local_folder_then_the_checkout_then_package_data(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert grill.default_dir() == grill._CHECKOUT / "exercises" / "grill"  # editable install
    (tmp_path / "grill").mkdir()
    _write(tmp_path / "grill", GOOD)
    assert grill.default_dir() == Path("grill")  # a notebook next to its banks
    # optlib installed from a wheel, the notebook downloaded alone into an empty folder
    monkeypatch.chdir(tmp_path / "grill")
    site = tmp_path / "site-packages"
    monkeypatch.setattr(grill, "_CHECKOUT", site)
    monkeypatch.setattr(grill, "PACKAGE_BANKS", site / "optlib" / "course" / "grill_banks")
    assert grill.default_dir() == site / "exercises" / "grill"  # nowhere: load_banks says so
    with pytest.raises(grill.GrillError, match="no question banks"):
        grill.load_banks()
    grill.PACKAGE_BANKS.mkdir(parents=True)
    _write(grill.PACKAGE_BANKS, GOOD)
    assert grill.default_dir() == grill.PACKAGE_BANKS  # the banks installed as package data
    assert [b.name for b in grill.load_banks()] == ["09_test"]
