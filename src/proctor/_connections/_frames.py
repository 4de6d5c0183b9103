"""The frame format of a connection: what one message looks like on the wire.

Every message is one frame: an 8-byte big-endian header, then the body. The
header's top 16 bits are a tag, so that garbage or a stream out of step is
caught at the first header; the low 48 bits are the body's length::

    frame channel (a Pipe() end's pipe, or a Listener/Client socket)
    ┌────────┬──────────────┐
    │ tag 16 │ length 48    │ body                   "PR": the body follows here
    ├────────┼──────────────┼────────────┐
    │ tag 16 │ length 48    │ frame id 64│           any other tag: the body is a side
    └────────┴──────────────┴────────────┘           message (Pipe() ends only)

    "PD": one datagram on the datagram socket
    ┌──────────┐
    │ frame id │ body
    └──────────┘

    "PS" "PF" "PM" "PG" "PH" "PI": a side message on the stream socket, `count`
    descriptors attached
    ┌──────────┬───────┬───────┐
    │ frame id │ count │ flags │ body │ frame id       inline body ("PS", "PF", "PH")
    └──────────┴───────┴───────┘
    │ frame id │ count │ flags │                       body in the first memfd
                                                       (flags: BODY_IN_FD; "PM" "PG" "PI")

    "PU": a Listener/Client connection over AF_UNIX: a pickle with descriptors
    ┌────────┬──────────────┬──────────┐
    │ tag 16 │ length 48    │ count 64 │ body          `count` descriptors attached
    └────────┴──────────────┴──────────┘               to the header's first byte

On a ``Pipe()`` end's pipe a frame shorter than ``PIPE_PREFIX`` (128) bytes is
padded with zeros to that length, so that its reader takes exactly one frame per
read (see ``PIPE_PREFIX``); the header's length is the body's, without padding.
A private channel (a pool worker's: ``EndState._private_frames``) is not padded,
and its reader reads ahead.

"PF" and "PG" bodies are pickles whose large out-of-band buffers come as the
memfds of the side message. "PH", "PI" and "PU" bodies are pickles of objects
that own descriptors (a Connection, a socket, a DupFd): the descriptors come with
the message (``_core._reduction``). The frame id ties a side message to its header. A
datagram arrives whole or not at all, but not necessarily in the order of the
headers when several processes send at once: the reader matches it by its id.
On the stream the id, repeated after an inline body, proves that the whole body
came from one sender.

Also here: the limits a header is checked against, the buffer arguments of
``send_bytes()`` and ``recv_bytes_into()`` checked, and how an object becomes a
body (pickle first, by value when plain pickle cannot, large buffers out of band).
"""

from __future__ import annotations

import _pickle
import os
import struct

from .._core._integers import integral
from .._core._serialization import OOB_THRESHOLD, PROTOCOL, dumps_exact, dumps_oob
from .._core._wire import MAX_FDS

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing (and pickle.py, with re) cost a spawned child milliseconds
    from pickle import PickleBuffer
    from typing import Any

__all__ = (
    "BODY_IN_FD",
    "DATAGRAM_BODY_LIMIT",
    "DATAGRAM_SIZE",
    "FDS_INLINE",
    "FRAME_ID",
    "HEADER",
    "HEADER_SIZE",
    "ID_SIZE",
    "IN_DATAGRAM",
    "LENGTH_MASK",
    "MAX_HANDLES",
    "ON_CHANNEL",
    "ON_SOCKET",
    "ON_SOCKET_FD",
    "PICKLE_PROTOCOL",
    "PIPE_INLINE",
    "PIPE_PADDING",
    "PIPE_PREFIX",
    "PIPE_TOKEN",
    "PRIVATE_TOKEN",
    "SCALARS",
    "SIDE",
    "SIDE_TAGS",
    "TAG",
    "TAG_BITS",
    "TAG_DGRAM_BITS",
    "TAG_FDS_INLINE",
    "TAG_FDS_INLINE_BITS",
    "TAG_HANDLES_BITS",
    "TAG_HANDLES_FD_BITS",
    "TAG_MEMFD_BITS",
    "TAG_MEMFD_FD_BITS",
    "TAG_SHIFT",
    "TAG_SOCKET_BITS",
    "TAG_SOCKET_FD_BITS",
    "TOKEN_SIZE",
    "TRAILER",
    "WITH_HANDLES",
    "WITH_HANDLES_FD",
    "WITH_MEMFDS",
    "WITH_MEMFDS_FD",
    "byte_view",
    "check_maxlength",
    "checked_view",
    "format_size",
    "in_band",
    "memory_limit",
    "parts_after",
    "pickle_fallback",
    "pickle_for_send",
    "pickle_in_band",
)

# -- headers ------------------------------------------------------------------------

HEADER = struct.Struct("!Q")
HEADER_SIZE = HEADER.size
TAG_SHIFT = 48
# "PR": catches a stream that is out of step or not proctor's at the first header.
TAG = 0x5052
TAG_BITS = TAG << TAG_SHIFT
# "PS": a Pipe() frame whose body follows on the side socket, not on the pipe.
TAG_SOCKET = 0x5053
TAG_SOCKET_BITS = TAG_SOCKET << TAG_SHIFT
# "PF": a Pipe() frame whose body is a pickle, and whose large out-of-band buffers
# come as memfds with it on the side socket.
TAG_MEMFD = 0x5046
TAG_MEMFD_BITS = TAG_MEMFD << TAG_SHIFT
# "PM" and "PG": as "PS" and "PF", with the body (the pickle) in a memfd too, the
# first descriptor of the side message (sends with a timeout).
TAG_SOCKET_FD = 0x504D
TAG_SOCKET_FD_BITS = TAG_SOCKET_FD << TAG_SHIFT
TAG_MEMFD_FD = 0x5047
TAG_MEMFD_FD_BITS = TAG_MEMFD_FD << TAG_SHIFT
# "PD": a Pipe() frame whose body is one datagram on the datagram socket (after
# the frame id). Datagrams never carry descriptors.
TAG_DGRAM = 0x5044
TAG_DGRAM_BITS = TAG_DGRAM << TAG_SHIFT
# "PH" and "PI": as "PS" and "PM", for a pickle whose objects own descriptors
# (Connection, socket, DupFd): those come with the side message, after the memfd
# of a "PI" body.
TAG_HANDLES = 0x5048
TAG_HANDLES_BITS = TAG_HANDLES << TAG_SHIFT
TAG_HANDLES_FD = 0x5049
TAG_HANDLES_FD_BITS = TAG_HANDLES_FD << TAG_SHIFT
# "PU": the same on a Listener/Client connection over AF_UNIX, whose one socket
# carries everything: the count of descriptors follows the header (where a side
# frame has its id), then the body; the descriptors ride with the header.
TAG_FDS_INLINE = 0x5055
TAG_FDS_INLINE_BITS = TAG_FDS_INLINE << TAG_SHIFT
LENGTH_MASK = (1 << TAG_SHIFT) - 1
# Where a frame's body is: on the frame channel; on the stream socket; there, with
# memfds for its large buffers; the last two with the body in a memfd; in a
# datagram; on the stream socket with descriptors (body inline, or in a memfd);
# on the frame channel of a socket connection, with descriptors.
(
    ON_CHANNEL,
    ON_SOCKET,
    WITH_MEMFDS,
    ON_SOCKET_FD,
    WITH_MEMFDS_FD,
    IN_DATAGRAM,
    WITH_HANDLES,
    WITH_HANDLES_FD,
    FDS_INLINE,
) = range(9)
SIDE_TAGS = {
    TAG_SOCKET: ON_SOCKET,
    TAG_MEMFD: WITH_MEMFDS,
    TAG_SOCKET_FD: ON_SOCKET_FD,
    TAG_MEMFD_FD: WITH_MEMFDS_FD,
    TAG_DGRAM: IN_DATAGRAM,
    TAG_HANDLES: WITH_HANDLES,
    TAG_HANDLES_FD: WITH_HANDLES_FD,
}
# The most descriptors one message may carry: the kernel's limit per message
# (Linux's SCM_MAX_FD), less one for the memfd of a body sent with a timeout.
MAX_HANDLES = MAX_FDS - 1

# -- side messages ------------------------------------------------------------------

# After a side frame's header on the pipe: the frame's id, which its side message repeats.
FRAME_ID = struct.Struct("!Q")
ID_SIZE = FRAME_ID.size
# A Pipe() end's receiver reads a frame off its pipe in one read of this many
# bytes, plus one more for the rest of an inline body longer than PIPE_INLINE,
# and never past the frame: the next one belongs to whichever process receives
# next on the end (see _receiving). So every frame on a pipe is at least this
# long: a side frame's token (header, id) is padded with zeros (PIPE_TOKEN), and
# so is an inline body shorter than PIPE_INLINE (PIPE_PADDING[n]). 128 bytes
# takes most small messages (a pickled tuple of a few scalars is 30-60 bytes)
# in one read; a 64 KiB pipe still holds 512 such frames.
PIPE_PREFIX = 128
PIPE_INLINE = PIPE_PREFIX - HEADER_SIZE
PIPE_PADDING = tuple(bytes(PIPE_INLINE - n) for n in range(PIPE_INLINE))
# A side frame's token: its header and id (TOKEN_SIZE bytes), padded; and as it
# goes unpadded on a private channel (see EndState._private_frames).
TOKEN_SIZE = HEADER_SIZE + ID_SIZE
PIPE_TOKEN = struct.Struct(f"{HEADER.format}{FRAME_ID.format[1:]}{PIPE_PREFIX - TOKEN_SIZE}x")
PRIVATE_TOKEN = struct.Struct(f"{HEADER.format}{FRAME_ID.format[1:]}")
# A side message on the stream socket: frame id, count of descriptors attached,
# flags (BODY_IN_FD: the body is in the first memfd).
SIDE = struct.Struct("<QHH")
BODY_IN_FD = 1
# An inline body on the stream socket is followed by the frame id again.
TRAILER = FRAME_ID
# The largest inline body of a datagram. A datagram is built by the kernel from one
# head allocation plus page fragments: up to this size the head stays small
# (<= 16 KiB on Linux); past it the stream socket moves bodies faster, and its
# buffer bounds the memory a slow reader lets a sender fill.
DATAGRAM_BODY_LIMIT = 64 * 1024
DATAGRAM_SIZE = ID_SIZE + DATAGRAM_BODY_LIMIT


def parts_after(parts: list[Any], done: int) -> list[Any]:
    """What is left of a message in ``parts`` (bytes-like) once ``done`` bytes crossed."""
    rest = []
    for part in parts:
        size = memoryview(part).nbytes
        if done >= size:
            done -= size
            continue
        rest.append(memoryview(part)[done:] if done else part)
        done = 0
    return rest


# -- limits -------------------------------------------------------------------------

_physical_memory: int | None = None


def memory_limit() -> int:
    """The largest body a header may announce: this machine's physical memory."""
    global _physical_memory
    if _physical_memory is None:
        try:
            _physical_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            _physical_memory = LENGTH_MASK
        if _physical_memory <= 0:
            _physical_memory = LENGTH_MASK
    return _physical_memory


def format_size(n: int) -> str:
    """``n`` bytes for a message: "512 bytes", "1.5 MiB"."""
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} TiB"


def check_maxlength(maxlength: int | None) -> int | None:
    """``recv_bytes()``'s ``maxlength``, checked.

    Raises:
        TypeError: it is not an int or None.
        ValueError: it is negative.
    """
    if maxlength is None:
        return None
    if maxlength.__class__ is not int:
        maxlength = integral(maxlength)
    if isinstance(maxlength, bool) or not isinstance(maxlength, int):
        raise TypeError(f"maxlength must be an int or None, not {maxlength!r}")
    if maxlength < 0:
        raise ValueError(f"maxlength must be >= 0, got {maxlength}")
    return maxlength


def checked_view(buf: Any, offset: Any, size: Any) -> memoryview:
    """The bytes ``send_bytes(buf, offset, size)`` sends, checked."""
    view = byte_view(buf)
    total = view.nbytes
    if offset.__class__ is not int:
        offset = integral(offset)
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offset must be an int, not {offset!r}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if offset > total:
        raise ValueError(f"offset {offset} is past the end of the {total}-byte buffer")
    if size is not None and size.__class__ is not int:
        size = integral(size)
    if size is None:
        size = total - offset
    elif isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int or None, not {size!r}")
    elif size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    elif offset + size > total:
        raise ValueError(
            f"offset {offset} + size {size} runs past the end of the {total}-byte buffer"
        )
    if offset or size != total:
        view = view[offset : offset + size]
    return view


def byte_view(buf: Any) -> memoryview:
    """``buf`` as a flat view of bytes (a C-contiguous buffer of any format).

    Raises:
        TypeError: ``buf`` is not bytes-like, or not C-contiguous.
    """
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(
            f"expected a bytes-like object (bytes, bytearray, memoryview, array), "
            f"not {type(buf).__name__}"
        ) from None
    if view.ndim != 1 or view.itemsize != 1:
        try:
            view = view.cast("B")
        except TypeError:
            raise TypeError(
                f"the {type(buf).__name__} buffer is not C-contiguous; pass a contiguous copy"
            ) from None
    return view


# -- bodies -------------------------------------------------------------------------

PICKLE_PROTOCOL = PROTOCOL  # 5: out-of-band buffers
# Objects that never hold a buffer: pickled without a buffer callback.
SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex})

_dumps = _pickle.dumps
_loads = _pickle.loads


def pickle_fallback(obj: Any) -> bytes:
    """Pickle ``obj`` exactly, after plain pickle refused it or mentioned ``__main__``.

    Plain pickle is several times faster, so it is tried first; the exact pass
    is needed only for lambdas, closures and objects of the main script. Both
    payloads unpickle with plain ``pickle.loads``.

    Raises:
        PicklingError: naming the part of ``obj`` that cannot be pickled.
    """
    return dumps_exact(obj)


def pickle_for_send(obj: Any) -> tuple[bytes, list[PickleBuffer]]:
    """Pickle ``obj`` as ``send()`` does, leaving buffers of OOB_THRESHOLD or more out of band."""
    return dumps_oob(obj, OOB_THRESHOLD)


def pickle_in_band(body: bytes, buffers: list[PickleBuffer]) -> bytes:
    """The pickle of an object whose large buffers were taken out: with them back in."""
    return _dumps(_loads(body, buffers=buffers), PICKLE_PROTOCOL)


def in_band(obj: Any) -> bytes:
    """What ``recv_bytes()`` returns for an object that came with memfds: its pickle."""
    return _dumps(obj, PICKLE_PROTOCOL)
