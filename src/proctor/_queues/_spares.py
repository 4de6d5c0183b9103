"""A queue handle's spares: ``_core._spares`` over the queue's mailbox.

Consumers give a dropped array's memfd back on the mailbox's receiving end,
producers take spares on its sending end (the socket pair in the other
direction): spares need no OS object of their own and go with the queue. The
mechanism, and the rule that no spare is written while a view of it lives,
are in ``_core/_spares.py``, shared with ``Pipe()`` connections.
"""

from __future__ import annotations

from .._core import _spares
from .._core._spares import SPARE_BYTES, SPARE_MAX, SPARE_MIN, SPARE_SLOTS
from ._mailbox import Mailbox

__all__ = ("SPARE_BYTES", "SPARE_MAX", "SPARE_MIN", "SPARE_SLOTS", "Spares")


class Spares(_spares.Spares):
    """One queue handle's kept mappings; spares travel on its mailbox."""

    def __init__(self, mailbox: Mailbox) -> None:
        super().__init__(mailbox, take="send_end", give="recv_end")
