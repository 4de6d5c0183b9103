"""Connections between processes: ``Pipe()``, ``Connection``, ``Listener``/``Client``, ``wait()``.

    _frames      the frame format: headers (tag + length), frame ids, side messages,
                 size limits; how an object becomes a body
    _end         the state one connection end holds (descriptors, read-ahead, flags)
    _sending     how an end sends a frame: atomic pipe writes, mid-size bodies as
                 datagrams, big ones on a stream under the send lock, waiting for
                 room, timeouts, SIGPIPE
    _receiving   how an end receives a frame: read-ahead, header checks, datagrams
                 matched by id, side messages, memfds, bodies that never over-allocate
    _sendlock    the send lock (thread lock + fcntl record lock), frame ids
    _connection  ``Connection``: the API (send/recv/poll/close, passing to a child)
    _aio         the awaitable twins (arecv, asend...): the loop watches the descriptors
    _pipe        ``Pipe()``: two ends: frame socket (or pipes), datagram, stream and spare sockets
    _wait        ``wait()`` on connections, sockets and process sentinels
    _listener    ``Listener``/``Client`` over AF_UNIX and TCP, with an HMAC handshake

Builds on ``_core`` only.
"""
