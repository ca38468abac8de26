"""The memory a run may use: its limit, what the process holds, and the weighted FIFO semaphore that admits
the large arrays (decoded images, the encoder's batches, samples being finished) within it.

Each stage's cost is declared by the module that owns it: decoding by :mod:`predict.io.images`, the maps by
:mod:`predict.io.maps`, the evaluation by :mod:`evaluations.metrics`, the encoder's batch activations by
the encoder (:meth:`~predict.encoders.base.EncoderSpecModel.working_bytes`).
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError
from contextlib import contextmanager
from dataclasses import dataclass

from predict.core.memory import default_memory_limit, resident_bytes  # noqa: F401 (their home before predict.core.memory)

def fitting_batch(batch_size: int, working_bytes: Callable[[int], int | None], room: int) -> int:
    """The largest batch, ``batch_size`` halved as often as needed (down to 1), whose working memory fits
    ``room`` bytes; ``batch_size`` when the encoder declares none.

    >>> fitting_batch(64, lambda batch: batch * 10, 200)
    16
    >>> fitting_batch(64, lambda batch: None, 0), fitting_batch(8, lambda batch: batch * 10, 5)
    (64, 1)
    """
    if working_bytes(batch_size) is None:
        return batch_size
    batch = batch_size
    while batch > 1 and working_bytes(batch) > room:
        batch //= 2
    return batch


@dataclass(eq=False)
class Ticket:
    """A place in a :class:`ByteSemaphore`'s queue: ``nbytes`` asked for, beside ``beside`` bytes its holder
    already holds and needs (a sample's image, for its finish)."""

    nbytes: int
    beside: int = 0
    granted: bool = False


class ByteSemaphore:
    """A weighted FIFO semaphore over bytes: requests are granted in the order they were made, the first
    one waiting when it fits beside what is held, or when what is held is only what it needs beside it (so
    a request larger than the limit runs alone, and never waits for itself).

    A place in the queue is taken at once (:meth:`request`, by the thread that orders the work) and waited
    for where the work runs (:meth:`wait`). Strict order means a later request never overtakes an earlier
    one; the caller orders requests so that what the first one waits for is held only by requests granted
    before it (see :class:`~predict.testset.engine.SeloRun`).

    >>> budget = ByteSemaphore(10)
    >>> first, second = budget.request(6), budget.request(6)
    >>> first.granted, second.granted
    (True, False)
    >>> budget.release(6); second.granted
    True
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._queue: deque[Ticket] = deque()
        self._closed = False
        self._changed = threading.Condition()

    def request(self, nbytes: int, beside: int = 0) -> Ticket:
        """Join the queue for ``nbytes`` (granted at once if it is first and fits; no bytes, at once)."""
        ticket = Ticket(nbytes, beside)
        if not nbytes:
            ticket.granted = True
            return ticket
        with self._changed:
            self._queue.append(ticket)
            self._grant()
        return ticket

    def wait(self, ticket: Ticket) -> None:
        """Block until ``ticket`` is granted; CancelledError once the semaphore is closed."""
        with self._changed:
            self._changed.wait_for(lambda: ticket.granted or self._closed)
            if not ticket.granted:
                raise CancelledError("the run stopped")

    def acquire(self, nbytes: int, beside: int = 0) -> None:
        """:meth:`request` and :meth:`wait` in one."""
        self.wait(self.request(nbytes, beside))

    @contextmanager
    def holding(self, nbytes: int, beside: int = 0):
        """Hold ``nbytes`` within this block (:meth:`acquire`, then :meth:`release`)."""
        self.acquire(nbytes, beside)
        try:
            yield
        finally:
            self.release(nbytes)

    def release(self, nbytes: int) -> None:
        with self._changed:
            self.held -= nbytes
            self._grant()

    def close(self) -> None:
        """Grant nothing more: every waiter, now and later, gets CancelledError (the run stopped)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _grant(self) -> None:
        granted = False
        while self._queue and not self._closed:
            head = self._queue[0]
            if self.held + head.nbytes > self.limit and self.held > head.beside:
                break
            self._queue.popleft()
            self.held += head.nbytes
            head.granted = granted = True
        if granted:
            self._changed.notify_all()
