"""OS semaphores known by name, and who reclaims the name.

``_multiprocessing.SemLock`` is a POSIX named semaphore (``sem_open``). A child
started by ``spawn`` or ``forkserver`` re-opens it by name, so the name must
outlive its creator as long as any process may still open it, and must vanish
once every user is gone -- even if they were all SIGKILLed. The resource reaper
(``_reaper``) does the bookkeeping::

    creator                         reaper                      child (spawn)
    ───────                         ──────                      ─────────────
    sem_open("/proctor-sem-…")
    register(name) ───────────────▶ users = {creator}
    Process.start(): pickle ──▶ name ──────────────────────────▶ sem_open(name)
      after_start: add_user(pid) ─▶ users += {child}            register(name)
    close()/exit/crash ───────────▶ users -= …
                                    no live user ─▶ sem_unlink(name)

In a message (a queue, a pipe, a pool's task or result) the name is pinned to
the message until its receiver has rebuilt it (``_client.keep_for_receiver``).
Under ``fork`` the child inherits the open semaphore (no name lookup) and the
reaper client's registrations. Names are never unlinked eagerly, even for a
``fork`` context: a forked child may still pass the object on to a ``spawn``
grandchild, which needs the name.

A *deferred* semaphore (:meth:`NamedSemaphore.deferred`: a queue's wake-up
hints that most queues never wait on) has its name registered like any other,
but the OS semaphore is only made -- or opened, by whichever process is first
-- when ``sem`` is first used, in any process that holds it::

    creator: name registered, no sem_open       any holder, first use of .sem
    ──────────────────────────────────────      ───────────────────────────────
    fork / pickle: the name travels, and its    this process known to the reaper?
      holders are kept as for any semaphore       (a fork child that never talked
                                                  to it connects first)
                                                sem_open(name) ── ENOENT ─▶
                                                  sem_open(name, O_CREAT|O_EXCL, 0)
                                                  (EEXIST: another was first, retry)

The reaper unlinks a name only when no process known to use it is alive and
nobody maps it, so every holder that opens or makes it later finds the same
semaphore; a name that was never made is simply not there to unlink.
"""

from __future__ import annotations

import _multiprocessing  # type: ignore[import-not-found]  # C module without stubs
import _thread
import contextlib
from collections.abc import Iterator

from .._core import _reduction
from .._core._closing import ClosedWhenCollected

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a spawned child milliseconds at import
    from typing import Any

__all__ = ("SEMAPHORE", "SEM_VALUE_MAX", "NamedSemaphore", "batched_names")

#: ``SemLock`` kinds. proctor only uses SEMAPHORE: ownership and recursion are
#: tracked in shared memory, where a dead owner can be seen (the C
#: RECURSIVE_MUTEX kind keeps its owner in one process's private memory).
SEMAPHORE = 1
SEM_VALUE_MAX = _multiprocessing.SemLock.SEM_VALUE_MAX

#: The reaper's kind for named semaphores.
_KIND = "semaphore"


def _reaper():
    # Imported lazily: importing proctor must not start or even prepare the reaper.
    from . import _client as _reaper

    return _reaper


#: This thread's names registered ahead by :func:`batched_names`, not used yet.
_reserve = _thread._local()


@contextlib.contextmanager
def batched_names(count: int) -> Iterator[None]:
    """Register the names of the next ``count`` semaphores made here in one message.

    For an object made of several semaphores (a queue has four): each
    ``NamedSemaphore()`` made in this thread inside the block takes a name
    registered ahead -- before it exists, as always -- so the reaper is woken
    once, not once per semaphore. Names left unused are withdrawn at the end.
    """
    outer = getattr(_reserve, "names", None)
    names = _reaper().register_new(_KIND, count, 5)
    _reserve.names = names
    try:
        yield
    finally:
        _reserve.names = outer
        for name in names:
            with contextlib.suppress(Exception):
                _reaper()._cancel(name, _KIND)


class _Closed:
    """Stands in for a closed semaphore: every use raises a clear ValueError."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __getattr__(self, name: str) -> Any:
        raise ValueError(f"{self.what} is closed in this process; it cannot be used any more")


class NamedSemaphore(ClosedWhenCollected):
    """A ``SemLock`` whose name is reclaimed once no process uses it.

    Args:
        value: initial value.
        maxvalue: the largest value ``release()`` may reach (the C check is
            advisory; see ``SemLock``).

    Attributes:
        sem: the ``_multiprocessing.SemLock`` (call ``acquire``/``release`` on it).
        name: its OS name.
    """

    __slots__ = ("__weakref__", "deferred_open", "maxvalue", "name", "sem")

    def __init__(self, value: int, maxvalue: int, *, _name: str | None = None) -> None:
        self.maxvalue = maxvalue
        self.deferred_open = False
        if _name is not None:
            self.name = _name
            try:
                self.sem = _multiprocessing.SemLock._rebuild(0, SEMAPHORE, maxvalue, _name)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"the OS semaphore {_name!r} behind a proctor synchronisation object no "
                    "longer exists: every process that used it had exited (and it was "
                    "reclaimed) before this process could open it. Keep the object alive "
                    "in the parent until the child has started."
                ) from None
            self._register()
            return
        reaper = _reaper()
        for _ in range(100):
            name = _registered_name(reaper)
            try:
                sem = _multiprocessing.SemLock(SEMAPHORE, value, maxvalue, name, False)
            except FileExistsError:
                reaper._cancel(name, _KIND)  # somebody else's: never unlink it
                continue
            except BaseException:
                reaper._cancel(name, _KIND)
                raise
            break
        else:  # pragma: no cover - 100 collisions of 40 random bits
            raise FileExistsError("could not find an unused semaphore name")
        self.name = name
        self.sem = sem

    @classmethod
    def deferred(cls, maxvalue: int, *, _name: str | None = None) -> NamedSemaphore:
        """A semaphore of initial value 0 made (or opened) on first use of ``sem``.

        Its name is registered with the reaper now (in a :func:`batched_names`
        block, with the others'), as for any semaphore; ``sem_open`` waits until
        some process holding it first uses ``sem`` (see the module docstring).
        For wake-up hints that most objects never wait on.
        """
        self = cls.__new__(cls)
        self.maxvalue = maxvalue
        self.deferred_open = False  # (until registered: close() then has nothing to undo)
        if _name is not None:
            self.name = _name
            self._register()
        else:
            self.name = _registered_name(_reaper())
        self.deferred_open = True
        return self

    def __getattr__(self, attr: str) -> Any:
        # Reached only for a slot never set: ``sem`` of a deferred semaphore.
        if attr != "sem" or not self.deferred_open:
            raise AttributeError(attr)
        return self._open_deferred()

    def _open_deferred(self) -> Any:
        """Open this deferred semaphore by name, making it if nobody has yet."""
        reaper = _reaper()
        # Before the name can come to exist through us, the reaper must know that
        # this process uses it: a fork child that never talked to it is known
        # only by what it maps, and maps nothing of a semaphore not opened yet.
        reaper.ensure_started()
        maxvalue, name = self.maxvalue, self.name
        for _ in range(100):
            try:
                sem = _multiprocessing.SemLock._rebuild(0, SEMAPHORE, maxvalue, name)
                break
            except FileNotFoundError:
                pass  # nobody made it yet: make it
            try:
                sem = _multiprocessing.SemLock(SEMAPHORE, 0, maxvalue, name, False)
                break
            except FileExistsError:
                continue  # another process (or thread) made it meanwhile: open that
        else:  # pragma: no cover - made and unlinked 100 times in a row
            raise FileExistsError(f"could not open or make the OS semaphore {name!r}")
        current = _peek(self)
        if current is not None:
            return current  # another thread of ours opened it first, or close()
        self.sem = sem
        return sem

    def _register(self) -> None:
        _reaper().register(self.name, _KIND)

    def close(self) -> None:
        """Close this process's handle and tell the reaper; idempotent."""
        sem = _peek(self)
        if isinstance(sem, _Closed) or (sem is None and not self.deferred_open):
            return  # closed already, or never made (its __init__ failed)
        self.sem = _Closed("this semaphore")
        # Drop the SemLock first (sem_close unmaps it) so that the reaper, which
        # looks for mappers before unlinking, does not see this process.
        del sem
        with contextlib.suppress(Exception):
            _reaper().unregister(self.name, _KIND)

    def __reduce__(self):
        if isinstance(_peek(self), _Closed):
            raise ValueError("cannot send a closed semaphore to another process")
        reaper = _reaper()
        if not reaper.keep_for_receiver(self.name, _KIND):
            _reduction.need_carrier(
                "a proctor synchronisation object",
                "a proctor synchronisation object can only reach another process as an "
                "argument of Process(...), or in a proctor message (Connection.send() "
                "through a Unix socket, a proctor Queue, a proctor Pool's task "
                "arguments and results); it cannot be pickled into a file or with "
                "plain pickle",
            )
        # A deferred one stays deferred in the receiver, opened there if it waits.
        return (_rebuild, (self.name, self.maxvalue, reaper.address(), self.deferred_open))

    def __repr__(self) -> str:
        return f"<NamedSemaphore {self.name!r}>"


def _registered_name(reaper: Any) -> str:
    """A new semaphore name, already registered with the reaper.

    One reserved by :func:`batched_names` (registered with its object's others), or
    a fresh one registered now: before the semaphore exists, so that a crash right
    after ``sem_open()`` cannot leave a name that nobody knows about.
    """
    reserved: list[str] | None = getattr(_reserve, "names", None)
    if reserved:
        return reserved.pop()
    name: str = reaper.new_name(5)
    reaper.register(name, _KIND)
    return name


# The slot's descriptor: reads ``sem`` without opening a deferred one.
_sem_slot: Any = NamedSemaphore.__dict__["sem"]


def _peek(named: NamedSemaphore) -> Any:
    """``named.sem`` if set (a SemLock or _Closed), else None: never opens a deferred one."""
    try:
        return _sem_slot.__get__(named)
    except AttributeError:
        return None


def _rebuild(
    name: str, maxvalue: int, reaper_address: str | None, deferred: bool = False
) -> NamedSemaphore:
    _reaper().adopt_address(reaper_address)
    if deferred:
        return NamedSemaphore.deferred(maxvalue, _name=name)
    return NamedSemaphore(0, maxvalue, _name=name)
