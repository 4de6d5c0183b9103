"""Shared memory that users see: named segments, shared lists, arrays and ctypes.

    _shm             ``SharedMemory``: named POSIX segments, registered with the reaper
    _shareable_list  ``ShareableList``
    _sharedarray     numpy arrays in anonymous shared memory
    _sharedctypes    ``Value``, ``Array``, ``RawValue``, ``RawArray``

Builds on ``_core``, ``_reaper`` and ``_sync`` (the locks of synchronized wrappers).
"""
