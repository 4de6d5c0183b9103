"""``Pipe()``: two connected ``Connection`` ends, on pipes and a side socket pair.

Each end owns a socket of a pair and a pipe per direction (one pipe with
``duplex=False``): frames go on the pipe, big bodies on the socket (see
``_sending``)::

    conn1                                           conn2
    ─────                                           ─────
    write end of pipe A (O_NONBLOCK)  ──────────▶   read end of pipe A
    read end of pipe B                ◀──────────   write end of pipe B (O_NONBLOCK)
    socket a                          ◀═════════▶   socket b     (side messages)

With ``duplex=False`` there is one pipe, and each socket is half-closed so the
kernel itself refuses the unused direction.
"""

from __future__ import annotations

import fcntl
import os
import socket

from ._connection import Connection, configure_socket
from ._sending import F_SETNOSIGPIPE

__all__ = ("Pipe",)


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """Create a connected pair of ``Connection`` ends.

    Args:
        duplex: when ``True`` both ends send and receive. When ``False`` the
            first end only receives and the second only sends.

    Returns:
        ``(conn1, conn2)``.
    """
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fds: list[int] = []
    try:
        configure_socket(a)
        configure_socket(b)
        if duplex:
            a_to_b = os.pipe()
            fds.extend(a_to_b)
            b_to_a = os.pipe()
            fds.extend(b_to_a)
            _prepare_write_end(a_to_b[1])
            _prepare_write_end(b_to_a[1])
            return (
                Connection._with_pipes(a, b_to_a[0], a_to_b[1]),
                Connection._with_pipes(b, a_to_b[0], b_to_a[1]),
            )
        # Half-close the unused directions, so the kernel itself refuses them.
        a.shutdown(socket.SHUT_WR)
        b.shutdown(socket.SHUT_RD)
        r, w = os.pipe()
        fds.extend((r, w))
        _prepare_write_end(w)
        return (
            Connection._with_pipes(a, r, -1, writable=False),
            Connection._with_pipes(b, -1, w, readable=False),
        )
    except BaseException:
        a.close()
        b.close()
        for fd in fds:
            os.close(fd)
        raise


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
