"""Workers past one machine: Ray actors (``--ray-address ADDRESS|auto``; ``pip install sdui[cluster]``).

The studio process keeps everything users touch: the queue and its owners, bounds and cancel, the
UI and API, and the saved images. Each actor holds one Engine (its own model manager and memory
ladder) on one device: ``num_gpus=1`` per GPU of the cluster, or one per ``--devices`` entry.

Across the boundary:
- a job goes out as its checked ``GenerationRequest`` (saving off); the result comes back with each
  image as PNG bytes (lossless: the same pixels) and the studio saves it in its outputs folder;
- progress and previews: the studio polls the actor (a threaded actor: ``max_concurrency`` lets the
  poll and the cancel run while ``generate`` does), about five times a second;
- cancel: the studio calls the actor's ``cancel(job_id)``, which sets that job's cancel flag;
- models: an actor reads checkpoints from the same path as the studio (a shared disk); when the
  file is not there, the studio sends it (with its config folder, if any) in chunks, and the actor
  checks the SHA-256 before it renames the file into place (atomic, never a half file);
- an actor that dies mid-job (``ray.kill``, a crashed process, a machine gone) raises
  ``WorkerLost``: the queue runs the job once more on another worker (``sdui.jobs``).

``watch()`` starts actors for GPUs that join the cluster later (and replaces lost ones).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from .types import Cancelled, GenerationRequest, GenerationResult, Progress, SduiError, Skipped
from .workers import Worker, WorkerLost, parse_devices

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # progress poll period while an actor generates
CHUNK_BYTES = 32 * 2**20  # model files travel in pieces of this size
ACTOR_START_SECONDS = 300  # an actor not ready by then (no free GPU, a broken node) is given up


class RayMissing(RuntimeError):
    """--ray-address was given but Ray is not installed."""


class ClusterError(RuntimeError):
    """The Ray cluster could not be joined, or gave no worker."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayMissing("--ray-address needs Ray: pip install 'sdui[cluster]'") from None
    return ray


def connect(address: Optional[str]) -> None:
    """Join the Ray cluster at ``address`` ('auto': the one `ray start` made here), once per process."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(f"--ray-address {address}: could not join the Ray cluster ({_short(e)}); start one "
                               "with `ray start --head` on this machine, or give the head's host:port") from None


# ---- the actor (runs on a worker machine) -------------------------------------------------------
class WorkerActor:
    """One Engine on one device inside a Ray actor. Threaded (``max_concurrency``): ``progress`` and
    ``cancel`` are answered while ``generate`` runs."""

    def __init__(self, settings: dict, device: str, models_dir: Optional[str] = None):
        from .config import Settings
        from .engine import Engine

        changes: dict[str, Any] = dict(device=device, use_cpu="all" if device == "cpu" else None, devices=None,
                                       ray_address=None, outputs_dir=tempfile.mkdtemp(prefix="sdui-actor-"))
        if models_dir:
            changes.update(models_dir=models_dir, ckpt_dir=None)
        self.engine = Engine(Settings(**settings).replace(**changes))
        self._lock = threading.Lock()
        self._progress: dict[str, Any] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._skip: dict[str, threading.Event] = {}  # A1111's Skip: end the current image, go on with the next
        self._parts: dict[str, Path] = {}
        self._early: set[str] = set()  # jobs cancelled before their generate call started here

    def info(self) -> dict:
        import socket

        return {"host": socket.gethostname(), "pid": os.getpid(), "device": self.engine.device_name}

    def status(self) -> dict:
        s = self.engine.status()
        keep = ("device", "dtype", "current", "memory_level", "ram_rss_bytes", "ram_total_bytes", "vram_total_bytes",
                "vram_free_bytes", "vram_allocated_bytes")
        return {k: s[k] for k in keep if k in s}

    def loaded(self) -> tuple[Optional[str], list[str]]:
        return self.engine.current_model_name(), self.engine.loaded_model_names()

    def generate(self, job_id: str, request: GenerationRequest) -> dict:
        cancel, skip = threading.Event(), threading.Event()
        with self._lock:
            self._cancel[job_id], self._skip[job_id], self._progress[job_id] = cancel, skip, None
            if job_id in self._early:  # the studio's cancel came before this call ran
                self._early.discard(job_id)
                cancel.set()
        out: dict[str, Any]
        try:
            result = self.engine.generate(request.replace(save=False), on_progress=lambda p: self._record(job_id, p),
                                          cancel=cancel, skip=skip)
            out = {"state": "done", "result": _pack_result(result)}
        except Cancelled as e:
            partial = getattr(e, "partial", None)
            state = "skipped" if isinstance(e, Skipped) else "cancelled"
            out = {"state": state, "message": str(e), "result": _pack_result(partial) if partial else None}
        except Exception as e:  # noqa: BLE001 - the studio needs the reason, and the actor stays up
            kind = type(e).__name__
            out = {"state": "error", "kind": kind, "message": str(e) if isinstance(e, SduiError) else f"{kind}: {e}"}
        try:  # the last progress too: the studio's last poll may have come before it
            return {**out, "loaded": self.loaded(), "progress": self._progress.get(job_id)}
        finally:
            with self._lock:
                self._cancel.pop(job_id, None)
                self._skip.pop(job_id, None)
                self._progress.pop(job_id, None)

    def _record(self, job_id: str, p: Progress) -> None:
        last = self._progress.get(job_id)
        if p.preview is not None:
            p = dataclasses.replace(p, preview=png_bytes(p.preview))
        elif last is not None and last.preview is not None:  # a poll between two previews still sees the last one
            p = dataclasses.replace(p, preview=last.preview,
                                    preview_step=last.preview_step if last.preview_step is not None else last.step)
        self._progress[job_id] = p

    def progress(self, job_id: str) -> Optional[Progress]:
        return self._progress.get(job_id)

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            event = self._cancel.get(job_id)
            if event is None:
                self._early.add(job_id)
        if event is not None:
            event.set()
        return event is not None

    def skip(self, job_id: str) -> bool:
        """End the job's current image and go on with its next one (its last: the job ends, as done)."""
        with self._lock:
            event = self._skip.get(job_id)
        if event is not None:
            event.set()
        return event is not None

    # model files the studio sends when this machine does not have them
    def has_model(self, name: str, sha256: Optional[str]) -> bool:
        self.engine.refresh()
        for e in self.engine.checkpoints():
            if e.name == name and not e.error:
                return not (sha256 and e.is_file) or self.engine.file_sha256(e.path) == sha256
        return False

    def receive(self, rel: str, offset: int, data: bytes) -> int:
        """Append a piece of ``rel`` (a path under the checkpoint folder) to its temporary file."""
        target = self._target(rel)
        with self._lock:
            part = self._parts.setdefault(rel, target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part"))
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "r+b" if offset else "wb") as f:
            f.seek(offset)
            f.write(data)
        return offset + len(data)

    def commit(self, rel: str, sha256: str) -> str:
        """Check the received file's SHA-256, then rename it into place (atomic); a mismatch removes it."""
        target = self._target(rel)
        with self._lock:
            part = self._parts.pop(rel)
        got = file_sha256(part)
        if got != sha256:
            part.unlink(missing_ok=True)
            raise ValueError(f"{rel}: received file's SHA-256 {got[:10]} is not the studio's {sha256[:10]}; not used")
        os.replace(part, target)
        return str(target)

    def refresh(self) -> None:
        self.engine.refresh()

    def _target(self, rel: str) -> Path:
        root = self.engine.checkpoint_folder()
        target = (root / rel).resolve()
        if root not in target.parents:
            raise ValueError(f"{rel!r} is not a path inside the checkpoint folder")
        return target


# ---- the studio's side ------------------------------------------------------------------------
class RayWorker(Worker):
    """The studio's handle on one WorkerActor."""

    remote = True

    def __init__(self, actor, name: str, engine, settings, poll: float = POLL_SECONDS):
        super().__init__(name)
        self.actor, self.studio, self.settings, self.poll = actor, engine, settings, poll
        self._current: Optional[str] = None
        self._loaded: set[str] = set()
        self._has: set[str] = set()  # models this actor is known to have
        self.info: dict = {}

    def wait_ready(self, timeout: float = ACTOR_START_SECONDS) -> "RayWorker":
        self.info = _ray().get(self.actor.info.remote(), timeout=timeout)
        return self

    def current_model(self) -> Optional[str]:
        return self._current

    def loaded_models(self) -> set[str]:
        return set(self._loaded)

    def status(self) -> dict:
        try:
            s = _ray().get(self.actor.status.remote(), timeout=2)
        except Exception:  # noqa: BLE001 - busy or gone: say what is known
            s = {"device": self.info.get("device"), "current": self._current}
        return {"kind": "ray", "host": self.info.get("host"), **s}

    def close(self) -> None:
        try:
            _ray().kill(self.actor)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def generate(self, request, on_progress=None, cancel=None, skip=None) -> GenerationResult:
        ray = _ray()
        from ray import exceptions as rex

        lost = (rex.RayActorError, rex.ObjectLostError, rex.OwnerDiedError, rex.RaySystemError)
        job_id = uuid.uuid4().hex[:12]
        try:
            self._ensure_model(request.model)
            ref = self.actor.generate.remote(job_id, request)
            told, seen = False, None
            while True:
                ready, _ = ray.wait([ref], timeout=self.poll)
                if not told and cancel is not None and cancel.is_set():
                    self.actor.cancel.remote(job_id)
                    told = True
                if skip is not None and skip.is_set():  # one Skip press ends one image: pass it on once
                    skip.clear()
                    self.actor.skip.remote(job_id)
                if ready:
                    break
                p = ray.get(self.actor.progress.remote(job_id))
                if p is not None and p != seen:
                    seen = p
                    if on_progress:
                        on_progress(_unpack_progress(p))
            out = ray.get(ref)
        except lost as e:
            raise WorkerLost(_short(e)) from None
        if out["progress"] is not None and out["progress"] != seen and on_progress:
            on_progress(_unpack_progress(out["progress"]))
        self._current, loaded = out["loaded"]
        self._loaded = set(loaded)
        if out["state"] == "done":
            return self._unpack(out["result"], request)
        if out["state"] in ("cancelled", "skipped"):
            stop = (Skipped if out["state"] == "skipped" else Cancelled)(out["message"])
            stop.partial = self._unpack(out["result"], request) if out["result"] else None
            raise stop
        raise _remote_error(out["kind"], out["message"])

    def _unpack(self, result: GenerationResult, request: GenerationRequest) -> GenerationResult:
        """PNG bytes back to images, saved here (outputs stay on the studio's machine) as the request says."""
        from PIL import Image

        from .images import outputs

        result.request = request
        for im in result.images:
            img = Image.open(io.BytesIO(im.image))
            img.load()
            img.info["parameters"] = im.infotext
            im.image = img
            if request.save and not im.partial:
                folder = outputs.output_folder(self.settings.outputs_dir, request.mode)
                im.path = str(outputs.save_image(img, folder, im.seed if im.seed != -1 else None, im.infotext,
                                                 request.output_format))
        return result

    def _ensure_model(self, name: Optional[str]) -> None:
        """The actor has checkpoint ``name`` (the same file), else it gets it from the studio now."""
        if not name or name in self._has:
            return
        ray = _ray()
        entry = self.studio.find_model(name)
        sha = self.studio.file_sha256(entry.path) if entry.is_file else None
        if not ray.get(self.actor.has_model.remote(name, sha)):
            log.info("sending checkpoint %s to worker %s", name, self.name)
            for rel, path in model_files(entry):
                send_file(self.actor, rel, path, sha if path == entry.path else file_sha256(path))
            ray.get(self.actor.refresh.remote())
        self._has.add(name)


def model_files(entry) -> list[tuple[str, Path]]:
    """(path under the checkpoint folder, file here) of everything a checkpoint needs: a single file
    and its ``<stem>.config/`` folder if any, or every file of a diffusers folder."""
    path = Path(entry.path)
    if path.is_dir():
        return [(str(p.relative_to(path.parent)), p) for p in sorted(path.rglob("*")) if p.is_file()]
    files = [(path.name, path)]
    config = path.with_name(path.stem + ".config")
    if config.is_dir():
        files += [(str(p.relative_to(path.parent)), p) for p in sorted(config.rglob("*")) if p.is_file()]
    return files


def send_file(actor, rel: str, path: Path, sha256: str) -> str:
    ray = _ray()
    offset = 0
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK_BYTES)
            if not data and offset:
                break
            offset = ray.get(actor.receive.remote(rel, offset, data))
            if len(data) < CHUNK_BYTES:
                break
    return ray.get(actor.commit.remote(rel, sha256))


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _pack_result(result: GenerationResult) -> GenerationResult:
    return dataclasses.replace(result, images=[dataclasses.replace(im, image=png_bytes(im.image)) for im in result.images])


def _unpack_progress(p: Progress) -> Progress:
    if isinstance(p.preview, bytes):
        from PIL import Image

        return dataclasses.replace(p, preview=Image.open(io.BytesIO(p.preview)))
    return p


def _remote_error(kind: str, message: str) -> Exception:
    """The actor's error as the same sdui error class (the API maps classes to HTTP statuses)."""
    from . import types

    cls = getattr(types, kind, None)
    if isinstance(cls, type) and issubclass(cls, SduiError):
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        return exc
    return RuntimeError(message)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


# ---- starting actors --------------------------------------------------------------------------
def start_actor(engine, settings, device: str, index: int, models_dir: Optional[str] = None,
                num_cpus: float = 1) -> RayWorker:
    """One WorkerActor on ``device`` ('cuda': one GPU of the cluster; 'cpu': ``num_cpus`` cores), ready."""
    ray = _ray()
    gpu = device.startswith("cuda")
    cls = ray.remote(num_gpus=1 if gpu else 0, num_cpus=num_cpus, max_concurrency=4)(WorkerActor)
    fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name != "extra"}
    actor = cls.remote(fields, "cuda" if gpu else device, models_dir)
    worker = RayWorker(actor, f"ray-{index}", engine, settings)
    try:
        worker.wait_ready()
    except Exception:
        ray.kill(actor)
        raise
    worker.name = f"ray-{index}:{worker.info['host']}:{worker.info['device']}"
    return worker


_counter = itertools.count()


def wanted_devices(settings) -> list[str]:
    """One 'cuda' actor per GPU in the cluster, or the ``--devices`` entries; a cluster without GPUs: one CPU actor."""
    if settings.devices:
        return parse_devices(settings.devices)
    gpus = int(_ray().cluster_resources().get("GPU", 0))
    return ["cuda"] * gpus if gpus else ["cpu"]


def ray_workers(engine, settings) -> list[Worker]:
    connect(settings.ray_address)
    try:
        return [start_actor(engine, settings, d, next(_counter)) for d in wanted_devices(settings)]
    except Exception as e:  # noqa: BLE001 - one sentence for the owner, not a Ray traceback
        raise ClusterError(f"--ray-address {settings.ray_address}: could not start a worker ({_short(e)})") from None


def top_up(queue, engine, settings) -> list[Worker]:
    """Start actors for GPUs (or ``--devices`` entries) that have no worker: a machine that joined the
    cluster, or a lost actor's place. Idle workers that no longer answer leave the pool first."""
    ray = _ray()
    alive = []
    for w in queue.workers:
        if not getattr(w, "remote", False):
            continue
        if w.job is None:
            try:
                ray.get(w.actor.info.remote(), timeout=10)
            except Exception as e:  # noqa: BLE001 - gone: out of the pool
                log.warning("worker %s does not answer (%s); removed", w.name, _short(e))
                queue.remove_worker(w)
                continue
        alive.append(w)
    started = []
    for device in wanted_devices(settings)[len(alive):]:
        try:
            worker = start_actor(engine, settings, device, next(_counter))
        except Exception as e:  # noqa: BLE001 - try again at the next look
            log.warning("could not start a worker on %s: %s", device, _short(e))
            break
        queue.add_worker(worker)
        started.append(worker)
        log.info("worker %s joined", worker.name)
    return started


def watch(queue, engine, settings, interval: float = 15.0) -> threading.Thread:
    """Look at the cluster every ``interval`` seconds and :func:`top_up` (a daemon thread)."""

    def loop():
        while not getattr(queue, "_stop", False):
            time.sleep(interval)
            try:
                top_up(queue, engine, settings)
            except Exception as e:  # noqa: BLE001 - the watcher must outlive a bad look
                log.warning("cluster watch: %s", _short(e))

    t = threading.Thread(target=loop, name="sdui-cluster-watch", daemon=True)
    t.start()
    return t
