"""The protocol between a check's probe and the learner's code (no sandbox needed: the same
server runs behind an in-process loopback, as in the learner's own ``grader.check``).

Values travel as data, mirrors write the learner's in-place changes back, callbacks run on the
trusted side, stand-ins behave as the contract in ``optlib.course.checks._core`` says, and
whatever the learner's side sends back is either well-formed data or a SandboxFailure.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optlib.course.grading import serve
from optlib.course.grading.proxy import (
    MISSING,
    AnswerError,
    Connection,
    LoopbackTransport,
    RemoteCallable,
    RemoteObject,
    SandboxFailure,
)


def connect(**namespace):
    server = serve.Server(dict(namespace), sandboxed=False)
    conn = Connection(LoopbackTransport(server))
    conn.init({})
    return conn, server


def test_plain_values_round_trip_with_their_types():
    conn, _ = connect(echo=lambda x: x)
    echo = conn.lookup("echo")
    values = [
        None, True, 3, -2**70, 1.5, float("inf"), "text \udc80", b"\x00\xff", 2 + 3j, Ellipsis,
        (1, (2.0, "a")), [1, [2]], {"a": 1, 2: (3,)}, {1, 2}, frozenset({"x"}),
        torch.Size([2, 3]), torch.float64, torch.device("cpu"),
        np.float32(1.25), np.int64(7), np.arange(6.0).reshape(2, 3),
    ]  # fmt: skip
    for v in values:
        got = echo(v)
        assert type(got) is type(v), (v, got)
        if isinstance(v, np.ndarray):
            assert np.array_equal(got, v) and got.dtype == v.dtype
        else:
            assert got == v
    nan = echo(float("nan"))
    assert math.isnan(nan)


@pytest.mark.parametrize(
    "dtype",
    [torch.float64, torch.float32, torch.bfloat16, torch.float16, torch.complex64,
     torch.int64, torch.uint8, torch.bool],
)  # fmt: skip
def test_tensors_travel_exactly_in_every_dtype(dtype):
    conn, _ = connect(twice=lambda t: torch.cat([t, t]))
    x = (torch.randn(3, 2) * 100).to(dtype)
    got = conn.lookup("twice")(x)
    assert got.dtype == dtype and torch.equal(got, torch.cat([x, x]))
    zero_dim = conn.lookup("twice")(x.reshape(-1)[:0])
    assert zero_dim.shape == (0,)


def test_in_place_changes_come_back_and_returned_inputs_keep_their_identity():
    def sneaky(theta, grad, lr):
        theta.sub_(lr * grad)  # changes its input in place ...
        return theta  # ... and returns it

    conn, _ = connect(sneaky=sneaky)
    theta, grad = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0])
    got = conn.lookup("sneaky")(theta, grad, 0.5)
    assert got is theta
    assert theta.tolist() == [0.5, 1.5]


def test_data_writes_are_seen_too():
    def old_style(p):
        p.data.add_(1.0)  # does not bump p's version counter

    conn, _ = connect(old_style=old_style)
    p = torch.zeros(3)
    conn.lookup("old_style")(p)
    assert p.tolist() == [1.0, 1.0, 1.0]


def test_an_optimizer_class_is_constructed_and_stepped_through_stand_ins():
    conn, _ = connect(SGD=torch.optim.SGD)
    p = torch.tensor([1.0, -1.0], requires_grad=True)
    opt = conn.lookup("SGD")([p], lr=0.1, momentum=0.9)
    assert isinstance(opt, RemoteObject) and type(opt).__name__ == "SGD"
    ref_p = p.detach().clone().requires_grad_()
    ref = torch.optim.SGD([ref_p], lr=0.1, momentum=0.9)
    for _ in range(3):
        for q, o in ((p, opt), (ref_p, ref)):
            q.grad = None
            (q**2).sum().backward()
            o.step()
    assert torch.equal(p, ref_p)
    groups = opt.param_groups  # plain data, holding the very parameter passed in
    assert groups[0]["params"][0] is p and groups[0]["lr"] == 0.1
    opt.zero_grad()
    assert p.grad is None


def test_closures_and_callbacks_run_on_the_trusted_side():
    conn, _ = connect(LBFGS=torch.optim.LBFGS, apply=lambda f, x: f(x) + 1)
    calls = []

    def square(x):
        calls.append(x)
        return x * x

    assert conn.lookup("apply")(square, 3) == 10 and calls == [3]
    p = torch.tensor([2.0, -3.0], requires_grad=True)
    opt = conn.lookup("LBFGS")([p], lr=1, max_iter=50)

    def closure():
        opt.zero_grad()
        loss = ((p - 1) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(p, torch.ones(2), atol=1e-6)


def test_generators_and_modules_are_mirrored():
    def draw(n, generator):
        return torch.randint(10, (n,), generator=generator)

    def groups(model):
        decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
        return [{"params": decay}, {"params": [model.head.bias]}]

    conn, _ = connect(draw=draw, groups=groups)
    g = torch.Generator().manual_seed(0)
    first = conn.lookup("draw")(5, g)
    again = torch.randint(10, (5,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, again)
    second = conn.lookup("draw")(5, g)  # the generator advanced here too
    assert not torch.equal(first, second)

    class Net(torch.nn.Module):  # a class the learner's side does not know
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(5, 3)
            self.norm = torch.nn.LayerNorm(3)
            self.head = torch.nn.Linear(3, 5)
            self.head.weight = self.embed.weight  # tied

    net = Net()
    got = conn.lookup("groups")(net)
    assert [p for p in got[0]["params"]] == [net.embed.weight, net.norm.weight]
    assert got[0]["params"][0] is net.embed.weight and got[1]["params"][0] is net.head.bias


def test_learner_exceptions_keep_their_builtin_type_and_say_where():
    source = "def f(x):\n    return x + 'a'\n"
    ns: dict = {}
    exec(compile(source, "<cell 3>", "exec"), ns)
    conn, _ = connect(f=ns["f"])
    with pytest.raises(TypeError) as err:
        conn.lookup("f")(1)
    assert isinstance(err.value, AnswerError)
    assert "cell 3, line 2, in f" in err.value.description

    class Odd(Exception):
        pass

    def raises_odd():
        raise Odd("odd")

    conn, _ = connect(g=raises_odd)
    with pytest.raises(AnswerError, match="Odd: odd"):
        conn.lookup("g")()


def test_stand_ins_are_callable_only_when_the_original_is():
    class Box:
        value = 3

    conn, _ = connect(make=lambda: Box(), fn=lambda: (lambda r: r * 2))
    box = conn.lookup("make")()
    assert not callable(box) and type(box).__name__ == "Box" and box.value == 3
    box.value = 5
    assert box.value == 5
    inner = conn.lookup("fn")()
    assert isinstance(inner, RemoteCallable) and inner(torch.ones(2)).tolist() == [2.0, 2.0]
    with pytest.raises(TypeError):
        iter(box)
    with pytest.raises((TypeError, RuntimeError)):  # as for the learner's object itself
        torch.as_tensor(box)


def test_undefined_and_none_answers_are_told_apart():
    conn, _ = connect(a=None)
    assert conn.lookup("a") is None
    assert conn.lookup("never_defined") is MISSING


def test_objects_the_learner_cannot_send_fail_as_the_learner_s_error():
    conn, _ = connect(f=lambda: torch.zeros(3).to_sparse())
    with pytest.raises(AnswerError, match="cannot be sent"):
        conn.lookup("f")()


def test_the_delegation_watch_sees_calls_subclasses_and_aliases():
    from optlib.linalg import optimal_heavy_ball_params

    class Sub(torch.optim.SGD):
        pass

    def via_functional(L, mu):
        return optimal_heavy_ball_params(L, mu)

    server = serve.Server(
        {"Sub": Sub, "Alias": torch.optim.SGD, "f": via_functional, "own": lambda: 1},
        sandboxed=False,
    )
    conn = Connection(LoopbackTransport(server))
    conn.init({"c": ["torch.optim.SGD", "optlib.linalg.optimal_heavy_ball_params"]})
    conn.check = "c"
    conn.lookup("Sub")
    assert conn.delegated == {"torch.optim.SGD"}
    conn.delegated = set()
    conn.lookup("Alias")
    assert conn.delegated == {"torch.optim.SGD"}
    conn.delegated = set()
    conn.lookup("f")(4.0, 1.0)
    assert conn.delegated == {"optlib.linalg.optimal_heavy_ball_params"}
    conn.delegated = set()
    conn.lookup("own")()
    assert conn.delegated == set()


# ------------------------------------------------------------------ what comes back, untrusted

REPLY_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["$", "v", "id", "type", "callable", "dtype", "shape", "data", "rg"]),
            inner | st.sampled_from(["tuple", "dict", "tensor", "mirror", "handle", "ndarray",
                                     "npscalar", "size", "callback", "set", "bytes", "complex"]),
            max_size=4,
        )
    ),
    max_leaves=10,
)  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True)
@given(value=REPLY_VALUES)
def test_any_reply_is_data_or_a_sandbox_failure(value):
    """Whatever the learner's side sends, decoding yields plain values and stand-ins, or raises
    SandboxFailure; it never executes anything or raises anything else."""

    class Forger:
        def request(self, msg, handler, timeout):
            return {"op": "return", "value": value, "seq": msg["seq"]}

    conn = Connection(Forger())
    try:
        got = conn.request({"op": "call"})
    except SandboxFailure:
        return
    json.dumps(got, default=lambda o: repr(o))  # plain enough to print


@pytest.mark.parametrize(
    "reply",
    [
        {"op": "raise", "error": "not a dict"},
        {"op": "return", "sync": "x"},
        {"op": "return", "delegated": "x"},
        {"op": "return", "value": {"$": "tensor", "v": {"dtype": "float64", "shape": [2],
                                                         "data": "AAAA"}}},
        {"op": "return", "value": {"$": "mirror", "id": "m999"}},
        {"op": "return", "value": {"$": "npscalar", "dtype": "O", "v": 1}},
        {"op": "return", "value": {"$": "ndarray", "v": {"dtype": "|O", "shape": [1], "data": ""}}},
        {"op": "return", "value": json.loads("[" * 60 + "1" + "]" * 60)},
    ],
)  # fmt: skip
def test_malformed_replies_are_sandbox_failures(reply):
    class Forger:
        def request(self, msg, handler, timeout):
            return {**reply, "seq": msg["seq"]}

    with pytest.raises(SandboxFailure):
        Connection(Forger()).request({"op": "call"})


def test_a_reply_written_by_the_learner_s_code_is_told_apart():
    """The learner's code can write to the channel; a reply must carry the request's number."""

    class Forger:
        def request(self, msg, handler, timeout):
            return {"op": "return", "value": 1, "seq": msg["seq"] - 1}

    with pytest.raises(SandboxFailure, match="does not answer"):
        Connection(Forger()).request({"op": "call"})
    conn, _ = connect(f=lambda: 1)
    assert conn.lookup("f")() == 1 and conn.lookup("f")() == 1  # and real ones are accepted
