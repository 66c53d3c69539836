r"""The core of the exercise checks: test a learner's code differentially against optlib and
``torch.optim``.

A check runs the learner's function or class on seeded problems and compares what it produces
with the reference (``optlib.SGD``, ``torch.optim.SGD``, ``torch.optim.Adam``, or an exact
eigenvalue computation) on the same inputs. On success it prints one deterministic line; on
failure it raises :class:`AssertionError` saying which case, which step and which quantity
differ (expected against got), without giving the solution away.

Every check is split into four pure parts so that two graders can share it:

* ``cases(seed, **options)``: fresh inputs, as plain JSON data;
* ``probe(answer, case)``: runs the *learner's* code on one case and returns plain JSON data;
* ``expect(case)``: runs the *reference* on the same case and returns the same kind of data;
* ``compare(case, got, expected, where)``: raises :class:`AssertionError` on a mismatch.

In a notebook, ``checks.gd_step(gd_step)`` runs all four in the learner's kernel (advisory). The
classroom grader (:mod:`optlib.course.grading`) runs all four in its own trusted process: the
learner's code runs in a sandbox, and ``probe`` reaches it only through a stand-in. Both use the
same protocol (:mod:`optlib.course.grading.proxy`), so a check behaves the same in both places.

**What a probe may do with** ``answer`` (the contract; a check that keeps to it works in the
grader's sandbox unchanged, and ``tests/test_checks.py`` runs every registered check through it):

1. *Call it*, and call what it returns (``opt = answer(params, lr=0.1)``, ``opt.step()``), with
   arguments made of: ``None``, bools, ints, floats, complex numbers, strings, bytes; tuples,
   lists, dicts, sets of these; torch tensors (any dtype and shape, dense, on the CPU; with
   ``requires_grad`` and ``.grad``), ``torch.Size``, dtypes, devices; numpy arrays and scalars;
   ``torch.Generator`` (CPU); ``torch.nn.Module`` trees built of torch.nn modules; and functions
   of the probe's own (callbacks: when the learner's code calls one, it runs in the probe's
   process and its result is sent back; a closure that computes a loss and its gradients works).
2. *Read and set attributes* of what the learner's code returned (``opt.param_groups``,
   ``opt.state_dict()``); methods come back as callables.
3. *Inspect the results*: plain data comes back as fresh copies (tuples stay tuples, tensors
   keep dtype, shape, ``requires_grad`` and ``nn.Parameter``; a generator such as
   ``model.parameters()`` arrives as an iterator over its items). Tensors, generators and modules
   that the probe passed in are *mirrored*: the learner's code works on its own copies, and after
   every call (and before every callback) whatever changed on either side (values, ``.grad``,
   generator state, module parameters and buffers; compared byte for byte, so writes through
   ``.data`` count) is written into the other side's objects, in place; a result that is one of
   them comes back as the very same object (``is`` holds), so in-place changes and param groups
   can be checked. Module classes travel as torch.nn's own (a module of another class arrives as
   a stand-in subclass of its nearest torch.nn base, with the same name, without its methods).
4. Anything else the learner's code returns is a *stand-in*: callable if the original is,
   ``type(x).__name__`` is the learner's type name, attributes as in 2; ``isinstance`` against
   the learner's classes, iteration, indexing and arithmetic on it are not available (ask the
   learner's code for plain data instead, e.g. ``list(opt.param_groups)``).
5. An exception of the learner's code arrives as an exception of the same built-in type (or
   :class:`~optlib.course.grading.proxy.AnswerError`); a probe may catch it, otherwise the case
   records ``{"error": ...}`` and ``compare`` reports it. Time limits and a broken sandbox end the
   question with an exception no probe can catch.
6. Each call has a time limit in the grader; a probe may call as often as it needs, but each
   call (and each callback) is a round trip between two processes, so fewer calls with more data
   are faster. Probes run in threads beside other submissions' probes: do not rely on global
   random state (use a ``torch.Generator``).

**Delegation.** An answer that delegates to torch.optim's or optlib's own implementation of the
method asked for (subclassing it, aliasing it, calling it or its functional form, running it to
"predict") scores nothing, with a message that says so. Each check declares what its answer must
not use with :func:`no_delegation` (chapters 1 to 7: ``optlib/course/checks/delegation.py``):
dotted names of classes (their own code and every subclass), functions, or whole modules (all
that is defined in them). An author of a new check adds one line there, or calls it next to
``_register``; a check with nothing to forbid says so with an empty list, and
``tests/test_checks.py`` fails for a registered check without a declaration. The learner's side
watches the code that runs while it serves a call (see :mod:`optlib.course.grading.serve`; in
the learner's kernel the watch stands aside when another profiler runs), and the classroom grader
also reads the answer's own definition in the notebook (:mod:`optlib.course.grading.review`).

This module is the core every chapter's check module builds on: the registry (:data:`CHECKS`,
:func:`run_check`, :data:`DELEGATION`), seeded problems, and the helpers that turn what a
learner's code returned into plain data and compare it. It imports none of the chapter modules;
the package's ``__init__`` imports them, and each registers its checks here.

The problems are quadratics :math:`f(\theta) = \tfrac12 \theta^\top A \theta - b^\top \theta`
with :math:`A = Q\,\mathrm{diag}(\lambda_1,\dots,\lambda_d)\,Q^\top` symmetric positive definite,
:math:`\mu = \lambda_{\min}`, :math:`L = \lambda_{\max}`, :math:`\kappa = L/\mu`, generated here
from a seed so that the checks depend only on torch and optlib's optimizers.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CHECKS", "DELEGATION", "Check", "Delegation", "no_delegation", "run_check"]

Case = dict[str, Any]
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# Agreement asked of the learner, per dtype: a correct answer differs only by rounding.
RTOL = {"float64": 1e-10, "float32": 1e-5}
ATOL = {"float64": 1e-12, "float32": 1e-6}


@dataclass(frozen=True)
class Check:
    """One exercise check: see the module docstring for the roles of the four parts."""

    name: str
    cases: Callable[..., list[Case]]
    probe: Callable[[Any, Case], Any]
    expect: Callable[[Case], Any]
    compare: Callable[[Case, Any, Any, str], None]
    success: Callable[..., str]


CHECKS: dict[str, Check] = {}


def _register(check: Check) -> Check:
    CHECKS[check.name] = check
    return check


@dataclass(frozen=True)
class Delegation:
    """What a check's answer must not delegate to: ``what`` names the method the learner writes
    (it goes into the message), ``names`` the dotted paths of torch's and optlib's own
    implementations of it (a class: its own code and its subclasses; a function; a module:
    everything defined in it)."""

    what: str
    names: tuple[str, ...]


DELEGATION: dict[str, Delegation] = {}
ANSWER = "answer"  # the label of an answer whose name is unknown


def no_delegation(check: str, what: str, *names: str) -> None:
    """Declare that the answer to ``check`` must not use ``names`` (see the module docstring)."""
    DELEGATION[check] = Delegation(what, tuple(names))


def delegation_message(check: str, label: str, hits: set[str]) -> str:
    """Why a delegating answer scores nothing."""
    what = DELEGATION[check].what if check in DELEGATION else "this method"
    used = ", ".join(sorted(hits))
    return (
        f"{check}: {'your answer' if label == ANSWER else f'`{label}`'} uses {used}, a "
        f"library's own {what}: this question asks you to "
        "write it yourself, so it scores nothing"
    )


def not_defined_message(check: str, label: str, state: str) -> str:
    """The message for an answer whose cell was never run (``state``: "None", "undefined")."""
    status = "still None" if state == "None" else "not defined"
    if label == ANSWER:
        return (
            f"{check}: the answer is {status}: run the cell that defines it (with your answer "
            "in place of `...`), then run this check again"
        )
    return (
        f"{check}: `{label}` is {status}: run the cell that defines `{label}` (with your answer "
        "in place of `...`), then run this check again"
    )


def _label_of(answer: Any) -> str:
    """The name the caller gave ``answer`` (the parameter of otter's test function, or the
    learner's variable), found in the first frame outside the checks; else "your answer"."""
    frame = inspect.currentframe()
    try:
        while frame is not None and frame.f_globals.get("__name__", "").startswith(
            "optlib.course.checks"
        ):
            frame = frame.f_back
        if frame is not None:
            names = [
                k
                for k, v in frame.f_locals.items()
                if v is answer and k.isidentifier() and not k.startswith("__")
            ]
            if len(names) == 1:
                return names[0]
    finally:
        del frame
    return ANSWER


def run_check(name: str, answer: Any, **options: Any) -> None:
    """Run check ``name`` on ``answer`` in this process; print its line or raise AssertionError.

    ``answer`` is reached through the grader's protocol (a loopback stand-in, see the module
    docstring), so what passes here passes in the classroom grader too."""
    from ..grading.proxy import LocalAnswer  # the course's protocol; imported when first used

    check = CHECKS[name]
    label = _label_of(answer)
    if answer is None:
        raise AssertionError(not_defined_message(name, label, "None"))
    cases = check.cases(**options)
    forbidden = list(DELEGATION[name].names) if name in DELEGATION else []
    local = LocalAnswer(answer, check=name, forbidden=forbidden, label=label)
    if local.delegated:
        raise AssertionError(delegation_message(name, label, local.delegated))
    for i, case in enumerate(cases):
        got = local.probe(check, case)
        if local.delegated:
            raise AssertionError(delegation_message(name, label, local.delegated))
        cause = local.last_exception
        if cause is not None and isinstance(got, dict) and set(got) == {"error"}:
            raise cause  # in the learner's kernel: their own error, with its traceback
        check.compare(case, got, check.expect(case), f"case {i + 1} of {len(cases)}")
    print(check.success(**options))


# --------------------------------------------------------------------------- seeded problems


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _log_uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return math.exp(_uniform(g, math.log(lo), math.log(hi)))


def _spd(g: torch.Generator, d: int, mu: float, L: float) -> torch.Tensor:
    """A random rotation of diag(λ) with λ_min = mu, λ_max = L exactly (d ≥ 2)."""
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    inner = [_log_uniform(g, mu, L) for _ in range(d - 2)]
    lam = torch.tensor([mu, L, *inner], dtype=torch.float64)
    A = Q @ torch.diag(lam) @ Q.T
    return (A + A.T) / 2


def _rounded(x: torch.Tensor, dtype: str) -> list:
    """Plain nested lists of the values ``x`` takes in ``dtype`` (exact in JSON)."""
    return x.to(DTYPES[dtype]).double().tolist()


def _tensor(data: Any, dtype: str = "float64") -> torch.Tensor:
    return torch.tensor(data, dtype=DTYPES[dtype])


def _quadratic_grad(case: Case, theta: torch.Tensor) -> torch.Tensor:
    A = _tensor(case["A"], case["dtype"])
    b = _tensor(case["b"], case["dtype"])
    return (A @ theta.reshape(-1) - b).reshape(theta.shape)


# --------------------------------------------------------------------------- comparing data


def _as_float_array(data: Any, what: str, where: str) -> torch.Tensor:
    try:
        return torch.tensor(data, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise AssertionError(f"{where}: {what} is not a list of numbers") from None


def _first_mismatch(
    got: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float
) -> tuple[int, ...] | None:
    bad = ~torch.isclose(got, expected, rtol=rtol, atol=atol, equal_nan=False)
    if not bool(bad.any()):
        return None
    return tuple(int(i) for i in bad.nonzero()[0])


def _fmt_index(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def _error_of(got: Any) -> str | None:
    """Probes run in a sandbox report an exception as ``{"error": "..."}``."""
    if isinstance(got, dict) and set(got) == {"error"}:
        return str(got["error"])
    return None


def _problem_of(got: Any) -> str:
    """What went wrong with a probe result that carries no value (never the expected answer)."""
    problem = got.get("problem") if isinstance(got, dict) else None
    return str(problem) if problem else "no result"


def _raise_if_error(got: Any, what: str, where: str) -> None:
    error = _error_of(got)
    if error is not None:
        raise AssertionError(f"{where}: {what} raised {error}")


def _trajectory_answer(
    got: Any, expected: dict, n: int, where: str, *, name: str, inputs: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The learner's trajectory (``steps × n`` numbers) and the reference's, once every check
    that does not depend on the method has passed: the learner's code raised, the probe noted a
    problem (at a step), an input was changed in place (``inputs`` names them), the shape."""
    _raise_if_error(got, name, where)
    _require(got, ["trajectory"], where)
    modified = got.get("modified_input_at")
    if modified:
        at = f" at step {modified[0]}" if isinstance(modified, list) else ""
        raise AssertionError(
            f"{where}: {name} changed {inputs} in place{at}; return a new tensor and leave the "
            "inputs unchanged"
        )
    steps = len(expected["trajectory"])
    traj = _as_float_array(got["trajectory"], "the trajectory", where)
    if tuple(traj.shape) != (steps, n):
        raise AssertionError(f"{where}: expected {steps} step(s) of {n} numbers")
    return traj, torch.tensor(expected["trajectory"], dtype=torch.float64)


def _first_step_mismatch(
    traj: torch.Tensor, ref: torch.Tensor, rtol: float, atol: float
) -> tuple[int, tuple[int, ...]] | None:
    """``(k, index)`` of the first step ``k`` (0-based) at which ``traj`` leaves ``ref``."""
    for k in range(len(ref)):
        index = _first_mismatch(traj[k], ref[k], rtol, atol)
        if index is not None:
            return k, index
    return None


def _as_tensor_answer(value: Any, *, like: torch.Tensor, what: str) -> tuple[list, dict]:
    """Turn what a learner's function returned into plain data, noting what was wrong with it."""
    if value is None:
        return [], {"problem": f"{what} returned None (is a `return` missing?)"}
    try:
        t = torch.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError):
        return [], {"problem": f"{what} returned a {type(value).__name__}, not a tensor"}
    if tuple(t.shape) != tuple(like.shape):
        return [], {
            "problem": f"{what} returned shape {tuple(t.shape)}, "
            f"expected the shape of theta, {tuple(like.shape)}"
        }
    return t.to(torch.float64).reshape(-1).tolist(), {}


def _number(value: Any, what: str) -> dict:
    """``{"value": float}`` for a number (a Python, numpy or one-element torch number, kept in
    float64), else ``{"problem": ...}`` saying what came back instead."""
    if value is None:
        return {"problem": f"{what} returned None (is a `return` missing?)"}
    if isinstance(value, bool):
        return {"problem": f"{what} returned a bool, not a number"}
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return {"problem": f"{what} returned a {type(value).__name__}, not a number"}
    if t.numel() != 1:
        return {"problem": f"{what} returned {t.numel()} numbers, expected one"}
    return {"value": float(t.reshape(()))}


def _as_number(value: Any) -> float | None:
    """A learner's scalar (int, float, 0-d/1-element tensor or array) as a float, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    if t.numel() != 1 or t.is_complex():
        return None
    return float(t.reshape(()).to(torch.float64))


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _require(got: Any, keys: list[str], where: str, what: str | None = None) -> dict:
    """A probe result as a dict holding every key in ``keys``; otherwise an AssertionError that
    says what went wrong: the learner's exception (when ``what`` names the learner's code), a
    problem the probe noted (at a step, if it says which), or no result at all."""
    if what is not None:
        _raise_if_error(got, what, where)
    if not isinstance(got, dict):
        raise AssertionError(f"{where}: no result")
    if got.get("problem"):
        step = f", step {got['step']}" if got.get("step") else ""
        raise AssertionError(f"{where}{step}: {got['problem']}")
    if any(key not in got for key in keys):
        raise AssertionError(f"{where}: no result")
    return got


def _value_of(
    got: Any, what: str, where: str, *, nonnegative: bool = False, kind: str = "number"
) -> float:
    """The learner's number from probe data (see :func:`_number`), or an AssertionError saying
    what was wrong with it."""
    value = _require(got, ["value"], where, what)["value"]
    if not _finite(value) or (nonnegative and value < 0):
        sign = ", non-negative" if nonnegative else ""
        raise AssertionError(f"{where}: expected a finite{sign} {kind}, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- optimizer classes


def _class_cases(
    seed: int, n_cases: int, steps: int, hyper: Callable[[torch.Generator, int], dict]
) -> list[Case]:
    g = _generator(seed)
    cases = []
    for i in range(n_cases):
        shapes = [[3], [2, 2]] if i % 2 == 0 else [[4]]
        problems = []
        for shape in shapes:
            d = math.prod(shape)
            A = _spd(g, d, _log_uniform(g, 0.1, 1.0), _log_uniform(g, 2.0, 10.0))
            problems.append(
                {
                    "shape": shape,
                    "A": A.tolist(),
                    "b": torch.randn(d, generator=g, dtype=torch.float64).tolist(),
                    "theta0": torch.randn(d, generator=g, dtype=torch.float64).tolist(),
                }
            )
        cases.append({"params": problems, "hyper": hyper(g, i), "steps": int(steps)})
    return cases


def _class_loss(problems: list[dict], params: list[torch.Tensor]) -> torch.Tensor:
    """Quadratic plus a small quartic term, so gradients change from step to step."""
    total = torch.zeros((), dtype=torch.float64)
    for prob, p in zip(problems, params):
        A, b, x = _tensor(prob["A"]), _tensor(prob["b"]), p.reshape(-1)
        total = total + 0.5 * x @ A @ x - b @ x + 0.05 * (x**4).sum()
    return total


def _class_run(factory: Callable, case: Case) -> list[list[list[float]]]:
    params = [
        _tensor(prob["theta0"]).reshape(prob["shape"]).requires_grad_() for prob in case["params"]
    ]
    opt = factory(params, **case["hyper"])
    trajectory = []
    for _ in range(case["steps"]):
        for p in params:
            p.grad = None
        _class_loss(case["params"], params).backward()
        opt.step()
        trajectory.append([p.detach().double().reshape(-1).tolist() for p in params])
    return trajectory


def _class_probe(answer: Callable, case: Case) -> dict:
    return {"trajectory": _class_run(answer, case)}


def _class_compare(name: str, reference: str, hint: Callable[[list[float]], str]):
    def compare(case: Case, got: Any, expected: dict, where: str) -> None:
        hyper = ", ".join(f"{k}={v!r}" for k, v in case["hyper"].items())
        where = f"{name}, {where} ({hyper})"
        _raise_if_error(got, "your optimizer", where)
        if not isinstance(got, dict) or "trajectory" not in got:
            raise AssertionError(f"{where}: no result")
        ref = expected["trajectory"]
        traj = got["trajectory"]
        if not isinstance(traj, list) or len(traj) != len(ref):
            raise AssertionError(f"{where}: expected {len(ref)} steps")
        gaps = []
        first = None
        for k, (mine, theirs) in enumerate(zip(traj, ref)):
            if not isinstance(mine, list) or len(mine) != len(theirs):
                raise AssertionError(f"{where}, step {k + 1}: wrong number of parameters")
            gap = 0.0
            for j, (a, e) in enumerate(zip(mine, theirs)):
                a_t = _as_float_array(a, f"parameter {j}", where)
                e_t = torch.tensor(e, dtype=torch.float64)
                if a_t.shape != e_t.shape:
                    raise AssertionError(f"{where}, step {k + 1}: parameter {j} has a wrong shape")
                idx = _first_mismatch(a_t, e_t, 1e-9, 1e-12)
                rel = float((a_t - e_t).norm() / e_t.norm().clamp_min(1e-300))
                gap = max(gap, rel if math.isfinite(rel) else math.inf)
                if idx is not None and first is None:
                    shape = tuple(case["params"][j]["shape"])
                    at = tuple(int(i) for i in torch.unravel_index(torch.tensor(idx[0]), shape))
                    first = (
                        f"{where}: after step {k + 1}, parameter {j}{_fmt_index(at)} differs "
                        f"from {reference}: expected {float(e_t[idx]):.10g}, "
                        f"got {float(a_t[idx]):.10g}"
                    )
            gaps.append(gap)
        if first is not None:
            raise AssertionError(first + hint(gaps))

    return compare


def _grouped_cases(
    seed: int,
    n_cases: int,
    steps: int,
    hyper: Callable[[torch.Generator, int], dict],
    *,
    groups: Callable[[torch.Generator, int], list[dict]] | None = None,
    frozen: bool = False,
) -> list[Case]:
    """:func:`~optlib.course.checks._core._class_cases`, and with ``groups`` or ``frozen`` only
    cases with two parameter tensors: ``groups(g, i)`` gives each tensor's param-group overrides
    (each tensor then sits in a group of its own), ``frozen`` leaves the second tensor's
    ``.grad`` at ``None`` from the middle of the run on (after it has built up state)."""
    if groups is None and not frozen:
        return _class_cases(seed, n_cases, steps, hyper)
    cases = _class_cases(seed, 2 * n_cases, steps, hyper)[::2]  # the cases with two tensors
    g = _generator(10_000 + int(seed))
    for i, case in enumerate(cases):
        if groups is not None:
            case["groups"] = groups(g, i)
        if frozen:
            case["frozen"] = {"param": 1, "from_step": max(1, steps // 2)}
    return cases


def _grouped_run(factory: Callable, case: Case) -> list[list[list[float]]]:
    """Step ``factory(params_or_groups, **hyper)`` on the case's loss; every parameter after
    every step. A frozen tensor gets no gradient (``.grad`` is ``None``) from step
    ``frozen["from_step"]`` on (steps counted from 0)."""
    params = [
        _tensor(prob["theta0"]).reshape(prob["shape"]).requires_grad_() for prob in case["params"]
    ]
    overrides = case.get("groups")
    arg = [{"params": [p], **o} for p, o in zip(params, overrides)] if overrides else params
    opt = factory(arg, **case["hyper"])
    frozen = case.get("frozen")
    trajectory = []
    for k in range(case["steps"]):
        for p in params:
            p.grad = None
        _class_loss(case["params"], params).backward()
        if frozen is not None and k >= frozen["from_step"]:
            params[frozen["param"]].grad = None
        opt.step()
        trajectory.append([p.detach().double().reshape(-1).tolist() for p in params])
    return trajectory


def _grouped_probe(answer: Callable, case: Case) -> dict:
    return {"trajectory": _grouped_run(answer, case)}


def _grouped_compare(name: str, reference: str, hint: Callable[[list[float]], str]):
    """:func:`~optlib.course.checks._core._class_compare`, saying which case had param groups
    and a parameter without gradient."""
    inner = _class_compare(name, reference, hint)

    def compare(case: Case, got: Any, expected: dict, where: str) -> None:
        inner(case, got, expected, where + _grouped_notes(case))

    return compare


def _grouped_notes(case: Case) -> str:
    """``", one param group per parameter (...); parameter i gets no gradient ..."`` for a case
    with param groups and/or a parameter without gradient (``frozen``, from a step on or for a
    range of steps when it has a ``to_step``); ``""`` for a plain case."""
    notes = []
    if case.get("groups"):
        overrides = "; ".join(
            f"group {j}: " + (", ".join(f"{k}={v!r}" for k, v in o.items()) or "defaults")
            for j, o in enumerate(case["groups"])
        )
        notes.append(f"one param group per parameter ({overrides})")
    frozen = case.get("frozen")
    if frozen is not None:
        when = (
            f"at steps {frozen['from_step'] + 1} to {frozen['to_step']}"
            if "to_step" in frozen
            else f"from step {frozen['from_step'] + 1} on"
        )
        notes.append(f"parameter {frozen['param']} gets no gradient (.grad is None) {when}")
    return f", {'; '.join(notes)}" if notes else ""


def _no_hint(gaps: list[float]) -> str:
    first_bad = next((i for i, g in enumerate(gaps) if g > 1e-9), None)
    if first_bad == 1:
        return " (step 1 agrees, step 2 does not: look at how the buffer is updated)"
    return ""
