"""A child's outcome: what its target returned or raised, as sent up the channel.

::

    child (_bootstrap)                          parent (_popen)
    ──────────────────                          ───────────────
    value_message(value)   ─▶ ("value", pickle)           ─▶ Outcome.value
      (unpicklable)        ─▶ ("unsendable", why)         ─▶ Outcome.value_error
    error_message(exc)     ─▶ ("error", pickle or None,   ─▶ Outcome.exception, its
                                type name, str, traceback      __cause__ the traceback
                                [, pickle of done])         ─▶ Outcome.done

``done`` is a pool's (a chunk of ``map`` items that failed at one item): the values
of the items before it, which the caller still gets. A ``Process`` sends none.

A target that returned None sends an empty message (``_wire.EMPTY_MESSAGE``,
``_bootstrap._run_and_report``), nothing to pickle or unpickle: the parent reads it as
``Outcome()``, the same thing. A channel that ends with no message at all, from a child
that exited 0, is an outcome lost (``Outcome.lost``): the child closed its channel.

Both directions live here, so the format has one definition.
"""

from __future__ import annotations

from .._core import _serialization

# _core._errors (and with it multiprocessing, for the base classes) is imported
# where an outcome holds an error: a spawned child that succeeds never loads it.

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at import; children start faster without it
    from typing import Any

__all__ = ("NONE_VALUE", "Outcome", "encode", "error_message", "value_message")


def value_message(value: Any) -> tuple[Any, ...]:
    """The outcome of a target that returned ``value``."""
    if value is None:
        return NONE_VALUE
    try:
        return ("value", _serialization.dumps(value))
    except Exception as exc:
        return unsendable_message(value, exc)


def unsendable_message(value: Any, exc: BaseException) -> tuple[Any, ...]:
    """The outcome of a target whose return ``value`` failed to pickle with ``exc``."""
    return ("unsendable", f"{type(value).__name__} could not be pickled ({exc})")


def error_message(exc: BaseException, done: list[Any] | None = None) -> tuple[Any, ...]:
    """The outcome of a target (or a child start) that raised ``exc``; ``done``: the
    values computed before it (a pool chunk's items before the one that raised),
    left out if they cannot be pickled."""
    import traceback

    # BaseException around the exception's own code (its __reduce__, __str__): one
    # that raises SystemExit there must still be reported, not end the reporter (a
    # pool worker would die, and its task fail as lost).
    try:
        tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException as error:
        tb_text = f"<the traceback could not be formatted: {type(error).__name__}>"
    try:
        exc_bytes: bytes | None = _serialization.dumps(exc)
    except BaseException:
        exc_bytes = None
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        text = str(exc)
    except BaseException:
        text = "<str() failed>"
    if done:
        try:
            return ("error", exc_bytes, type_name, text, tb_text, _serialization.dumps(done))
        except BaseException:  # as for the exception: the error goes, without them
            pass
    return ("error", exc_bytes, type_name, text, tb_text)


# Most targets return None: its outcome message is pickled once, not per child.
NONE_VALUE = ("value", _serialization.dumps(None))
_NONE_VALUE_BYTES = _serialization.dumps(NONE_VALUE)


def encode(message: tuple[Any, ...]) -> bytes:
    """The bytes of an outcome message."""
    if message is NONE_VALUE:
        return _NONE_VALUE_BYTES
    return _serialization.dumps(message)


class Outcome:
    """What the child reported about its target: a value, an exception, or nothing.

    Attributes:
        value: the target's return value.
        exception: the exception the target raised, with ``__cause__`` carrying
            the child's traceback.
        value_error: why the return value could not be sent, if it could not.
        rebuild_failed: the value came, but could not be unpickled here (rather
            than pickled in the sender); ``value_error`` says why.
        lost: why no outcome came from a child that exited 0, if none came.
        done: with ``exception``, the values computed before it (a pool chunk's
            items before the one that raised), or None.
    """

    def __init__(self) -> None:
        self.value: Any = None
        self.exception: BaseException | None = None
        self.value_error: str | None = None
        self.rebuild_failed = False
        self.lost: str | None = None
        self.done: list[Any] | None = None

    def load_value(
        self,
        data: Any,
        buffers: list[Any] | None = None,
        caught: tuple[type[BaseException], ...] = (Exception, SystemExit),
    ) -> None:
        """Unpickle the value from ``data``; if that raises one of ``caught``, say why.

        SystemExit too by default: unpickling runs the sender's classes' code, which
        may raise it; that must fail this outcome, not end the thread reading it. Not
        KeyboardInterrupt by default: a Ctrl-C during a join() must still interrupt
        it (a pool's dispatcher thread, which no Ctrl-C reaches, catches it too).
        """
        try:
            self.value = _serialization.loads(data, buffers=buffers)
        except caught as exc:  # e.g. a class that does not import here
            self.value_not_rebuilt(exc)

    def value_not_rebuilt(self, exc: BaseException) -> None:
        """Record that the value came but unpickling it here raised ``exc``."""
        self.value_error = f"the return value could not be unpickled: {exc!r}"
        self.rebuild_failed = True

    @classmethod
    def from_message(
        cls,
        data: bytes | bytearray | memoryview,
        buffers: list[Any] | None = None,
        caught: tuple[type[BaseException], ...] = (Exception, SystemExit),
    ) -> Outcome:
        """The outcome a message reports; ``buffers``: its value's out-of-band buffers.

        What unpickling its value or exception raises fails the outcome if it is one
        of ``caught`` (see ``load_value``; a pool's dispatcher passes BaseException).
        """
        outcome = cls()
        try:
            message = _serialization.loads(data)
        # SystemExit too: unpickling runs the sender's classes' code, which may raise
        # it; that must fail this outcome, not end the thread reading it. (Not
        # KeyboardInterrupt: a Ctrl-C during a join() must still interrupt it.)
        except caught as exc:  # e.g. a class that no longer imports here
            from .._core._errors import RemoteError

            outcome.exception = RemoteError(
                "UnpicklingError", f"the child's outcome could not be unpickled: {exc!r}"
            )
            return outcome
        kind = message[0]
        if kind == "value":
            outcome.load_value(message[1], buffers, caught)
        elif kind == "unsendable":
            outcome.value_error = message[1]
        elif kind == "error":
            from .._core._errors import RemoteError, RemoteTraceback

            _, exc_bytes, type_name, text, tb_text, *done = message
            if done:
                try:
                    outcome.done = _serialization.loads(done[0])
                except caught:  # the error still comes, without the values
                    outcome.done = None
            exception: BaseException | None = None
            if exc_bytes is not None:
                try:
                    exception = _serialization.loads(exc_bytes)
                except caught:  # its class's code raised: the text stands in for it
                    exception = None
            if not isinstance(exception, BaseException):
                exception = RemoteError(type_name, text, tb_text)
            exception.__cause__ = RemoteTraceback(tb_text)
            outcome.exception = exception
        return outcome
