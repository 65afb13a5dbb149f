"""The job queue shared by the web UI, the REST API and the CLI's server mode.

One worker thread runs jobs one at a time (GPU work does not overlap); every job has an
owner (a browser session, an API credential or client id). Cancel and skip act only on the owner's
jobs unless the caller is an admin. The queue is bounded: a full queue refuses at once (QueueFull)
instead of making the client wait with no answer. A job whose client goes away still finishes and
saves its images; the worker does not depend on the request that submitted it.

Nothing starts at import: ``JobQueue.start()`` starts the worker.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

from .types import (Cancelled, GenerationRequest, GenerationResult, JobState, Progress, QueueFull, SduiError, Skipped,
                    redact_paths)

log = logging.getLogger(__name__)

KEEP_FINISHED = 200  # finished jobs remembered for progress/history lookups


@dataclass
class Job:
    request: GenerationRequest
    owner: str
    priority: int = 0
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: JobState = JobState.QUEUED
    progress: Optional[Progress] = None
    result: Optional[GenerationResult] = None
    error: Optional[str] = None
    error_kind: Optional[str] = None  # the exception class name, for HTTP status mapping
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    skipped: bool = False  # its owner pressed Skip at least once (A1111's state.skipped)
    skip_event: threading.Event = field(default_factory=threading.Event, repr=False)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    done_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def fraction(self) -> float:
        if self.state.finished:
            return 1.0
        p = self.progress
        if not p or not p.total:
            return 0.0
        return min(1.0, (p.image_index + p.step / p.total) / max(p.image_total, 1))

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self.done_event.wait(timeout)


class JobQueue:
    def __init__(self, engine, max_queue: int = 16, admins: tuple[str, ...] = ()):
        self.engine = engine
        self.max_queue = max_queue
        self.admins = set(admins)
        self._lock = threading.Condition()
        self._pending: list[tuple[int, int, Job]] = []  # (-priority, seq, job)
        self._seq = itertools.count()
        self._jobs: dict[str, Job] = {}
        self._running: Optional[Job] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = False

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "JobQueue":
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._work, name="sdui-worker", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        if self._running:
            self._running.cancel_event.set()
        if self._thread:
            self._thread.join(timeout)
            self._thread = None

    # ---- submitting and looking up ------------------------------------------------------------
    def submit(self, request: GenerationRequest, owner: str, priority: int = 0) -> Job:
        """Queue a job; raises QueueFull at once when ``max_queue`` jobs are waiting, and
        InvalidRequest before queueing when the request is bad."""
        if not owner:
            raise ValueError("a job needs an owner (the API user or a browser session)")
        checked = self.engine.prepare(request)
        job = Job(request=checked, owner=owner, priority=priority)
        with self._lock:
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} jobs waiting); try again in a moment")
            self._jobs[job.id] = job
            self._pending.append((-priority, next(self._seq), job))
            self._pending.sort(key=lambda t: (t[0], t[1]))
            self._lock.notify_all()
        return job

    def get(self, job_id: str, owner: Optional[str] = None) -> Optional[Job]:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or (owner is not None and job.owner != owner and owner not in self.admins):
            return None
        return job

    def position(self, job: Job) -> int:
        """0 = running or finished; n = n-th in line."""
        with self._lock:
            for i, (_, _, j) in enumerate(self._pending):
                if j is job:
                    return i + 1
        return 0

    def jobs_for(self, owner: str) -> list[Job]:
        """The owner's jobs, newest first. The table is read under the lock: the worker adds and
        forgets jobs while pages read it ("dictionary changed size during iteration")."""
        with self._lock:
            mine = [j for j in self._jobs.values() if j.owner == owner]
        return sorted(mine, key=lambda j: j.created, reverse=True)

    def current_for(self, owner: str) -> Optional[Job]:
        """The owner's running job, else their oldest queued one, else their latest finished one."""
        running = self._running
        if running and running.owner == owner:
            return running
        with self._lock:
            for _, _, j in self._pending:
                if j.owner == owner:
                    return j
        mine = self.jobs_for(owner)
        return mine[0] if mine else None

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> Optional[Job]:
        return self._running

    # ---- control ------------------------------------------------------------------------------
    def _may_control(self, job: Job, who: str) -> bool:
        return job.owner == who or who in self.admins

    def cancel(self, who: str, job_id: Optional[str] = None) -> int:
        """Interrupt ``who``'s running job and drop their queued ones (or just ``job_id``).
        Returns how many jobs were affected; never touches other owners' jobs unless admin."""
        count = 0
        with self._lock:
            for entry in list(self._pending):
                j = entry[2]
                if (job_id is None or j.id == job_id) and self._may_control(j, who):
                    self._pending.remove(entry)
                    self._finish(j, JobState.CANCELLED, "cancelled before it started")
                    count += 1
            running = self._running
            if running and (job_id is None or running.id == job_id) and self._may_control(running, who):
                running.cancel_event.set()
                count += 1
        return count

    def skip(self, who: str) -> bool:
        """A1111's skip: end the running job's current image (batch) now, keep it unsaved as a
        partial image, and go on with the next one (the job's last image: the job ends)."""
        running = self._running
        if running and self._may_control(running, who):
            running.skipped = True
            running.skip_event.set()
            return True
        return False

    # ---- the worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stop:
                    self._lock.wait()
                if self._stop:
                    return
                _, _, job = self._pending.pop(0)
                self._running = job
                job.state, job.started = JobState.RUNNING, time.time()
            try:
                result = self.engine.generate(job.request, on_progress=lambda p, j=job: _record_progress(j, p),
                                              cancel=job.cancel_event)
                job.result = result
                self._finish(job, JobState.DONE)
            except Cancelled as e:
                job.result = getattr(e, "partial", None)
                skipped = isinstance(e, Skipped)  # a Skip that ended the job's last image: the job is done
                self._finish(job, JobState.DONE if skipped else JobState.CANCELLED, None if skipped else str(e))
            except SduiError as e:
                job.error_kind = type(e).__name__
                self._finish(job, JobState.FAILED, str(e))
            except Exception as e:  # noqa: BLE001 - the worker must survive anything a job does
                log.exception("job %s failed", job.id)
                job.error_kind = type(e).__name__
                self._finish(job, JobState.FAILED, f"{type(e).__name__}: {e}")
            finally:
                with self._lock:
                    self._running = None
                    self._forget_old()

    def _finish(self, job: Job, state: JobState, error: Optional[str] = None) -> None:
        # queue clients are remote (UI, API): they learn file names, never server paths
        job.state, job.error, job.finished = state, redact_paths(error) if error else error, time.time()
        job.done_event.set()

    def _forget_old(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.state.finished), key=lambda j: j.finished or 0)
        for j in finished[:-KEEP_FINISHED]:
            self._jobs.pop(j.id, None)


def _record_progress(job: Job, p: Progress) -> None:
    """A job's latest progress, carrying the last preview forward: previews are made every few steps,
    and a client polling between two of them should still see the latest one."""
    last = job.progress
    if p.preview is None and last is not None and last.preview is not None:
        p = dataclasses.replace(p, preview=last.preview,
                                preview_step=last.preview_step if last.preview_step is not None else last.step)
    job.progress = p
