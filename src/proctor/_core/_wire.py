"""One framed message, with descriptors, over a Unix stream socket -- never blocking the sender.

Used on the control channel between a parent and each child it starts (the
child's start payload going down, its outcome coming back) and between a parent
and its fork server. Each side sends one message at a time and the receiver may
not be reading yet -- the parent sends the payload before the child has even
started, and a child sends its outcome just before it exits, maybe to a parent
that joins much later. So a send must never wait for the reader::

    small message (<= INLINE_MAX)               large message
    ───────────────────────────────             ─────────────────────────────────
    [header | data] + SCM_RIGHTS(fds)           data ─▶ memfd (anonymous file)
      fits the socket buffer, which is          [header] + SCM_RIGHTS(memfd, fds)
      raised to SOCKET_BUFFER                     the kernel keeps the file alive
                                                  while the message is in flight

The header is ``<length:u64><spilled:u8>``. Descriptors ride with the header's
first byte, so the receiver gets them with its first ``recvmsg``.
"""

from __future__ import annotations

# The C module's constants and sockets: socket.py (with enum and selectors) costs a
# spawned child, which receives and sends on a bare _socket.socket, ~19 M instructions.
# Imported where descriptors are sent or received: a spawned child whose start message
# carries none reads it with read_plain_message and loads no _socket (issue 17).
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    import mmap
    import socket
    from collections.abc import Callable
    from typing import TypeVar

    _Socket = TypeVar("_Socket", bound=_socket.socket)

__all__ = (
    "INLINE_MAX",
    "WireError",
    "cloexec_flag",
    "fds_from",
    "map_memfd",
    "memfd_with",
    "needs_socket",
    "plain_socketpair",
    "read_plain_message",
    "recv_exactly",
    "recv_message",
    "send_message",
    "socketpair",
)

# Messages up to this size go inline. Together with SOCKET_BUFFER it guarantees
# that one message always fits the socket buffer, so send never blocks.
INLINE_MAX = 64 * 1024
# Asked for on both ends; Linux grants up to net.core.wmem_max (212992 by default).
SOCKET_BUFFER = 256 * 1024
# Linux's SCM_MAX_FD: the most descriptors one message may carry.
MAX_FDS = 253

# <length:u64 little-endian><kind:u8>, written with int methods: the struct module
# is one more shared library for every spawned child to load.
_HEADER_SIZE = 9
_C_INT_SIZE = memoryview(bytes(4)).cast("i").itemsize  # a C int
_INLINE, _SPILLED = 0, 1
#: A whole message with no data (length 0, inline), which needs no framing code to
#: send: a child's "nothing to report" (``_start._bootstrap``).
EMPTY_MESSAGE = bytes(_HEADER_SIZE)


class WireError(EOFError):
    """The peer went away, or sent something that is not a proctor frame."""


_default_buffers_suffice: bool | None = None


def socketpair() -> tuple[socket.socket, socket.socket]:
    """Return a connected pair of Unix stream sockets sized for one message."""
    import socket

    return _sized(*socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))


def plain_socketpair() -> tuple[_socket.socket, _socket.socket]:
    """:func:`socketpair`, as the C module's socket objects.

    They have every method a message needs, without ``socket.py``'s Python wrapper,
    whose calls at creation and close wrote ~17 pages per fork start that a fork
    parent then copies (issue 17).
    """
    make = _plain_pair
    if make is None:
        make = _load_plain_pair()
    return _sized(*make())


# _socket.socketpair(AF_UNIX, SOCK_STREAM), bound at the first pair: an import statement
# at every call walks the import machinery, whose writes (the module's spec...) are
# pages a fork parent copies again at each start (~3 per start, issue 17).
_plain_pair: Callable[[], tuple[_socket.socket, _socket.socket]] | None = None


def _load_plain_pair() -> Callable[[], tuple[_socket.socket, _socket.socket]]:
    global _plain_pair
    import _socket
    import functools

    _plain_pair = functools.partial(_socket.socketpair, _socket.AF_UNIX, _socket.SOCK_STREAM)
    return _plain_pair


def _sized(a: _Socket, b: _Socket) -> tuple[_Socket, _Socket]:
    global _default_buffers_suffice
    # (A new socket's timeout is the default timeout: reading it needs no import
    # statement, whose trip through the import machinery writes pages a fork
    # parent copies again at each start.)
    if a.gettimeout() is not None:
        # socket.setdefaulttimeout() makes new sockets non-blocking in the kernel;
        # the other end's process (a child handed it) would see EAGAIN where it
        # expects to wait. These pairs block; their users apply their own timeouts.
        a.settimeout(None)
        b.settimeout(None)
    if _default_buffers_suffice is None:
        import _socket

        # Linux's default (~208 KiB) already holds a whole inline message; then
        # the four setsockopt calls below are skipped for every later pair
        # (they are a measurable part of starting a fork child).
        default = a.getsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF)
        _default_buffers_suffice = default >= 2 * (INLINE_MAX + _HEADER_SIZE)
    if _default_buffers_suffice:
        return a, b
    import _socket

    for sock in (a, b):
        for option in (_socket.SO_SNDBUF, _socket.SO_RCVBUF):
            try:
                sock.setsockopt(_socket.SOL_SOCKET, option, SOCKET_BUFFER)
            except OSError:
                pass  # keep the system default; large messages spill anyway
    return a, b


def send_message(sock: _socket.socket, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
    """Send ``data`` and duplicates of ``fds`` as one message.

    Raises:
        ValueError: for more than MAX_FDS descriptors.
        OSError: when the peer is gone (``BrokenPipeError``).
    """
    fds = list(fds)
    spill_fd = -1
    if len(data) > INLINE_MAX:
        spill_fd = memfd_with(data)
        fds.insert(0, spill_fd)
        parts = [_header(len(data), _SPILLED)]
    else:
        parts = [_header(len(data), _INLINE), data]
    if len(fds) > MAX_FDS:
        raise ValueError(
            f"a child can be handed at most {MAX_FDS} file descriptors at start; "
            f"this one needs {len(fds)}"
        )
    import _socket

    try:
        ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _c_ints(fds))] if fds else []
        total = sum(len(p) for p in parts)
        sent = sock.sendmsg(parts, ancillary)
        if sent < total:
            # A signal can cut a stream send short; the descriptors went with
            # the first byte, the rest is plain data.
            sock.sendall(b"".join(parts)[sent:])
    finally:
        if spill_fd >= 0:
            os.close(spill_fd)


def _header(length: int, kind: int) -> bytes:
    return length.to_bytes(8, "little") + bytes((kind,))


def recv_message(sock: _socket.socket) -> tuple[bytearray, list[int]]:
    """Receive one message sent by :func:`send_message`; the caller owns the fds.

    Raises:
        WireError: when the peer closed or died before a whole message arrived.
        BlockingIOError: on a non-blocking socket with nothing to read yet.
    """
    import _socket

    header = bytearray()
    fds: list[int] = []
    try:
        while len(header) < _HEADER_SIZE:
            chunk, ancdata, _flags, _addr = sock.recvmsg(
                _HEADER_SIZE - len(header), _socket.CMSG_SPACE(MAX_FDS * 4), cloexec_flag()
            )
            fds.extend(fds_from(ancdata))
            if not chunk:
                raise WireError("the peer closed the channel before sending a message")
            header += chunk
        length, kind = int.from_bytes(header[:8], "little"), header[8]
        if kind == _SPILLED:
            if not fds:
                raise WireError("a spilled message arrived without its file")
            spill_fd = fds.pop(0)
            try:
                data = _unspill(spill_fd, length)
            finally:
                os.close(spill_fd)
        elif kind == _INLINE and length <= INLINE_MAX:
            data = recv_exactly(sock, length)
        else:
            raise WireError(f"corrupt frame header: length={length} kind={kind}")
        return data, fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def cloexec_flag() -> int:
    """The ``recvmsg`` flag that makes received descriptors close-on-exec.

    As every descriptor Python makes is (PEP 446): without it, a process that
    execs with ``close_fds=False`` carries what it received (a fork-server
    child its channel). Every receive of descriptors passes it; where the
    platform lacks it (macOS) it is 0, and ``fds_from`` marks them instead.
    """
    import _socket

    return int(getattr(_socket, "MSG_CMSG_CLOEXEC", 0))


def fds_from(ancdata: list) -> list[int]:
    """The descriptors in a ``recvmsg`` ancillary-data list (the caller owns them),
    close-on-exec (see :func:`cloexec_flag`)."""
    import _socket

    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            whole = len(payload) - len(payload) % _C_INT_SIZE
            fds.extend(memoryview(payload)[:whole].cast("i"))
    if fds and not hasattr(_socket, "MSG_CMSG_CLOEXEC"):
        for fd in fds:
            os.set_inheritable(fd, False)
    return fds


def _c_ints(fds: list[int]) -> bytes:
    # SCM_RIGHTS's payload: C ints in the machine's order. Written and read with int
    # and memoryview methods: the array module imports collections, ~7 M
    # instructions of a spawned child's start (issue 17).
    return b"".join(fd.to_bytes(_C_INT_SIZE, sys.byteorder, signed=True) for fd in fds)


def needs_socket(data: bytes, fds: list[int] | tuple[int, ...] = ()) -> bool:
    """Whether the message ``send_message(sock, data, fds)`` sends carries descriptors
    (its own or a memfd holding a large ``data``): its receiver needs ``recvmsg``."""
    return bool(fds) or len(data) > INLINE_MAX


def read_plain_message(fd: int) -> bytearray:
    """Receive with ``os.read`` one message that carries no descriptors (see
    :func:`needs_socket`): a spawned child reads its start message so without
    loading ``_socket``.

    Raises:
        WireError: when the peer closed first, or sent a spilled message.
    """
    header = _read_exactly(fd, _HEADER_SIZE)
    length, kind = int.from_bytes(header[:8], "little"), header[8]
    if kind != _INLINE or length > INLINE_MAX:
        raise WireError(f"expected a message without descriptors: length={length} kind={kind}")
    return _read_exactly(fd, length)


def _read_exactly(fd: int, length: int) -> bytearray:
    buffer = bytearray(length)
    view = memoryview(buffer)
    got = 0
    while got < length:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise WireError(f"the peer closed the channel after {got} of {length} bytes")
        got += n
    return buffer


def recv_exactly(sock: _socket.socket, length: int) -> bytearray:
    """Read exactly ``length`` bytes; ``WireError`` (an ``EOFError``) if the peer closes first."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    got = 0
    while got < length:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise WireError(f"the peer closed the channel after {got} of {length} bytes")
        got += n
    return buffer


def memfd_with(data: bytes | memoryview, name: str = "proctor-message") -> int:
    """A new anonymous file holding a copy of ``data``; the caller owns the descriptor.

    A memfd on Linux; an unlinked temporary file elsewhere (macOS). Used for
    anything too large to go inline: start payloads, outcomes, queue buffers.
    """
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
    else:
        import tempfile

        with tempfile.TemporaryFile(prefix=name + "-") as f:
            fd = os.dup(f.fileno())
    try:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def map_memfd(fd: int) -> mmap.mmap | bytearray:
    """Map a file made by :func:`memfd_with`, writable and shared; the caller keeps ``fd``.

    The pages are mapped at once (``MAP_POPULATE``): the receiver of a large
    buffer is about to read it, and one system call beats a fault per page.
    """
    # Imported here: only large messages come as memfds, and a spawned child that
    # receives none skips loading the module.
    import mmap

    size = os.fstat(fd).st_size
    if size == 0:
        return bytearray()
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    return mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)


def _unspill(fd: int, length: int) -> bytearray:
    size = os.fstat(fd).st_size
    if size != length:
        raise WireError(f"a spilled message holds {size} bytes, its header says {length}")
    buffer = bytearray(length)
    view = memoryview(buffer)
    got = 0
    while got < length:
        n = _pread_into(fd, view[got:], got)
        if n == 0:
            raise WireError("a spilled message ended early")
        got += n
    return buffer


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    chunk = os.pread(fd, min(len(view), 1 << 24), offset)
    view[: len(chunk)] = chunk
    return len(chunk)
