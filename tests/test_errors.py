"""proctor's errors are caught by the except clauses written for multiprocessing and pickle."""

from __future__ import annotations

import multiprocessing
import pickle
import subprocess
import sys
import threading

import pytest

import proctor
from proctor.connection import Client, Listener

STANDS_IN_FOR = [
    (proctor.ProcessError, multiprocessing.ProcessError),
    (proctor.AuthenticationError, multiprocessing.AuthenticationError),
    (proctor.BufferTooShort, multiprocessing.BufferTooShort),
    (proctor.TimeoutError, multiprocessing.TimeoutError),
    (proctor.TimeoutError, TimeoutError),
    (proctor.StartError, multiprocessing.ProcessError),
    (proctor.ProtocolError, OSError),
    (proctor.PicklingError, pickle.PicklingError),
    (proctor.PicklingError, TypeError),
    (proctor.UnpicklableError, pickle.PicklingError),
    (proctor.UnpicklableError, TypeError),
    (proctor.UnpicklableError, proctor.StartError),
    (proctor.BrokenBarrierError, threading.BrokenBarrierError),
]


@pytest.mark.parametrize(("error", "stdlib"), STANDS_IN_FOR)
def test_each_error_subclasses_the_error_it_stands_in_for(error, stdlib):
    assert issubclass(error, stdlib)
    with pytest.raises(stdlib):
        raise error("raised by proctor")


def test_a_timeout_is_caught_by_except_multiprocessing_timeout_error():
    a, b = proctor.Pipe()
    try:
        b.recv(timeout=0)
    except multiprocessing.TimeoutError as exc:
        caught = exc
    finally:
        a.close()
        b.close()
    assert isinstance(caught, proctor.TimeoutError)


def test_a_short_buffer_is_caught_by_except_multiprocessing_buffer_too_short():
    a, b = proctor.Pipe()
    a.send_bytes(b"longer than four")
    try:
        b.recv_bytes_into(bytearray(4), timeout=10)
    except multiprocessing.BufferTooShort as exc:
        assert exc.args[0] == b"longer than four"
    else:
        pytest.fail("no BufferTooShort")
    finally:
        a.close()
        b.close()


def _serve(listener, errors):
    try:
        listener.accept(timeout=30).close()
    except Exception as exc:
        errors.append(exc)


def test_a_wrong_authkey_is_caught_by_except_multiprocessing_authentication_error():
    with Listener(authkey=b"right") as listener:
        errors: list[BaseException] = []
        server = threading.Thread(target=_serve, args=(listener, errors))
        server.start()
        try:
            with pytest.raises(multiprocessing.AuthenticationError):
                Client(listener.address, authkey=b"wrong", timeout=30)
        finally:
            server.join(30)
    assert isinstance(errors[0], multiprocessing.AuthenticationError)


def test_the_errors_import_only_the_multiprocessing_modules_holding_their_bases():
    # "import proctor" loads no multiprocessing module at all: the errors load on
    # first use (a spawned child that raises none never imports them). Their base
    # classes live in multiprocessing.context; nothing more of the stdlib package
    # (no util with its atexit hook, no connection, no queues) may come with them.
    code = (
        "import sys, proctor; "
        "print(sorted(m for m in sys.modules if m.startswith('multiprocessing'))); "
        "proctor.ProcessError; "
        "print(sorted(m for m in sys.modules if m.startswith('multiprocessing')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.split("\n")[:2] == [
        "[]",
        str(
            [
                "multiprocessing",
                "multiprocessing.context",
                "multiprocessing.process",
                "multiprocessing.reduction",
            ]
        ),
    ]


_RAISED_BEFORE_THE_ERRORS_LOADED = """
import sys
from proctor._connections._pipe import Pipe
a, b = Pipe()
print("proctor._core._errors" in sys.modules, end=" ")
try:
    b.recv(timeout=0)
except Exception as exc:
    caught = exc
import multiprocessing
print(isinstance(caught, multiprocessing.TimeoutError), b.poll(0))
"""


def test_a_connection_raises_the_real_error_types_though_it_loads_them_only_then():
    # The connection modules reach the errors through _core._lazy_errors, so a fork
    # server loading them goes without multiprocessing and threading (issue 17).
    done = subprocess.run(
        [sys.executable, "-c", _RAISED_BEFORE_THE_ERRORS_LOADED],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, "False True False\n"), done.stderr


def test_lazy_errors_leaves_the_error_types_out_of_except_until_they_are_loaded(monkeypatch):
    from proctor._core import _lazy_errors

    assert _lazy_errors.ProtocolError is proctor.ProtocolError
    assert _lazy_errors.if_loaded(EOFError, "ProtocolError") == (EOFError, proctor.ProtocolError)
    # No instance of them can exist before their module is imported:
    monkeypatch.delitem(sys.modules, "proctor._core._errors")
    assert _lazy_errors.if_loaded(EOFError, "ProtocolError") == (EOFError,)
    assert _lazy_errors.if_loaded("ProcessTimeoutError") == ()
