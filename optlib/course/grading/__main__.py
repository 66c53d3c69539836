"""Command line: ``python -m optlib.course.grading {assign,grade}`` (what ``make assignments`` and
``make grade`` run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .assign import assign
from .grade import grade_folder
from .report import say
from .sandbox import Limits, SandboxUnavailable


def _master(name: str, exercises: Path) -> Path:
    """An exercise name (``01_gradient_descent``) or a path to its master notebook."""
    path = Path(name)
    if path.suffix == ".ipynb" and path.is_file():
        return path
    candidate = exercises / f"{name}.ipynb"
    if candidate.is_file():
        return candidate
    raise SystemExit(f"no master notebook for {name!r} (looked for {candidate})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optlib.course.grading", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("assign", help="student release + autograder version of each master")
    a.add_argument("masters", nargs="*", help="master notebooks (default: exercises/[0-9]*.ipynb)")
    a.add_argument("--exercises", type=Path, default=Path("exercises"))
    a.add_argument("--out", type=Path, default=Path("_build/assignments"))

    g = sub.add_parser(
        "grade",
        help="grade a folder of submissions into a CSV",
        description="Grade every .ipynb in a folder, each submission in its own bubblewrap "
        "sandbox, into a CSV written row by row (see optlib.course.grading).",
    )
    g.add_argument("assignment", help="exercise name (01_gradient_descent) or master path")
    g.add_argument("submissions", type=Path, help="folder of submitted .ipynb files")
    g.add_argument("out", type=Path, help="CSV file to write")
    g.add_argument("--exercises", type=Path, default=Path("exercises"))
    g.add_argument("--jobs", type=int, default=None, help="submissions at once (default: cores)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted CSV")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per question")
    g.add_argument("--cell-timeout", type=float, default=20.0, help="seconds per cell or call")
    g.add_argument("--memory-mb", type=int, default=4096, help="memory of a whole job")
    g.add_argument("--processes", type=int, default=64, help="processes+threads of a job")
    g.add_argument("--disk-mb", type=int, default=64, help="size of each private tmpfs")
    g.add_argument("--max-files", type=int, default=20000, help="files in the private tmpfs")
    g.add_argument("--seed", type=int, default=None, help="reproduce a run's inputs")
    g.add_argument(
        "--unsafe-run-submissions-as-me",
        action="store_true",
        help="no sandbox: submissions run as you and can read, change and send your files "
        "(only for notebooks you trust; refused as root)",
    )
    args = parser.parse_args(argv)

    if args.command == "assign":
        masters = [Path(m) for m in args.masters] or sorted(args.exercises.glob("[0-9]*.ipynb"))
        for m in masters:
            out = assign(m, args.out)
            print(f"{m} -> {out}/student, {out}/autograder")
        return 0

    if not args.submissions.is_dir():
        raise SystemExit(f"{args.submissions} is not a folder")
    limits = Limits(
        question_timeout_s=args.timeout,
        cell_timeout_s=min(args.cell_timeout, args.timeout),
        memory_mb=args.memory_mb,
        processes=args.processes,
        disk_mb=args.disk_mb,
        files=args.max_files,
    )
    try:
        grade_folder(
            _master(args.assignment, args.exercises),
            args.submissions,
            args.out,
            limits=limits,
            seed=args.seed,
            jobs=args.jobs,
            resume=args.resume,
            unsandboxed=args.unsafe_run_submissions_as_me,
            log=say,
        )
    except SandboxUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
