"""Connections between processes: ``Pipe()``, ``Connection``, ``Listener``/``Client``.

    _connection  framing, ``Connection``, ``Pipe()``, ``wait()``
    _listener    ``Listener``/``Client`` over AF_UNIX and TCP, with an HMAC handshake

Builds on ``_core`` only.
"""
