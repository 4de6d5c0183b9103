"""Named OS objects and the resource reaper that reclaims them.

    _client    each process's link to the reaper: register users of a name
    _server    the reaper process (loaded from its file path: it imports no proctor code)
    _semlock   named POSIX semaphores, registered with the reaper

Builds on ``_core`` only.
"""
