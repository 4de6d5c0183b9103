"""A queue's mailbox: the kernel holds large items' memfds between ``put()`` and ``get()``.

::

    producer (put lock held)                         consumer (get lock held)
    mail_id = ring.next_mail_id()                    frame at the head names mail_id
    send(mail_id, fds) ──▶ ┌ Unix datagram socket pair ─┐ ──▶ receive(mail_id) -> fds
    ring.put(frame)        │ [id 7 | fds] [id 8 | fds]  │     (older ids: orphans, closed;
                           └────────────────────────────┘      a newer id: left for its item)

A frame's bytes live in the ring; the descriptors of its spilled buffers cannot,
so they travel as ``SCM_RIGHTS`` in one datagram tagged with the frame's mail id
(a 32-bit serial number the ring hands out under the put lock). Producers mail
in put-lock order and consumers take mail in get-lock order, so the mailbox is a
FIFO in step with the ring, except where a process was killed between the two:
that leaves an *orphan*, always older than any live item, which the next
``receive`` recognises by its id and closes.

Both ends are non-blocking: a full mailbox (or too many descriptors in flight)
makes ``send`` return False, and the producer waits as for a full ring.
"""

from __future__ import annotations

import _socket
import array
import errno
import struct

from .._core import _reduction
from .._core._closing import close_all
from .._core._wire import cloexec_flag, fds_from

__all__ = ("MAX_FDS", "Mailbox")

#: Descriptors one message may carry (Linux's SCM_MAX_FD).
MAX_FDS = 253

_MAIL_ID = struct.Struct("<I")
_RECV_CLOEXEC = cloexec_flag()
# Linux makes both ends non-blocking in the socketpair() call itself (two
# syscalls fewer per queue); elsewhere setblocking() does it.
_NONBLOCK = getattr(_socket, "SOCK_NONBLOCK", 0)

# ETOOMANYREFS: too many descriptors in flight for this user (not on every OS).
_TOO_MANY_REFS = getattr(errno, "ETOOMANYREFS", -1)


class Mailbox:
    """The two ends of one queue's mailbox; every handle of the queue has the same.

    Both ends live in every process: any process may put and any may get.
    """

    __slots__ = ("__weakref__", "recv_end", "send_end")

    # The ends are the C module's sockets: they have every method the mailbox and
    # the spares use, without ``socket.py``'s Python wrapper, whose calls at
    # creation wrote ~9 pages per ``Queue()`` that a parent with living children
    # copies (issue 17).
    def __init__(self) -> None:
        send_end, recv_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_DGRAM | _NONBLOCK)
        if not _NONBLOCK:
            send_end.setblocking(False)
            recv_end.setblocking(False)
        self.send_end = send_end
        self.recv_end = recv_end

    @classmethod
    def from_tokens(cls, send_token: int, recv_token: int) -> Mailbox:
        """In a child: the mailbox whose ends were sent under these descriptor tokens."""
        mailbox = cls.__new__(cls)
        mailbox.send_end = _socket.socket(fileno=_reduction.take_fd(send_token))
        mailbox.recv_end = _socket.socket(fileno=_reduction.take_fd(recv_token))
        return mailbox

    def tokens(self, what: str) -> tuple[int, int]:
        """Register both ends to be sent beside the pickle being made (see ``fd_token``):
        to a child being started, or in a message.

        Args:
            what: the owner's name, for the error raised where nothing carries them.
        """
        return (
            _reduction.fd_token(self.send_end.fileno(), what, messages=True),
            _reduction.fd_token(self.recv_end.fileno(), what, messages=True),
        )

    def send(self, mail_id: int, fds: list[int]) -> bool:
        """Send ``fds`` tagged with ``mail_id``; False when the mailbox is full."""
        try:
            self.send_end.sendmsg(
                [_MAIL_ID.pack(mail_id)],
                [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))],
            )
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            # Too many descriptors in flight for this user: waiting for consumers
            # to take some is the right reaction, as for a full queue.
            if exc.errno == _TOO_MANY_REFS:
                return False
            raise
        return True

    def receive(self, mail_id: int) -> list[int]:
        """Receive the descriptors sent for ``mail_id``, dropping older orphans.

        An orphan is left by a producer killed between mailing and committing its
        item, or a consumer killed between taking an item and its descriptors; both
        are older than any live item, so they are recognised by their ids (32-bit
        serial numbers: "older" is "less than 2**31 behind"). A *newer* item's
        descriptors mean that ``mail_id``'s are lost: they are left in the mailbox for
        their own item (each message is peeked at before it is taken), so only the
        item whose buffers are missing fails.

        Raises:
            RuntimeError: when ``mail_id``'s descriptors are not in the mailbox.
        """
        sock = self.recv_end
        while True:
            try:
                # Without room for ancillary data a peek installs no descriptor.
                peeked = sock.recv(_MAIL_ID.size, _socket.MSG_PEEK)
            except BlockingIOError:
                raise RuntimeError(
                    f"queue item {mail_id} lost its large buffers: they are not in the "
                    "queue's mailbox (was the queue's memory corrupted?)"
                ) from None
            (got,) = _MAIL_ID.unpack(peeked)
            if got != mail_id and (mail_id - got) & 0xFFFFFFFF >= 1 << 31:
                raise RuntimeError(
                    f"queue item {mail_id} lost its large buffers: the queue's mailbox holds "
                    f"the next item's ({got}) instead, left there for it"
                )
            data, ancdata, _flags, _addr = sock.recvmsg(
                _MAIL_ID.size, _socket.CMSG_SPACE(MAX_FDS * 4), _RECV_CLOEXEC
            )
            fds = fds_from(ancdata)
            if _MAIL_ID.unpack(data)[0] == mail_id:
                return fds
            # An orphan (consumers take mail under the get lock: the peeked one).
            close_all(fds)

    def close(self) -> None:
        """Close both ends here; idempotent. Mail in flight goes with the last holder."""
        self.send_end.close()
        self.recv_end.close()

    def __del__(self) -> None:
        # A queue dropped without close(): the mailbox goes quietly, as the
        # memory and semaphores do through their own finalizers.
        for name in ("send_end", "recv_end"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close()
