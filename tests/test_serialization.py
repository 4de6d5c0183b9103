"""What crosses a process boundary, and how: main references, by-value functions, and
errors that name what cannot be pickled."""

from __future__ import annotations

import functools
import io
import os
import pickle
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import pytest

import proctor
from proctor import PicklingError, UnpicklableError
from proctor._core import _rebuilding, _serialization
from proctor._core._reduction import DescriptorsNeedACarrier

SCRIPTS = Path(__file__).parent / "scripts"


def _run_script(name: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SCRIPTS), *sys.path]))
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# -- objects of the main script ----------------------------------------------------------

MAIN_IDENTITY_CHECKS = [
    "result",
    "cycles and globals",
    "exception",
    "arguments",
    "queue child->parent",
    "pipe child->parent",
    "queue parent->child",
    "sibling",
    "grandchild->child",
    "grandchild->child->parent",
    "classes untouched",
]


def test_objects_of_the_main_script_keep_their_identity_in_every_direction(start_method):
    # A class, a dataclass, an enum, an exception and a function defined in
    # __main__, through results, p.exception, arguments, Queue and Pipe, between
    # parent, children, siblings of another start method and grandchildren:
    # isinstance, except, enum identity and function identity hold everywhere.
    out = _run_script("main_identity.py", start_method)
    lines = out.splitlines()
    assert len(lines) == len(MAIN_IDENTITY_CHECKS), out
    for expected, line in zip(MAIN_IDENTITY_CHECKS, lines, strict=True):
        verdict = line.split(" [")[0]
        assert expected in verdict and verdict.endswith(" True") and "False" not in line, line


def test_data_that_merely_contains_the_bytes_main_is_pickled_as_plain_pickle():
    # "__main__" in a pickle only triggers the exact pass, whose output for
    # objects that are not in the main script is plain pickle's.
    for obj in ["__main__", b"__main__", {"__main__": Fraction(1, 3)}, [os.path.join, "__main__"]]:
        assert _serialization.dumps(obj) == pickle.dumps(obj, _serialization.PROTOCOL)


def test_a_main_reference_is_this_process_own_object_and_elsewhere_rebuilt_once(monkeypatch):
    main_class = type("ProctorTestPoint", (Local,), {"__module__": "__main__"})
    monkeypatch.setattr(sys.modules["__main__"], "ProctorTestPoint", main_class, raising=False)
    data = _serialization.dumps(main_class(3))
    assert type(pickle.loads(data)) is main_class
    # A process with another main script rebuilds the class from the value, once.
    monkeypatch.setattr(_rebuilding, "_TOKEN", b"elsewhere")
    monkeypatch.setattr(_rebuilding, "_rebuilt", {})
    monkeypatch.setattr(_rebuilding, "_origins", {})
    first, second = pickle.loads(data), pickle.loads(data)
    assert type(first) is not main_class and type(first) is type(second)
    assert isinstance(first, Local) and first.value == 3


class Local:
    def __init__(self, value):
        self.value = value


def test_a_class_defined_again_under_the_same_name_is_rebuilt_again(monkeypatch):
    # A notebook cell run twice: the second class is another class, even to a
    # process that rebuilt the first one.
    main = sys.modules["__main__"]
    first = type("ProctorTestCell", (Local,), {"__module__": "__main__", "version": 1})
    monkeypatch.setattr(main, "ProctorTestCell", first, raising=False)
    data_first = _serialization.dumps(first(1))
    second = type("ProctorTestCell", (Local,), {"__module__": "__main__", "version": 2})
    monkeypatch.setattr(main, "ProctorTestCell", second)
    data_second = _serialization.dumps(second(2))
    monkeypatch.setattr(_rebuilding, "_TOKEN", b"elsewhere")
    monkeypatch.setattr(_rebuilding, "_rebuilt", {})
    monkeypatch.setattr(_rebuilding, "_origins", {})
    got_first, got_second = pickle.loads(data_first), pickle.loads(data_second)
    assert (type(got_first).version, type(got_second).version) == (1, 2)
    assert type(pickle.loads(data_first)) is type(got_first)


def test_a_values_dict_of_its_own_makes_the_by_value_copy_afresh_and_keeps_it(monkeypatch):
    # What a pool does (its codec passes its own dict): a function of __main__ is
    # pickled with its globals as they are at its first send there, reused by the
    # later sends there, and made again where another dict is passed.
    namespace = {"__name__": "proctor_test_globals", "CONFIG": {"v": 1}}
    exec("def proctor_test_read():\n    return CONFIG['v']", namespace)
    func = namespace["proctor_test_read"]
    func.__module__ = "__main__"
    monkeypatch.setattr(sys.modules["__main__"], "proctor_test_read", func, raising=False)
    first_pool: dict = {}
    first = _serialization.dumps(func, first_pool)
    namespace["CONFIG"]["v"] = 2  # mutated in place
    assert _serialization.dumps(func, first_pool) == first
    mutated = _serialization.dumps(func, {})
    namespace["CONFIG"] = {"v": 3}  # rebound
    rebound = _serialization.dumps(func, {})

    def rebuilt(data):  # in a process of another main script
        monkeypatch.setattr(_rebuilding, "_TOKEN", b"elsewhere")
        monkeypatch.setattr(_rebuilding, "_rebuilt", {})
        monkeypatch.setattr(_rebuilding, "_origins", {})
        return pickle.loads(data)

    assert [rebuilt(data)() for data in (first, mutated, rebound)] == [1, 2, 3]


def _local_instance():
    class Local:  # only cloudpickle can send a class defined in a function
        def __init__(self):
            self.tag = "local"

    return Local()


def test_large_buffers_beside_what_only_cloudpickle_sends_arrive_intact():
    # The exact pass gives up on the local class after taking the first array's
    # buffer out of band; cloudpickle's pass must not find that buffer listed twice.
    np = pytest.importorskip("numpy")
    first, second = np.arange(40_000.0), np.arange(20_000.0) * 2
    q = proctor.Queue()
    q.put([first, _local_instance(), second])
    got = q.get(timeout=10)
    assert (got[0] == first).all() and got[1].tag == "local" and (got[2] == second).all()
    q.close()
    a, b = proctor.Pipe()
    a.send([first, _local_instance(), second])
    got = b.recv(timeout=10)
    assert (got[0] == first).all() and got[1].tag == "local" and (got[2] == second).all()
    a.close()
    b.close()


# -- functions by value ------------------------------------------------------------------


def _make_function():
    scale = 3

    def annotated(a: int, b: float = 1.5, *, key: str = "k") -> float:
        """Multiply, with everything a function can carry."""
        return a * b * scale

    annotated.marker = {"set": "after definition"}
    return annotated


def _uses_a_submodule():
    # Code of a notebook cell that did "import xml.dom.minidom": its globals hold
    # only the package. (This test module must not import xml: the child imports it.)
    import xml.dom.minidom

    namespace = {"__name__": "notebook_cell", "xml": xml}
    exec(
        "def text():\n"
        "    return xml.dom.minidom.parseString('<a>hi</a>').documentElement.tagName\n",
        namespace,
    )
    return namespace["text"]


def _attributes(func):
    return {
        "name": func.__name__,
        "qualname": func.__qualname__,
        "module": func.__module__,
        "doc": func.__doc__,
        "annotations": func.__annotations__,
        "defaults": func.__defaults__,
        "kwdefaults": func.__kwdefaults__,
        "dict": dict(func.__dict__),
        "type_params": getattr(func, "__type_params__", None),
        "result": func(2),
    }


def _attributes_from_queue(q):
    return _attributes(q.get(timeout=60))


def _call(func):
    return func()


def test_functions_sent_by_value_keep_every_attribute(ctx):
    func = _make_function()
    p = ctx.Process(target=_attributes, args=(func,))
    p.start()
    p.join(60)
    assert p.exception is None
    assert p.result == _attributes(func)
    p.close()

    q = ctx.Queue()
    q.put(func)
    p = ctx.Process(target=_attributes_from_queue, args=(q,))
    p.start()
    p.join(60)
    assert p.result == _attributes(func)
    p.close()
    q.close()


def _type_parameter_names(func):
    return [t.__name__ for t in func.__type_params__]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 695 generics")
def test_generic_functions_keep_their_type_parameters(ctx):
    namespace: dict = {}
    exec("def generic[T](x: T) -> T:\n    return x\n", namespace)  # 3.12 syntax
    func = namespace["generic"]
    func.__module__ = __name__
    func.__qualname__ = "_nowhere.<locals>.generic"  # not importable: sent by value
    p = ctx.Process(target=_type_parameter_names, args=(func,))
    p.start()
    p.join(60)
    assert p.result == ["T"]
    p.close()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_submodules_a_function_reaches_through_its_package_are_imported(method):
    # The function's globals hold only "xml"; xml.dom.minidom must be imported too.
    p = proctor.get_context(method).Process(target=_call, args=(_uses_a_submodule(),))
    p.start()
    p.join(60)
    assert p.exception is None and p.result == "a"
    p.close()


# -- what cannot be pickled --------------------------------------------------------------


def _closes_over_a_lock():
    lock = threading.Lock()
    return lambda: lock.locked()


def _assert_names_the_lock(error: BaseException, root: str) -> None:
    assert isinstance(error, PicklingError)
    assert isinstance(error, TypeError) and isinstance(error, pickle.PicklingError)
    assert f"{root} -> closure variable 'lock' -> _thread.lock" in str(error)
    assert error.path[-2:] == ("closure variable 'lock'", "_thread.lock")
    cause = error.__cause__
    assert isinstance(cause, TypeError) and "_thread.lock" in str(cause)


def test_put_of_a_lambda_closing_over_a_lock_names_the_lock():
    q = proctor.Queue()
    with pytest.raises(PicklingError) as info:
        q.put(_closes_over_a_lock())
    _assert_names_the_lock(info.value, "function _closes_over_a_lock.<locals>.<lambda>")
    q.put("still usable")
    assert q.get(timeout=10) == "still usable"
    q.close()


def test_send_of_a_lambda_closing_over_a_lock_names_the_lock():
    a, b = proctor.Pipe()
    with pytest.raises(PicklingError) as info:
        a.send(_closes_over_a_lock())
    _assert_names_the_lock(info.value, "function _closes_over_a_lock.<locals>.<lambda>")
    assert "Nothing was sent" in str(info.value)
    a.close()
    b.close()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_start_with_a_lambda_closing_over_a_lock_names_the_argument_and_the_lock(method):
    p = proctor.get_context(method).Process(target=print, args=(_closes_over_a_lock(),))
    with pytest.raises(UnpicklableError) as info:
        p.start()
    _assert_names_the_lock(info.value, "argument 0")
    assert info.value.path[0] == "argument 0"
    assert p.pid is None


class Holder:
    def __init__(self):
        self.lock = threading.RLock()


def test_the_path_goes_through_containers_and_attributes():
    with pytest.raises(PicklingError) as info:
        _serialization.dumps({"jobs": [1, Holder()]})
    assert info.value.path == (
        "dict",
        "item 'jobs'",
        "item 1",
        "attribute 'lock'",
        "_thread.RLock",
    )
    assert isinstance(info.value.__cause__, TypeError)


def test_a_partial_of_a_lambda_names_the_lambda_part():
    with pytest.raises(PicklingError, match=r"closure variable 'lock' -> _thread\.lock"):
        _serialization.dumps(functools.partial(_closes_over_a_lock(), 1))


# -- OS resources are never copied ---------------------------------------------------------


def _append(f, text):
    f.write(text)
    f.flush()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_an_open_file_argument_is_refused_not_copied(method, tmp_path):
    path = tmp_path / "log.txt"
    with open(path, "a+") as f:
        p = proctor.get_context(method).Process(target=_append, args=(f, "child\n"))
        with pytest.raises(UnpicklableError) as info:
            p.start()
    message = str(info.value)
    assert "argument 0" in message and "TextIOWrapper" in message and str(path) in message
    assert isinstance(info.value.__cause__, TypeError)


def test_an_open_file_argument_is_shared_under_fork(tmp_path):
    # As with multiprocessing: nothing is pickled under fork, the child writes
    # to the very same file.
    path = tmp_path / "log.txt"
    with open(path, "a+") as f:
        p = proctor.get_context("fork").Process(target=_append, args=(f, "child\n"))
        p.start()
        p.join(60)
        p.close()
    assert path.read_text() == "child\n"


@pytest.mark.parametrize("mode", ["r", "a+", "w"])
def test_an_open_file_cannot_be_put_into_a_queue(mode, tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("content")
    q = proctor.Queue()
    with open(path, mode) as f, pytest.raises(PicklingError, match="TextIOWrapper") as info:
        q.put([f])
    assert "open it in the receiver" in str(info.value)
    q.close()


def test_os_resources_are_refused_whichever_pass_meets_them(tmp_path):
    # A lambda forces the by-value passes, which must not copy the file either.
    refused = r"closure variable 'f' -> _io\.TextIOWrapper"
    with open(tmp_path / "f", "w") as f, pytest.raises(PicklingError, match=refused):
        _serialization.dumps(lambda: f.write("x"))


def _os_resources(tmp_path):
    import mmap
    import socket

    def generator():
        yield 1

    binary = open(tmp_path / "binary", "wb+")  # noqa: SIM115 - closed by the caller
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    return [
        binary,
        sock,
        mmap.mmap(-1, 4096),
        threading.Lock(),
        threading.RLock(),
        threading.Condition(),
        generator(),
    ], [binary, sock]


def test_no_os_resource_is_turned_into_a_copy(tmp_path):
    # Audit: each is refused directly, inside a container, and inside a lambda's
    # closure (which takes the by-value passes, cloudpickle's included).
    resources, to_close = _os_resources(tmp_path)
    try:
        for resource in resources:
            for wrapped in (resource, [resource], lambda resource=resource: resource):
                # Sockets and connections name the carriers they could go by.
                with pytest.raises((PicklingError, DescriptorsNeedACarrier)):
                    _serialization.dumps(wrapped)
    finally:
        for item in to_close:
            item.close()
        resources[2].close()


def test_a_memoryview_is_sent_only_when_a_copy_is_the_same_thing():
    data = b"immutable bytes"
    assert bytes(pickle.loads(_serialization.dumps([memoryview(data)]))[0]) == data
    with pytest.raises(PicklingError, match="bytearray"):
        _serialization.dumps([memoryview(bytearray(b"shared"))])
    with pytest.raises(PicklingError, match="memoryview"):
        _serialization.dumps(io.BytesIO(b"x").getbuffer())


class WithALock:
    lock = threading.Lock()  # the class cannot be pickled by value


def test_a_main_class_that_cannot_go_by_value_still_reaches_fork_relatives(monkeypatch):
    # Plain pickle sends it by name, which a fork child resolves (stdlib fork
    # behaviour); only a process of another main script cannot take it, and says why.
    monkeypatch.setattr(WithALock, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "WithALock", WithALock, raising=False)
    data = _serialization.dumps(WithALock())
    assert type(pickle.loads(data)) is WithALock
    monkeypatch.setattr(_rebuilding, "_TOKEN", b"elsewhere")
    with pytest.raises(pickle.UnpicklingError, match=r"'WithALock'.*_thread\.lock"):
        pickle.loads(data)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_main_class_that_cannot_go_by_value_fails_start_naming_it(method, monkeypatch):
    monkeypatch.setattr(WithALock, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "WithALock", WithALock, raising=False)
    p = proctor.get_context(method).Process(target=print, args=(WithALock(),))
    with pytest.raises(UnpicklableError) as info:
        p.start()
    assert info.value.path == (
        "argument 0",
        "its class",
        "class attribute 'lock'",
        "_thread.lock",
    )


def test_dumps_oob_takes_only_the_large_buffers_out_of_band_in_their_order():
    small, large = bytearray(b"s" * 100), bytearray(b"L" * 70_000)
    other = bytearray(b"M" * 80_000)
    mixed = [pickle.PickleBuffer(small), pickle.PickleBuffer(large), pickle.PickleBuffer(other)]
    data, buffers = _serialization.dumps_oob(mixed, 65536)
    assert [bytes(b.raw()) for b in buffers] == [bytes(large), bytes(other)]
    assert [bytes(x) for x in pickle.loads(data, buffers=buffers)] == [small, large, other]
    # All large: taken in the first pass; none: nothing out of band.
    data, buffers = _serialization.dumps_oob([pickle.PickleBuffer(other)] * 2, 65536)
    assert len(buffers) == 2
    assert [bytes(x) for x in pickle.loads(data, buffers=buffers)] == [other, other]
    data, buffers = _serialization.dumps_oob(((1, "a"), {}), 65536)
    assert buffers == [] and pickle.loads(data) == ((1, "a"), {})
