"""The explorer's jobs: a request that needs tiles encoded becomes a :class:`Job` in one queue for the encoder
(:class:`FairQueue`: first in, first out per client, the clients in turn), run one after the other by the
encoder's thread (:class:`Jobs`); it answers its position and progress until done, and can be cancelled.
Asking again for the same request (any client) finds the same job, then its outcome once."""
from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from predict.errors import ExplorerError, InvalidRequest, JobFailed, NotFound
from predict.explorer.images import SharedStore
from predict.explorer.requests import Request
from predict.explorer.results import Result
from predict.localisation import StageTimer

ENCODE_CHUNK = 512  # tiles encoded between two saves of the vectors (a cancel loses at most this much)
PENDING = ("queued", "encoding")


class Cancelled(Exception):
    """Raised inside a job's encoding when the job was cancelled."""


@dataclass
class Job:
    """A request waiting for the encoder or being encoded; ``clients`` are those waiting for it.
    ``result_id`` is the id its request had when asked, by which it is found again; its result is filed
    under the id of the pixels it ran on, another one when the image was replaced while it waited."""

    id: str
    request: Request
    result_id: str
    clients: list
    state: str = "queued"  # queued, encoding, done, failed, cancelled
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.perf_counter)
    unknown_words: list = field(default_factory=list)
    answered: bool = False  # its outcome was the answer to a request asked again
    result: Result | None = None
    error: ExplorerError | None = None
    cancel_asked: threading.Event = field(default_factory=threading.Event)

    def as_dict(self, position: int) -> dict:
        """The job while pending, as plain JSON data: its ``position`` in the queue (0: running), progress and
        a line saying so; its state is :attr:`state`."""
        image, query = self.request.image, self.request.query
        if self.state == "queued":
            message = f"queued for {image}: position {position} (waiting for the encoder)"
        else:
            message = f"encoding {image}: {self.done}/{self.total} tiles"
        return {"job": self.id, "image": image, "query": query, "position": position, "done": self.done,
                "total": self.total, "message": message}


class FairQueue:
    """Jobs waiting for the encoder: first in, first out per client, the clients served in turn.

    >>> q = FairQueue(); _ = [q.put(job, client) for job, client in [("a1", "a"), ("a2", "a"), ("b1", "b")]]
    >>> q.order(), q.take(), q.order()
    (['a1', 'b1', 'a2'], 'a1', ['b1', 'a2'])
    """

    def __init__(self):
        self._waiting: OrderedDict[str, deque] = OrderedDict()  # client -> its jobs, clients in serving order
        self._ready = threading.Condition()

    def put(self, job, client: str) -> None:
        with self._ready:
            self._waiting.setdefault(client, deque()).append(job)
            self._ready.notify()

    def remove(self, job) -> bool:
        """Take ``job`` out of the queue; False when it was not waiting."""
        with self._ready:
            for client, jobs in list(self._waiting.items()):
                if job in jobs:
                    jobs.remove(job)
                    if not jobs:
                        del self._waiting[client]
                    return True
        return False

    def take(self):
        """The next job (blocks while none waits); its client goes to the back of the turn."""
        with self._ready:
            while not self._waiting:
                self._ready.wait()
            client, jobs = next(iter(self._waiting.items()))
            job = jobs.popleft()
            del self._waiting[client]
            if jobs:
                self._waiting[client] = jobs
            return job

    def order(self) -> list:
        """Every waiting job in the order it will run."""
        with self._ready:
            queues = [list(jobs) for jobs in self._waiting.values()]
        depth = max(map(len, queues), default=0)
        return [jobs[turn] for turn in range(depth) for jobs in queues if turn < len(jobs)]


def encode_tiles(job: Job, store: SharedStore, pixels: np.ndarray, missing: list) -> None:
    """Encode the ``missing`` tiles of the job's image into ``store`` in chunks of :data:`ENCODE_CHUNK`, its
    progress kept in ``job``; :class:`Cancelled` (checked between and within chunks) once it is cancelled,
    the chunks encoded so far kept."""
    job.total = len(missing)

    def progress(done: int, _total: int, before: int = 0) -> None:
        if job.cancel_asked.is_set():
            raise Cancelled
        job.done = before + done

    timer = StageTimer()
    for start in range(0, len(missing), ENCODE_CHUNK):
        if job.cancel_asked.is_set():
            raise Cancelled
        chunk = missing[start:start + ENCODE_CHUNK]
        store.vectors(pixels, chunk, timer, lambda done, total, s=start: progress(done, total, s))


class Jobs:
    """The explorer's jobs, pending and recently finished (the oldest finished ones dropped beyond ``keep``),
    and the encoder's thread running them one after the other: ``run(job)`` encodes the job's tiles
    (:func:`encode_tiles`) and answers its request."""

    def __init__(self, run: Callable[[Job], Result], keep: int = 256):
        self._run, self._keep = run, keep
        self._lock = threading.Lock()  # guards the jobs and their states
        self._jobs: OrderedDict[str, Job] = OrderedDict()  # job id -> job, pending and recently finished
        self._queue = FairQueue()
        threading.Thread(target=self._serve, daemon=True, name="selo-encoder").start()

    def find(self, result_id: str, client: str) -> Job | Result | None:
        """What became of the request whose result id is ``result_id``: its pending :class:`Job` (``client``
        now among those waiting for it); the result of its finished job, or the job's error raised (once: the
        outcome answers the request asked again, then the request is asked afresh); None when there is none."""
        with self._lock:
            job = next((j for j in self._jobs.values()
                        if j.result_id == result_id and j.state != "cancelled" and not j.answered), None)
            if job is None:
                return None
            if job.state in PENDING:
                if client not in job.clients:
                    job.clients.append(client)
                return job
            job.answered = True
        if job.error:
            raise job.error
        return job.result

    def submit(self, request: Request, result_id: str, client: str, total: int, unknown_words: list) -> Job:
        """A new job for ``request`` (``total`` tiles to encode), queued for ``client``."""
        job = Job(secrets.token_hex(8), request, result_id, [client], total=total, unknown_words=unknown_words)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep and next(iter(self._jobs.values())).state not in PENDING:
                self._jobs.popitem(last=False)
        self._queue.put(job, client)
        return job

    def get(self, job_id: str) -> Job:
        """The job ``job_id``; :class:`NotFound` when unknown."""
        with self._lock:
            if job_id not in self._jobs:
                raise NotFound(f"job {job_id!r}: unknown (finished long ago, or never asked)")
            return self._jobs[job_id]

    def position(self, job: Job) -> int:
        """0 while ``job`` runs, else its place in the queue (1: next); -1 once finished."""
        if job.state == "encoding":
            return 0
        order = self._queue.order()
        return order.index(job) + 1 if job in order else -1

    def cancel(self, job_id: str, client: str) -> Job:
        """Withdraw ``client`` from a job; the job stops (queued: at once; encoding: within one chunk of
        tiles, the tiles encoded so far kept) when no other client waits for it."""
        job = self.get(job_id)
        with self._lock:
            if client in job.clients:
                job.clients.remove(client)
            if job.clients or job.state not in PENDING:
                return job
            job.cancel_asked.set()
        if self._queue.remove(job):
            with self._lock:
                job.state = "cancelled"
        return job

    def _serve(self) -> None:
        """The encoder's thread: the queue's jobs one after the other. A job's failure is kept as an
        :class:`ExplorerError`: its own; a ValueError (bad input, e.g. an image all nodata: the message names
        it) as :class:`InvalidRequest`; anything else as :class:`JobFailed`, and the thread goes on."""
        while True:
            job = self._queue.take()
            with self._lock:
                if job.cancel_asked.is_set():
                    job.state = "cancelled"
                    continue
                job.state = "encoding"
            try:
                job.result = self._run(job)
                state = "done"
            except Cancelled:
                state = "cancelled"
            except ExplorerError as error:
                job.error, state = error, "failed"
            except ValueError as error:
                job.error, state = InvalidRequest(str(error)), "failed"
            except Exception as error:  # noqa: BLE001 - reported to the client, the server goes on
                job.error, state = JobFailed(f"{job.request.image}: {type(error).__name__}: {error}"), "failed"
            with self._lock:
                job.state = state
