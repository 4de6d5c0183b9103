"""Integer arguments: numpy's integers (and any type with ``__index__``) are ints too.

The stdlib's calls take them (``SharedMemory(size=np.prod(shape) * 8)``,
``Pool(np.int64(4))``); a check written as ``isinstance(x, int)`` refused them.
Each check converts first, then checks as before: a ``bool`` stays a bool (refused
where proctor refuses it), and anything else is left for the check to reject.
"""

from __future__ import annotations

from _operator import index as _index  # (the C module: operator.py is more to load)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ("integral",)


def integral(value: Any) -> Any:
    """``value`` as an ``int`` when it is an integer of another type; else unchanged."""
    if isinstance(value, (int, float, str, bytes)) or value is None:
        return value  # (an int, a bool, or what no check takes for one)
    try:
        return _index(value)
    except TypeError:
        return value
