r"""Reader notebooks: the book's notebooks as they read on the site, for Jupyter, Colab and VS Code.

The chapters are written in MyST: ``{glue:text}`` roles for computed numbers, ``{eq}``/``{numref}``
cross-references, ``{cite:p}`` citations, ``literalinclude`` blocks showing optlib's code, and the
``chapter-exercises`` and ``grill`` directives. Only the book build understands them; opened in
JupyterLab or Colab, a chapter shows placeholders. At the end of the build (``build-finished``,
when every number and cross-reference is known) :func:`write_reader_notebooks` writes, into the
site's ``notebooks/`` folder:

* ``<chapter>.ipynb``: the executed chapter with its outputs, every role and directive replaced by
  plain Markdown (numbers filled in, "Figure 5.3", "(5.4)", "(Kingma and Ba, 2015)", the code
  itself, the exercise statements, the grill as ``<details>`` blocks), and its first cell installing
  the course package from the wheel beside it or from the repository;
* ``<chapter>_exercises.ipynb``: the student exercise notebook (no solutions), named apart from the
  chapter so that both can sit in one downloads folder;
* the self-quiz notebook.

These are what the site's download buttons and Colab links serve.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Resolver", "resolve_markdown", "write_reader_notebooks", "reader_name"]

_ROLE = re.compile(r"\{(?P<role>[a-z]+(?::[a-z]+)?)\}`(?P<body>[^`]*)`")
_TARGET = re.compile(r"^\((?P<label>[^)\s]+)\)=\s*$", re.M)
_FENCE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[a-zA-Z0-9_:-]+)\}[ \t]*(?P<arg>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.M | re.S,
)
_DMATH_LABEL = re.compile(r"\$\$(?P<tex>.+?)\$\$[ \t]*\((?P<label>[^)\s]+)\)", re.S)


def reader_name(docname: str, kind: str = "chapter") -> str:
    """File name of a reader notebook: ``01_x.ipynb`` or ``01_x_exercises.ipynb``."""
    stem = Path(docname).name
    return f"{stem}_exercises.ipynb" if kind == "exercises" else f"{stem}.ipynb"


@dataclass
class Resolver:
    """What a chapter's MyST needs to read as plain Markdown: glued values and how to name a
    label, a citation, a code include, a directive."""

    glue: Mapping[str, str] = field(default_factory=dict)  # name -> text/plain
    label: Callable[[str, str], str | None] = lambda role, target: None
    cite: Callable[[str, list[str]], str] = lambda role, keys: ", ".join(keys)
    include: Callable[[str, dict[str, str]], str | None] = lambda path, options: None
    directive: Callable[[str, str], str | None] = lambda name, arg: None

    def glued(self, body: str) -> str:
        from .grill import format_glued

        key, _, fmt = body.partition(":")
        if key not in self.glue:
            return f"`{key}`"
        return format_glued(self.glue[key], fmt or None)


def _split_target(body: str) -> tuple[str | None, str]:
    m = re.fullmatch(r"(?s)(.*?)\s*<([^<>]+)>", body)
    return (m.group(1), m.group(2)) if m else (None, body)


def _role(res: Resolver, m: re.Match) -> str:
    role, body = m.group("role"), m.group("body")
    if role in ("glue:text", "glue", "glue:md"):
        return res.glued(body)
    if role == "math":
        return f"${body}$"
    if role in ("cite:p", "cite:t", "cite", "cite:ps", "cite:ts"):
        return res.cite(role, [k.strip() for k in body.split(",")])
    if role in ("eq", "numref", "ref", "doc", "term", "download"):
        text, target = _split_target(body)
        named = res.label(role, target)
        if role == "numref" and text and named:
            number = re.sub(r"^\D+", "", named)
            return text.replace("%s", number).replace("{number}", number)
        return text or named or target
    if role in ("abbr", "sub", "sup", "kbd", "guilabel", "file", "samp", "code"):
        return f"`{body}`" if role in ("code", "file", "samp", "kbd") else body
    if role.startswith("py:") or role in ("func", "class", "meth", "mod", "attr", "obj", "data"):
        return f"`{_split_target(body)[1].lstrip('~')}`"
    return body


def _options(body: str) -> tuple[dict[str, str], str]:
    opts, rest = {}, []
    lines = body.splitlines()
    i = 0
    while i < len(lines) and (m := re.match(r"^:([\w-]+):\s*(.*)$", lines[i])):
        opts[m.group(1)] = m.group(2).strip()
        i += 1
    rest = lines[i:]
    return opts, "\n".join(rest).strip("\n")


def _directive(res: Resolver, m: re.Match) -> str:
    name, arg, body = m.group("name"), m.group("arg").strip(), m.group("body")
    opts, content = _options(body)
    if name == "literalinclude":
        code = res.include(arg, opts)
        lang = opts.get("language", "python")
        return f"```{lang}\n{code.rstrip()}\n```" if code is not None else f"*(code: `{arg}`)*"
    if name in ("code-cell", "code-block", "code", "sourcecode"):
        return f"```{arg}\n{content}\n```"
    if name == "math":
        tex = content
        label = opts.get("label")
        if label and (number := res.label("eq", label)):
            tex = f"{tex} \\tag{{{number.strip('()')}}}"
        return f"$$\n{tex}\n$$"
    generated = res.directive(name, arg)
    if generated is not None:
        return resolve_markdown(generated, res)
    if name in ("figure", "image"):
        return f"![{opts.get('alt', content)}]({arg})"
    inner = resolve_markdown(content, res)
    title = arg or name.capitalize()
    if name in ("dropdown", "admonition", "note", "tip", "warning", "important", "hint",
                "caution", "attention", "danger", "error", "seealso", "exercise", "solution",
                "prf:theorem", "prf:definition", "prf:proof", "div", "card", "margin"):
        quoted = "\n".join("> " + line if line else ">" for line in inner.splitlines())
        return (f"> **{title}**\n>\n{quoted}" if name != "div" else inner)
    return inner


def resolve_markdown(text: str, res: Resolver) -> str:
    """``text`` (MyST) as plain Markdown that Jupyter, Colab and VS Code render."""
    text = _FENCE.sub(lambda m: _directive(res, m), text)

    def dmath(m: re.Match) -> str:
        number = res.label("eq", m.group("label"))
        tag = f" \\tag{{{number.strip('()')}}}" if number else ""
        return f"$${m.group('tex').rstrip()}{tag}$$"

    text = _DMATH_LABEL.sub(dmath, text)
    text = _TARGET.sub(lambda m: f'<a id="{m.group("label")}"></a>', text)
    return _ROLE.sub(lambda m: _role(res, m), text)


# --- the Sphinx side: numbers, citations and includes from the build's environment -----------


def _sphinx_resolver(app: Any, docname: str, glue: Mapping[str, str]) -> Resolver:
    env = app.env
    std = env.get_domain("std")
    fmt = app.config.numfig_format

    def number_of(doc: str, node_id: str) -> tuple[str, str] | None:
        for figtype, ids in env.toc_fignumbers.get(doc, {}).items():
            if node_id in ids:
                return figtype, ".".join(str(n) for n in ids[node_id])
        return None

    def label(role: str, target: str) -> str | None:
        if role == "eq":
            node_id = f"equation-{target}"
            for doc in [docname, *env.toc_fignumbers]:
                found = number_of(doc, node_id)
                if found:
                    return f"({found[1]})"
            return None
        if role == "doc":
            doc = str((Path(docname).parent / target).as_posix())
            title = env.titles.get(doc) or env.titles.get(target)
            return title.astext() if title is not None else None
        doc_id = std.labels.get(target) or std.anonlabels.get(target)
        if not doc_id:
            return None
        doc, node_id = doc_id[0], doc_id[1]
        found = number_of(doc, node_id)
        if role == "numref" and found:
            return fmt.get(found[0], "%s").replace("%s", found[1])
        if role == "ref" and target in std.labels:
            return std.labels[target][2]
        return found[1] if found else None

    return Resolver(
        glue=glue,
        label=label,
        cite=_citer(app),
        include=_includer(app, docname),
        directive=_directive_maker(app, docname),
    )


def _citer(app: Any) -> Callable[[str, list[str]], str]:
    entries: dict[str, Any] = {}
    try:
        from pybtex.database import parse_file

        for bib in app.config.bibtex_bibfiles:
            entries.update(parse_file(str(Path(app.srcdir) / bib)).entries)
    except Exception:  # no bibliography: keys stay as they are
        pass

    def names(key: str) -> tuple[str, str]:
        e = entries.get(key)
        if e is None:
            return key, ""
        people = e.persons.get("author") or e.persons.get("editor") or []
        last = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in people]
        who = (last[0] if len(last) == 1 else f"{last[0]} and {last[1]}" if len(last) == 2
               else f"{last[0]} et al." if last else key)  # fmt: skip
        return who, e.fields.get("year", "")

    def cite(role: str, keys: list[str]) -> str:
        parts = [names(k) for k in keys]
        if role.startswith("cite:t"):
            return "; ".join(f"{who} ({year})" for who, year in parts)
        return "(" + "; ".join(f"{who}, {year}" if year else who for who, year in parts) + ")"

    return cite


def _includer(app: Any, docname: str) -> Callable[[str, dict[str, str]], str | None]:
    def include(path: str, options: dict[str, str]) -> str | None:
        from sphinx.directives.code import LiteralIncludeReader

        src = Path(app.srcdir)
        file = (src / path.lstrip("/")) if path.startswith("/") else (
            src / Path(docname).parent / path
        )
        opts: dict[str, Any] = {k: v for k, v in options.items() if k in (
            "pyobject", "lines", "start-after", "end-before", "start-at", "end-at", "prepend",
            "append", "dedent")}  # fmt: skip
        if "dedent" in opts:
            opts["dedent"] = int(opts["dedent"] or 0)
        try:
            text, _ = LiteralIncludeReader(str(file), opts, app.config).read()
        except Exception:
            return None
        return text

    return include


def _directive_maker(app: Any, docname: str) -> Callable[[str, str], str | None]:
    def make(name: str, arg: str) -> str | None:
        try:
            if name == "chapter-exercises":
                return _exercises_markdown(app, arg)
            if name == "grill":
                return _grill_markdown(app, arg)
        except Exception as err:  # the page itself reports the same problem as a build error
            _warn(f"reader notebook of {docname}: {name} {arg}: {err}")
            return f"*(The {name} of this chapter could not be read: {err})*"
        return None

    return make


def _warn(message: str) -> None:
    from sphinx.util import logging

    logging.getLogger(__name__).warning(f"optlib: {message}")


def _exercises_markdown(app: Any, name: str) -> str:
    from .grading.master import read_master
    from .sphinxext import _cell_source, _strip_first_heading, chapter_number

    master = read_master(Path(app.srcdir) / app.config.optlib_exercises_dir / f"{name}.ipynb")
    chapter = chapter_number(name)
    out = [
        f"Work on these exercises in the notebook [{reader_name(name, 'exercises')}]"
        f"({reader_name(name, 'exercises')}) (beside this one in the book's downloads): "
        '`grader.check("q1")` checks an answer at once.'
    ]
    for q in master.questions:
        number = re.sub(r"\D", "", q.name) or q.name
        title = re.sub(r"^\d+[.)]\s*", "", q.title).strip()
        prompt = "\n\n".join(
            _strip_first_heading(_cell_source(c)) for c in q.prompt if _cell_source(c).strip()
        )
        points = f"{q.points:g} point{'s' if q.points != 1 else ''}"
        how = "graded by hand" if q.manual else f'check with `grader.check("{q.name}")`'
        prefix = f"{chapter}." if chapter is not None else ""
        out.append(f"#### Exercise {prefix}{number}: {title}\n\n{prompt}\n\n*{points}; {how}.*")
    return "\n\n".join(out)


def _grill_markdown(app: Any, bank_name: str) -> str:
    from .grill import load_bank

    bank = load_bank(Path(app.srcdir) / app.config.optlib_grill_dir / f"{bank_name}.yml")
    out = ["Click a question to show its model answer. Questions marked *(trap)* invite a "
           "plausible wrong answer."]  # fmt: skip
    for i, q in enumerate(bank.questions, 1):
        trap = " <em>(trap)</em>" if q.trap else ""  # HTML: Markdown is not read in <summary>
        out.append(
            f"<details><summary><b>Q{i}.</b>{trap} {' '.join(q.question.split())}</summary>\n\n"
            f"{q.answer.strip()}\n\n*{q.difficulty}; {', '.join(q.tags)}*\n\n</details>"
        )
    return "\n\n".join(out)


# --- writing the notebooks -----------------------------------------------------------------------


def _glue_values(executed: Path) -> dict[str, str]:
    side = executed.with_suffix(".glue.json")
    if side.is_file():
        data = json.loads(side.read_text())
        return {k: v.get("data", {}).get("text/plain", "") for k, v in data.items()}
    values = {}
    if executed.is_file():
        for cell in json.loads(executed.read_text()).get("cells", []):
            for out in cell.get("outputs", []):
                name = out.get("metadata", {}).get("scrapbook", {}).get("name")
                if name:
                    values[name] = out.get("data", {}).get("text/plain", "")
    return values


def _resolve_cells(nb: dict, res: Resolver, first_cell: Callable[[str], str] | None) -> dict:
    nb = copy.deepcopy(nb)
    first = True
    for cell in nb["cells"]:
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        if cell["cell_type"] == "markdown":
            cell["source"] = resolve_markdown(src, res)
        elif cell["cell_type"] == "code":
            if first and first_cell is not None:
                cell["source"] = first_cell(src)
            first = False
            tags = cell.get("metadata", {}).get("tags", [])
            if "remove-input" in tags or "hide-input" in tags:
                cell.setdefault("metadata", {}).setdefault("jupyter", {})["source_hidden"] = True
        cell.get("metadata", {}).pop("execution", None)
    nb.setdefault("metadata", {}).pop("mystnb", None)
    return nb


def write_reader_notebooks(app: Any, exception: Exception | None) -> None:
    """``build-finished``: write the reader notebooks (see the module docstring)."""
    if exception is not None or app.builder.format != "html":
        return
    from .notebook import install_command, set_install_command

    out = Path(app.outdir) / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    executed_root = Path(app.outdir).parent / "jupyter_execute"
    command = install_command(app.config.optlib_repository_url, wheel=True)
    glue_by_name: dict[str, Resolver] = {}
    for docname in sorted(app.env.found_docs):
        source = Path(app.srcdir) / f"{docname}.ipynb"
        if not source.is_file():
            continue
        executed = executed_root / f"{docname}.ipynb"
        nb = json.loads((executed if executed.is_file() else source).read_text())
        res = _sphinx_resolver(app, docname, _glue_values(executed))
        reader = _resolve_cells(nb, res, lambda src: set_install_command(src, command))
        (out / reader_name(docname)).write_text(json.dumps(reader, indent=1, ensure_ascii=False))
        glue_by_name[Path(docname).name] = res
    masters = Path(app.srcdir) / app.config.optlib_exercises_dir
    for master in sorted(masters.glob("[0-9]*.ipynb")):
        name = master.stem
        student = (Path(app.srcdir) / app.config.optlib_assignments_dir / name / "student"
                   / f"{name}.ipynb")  # fmt: skip
        if not student.is_file():
            continue
        chapter = glue_by_name.get(name, Resolver())
        sres = Resolver(glue=chapter.glue, label=chapter.label, cite=chapter.cite)
        doc = _resolve_cells(json.loads(student.read_text()), sres,
                             lambda src: set_install_command(src, command))  # fmt: skip
        (out / reader_name(name, "exercises")).write_text(
            json.dumps(doc, indent=1, ensure_ascii=False)
        )
    quiz = Path(app.srcdir) / app.config.optlib_exercises_dir / "grill_quiz.ipynb"
    if quiz.is_file():
        nb = json.loads(quiz.read_text())
        doc = _resolve_cells(nb, Resolver(), lambda src: set_install_command(src, command))
        (out / quiz.name).write_text(json.dumps(doc, indent=1, ensure_ascii=False))
