"""Workers: what runs a job for the queue (``sdui.jobs``). One per device.

- ``EngineWorker``: an Engine in this process. The default pool is one of them, the engine the
  server made, so a single-device studio runs exactly as it always did.
- ``local_workers(engine, settings)``: with ``--devices cuda:0,cuda:1`` (or, without the flag,
  every CUDA device found when there are several), one EngineWorker per device, each its own Engine
  and so its own model manager, RAM cache share and memory ladder. Outputs go to the same folder.
- ``sdui.cluster.RayWorker``: a Ray actor on this or another machine (``--ray-address``).

A worker that is lost mid-job raises ``WorkerLost``; the queue retries the job once elsewhere.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

from .types import GenerationRequest, GenerationResult, Progress, UnknownModelError

if TYPE_CHECKING:
    from .config import Settings
    from .engine import Engine

log = logging.getLogger(__name__)


class WorkerLost(Exception):
    """The worker died (its process or machine went away) while it ran a job."""


class Worker:
    """What the queue needs of a worker. ``job``, ``alive`` and ``jobs_done`` are kept by the queue."""

    name: str = "worker"
    remote = False  # a Ray actor (sdui.cluster.RayWorker)

    def __init__(self, name: str):
        self.name = name
        self.job: Any = None  # the sdui.jobs.Job it is running
        self.alive = True
        self.jobs_done = 0

    def generate(self, request: GenerationRequest, on_progress: Optional[Callable[[Progress], None]] = None,
                 cancel=None, skip=None) -> GenerationResult:
        raise NotImplementedError

    def current_model(self) -> Optional[str]:
        """The model on the worker's device now (cheap: the queue asks while it dispatches)."""
        return None

    def loaded_models(self) -> set[str]:
        """Models the worker has in memory (on the device or in its RAM cache)."""
        return set()

    def status(self) -> dict:
        return {}

    def close(self) -> None:
        """Let go of what the worker holds (a Ray actor); the queue calls it when it stops."""


class EngineWorker(Worker):
    """An Engine in this process. ``engine.generate`` is looked up at every job (tests replace it)."""

    def __init__(self, engine: "Engine", name: Optional[str] = None, sibling: bool = False):
        super().__init__(name or "local")
        self.engine = engine
        self.sibling = sibling  # an extra device's own Engine: its model list may lag the studio's

    def generate(self, request, on_progress=None, cancel=None, skip=None) -> GenerationResult:
        try:
            return self.engine.generate(request, on_progress=on_progress, cancel=cancel, skip=skip)
        except UnknownModelError:
            if not self.sibling:
                raise
            self.engine.refresh()  # a model added since this worker last looked (the studio checked the name)
            return self.engine.generate(request, on_progress=on_progress, cancel=cancel, skip=skip)

    def current_model(self) -> Optional[str]:
        return self.engine.current_model_name()

    def loaded_models(self) -> set[str]:
        return set(self.engine.loaded_model_names())

    def status(self) -> dict:
        s = self.engine.status()
        keep = ("device", "dtype", "current", "memory_level", "ram_rss_bytes", "ram_total_bytes", "vram_total_bytes",
                "vram_free_bytes", "vram_allocated_bytes")
        return {"kind": "local", **{k: s[k] for k in keep if k in s}}


def parse_devices(text: Optional[str]) -> list[str]:
    """``--devices cuda:0,cuda:1`` -> ["cuda:0", "cuda:1"]; each entry is checked by torch's parser."""
    import torch

    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            dev = torch.device(part)
        except RuntimeError:
            raise ValueError(f"--devices: {part!r} is not a device (expected cpu, cuda, cuda:N or mps, "
                             "comma-separated)") from None
        out.append(str(dev))
    return out


def check_local(devices: list[str]) -> None:
    """Every ``--devices`` entry exists on this machine (a ValueError naming the one that does not)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for d in devices:
        dev = torch.device(d)
        if dev.type == "cuda" and (dev.index or 0) >= count:
            raise ValueError(f"--devices: {d} is not on this machine (it has {count} CUDA device(s): "
                             f"{', '.join(f'cuda:{i}' for i in range(count)) or 'none'})")
        if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"--devices: {d}: MPS is not available on this machine")


def default_devices() -> list[str]:
    """Without ``--devices``: every CUDA device when there are several, else nothing (one worker: the
    engine's own device). CPU-only machines keep one worker: two on the same cores only slow each other."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(n)] if n > 1 else []


def _same_device(first, second: str) -> bool:
    import torch

    a, b = torch.device(str(first)), torch.device(second)
    if a.type != b.type:
        return False
    if a.type == "cuda":
        cur = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)
    return True


def local_workers(engine: "Engine", settings: "Settings") -> list[Worker]:
    """One EngineWorker per device of ``--devices`` (or every CUDA device when there are several).
    The server's engine is the first worker when it already sits on the first device; the others
    get their own Engine (own model manager, same models and outputs folders, same hash cache), and
    the RAM cache budget is shared out among them."""
    devices = parse_devices(settings.devices) if settings.devices else default_devices()
    check_local(devices)
    if len(devices) <= 1 and (not devices or _same_device(engine.device_name, devices[0])):
        return [EngineWorker(engine)]
    workers: list[Worker] = []
    engine_used = False
    for i, dev in enumerate(devices):
        name = f"{i}:{dev}"
        if not engine_used and i == 0 and _same_device(engine.device_name, dev):
            workers.append(EngineWorker(engine, name))
            engine_used = True
        else:
            workers.append(EngineWorker(engine.for_device(dev), name, sibling=True))
    budget = engine.cache_budget() // len(devices)
    for w in workers:
        w.engine.set_cache_budget(budget)  # type: ignore[attr-defined]
    return workers
