"""Sphinx extension: a chapter's exercises and interview grill, generated from their sources.

Directives (MyST; the generated MyST is parsed in place, so sphinx-exercise and sphinx-design
turn it into their own nodes):

``{chapter-exercises} 01_gradient_descent``
    every question of ``exercises/01_gradient_descent.ipynb`` (the otter master) as an
    ``exercise`` with its points, followed by a ``solution`` that opens as a dropdown, and a
    download link to the student notebook (``_build/assignments/<name>/student/``, made with
    ``otter assign`` when missing or older than the master).
``{grill} 01_gradient_descent``
    the bank ``exercises/grill/01_gradient_descent.yml``: each question a dropdown whose answer
    shows when clicked, traps marked with a badge.
``{grill-all}``
    every bank, by chapter (the appendix page).

Numbers in grill banks and exercise text are glue roles, ``{glue:text}`key:fmt```, naming a
value the bank's (or master's) own chapter glues. On the chapter's page they stay as written
(myst-nb fills them from the page's own glue); on any other page (the appendix) they are pointed
at the chapter, ``{glue:text}`/chapters/01_x.ipynb::key:fmt```, which myst-nb fills from the
executed chapter when it writes the page, and such a page is re-read whenever that chapter is.
After an HTML build every chapter's glued values are written to ``_static/glue_values.json``
for the self-quiz notebook (:func:`optlib.course.grill.load_glue_values`). With
``optlib_resolve_glue = False`` (a project without executed chapters) they render as
placeholders naming the chapter.

Hiding solutions: ``optlib_hide_solutions = True`` (default: the environment variable
``OPTLIB_HIDE_SOLUTIONS=1``, as ``make book-student`` sets) removes every sphinx-exercise
solution, including gated ones, with a transform that runs after sphinx-exercise merges gated
directives (its own ``hide_solutions`` crashes on gated solutions), and stops copying sources
to ``_sources/`` (they would hold the solutions; sphinx-book-theme's download button, which
links there, is switched off). Grill answers stay: they are study material.

Add ``optlib.course.sphinxext`` after ``sphinx_exercise`` and ``sphinx_design`` in the extensions.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

__all__ = ["setup"]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _fence(text: str, minimum: int = 3) -> str:
    """A backtick fence longer than any backtick run in ``text``."""
    runs = [len(m) for m in re.findall(r"`+", text)]
    return "`" * max(minimum, max(runs, default=0) + 1)


def _colons(text: str) -> str:
    """A colon fence (MyST ``colon_fence``) longer than any colon fence in ``text``: unlike a
    backtick fence, its first line may hold backticks (inline code, roles in a title)."""
    runs = [len(m) for m in re.findall(r"(?m)^\s*(:{3,})", text)]
    return ":" * max(4, max(runs, default=0) + 1)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


class _GeneratedMyST(SphinxDirective):
    """Base: build MyST text, parse it where the directive stands."""

    def _parse(self, text: str) -> list[nodes.Node]:
        container = nodes.container()
        lines = StringList(text.splitlines(), source=self.get_source_info()[0])
        self.state.nested_parse(lines, self.content_offset, container)
        return list(container.children)

    def _path(self, config_key: str, *parts: str) -> Path:
        return Path(self.env.srcdir) / getattr(self.config, config_key) / Path(*parts)


class ChapterExercises(_GeneratedMyST):
    """``{chapter-exercises} <name>``: see the module docstring."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        from .grading.master import MasterFormatError, read_master, strip_solution_markers

        name = self.arguments[0]
        master_path = self._path("optlib_exercises_dir", f"{name}.ipynb")
        if not master_path.is_file():
            raise self.error(f"no exercise master {master_path}")
        self.env.note_dependency(str(master_path))
        try:
            master = read_master(master_path)
        except MasterFormatError as err:
            raise self.error(str(err)) from None
        out = [self._download_line(name)]
        glued = _glue_rewriter(self, name)
        for q in master.questions:
            label = f"ex-{name}-{q.name}"
            prompt = "\n\n".join(
                glued(_strip_first_heading(_cell_source(c)))
                for c in q.prompt
                if _cell_source(c).strip()
            )
            points = f"{q.points:g} point{'s' if q.points != 1 else ''}"
            how = "graded by hand" if q.manual else f'check with `grader.check("{q.name}")`'
            body = f"{prompt}\n\n*{points}; {how}.*"
            outer = _colons(body)
            title = _one_line(re.sub(r"^\d+[.)]\s*", "", q.title))
            out.append(f"{outer}{{exercise}} {title}\n:label: {label}\n\n{body}\n{outer}")
            parts = []
            for cell in q.solution:
                src = _cell_source(cell)
                if cell.get("cell_type") == "code":
                    code = strip_solution_markers(src)
                    fence = _fence(code)
                    parts.append(f"{fence}python\n{code}\n{fence}")
                elif src.strip():
                    parts.append(glued(src.strip()))
            sol = "\n\n".join(parts) or "*No model solution.*"
            outer = _colons(sol)
            out.append(f"{outer}{{solution}} {label}\n:class: dropdown\n\n{sol}\n{outer}")
        return self._parse("\n\n".join(out))

    def _download_line(self, name: str) -> str:
        from .reader import reader_name

        student = Path(self.config.optlib_assignments_dir) / name / "student" / f"{name}.ipynb"
        if (Path(self.env.srcdir) / student).is_file():
            self.env.note_dependency(str(Path(self.env.srcdir) / student))
            file = reader_name(name, "exercises")
            depth = "../" * self.env.docname.count("/")
            link = f'<a href="{depth}notebooks/{file}" download="{file}">{file}</a>'
            colab = _colab_link(self.config, f"notebooks/{file}")
            colab = f' or <a href="{colab}">open it in Colab</a>' if colab else ""
            return (
                f"```{{raw}} html\n<p>Work on these exercises in the notebook {link}{colab}: it "
                "runs offline in Jupyter (put the course wheel linked from the preface beside it) "
                "or on Colab, and <code>grader.check(\"q1\")</code> checks an answer at once.</p>"
                "\n```"
            )
        logger.warning(
            f"optlib: no student notebook for {name} (run `make assignments`)",
            location=self.get_location(),
        )
        return "The exercise notebook is made by `make assignments`."


def _strip_first_heading(markdown: str) -> str:
    """Drop the first heading (it becomes the exercise's title); other headings become bold."""
    lines, seen = [], False
    for line in markdown.splitlines():
        if line.startswith("#"):
            if not seen:
                seen = True
                continue
            line = f"**{line.lstrip('#').strip()}**"
        lines.append(line)
    return "\n".join(lines).strip()


def _grill_items(
    bank: Any, start: int = 1, named: bool = True, glued: Callable[[str], str] = str
) -> list[str]:
    """MyST dropdowns for a bank's questions (``named``: with a ``grill-<id>`` target; ``glued``
    rewrites the glue roles of a text for the page, see :func:`_glue_rewriter`)."""
    items = []
    for i, q in enumerate(bank.questions, start):
        meta = f"*{q.difficulty}; {', '.join(q.tags)}*"
        body = ("{bdg-warning}`trap` " if q.trap else "") + f"{glued(q.answer)}\n\n{meta}"
        fence = _colons(body)
        trap = " *(trap)*" if q.trap else ""
        options = ":color: warning\n:icon: alert\n" if q.trap else ""
        options += f":name: grill-{q.id}\n" if named else ""
        title = f"**Q{i}.**{trap} {_one_line(glued(q.question))}"
        items.append(f"{fence}{{dropdown}} {title}\n{options}\n{body}\n{fence}")
    return items


_GRILL_INTRO = (
    "Click a question to show its model answer. Questions marked *(trap)*, in amber, invite a "
    "plausible wrong answer."
)


# --- numbers glued by the chapters, in grill banks and exercise text -----------------------------


def _chapter_of(name: str) -> int | None:
    """``01_gradient_descent`` -> 1."""
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else None


def _glue_rewriter(directive: SphinxDirective, name: str, chapter: int | None = None):
    """How the glue roles of bank or master ``name`` are written on the directive's page:

    * on the page of the chapter named ``name`` (``optlib_chapters_dir``/``name``), or on any
      notebook page when the project has no such chapter: as they are, so myst-nb fills them
      from the page's own glue;
    * on any other page (the appendix): pointed at the chapter (``/chapters/<name>.ipynb::key``),
      which myst-nb fills from the executed chapter when it writes the page; the page is noted
      as depending on the chapter, so it is re-read whenever the chapter is;
    * with ``optlib_resolve_glue = False``: a placeholder naming the chapter.
    """
    from .grill import GLUE_ROLE, GlueRef, fill_glue

    env, config = directive.env, directive.config
    chapter = chapter if chapter is not None else _chapter_of(name)
    if not config.optlib_resolve_glue:
        return lambda text: fill_glue(text, None, chapter)
    folder = config.optlib_chapters_dir
    doc = posixpath.join(folder, name) if folder else name
    here_is_notebook = env.doc2path(env.docname, False).endswith(".ipynb")
    if env.docname == doc or (doc not in env.found_docs and here_is_notebook):
        return str
    if doc not in env.found_docs:
        return lambda text: text  # no chapter to read from: myst-nb warns about each key
    target = "/" + env.doc2path(doc, False)

    def point(match: re.Match) -> str:
        ref = GlueRef.parse(match[1], match[2])
        if ref.doc:
            return match[0]
        dependents = env.__dict__.setdefault("optlib_glue_dependents", {})
        dependents.setdefault(env.docname, set()).add(doc)
        if ref.role == "glue:text" and ref.fmt is None:
            # myst-nb reads the last colon as the format: with a path, `doc::key` alone would
            # split into key "doc:" and format "key". "s" is what it uses for no format.
            ref = GlueRef(ref.role, ref.key, ref.doc, "s")
        return f"{{{ref.role}}}`{ref.content(target)}`"

    return lambda text: GLUE_ROLE.sub(point, text)


def _reread_glue_dependents(
    app: Sphinx, env: Any, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """Pages that paste values from a chapter being re-read are re-read (and rewritten) too."""
    touched = set(added) | set(changed) | set(removed)
    dependents = getattr(env, "optlib_glue_dependents", {})
    return sorted(d for d, docs in dependents.items() if docs & touched and d not in touched)


def _purge_glue_dependents(app: Sphinx, env: Any, docname: str) -> None:
    getattr(env, "optlib_glue_dependents", {}).pop(docname, None)


def _merge_glue_dependents(app: Sphinx, env: Any, docnames: set[str], other: Any) -> None:
    theirs = getattr(other, "optlib_glue_dependents", {})
    mine = env.__dict__.setdefault("optlib_glue_dependents", {})
    for doc in docnames:
        if doc in theirs:
            mine[doc] = set(theirs[doc])


def _write_glue_values(app: Sphinx, exception: Exception | None) -> None:
    """After an HTML build, write every page's glued values (their ``text/plain``) to
    ``_static/glue_values.json``: ``{"chapters": {"01_gradient_descent": {key: value}}}``."""
    from .grill import GLUE_VALUES

    mystnb = getattr(app.env, "mystnb_config", None)
    if exception is not None or app.builder.format != "html" or mystnb is None:
        return
    folder = Path(mystnb.output_folder)
    listed = getattr(app.env, "nb_metadata", {})
    chapters: dict[str, dict[str, str]] = {}
    for doc in sorted(app.env.found_docs):
        path = folder.joinpath(*doc.split("/")).with_name(f"{posixpath.basename(doc)}.glue.json")
        keys = listed.get(doc, {}).get("glue")
        if not keys or not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        values = {
            k: data[k]["data"]["text/plain"]
            for k in keys
            if "text/plain" in data.get(k, {}).get("data", {})
        }
        if values:
            chapters[posixpath.basename(doc)] = values
    out = Path(app.outdir) / "_static" / GLUE_VALUES
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"format": 1, "chapters": chapters}, indent=1, sort_keys=True))


class Grill(_GeneratedMyST):
    """``{grill} <bank>``: see the module docstring."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        from .grill import GrillError, load_bank

        path = self._path("optlib_grill_dir", f"{self.arguments[0]}.yml")
        if not path.is_file():
            raise self.error(f"no grill bank {path}")
        self.env.note_dependency(str(path))
        try:
            bank = load_bank(path)
        except GrillError as err:
            raise self.error(str(err)) from None
        glued = _glue_rewriter(self, bank.name, bank.chapter)
        return self._parse("\n\n".join([_GRILL_INTRO, *_grill_items(bank, glued=glued)]))


class GrillAll(_GeneratedMyST):
    """``{grill-all}``: every bank, grouped by chapter."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from .grill import GrillError, load_banks

        directory = self._path("optlib_grill_dir")
        for p in directory.glob("*.yml"):
            self.env.note_dependency(str(p))
        try:
            banks = load_banks(directory)
        except GrillError as err:
            raise self.error(str(err)) from None
        out = [_GRILL_INTRO]
        for bank in banks:
            out.append(f":::{{rubric}} Chapter {bank.chapter}: {bank.title}\n:::")
            glued = _glue_rewriter(self, bank.name, bank.chapter)
            out.extend(_grill_items(bank, named=False, glued=glued))
        return self._parse("\n\n".join(out))


class RemoveSolutions(SphinxTransform):
    """With ``optlib_hide_solutions``, drop every sphinx-exercise solution (after gated
    start/end pairs are merged, priority 10)."""

    default_priority = 11

    def apply(self, **kwargs: Any) -> None:
        if not self.config.optlib_hide_solutions:
            return
        try:
            from sphinx_exercise.nodes import solution_end_node, solution_node, solution_start_node
        except ImportError:  # pragma: no cover - no sphinx-exercise, no solutions
            return
        for kind in (solution_node, solution_start_node, solution_end_node):
            for node in list(self.document.findall(kind)):
                node.parent.remove(node)


def _make_assignments(app: Sphinx) -> None:
    """Make (or refresh) each master's student release, which the download links point to."""
    if not app.config.optlib_make_assignments:
        return
    src = Path(app.srcdir)
    out_root = src / app.config.optlib_assignments_dir
    for master in sorted((src / app.config.optlib_exercises_dir).glob("[0-9]*.ipynb")):
        student = out_root / master.stem / "student" / master.name
        if student.is_file() and student.stat().st_mtime >= master.stat().st_mtime:
            continue
        try:
            from .grading.assign import assign

            assign(master, out_root)
            logger.info(f"optlib: made the student release of {master.stem}")
        except Exception as err:  # otter missing or failing: the page says how to make it
            logger.warning(f"optlib: could not make the student release of {master.stem}: {err}")


def _config_inited(app: Sphinx, config: Any) -> None:
    if config.optlib_hide_solutions:
        config.html_copy_source = False
        config.html_show_sourcelink = False
        if config.html_theme == "sphinx_book_theme":  # its download button links to _sources/
            config.html_theme_options = {**config.html_theme_options, "use_download_button": False}


# --- the site: per-chapter numbers, alt text, assets, course information -------------------------

_CHAPTER_DOC = re.compile(r"(?:^|/)(\d+)_[^/]+$")
_EXERCISE_ID = re.compile(r"-q(\d+)$")


def chapter_number(docname: str) -> int | None:
    """The chapter a page belongs to, from its name (``chapters/05_adam`` -> 5), else ``None``."""
    m = _CHAPTER_DOC.search(docname)
    return int(m.group(1)) if m else None


def _number_per_chapter(app: Sphinx, env: Any) -> list[str]:
    """Number figures, tables, equations and exercises within each chapter: "Figure 5.3",
    "(5.4)", "Exercise 5.2". An exercise made from question ``q2`` of the chapter's master is
    number 2, whatever its position, so the page agrees with ``grader.check("q2")``. Pages that
    are not chapters number from 1. Runs after Sphinx's own (whole-book) numbering."""
    if not app.config.numfig:
        return []
    changed = []
    for docname, types in env.toc_fignumbers.items():
        chapter = chapter_number(docname)
        before = {k: dict(v) for k, v in types.items()}
        for figtype, ids in types.items():
            for k, (node_id, _) in enumerate(sorted(ids.items(), key=lambda kv: kv[1]), 1):
                n = k
                if figtype == "exercise" and (m := _EXERCISE_ID.search(node_id)):
                    n = int(m.group(1))
                ids[node_id] = (chapter, n) if chapter is not None else (n,)
        if types != before:
            changed.append(docname)
    return changed


def _section_title(node: nodes.Node) -> str:
    while node is not None:
        if isinstance(node, nodes.section) and node.children:
            return node[0].astext()
        node = node.parent
    return ""


_TEX_SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε",
    "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "rho": "ρ", "sigma": "σ",
    "omega": "ω", "nabla": "∇", "star": "⋆", "top": "ᵀ", "infty": "∞", "approx": "≈",
    "le": "≤", "ge": "≥", "leq": "≤", "geq": "≥", "times": "×", "cdot": "·", "sqrt": "√",
    "ell": "ℓ", "Delta": "Δ", "Lambda": "Λ", "odot": "⊙", "to": "→",
}  # fmt: skip


def _readable_tex(text: str) -> str:
    r"""A caption's LaTeX as a screen reader can say it: ``\eta^\star`` -> ``η⋆``."""
    text = re.sub(r"\\[td]?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", text)
    text = re.sub(r"\\([A-Za-z]+)", lambda m: _TEX_SYMBOLS.get(m.group(1), ""), text)
    text = re.sub(r"\\[,;:! ]", " ", text)
    text = text.replace("^", "").replace("{", "").replace("}", "").replace("\\", "")
    return re.sub(r"\s+", " ", text).strip()


_DOLLAR_MATH = re.compile(r"\$([^$\n]+?)\$")


def _math_in_citations(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Bibliography entries keep LaTeX from the .bib file (``$O(1/k^2)$``) as text, which MathJax
    never typesets there: make it math."""
    for citation in list(doctree.findall(nodes.citation)):
        for text in list(citation.findall(nodes.Text)):
            value = str(text)
            if "$" not in value or isinstance(text.parent, (nodes.literal, nodes.math)):
                continue
            parts, last = [], 0
            for m in _DOLLAR_MATH.finditer(value):
                parts.append(nodes.Text(value[last : m.start()]))
                parts.append(nodes.math(m.group(1), m.group(1)))
                last = m.end()
            if not parts:
                continue
            parts.append(nodes.Text(value[last:]))
            text.parent.replace(text, parts)


def _alt_text(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Every image gets a text alternative: its figure's caption, else a description naming the
    section it illustrates (never the file path, Sphinx's default)."""
    for image in doctree.findall(nodes.image):
        if image.get("alt") and not re.search(r"\.(png|jpe?g|svg|gif)$", image["alt"]):
            continue
        fig = image.parent
        while fig is not None and not isinstance(fig, nodes.figure):
            fig = fig.parent
        captions = list(fig.findall(nodes.caption)) if fig is not None else []
        if captions:
            alt = _readable_tex(_one_line(captions[0].astext()))
        else:
            title = _section_title(image)
            alt = f"Figure drawn by the code above, in the section “{title}”" if title else (
                "Figure drawn by the code above"
            )
        image["alt"] = alt


_THEBE = ("THEBE_JS_URL", "sphinx-thebe")


def _drop_unused_assets(app: Sphinx, pagename: str, templatename: str, context: dict,
                        doctree: Any) -> None:
    """Thebe is off (the book runs no remote kernels), yet sphinx-thebe's loader is added to every
    page, twice, declaring a constant twice (a console error) and naming a CDN: drop it."""
    def keep(asset: Any) -> bool:
        text = " ".join(str(x) for x in (asset, getattr(asset, "attributes", {}).get("body", "")))
        return not any(t in text for t in _THEBE)

    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [a for a in context[key] if keep(a)]
    # sphinx-book-theme has no `default_mode` option, so the page starts with an empty theme
    # mode, which pydata-sphinx-theme's script reports as an error: start light
    if not context.get("default_mode"):
        context["default_mode"] = "light"


def _site_assets(app: Sphinx) -> None:
    static = str(Path(__file__).with_name("static"))
    if static not in app.config.html_static_path:
        app.config.html_static_path.append(static)
    app.add_css_file("optlib.css")
    if not app.config.html_favicon:
        app.config.html_favicon = str(Path(static) / "favicon.svg")


def _colab_link(config: Any, site_path: str) -> str | None:
    """A Colab address for a notebook of the published site (``site_path``, e.g.
    ``notebooks/01_x.ipynb``), when the repository's URL and ``optlib_colab_branch`` (the branch
    the site is published to, e.g. ``gh-pages``) are set; else ``None`` (no dead button)."""
    url = config.optlib_repository_url.strip().rstrip("/")
    m = re.match(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?$", url)
    branch = config.optlib_colab_branch.strip()
    if not m or not branch:
        return None
    return f"https://colab.research.google.com/github/{m[1]}/{m[2]}/blob/{branch}/{site_path}"


def _repository_colab_link(config: Any, path: str) -> str | None:
    """Colab address of a notebook in the repository (``path`` from its root)."""
    url = config.optlib_repository_url.strip().rstrip("/")
    m = re.match(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?$", url)
    if not m:
        return None
    branch = config.html_theme_options.get("repository_branch") or "main"
    return f"https://colab.research.google.com/github/{m[1]}/{m[2]}/blob/{branch}/{path}"


def _header_buttons(app: Sphinx, pagename: str, templatename: str, context: dict,
                    doctree: Any) -> None:
    """The download button of a notebook page serves its reader notebook (outputs kept, numbers
    and references filled in: :mod:`optlib.course.reader`) instead of the bare source; with a
    repository URL, an "Open in Colab" button opens it (or the repository's notebook)."""
    from .reader import reader_name

    src = Path(app.srcdir) / f"{pagename}.ipynb"
    buttons = context.get("header_buttons")
    if not src.is_file() or not isinstance(buttons, list):
        return
    depth = "../" * pagename.count("/")
    reader = f"notebooks/{reader_name(pagename)}"
    for button in buttons:
        group = button.get("buttons", []) if isinstance(button, dict) else []
        for item in group:
            if item.get("label") in ("download-source-button", "download-notebook-button"):
                item["url"] = depth + reader
                item["tooltip"] = "Download the notebook, with its outputs"
        if len(group) > 1 and group[0].get("url") == group[1].get("url"):
            del group[1]  # the notebook and its "source": one and the same file now
    colab = _colab_link(app.config, reader)
    colab = colab or _repository_colab_link(app.config, f"{pagename}.ipynb")
    if colab:
        buttons.insert(0, {
            "type": "link", "url": colab, "tooltip": "Open this notebook in Colab",
            "icon": "fa-solid fa-rocket", "label": "colab-button", "text": "Colab",
        })  # fmt: skip


def _repository_from_theme(app: Sphinx, config: Any) -> None:
    if not config.optlib_repository_url:
        url = (config.html_theme_options or {}).get("repository_url", "") or ""
        if "executablebooks/jupyter-book" not in url:  # Jupyter Book's placeholder default
            config.optlib_repository_url = url


class ChapterMap(_GeneratedMyST):
    """``{chapter-map}``: a table of the course, one content line per chapter,
    ``number | file | title | what it covers``. A chapter whose page is in the book links to it;
    the others are listed as in preparation (no dead links)."""

    has_content = True

    def run(self) -> list[nodes.Node]:
        here = Path(self.env.docname).parent
        rows = ["| | chapter | what it covers |", "|---|---|---|"]
        for line in self.content:
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split("|", 3)]
            if len(parts) != 4:
                raise self.error(f"chapter-map: expected 'number | file | title | covers': {line}")
            number, file, title, covers = parts
            doc = (here / file).as_posix()
            self.env.note_dependency(str(Path(self.env.srcdir) / f"{doc}.ipynb"))
            if doc in self.env.found_docs:
                name = f"{{doc}}`{title} <{file}>`"
            else:
                name = f"{title} *(in preparation)*"
            rows.append(f"| {number} | {name} | {covers} |")
        return self._parse("\n".join(rows))


class CourseInfo(_GeneratedMyST):
    """``{course-info}``: the repository (when ``optlib_repository_url`` is set), the version,
    the build date and a citation block (BibTeX)."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        import datetime

        from .notebook import course_version, wheel_name

        url = self.config.optlib_repository_url.strip()
        version = course_version()
        date = datetime.date.today().isoformat()
        if env_date := os.environ.get("SOURCE_DATE_EPOCH"):
            date = datetime.datetime.fromtimestamp(int(env_date), datetime.UTC).date().isoformat()
        title = self.config.project
        author = self.config.author or "The optlib authors"
        lines = [":::{div} optlib-course-info", ""]
        if url:
            lines += ["Repository", f": <{url}>", ""]
        lines += ["Version", f": {version}, built on {date}", ""]
        lines += [
            "Offline copy",
            f": the course package as a wheel, <a href=\"../notebooks/{wheel_name(version)}\" "
            f"download>{wheel_name(version)}</a>: put it beside a notebook downloaded from any "
            "page and run the notebook's first cell.",
            "",
        ]
        key = "optlib_course"
        bib = [f"@misc{{{key},", f"  title  = {{{title}}},", f"  author = {{{author}}},",
               f"  year   = {{{date[:4]}}},", f"  note   = {{Version {version}}},"]
        if url:
            bib.append(f"  url    = {{{url}}},")
        bib.append("}")
        lines += ["How to cite", ": Cite the course as", "", "```bibtex", *bib, "```", "", ":::"]
        return self._parse("\n".join(lines))


def _write_reader_notebooks(app: Sphinx, exception: Exception | None) -> None:
    from .reader import write_reader_notebooks

    write_reader_notebooks(app, exception)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("optlib_hide_solutions", _env_flag("OPTLIB_HIDE_SOLUTIONS"), "env")
    app.add_config_value("optlib_exercises_dir", "exercises", "env")
    app.add_config_value("optlib_grill_dir", "exercises/grill", "env")
    app.add_config_value("optlib_assignments_dir", "_build/assignments", "env")
    app.add_config_value("optlib_make_assignments", True, "env")
    app.add_directive("chapter-exercises", ChapterExercises)
    app.add_directive("grill", Grill)
    app.add_directive("grill-all", GrillAll)
    app.add_transform(RemoveSolutions)
    app.connect("config-inited", _config_inited)
    app.connect("builder-inited", _make_assignments)
    app.add_config_value("optlib_chapters_dir", "chapters", "env")
    app.add_config_value("optlib_resolve_glue", True, "env")
    app.connect("env-get-outdated", _reread_glue_dependents)
    app.connect("env-purge-doc", _purge_glue_dependents)
    app.connect("env-merge-info", _merge_glue_dependents)
    app.connect("build-finished", _write_glue_values)
    app.add_config_value("optlib_repository_url", "", "env")
    app.add_config_value("optlib_colab_branch", "", "env")
    app.connect("config-inited", _repository_from_theme)
    app.connect("html-page-context", _header_buttons, priority=901)
    app.connect("build-finished", _write_reader_notebooks)
    app.add_directive("course-info", CourseInfo)
    app.add_directive("chapter-map", ChapterMap)
    app.connect("builder-inited", _site_assets)
    app.connect("env-get-updated", _number_per_chapter, priority=900)
    app.connect("doctree-resolved", _alt_text)
    app.connect("doctree-resolved", _math_in_citations)
    app.connect("html-page-context", _drop_unused_assets, priority=900)
    app.set_html_assets_policy("always")  # MathJax on every page (the bibliography has math too)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
