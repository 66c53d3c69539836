"""Numbers with one source: a number in a grill bank (question or answer) or in an exercise master's
text is either an exact constant or glued from its chapter (COURSE.md, "Claims that hold on every
machine"; README, "How claims are kept true").

A number the chapter computes is written ``{glue:text}`key:fmt``` and filled in from the executed
chapter at build time (:mod:`optlib.course.sphinxext`), so it can never disagree with what the
chapter computes. These tests fail on

* a measured-looking number typed into a bank or an exercise text (:func:`measured_numbers`:
  anything that is not an exact constant of the short list below),
* a glue key that the bank's or master's own chapter never glues (read from the chapter
  notebook's ``glue("key", ...)`` calls; f-string keys match as patterns),
* a chapter that glues with ``myst_nb.glue`` instead of ``optlib.course.book.glue`` (which refuses
  ``inf`` and ``nan``).

Exact constants (always allowed):

1. integers 0 to 12: counts in prose and small constants in formulas ("2/L", "k = 3");
2. powers of ten (orders of magnitude, defaults such as 1e-8 or 0.01) and powers of two from
   2^-10 to 2^20 (halvings, batch sizes and widths such as 32 or 1024);
3. 1 - 10^-k: the usual betas 0.9, 0.99, 0.999, 0.9999;
4. years 1950 to 2029 (papers);
5. the published constants in :data:`LITERATURE`, each with its source;
6. numbers with at most two significant digits (20, 15, 3000, 0.05, 1.5, 20 000) where a text
   *sets* them: inside math or code, and in exercise statements (the settings a check uses),
   unless an approximation word or sign ("about", "~", "≈", ``\\approx``) stands before them,
   which makes them a measurement.

Everything else is measured-looking: glue it, or say it in words.

The banks and exercise texts written before this test have offenders, listed per item in
:data:`KNOWN_OFFENDERS`. The list only shrinks: a new offender fails, and so does an entry that
is no longer an offender (remove it). The chapter engineers are rewriting these texts.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import yaml

from optlib.course.grill import GlueRef, glue_refs

ROOT = Path(__file__).resolve().parents[1]
BANKS = sorted((ROOT / "exercises" / "grill").glob("*.yml"))
MASTERS = sorted((ROOT / "exercises").glob("[0-9]*.ipynb"))

#: Published constants quoted as settings, with their source.
LITERATURE = {
    0.95: "beta2 of LLM recipes (GPT-3, LLaMA); SOAP's betas; Muon's momentum",
    0.98: "beta2 of the Transformer (Vaswani et al., 2017)",
    0.965: "beta1 of Sophia (Liu et al., 2023)",
    0.04: "rho of Sophia (Liu et al., 2023)",
    3e-4: "the folklore Adam learning rate",
    6e-4: "GPT-3 small's peak learning rate (Brown et al., 2020)",
    0.02: "Muon's default learning rate (Jordan et al., 2024)",
    0.0025: "AdamWScheduleFree's default learning rate (Defazio et al., 2024)",
    3.4445: "Muon's Newton-Schulz coefficient a",
    4.775: "Muon's Newton-Schulz coefficient b (-4.7750)",
    2.0315: "Muon's Newton-Schulz coefficient c",
    375: "GPT-3's warm-up, in millions of tokens (Brown et al., 2020)",
}

# --- what counts as a number, and which are exact ---------------------------------------------

_NOT_TEXT = [
    re.compile(r"\{glue(?::[a-z]*)?\}`[^`]*`"),  # glued values: the point of this file
    re.compile(r"\{[\w:-]+\}`[^`]*`"),  # other roles: citations, references, downloads
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"<?https?://[^\s>)]*>?"),  # URLs
    re.compile(r"^\([\w-]+\)=\s*$", re.M),  # MyST labels
    re.compile(r"\\(?:label|ref|eqref|tag)\{[^}]*\}"),  # LaTeX labels
]
_SETTING = re.compile(  # math and code: where a text sets values
    r"\$\$.*?\$\$|\$[^$\n]+\$|```.*?```|`[^`\n]+`", re.S
)
_POWER = re.compile(r"(?<![\w.])(\d+)\s*\^\s*\{?\s*[-−]?\d+\s*\}?")
_EXPONENT = re.compile(r"[_^]\s*\{?\s*[-−]?[\d.]+\s*\}?")
_NUMBER = re.compile(
    r"(?<![\w.])"
    r"(\d{1,3}(?:(?:,|\\,|[ \u2009\u202f])\d{3})+(?![\d.])|\d*\.\d+|\d+)"  # 69 078, 0.5, 12
    r"(?:[eE]([-+−]?\d+))?(?![\w])(%?)"
)
_APPROX = re.compile(
    r"(?:≈|\\approx|\\sim|~|\babout|\baround|\broughly|\bnearly|\balmost)\s*\$?\s*[-−]?$",
    re.I,
)


def _value(digits: str, exponent: str | None) -> float:
    plain = re.sub(r"[,\s\u2009\u202f]|\\,", "", digits)
    return float(plain + (f"e{exponent.replace('−', '-')}" if exponent else ""))


def _is_integer_power(v: float, base: float, lo: int, hi: int) -> bool:
    k = math.log(v, base)
    return abs(k - round(k)) < 1e-9 and lo <= round(k) <= hi


def exact_constant(v: float) -> bool:
    """Rules 1-5 of the module docstring."""
    if v == int(v) and (0 <= v <= 12 or 1950 <= v <= 2029):
        return True
    if v > 0 and (_is_integer_power(v, 10, -30, 30) or _is_integer_power(v, 2, -10, 20)):
        return True
    if 0 < v < 1 and _is_integer_power(1 - v, 10, -8, -1):
        return True
    return any(math.isclose(v, c, rel_tol=1e-12) for c in LITERATURE)


def round_number(v: float) -> bool:
    """At most two significant digits: 20, 15, 3000, 0.05, 1.5, 20 000."""
    if v <= 0:
        return False
    mantissa = 10 * v / 10 ** math.floor(math.log10(v))  # 10 <= mantissa < 100
    return abs(mantissa - round(mantissa)) < 1e-9


def measured_numbers(text: str, statement: bool = False) -> list[str]:
    """The measured-looking numbers of ``text`` (Markdown with math), as written.

    ``statement``: an exercise statement, where round numbers are settings (rule 6)."""
    for pattern in _NOT_TEXT:
        text = pattern.sub(" ", text)
    # 10^{-8}, 2^{10}: exact powers; the exponents and indices of symbols (x^2, x_{10}) are
    # parts of formulas
    text = _POWER.sub(lambda m: " " if int(m[1]) <= 12 or m[1] == "10" else m[1], text)
    text = _EXPONENT.sub(" ", text)
    settings = [m.span() for m in _SETTING.finditer(text)]

    def in_setting(i: int) -> bool:
        return any(a <= i < b for a, b in settings)

    found = []
    for m in _NUMBER.finditer(text):
        v = _value(m[1], m[2])
        if exact_constant(v):
            continue
        approx = _APPROX.search(text[max(0, m.start() - 12) : m.start()])
        if round_number(v) and not approx and (statement or in_setting(m.start())):
            continue
        found.append(m[0])
    return found


# --- the texts ---------------------------------------------------------------------------------


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def bank_texts() -> list[tuple[str, str, str, bool]]:
    """(file, item, text, is_statement) for every question and answer of every bank."""
    out = []
    for path in BANKS:
        for q in yaml.safe_load(path.read_text(encoding="utf-8"))["questions"]:
            out.append((_rel(path), q["id"], f"{q['question']}\n\n{q['answer']}", False))
    return out


def master_texts() -> list[tuple[str, str, str, bool]]:
    """(file, item, text, is_statement) for an exercise master: its introduction, each question's
    statement (``q1``) and the markdown of its model solution (``q1 solution``)."""
    from optlib.course.grading.master import read_master

    def md(cells: list[dict]) -> str:
        return "\n\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells
            if c.get("cell_type") == "markdown"
        )

    out = []
    for path in MASTERS:
        master = read_master(path)
        out.append((_rel(path), "intro", md(master.intro), True))
        for q in master.questions:
            out.append((_rel(path), q.name, md(q.prompt), True))
            out.append((_rel(path), f"{q.name} solution", md(q.solution), False))
    return out


TEXTS = bank_texts() + master_texts()


def chapter_of(file: str) -> Path:
    """The chapter notebook a bank or master belongs to (same name)."""
    return ROOT / "chapters" / f"{Path(file).stem}.ipynb"


def glued_keys(chapter: Path) -> tuple[set[str], list[re.Pattern]]:
    """The keys a chapter notebook glues: literal ``glue("key", ...)`` calls, and f-string keys
    (``glue(f"loss_{name}", ...)``) as patterns."""
    cells = json.loads(chapter.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    keys, patterns = set(), []
    for f, key in re.findall(r"\bglue\(\s*(f?)[\"']([^\"']+)[\"']", code):
        if f:
            parts = re.split(r"\{[^}]*\}", key)
            patterns.append(re.compile(".+".join(re.escape(p) for p in parts) + r"\Z"))
        else:
            keys.add(key)
    return keys, patterns


# --- known offenders (a shrinking list) ----------------------------------------------------------

#: Measured-looking numbers in the texts as they stood when this test was written (per file and
#: item; an item is a bank question's id, or an exercise master's ``intro``, ``qN`` statement or
#: ``qN solution``). The chapter engineers glue them or state them in words; remove each entry
#: as it is fixed. Nothing may be added here: a number the chapter computes is glued.
KNOWN_OFFENDERS: dict[str, dict[str, tuple[str, ...]]] = {
}

#: Chapters that glue with myst_nb.glue directly (no refusal of inf/nan). Shrinking likewise.
KNOWN_DIRECT_MYST_NB_GLUE: set[str] = set()


# --- the tests ---------------------------------------------------------------------------------


def _offenders() -> dict[str, dict[str, tuple[str, ...]]]:
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for file, item, text, statement in TEXTS:
        found = measured_numbers(text, statement)
        if found:
            out.setdefault(file, {})[item] = tuple(sorted(set(found)))
    return out


def test_no_new_measured_numbers_in_banks_or_exercise_texts():
    new = {}
    for file, items in _offenders().items():
        for item, found in items.items():
            extra = sorted(set(found) - set(KNOWN_OFFENDERS.get(file, {}).get(item, ())))
            if extra:
                new[f"{file} [{item}]"] = extra
    assert not new, (
        "measured-looking numbers typed into a grill bank or exercise text: glue them from the "
        "chapter ({glue:text}`key:fmt`) or state them in words (tests/test_glued_numbers.py "
        f"lists the exact constants allowed): {json.dumps(new, indent=1, ensure_ascii=False)}"
    )


def test_known_offenders_only_shrink():
    now = _offenders()
    fixed = {
        f"{file} [{item}]": sorted(set(tokens) - set(now.get(file, {}).get(item, ())))
        for file, items in KNOWN_OFFENDERS.items()
        for item, tokens in items.items()
        if set(tokens) - set(now.get(file, {}).get(item, ()))
    }
    assert not fixed, (
        "fixed, well done: remove these from KNOWN_OFFENDERS in tests/test_glued_numbers.py: "
        f"{json.dumps(fixed, indent=1, ensure_ascii=False)}"
    )


def glue_key_problems(texts=TEXTS) -> list[str]:
    """Glue roles in ``texts`` that name another document or a key their chapter never glues."""
    problems = []
    for file, item, text, _ in texts:
        refs = glue_refs(text)
        if not refs:
            continue
        chapter = chapter_of(file)
        if not chapter.is_file():
            problems.append(f"{file} [{item}]: quotes glued values, but {chapter} does not exist")
            continue
        keys, patterns = glued_keys(chapter)
        for ref in refs:
            if ref.doc is not None:
                problems.append(
                    f"{file} [{item}]: {ref.content()!r} names another document; a bank or "
                    "exercise quotes only what its own chapter glues"
                )
            elif ref.key not in keys and not any(p.match(ref.key) for p in patterns):
                problems.append(
                    f"{file} [{item}]: glue key {ref.key!r} is not glued by {_rel(chapter)} "
                    f'(no glue("{ref.key}", ...) call)'
                )
    return problems


def test_every_glue_key_is_glued_by_the_chapter():
    problems = glue_key_problems()
    assert not problems, "\n".join(problems)


def test_glue_key_problems_are_found(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "chapters").mkdir()
    source = 'glue("rate", r)\nglue(f"loss_{n}", v)'
    (tmp_path / "chapters" / "01_x.ipynb").write_text(
        json.dumps({"cells": [{"cell_type": "code", "source": source}]})
    )
    texts = [
        ("exercises/grill/01_x.yml", "ok", "{glue:text}`rate:.2f`, {glue:text}`loss_adam`", False),
        ("exercises/grill/01_x.yml", "typo", "{glue:text}`rte:.2f`", False),
        ("exercises/grill/01_x.yml", "other", "{glue:text}`/chapters/02_y.ipynb::k:.1f`", False),
        ("exercises/grill/02_y.yml", "nochapter", "{glue:text}`k`", False),
    ]
    problems = glue_key_problems(texts)
    assert len(problems) == 3
    assert "'rte' is not glued" in problems[0]
    assert "names another document" in problems[1]
    assert "does not exist" in problems[2]


CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_chapters_glue_through_optlib(chapter):
    cells = json.loads(chapter.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    direct = bool(re.search(r"from myst_nb import glue|myst_nb\.glue\(", code))
    if chapter.name in KNOWN_DIRECT_MYST_NB_GLUE:
        assert direct, f"fixed: remove {chapter.name} from KNOWN_DIRECT_MYST_NB_GLUE"
        return
    assert not direct, (
        f"{chapter.name} glues with myst_nb directly: use `from optlib.course.book import glue`, "
        "which refuses inf and nan"
    )


# --- the scanner itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, statement, expected",
    [
        ("It took 412 steps against 415.", False, ["412", "415"]),  # measurements
        ("GD needs about 60 times the examples.", False, ["60"]),
        ("a loss of 0.147 after 3 epochs", False, ["0.147"]),
        ("the rate drops to 3.2%", False, ["3.2%"]),
        ("69 078 iterations, or 69,078, or 6\u2009900", False, ["69 078", "69,078", "6\u2009900"]),
        ("at $\\eta\\lambda_{\\max} \\approx 2.1$", False, ["2.1"]),
        ("at $\\kappa = 3000$ and $\\eta \\approx 20$", False, ["20"]),  # set vs measured
        ("at $\\eta = 1.5/L$ the loss was $0.147$", False, ["0.147"]),
        ("Run 20 steps with `lr=0.05`.", True, []),  # a statement's settings
        ("Run 20 steps.", False, ["20"]),  # ...but a measurement in an answer
        ("about 20 steps", True, ["20"]),
        ("{glue:text}`steps:.0f` steps, {glue:text}`rate:.3f`", False, []),  # glued
        ("betas (0.9, 0.999), eps 1e-8, lr 3e-4, weight decay 0.1, $10^{-6}$", False, []),
        ("Kingma & Ba (2015) and {cite:t}`reddi2018` in 2018", False, []),
        ("batches of 32, 256 and 1024; 2 to 12 steps; $2/L$; $1/\\sqrt{2}$", False, []),
        ("float64, beta2, x_1, AVX-512, q3 and $\\lambda_{10}$", False, []),
        ("[the paper](https://arxiv.org/abs/1412.6980)", False, []),
        ("Newton-Schulz: (3.4445, -4.7750, 2.0315); Sophia's 0.965 and 0.04", False, []),
        ("$\\begin{pmatrix} 802 & -400 \\\\ -400 & 200 \\end{pmatrix}$", False, ["802"]),
    ],
)
def test_measured_numbers(text, statement, expected):
    assert measured_numbers(text, statement) == expected


def test_glued_keys_reads_literal_and_f_string_keys(tmp_path):
    nb = tmp_path / "01_x.ipynb"
    source = 'glue("rate", r)\nfor n in names:\n    glue(f"loss_{n}", v)\nglue( \'steps\', 3)'
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "source": source}]}))
    keys, patterns = glued_keys(nb)
    assert keys == {"rate", "steps"}
    assert [bool(p.match(k)) for p in patterns for k in ("loss_adam", "loss_", "los_x")] == [
        True,
        False,
        False,
    ]


def test_glue_ref_round_trip():
    assert GlueRef.parse("glue:text", "rate:.2f").content() == "rate:.2f"
