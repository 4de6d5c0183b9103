"""Queues in anonymous shared memory.

    _queue    ``Queue``, ``SimpleQueue``, ``JoinableQueue``: the handles and their fast paths
    _ring     a ring of frames with one put word and one get word
    _codec    an item or a batch of items to a frame and back; large buffers in memfds
    _mailbox  the socket pair that carries spilled frames' memfds, tagged with mail ids
    _waiting  the put and get locks, deadlines, and the items/room/all_done waits
    _aio      the same waits awaited in an event loop: ``aget``, ``aput``, ``ajoin``

Builds on ``_core`` (anonymous memory, errors, and ``_wait.wait_for_post``, the
one wait every blocking call sleeps through, and ``_loopwait.await_post``, its
event-loop twin), ``_reaper`` (named semaphores) and
``_sync`` (locks).
"""
