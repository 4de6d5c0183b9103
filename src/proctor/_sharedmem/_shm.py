"""Named POSIX shared memory: ``SharedMemory``, with its lifetime done right.

A segment lives in ``/dev/shm`` under its name until someone unlinks it. Proctor
hands that duty to the resource reaper (``_reaper``): every process that maps a
segment is registered as a user, and so is its creator until it unlinks the
segment or exits (``close()`` alone keeps the creator's hold, as the stdlib keeps
a segment until ``unlink()``). The reaper unlinks the name once every user is
gone -- closed, exited or SIGKILLed -- and never while one is alive::

    creator                          reaper                      other process
    ───────                          ──────                      ─────────────
    register(name) ────────────────▶ users = {creator}
    shm_open(O_CREAT|O_EXCL, 0600)
    mmap                                                         shm_open(name)
                                     users += {other} ◀───────── register(name)
    close(): creator still holds it
    exit / SIGKILL ────────────────▶ users -= {creator}
                                     (other still maps it: kept)
                                     users -= {other} ◀───────── close() / death
                                     no user left ─▶ shm_unlink(name)

    unlink() (any process) ────────▶ name gone: forgotten, whoever still maps it

Passing a ``SharedMemory`` to a child pickles its name; the parent registers the
child as a user as soon as it exists (``after_start``), so the segment survives
even if the parent dies before the child attaches.

A process stops using a segment when its mapping is closed or garbage-collected:
a finalizer on the mapping object tells the reaper. Objects built on ``buf``
(numpy arrays, memoryviews) keep the mapping, hence the registration, alive.
"""

from __future__ import annotations

import _posixshmem  # type: ignore[import-not-found]  # C module without stubs
import errno
import mmap
import os
import weakref

from .._core._integers import integral
from .._core._system import random_hex
from .._reaper import _client as _reaper

__all__ = ("SharedMemory",)

_KIND = "shm"

#: Read and write for the owner only: other users on the machine must not read
#: or corrupt a program's shared state.
_MODE = 0o600


def _new_name(track: bool) -> str:
    if track:
        # Carries the creator's identity: the next reaper may reclaim it if a
        # tree killed whole (its reaper included) leaves it behind.
        return _reaper.new_name(4)
    # Untracked: somebody promised to unlink it, so no reaper may; this form is
    # never swept. "proctor" lets leak checks find leftovers; macOS caps names
    # at 31 characters.
    return f"/proctor-{os.getpid()}-{random_hex(4)}"


def _os_name(name: str) -> str:
    """Validate a user-given segment name and return it with its leading slash."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}: {name!r}")
    bare = name[1:] if name.startswith("/") else name
    if not bare:
        raise ValueError(f"shared memory name must not be empty: {name!r}")
    if "/" in bare or "\0" in bare:
        raise ValueError(
            f"shared memory name {name!r} must not contain '/' (except a leading one) or NUL"
        )
    return "/" + bare


class _Mapping(mmap.mmap):
    """The mapping of a segment; tells the reaper when this process lets go of it."""

    _finalizer: weakref.finalize | None = None

    def track(self, name: str) -> None:
        self._finalizer = weakref.finalize(self, _reaper.unregister, name, _KIND)
        # At exit the reaper sees this process die anyway; no message needed.
        self._finalizer.atexit = False

    def release(self) -> None:
        if not self.closed:
            self.close()
        if self._finalizer is not None:
            self._finalizer()


class SharedMemory:
    """A block of memory with a name, shared by every process that opens it.

    ``SharedMemory(create=True, size=n)`` makes a new segment with a unique name;
    ``SharedMemory(name)`` attaches to an existing one. Its memory is ``buf``.

    Args:
        name: the segment's name (a leading ``/`` is optional). ``None`` with
            ``create=True`` picks a unique name starting with ``proctor``.
        create: create a new segment (``True``) or attach to an existing one.
        size: bytes to create (> 0). Ignored when attaching, as in the stdlib:
            the mapping is the segment's own size (see ``size``).
        track: let proctor's reaper unlink the segment once no process uses it
            (default). ``False``: this process neither registers nor is counted
            as a user, and someone must call :meth:`unlink`.

    Raises:
        TypeError: for a name that is not a str, a size that is not an int.
        ValueError: for a bad name, a size <= 0 when creating, a negative size,
            attaching without a name, or attaching to a segment of size 0.
        FileExistsError: when creating under a name already in use.
        FileNotFoundError: when attaching to a name that does not exist.

    Note:
        As with ``multiprocessing.shared_memory``, a segment stays until
        :meth:`unlink` while its creator lives, closed or not. Unlike it, once
        the creator has exited (or been SIGKILLed) the segment is reclaimed as
        soon as no process uses it, and never while a live process still maps
        it (the stdlib tracker unlinks segments that other processes attached by
        name when their creator exits). So a process that attaches by name after
        the creator exited must do so while another process still holds it, or
        receive the ``SharedMemory`` object itself. ``buf`` raises
        ``ValueError`` after :meth:`close` (the stdlib returns ``None``).
    """

    def __init__(
        self, name: str | None = None, create: bool = False, size: int = 0, *, track: bool = True
    ) -> None:
        size = integral(size)
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"size must be an int, not {type(size).__name__}: {size!r}")
        if size < 0:
            raise ValueError(f"size must not be negative, got {size!r}")
        if create and size == 0:
            raise ValueError(
                "size must be a positive number of bytes to create a shared memory "
                "segment, got 0; pass size=n"
            )
        if not create and name is None:
            raise ValueError(
                "name is required to attach to an existing shared memory segment; "
                "pass create=True (and size) to make a new one"
            )
        self._track = bool(track)
        self._mapping: _Mapping | None = None
        self._buf: memoryview | None = None
        if create:
            self._name, self._size = self._create(name, size)
        else:
            assert name is not None
            self._name, self._size = self._attach(_os_name(name))
        # _create/_attach set self._mapping, which the checker cannot see.
        self._buf = memoryview(self._mapping)  # type: ignore[arg-type]

    # ── opening ──

    def _create(self, name: str | None, size: int) -> tuple[str, int]:
        flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
        while True:
            os_name = _new_name(self._track) if name is None else _os_name(name)
            if self._track:
                # Registered before it exists, so that no instant passes in which
                # it exists and a SIGKILL would leave it to nobody.
                _reaper.register(os_name, _KIND)
            try:
                fd = _posixshmem.shm_open(os_name, flags, mode=_MODE)
            except FileExistsError:
                if self._track:
                    _reaper._cancel(os_name, _KIND)
                if name is None:
                    continue  # a random name collided: draw another
                raise FileExistsError(
                    errno.EEXIST,
                    f"a shared memory segment named {os_name[1:]!r} already exists; "
                    "attach to it with SharedMemory(name) or choose another name",
                    os_name[1:],
                ) from None
            except BaseException:
                if self._track:
                    _reaper._cancel(os_name, _KIND)
                raise
            break
        try:
            os.ftruncate(fd, size)
            self._map(fd, size, os_name)
        except BaseException:
            _posixshmem.shm_unlink(os_name)
            if self._track:
                _reaper.forget(os_name, _KIND)
            raise
        finally:
            os.close(fd)
        if self._track:
            # The creator's hold: a second, nested registration that close() does
            # not release -- only unlink() (which forgets the name) or this
            # process's exit does. Without it the reaper could reclaim the segment
            # between the creator's close() and its unlink() (the stdlib's
            # documented order), and unlink() would fail; and a segment closed by
            # its creator would vanish before a process attached to it by name.
            _reaper.register(os_name, _KIND)
        return os_name, size

    def _attach(self, os_name: str) -> tuple[str, int]:
        try:
            fd = _posixshmem.shm_open(os_name, os.O_RDWR, mode=_MODE)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT,
                f"no shared memory segment named {os_name[1:]!r}: it was never created, "
                "or it was unlinked (by a process that called unlink(), or by proctor's "
                "reaper once no process used it any more); create it with "
                "SharedMemory(name, create=True, size=n)",
                os_name[1:],
            ) from None
        try:
            if self._track:
                _reaper.register(os_name, _KIND)
            try:
                actual = os.fstat(fd).st_size
                if actual == 0:
                    raise ValueError(
                        f"shared memory segment {os_name[1:]!r} has size 0: its creator has "
                        "not sized it yet (or it is not a proctor/multiprocessing segment)"
                    )
                self._map(fd, actual, os_name)
            except BaseException:
                if self._track:
                    _reaper.unregister(os_name, _KIND)
                raise
        finally:
            os.close(fd)
        return os_name, actual

    def _map(self, fd: int, size: int, os_name: str) -> None:
        mapping = _Mapping(fd, size)
        if self._track:
            mapping.track(os_name)
        self._mapping = mapping

    # ── the stdlib API ──

    @property
    def name(self) -> str:
        """The segment's name, without the leading ``/`` (as the stdlib shows it)."""
        return self._name[1:]

    @property
    def size(self) -> int:
        """The size in bytes.

        The size asked for when created; the segment's own when attached (macOS
        rounds it up to a whole page).
        """
        return self._size

    @property
    def buf(self) -> memoryview:
        """The shared memory.

        Raises:
            ValueError: after :meth:`close`.
        """
        if self._buf is None:
            raise ValueError(f"SharedMemory {self.name!r} is closed")
        return self._buf

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._buf is None

    def close(self) -> None:
        """Unmap the segment from this process (it stays for others). Idempotent.

        Raises:
            BufferError: while objects built on ``buf`` (numpy arrays,
                memoryviews, ctypes objects) still exist; delete them first.
        """
        if self._buf is None:
            return
        assert self._mapping is not None
        try:
            self._buf.release()
            try:
                self._mapping.close()
            except BufferError:
                # Someone (numpy) holds the mapping itself, not our view: stay usable.
                self._buf = memoryview(self._mapping)
                raise
        except BufferError:
            raise BufferError(
                f"cannot close SharedMemory {self.name!r}: objects built on its buf "
                "(numpy arrays, memoryviews, ctypes objects) still exist; delete them, "
                "then call close()"
            ) from None
        self._buf = None
        self._mapping.release()
        self._mapping = None

    def unlink(self) -> None:
        """Remove the segment's name now; its memory goes when the last user closes it.

        Call it once, from one process. Proctor's reaper does it anyway once the
        creator has exited and no process uses the segment; call ``unlink()``
        to free it while the creator lives.

        Raises:
            FileNotFoundError: if the segment was unlinked already.
        """
        try:
            unlink_name(self._name)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT,
                f"cannot unlink shared memory segment {self.name!r}: it no longer exists "
                "(unlink() was called already, here or in another process, or proctor's "
                "reaper reclaimed it)",
                self.name,
            ) from None

    def __enter__(self) -> SharedMemory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._buf is None else "open"
        tracked = "" if self._track else " untracked"
        return f"<SharedMemory name={self.name!r} size={self._size} {state}{tracked}>"

    def __reduce__(self):
        if self._track and not _reaper.keep_for_receiver(self._name, _KIND):
            # At a start, the child is a user from the moment it exists, before it
            # attaches; in a message with descriptors, the name is kept until the
            # receiver attaches. Elsewhere it goes by name alone, as in the stdlib
            # -- which includes most queue items and messages (pickled plainly
            # first: asking every one whether it holds a segment would cost them
            # all); see _keep_for_parent.
            _keep_for_parent(self._name)
        address = _reaper.address() if self._track else None
        return (_rebuild, (self.name, self._track, address))


def _keep_for_parent(os_name: str) -> None:
    """Make this child's parent a user of a segment pickled by name.

    Its receiver is unknown (a queue item, a message, a result), and the reaper
    would reclaim the segment as soon as this process ended, before a slower
    receiver attached (``FileNotFoundError`` there). The parent, a user now, keeps
    it until the parent ends or lets it go (attaches and closes it); the
    multiprocessing resource tracker keeps such a segment until the whole program
    ends. In the top process, nothing: the segment is kept while that process lives.
    """
    from .._start._process import parent_process  # (a child has it loaded)

    parent = parent_process()
    if parent is None:
        return
    try:
        _reaper.add_user(os_name, _KIND, parent.pid)
    except (OSError, ValueError):
        pass  # no reaper to tell (it could not start): nothing would reclaim it either


def unlink_name(name: str) -> None:
    """Remove the segment named ``name`` and tell the reaper, without attaching it.

    What ``SharedMemory.unlink()`` does, for one who has only the name (a
    ``SharedMemoryManager``'s server at its shutdown).

    Raises:
        FileNotFoundError: no segment has that name.
        ValueError, TypeError: ``name`` is not a valid segment name.
    """
    os_name = _os_name(name)
    _posixshmem.shm_unlink(os_name)
    _reaper.forget(os_name, _KIND)


def _rebuild(name: str, track: bool, address: str | None) -> SharedMemory:
    _reaper.adopt_address(address)
    return SharedMemory(name, track=track)
