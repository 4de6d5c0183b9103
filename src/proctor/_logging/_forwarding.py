"""Children's log records, handled by the parent's handlers.

::

    child                                            parent
    ─────                                            ──────
    logger.warning("x")                              LogListener thread (one per process,
      └─ ForwardingHandler (fork: reached through      running while any child forwards,
         the inherited handlers; spawn, forkserver:    and LISTENER_LINGER after)
         on root and on every logger that does not
         propagate)
                                                         epoll over every child's pipe
           record ─▶ one frame, message pre-formatted ─▶ frames ─▶ LogRecord (decode_record)
           [len:u32 | kind:u8 | struct, marshal, pickle] logger.handle(record)
           one write() per record, before emit returns
    join() (LogListener.end), once the child exited: it ends the stream if the
    listener has read it to EOF, else waits for the listener to. Either way every
    record the child logged is handled by then, by the listener's thread.

    Where the channel comes from:
      spawn, forkserver: the parent makes it at the start and hands the child its
        end; it holds a copy of that end until join(), so the child's exit does not
        wake the listener (LogListener.attach, LogStream.keeper).
      fork: the parent makes nothing but a token (LogListener.expect). The
        child's first record makes the channel and sends its reading end, with
        the token, over the listener's request socket (a datagram socket pair;
        children inherit the sending end); the listener makes the stream then.
        A child that never logs costs no pipe and no stream: the parent holds two
        descriptors per running fork child that has not logged, not four.
        join() takes a request the listener has not taken yet (claim).

    records sent so far: _runtime.records_forwarded ──▶ in a pool worker's result frame
                                                     LogStream.wait_handled(that count)
                                                     before the result is delivered

A child starts with the parent's logger levels (and ``logging.disable`` level),
so it drops what the parent would drop before paying to send it. Under fork the
child inherits the parent's handlers; they stay on its loggers, each passing the
records it takes to the forwarding handler (once per record, whichever it meets
first) and never flushed or closed there (:func:`_forward_through_inherited`), so
that each record is handled once, by the parent. Handlers the child adds itself
keep working.

Records are sent with their message already formatted (``args`` cleared) and
their exception formatted into ``exc_text``, so arguments that cannot be pickled
never stop a record. A record with only logging's own attributes travels as a
marshalled tuple of their values (:func:`encode_record`); one with extra
attributes as its pickled ``__dict__``, where values that cannot be pickled
travel as ``repr``. Most of a plain record's values are the same from one record
to the next of a process (logger, level, file, function, process, thread): when
they all are, the record travels as a *repeat* frame of only its message, time
and line (packed with struct), and the listener takes the rest from that
process's last plain record on the stream (``LogStream.remembered``). The stream
is reliable and in order, so the two sides agree on that last record as long as
the child remembers only what it sent whole.

The channel is a pipe (:func:`open_channel`; a socket pair where the pipe cannot
be made big enough). Each record is in it before its logging call returns -- no
buffering in the child -- so a child that calls ``os._exit`` or is SIGKILLed
right after logging loses none of the records it logged (a SIGKILL can tear only
the record being written, which the parent skips at EOF; a pipe write of up to
PIPE_BUF, 4 KiB, is atomic, so a short record is never torn).

Buffering is bounded: records wait in the child's pipe (its kernel buffer,
:data:`PIPE_BUFFER`) until the parent's listener handles them. A child whose
write finds no room waits up to :data:`FULL_WAIT` seconds; if the parent is
still stuck, the child drops records -- without waiting again -- until the
pipe has room, and then first sends a WARNING that says how many it dropped
(at exit it waits up to :data:`EXIT_FLUSH_WAIT` to deliver that warning).
A parent whose handlers are merely slower than the child's logging slows the
child to its pace (nothing is lost); a parent that stalls costs the child one
wait of at most FULL_WAIT per stall, never unbounded time. (So does a fork
child whose first record finds the request socket full: it drops the record
after FULL_WAIT and tries again at the next.)

Grandchildren forward to their parent's listener, whose ``handle()`` passes the
record to the parent's own forwarding handler: records climb to the top.

Records before results: the child counts the records it has sent whole
(``_runtime.records_forwarded``) and the listener those it has handled from each
stream (``LogStream.handled``); the frames are the same, in the same order, so a
pool worker that puts its count in a task's result lets the parent wait
(:meth:`LogStream.wait_handled`) until the listener has handled every record the
task logged before the result is delivered. The wait ends when the stream ends
too (the child died: whatever it sent has been read), and gives up when the listener
has handled nothing for :data:`RECORDS_WAIT` seconds (a handler stuck for good
delays results by that much once, not for ever).
"""

from __future__ import annotations

import _socket
import _thread
import errno
import io
import marshal
import operator
import os
import select
import struct
import sys
import threading
import time
import weakref

from .._core import _afterfork, _runtime, _wire
from .._core._system import keep_in_forks, let_go_in_forks
from . import _logger, _policy
from ._policy import forwarding_enabled, set_log_forwarding

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from typing import Any

__all__ = (
    "DRAIN_TIMEOUT",
    "FULL_WAIT",
    "RECORDS_WAIT",
    "LogListener",
    "LogStream",
    "capture_config",
    "decode_record",
    "encode_record",
    "fork_safe_threads",
    "forwarding_enabled",
    "install_in_child",
    "listener",
    "open_channel",
    "ready_fork_child",
    "set_log_forwarding",
)

# The size asked for the pipe that carries a child's records. A pipe packs small
# writes into its pages (a 74-byte record costs 74 bytes, where a socket charges
# each send ~1 KiB of bookkeeping), so this holds ~1,800 short records (the
# default 64 KiB: ~880; the socket pair below, with the usual wmem_max: ~330):
# slack for a listener that a busy machine schedules late. Not more: Linux counts
# a pipe's whole capacity against its user's pipe-user-pages-soft (16,384 pages),
# and once a user is past it, every new pipe of theirs -- any program's -- gets 2
# pages. At 128 KiB that takes ~500 living children; at 1 MiB it took 64. (bench
# logging at load 2, three alternated pairs: 1.25-1.43x with 1 MiB, 1.32-1.35x
# with this.) A write to a pipe costs the child about half the system time of a
# send() on a Unix socket, and reading costs the listener less too (no socket
# buffer to free per record).
PIPE_BUFFER = 128 << 10
# Where the pipe cannot have that size, a socket pair with this send buffer. The
# kernel charges each record's send about 1 KiB of bookkeeping on top of its
# bytes, so its default (208 KiB) holds only ~170 short records: a child then
# stops every 170 records until the listener is scheduled. Linux doubles this
# and caps it at twice net.core.wmem_max: ~6,500 records where wmem_max allows,
# ~330 with its usual default (212,992).
SEND_BUFFER = 4 << 20
# How long a child's write may wait for room before it starts dropping records.
FULL_WAIT = 1.0
# After handling what arrived, the listener lets this much time pass before it
# looks again, so that records arrive in batches: waking a thread on another
# core costs ~30 us on a VM, more than handling a record. Bounds display latency.
BATCH_WINDOW = 0.002
# Once its last stream has ended, the listener's thread waits this long for a new
# one before it ends: starting a thread costs a start() ~170 us on an idle VM (and
# 1.3 ms at load 5: the new thread must run before Thread.start returns), which a
# loop of start+join paid at every start when the thread ended with each child
# (issue 17). A program that starts children further apart than this pays it at
# most once per LISTENER_LINGER (0.3%).
LISTENER_LINGER = 0.05
# ...unless the last look found this many records or more: a child logging that
# fast keeps its pipe full, and would wait out the window with nothing to do
# (the wake-up costs little per record then).
BUSY_BATCH = 64
# A record half-written when the pipe filled up is finished within this long, or
# the child gives up forwarding (a frame cannot be abandoned half-way).
MIDFRAME_WAIT = 10.0
# A child that dropped records waits this long at exit to tell the parent so.
EXIT_FLUSH_WAIT = 2.0
# After a child ends, how long join() waits at most for its last records.
DRAIN_TIMEOUT = 10.0
# A result waiting for its task's records is delivered anyway once the listener has
# handled no record for this long: a handler stuck for good (a blocked network
# handler) must not hold up every result of the pool. As FORK_WAIT, for the same case.
RECORDS_WAIT = 2.0
# A frame: <length:u32><kind:u8><payload>; the length counts the kind byte.
_FRAME = struct.Struct("<IB")
_PLAIN = 0  # marshal of (message, fixed values, varying values) of logging's attributes
_GENERAL = 1  # pickle of the record's __dict__
_REPEAT = 2  # _REPEAT_FRAME's numbers, then the message in UTF-8: the fixed ones as last time
# A repeat frame: the header, then process, created, msecs, relativeCreated and
# lineno (_Layout.VARYING), then the message. Packing them with struct costs the
# child a third of marshalling them (~1,800 instructions fewer per record); the
# listener's unpacking and decoding costs about what unmarshalling did.
_REPEAT_NUMBERS = struct.Struct("<qdddq")
_REPEAT_FRAME = struct.Struct(_FRAME.format + _REPEAT_NUMBERS.format[1:])  # "<IB" "qdddq"
_REPEAT_LENGTH = 1 + _REPEAT_NUMBERS.size  # what the header's length counts besides the message
# Version 2 has no back-references: writing a record then needs no table of the
# objects seen (~10% fewer instructions), and a record has little to share.
_MARSHAL_VERSION = 2
# pickle.HIGHEST_PROTOCOL (5 on every Python proctor runs on), for the C pickler,
# which does not name it. The C module is loaded at the first record marshal cannot
# carry: pickle.py, loaded at import, was ~300 KiB more in every process that
# forwards, which each fork start copies the page tables of (issue 17).
_PICKLE_PROTOCOL = 5
_RECV_CHUNK = 256 * 1024
# What a fork child sends over its parent's request socket with its channel's
# reading end (LogListener.expect): the token of the stream it is for.
_REQUEST = struct.Struct("<q")
# What sending a request raises once the parent's end of the socket is gone.
_PARENT_GONE = frozenset(
    (errno.ECONNREFUSED, errno.ENOTCONN, errno.EPIPE, errno.EBADF, errno.ENOTSOCK)
)
# Received descriptors close-on-exec at once, where the system can (Linux).
_RECV_CLOEXEC: int = getattr(_socket, "MSG_CMSG_CLOEXEC", 0)
# Room for the one descriptor (a C int) a request carries. Alignment may leave room
# for a second; more are cut (MSG_CTRUNC), and a request with any but one is refused.
_ONE_FD_SPACE = _socket.CMSG_SPACE(4)
# Handler.handle returns the record that passed the filters from 3.12 on, True before.
_FILTER_RETURNS_RECORD = sys.version_info >= (3, 12)


def open_channel() -> tuple[int, io.FileIO]:
    """The (parent's end, child's end) of a new child's record channel.

    For a child that forwards (``_policy.forwarding_enabled``, which the caller asks
    first).

    A pipe of :data:`PIPE_BUFFER` bytes; where the pipe cannot have that size, a
    socket pair with a :data:`SEND_BUFFER` send buffer. Both ends non-blocking: the
    listener reads what is there, and the child's writes never block (the handler
    waits for room itself, up to FULL_WAIT). The parent's end is a bare descriptor,
    which the listener reads and closes with ``os`` calls (no file object: each
    object a start makes or touches is a page the fork parent copies, issue 17); the
    child's end a raw, unbuffered file that the child's handler writes.
    """
    read_fd, write_fd = _nonblocking_pipe()
    try:
        _resize_pipe(write_fd)
    except OSError:
        # Above /proc/sys/fs/pipe-max-size or the user's pipe-user-pages-hard.
        os.close(read_fd)
        os.close(write_fd)
        read_fd, write_fd = _socket_channel()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
    return read_fd, io.FileIO(write_fd, "wb")


def _nonblocking_pipe() -> tuple[int, int]:
    """A pipe whose two ends are non-blocking and close-on-exec (one call where pipe2 exists)."""
    if _pipe2 is not None:
        return _pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


_pipe2 = getattr(os, "pipe2", None)  # (not on macOS)


def ready_fork_child() -> None:
    """Just before a fork start that forwards logs: make here what the child uses.

    The forwarding handler (the parent's spare, made once, not a handler of this
    process's, see ``_policy._handlers_exist``; each fork child takes its copy for
    its own) and the record namer for logging's current factory
    (``_logger.prepare_record_namer``): made in each child, they were pages the
    child wrote, each a copy. Nothing here is per start; the child sets itself up
    (:func:`_forward_through_inherited`). No hook prepares anything at the fork:
    the parent's fork hook used to walk its loggers to make the child's handler
    lists, writing every logger's page (~30 pages a start with 200 loggers, issue 17).
    """
    handler = _policy.spare_handler
    if handler is None or handler is _child_handler:
        # (A child's inherited spare is its own forwarding handler: it makes one.)
        _policy.spare_handler = _handler_class()(None)
    _logger.prepare_record_namer()
    logging: Any = sys.modules["logging"]
    refs = getattr(logging, "_handlerList", None)
    if refs is not None and not _seen_already(refs):
        _look_for_unlisted_handlers(logging, refs)


# logging's list of every handler (its weak references) as _look_for_unlisted_handlers
# last saw it, and the handlers it found on loggers but not on that list (weakly).
_seen_handler_refs: tuple[Any, ...] = ()
_unlisted_handlers: list[Any] = []


def _seen_already(refs: list[Any]) -> bool:
    """Whether logging's list of handlers is as it was at the last look (the same
    weak reference objects, kept alive by ``_seen_handler_refs``: no number reused)."""
    seen = _seen_handler_refs
    if len(refs) != len(seen):
        return False
    try:
        for index, ref in enumerate(seen):
            if refs[index] is not ref:
                return False
    except IndexError:  # (shortened meanwhile by another thread)
        return False
    return True


def _look_for_unlisted_handlers(logging: Any, refs: list[Any]) -> None:
    """Find the handlers on loggers that logging's list of handlers does not hold.

    A fork child finds the handlers it inherits in that list (a few entries, where
    the loggers are hundreds: _forward_through_inherited), but ``dictConfig`` and
    ``fileConfig`` empty it (after closing what it held) while handlers they do not
    replace stay on their loggers, working; a handler class whose ``__init__`` skips
    ``Handler.__init__`` is never on it. Such a handler's copy in a fork child would
    write each record it takes there, and the parent again (the record forwarded
    through another). So this walk over every logger runs when the list changed --
    the first fork start that forwards, and after a configuration -- not at each
    start (each logger looked at is a page written, ~30 with 200 loggers).
    """
    global _seen_handler_refs, _unlisted_handlers
    with logging._lock:
        listed = {id(ref()) for ref in refs}
        unlisted = []
        loggers = [logging.root, *logging.root.manager.loggerDict.values()]
        for logger in loggers:
            for handler in getattr(logger, "handlers", ()):  # (none on a PlaceHolder)
                if id(handler) not in listed:
                    listed.add(id(handler))
                    unlisted.append(weakref.ref(handler))
        _seen_handler_refs = tuple(refs)
        _unlisted_handlers = unlisted


def fork_safe_threads() -> tuple[int, ...]:
    """The native ids of this process's threads that a fork may leave behind safely:
    the listener's, if it runs (its fork hooks hold the dispatch lock through the
    fork, and the child makes a listener of its own), unless it is the one forking
    (a handler that starts a process: the child's only thread is then that one).

    For ``_start._native.fork_start``, which calls it before the before-fork hooks
    (no Python code may run between them and the fork) and, after them, counts the
    threads and then checks that each thread named here still runs: one that ended
    meanwhile is counted no more. (Only a thread alive now is named: the id of one
    that ended may be a newer thread's.)
    """
    got = _listener
    thread = None if got is None else got._thread
    if thread is None or thread.ident == _thread.get_ident() or not thread.is_alive():
        return ()
    native_id = thread.native_id
    return () if native_id is None else (native_id,)


def _resize_pipe(write_fd: int) -> None:
    """Give the pipe :data:`PIPE_BUFFER` bytes; OSError where it cannot have them."""
    # (fcntl is loaded by the process that makes a channel, not by every one that
    # loads this module: each extension module is five more mappings that every
    # fork start copies, issue 17. Where it cannot be loaded, the channel is a
    # socket pair, as where the pipe cannot be resized.)
    try:
        import fcntl
    except ImportError as exc:
        raise OSError(f"pipes cannot be resized here: {exc}") from exc

    set_pipe_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # (Linux)
    if set_pipe_size is None:
        raise OSError("pipes cannot be resized here")
    fcntl.fcntl(write_fd, set_pipe_size, PIPE_BUFFER)


def _socket_channel() -> tuple[int, int]:
    parent_end, child_end = _wire.plain_socketpair()
    try:
        child_end.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, SEND_BUFFER)
    except OSError:
        pass  # the default buffer still works, with less slack
    return parent_end.detach(), child_end.detach()


# -- what the child learns about the parent's configuration ---------------------------


def capture_config() -> dict[str, Any]:
    """The parent's logger levels and propagation, for a child to copy."""
    import logging

    from . import _logger as _logging

    levels = {}
    non_propagating = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            if logger.level != logging.NOTSET:
                levels[name] = logger.level
            if not logger.propagate:
                non_propagating.append(name)
    return {
        "root_level": logging.root.level,
        "levels": levels,
        "non_propagating": non_propagating,
        "disable": logging.root.manager.disable,
        "proctor_logger": _logging._logger is not None,
    }


# -- the child's side -------------------------------------------------------------------------


_child_channel: io.FileIO | None = None
_child_handler: Any = None
# What a child took off its loggers (the parent's handlers: where logging has no
# list of every handler, a fork child walks its loggers), kept for the child's
# life: never closed or freed here, since they are the parent's (a handler's stream
# flushed at its close would write the parent's buffered output a second time).
_inherited: list[Any] = []


def install_in_child(
    config: dict[str, Any] | None, channel: io.FileIO | int | tuple[int, int]
) -> None:
    """Make this (new child) process send its log records to the parent over ``channel``.

    Args:
        config: the parent's logging configuration (:func:`capture_config`); ``None``
            in a forked child, whose logging is a copy of its parent's at the fork
            (levels, ``logging.disable``, propagation, proctor's logger).
        channel: the child's end of its log channel (:func:`open_channel`), or its
            descriptor; in a fork child, the (request socket, token) its first
            record sends its channel with (:meth:`LogListener.expect`).

    A fork child keeps the handlers it inherits, each made to pass its records
    to the forwarding handler (:func:`_forward_through_inherited`); where logging
    has no list of every handler, it takes them off its loggers instead, as below.
    """
    global _child_channel, _child_handler
    if config is None and isinstance(channel, tuple) and _forward_through_inherited(channel):
        return
    import logging

    from . import _logger as _logging

    request = None
    own: io.FileIO | None = None  # (made at the first record where a request is given)
    if isinstance(channel, tuple):
        request = channel
    elif isinstance(channel, int):
        own = io.FileIO(channel, "wb")
    else:
        own = channel
    if config is not None and config["proctor_logger"]:
        _logging.get_logger()
    handler = _handler_class()(own)
    handler.request = request
    _child_handler = handler
    # Handlers inherited through fork belong to the parent, which handles
    # every record itself; keeping them would write each record twice.
    # (Kept, not freed: see _inherited.)
    root = logging.root
    _inherited.extend(root.handlers)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    non_propagating = []
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            if logger.handlers:
                _inherited.extend(logger.handlers)
                for old in list(logger.handlers):
                    logger.removeHandler(old)
            if config is None and not logger.propagate:
                non_propagating.append(logger)
    if config is None:
        _forget_inherited_handlers(
            logging, [ref for ref in getattr(logging, "_handlerList", ()) if ref() is handler]
        )
    if _child_channel is not None:
        # Our parent's channel to *its* parent, inherited through fork: ours is new.
        _child_channel.close()
    _child_channel = own
    _runtime.records_forwarded = 0  # counted on this channel
    if config is not None:
        logging.root.setLevel(config["root_level"])
        for name, level in config["levels"].items():
            logging.getLogger(name).setLevel(level)
        logging.disable(config["disable"])
        non_propagating = [logging.getLogger(name) for name in config["non_propagating"]]
    for logger in non_propagating:
        logger.propagate = False
        logger.addHandler(handler)
    if config is not None and not isinstance(logging.basicConfig, _BasicConfigBesideForwarding):
        logging.basicConfig = _BasicConfigBesideForwarding(logging.basicConfig)

    _logging.name_records_after_this_process()


class _BasicConfigBesideForwarding:
    """``logging.basicConfig`` in a spawn or forkserver child that forwards.

    The child's root logger has the forwarding handler, so the stdlib's function
    would do nothing -- where a stdlib child of those start methods, which has no
    handler, is configured: its log file made, its level set. This one does what
    the stdlib's does in such a child, beside forwarding: a destination of its own
    (``filename``, ``handlers``, a ``stream`` other than the standard ones) gets
    its handler, and ``level`` is set; a stream handler to the standard streams is
    not added, as the parent's handlers write those records already (a script's
    module-level ``basicConfig(...)``, run again by a spawned child, would print
    each record twice). A fork child inherits its parent's handlers in the stdlib,
    where the call does nothing; so it does in a proctor fork child.
    """

    def __init__(self, original: Any) -> None:
        self.original = original
        self.__wrapped__ = original
        self.__doc__ = original.__doc__

    def __call__(self, **kwargs: Any) -> None:
        import logging

        root = logging.root
        forwarding = [h for h in root.handlers if isinstance(h, _handler_class())]
        others = [h for h in root.handlers if h not in forwarding]
        if not forwarding or (others and not kwargs.get("force")):
            self.original(**kwargs)  # (configured already: the stdlib's no-op)
            return
        stream = kwargs.get("stream")
        if (
            "filename" not in kwargs
            and "handlers" not in kwargs
            and (stream is None or stream is sys.stdout or stream is sys.stderr)
        ):
            if kwargs.get("level") is not None:
                root.setLevel(kwargs["level"])
            return
        # Configured as a child with no handler would be; the forwarding handler is
        # taken off meanwhile so that force=True does not close it (its channel).
        for handler in forwarding:
            root.removeHandler(handler)
        try:
            self.original(**kwargs)
        finally:
            for handler in forwarding:
                root.addHandler(handler)


def _forward_through_inherited(request: tuple[int, int]) -> bool:
    """In a fork child: forward every record that reaches a handler inherited from
    the parent, once, instead of that handler's own work.

    The handlers stay on the child's loggers, as a stdlib fork child's do; each
    one's ``handle`` (and ``flush`` and ``close``) is replaced on the handler
    object: a record that reaches one goes to the parent, where the same loggers'
    handlers -- the originals -- handle it, and the next inherited handler the same
    record reaches sends nothing more (the forwarding handler's
    ``forward_inherited``). They are found in logging's list of every handler
    (``_handlerList``: a few entries), not by walking the loggers (each a page
    written), and are never freed, flushed or closed here: they are the parent's
    (a stream handler's buffered output would be written a second time). The
    handler and the record namer were made by the parent (:func:`ready_fork_child`).
    A child of a child replaces its parent's replacements the same way.

    False (nothing done) where logging keeps no such list: the caller then walks
    the loggers.
    """
    global _child_handler, _child_channel
    logging: Any = sys.modules["logging"]
    refs = getattr(logging, "_handlerList", None)
    if refs is None:
        return False
    handler = _policy.spare_handler
    if handler is None or handler is _child_handler:
        handler = _handler_class()(None)  # (the parent made none: made here)
    handler.request = request  # (its channel is made at its first record)
    null = logging.NullHandler
    # logging's last resort handles what meets no handler, in the child as in a
    # stdlib child: its own stderr.
    last_resorts = (getattr(logging, "_defaultLastResort", None), logging.lastResort)
    for ref in [*refs, *_unlisted_handlers]:  # (a copy: a collection may shorten it)
        inherited = ref()
        if (
            inherited is None
            or inherited is handler
            or type(inherited) is null
            or inherited is last_resorts[0]
            or inherited is last_resorts[1]
            or vars(inherited).get("handle") is _forward_inherited  # (by our parent)
        ):
            continue
        # (A forwarding handler inherited on a logger -- a spawn child's, whose fork
        # child this is -- is the parent's too: its channel is not ours.)
        inherited.handle = _forward_inherited
        inherited.flush = inherited.close = _leave_to_the_parent
    prepared = _logger._prepared_namer
    if prepared is not None and prepared[0] is logging._logRecordFactory:
        logging._logRecordFactory = prepared[1]
    else:
        _logger.name_records_after_this_process()
    previous = _child_channel
    _child_handler = handler
    _child_channel = None
    if previous is not None:
        previous.close()  # (our parent's channel to *its* parent: ours is new)
    if _runtime.records_forwarded:
        _runtime.records_forwarded = 0  # counted on this channel
    return True


def _forward_inherited(record: logging.LogRecord) -> Any:
    """An inherited handler's ``handle`` in a fork child: this process's forwarding
    handler's ``forward_inherited``, looked up at each call, so that a handler set so
    by a parent forwards through the process it is in (a grandchild's own)."""
    handler = _child_handler
    if handler is None:  # (not set so in this process: cannot happen)
        return False
    return handler.forward_inherited(record)


def _leave_to_the_parent(*_args: Any) -> None:
    """An inherited handler's ``flush`` and ``close`` in a fork child: the parent's work."""


def _forget_inherited_handlers(logging: Any, kept: list[Any]) -> None:
    """In a fork child: take the parent's handlers off logging's list of every handler.

    ``logging.shutdown()`` and ``logging.config.dictConfig`` (which a worker's
    initializer may call) flush and close every handler on that list: the parent's,
    inherited, would write what they had buffered (a ``MemoryHandler``'s records, a
    stream's bytes) a second time, from the child. The list keeps ``kept`` (the
    forwarding handler's entry); the entries taken off are kept (``_inherited``).
    """
    refs = getattr(logging, "_handlerList", None)
    if refs is None:
        return
    _inherited.append(refs[:])
    refs[:] = kept


_handler_cls: Any = None


def _handler_class() -> Any:
    global _handler_cls
    if _handler_cls is None:
        import logging

        class _ForwardingHandler(logging.Handler):
            """Sends each record to the parent; see the module docstring for overflow."""

            def __init__(self, channel: io.FileIO | None) -> None:
                super().__init__()
                # None: a spare, which a fork child takes for its own (install_in_child).
                if channel is not None:
                    os.set_blocking(channel.fileno(), False)
                # None in a fork child until its first record makes it (request).
                self.channel: io.FileIO = channel  # type: ignore[assignment]
                #: A fork child's (request socket's descriptor, token): where its first
                #: record sends the reading end of the channel it makes (LogListener.expect).
                self.request: tuple[int, int] | None = None
                self.dropped = 0
                self.dropped_name = "proctor"
                # The fixed values of the last plain record sent whole: what the
                # listener remembers for its process (see encode_record).
                self.sent_fixed: tuple[Any, ...] | None = None
                # The records forward_inherited has passed on that still exist.
                self._forwarded: weakref.WeakSet[logging.LogRecord] = weakref.WeakSet()

            def forward_inherited(self, record: logging.LogRecord) -> Any:
                """An inherited handler's ``handle`` in a fork child: the record goes
                to the parent, once, whichever of the inherited handlers it meets
                first (``_forward_through_inherited``); the others it meets send
                nothing, and the parent's loggers hand it to every handler of
                theirs. Once per record: the records passed on are remembered
                while they exist (weakly: a record is gone once its logging call
                returns, unless a handler keeps it), whatever the child's own
                handlers log in between. The inherited handlers' filters, levels
                and formatters are the parent's copies' to apply: a filter the
                child adds to one does not apply (its loggers' filters do)."""
                forwarded = self._forwarded
                if record in forwarded:
                    return False
                forwarded.add(record)
                return self.handle(record)

            def handle(self, record: logging.LogRecord) -> Any:
                # Handler.handle, less its filter pass and its acquire()/release()
                # calls while the handler has no filters (unless someone adds one).
                if self.filters:
                    return super().handle(record)
                with self.lock:  # type: ignore[union-attr]  # Handler.__init__ made it
                    self.emit(record)
                return record if _FILTER_RETURNS_RECORD else True

            def emit(self, record: logging.LogRecord) -> None:
                # Runs under the handler's lock (handle): one thread at a time
                # reads and updates sent_fixed, in the order frames are sent.
                try:
                    frame, fixed = encode_record(record, self.sent_fixed)
                    if self.channel is None and not self._open_channel():
                        if self.request is not None:  # the parent's listener is stuck
                            self.dropped += 1
                            self.dropped_name = record.name
                        return
                    if self.dropped:
                        self._emit_dropping(record, frame, fixed)
                        return
                    # The channel stays non-blocking: the common case is one write()
                    # (None: no room).
                    sent = self.channel.write(frame)
                    if sent == len(frame):
                        # Whole in the channel: the parent's listener will handle it (a
                        # pool worker's result waits for this count; see the module
                        # docstring).
                        _runtime.records_forwarded += 1
                    elif not self._send(frame, FULL_WAIT, sent or 0):
                        self.dropped = 1
                        self.dropped_name = record.name
                        return
                    if fixed is not None:
                        self.sent_fixed = fixed
                except OSError:
                    pass  # the parent is gone: nobody is left to read the record
                except Exception:
                    self.handleError(record)

            def _open_channel(self) -> bool:
                """A fork child's first record: make its channel and send the parent
                the reading end (under the handler's lock). False if the request
                socket had no room for FULL_WAIT (the parent's listener is stuck:
                the record is dropped, and the next one tries again), or the parent
                is gone (``request`` is then None: nothing more is sent)."""
                global _child_channel
                request = self.request
                if request is None:
                    return False
                try:
                    read_fd, channel = open_channel()
                except OSError:
                    return False  # (out of descriptors, say: dropped, counted)
                try:
                    sent = _send_request(request[0], _REQUEST.pack(request[1]), read_fd)
                except OSError as exc:
                    if exc.errno in _PARENT_GONE:
                        self.request = None
                    sent = False
                finally:
                    os.close(read_fd)
                if not sent:
                    channel.close()
                    return False
                self.channel = _child_channel = channel
                return True

            def _emit_dropping(
                self, record: logging.LogRecord, frame: bytes, fixed: tuple[Any, ...] | None
            ) -> None:
                # No more waiting until the channel has room again, and then the
                # parent first hears how much was lost.
                if self._send(self._dropped_notice(), wait=0):
                    self.dropped = 0
                    if not self._send(frame, wait=0):
                        self.dropped = 1
                        self.dropped_name = record.name
                    elif fixed is not None:
                        self.sent_fixed = fixed
                else:
                    self.dropped += 1
                    self.dropped_name = record.name

            def _send(self, frame: bytes, wait: float, sent: int | None = None) -> bool:
                """Put ``frame`` whole in the channel; ``sent``: bytes of it written already."""
                channel = self.channel
                if sent is None:
                    sent = channel.write(frame)
                if not sent:
                    if wait <= 0 or not _writable(channel, wait):
                        return False
                    sent = channel.write(frame) or 0
                view = memoryview(frame)[sent:]
                give_up = time.monotonic() + MIDFRAME_WAIT
                while view:  # never leave half a frame: finish it...
                    remaining = give_up - time.monotonic()
                    if remaining <= 0 or not _writable(channel, remaining):
                        # ...unless the parent stopped reading for good: end
                        # the stream (the parent skips the torn record at EOF)
                        # rather than block the child's logging call for ever.
                        channel.close()
                        return False
                    view = view[channel.write(view) or 0 :]
                _runtime.records_forwarded += 1
                return True

            def _dropped_notice(self) -> bytes:
                notice = logging.makeLogRecord(
                    {
                        # The dropped records' logger: the same handlers hear of the loss.
                        "name": self.dropped_name,
                        "levelno": logging.WARNING,
                        "levelname": "WARNING",
                        "msg": (
                            f"proctor dropped {self.dropped} log record(s) of this process: "
                            "the parent's log handlers could not keep up"
                        ),
                        "processName": _runtime.process_name(),
                        "process": os.getpid(),
                    }
                )
                return encode_record(notice)[0]

        _handler_cls = _ForwardingHandler
    return _handler_cls


def _send_request(fd: int, data: bytes, channel_fd: int) -> bool:
    """Send ``data`` with ``channel_fd`` over the request socket ``fd`` (one datagram).

    False if the socket had no room for FULL_WAIT; raises OSError if the parent's
    end is gone.
    """
    sock = _socket.socket(fileno=fd)  # (the descriptor stays open: detached below)
    try:
        sock.settimeout(0.0)  # (not socket.setdefaulttimeout()'s: this waits itself)
        message = [data]
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", channel_fd))]
        deadline = None
        while True:
            try:
                sock.sendmsg(message, rights)
                return True
            except BlockingIOError:  # (other children's requests fill it)
                now = time.monotonic()
                if deadline is None:
                    deadline = now + FULL_WAIT
                remaining = deadline - now
                if remaining <= 0 or not _writable(fd, remaining):
                    return False
    finally:
        sock.detach()


def flush_child() -> None:
    """At a child's exit: report dropped records if the parent has room in EXIT_FLUSH_WAIT."""
    handler = _child_handler
    if handler is not None and handler.dropped:
        notice = handler._dropped_notice()
        # Under the handler's lock, as emit() is (a thread may still be logging):
        # not waited for past EXIT_FLUSH_WAIT.
        if not handler.lock.acquire(timeout=EXIT_FLUSH_WAIT):
            return
        try:
            # (A fork child whose first records found the request socket full
            # tries once more to send its channel.)
            if handler.channel is not None or handler._open_channel():
                handler._send(notice, wait=EXIT_FLUSH_WAIT)
        except OSError:
            pass
        finally:
            handler.lock.release()


def _writable(channel: io.FileIO | int, timeout: float | None) -> bool:
    """Whether ``channel`` (a file or a descriptor) has room within ``timeout`` seconds.

    poll, not select(): a descriptor numbered past 1023, in a parent with many
    descriptors open, is one select() refuses.
    """
    poller = select.poll()
    poller.register(channel, select.POLLOUT)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


def encode_record(
    record: logging.LogRecord, sent_fixed: tuple[Any, ...] | None = None
) -> tuple[bytes, tuple[Any, ...] | None]:
    """A record as one frame; message and traceback pre-formatted so it always travels.

    A record with exactly logging's own attributes (the common case) goes as a
    marshalled tuple of their values (:data:`_PLAIN`): about a half the
    instructions of pickling its ``__dict__``, on both sides. Its *fixed* values
    (:attr:`_Layout.fixed_names`) are mostly the same as the previous record's:
    when they equal ``sent_fixed``, the fixed values of the last plain record this
    sender sent whole, only the varying ones go (:data:`_REPEAT`, a third of the
    bytes and of the receiver's work), packed with struct where their types are
    the usual ones (else the record goes plain). Any other record -- ``extra=``
    attributes, values marshal cannot carry -- goes as its pickled ``__dict__``
    (:data:`_GENERAL`).

    Returns:
        The frame, and the fixed values the receiver remembers for the record's
        process once the frame has arrived whole (None: it remembers nothing new).
    """
    if record.exc_info and not record.exc_text:
        import logging

        record.exc_text = logging.Formatter().formatException(record.exc_info)
    message = record.getMessage()
    state = record.__dict__
    layout = _layout or _make_layout()
    # Exactly logging's attributes: as many, and every one there (a KeyError
    # otherwise). Cheaper than comparing the key sets.
    if len(state) == layout.size and "msg" in state and "args" in state and "exc_info" in state:
        try:
            fixed = layout.fixed(state)
            process = state["process"]
            # The process keys the receiver's memory: without one (logging's
            # logProcesses off) every plain record carries all of its values.
            if process is not None and fixed == sent_fixed:
                created = state["created"]
                msecs = state["msecs"]
                relative = state["relativeCreated"]
                lineno = state["lineno"]
                # Exactly these types, which arrive as they left (struct would
                # turn an int time into a float, a str subclass into a str).
                if (
                    type(created) is type(msecs) is type(relative) is float
                    and type(lineno) is type(process) is int
                    and type(message) is str
                ):
                    data = message.encode("utf-8", "surrogatepass")
                    try:
                        head = _REPEAT_FRAME.pack(
                            len(data) + _REPEAT_LENGTH,
                            _REPEAT,
                            process,
                            created,
                            msecs,
                            relative,
                            lineno,
                        )
                    except struct.error:
                        pass  # an int beyond 64 bits: the record goes plain
                    else:
                        return head + data, fixed
            data = marshal.dumps((message, fixed, layout.varying(state)), _MARSHAL_VERSION)
        except (KeyError, ValueError, TypeError):
            pass  # an attribute missing, or a value marshal cannot carry: pickle it
        else:
            frame = _FRAME.pack(len(data) + 1, _PLAIN) + data
            return frame, (fixed if process is not None else None)
    state = dict(state)
    state["msg"] = message
    state["args"] = None
    state["exc_info"] = None
    state.pop("message", None)
    import _pickle  # (records marshal carries, nearly all, need no pickle: _PICKLE_PROTOCOL)

    try:
        data = _pickle.dumps(state, _PICKLE_PROTOCOL)
    except Exception:
        data = _pickle.dumps(_picklable(state), _PICKLE_PROTOCOL)
    return _FRAME.pack(len(data) + 1, _GENERAL) + data, None


def decode_record(
    kind: int, payload: bytes | bytearray, remembered: dict[Any, dict[str, Any]]
) -> logging.LogRecord:
    """The record :func:`encode_record` made: a frame's ``kind`` and ``payload``.

    ``remembered`` is the stream's memory (``LogStream.remembered``): each process's
    last plain record's fixed attributes, updated by a plain frame and read by a
    repeat frame.

    Raises:
        ValueError: the payload is not a record (torn, from another Python, or a
            repeat of a process whose plain record this stream did not carry).
    """
    if kind == _REPEAT:
        try:
            process, created, msecs, relative, lineno = _REPEAT_NUMBERS.unpack_from(payload)
        except struct.error as exc:
            raise ValueError(f"a repeat frame of {len(payload)} bytes: {exc}") from None
        base = remembered.get(process)
        if base is None:
            raise ValueError(f"a repeat of process {process}'s record without its first")
        # A copy each: a handler may add attributes to a record (a Formatter does).
        state = base.copy()
        state["created"] = created
        state["msecs"] = msecs
        state["relativeCreated"] = relative
        state["lineno"] = lineno
        state["msg"] = payload[_REPEAT_NUMBERS.size :].decode("utf-8", "surrogatepass")
        return _record_of(state)
    if kind == _PLAIN:
        layout = _layout or _make_layout()
        message, fixed, varying = marshal.loads(payload)
        if len(fixed) != len(layout.fixed_names) or len(varying) != len(layout.varying_names):
            raise ValueError(
                f"a record of {len(fixed) + len(varying)} attributes where this Python's "
                f"logging has {len(layout.fixed_names) + len(layout.varying_names)}: the "
                "child runs another Python version"
            )
        base = dict(zip(layout.fixed_names, fixed, strict=False))  # lengths checked above
        base["args"] = None
        base["exc_info"] = None
        if base["process"] is not None:
            remembered[base["process"]] = base
    elif kind == _GENERAL:
        import _pickle

        return _record_of(_pickle.loads(payload))
    else:
        raise ValueError(f"unknown record kind {kind}")
    # A copy each: a handler may add attributes to a record (a Formatter does).
    state = base.copy()
    state["created"], state["msecs"], state["relativeCreated"], state["lineno"] = varying
    state["msg"] = message
    return _record_of(state)


def _record_of(state: dict[str, Any]) -> logging.LogRecord:
    """A record with the attributes ``state`` (a dict of its own, which it takes).

    What ``logging.makeLogRecord`` does, without running ``LogRecord.__init__`` first
    only to overwrite every attribute it sets -- unless this process set a record
    factory of its own (``logging.setLogRecordFactory``): its records have what the
    factory adds (which the parent's formatters may name), so these get it too.
    """
    logging = sys.modules["logging"]  # the records' listener imported it
    record_class = logging.LogRecord
    factory = logging.getLogRecordFactory()
    if factory is not record_class:
        try:
            record = factory(None, None, "", 0, "", (), None, None)
        except Exception:
            pass  # a factory that wants more than makeLogRecord gives: a plain record
        else:
            record.__dict__.update(state)
            return record
    record = record_class.__new__(record_class)
    record.__dict__ = state
    return record


class _Layout:
    """The attributes a plain record carries, in the order its frame lists their values."""

    #: What changes from one record of a process to the next (beside the message):
    #: a repeat frame carries only these. Every Python's LogRecord has them; the
    #: receiver (decode_record) unpacks them in this order.
    VARYING = ("created", "msecs", "relativeCreated", "lineno")

    def __init__(self, keys: frozenset[str]) -> None:
        self.size = len(keys)
        # msg travels formatted; args and exc_info never travel.
        travelling = keys - {"msg", "args", "exc_info"}
        missing = set(self.VARYING) - travelling
        if missing:
            raise RuntimeError(f"this Python's LogRecord has no {sorted(missing)}")
        self.varying_names = self.VARYING
        self.fixed_names = tuple(sorted(travelling - set(self.varying_names)))
        self.fixed = operator.itemgetter(*self.fixed_names)
        self.varying = operator.itemgetter(*self.varying_names)


_layout: _Layout | None = None


def _make_layout() -> _Layout:
    import logging

    global _layout
    # The attributes LogRecord.__init__ sets in this Python (3.12 added taskName).
    sample = logging.LogRecord("", logging.INFO, "", 0, "", None, None)
    _layout = _Layout(frozenset(sample.__dict__))
    return _layout


def _picklable(state: dict[str, Any]) -> dict[str, Any]:
    import _pickle

    safe = {}
    for key, value in state.items():
        try:
            _pickle.dumps(value, _PICKLE_PROTOCOL)
            safe[key] = value
        except Exception:
            safe[key] = repr(value)
    return safe


# -- the parent's side ----------------------------------------------------------------------


class LogStream:
    """One child's record stream as the parent sees it.

    Made and ended at every start of a child that forwards: it has slots, and the
    Event and Condition that threads wait on are made only when one waits (each
    object a start makes or touches is a page that a fork parent copies, issue 17).
    """

    __slots__ = (
        "_ended_event",
        "_progress",
        "buffer",
        "closing",
        "consumed",
        "drain_target",
        "ended",
        "fd",
        "handled",
        "keeper",
        "listener",
        "name",
        "reading",
        "received",
        "remembered",
        "token",
        "wanted",
        "wanted_bytes",
    )

    def __init__(self, fd: int, name: str, listener: LogListener) -> None:
        #: The parent's end of the channel (a non-blocking descriptor), which keys
        #: the listener's streams; the number stays here after the listener closed it.
        self.fd = fd
        self.name = name
        self.buffer = bytearray()
        #: Each sending process's last plain record's fixed attributes, which its
        #: repeat frames leave out (see encode_record).
        self.remembered: dict[Any, dict[str, Any]] = {}
        #: Records of this stream the listener has handled (skipped torn ones count:
        #: the child counted them as sent).
        self.handled = 0
        #: The count a thread in :meth:`wait_handled` waits for; 0 when none waits.
        self.wanted = 0
        #: Bytes read from the channel (under the listener's lock, as they are read),
        #: and bytes of it handled as whole records: see LogListener.end.
        self.received = 0
        self.consumed = 0
        #: The ``consumed`` a thread in :meth:`wait_consumed` waits for; 0 when none waits.
        self.wanted_bytes = 0
        #: Set by the first :meth:`LogListener.end`: the ``consumed`` count that holds
        #: every byte the child wrote, or -1 when that is the channel's EOF; a later
        #: ``end()`` (a ``join()`` or ``close()`` after one that timed out) waits for it.
        self.drain_target: int | None = None
        self.listener = listener
        #: This process's copy of the child's end of the channel (LogListener.attach),
        #: held until the child has ended: see LogListener.end.
        self.keeper: io.FileIO | None = None
        # Held while this stream's records are read and handled: by the listener's
        # thread, or by the thread that ends the stream (LogListener.end).
        self.reading = threading.Lock()
        # Set, under the listener's lock, once the stream is being closed.
        self.closing = False
        #: Set, under the listener's lock, once the channel is closed: every record
        #: the child sent whole has been handled (a torn last one skipped).
        self.ended = False
        # Made by the first thread that waits for ``ended`` (wait_drained).
        self._ended_event: threading.Event | None = None
        # Made by the first wait_handled().
        self._progress: threading.Condition | None = None
        #: A fork child's stream (made when the child's first record sent its
        #: channel, :meth:`LogListener.expect`): the token its start was given, by
        #: which ``join()`` finds it (:meth:`LogListener.claim`). None for a stream
        #: attached with its channel, and once :meth:`LogListener.end` has run (the
        #: child's part is handled).
        self.token: int | None = None

    def wait_drained(self, timeout: float | None) -> bool:
        """Wait until every record the child sent has been handled (the stream ended)."""
        if self.ended:
            return True
        with self.listener._lock:
            if self.ended:
                return True
            event = self._ended_event
            if event is None:
                event = self._ended_event = threading.Event()
        return event.wait(timeout)

    def wait_consumed(self, target: int, timeout: float) -> bool:
        """Wait until the listener has handled the channel's first ``target`` bytes.

        Returns True once it has (or the stream has ended), False if ``timeout``
        passed first.
        """
        if self.consumed >= target or self.ended:
            return True
        progress = self._progress_condition()
        with progress:
            self.wanted_bytes = target
            try:
                self.listener.hurry()
                deadline = time.monotonic() + timeout
                while self.consumed < target and not self.ended:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    progress.wait(remaining)
            finally:
                self.wanted_bytes = 0
        return True

    def _announce_ended(self) -> None:
        """Wake whoever waits for this stream (``ended`` set, under the listener's lock)."""
        event = self._ended_event
        if event is not None:
            event.set()
        self._progressed()

    def _progress_condition(self) -> threading.Condition:
        """The condition that waiters for the listener's progress wait on (made once)."""
        progress = self._progress
        if progress is None:
            with self.listener._lock:
                if self._progress is None:
                    self._progress = threading.Condition(threading.Lock())
                progress = self._progress
        return progress

    def wait_handled(self, count: int, stall: float | None = None) -> bool:
        """Wait until the listener has handled the child's first ``count`` records.

        ``count`` is the child's ``_runtime.records_forwarded`` when it sent something
        after those records (a pool worker's result). Returns True once they are
        handled, or the stream has ended (the child died or closed it: every whole
        record it sent has been handled then); False if the listener handled no
        record of any child for ``stall`` seconds (default :data:`RECORDS_WAIT`) -- a
        handler stuck -- and at once while it stays stuck after such a wait.
        """
        if self.handled >= count or self.ended:
            return True
        listener = self.listener
        if listener.stuck_at == listener.handled:
            return False  # stuck since an earlier wait gave up: don't wait again
        progress = self._progress_condition()
        with progress:
            self.wanted = count
            try:
                listener.hurry()
                seen = listener.handled
                if stall is None:
                    stall = RECORDS_WAIT
                deadline = time.monotonic() + stall
                while self.handled < count and not self.ended:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        if listener.handled == seen:
                            listener.stuck_at = seen
                            return False
                        # Slow, not stuck: it handled records meanwhile.
                        seen = listener.handled
                        deadline = time.monotonic() + stall
                        continue
                    progress.wait(remaining)
            finally:
                self.wanted = 0
        return True

    def _progressed(self) -> None:
        """The listener handled records of this stream, or the stream ended."""
        # ``wanted`` is read outside the lock: a waiter makes ``_progress``, sets
        # ``wanted`` and checks ``handled``, all before it waits under ``_progress``;
        # so either it sees the new count, or this sees its ``wanted`` and notifies
        # once it waits. (``wanted_bytes`` and ``consumed`` alike.)
        wanted = self.wanted
        wanted_bytes = self.wanted_bytes
        if (wanted and (self.handled >= wanted or self.ended)) or (
            wanted_bytes and (self.consumed >= wanted_bytes or self.ended)
        ):
            progress = self._progress
            if progress is not None:
                with progress:
                    progress.notify_all()


class LogListener:
    """One thread that handles every child's forwarded records; runs only while needed.

    The thread starts with the first stream and ends :data:`LISTENER_LINGER` after the
    last one ended. It waits in an epoll object (a poll object where epoll is
    missing) over the streams' descriptors, kept by number: the thread that
    attaches a stream registers it, and epoll sees a descriptor added while the
    thread waits, so the thread is not woken for it (with poll it is).

    A fork start gets a token, not a stream (:meth:`expect`): the child makes its
    channel at its first record and sends the reading end over the request socket
    (a datagram socket pair the listener makes with its thread; fork children
    inherit the sending end), with its token; the stream is made when that request
    is taken (:meth:`collect_requests`: by the thread, by ``join()`` and by a pool
    waiting for a worker's records, :meth:`claim` and :meth:`stream_for`). A child
    that never logs costs no pipe, no descriptor and no stream: its start only
    counts it (each object a fork start makes or touches is a page that the parent
    writes, issue 17).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[int, LogStream] = {}
        # Streams detach() took away, for the thread to let go of.
        self._detached: list[LogStream] = []
        # Streams whose keeper release() could not let go of at once (the lock was
        # taken), for the thread to; and (token, pid) of fork children whose
        # process was let go of (release_token, then _orphan).
        self._to_release: list[tuple[LogStream | int, int]] = []
        self._thread: threading.Thread | None = None
        self._poller: Any = None
        self._wake_r: _socket.socket | None = None
        self._wake_w: _socket.socket | None = None
        # Every descriptor this listener holds (wake pair, epoll, streams) is listed
        # among those that fork children let go of (_system.let_go_in_forks), as it
        # is opened, and taken off before it is closed (_forget_fd).
        #: Records handled so far, of every stream: a waiter sees the listener move.
        self.handled = 0
        #: ``handled`` when a :meth:`LogStream.wait_handled` gave up (-1: never).
        self.stuck_at = -1
        # Set by a waiter: the listener skips its batch window (BATCH_WINDOW) once.
        self._hurry = threading.Event()
        # Whether the thread waits without a time limit (it has streams; under the lock).
        self._waits_for_streams = False
        # The tokens of fork children that may still send their channel (expect()),
        # with the child's name (for a message); until claim(), or until an orphan's
        # child has exited (_drop_exited_orphans). The thread runs while any is here.
        self._expected: dict[int, str] = {}
        # The streams of expected children whose channel has come, by token.
        self._by_token: dict[int, LogStream] = {}
        self._next_token = 0
        # The request socket pair, made with the thread: the listener reads the
        # first, fork children inherit the second. The sending end is a bare
        # descriptor: a child lets go of the listener's objects when it makes a
        # listener of its own, and a socket object would close it then, under its
        # forwarding handler still waiting to send.
        self._request_r: _socket.socket | None = None
        # A poll object over the reading end alone: claim() asks it whether a
        # request waits before it tries to take one (a failed recvmsg, its
        # exception and socket.py's recv_fds wrote ~20 pages at each join() of a
        # child that never logged, each copied after the fork, issue 17).
        self._request_poll: Any = None
        self._request_w = -1
        # (token, pid) of expected children whose process was let go of without
        # join(): forgotten once the child has exited (the thread looks each
        # LISTENER_LINGER), or their stream left to the thread when it comes.
        self._orphans: list[tuple[int, int]] = []

    def hurry(self) -> None:
        """Make the listener skip its next batch window (at most BATCH_WINDOW later)."""
        self._hurry.set()

    def attach(self, fd: int, name: str, child_end: io.FileIO) -> LogStream:
        """Start handling records from ``fd`` (the parent's end, :func:`open_channel`):
        a spawn or forkserver child's channel, which the parent makes (a fork child
        makes its own: :meth:`expect`).

        ``child_end`` is this process's copy of the child's end, which the stream
        keeps (``LogStream.keeper``) until :meth:`end`: while this process holds a
        writer of the channel, the child's exit does not make it readable (EOF),
        so the listener's thread is not woken for it, and a child that logs
        nothing costs the thread nothing. :meth:`end` (``join()``) then finishes
        the stream in the joining thread if the listener had read it all; the
        thread used to wake at each child's exit, and ``join()`` to wait for it
        (~300 us of each start+join in a parent that forwards logs, issue 17).
        The kept end is not listed by the listener among the descriptors fork
        children let go of: the process object holds it for the child
        (``Popen.held_fds``, listed by ``_state.Children``), so that a fork
        sibling lets go of it, and it is closed only once the child is no longer
        tracked there.
        """
        stream = LogStream(fd, name, self)
        stream.keeper = child_end
        with self._lock:
            let_go_in_forks(fd)
            self._register(stream)
        return stream

    def expect(self, name: str) -> tuple[int, int]:
        """The request of a fork child about to start, which makes its channel itself.

        Returns the request socket's sending end, which the child inherits, and
        the child's token. The child's first record makes its channel and sends
        the reading end there with the token (the forwarding handler's
        ``_open_channel``); the stream is made then. ``join()`` ends the child's
        part with :meth:`claim`; a process let go of unjoined with
        :meth:`release_token`. Runs the thread, which takes requests as they come.
        """
        with self._lock:
            if self._to_release:
                self._release_deferred()
            if self._poller is None:
                self._start_thread()  # (first: if it fails, nothing is left expected)
            token = self._next_token
            self._next_token = token + 1
            self._expected[token] = name
            return self._request_w, token

    def claim(self, token: int) -> LogStream | None:
        """The fork child ``token`` (:meth:`expect`) has ended: its stream, for the
        caller to :meth:`end` (``join()``), or None if it never logged.

        Its channel, if it made one, came before its records, all sent before it
        ended: taken here if the thread has not yet. A child that never logged
        costs one look at the request socket. The token is expected no more.
        """
        with self._lock:
            if self._to_release:
                self._release_deferred()
            if token not in self._expected:
                return None  # (its channel lost, or let go of)
            stream = self._find_stream(token)
            if stream is not None:
                del self._by_token[token]
            del self._expected[token]
            # (The thread may have ended its stream at EOF already, and wait with
            # no time limit for this token: then it must start to linger.)
            self._linger_if_idle()
            return stream

    def stream_for(self, token: int) -> LogStream | None:
        """The stream of the fork child ``token`` if its channel has come (taking the
        requests the thread has not yet); None if the child has sent none."""
        with self._lock:
            return self._find_stream(token)

    def _find_stream(self, token: int) -> LogStream | None:
        """:meth:`stream_for`, under the lock: the requests are taken only if the
        request socket holds one (``_request_poll``)."""
        stream = self._by_token.get(token)
        if stream is None and token in self._expected:
            request_poll = self._request_poll
            if request_poll is not None and request_poll.poll(0):
                self._collect_requests()
                stream = self._by_token.get(token)
        return stream

    def _register(self, stream: LogStream) -> None:
        """Have the thread read ``stream`` (under the lock); start the thread if none runs."""
        self._streams[stream.fd] = stream
        if self._to_release:
            self._release_deferred()
        poller = self._poller
        if poller is None:
            self._start_thread(stream.fd)
        else:
            poller.register(stream.fd, _READABLE)
            if type(poller) is not _EPOLL:
                self._wake()  # a poll() already waiting does not see it

    def _start_thread(self, *fds: int) -> None:
        """Make the thread's poller, wake pair and request pair, and start it (under the lock).

        The C module's sockets: socket.py (with selectors, enum's classes of every
        constant, math and array) was ~400 KiB and ten mappings more in every
        process that forwards, which each fork start copies (issue 17).
        """
        self._wake_r, self._wake_w = _wire.plain_socketpair()
        self._wake_r.setblocking(False)
        # A wake-up never blocks (release() may send one from a garbage
        # collection): a full socket means one is pending already.
        self._wake_w.setblocking(False)
        let_go_in_forks(self._wake_r.fileno())
        let_go_in_forks(self._wake_w.fileno())
        # Non-blocking on both sides: the thread reads what is there, and a child
        # whose request finds no room waits for it itself (up to FULL_WAIT).
        self._request_r, request_w = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        self._request_r.setblocking(False)
        request_w.setblocking(False)
        self._request_poll = select.poll()
        self._request_poll.register(self._request_r.fileno(), select.POLLIN)
        self._request_w = request_w.detach()
        let_go_in_forks(self._request_r.fileno())  # (not the sending end: children use it)
        poller = self._poller = _make_poller()
        poller_fd = _listed_fd(poller)
        if poller_fd >= 0:
            let_go_in_forks(poller_fd)
        poller.register(self._wake_r.fileno(), _READABLE)
        poller.register(self._request_r.fileno(), _READABLE)
        for fd in fds:
            poller.register(fd, _READABLE)
        self._thread = threading.Thread(
            target=self._run, args=(poller,), name="proctor-log-listener", daemon=True
        )
        self._thread.start()

    def collect_requests(self) -> None:
        """Take the channels fork children have sent (:meth:`expect`): each its stream's."""
        with self._lock:
            self._collect_requests()

    def _collect_requests(self) -> None:
        """:meth:`collect_requests`, under the lock."""
        request = self._request_r
        if request is None:
            return
        while True:
            try:
                data, ancillary, flags, _address = request.recvmsg(
                    _REQUEST.size, _ONE_FD_SPACE, _RECV_CLOEXEC
                )
            except OSError:  # BlockingIOError: none left
                return
            fds = _wire.fds_from(ancillary)  # (close-on-exec, as fds_from makes them)
            if len(data) == _REQUEST.size and not fds and flags & _socket.MSG_CTRUNC:
                self._lose_channel(_REQUEST.unpack(data)[0])
                continue
            if len(fds) != 1 or len(data) != _REQUEST.size:
                for fd in fds:  # (not a request of ours)
                    os.close(fd)
                continue
            fd = fds[0]
            token = _REQUEST.unpack(data)[0]
            name = self._expected.get(token)
            if name is None or token in self._by_token:
                # Its child was finished meanwhile (let go of), or has a channel
                # already (an os.fork() process of the child, which had not logged
                # yet, made a second): read on its own until it ends.
                stream = LogStream(fd, "", self)
            else:
                stream = self._by_token[token] = LogStream(fd, name, self)
                stream.token = token
            let_go_in_forks(fd)
            self._register(stream)

    def end(self, stream: LogStream, timeout: float | None) -> bool:
        """The stream's child has ended: let the stream go once its records are handled.

        Run by the thread that learnt of the end (``join()``, ``close()``), which
        closes the kept end and, if the listener's thread has handled everything
        (the channel reads EOF at once), ends the stream itself. Otherwise it
        gives the stream back to the thread, with what it read, and waits for
        the thread to reach EOF: records are handled only by the listener's
        thread, never by one that may hold locks a handler takes (a ``join()``
        called with one held). The wait is for what the channel holds now, all the
        child wrote: another process may still hold the channel's write end (an
        ``os.fork()`` child of the child), and what it writes later is handled by
        the thread until it closes the channel, without ``join()`` waiting for
        that. Returns False if ``timeout`` passed first.
        """
        with self._lock:
            if self._to_release:
                self._release_deferred()
            # A fork child's stream is ended here once (token None after).
            token, stream.token = stream.token, None
            keeper, stream.keeper = stream.keeper, None
            # (A fork child's stream has no kept end: the child's exit closed its
            # channel's writing end, unless it left a process of its own that holds it.)
            mine = (keeper is not None or token is not None) and self._streams.get(
                stream.fd
            ) is stream
            if mine:
                del self._streams[stream.fd]
                try:
                    self._poller.unregister(stream.fd)
                except (AttributeError, KeyError, OSError, ValueError):
                    pass  # (the thread ended by an error: nothing to take it off)
                self._linger_if_idle()
        if keeper is not None:
            keeper.close()
        if not mine:
            wait = DRAIN_TIMEOUT if timeout is None else timeout
            target = stream.drain_target
            if target is not None and target >= 0:
                # Ended before, that wait timed out: the rest of the child's records.
                return stream.wait_consumed(target, wait)
            # Never kept, or ended already: the listener's thread finishes it at EOF.
            return stream.wait_drained(wait)
        # Not waiting for the thread if it is handling this stream's records now:
        # its handler may wait for a lock that this thread holds.
        if stream.reading.acquire(blocking=False):
            try:
                chunk = self._take(stream)
                if chunk == b"":
                    # Caught up: what the buffer may hold is a record the child
                    # was writing when it died, which the thread would skip too.
                    self._close_stream(stream)
                    return True
                if chunk:
                    stream.buffer += chunk  # the thread handles it before what it reads
            finally:
                stream.reading.release()
        # Records left, the thread at work on them, or another holder of the
        # channel writing on: the thread ends the stream, at EOF (unless it has
        # just done so, the thread having been at work on it).
        target = None
        with self._lock:
            if not stream.closing:
                self._register(stream)
                # The child has ended: all it wrote has been read (``received``,
                # counted under this lock as it is read) or is unread in the
                # channel. Unless no process holds a writer any more (then the
                # thread reaches EOF after it, and ends the stream), what a holder
                # that lives on writes later the thread handles at its pace.
                if not _writers_gone(stream.fd):
                    unread = _unread_bytes(stream.fd)
                    if unread is not None:
                        target = stream.received + unread
            stream.drain_target = -1 if target is None else target
        wait = DRAIN_TIMEOUT if timeout is None else timeout
        if target is None:
            return stream.wait_drained(wait)
        return stream.wait_consumed(target, wait)

    def _linger_if_idle(self) -> None:
        """After a stream was taken off (under the lock): if it was the last, and the
        thread waits with no time limit, it must start to linger (LISTENER_LINGER),
        to end unless another child starts meanwhile. (Not when it lingers already:
        each wake-up costs a loop of start+join ~400 us, the two threads taking turns
        at the GIL.)"""
        if not self._streams and not self._expected and self._waits_for_streams:
            self._waits_for_streams = False
            self._wake()

    def release(self, stream: LogStream, pid: int) -> None:
        """Let the keeper go without reading (the process object is being collected).

        The listener's thread then finishes the stream at EOF, as for a stream that
        was never kept. Never blocks: it may run from a garbage collection, in a
        thread that holds the listener's lock; then the thread lets it go instead.
        """
        if stream.keeper is None:
            return
        if not self._lock.acquire(blocking=False):
            self._to_release.append((stream, pid))
            self._wake()
            return
        try:
            _close_keeper(stream)
        finally:
            self._lock.release()

    def release_token(self, token: int, pid: int) -> None:
        """The process object of the fork child ``token`` is being collected unjoined.

        Its stream, if its channel came, is left to the thread (ended at EOF);
        otherwise the child may still log, and the token stays expected while the
        child ``pid`` runs (:meth:`_orphan`). Never blocks, as :meth:`release`.
        """
        if token not in self._expected:
            return  # (finished)
        if not self._lock.acquire(blocking=False):
            self._to_release.append((token, pid))
            self._wake()
            return
        try:
            self._orphan(token, pid)
        finally:
            self._lock.release()

    def detach(self, stream: LogStream) -> None:
        """Stop handling ``stream`` (the process object is being closed)."""
        if stream.keeper is not None or stream.token is not None:
            # (Its child has ended: what its channel holds is handled first.)
            self.end(stream, DRAIN_TIMEOUT)
            return
        if stream.drain_target is not None:
            # A join() whose wait timed out ended it: the rest of the child's records
            # first (what a process of the child's writes later is dropped below).
            self.end(stream, DRAIN_TIMEOUT)
        with self._lock:
            # Not if it ended already: its descriptor may be a new stream's by now.
            if self._streams.get(stream.fd) is stream:
                del self._streams[stream.fd]
                self._detached.append(stream)
                self._wake()
        stream.wait_drained(DRAIN_TIMEOUT)

    def _wake(self) -> None:
        try:
            if self._wake_w is not None:
                self._wake_w.send(b"\0")
        except OSError:  # BlockingIOError: full, a wake-up is pending already
            pass

    def _run(self, poller: Any) -> None:
        idle_since: float | None = None  # when the last stream ended
        wake_fd = self._wake_r.fileno()  # type: ignore[union-attr]  # (made with the poller)
        request_fd = self._request_r.fileno()  # type: ignore[union-attr]  # (likewise)
        epoll = type(poller) is _EPOLL
        try:
            while True:
                timeout = None
                with self._lock:
                    if self._to_release:
                        self._release_deferred()
                    if self._orphans:
                        self._drop_exited_orphans()
                        if self._orphans:
                            timeout = LISTENER_LINGER  # to look again
                    detached, self._detached = self._detached, []
                    if not self._streams and not detached and not self._expected:
                        # Linger, in case another child starts soon (LISTENER_LINGER);
                        # decided under the lock that attach() takes to see the thread.
                        now = time.monotonic()
                        if idle_since is None:
                            idle_since = now
                        timeout = idle_since + LISTENER_LINGER - now
                        if timeout <= 0:
                            self._thread = None
                            self._poller = None
                            self._close_wake()
                            self._forget_fd(_listed_fd(poller))  # closed below, at once
                            return
                    else:
                        idle_since = None
                    self._waits_for_streams = timeout is None
                if detached:
                    for stream in detached:
                        self._close_stream(stream, poller)
                    # Decide again how to wait: those may have been the last streams,
                    # and a wait without a time limit would then never end.
                    continue
                if epoll:
                    ready = poller.poll(-1 if timeout is None else timeout)
                else:  # poll's timeout is in milliseconds
                    ready = poller.poll(None if timeout is None else int(timeout * 1000) + 1)
                handled = 0
                for fd, _events in ready:
                    if fd == request_fd:
                        with self._lock:
                            self._collect_requests()
                        continue
                    if fd == wake_fd:
                        try:
                            while self._wake_r.recv(4096):  # type: ignore[union-attr]
                                pass
                        except (BlockingIOError, OSError):
                            pass
                        continue
                    # (None: ended or detached since the poller saw it; a number
                    # reused meanwhile by a new stream costs that stream a read.)
                    ready_stream = self._streams.get(fd)
                    if ready_stream is None:
                        continue
                    count = self._read(ready_stream)
                    handled += max(count, 1)
                    if count < 0:
                        self._close_stream(ready_stream, poller)
                # A pool result waiting for its records skips the window. (Not an
                # Event.wait(BATCH_WINDOW), which would also end a window early: it
                # sleeps longer than time.sleep, and forwarding 100,000 records took
                # 15% longer with it -- bench logging, seven paired runs.)
                if self._hurry.is_set():
                    self._hurry.clear()
                elif 0 < handled < BUSY_BATCH:
                    time.sleep(BATCH_WINDOW)
        finally:
            if self._poller is poller:  # ended by an error: let it go here
                with self._lock:
                    self._forget_fd(_listed_fd(poller))
            if epoll:
                poller.close()

    def _release_deferred(self) -> None:
        """Let go of the keepers release() left to others (under the lock)."""
        released, self._to_release = self._to_release, []
        for stream_or_token, pid in released:
            if isinstance(stream_or_token, int):
                self._orphan(stream_or_token, pid)
            elif stream_or_token.keeper is not None:
                _close_keeper(stream_or_token)

    def _lose_channel(self, token: int) -> None:
        """A request came without its descriptor: this process could not take one
        more (out of descriptors). Nobody can read that child's records: its stream
        ends now, so that join() does not wait for them, and stderr says so."""
        name = self._expected.get(token)
        name = "a child" if name is None else f"the child {name!r}"
        sys.stderr.write(
            f"proctor: could not take the log channel of {name} (this process is out of "
            "file descriptors): its log records are lost; raise the limit "
            "(ulimit -n, resource.setrlimit) or start fewer children at once\n"
        )
        if token not in self._by_token:
            # (join() finds no stream for it: nothing to wait for.)
            self._expected.pop(token, None)
            self._linger_if_idle()

    def _orphan(self, token: int, pid: int) -> None:
        """The expected fork child ``token``'s process was let go of unjoined (under
        the lock).

        Its stream, if it came, is the thread's to end at EOF. Otherwise the child
        may live on and log: the token stays expected, and the thread looks each
        LISTENER_LINGER whether the child has exited meanwhile
        (:meth:`_drop_exited_orphans`), so that it does not run for ever for it.
        """
        self._orphans.append((token, pid))
        self._drop_exited_orphans()
        if self._orphans:
            self._wake()  # to wait with a time limit

    def _drop_exited_orphans(self) -> None:
        """Forget the orphans whose channel came or whose child has exited (under the lock)."""
        self._collect_requests()
        kept = []
        for token, pid in self._orphans:
            if token not in self._expected:
                continue  # finished (its channel lost, say)
            stream = self._by_token.pop(token, None)
            if stream is not None:
                # Its channel came: an ordinary stream now, ended at EOF. (Nobody
                # waits for it: its process object is gone.)
                stream.token = None
            elif _child_running(pid):
                kept.append((token, pid))
                continue
            del self._expected[token]
        self._orphans = kept
        self._linger_if_idle()

    def _close_wake(self) -> None:
        """Close the wake pair and the request pair (under the lock)."""
        for sock in (self._wake_r, self._wake_w, self._request_r):
            if sock is not None:
                self._forget_fd(sock.fileno())
                sock.close()
        self._wake_r = self._wake_w = self._request_r = self._request_poll = None
        if self._request_w >= 0:
            os.close(self._request_w)
            self._request_w = -1

    def _forget_fd(self, fd: int) -> None:
        """Take ``fd`` off the descriptors fork children let go of, before it is closed."""
        if fd >= 0:
            keep_in_forks(fd)

    def _take(self, stream: LogStream) -> bytes | None:
        """Read what the channel holds (None: nothing now; empty: EOF), counted in
        ``received`` under the lock, so that end() can add the bytes still unread."""
        with self._lock:
            chunk = _read_chunk(stream.fd)
            if chunk:
                stream.received += len(chunk)
        return chunk

    def _read(self, stream: LogStream) -> int:
        """Read what is there, handle whole records: how many, or -1 at EOF."""
        with stream.reading:
            if stream.ended:
                return 0  # end() finished it meanwhile (this was a stale event)
            chunk = self._take(stream)
            if chunk:
                stream.buffer += chunk
            # (Also what end() read and left in the buffer, with nothing new.)
            count = self._handle_frames(stream) if stream.buffer else 0
            return -1 if chunk == b"" else count

    def _handle_frames(self, stream: LogStream) -> int:
        buffer = stream.buffer
        offset = 0
        count = 0
        size = len(buffer)
        header = _FRAME.size
        while size - offset >= header:
            length, kind = _FRAME.unpack_from(buffer, offset)
            end = offset + header - 1 + length
            if end > size:
                break
            with _dispatching:
                _dispatch(kind, buffer[offset + header : end], stream.remembered)
            offset = end
            count += 1
            # Counted as each is handled: a waiter sees a slow listener move.
            stream.handled += 1
            self.handled += 1
        del buffer[:offset]
        stream.consumed += offset
        if count:
            stream._progressed()
        return count

    def _close_stream(self, stream: LogStream, poller: Any = None) -> None:
        """Close the stream's channel and say it has ended (once; later calls do nothing).

        All under the lock, which also marks the stream ``closing``: an end()
        that gives the stream back to the thread meanwhile either did so before
        (and it is taken off here) or sees the mark (and does not register a
        channel about to be closed). The number is taken off the descriptors fork
        children let go of before it is closed, and ``ended`` set after: a second
        call never closes a number that a new stream may have reused.
        """
        with self._lock:
            if stream.ended:
                return
            stream.closing = True
            if self._streams.get(stream.fd) is stream:
                del self._streams[stream.fd]
            if poller is not None:
                try:
                    poller.unregister(stream.fd)
                except (KeyError, OSError, ValueError):
                    pass
            self._forget_fd(stream.fd)
            # (A kept end is not closed here: it is one of the descriptors held for
            # the child until it is discarded; end() and release() close it.)
            # A partial frame left at EOF is the record a killed child was sending.
            try:
                os.close(stream.fd)
            except OSError:
                pass
            stream.ended = True
            token = stream.token
            if token is not None and self._by_token.get(token) is stream:
                # A fork child's stream read to its end before join() claimed it:
                # every record is handled, and the child has let go of its channel
                # (it exited); its token no longer keeps the thread (a Process
                # polled but never joined would keep it for ever).
                del self._by_token[token]
                self._expected.pop(token, None)
                stream.token = None
        stream._announce_ended()


def _child_running(pid: int) -> bool:
    """Whether this process's child ``pid`` has not exited (not reaped, not waited for)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:  # reaped already
        return False
    except OSError:
        return False


def _read_chunk(fd: int) -> bytes | None:
    """What the channel holds (None: nothing now; empty: EOF)."""
    try:
        return os.read(fd, _RECV_CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _writers_gone(fd: int) -> bool:
    """Whether no process holds a writing end of the channel any more (a hang-up:
    a pipe's or a socket's reader sees it while data is still unread)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        return any(events & select.POLLHUP for _, events in poller.poll(0))
    except OSError:
        return False


def _unread_bytes(fd: int) -> int | None:
    """How many bytes the channel holds unread (None: the system cannot tell)."""
    import fcntl  # (only when a joined child left its channel to a process of its own)
    import termios

    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return None


def _close_keeper(stream: LogStream) -> None:
    """Close the stream's kept end of the child's channel, if it still has it (under the lock)."""
    keeper, stream.keeper = stream.keeper, None
    if keeper is not None:
        keeper.close()


# The listener's thread waits in an epoll object where there is one (Linux): it
# sees a descriptor registered while it waits, and it is a descriptor of its own,
# which a fork child lets go of. Elsewhere a poll object (no descriptor to let go).
_EPOLL: Any = getattr(select, "epoll", None)
# Readable, for either: epoll's EPOLLIN is poll's POLLIN bit.
_READABLE = select.POLLIN


def _make_poller() -> Any:
    return _EPOLL() if _EPOLL is not None else select.poll()


def _listed_fd(poller: Any) -> int:
    """The poller's descriptor if a fork child inherits it (epoll's), else -1."""
    if type(poller) is _EPOLL:
        return int(poller.fileno())
    return -1


def _dispatch(kind: int, payload: bytearray, remembered: dict[Any, dict[str, Any]]) -> None:
    logging = sys.modules["logging"]  # imported: the parent has configured logging
    try:
        record = decode_record(kind, payload, remembered)
    except Exception as exc:
        # Skip it and keep the stream; say so where logging reports its own
        # errors (stderr, unless logging.raiseExceptions is off).
        if logging.raiseExceptions:
            sys.stderr.write(
                f"proctor: skipped a child's log record that could not be read: {exc!r}\n"
            )
        return
    # logging.getLogger takes logging's module lock; an existing logger is a
    # plain dict look-up (a PlaceHolder or a missing name goes the long way).
    name = record.name
    logger = logging.root.manager.loggerDict.get(name)
    if not isinstance(logger, logging.Logger):
        logger = logging.getLogger(name) if name != "root" else logging.root
    try:
        logger.handle(record)
    except Exception:
        # Handlers report their own errors (Handler.handleError); this is a
        # filter or a logger subclass failing. The listener must go on.
        if logging.raiseExceptions:
            import traceback

            sys.stderr.write("proctor: a child's log record could not be handled:\n")
            traceback.print_exc()


# Made on first use: a fork child that starts no child of its own then never
# builds one (a lock, an Event, a dict: pages it would copy for nothing).
_listener: LogListener | None = None
# The listener made here, or inherited through a fork (and let go of there).
_made_listener: LogListener | None = None
# A forked child makes its own lock on first use (a thread of the parent may have
# held this one at the fork).
_listener_lock = _afterfork.PerProcess(threading.Lock)


def listener() -> LogListener:
    """This process's log listener."""
    global _listener, _made_listener
    got = _listener
    if got is None:
        with _listener_lock.get():
            if _listener is None:
                _listener = _made_listener = LogListener()
            got = _listener
    return got


# Held while the listener runs a record through the handlers. A fork waits for
# it (up to FORK_WAIT): a child forked while the listener is inside a handler
# would inherit the locks that handler holds -- sys.stdout's buffer lock, say --
# locked for ever, and hang at its first print. (logging resets its own locks.)
# A plain global, not a PerProcess: the fork hooks use it at every fork, and in
# the parent each object they touch there is one more copied page per fork.
_dispatching = threading.RLock()


# A handler that hangs must not hang every fork: after this long the fork goes
# ahead, with the risk it always had without proctor.
FORK_WAIT = 2.0


# Whether the forking thread holds the dispatch lock after _before_fork is what the
# lock itself knows (``_is_owned``): its acquire succeeded (or this thread held it
# already, from a handler that forks), or it timed out while another thread held
# it. (A threading.local flag said the same; its per-thread dictionary was pages
# written at every fork, in the parent while the child ran and in the child.)
# Nothing else is done at a fork: a fork child sets up its forwarding itself
# (_forward_through_inherited), and logging's own fork hooks hold its lock
# through the fork.


def _before_fork() -> None:
    _dispatching.acquire(timeout=FORK_WAIT)


def _after_fork_in_parent() -> None:
    if _dispatching._is_owned():  # type: ignore[attr-defined]
        _dispatching.release()


def _after_fork_in_child() -> None:
    global _listener, _dispatching
    # (logging's own hook has made its lock anew, unlocked.)
    # The parent's streams are the parent's to read: this copy of their descriptors
    # (and of the wake pair and epoll) was let go of already, by number, as listed
    # (_system.let_go_in_forks; the parent's children must see their log channel's
    # reader go when the parent goes). The listener's objects live on in
    # _made_listener, unused (freeing them cost every fork child ~90 us of copied
    # pages, issue 17), until this process makes a listener of its own; its lock
    # the child makes on first use.
    if _listener is not None:
        _listener = None
    handler = _child_handler
    if handler is not None and handler.channel is None and handler.request is not None:
        # A bare os.fork() of a fork child that has not logged yet: its own channel
        # must not take the child's stream, which join() waits for; token -1 gets
        # it a stream of its own. (A fork start from here sets its child up anew.)
        handler.request = (handler.request[0], -1)
    # The forking thread is this child's main thread, with the same identity.
    if _dispatching._is_owned():  # type: ignore[attr-defined]
        # This thread took the dispatch lock for the fork, and it lives on here: it
        # lets go as in the parent (keeping any hold it had before, from a handler
        # that forked), instead of a new lock being made and the old one freed.
        _dispatching.release()
    else:
        # FORK_WAIT ran out: a thread that is not here (the listener's) holds it.
        _dispatching = threading.RLock()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
