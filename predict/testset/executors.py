"""Where a run's stages execute: thread pools, or the calling thread (``workers=1``) through the same code."""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import NamedTuple


class InlineExecutor(Executor):
    """An executor that runs each call at once in the calling thread: the serial run goes through the code of
    the overlapped one.

    >>> InlineExecutor().submit(sum, [1, 2]).result()
    3
    """

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # as a pool's future holds it: raised by result()
            future.set_exception(exc)
        return future


def completed(value) -> Future:
    """A future already holding ``value``."""
    future = Future()
    future.set_result(value)
    return future


class Executors(NamedTuple):
    """The run's three executors: one thread decoding images ahead, ``workers`` finishing samples, one
    committing them in order."""

    decode: Executor
    finish: Executor
    commit: Executor


@contextmanager
def run_executors(workers: int):
    """:class:`Executors` of threads for ``workers > 1``, else inline. On the way out (an interrupt or an
    error included) work not started is cancelled and work started is waited for."""
    if workers == 1:
        inline = InlineExecutor()
        yield Executors(inline, inline, inline)
        return
    with ExitStack() as stack:
        pools = [ThreadPoolExecutor(count, thread_name_prefix=f"selo-{name}")
                 for name, count in (("decode", 1), ("finish", workers), ("commit", 1))]
        for pool in reversed(pools):  # left in this order: decoding, then finishing, then committing
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        yield Executors(*pools)


class OrderedCommits:
    """Outcomes committed one at a time in the order they were added, each as soon as it and those before
    it are ready (on ``executor``: one thread, or inline), so a killed run loses only the samples in flight.

    ``commit(value)`` returns True for a failure, counted in :attr:`failures`. An exception it raises (a
    write error: nothing later could be saved either) stops every later commit and is raised again by
    :meth:`add` or :meth:`wait`.
    """

    def __init__(self, executor: Executor, commit: Callable[[object], bool]):
        self.executor, self.commit = executor, commit
        self.failures = 0
        self._pending: deque[Future] = deque()
        self._stopped = False

    def add(self, outcome: Future) -> None:
        self._pending.append(self.executor.submit(self._commit, outcome))
        self._collect(block=False)

    def wait(self) -> int:
        """Wait for every commit; the number of failures."""
        self._collect(block=True)
        return self.failures

    def _commit(self, outcome: Future) -> bool:
        if self._stopped:
            return False
        try:
            return self.commit(outcome.result())
        except Exception:
            self._stopped = True
            raise

    def _collect(self, block: bool) -> None:
        while self._pending and (block or self._pending[0].done()):
            self.failures += self._pending.popleft().result()
