"""Contexts and start methods behave as multiprocessing's do (proctor._context, _start._methods)."""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import subprocess
import sys
import textwrap
import weakref

import pytest

import proctor
from proctor import context as proctor_context
from proctor.process import BaseProcess

METHODS = ("fork", "spawn", "forkserver")


def test_get_context_returns_the_same_context_of_the_method_in_use():
    method = proctor.get_start_method()  # fixes the default, as get_context() does
    ctx = proctor.get_context()
    assert ctx is proctor.get_context()
    assert ctx is proctor.get_context(method)
    assert ctx.get_start_method() == method
    assert type(ctx).__name__.lower().startswith(method)
    assert ctx.Process.__name__.lower().startswith(method)


@pytest.mark.parametrize("method", METHODS)
def test_a_concrete_context_is_its_own_context_and_keeps_its_method(method):
    ctx = proctor.get_context(method)
    assert ctx.get_context() is ctx
    assert ctx.get_start_method() == method
    assert ctx.get_context("spawn") is proctor.get_context("spawn")
    for new in ("spawn", None):
        with pytest.raises(ValueError, match="fixed"):
            ctx.set_start_method(new)
    assert proctor.get_start_method() != "" and ctx.get_start_method() == method


def test_start_methods_are_listed_as_multiprocessing_lists_them():
    assert proctor.get_all_start_methods() == multiprocessing.get_all_start_methods()
    assert (
        proctor.get_all_start_methods()[0]
        == proctor_context.BaseContext().get_all_start_methods()[0]
    )


def test_set_start_method_on_the_module_changes_get_context():
    original = proctor.get_start_method()
    try:
        for method in METHODS:
            proctor.set_start_method(method, force=True)
            assert proctor.get_context() is proctor.get_context(method)
            assert proctor.get_start_method() == method
        proctor.set_start_method(None, force=True)
        assert proctor.get_start_method(allow_none=True) is None
    finally:
        proctor.set_start_method(original, force=True)


def test_contexts_carry_the_exception_classes():
    ctx = proctor.get_context("spawn")
    assert ctx.TimeoutError is proctor.TimeoutError
    assert ctx.ProcessError is proctor.ProcessError
    assert ctx.BufferTooShort is proctor.BufferTooShort
    assert ctx.AuthenticationError is proctor.AuthenticationError
    assert issubclass(ctx.TimeoutError, multiprocessing.TimeoutError)


def test_unknown_or_mistyped_start_methods_are_refused():
    with pytest.raises(ValueError, match="valid start methods here are"):
        proctor.get_context("thread")
    with pytest.raises(TypeError, match="a start method is a string"):
        proctor.get_context(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown start method"):
        proctor.set_start_method("threads", force=True)


def test_set_forkserver_preload_wants_a_list_of_strings():
    with pytest.raises(TypeError, match="module_names must be a list of strings"):
        proctor.get_context("forkserver").set_forkserver_preload([1, 2, 3])
    with pytest.raises(TypeError, match="module_names must be a list of strings"):
        proctor.set_forkserver_preload("numpy")


def test_set_executable_takes_str_bytes_and_paths_and_refuses_the_rest():
    from proctor._start import _popen_spawn

    original = _popen_spawn.executable
    try:
        proctor.set_executable(os.fsencode(sys.executable))
        assert _popen_spawn.executable == sys.executable
        proctor.set_executable(pathlib.Path(sys.executable))
        assert _popen_spawn.executable == sys.executable
        with pytest.raises(TypeError, match="executable must be a path"):
            proctor.set_executable(3)  # type: ignore[arg-type]
    finally:
        proctor.set_executable(original)


def test_the_main_process_object_has_the_process_api():
    me = proctor.current_process()
    assert isinstance(me, BaseProcess)
    assert not isinstance(me, proctor.Process)
    assert me.is_alive()
    assert me.exitcode is None
    assert me.pid == os.getpid()
    assert me.name == "MainProcess"
    assert repr(me) == "<_MainProcess name='MainProcess' parent=None started>"
    assert proctor.parent_process() is None
    assert isinstance(proctor.Process(target=int), BaseProcess)


class _Payload:
    pass


@pytest.mark.parametrize("method", METHODS)
def test_start_lets_go_of_target_and_arguments(method):
    # As multiprocessing does: once the child has its copy, the parent's can be
    # collected while the Process object lives on.
    payload = _Payload()
    alive = weakref.ref(payload)
    p = proctor.get_context(method).Process(target=id, args=(payload,))
    del payload
    p.start()
    assert alive() is None
    p.join(30)
    assert p.exitcode == 0
    p.close()


def test_context_factories_declare_what_they_return():
    # mypy holds the public API to strict typing (pyproject.toml); this checks the
    # promise a reader sees: no factory of a context returns Any.
    untyped = []
    for name, member in vars(proctor_context.BaseContext).items():
        function = getattr(member, "__func__", member)
        if name.startswith("_") or isinstance(function, type) or not callable(function):
            continue  # classes (ctx.Process, ctx.TimeoutError) are their own type
        returns = getattr(function, "__annotations__", {}).get("return")
        if returns is None or returns == "Any":
            untyped.append(name)
    assert not untyped, f"context methods without a precise return type: {untyped}"


def test_a_context_imports_multiprocessing_only_when_its_exceptions_are_read(start_method):
    # proctor's exceptions subclass multiprocessing's, so reading one imports
    # multiprocessing (~45 modules, memory every fork copies); a program that only
    # starts processes never does. A fresh interpreter: this one has loaded it.
    code = textwrap.dedent(
        """
        import sys, proctor
        ctx = proctor.get_context(sys.argv[1])
        p = ctx.Process()
        p.start()
        p.join(60)
        assert p.exitcode == 0
        print("multiprocessing" in sys.modules)
        error = ctx.TimeoutError
        import multiprocessing
        print("multiprocessing" in sys.modules, issubclass(error, multiprocessing.TimeoutError))
        print(error is proctor.TimeoutError, type(ctx).ProcessError is proctor.ProcessError)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, start_method],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True", "True", "True"]
