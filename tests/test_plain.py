"""Start payloads carried by marshal (proctor._start._plain): exact, or not used at all."""

from __future__ import annotations

import math
import os

import pytest

import proctor
from proctor._start import _plain


def _spawn_process(**kwargs):
    process = proctor.get_context("spawn").Process(**kwargs)
    process._started_with = "spawn"  # what start() sets before pickling
    return process


def _round_trip(process):
    data = _plain.dump_process(process)
    assert data is not None, "expected a plain payload"
    assert data[:1] == _plain.MARK
    return _plain.load_process(data)


def module_function(x, y=2):
    return x + y


class Text(str):
    pass


class Number(int):
    pass


PLAIN_ARGUMENTS = [
    (),
    (1, -(2**70), 0.5, -0.0, 1 + 2j, True, False, None),
    ("text", "\udc80 lone surrogate", b"bytes"),
    ([1, [2, 3]], {"a": (1, 2), 3: {4, 5}}, frozenset({1})),
]


@pytest.mark.parametrize("args", PLAIN_ARGUMENTS)
def test_plain_arguments_arrive_equal_and_of_the_same_types(args):
    process = _spawn_process(target=module_function, args=args, kwargs={"k": [1.5]})
    rebuilt = _round_trip(process)
    assert type(rebuilt) is type(process)
    assert rebuilt._target is module_function  # by name, as pickle would
    assert rebuilt._args == args
    assert [type(a) for a in rebuilt._args] == [type(a) for a in args]
    assert rebuilt._kwargs == {"k": [1.5]}
    for name, value in vars(process).items():
        if name not in ("_popen", "_outcome_cache"):
            assert getattr(rebuilt, name) == value
    assert rebuilt._popen is None


def test_no_target_and_a_builtin_target_travel_plain():
    assert _round_trip(_spawn_process())._target is None
    assert _round_trip(_spawn_process(target=os.getpid))._target is os.getpid
    assert _round_trip(_spawn_process(target=print))._target is print


def test_nan_arrives_as_nan():
    (value,) = _round_trip(_spawn_process(target=print, args=(math.nan,)))._args
    assert math.isnan(value)


@pytest.mark.parametrize(
    "args",
    [
        (Text("a subclass of str"),),
        (Number(3),),
        (bytearray(b"marshal would make this bytes"),),
        (memoryview(b"a buffer"),),
        (object(),),
        (lambda: None,),
        (Text,),  # a class of this module: pickle's by reference, not plain data
        (list(range(_plain.MAX_ITEMS + 1)),),
    ],
    ids=lambda args: type(args[0]).__name__,
)
def test_anything_but_plain_data_goes_through_pickle(args):
    assert _plain.dump_process(_spawn_process(target=print, args=args)) is None


def test_a_list_reached_twice_goes_through_pickle_which_keeps_the_sharing():
    shared = [1]
    assert _plain.dump_process(_spawn_process(target=print, args=(shared, shared))) is None
    looped: list = []
    looped.append(looped)
    assert _plain.dump_process(_spawn_process(target=print, args=(looped,))) is None


def test_closures_lambdas_and_subclasses_go_through_pickle():
    captured = 1

    def closure():
        return captured

    assert _plain.dump_process(_spawn_process(target=closure)) is None
    assert _plain.dump_process(_spawn_process(target=lambda: None)) is None

    class Mine(proctor.Process):
        pass

    assert _plain.dump_process(Mine()) is None
    process = _spawn_process()
    process.extra = object()  # an attribute of the user's that plain data cannot carry
    assert _plain.dump_process(process) is None


def test_registered_reducers_keep_every_payload_on_pickle(monkeypatch):
    from proctor._core import _reduction

    monkeypatch.setitem(_reduction.registered_reducers, Text, lambda obj: (str, (str(obj),)))
    assert _plain.dump_process(_spawn_process(target=print, args=(1,))) is None


def test_fallback_payloads_still_arrive_exact():
    # What plain data refuses reaches a spawned child through pickle, as before.
    shared = [1]
    args = (bytearray(b"x"), Text("t"), shared, shared)
    p = proctor.get_context("spawn").Process(target=_describe, args=args)
    p.start()
    p.join(60)
    try:
        assert p.exitcode == 0
        assert p.result == (["bytearray", "Text", "list", "list"], True)
    finally:
        p.close()


def _describe(*args):
    return [type(a).__name__ for a in args], args[2] is args[3]
