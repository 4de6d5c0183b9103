"""Queues in anonymous shared memory.

    _ring   a ring of frames with one put word and one get word
    _queue  ``Queue``, ``SimpleQueue``, ``JoinableQueue``; the mailbox for large buffers

Builds on ``_core``, ``_reaper`` (named semaphores) and ``_sync`` (locks).
"""
