"""Per-interpreter bookkeeping that several modules share.

Holds the pids of proctor's own long-lived helper processes (the fork server, the
resource reaper) so that leak checks and ``active_children()`` can tell them apart
from user children; and the name of this process (``MainProcess``, ``Process-1``...),
which lock reprs and forwarded log records show. Names belong to the process layer
(``_start``), above the layers that show them: it tells this module how to find the
name (:func:`set_process_name`), so nothing imports upwards.
"""

from __future__ import annotations

import _thread
import os

from . import _afterfork

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class _Helpers:
    """This process's helpers. A forked child has none: they belong to its parent."""

    __slots__ = ("lock", "pids", "sources")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.pids: set[int] = set()
        # Callables that register helpers whose pids arrive asynchronously (the fork
        # server announces its next spare after it has answered a start): helper_pids()
        # calls them first, so it never misses a helper that exists already.
        self.sources: list[Callable[[], None]] = []


_helpers = _afterfork.PerProcess(_Helpers)

#: Identifies this process's main script in pickles of main-script objects
#: (``_pickler``). Drawn when proctor is imported, so that fork children -- which
#: share the script -- inherit it, while spawn and forkserver children draw their own.
MAIN_SCRIPT_TOKEN = os.urandom(8)


def _main_process_name() -> str:
    return "MainProcess"


_process_name: Callable[[], str] = _main_process_name


def set_process_name(source: Callable[[], str]) -> None:
    """Make :func:`process_name` ask ``source`` (the process layer calls this)."""
    global _process_name
    _process_name = source


def process_name() -> str:
    """The name of this process, as ``current_process().name`` gives it."""
    return _process_name()


def register_helper(pid: int) -> None:
    """Record ``pid`` as one of proctor's own helper processes."""
    helpers = _helpers.get()
    with helpers.lock:
        helpers.pids.add(pid)


def unregister_helper(pid: int) -> None:
    """Forget a helper that has exited."""
    helpers = _helpers.get()
    with helpers.lock:
        helpers.pids.discard(pid)


def add_helper_source(source: Callable[[], None]) -> None:
    """Make :func:`helper_pids` call ``source`` first (it registers pending helpers)."""
    helpers = _helpers.get()
    with helpers.lock:
        if source not in helpers.sources:
            helpers.sources.append(source)


def remove_helper_source(source: Callable[[], None]) -> None:
    helpers = _helpers.get()
    with helpers.lock:
        if source in helpers.sources:
            helpers.sources.remove(source)


def helper_pids() -> frozenset[int]:
    """The pids of proctor's live helper processes started by this process."""
    helpers = _helpers.get()
    with helpers.lock:
        sources = tuple(helpers.sources)
    for source in sources:
        source()
    with helpers.lock:
        return frozenset(helpers.pids)


# The resource reaper a spawn or forkserver child was told to use, kept here until the
# reaper client is first imported (_reaper._client reads it then): a child that never
# uses a named object does not load the client (and secrets, hmac) at all.
inherited_reaper_address: str | None = None


#: How many log records this process has sent to its parent on its log channel, each
#: whole (``_logging._forwarding`` counts; it starts at 0 with each new channel). A pool
#: worker puts it in every result, so that the parent delivers the result only once its
#: listener has handled that many of the worker's records. Here rather than in the
#: forwarding module, which a worker that never logs does not import.
records_forwarded = 0


# The context classes (proctor._context.BaseContext): they live in the top layer, which
# registers them here when it is imported -- a proctor context cannot exist before.
_context_types: tuple[type, ...] = ()


def register_context_type(cls: type) -> None:
    """Make :func:`check_ctx` accept instances of ``cls`` (the top layer calls this)."""
    global _context_types
    _context_types = (*_context_types, cls)


def check_ctx(ctx: object, what: str) -> None:
    """Accept the ``ctx=`` keyword of ``multiprocessing``'s module-level classes.

    The stdlib's queues and primitives take the context that made them; code that
    calls them directly passes ``ctx=multiprocessing.get_context()``, which becomes
    ``ctx=proctor.get_context()`` once ported. proctor's objects work under every
    start method, so any proctor context (or ``None``) will do and none is kept.

    Raises:
        TypeError: ``ctx`` is neither ``None`` nor a proctor context; a
            ``multiprocessing`` context is named as such (a half-ported program,
            whose stdlib processes could not use a proctor object).
    """
    if ctx is None or isinstance(ctx, _context_types):
        return
    cls = type(ctx)
    if cls.__module__.partition(".")[0] == "multiprocessing":
        raise TypeError(
            f"{what}(ctx=...) got multiprocessing's {cls.__name__}: a proctor {what} is "
            "used by proctor's processes, not by multiprocessing's. Pass "
            "proctor.get_context(...) instead, or leave ctx out"
        )
    raise TypeError(
        f"{what}(ctx=...) must be a proctor context (proctor.get_context(...)) or None, "
        f"not {cls.__name__}: {ctx!r}"
    )
