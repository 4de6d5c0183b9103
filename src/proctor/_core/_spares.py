"""Large buffers' pages, reused: a received array's memfd goes back to its senders.

Queues (``_queues._spares``) and ``Pipe()`` connections (``_connections``) send
large out-of-band buffers as memfds; both reuse them through this module::

    producer (sender)                          consumer (receiver)
    a buffer of SPARE_MIN..SPARE_MAX           the buffer's memfd
      take a spare of that size  ◀── spares ──┐  first time: map it (MAP_POPULATE),
      (from the "take" socket,                │    keep the mapping (a slot)
       MSG_DONTWAIT)                          │  seen before: its slot, already mapped
      copy into its kept mapping ─▶ message ──┼─▶ the array is a view of the slot
      (no spare: a fresh memfd, as before)    │  the view dies (every array, every
                                              └── view of it): the memfd goes back
                                                  on the "give" socket (MSG_DONTWAIT)

The two sockets are a datagram pair's ends, looked up on an owner object by
attribute name: a queue's mailbox (consumers give on its receiving end,
producers take on its sending end: no new OS object), or a ``Pipe()`` end's
spare socket (one datagram pair per ``Pipe()``; each end gives and takes on its
own half, so it works for ``duplex=False`` too).

A fresh memfd costs the producer a page allocation and zeroing per 4 KiB page
(about 6x a plain memory copy of the same bytes on the development VM), and a
fresh mapping costs the consumer a page-table entry per page (about 1.8x). A
memfd that comes back, already faulted in and still mapped on both sides,
costs one copy: the producer writes through the mapping it kept, and the
consumer's array is a view of the mapping it kept.

The ownership rule: a memfd is a *spare* -- free for any producer to write --
only from the moment its consumer's view died until a producer takes it from
the queue's spares. While any array (or view of one) that a consumer got from
it lives, it is never sent back:

* the consumer hands pickle a ctypes array over the slot's address, with no
  reference to the mapping other than the slot it keeps (``_keep``), and sends
  the memfd back from that ctypes array's weak-reference callback, which runs
  once the last object that could reach the bytes is gone;
* a process that forked while a view was alive never sends that memfd back
  (the child's copy of the view maps the same pages); a forked child drops the
  slots and mappings it inherited;
* a handle that was closed sends nothing back: the slots of live views are
  closed when those views die.

A spare's datagram carries only its descriptor. What a handle (or an end)
keeps is bounded (SPARE_SLOTS mappings and SPARE_BYTES a side, only for
buffers of SPARE_MIN..SPARE_MAX bytes), kept until it closes; the kernel
holds spares in flight (at most ``net.unix.max_dgram_qlen``, 10 by default: a
full queue makes the consumer close the memfd instead).
"""

from __future__ import annotations

# _socket, not socket.py (with enum and selectors), and ctypes only where a spare is
# mapped: each is milliseconds of the start of a spawned child given a queue (issue 17).
import _socket as socket
import array
import mmap
import os
import weakref

from ._closing import close_all_quietly
from ._wire import cloexec_flag, fds_from, map_memfd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("SPARE_BYTES", "SPARE_MAX", "SPARE_MIN", "SPARE_SLOTS", "Spares")

#: Buffers from this size are worth reusing (below it, a fresh memfd's pages
#: cost less than a look for a spare).
SPARE_MIN = 1 << 20
#: Buffers above this size are not kept, so a queue that once carried a huge
#: array does not hold its pages for ever.
SPARE_MAX = 256 << 20
#: Mappings a handle keeps on each side (producer, consumer), and their bytes
#: at most: pages kept for reuse stay allocated until the handle closes.
SPARE_SLOTS = 4
SPARE_BYTES = 256 << 20
#: Spares a producer looks at for one buffer before making a fresh memfd
#: (a spare of another size is closed: its pages go back to the kernel).
_TRIES = 4

_RECV_FLAGS = socket.MSG_DONTWAIT | cloexec_flag()
_FD_SPACE = socket.CMSG_SPACE(array.array("i").itemsize)

# Forks of this process so far: a view delivered before a fork is shared with
# the child, so its memfd is never sent back (see Slot).
_forks = [0]


def _count_fork() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_parent=_count_fork, after_in_child=_count_fork)


def _inode(fd: int) -> tuple[int, int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino, st.st_size


def _map(fd: int, size: int) -> tuple[mmap.mmap, int]:
    mapping = map_memfd(fd)
    if not isinstance(mapping, mmap.mmap) or len(mapping) != size:
        raise OSError(f"a spare memfd of {size} bytes did not map as such")
    import ctypes

    address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))  # (export released)
    return mapping, address


class Slot:
    """One memfd a consumer keeps mapped; ``busy`` while a view of it lives."""

    __slots__ = ("__weakref__", "address", "busy", "fd", "forks", "key", "mapping", "size")

    def __init__(self, key: tuple[int, int], fd: int, size: int) -> None:
        self.key = key
        self.size = size
        self.mapping, self.address = _map(fd, size)
        self.fd = fd
        self.busy = False
        self.forks = 0

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            close_all_quietly([fd])
        self.mapping.close()


class Spares:
    """One queue handle's (or connection end's) kept mappings, and its spares.

    Args:
        owner: the object holding the sockets; held weakly, so an owner dropped
            without ``close()`` goes at once, even while views of the slots live
            (they then close instead of going back).
        take: the attribute of ``owner`` holding the socket spares are taken
            from (``None`` there: no spares).
        give: the attribute holding the socket spares are given back on.
    """

    def __init__(self, owner: object, take: str, give: str) -> None:
        self._owner = weakref.ref(owner)
        self._take_name = take
        self._give_name = give
        self._pid = os.getpid()
        self._closed = False
        # Producer: mappings of memfds taken as spares, by (st_dev, st_ino).
        self._written: dict[tuple[int, int], mmap.mmap] = {}
        # Consumer: slots by (st_dev, st_ino).
        self._slots: dict[tuple[int, int], Slot] = {}

    # -- producer ---------------------------------------------------------------------

    def fill(self, data: memoryview) -> int | None:
        """A spare memfd holding a copy of ``data``, or None (make a fresh one)."""
        size = data.nbytes
        if not SPARE_MIN <= size <= SPARE_MAX or self._closed:
            return None
        self._check_pid()
        for _ in range(_TRIES):
            fd = self._take()
            if fd is None:
                return None
            try:
                dev, ino, got = _inode(fd)
                if got != size:
                    os.close(fd)  # another size: its pages go back to the kernel
                    continue
                mapping = self._written.pop((dev, ino), None)
                if mapping is None:
                    mapping = _map(fd, size)[0]
                if data.format != "B" or data.ndim != 1:
                    data = data.cast("B")
                # Copied before the mapping is kept: another thread making room
                # closes only mappings in _written, never one being written.
                mapping[:] = data
                while len(self._written) >= SPARE_SLOTS or (
                    self._written and sum(map(len, self._written.values())) + size > SPARE_BYTES
                ):
                    oldest_key = next(iter(self._written), None)  # (another thread's
                    if oldest_key is None:  # send may have made room meanwhile)
                        break
                    oldest = self._written.pop(oldest_key, None)
                    if oldest is not None:
                        oldest.close()
                self._written[(dev, ino)] = mapping  # newest last
            except BaseException:
                os.close(fd)
                raise
            return fd
        return None

    def _socket(self, name: str) -> socket.socket | None:
        owner = self._owner()
        return None if owner is None else getattr(owner, name, None)

    def _take(self) -> int | None:
        sock = self._socket(self._take_name)
        if sock is None:
            return None
        try:
            _data, ancdata, _flags, _addr = sock.recvmsg(1, _FD_SPACE, _RECV_FLAGS)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return None  # (a closed end: no spare)
        fds = fds_from(ancdata)
        if not fds:
            return None
        close_all_quietly(fds[1:])
        return fds[0]

    # -- consumer ---------------------------------------------------------------------

    def view(self, fd: int) -> Any:
        """The buffer of a got item's memfd ``fd`` (closed here), or None (map it plainly)."""
        if self._closed:
            return None
        dev, ino, size = _inode(fd)
        if not SPARE_MIN <= size <= SPARE_MAX:
            return None
        self._check_pid()
        key = (dev, ino)
        slot = self._slots.get(key)
        if slot is not None and (slot.busy or slot.size != size):
            # Never while a view of it lives (its producer broke the rule?): plain map.
            return None
        if slot is None:
            # (a list: a view's callback may run meanwhile, in any thread)
            slots = list(self._slots.values())
            while len(slots) >= SPARE_SLOTS or sum(s.size for s in slots) + size > SPARE_BYTES:
                idle = next((s for s in slots if not s.busy), None)
                if idle is None:
                    return None  # the slots are in use: map this one plainly
                slots.remove(idle)
                if self._slots.pop(idle.key, None) is idle:
                    idle.close()
            slot = Slot(key, fd, size)  # owns fd from now
            self._slots[key] = slot
        else:
            os.close(fd)  # a duplicate of the slot's own
        slot.busy = True
        slot.forks = _forks[0]
        import ctypes  # (loaded by _map already: a slot is mapped)

        buffer = (ctypes.c_ubyte * size).from_address(slot.address)
        buffer._keep = slot  # type: ignore[attr-defined]  # the mapping lives as long
        release = weakref.finalize(buffer, self.give_back, slot)
        release.atexit = False  # at exit, the kernel takes everything back
        return memoryview(buffer).cast("B")

    def give_back(self, slot: Slot) -> None:
        """The last view of ``slot`` died: send its memfd back as a spare, or close it."""
        slot.busy = False
        sock = self._socket(self._give_name)
        if (
            sock is None
            or self._closed
            or self._pid != os.getpid()
            or slot.forks != _forks[0]
            or self._slots.get(slot.key) is not slot
        ):
            if self._slots.get(slot.key) is slot:
                del self._slots[slot.key]
            slot.close()
            return
        try:
            sock.sendmsg(
                [b"s"],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [slot.fd]))],
                socket.MSG_DONTWAIT,
            )
        except OSError:
            # Spares full (or the queue or the peer gone): back to the kernel.
            self._slots.pop(slot.key, None)
            slot.close()

    # -- both ----------------------------------------------------------------------------

    def _check_pid(self) -> None:
        """A forked child drops what it inherited (the parent's, not its own)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._drop()

    def _drop(self) -> None:
        written, self._written = self._written, {}
        for mapping in written.values():
            mapping.close()
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            if not slot.busy:
                slot.close()
            # (a busy slot is closed by its view's callback, which sees the change)

    def close(self) -> None:
        """Drop every kept mapping; live views keep theirs until they die."""
        self._closed = True
        self._drop()

    def __del__(self) -> None:
        # A handle dropped without close(), and no view of its slots left.
        try:
            if not self._closed:
                self.close()
        except Exception:  # at interpreter exit, modules may be half gone
            pass
