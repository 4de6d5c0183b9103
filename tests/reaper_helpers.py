"""Test-only access to this process's resource reaper (``proctor._reaper._client``).

These lived in ``proctor._reaper._client`` and shipped with the package; only tests need
them. Importable from the subprocess scripts of the tests too (put ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import json
import os
import select
import time

from proctor._reaper import _client as _reaper


def _ask(message: list, timeout: float) -> bytes:
    """Send ``message`` to this process's reaper and return its one-line answer."""
    client = _reaper.client()
    with client.lock:
        if client.fd is None:
            client._connect()
        fd = client.fd
        assert fd is not None
        os.write(fd, json.dumps(message).encode() + b"\n")
        deadline = time.monotonic() + timeout
        reply = b""
        while not reply.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError(f"the resource reaper did not answer within {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ConnectionError("the resource reaper closed the connection")
            reply += chunk
    return reply


def sync_reaper(timeout: float = 10.0) -> None:
    """Wait until this process's reaper has processed every death that already happened.

    After it returns, a name whose users all exited before the call is unlinked or
    known to be kept (mapped by some live process), and a newly started reaper has
    swept ``/dev/shm`` for what dead trees left behind.
    """
    _ask(["S"], timeout)


def tracked_names(keys: list[tuple[str, str]], timeout: float = 10.0) -> set[tuple[str, str]]:
    """Which of ``keys`` (``(kind, name)``) this process's reaper tracks: names made in
    this process tree that it has not reclaimed yet (another program's are not)."""
    if not keys:
        return set()
    answer = json.loads(_ask(["N", [list(key) for key in keys]], timeout))
    return {(kind, name) for kind, name in answer}


def spawned_reaper_pid() -> int | None:
    """The pid of the reaper this process started, if it started one."""
    return _reaper.client().spawned_pid
