r"""What the grader reads in a submission's code without running it (in the trusted process).

* :func:`static_delegation`: the answer's own definition (``class T(...)``, ``def T``, ``T = ...``)
  names an implementation its check forbids (``class MomentumSGD(torch.optim.SGD)``,
  ``Adagrad = torch.optim.Adagrad``, ``return la.richardson(...)``), resolved through the
  submission's imports and compared by identity with the forbidden objects. This complements the
  watch inside the sandbox (which a submission could defeat): an answer caught either way
  scores nothing.
* :func:`review_flags`: code that deserves a human look (it inspects frames or the interpreter's
  hooks, touches processes or signals, imports the course's machinery). Flags do not change a
  score: the score already needs right answers on fresh inputs.
"""

from __future__ import annotations

import ast
import re
import sys
import types
from typing import Any

from .serve import resolve

__all__ = ["review_flags", "static_delegation"]

_REVIEW = [
    (re.compile(r"\boptlib\s*\.\s*course\b|\bfrom\s+optlib\s*\.\s*course\b|"
                r"\bfrom\s+optlib\s+import\s+.*\bcourse\b"), "imports optlib.course"),
    (re.compile(r"\bCHECKS\b|\bDELEGATION\b|_expect\b|\b_probe\b"), "uses the checks' internals"),
    (re.compile(r"__code__|_getframe|\bf_back\b|\bf_globals\b|\bf_locals\b|\bgc\s*\.\s*get_"
                r"|\binspect\s*\.\s*(stack|currentframe|getouterframes)"
                r"|\bsys\s*\.\s*(setprofile|settrace|getprofile|gettrace|monitoring)\b"),
     "inspects or rewrites code, frames or the interpreter's hooks"),
    (re.compile(r"\bctypes\b|/proc/self|\bos\s*\.\s*(write|dup2?|fdopen|read)\s*\("),
     "reaches into the process or its file descriptors"),
    (re.compile(r"\bos\s*\.\s*(kill|killpg|setsid|fork|forkpty)\b|\bsignal\s*\.\s*"
                r"(signal|setitimer|alarm|pthread_kill)\b|\bsubprocess\b|\bos\s*\.\s*system\b"),
     "touches processes or signals"),
    (re.compile(r"\bimportlib\b|\b__import__\b|\bexec\s*\(|\bcompile\s*\("),
     "imports or runs code indirectly"),
]  # fmt: skip

ROOTS = ("torch", "optlib", "numpy")


def review_flags(sources: list[str]) -> list[str]:
    """Labels of what in ``sources`` deserves a human look (read as text, never run)."""
    text = "\n".join(sources)
    return [label for pattern, label in _REVIEW if pattern.search(text)]


def _aliases(trees: list[ast.Module]) -> dict[str, str]:
    """Top-level names bound to library paths by imports and plain assignments, in order."""
    names: dict[str, str] = {}
    for tree in trees:
        for stmt in tree.body:
            if isinstance(stmt, ast.Import):
                for a in stmt.names:
                    if a.asname:
                        names[a.asname] = a.name
                    else:
                        root = a.name.split(".")[0]
                        names[root] = root
            elif isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
                for a in stmt.names:
                    if a.name != "*":
                        names[a.asname or a.name] = f"{stmt.module}.{a.name}"
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target = stmt.targets[0]
                dotted = _dotted(stmt.value, names)
                if isinstance(target, ast.Name) and dotted is not None:
                    names[target.id] = dotted
    return names


def _dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in names:
        return None
    return ".".join([names[node.id], *reversed(parts)])


def _library_object(dotted: str) -> Any:
    """The object a library path names, without importing anything new (no learner-chosen
    module is ever imported here)."""
    parts = dotted.split(".")
    if parts[0] not in ROOTS:
        return None
    for i in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:i]))
        if module is None:
            continue
        obj: Any = module
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except Exception:
            return None
        return obj
    return None


def _definitions(trees: list[ast.Module], target: str) -> list[ast.AST]:
    found: list[ast.AST] = []
    for tree in trees:
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if stmt.name == target:
                    found.append(stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                if any(isinstance(t, ast.Name) and t.id == target for t in targets):
                    found.append(stmt)
            elif isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
                if any((a.asname or a.name) == target for a in stmt.names):
                    found.append(stmt)
    return found


def static_delegation(sources: list[str], target: str, forbidden: list[str]) -> set[str]:
    """The forbidden names that the definition of ``target`` in ``sources`` refers to."""
    if not forbidden:
        return set()
    trees = []
    for source in sources:
        try:
            trees.append(ast.parse(source))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    names = _aliases(trees)
    bad: list[tuple[str, Any]] = []
    for name in forbidden:
        try:
            bad.append((name, resolve(name)))
        except (ImportError, AttributeError):
            continue
    hits: set[str] = set()
    for definition in _definitions(trees, target):
        refs: list[str] = []
        if isinstance(definition, ast.ImportFrom):
            refs += [f"{definition.module}.{a.name}" for a in definition.names
                     if (a.asname or a.name) == target]  # fmt: skip
        else:
            for node in ast.walk(definition):
                if isinstance(node, (ast.Attribute, ast.Name)):
                    dotted = _dotted(node, names)
                    if dotted is not None:
                        refs.append(dotted)
        for ref in refs:
            obj = _library_object(ref)
            if obj is None:
                continue
            for name, forbidden_obj in bad:  # the table's first (most specific) match
                if _same_or_within(obj, forbidden_obj):
                    hits.add(name)
                    break
    return hits


def _same_or_within(obj: Any, forbidden: Any) -> bool:
    if obj is forbidden:
        return True
    if isinstance(forbidden, types.ModuleType):
        owner = getattr(obj, "__module__", None) if not isinstance(obj, types.ModuleType) else None
        return owner == forbidden.__name__ or (
            isinstance(obj, types.ModuleType) and obj.__name__.startswith(forbidden.__name__ + ".")
        )
    if isinstance(forbidden, type) and isinstance(obj, type):
        try:
            return issubclass(obj, forbidden)
        except TypeError:
            return False
    if isinstance(forbidden, type):  # a method of the forbidden class
        qualname = getattr(obj, "__qualname__", "")
        return getattr(obj, "__module__", None) == forbidden.__module__ and str(
            qualname
        ).startswith(forbidden.__qualname__ + ".")
    return False
