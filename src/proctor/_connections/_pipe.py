"""``Pipe()``: two connected ``Connection`` ends, on a frame channel and side socket pairs.

Each end owns a frame channel, on which every frame travels (small bodies with
it): on Linux a stream socket pair of its own (see ``FRAME_SOCKETS``), elsewhere
a pipe per direction (one pipe with ``duplex=False``), as drawn below; and
three side sockets: a datagram
socket for mid-size bodies, a stream socket for large ones (see ``_sending``),
and a spare socket on which a receiver gives the memfds of large buffers it
dropped back to the sender, which reuses them (``_core._spares``)::

    conn1                                           conn2
    ─────                                           ─────
    write end of pipe A (O_NONBLOCK)  ──────────▶   read end of pipe A
    read end of pipe B                ◀──────────   write end of pipe B (O_NONBLOCK)
    datagram socket (SOCK_SEQPACKET)  ◀─ ─ ─ ─ ─▶   datagram socket
    stream socket                     ◀═════════▶   stream socket
    spare socket (SOCK_DGRAM)         ◀─ memfds ─▶  spare socket

Where ``AF_UNIX`` has no ``SOCK_SEQPACKET`` (macOS), there is no datagram socket
and mid-size bodies take the stream socket. With ``duplex=False`` the datagram
and stream sockets are half-closed, so the kernel itself refuses the unused
direction; the spare socket is not (spares go against the messages' direction).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys

from .._core._closing import close_all_quietly
from ._connection import Connection, configure_socket
from ._sending import F_SETNOSIGPIPE

__all__ = ("DATAGRAMS", "FRAME_SOCKETS", "Pipe", "streaming_pipe")

#: Whether Pipe() ends get a datagram socket for mid-size bodies (tests turn it
#: off to exercise the path macOS takes).
DATAGRAMS = hasattr(socket, "SOCK_SEQPACKET")
#: Whether frames travel on a stream socket pair (Linux) rather than on a pipe per
#: direction (elsewhere; tests turn it off to exercise that path). Linux queues
#: each send of a frame (at most 32 KiB) as one buffer, appended whole, so frames
#: of concurrent senders never interleave, as on a pipe. And the socket wakes a
#: sender sleeping on it for its answer as soon as the reader takes its message:
#: on two idle cores of a VM a small round trip took 43 us against a pipe's 82
#: (the stdlib's socket, 62); on one core the pipe is faster (9.1 against 11.5-12
#: us, the stdlib 16-17.7). See docs/design.md, "Several senders on one connection end".
FRAME_SOCKETS = sys.platform.startswith("linux")


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """Create a connected pair of ``Connection`` ends.

    Args:
        duplex: when ``True`` both ends send and receive. When ``False`` the
            first end only receives and the second only sends.

    Returns:
        ``(conn1, conn2)``.
    """
    return _pipe(duplex, FRAME_SOCKETS)


def streaming_pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """A ``Pipe()`` whose frames travel on pipes on every platform.

    For a channel that streams many small messages rather than waiting for each
    answer, such as a pool's workers': a pipe write merges into the last page,
    a socket send makes a buffer of its own. ``Pool.apply_async`` of 1,000
    no-ops on the reference VM: 87-93k tasks/s on pipes, 69-74k on sockets;
    ``Pool.apply`` round trips 168-189 us against 188-194 us.

    Its frames are private (``EndState._private_frames``): the caller keeps
    each end in one process, the only one to receive on it, so a receive
    reads ahead every frame that has come, and frames are not padded.
    ``apply_async`` of 1,000 no-ops: 74-81k tasks/s with frames read one at a
    time, 110-120k with read-ahead.
    """
    return _pipe(duplex, False, private=True)


def _pipe(
    duplex: bool, frame_sockets: bool, private: bool = False
) -> tuple[Connection, Connection]:
    sockets = list(socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
    fds: list[int] = []
    try:
        a, b = sockets
        da, db = _datagram_pair()
        if da is not None and db is not None:
            sockets += (da, db)
        fa = fb = None
        if frame_sockets:
            # (Blocking, as configure_socket leaves them: receivers sleep in
            # read(), senders never wait in the kernel: MSG_DONTWAIT.)
            fa, fb = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            sockets += (fa, fb)
        for sock in sockets:
            configure_socket(sock, new=True)
        sa, sb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        sockets += (sa, sb)
        for sock in (sa, sb):
            sock.settimeout(None)  # (as configure_socket: spares never wait)
        if not duplex:
            # Half-close the unused directions, so the kernel itself refuses them.
            for reader, writer in ((a, b), (da, db), (fa, fb)):
                if reader is not None and writer is not None:
                    reader.shutdown(socket.SHUT_WR)
                    writer.shutdown(socket.SHUT_RD)
        # Each end's (read fd, write fd) of its pipes; none with a frame socket.
        a_pipes = b_pipes = (-1, -1)
        if not frame_sockets and duplex:
            a_to_b = os.pipe()
            fds.extend(a_to_b)
            b_to_a = os.pipe()
            fds.extend(b_to_a)
            _prepare_write_end(a_to_b[1])
            _prepare_write_end(b_to_a[1])
            a_pipes, b_pipes = (b_to_a[0], a_to_b[1]), (a_to_b[0], b_to_a[1])
        elif not frame_sockets:
            r, w = os.pipe()
            fds.extend((r, w))
            _prepare_write_end(w)
            a_pipes, b_pipes = (r, -1), (-1, w)
        return (
            Connection._with_pipes(
                a,
                *a_pipes,
                writable=duplex,
                dsock=da,
                spare_sock=sa,
                frame_sock=fa,
                private=private,
            ),
            Connection._with_pipes(
                b,
                *b_pipes,
                readable=duplex,
                dsock=db,
                spare_sock=sb,
                frame_sock=fb,
                private=private,
            ),
        )
    except BaseException:
        for sock in sockets:
            sock.close()
        close_all_quietly(fds)
        raise


def _datagram_pair() -> tuple[socket.socket | None, socket.socket | None]:
    """A connected SOCK_SEQPACKET pair, or (None, None) where AF_UNIX has none."""
    if not DATAGRAMS:
        return None, None
    try:
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:  # EPROTONOSUPPORT and friends: the portable path remains
        return None, None


def _prepare_write_end(fd: int) -> None:
    """Make a pipe's write end non-blocking, and (macOS) free of SIGPIPE.

    Non-blocking: a write of at most PIPE_BUF bytes then goes whole or not at
    all, and a sender that must wait (or gives up at its deadline) does so in
    ``poll``. The flag belongs to the open file, shared with every process
    holding the end, and every proctor sender expects it.
    """
    os.set_blocking(fd, False)
    if F_SETNOSIGPIPE is not None:
        fcntl.fcntl(fd, F_SETNOSIGPIPE, 1)
