"""The job queue shared by the web UI, the REST API and the CLI's server mode.

One thread per worker (by default one worker: the engine, so GPU work does not overlap; with
``--devices`` or ``--ray-address`` one per device, see ``sdui.workers``) runs jobs one at a time;
a waiting job goes to a free worker as soon as there is one, preferring a worker that already has
its model loaded (model affinity), then the least-loaded one. Every job has an
owner (a browser session, an API credential or client id). Cancel and skip act only on the owner's
jobs unless the caller is an admin. The queue is bounded: a full queue refuses at once (QueueFull)
instead of making the client wait with no answer. A job whose client goes away still finishes and
saves its images; the worker does not depend on the request that submitted it.

A worker that is lost mid-job (a Ray actor whose process or machine died) has its job run again,
once, on another worker with the same seed, and the result says so in one line; a second loss
fails the job with the reason.

Nothing starts at import: ``JobQueue.start()`` starts the workers' threads.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from .workers import EngineWorker, Worker, WorkerLost
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
    worker: Optional[str] = None  # the name of the worker running (or that ran) it
    attempts: int = 0  # runs started; a job whose worker was lost runs once more elsewhere
    notes: list = field(default_factory=list)  # one-line notes for the user (a retry on another worker)
    plan: Any = None  # an X/Y/Z plot (sdui.xyz.Plan): the job makes every cell of it, then the grid
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
    def __init__(self, engine, max_queue: int = 16, admins: tuple[str, ...] = (),
                 workers: Optional[list[Worker]] = None):
        self.engine = engine
        self.max_queue = max_queue
        self.admins = set(admins)
        self._lock = threading.Condition()
        self._pending: list[tuple[int, int, Job]] = []  # (-priority, seq, job)
        self._seq = itertools.count()
        self._jobs: dict[str, Job] = {}
        self._workers: list[Worker] = list(workers) if workers else [EngineWorker(engine)]
        self._assigned: dict[int, Job] = {}  # id(worker) -> the job handed to it, not yet picked up
        self._threads: dict[int, threading.Thread] = {}  # id(worker) -> its thread
        self._started = False
        self._stop = False

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "JobQueue":
        with self._lock:
            if not self._started:
                self._stop, self._started = False, True
                for w in self._workers:
                    self._start_thread(w)
                self._dispatch()
        return self

    def stop(self, timeout: float = 10) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()
            threads = list(self._threads.values())
            running = self._running_jobs()
        for job in running:
            job.cancel_event.set()
        for t in threads:
            t.join(timeout)
        with self._lock:
            self._threads.clear()
            self._started = False
        for w in list(self._workers):
            w.close()

    def add_worker(self, worker: Worker) -> None:
        """A worker that joined later (another GPU, a Ray actor on a new machine): it takes jobs at once."""
        with self._lock:
            self._workers.append(worker)
            if self._started and not self._stop:
                self._start_thread(worker)
            self._dispatch()

    def remove_worker(self, worker: Worker) -> None:
        """An idle worker that is gone (its machine left the cluster) leaves the pool."""
        with self._lock:
            worker.alive = False
            if worker in self._workers:
                self._workers.remove(worker)
            self._threads.pop(id(worker), None)
            self._lock.notify_all()

    @property
    def workers(self) -> list[Worker]:
        with self._lock:
            return list(self._workers)

    def worker_status(self) -> list[dict]:
        """Each worker as the Models panel shows it: name, device, model loaded, job running, memory."""
        out = []
        for w in self.workers:
            job = w.job
            out.append({**w.status(), "name": w.name, "alive": w.alive, "jobs_done": w.jobs_done,
                        "job": job.id if job else None, "job_owner": job.owner if job else None})
        return out

    def _start_thread(self, worker: Worker) -> None:
        name = "sdui-worker" if len(self._workers) == 1 else f"sdui-worker-{worker.name}"
        t = threading.Thread(target=self._work, args=(worker,), name=name, daemon=True)
        self._threads[id(worker)] = t
        t.start()

    # ---- submitting and looking up ------------------------------------------------------------
    def submit(self, request: GenerationRequest, owner: str, priority: int = 0, plan: Any = None) -> Job:
        """Queue a job; raises QueueFull at once when ``max_queue`` jobs are waiting, and
        InvalidRequest before queueing when the request is bad. With ``plan`` (an X/Y/Z plot), the one
        job makes every cell, each checked now."""
        if not owner:
            raise ValueError("a job needs an owner (the API user or a browser session)")
        checked = plan.prepare(self.engine, request) if plan is not None else self.engine.prepare(request)
        job = Job(request=checked, owner=owner, priority=priority, plan=plan)
        with self._lock:
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} jobs waiting); try again in a moment")
            self._jobs[job.id] = job
            self._pending.append((-priority, next(self._seq), job))
            self._pending.sort(key=lambda t: (t[0], t[1]))
            self._dispatch()
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
        with self._lock:
            for running in self._running_jobs():
                if running.owner == owner:
                    return running
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
        """The running job (the longest-running one when several workers are busy)."""
        jobs = self._running_jobs()
        return jobs[0] if jobs else None

    def running_jobs(self) -> list[Job]:
        with self._lock:
            return self._running_jobs()

    def _running_jobs(self) -> list[Job]:
        jobs = [w.job for w in self._workers if w.job is not None]
        return sorted(jobs, key=lambda j: j.started or 0)

    # ---- control ------------------------------------------------------------------------------
    def _may_control(self, job: Job, who: str) -> bool:
        return job.owner == who or who in self.admins

    def _running_for(self, who: str) -> list[Job]:
        """The running jobs ``who`` may interrupt or skip (called with the lock held). A finished job
        whose worker has not yet let go of it is left out: nothing is left to stop."""
        return [j for j in self._running_jobs() if not j.state.finished and self._may_control(j, who)]

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
            for running in self._running_for(who):
                if job_id is None or running.id == job_id:
                    running.cancel_event.set()
                    count += 1
        return count

    def skip(self, who: str) -> bool:
        """A1111's skip: end the running job's current image (batch) now, keep it unsaved as a
        partial image, and go on with the next one (the job's last image: the job ends)."""
        with self._lock:
            mine = self._running_for(who)
        for running in mine:
            running.skipped = True
            running.skip_event.set()
        return bool(mine)

    # ---- dispatch and the workers ----------------------------------------------------------
    def _dispatch(self) -> None:
        """Hand waiting jobs to free workers, in queue order (called with the lock held). A job goes to
        a free worker that has its model loaded, else to the free worker that has done the least work;
        no job waits while a worker is free."""
        if self._stop or not self._started:
            return
        free = [w for w in self._workers if w.alive and w.job is None and id(w) not in self._assigned]
        while self._pending and free:
            _, _, job = self._pending.pop(0)
            worker = pick_worker(free, job.request.model)
            free.remove(worker)
            worker.job = job
            job.worker, job.attempts = worker.name, job.attempts + 1
            job.state, job.started = JobState.RUNNING, time.time()
            self._assigned[id(worker)] = job
        self._lock.notify_all()

    def _work(self, worker: Worker) -> None:
        while True:
            with self._lock:
                while id(worker) not in self._assigned and not self._stop and worker.alive:
                    self._lock.wait()
                if self._stop or id(worker) not in self._assigned:
                    return
                job = self._assigned.pop(id(worker))
            lost = False
            try:
                progress = functools.partial(_record_progress, job)
                if job.plan is None:
                    result = worker.generate(job.request, on_progress=progress, cancel=job.cancel_event,
                                             skip=job.skip_event)
                else:  # an X/Y/Z plot: its cells run on this worker, the grid is saved by the studio's engine
                    result = job.plan.run(_WorkerEngine(worker, self.engine), job.request, on_progress=progress,
                                          cancel=job.cancel_event)
                result.warnings[:0] = job.notes
                job.result = result
                self._finish(job, JobState.DONE)
            except WorkerLost as e:
                lost = True
                self._worker_lost(worker, job, e)
            except Cancelled as e:
                job.result = getattr(e, "partial", None)
                if job.result is not None:
                    job.result.warnings[:0] = job.notes
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
                    worker.job = None
                    worker.jobs_done += 0 if lost else 1
                    self._forget_old()
                    self._dispatch()
            if lost:
                return

    def _worker_lost(self, worker: Worker, job: Job, error: WorkerLost) -> None:
        """The worker is gone: it leaves the pool; its job runs once more on another worker (same request,
        same seed, so the same pixels), or fails with the reason when it was already retried or when
        no worker is left."""
        log.warning("worker %s lost during job %s: %s", worker.name, job.id, error)
        with self._lock:
            worker.alive = False
            if worker in self._workers:
                self._workers.remove(worker)
            self._threads.pop(id(worker), None)
            others = [w for w in self._workers if w.alive]
            if job.attempts < 2 and others and not job.cancel_event.is_set():
                job.notes.append(f"Worker {worker.name} was lost mid-job ({error}); the job was run again on another "
                                 "worker with the same seed")
                job.state, job.progress, job.worker = JobState.QUEUED, None, None
                self._pending.insert(0, (-job.priority, -1, job))
                return
        why = "it was already retried once" if job.attempts >= 2 else "no other worker is left"
        job.error_kind = "WorkerLost"
        if job.cancel_event.is_set():
            self._finish(job, JobState.CANCELLED, f"interrupted; worker {worker.name} was lost ({error})")
        else:
            self._finish(job, JobState.FAILED, f"worker {worker.name} was lost ({error}) and {why}")

    def _finish(self, job: Job, state: JobState, error: Optional[str] = None) -> None:
        # queue clients are remote (UI, API): they learn file names, never server paths
        job.state, job.error, job.finished = state, redact_paths(error) if error else error, time.time()
        self._record_history(job)
        job.done_event.set()

    def _record_history(self, job: Job) -> None:
        """The job's saved images join its owner's lasting history (``sdui.history``), before it is done."""
        history = getattr(self.engine, "history", None)
        if history is None or not job.result:
            return
        try:
            history.record([im.path for im in job.result.images if im.path], job.owner)
        except Exception:  # noqa: BLE001 - the history is an index of the files; a failure must not fail the job
            log.exception("could not add job %s to the history", job.id)

    def _forget_old(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.state.finished), key=lambda j: j.finished or 0)
        for j in finished[:-KEEP_FINISHED]:
            self._jobs.pop(j.id, None)


def pick_worker(free: list[Worker], model: Optional[str]) -> Worker:
    """Model affinity first (a free worker with ``model`` on its device, then one with it in its RAM
    cache), then the least-loaded free worker (fewest jobs done; ties go to the first listed)."""
    if len(free) > 1 and model:
        for having in ([w for w in free if w.current_model() == model], [w for w in free if model in w.loaded_models()]):
            if having:
                return min(having, key=lambda w: w.jobs_done)
    return min(free, key=lambda w: w.jobs_done)


class _WorkerEngine:
    """The engine an X/Y/Z plot sees on a worker: each cell is generated by that worker (local device or
    Ray actor); everything else (checking cells, saving the grid) is the studio's engine."""

    def __init__(self, worker: Worker, engine: Any):
        self._worker, self._engine = worker, engine

    def generate(self, request: GenerationRequest, on_progress=None, cancel=None) -> GenerationResult:
        return self._worker.generate(request, on_progress=on_progress, cancel=cancel)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _record_progress(job: Job, p: Progress) -> None:
    """A job's latest progress, carrying the last preview forward: previews are made every few steps,
    and a client polling between two of them should still see the latest one."""
    last = job.progress
    if p.preview is None and last is not None and last.preview is not None:
        p = dataclasses.replace(p, preview=last.preview,
                                preview_step=last.preview_step if last.preview_step is not None else last.step)
    job.progress = p
