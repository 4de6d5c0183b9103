"""``SharedMemoryManager``: a manager that unlinks the shared memory made through it.

``smm.SharedMemory(size)`` and ``smm.ShareableList(seq)`` create the segment in
the calling process (proctor's ``SharedMemory``, registered with the reaper) and
tell the server its name; when the manager shuts down, the server unlinks every
segment it was told of, whoever still has it mapped, before it acknowledges the
shutdown (``Server.release_resources``): the starting process may terminate it
after that, and nothing is left behind.
"""

from __future__ import annotations

from typing import Any

from .._core._errors import ProcessError
from .._sharedmem._shareable_list import ShareableList
from .._sharedmem._shm import SharedMemory, unlink_name
from ._manager import BaseManager, State
from ._server import Server

__all__ = ("SharedMemoryManager", "SharedMemoryServer")


class SharedMemoryServer(Server):
    """A manager server that also tracks shared memory segments by name."""

    public = (*Server.public, "track_segment", "release_segment", "list_segments")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.segment_names: list[str] = []

    def _call_track_segment(self, client_id: str, segment_name: str) -> None:
        self.segment_names.append(segment_name)

    def _call_release_segment(self, client_id: str, segment_name: str) -> None:
        if segment_name in self.segment_names:
            self.segment_names.remove(segment_name)
        _unlink(segment_name)

    def _call_list_segments(self, client_id: str) -> list[str]:
        return list(self.segment_names)

    def release_resources(self) -> None:
        # Taken as a whole, so that the control thread, a client's shutdown call and
        # serve_forever's end never unlink one name twice (the list is swapped
        # atomically under the GIL).
        names, self.segment_names = self.segment_names, []
        for name in names:
            _unlink(name)

    def serve_forever(self) -> None:
        try:
            super().serve_forever()
        finally:
            self.release_resources()


def _unlink(name: str) -> None:
    # The name only: attaching the segment first (as a SharedMemory) registered it with
    # the reaper and mapped it, round trips that on a loaded machine could outlast the
    # manager's shutdown_timeout, after which the server is terminated with the rest of
    # its names still there.
    try:
        unlink_name(name)
    except FileNotFoundError:
        pass


class SharedMemoryManager(BaseManager):
    """A manager whose ``SharedMemory`` and ``ShareableList`` are unlinked at its shutdown."""

    _Server = SharedMemoryServer

    def _tracking_session(self) -> Any:
        if self._state.value != State.STARTED:
            raise ValueError(
                "this SharedMemoryManager is not started (or was shut down): call start() "
                "or use it as a context manager first"
            )
        return self._session()

    def SharedMemory(self, size: int) -> SharedMemory:
        """A new segment of ``size`` bytes, unlinked when the manager shuts down.

        Raises:
            ValueError: the manager is not started.
        """
        session = self._tracking_session()
        segment = SharedMemory(None, create=True, size=size)
        try:
            session.call(None, "track_segment", (segment.name,))
        except BaseException:
            segment.unlink()
            segment.close()
            raise
        return segment

    def ShareableList(self, sequence: Any) -> ShareableList:
        """A new ``ShareableList`` of ``sequence``, unlinked when the manager shuts down.

        Raises:
            ValueError: the manager is not started.
        """
        session = self._tracking_session()
        shared = ShareableList(sequence)
        try:
            session.call(None, "track_segment", (shared.shm.name,))
        except BaseException:
            shared.shm.unlink()
            shared.shm.close()
            raise
        return shared


_ = ProcessError
