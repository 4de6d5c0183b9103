"""proctor's error types for the modules a fork server preloads, imported on first use.

``_errors`` subclasses ``multiprocessing``'s error classes, so it imports
``multiprocessing.context``: the ``multiprocessing`` package, and ``threading``
with it. A fork server imports the connection, shared-memory and reaper modules
its parent uses (``_start._forkserver._FOLLOWED_MODULES``), and what they import
is in every child it forks: ``threading``'s after-fork hook runs in each, and each
touches more copy-on-write pages (issue 17). Those modules raise proctor's
errors only when something went wrong, so they reach them through here::

    raise _lazy_errors.ProtocolError(...)        imports _errors (once), then raises
    except _lazy_errors.if_loaded("ProtocolError"):   never imports it

An attribute of this module is ``_errors``' class of that name, imported at the
first access. :func:`if_loaded` is for ``except`` clauses and ``isinstance``: until
``_errors`` is imported no instance of its classes can exist, so it gives the
classes when the module is loaded and an empty tuple (which matches nothing)
when it is not, without importing it while another exception passes by.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._errors import AuthenticationError as AuthenticationError
    from ._errors import BufferTooShort as BufferTooShort
    from ._errors import OwnerDiedWarning as OwnerDiedWarning
    from ._errors import PicklingError as PicklingError
    from ._errors import ProcessError as ProcessError
    from ._errors import ProcessTimeoutError as ProcessTimeoutError
    from ._errors import ProtocolError as ProtocolError
    from ._errors import QueueClosedError as QueueClosedError

_ERRORS = __name__.rpartition(".")[0] + "._errors"


def __getattr__(name: str) -> type:
    from . import _errors

    try:
        found = getattr(_errors, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = found
    return found


def if_loaded(*names: str | type[BaseException]) -> tuple[type[BaseException], ...]:
    """The classes given, plus ``_errors``' classes named, if it is imported.

    For ``except`` and ``isinstance``: an exception of one of ``_errors``'
    classes exists only once ``_errors`` is imported, so leaving them out before
    that is exact. ``if_loaded(EOFError, "ProtocolError")`` is ``(EOFError,)``
    until then, and ``(EOFError, ProtocolError)`` after.
    """
    errors = sys.modules.get(_ERRORS)
    found = []
    for name in names:
        if not isinstance(name, str):
            found.append(name)
        elif errors is not None:
            found.append(getattr(errors, name))
    return tuple(found)
