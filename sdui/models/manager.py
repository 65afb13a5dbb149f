"""The one model manager: every pipeline and every byte of VRAM belongs to it.

- ``select(name)`` switches checkpoints. The new model is loaded and validated completely before
  the current one is let go; if loading fails the current model stays and the error goes up.
- Recently used models stay in a RAM cache with a byte budget, least recently used evicted first;
  an evicted model is freed for real (references dropped, ``gc``, CUDA cache, ``malloc_trim``).
- ``run(fn, ...)`` runs a job at the best memory level and, on out-of-memory, frees memory, steps
  one level down the ladder and runs it again; the level that worked is remembered per model and
  image size.
- One re-entrant lock guards every load, move and generation step that touches a model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from . import detect, devices, formats, loader, openvino_backend, registry
from .depth import DepthEstimators
from .embeddings import ModelEmbeddings
from .lora_adapters import ModelLoras
from ..config import Settings
from ..types import Architecture, MemoryLevel, ModelLoadError, UnknownModelError

log = logging.getLogger(__name__)

AUTOMATIC_VAE, NO_VAE = "Automatic", "None"


MAX_CACHED_UPSCALERS = 2  # ESRGAN models are 1-70 MB; two cover switching between a favourite pair


class OutOfMemory(RuntimeError):
    """Out of memory at every level of the ladder."""


@dataclass
class LoadedModel:
    entry: registry.ModelEntry
    pipe: Any
    nbytes: int
    device: Any
    dtype: Any
    level: MemoryLevel = MemoryLevel.AS_LOADED  # of the weights' placement (device, offload)
    derived: dict = field(default_factory=dict)  # pipeline class name -> from_pipe() view (shared weights)
    view_levels: dict = field(default_factory=dict)  # id(pipeline view) -> the level its switches were set for
    architecture: Optional[Architecture] = None  # as detected at load (v-prediction settled); None = the entry's
    load_seconds: float = 0.0
    base_scheduler_config: Any = None  # as loaded; every job builds its own scheduler from it
    own_vae: Any = None  # the checkpoint's built-in VAE, kept while a VAE file replaces it
    vae_entry: Optional[registry.ModelEntry] = None  # the VAE file in use; None = built-in
    openvino: Any = None  # its OpenVINO parts (openvino_backend.OpenVinoModel), made on first use when --backend wants it
    openvino_error: Optional[str] = None  # why the conversion failed (the model then runs on PyTorch)

    @property
    def name(self) -> str:
        return self.entry.name

    def __post_init__(self):
        if self.architecture is None:
            self.architecture = Architecture.of(self.entry.architecture)

    @property
    def execution_device(self):
        """Where this model's computation runs (with CPU offload the weights live on the CPU, but
        the work happens on the accelerator)."""
        return self.device if self.device is not None else "cpu"

    def pipeline(self, cls):
        """The pipeline of class ``cls`` on this model's weights (no second copy: ``from_pipe``)."""
        if isinstance(self.pipe, cls):
            return self.pipe
        key = cls.__name__
        if key not in self.derived:
            self.derived[key] = cls.from_pipe(self.pipe)
        return self.derived[key]

    def all_pipelines(self):
        return [self.pipe, *self.derived.values()]


class ModelManager:
    def __init__(self, settings: Settings | None = None, hash_cache: registry.HashCache | None = None):
        self.settings = settings or Settings()
        self.lock = threading.RLock()
        self.hashes = hash_cache or registry.HashCache()
        self._device = None
        self._dtype = None
        self._found: dict[str, list[registry.ModelEntry]] | None = None
        self._cache: "OrderedDict[str, LoadedModel]" = OrderedDict()  # LRU order, most recent last
        self._current: Optional[str] = None
        self._levels: dict[tuple, MemoryLevel] = {}
        self._upscalers: "OrderedDict[str, Any]" = OrderedDict()  # path -> spandrel descriptor, LRU
        self.loras = ModelLoras(self)  # A1111's <lora:...> tags on the cached models
        self.embeddings = ModelEmbeddings(self)  # textual-inversion files a prompt names, on the cached models
        self.depth = DepthEstimators(self)  # the SD 2 depth model's depth estimator (models/depth/)
        gb = self.settings.ram_cache_gb
        # sized from the RAM available at start (less a reserve), not a fixed share: see devices.default_cache_budget
        self.cache_budget = int(gb * 1024**3) if gb is not None else devices.default_cache_budget()

    # ---- device -------------------------------------------------------------------------------
    @property
    def device(self):
        if self._device is None:
            self._device = devices.pick_device(self.settings)
            self._dtype = devices.pick_dtype(self.settings, self._device)
        return self._device

    @property
    def dtype(self):
        self.device  # noqa: B018 - resolves both
        return self._dtype

    # ---- what is on disk ----------------------------------------------------------------------
    def refresh(self) -> dict[str, list[registry.ModelEntry]]:
        s = self.settings
        found = registry.scan(s.models_dir, s.ckpt_dir, s.ckpt, embeddings_dir=s.embeddings_dir)
        for entry in found[registry.CHECKPOINT]:
            if entry.is_file and not entry.error:
                entry.sha256 = self.hashes.cached(entry.path)
        if s.vae_path:  # the owner's --vae-path is listed, so clients can name it like any VAE
            vae = Path(s.vae_path).expanduser()
            listed = {os.path.realpath(e.path) for e in found[registry.VAE_KIND]}
            if vae.is_file() and os.path.realpath(vae) not in listed:
                found[registry.VAE_KIND].append(registry.describe_file(vae, vae.stem, registry.VAE_KIND))
        with self.lock:
            self._found = found
        return found

    def entries(self, kind: str = registry.CHECKPOINT) -> list[registry.ModelEntry]:
        if self._found is None:
            self.refresh()
        return list(self._found.get(kind, []))

    def checkpoints(self) -> list[registry.ModelEntry]:
        return self.entries(registry.CHECKPOINT)

    def ensure_hash(self, entry: registry.ModelEntry) -> Optional[str]:
        if entry.sha256 is None and entry.is_file and not entry.error:
            entry.sha256 = self.hashes.sha256(entry.path)
        return entry.short_hash

    def find(self, name: str, kind: str = registry.CHECKPOINT, trusted: bool = False) -> registry.ModelEntry:
        """A listed model by name, A1111 title ("name.safetensors [hash]"), file name or short hash.

        Remote clients (API, UI) may name only what the server lists. ``trusted`` is for the
        server owner's own flags (``--ckpt``, ``--vae-path``) and the CLI: it also matches a listed
        entry by path, and accepts an unlisted file path or Hub id.
        """
        if not isinstance(name, str):
            raise UnknownModelError(f"unknown {kind} {name!r}: a name is a string")
        entries = self.entries(kind)
        wanted = name.strip()
        base, hash_part = wanted, None
        if wanted.endswith("]") and " [" in wanted:
            base, hash_part = wanted[:-1].rsplit(" [", 1)
        for e in entries:
            if wanted in (e.name, e.title) or base in (e.name, e.filename):
                return e
        for e in entries:
            if e.short_hash and e.short_hash in (wanted, hash_part):
                return e
        if trusted:
            found = self._find_path(wanted, kind, entries)
            if found is not None:
                return found
        names = ", ".join(e.name for e in entries if not e.error) or "none found"
        shown = wanted if len(wanted) <= 80 else wanted[:77] + "..."
        raise UnknownModelError(f"unknown {kind} '{shown}'. Available: {names}")

    @staticmethod
    def _find_path(wanted: str, kind: str, entries: list[registry.ModelEntry]) -> Optional[registry.ModelEntry]:
        """The owner's path or Hub id (trusted callers only): a listed entry by path, else a new one."""
        for e in entries:
            if e.path and wanted in (e.path, Path(e.path).name):
                return e
        p = Path(wanted).expanduser()
        if kind == registry.VAE_KIND and p.is_file():
            return registry.describe_file(p, p.stem, kind)
        if kind == registry.CHECKPOINT:
            if p.exists():
                return registry.describe_file(p, p.stem, kind) if p.is_file() else registry.ModelEntry(
                    name=p.name, path=str(p), format=formats.sniff_format(p))
            if registry.looks_like_hub_id(wanted):
                return registry.ModelEntry(name=wanted, path=wanted, format=formats.HUB, architecture=detect.HUB)
        return None

    def default_checkpoint(self) -> Optional[registry.ModelEntry]:
        """The server's default model: ``--ckpt`` (the owner's choice), else the first usable
        text-to-image checkpoint listed. The same for every client, whatever others ran."""
        if self.settings.ckpt:
            try:
                return self.find(self.settings.ckpt, trusted=True)
            except UnknownModelError:
                return None
        usable = [e for e in self.checkpoints() if not e.error and e.architecture not in (detect.X4_UPSCALER, detect.SD2_DEPTH)]
        return usable[0] if usable else None

    def default_vae_choice(self) -> str:
        """The "SD VAE" choice for a request that makes none: ``--vae-path`` (listed by refresh), else Automatic."""
        if self.settings.vae_path:
            try:
                return self.find(self.settings.vae_path, registry.VAE_KIND, trusted=True).filename
            except UnknownModelError:
                return self.settings.vae_path  # refused by check_vae_choice with the list of VAEs
        return AUTOMATIC_VAE

    # ---- loading and switching ----------------------------------------------------------------
    @property
    def current(self) -> Optional[LoadedModel]:
        return self._cache.get(self._current) if self._current else None

    def cached_names(self) -> list[str]:
        return list(self._cache)

    def cached_model(self, name: Optional[str]) -> Optional[LoadedModel]:
        return self._cache.get(name) if name else None

    def cached_models(self) -> list[LoadedModel]:
        return list(self._cache.values())

    def select(self, name: Optional[str] = None) -> LoadedModel:
        """Make ``name`` the current model (None: keep the current one, or load the default)."""
        with self.lock:
            if name is None:
                if self.current is not None:
                    return self.current
                name = self._default_name()
                entry = self.find(name, trusted=True)
            else:
                entry = self.find(name)
            if entry.name == self._current:
                return self.current
            if entry.name in self._cache:
                loaded = self._cache.pop(entry.name)
                self._cache[entry.name] = loaded
                self._place(loaded)
            else:
                loaded = self._load(entry)  # raises; the current model is untouched
                self._cache[entry.name] = loaded
            previous = self.current
            self._current = entry.name
            if previous is not None and previous is not loaded:
                self._park(previous)
            self._evict()
            return loaded

    def _default_name(self) -> str:
        if self.settings.ckpt:
            return self.settings.ckpt
        entry = self.default_checkpoint()
        if entry is None:
            raise UnknownModelError(
                f"no checkpoint found. Put .safetensors/.ckpt files or diffusers folders in "
                f"{registry.checkpoint_folder(self.settings.models_dir)}, or pass --ckpt")
        return entry.name

    def _load(self, entry: registry.ModelEntry) -> LoadedModel:
        t0 = time.perf_counter()
        found = loader.load(entry, self.dtype, allow_download=not registry.hub_offline())
        pipe, architecture, needs_v_check = found.pipe, Architecture.of(found.architecture), found.needs_v_check
        del found
        try:
            loaded = LoadedModel(entry=entry, pipe=pipe, nbytes=devices.module_bytes(pipe), device=None, dtype=self.dtype,
                                 architecture=architecture)
            self._place(loaded)
            if needs_v_check and loader.settle_v_prediction(pipe):
                loaded.architecture = Architecture.SD2_V
            loaded.base_scheduler_config = pipe.scheduler.config
            loaded.own_vae = pipe.vae
        except Exception as e:
            del pipe
            devices.free_memory()
            if isinstance(e, ModelLoadError):
                raise
            raise ModelLoadError(f"{entry.path}: cannot place the model on {self.device} ({e})") from None
        loaded.load_seconds = time.perf_counter() - t0
        if entry.is_file and entry.sha256 is None:
            entry.sha256 = self.hashes.cached(entry.path)
        return loaded

    def _place(self, loaded: LoadedModel) -> None:
        """Put a model on the working device at its starting memory level."""
        start = self._start_level()
        if loaded.device is None or loaded.device != self.device or loaded.level != start:
            _unhook(loaded)
            if not start.offloads:
                loaded.pipe.to(self.device, self.dtype)
            loaded.device, loaded.dtype, loaded.level = self.device, self.dtype, MemoryLevel.AS_LOADED
            loaded.view_levels.clear()
            self.apply_level(loaded, start, loaded.pipe)

    def _start_level(self) -> MemoryLevel:
        """--medvram/--lowvram start lower on an accelerator; on the CPU offloading means nothing."""
        if devices.is_accelerator(self.device):
            return MemoryLevel(self.settings.start_memory_level)
        return MemoryLevel.AS_LOADED

    def _park(self, loaded: LoadedModel) -> None:
        """A model that stops being current keeps its weights in RAM only."""
        _unhook(loaded)
        if devices.is_accelerator(self.device):
            loaded.pipe.to("cpu")
            loaded.device = None
            devices.free_memory()

    def _evict(self) -> None:
        """Least recently used first: down to the budget, then while the machine's available RAM is under
        the reserve (the cache never pushes the machine into swap). The current model always stays."""
        total = sum(m.nbytes for m in self._cache.values())
        for name in list(self._cache):
            if total <= self.cache_budget:
                break
            if name == self._current:
                continue
            total -= self._cache[name].nbytes
            self.release(name)
        for name in list(self._cache):
            if name == self._current:
                continue
            if devices.available_ram_bytes() >= devices.ram_reserve_bytes():
                break
            log.info("available RAM is under the reserve; %s leaves the RAM cache", name)
            self.release(name)

    def release(self, name: str) -> None:
        """Drop a model and free its memory for real."""
        with self.lock:
            loaded = self._cache.pop(name, None)
            if loaded is None:
                return
            if name == self._current:
                self._current = None
            _unhook(loaded)
            loaded.derived.clear()
            loaded.pipe = None
            del loaded
            devices.free_memory()

    def release_all(self) -> None:
        with self.lock:
            for name in list(self._cache):
                self.release(name)

    # ---- VAE override ---------------------------------------------------------------------------
    def check_vae_choice(self, choice: str) -> str:
        """An "SD VAE" value is Automatic, None or a listed VAE; raises UnknownModelError listing
        the VAEs otherwise. No model is touched."""
        if choice not in (AUTOMATIC_VAE, NO_VAE):
            self.find(choice, registry.VAE_KIND)
        return choice

    def resolve_vae(self, loaded: LoadedModel, choice: Optional[str]) -> Optional[registry.ModelEntry]:
        """A1111's "SD VAE" setting: "Automatic" = a file in VAE/ named like the checkpoint (else
        the built-in VAE), "None" or empty = the built-in VAE, anything else = that VAE file (by
        name, file name, title, short hash or path)."""
        if not choice or choice == NO_VAE:
            return None
        if choice == AUTOMATIC_VAE:
            stem = Path(loaded.entry.path).stem if loaded.entry.is_file else loaded.entry.name
            return next((e for e in self.entries(registry.VAE_KIND) if e.name == stem and not e.error), None)
        return self.find(choice, registry.VAE_KIND)

    def use_vae(self, loaded: LoadedModel, choice: Optional[str]) -> Optional[registry.ModelEntry]:
        """Put the chosen VAE on ``loaded`` (see ``resolve_vae``); returns the VAE file in use, None
        for the built-in one. A VAE that fails to load leaves the current one in place."""
        with self.lock:
            entry = self.resolve_vae(loaded, choice)
            current = loaded.vae_entry.path if loaded.vae_entry else None
            if (entry.path if entry else None) == current:
                return loaded.vae_entry
            new = loaded.own_vae if entry is None else loader.load_vae(entry, loaded.own_vae, loaded.own_vae.dtype)
            old = loaded.pipe.vae
            _unhook(loaded)
            if loaded.device is not None and not loaded.level.offloads:
                new.to(loaded.device, loaded.dtype)
            else:
                new.to(dtype=loaded.dtype)
            loaded.pipe.register_modules(vae=new)
            loaded.derived.clear()  # from_pipe views hold the old VAE; rebuilt on demand
            if old is loaded.own_vae:
                old.to("cpu")  # kept for "None"; off the accelerator while unused
            del old
            loaded.vae_entry = entry
            loaded.view_levels.clear()  # the new VAE has none of the level's switches yet
            self.apply_level(loaded, loaded.level, loaded.pipe, force=True)
            if entry is not None:
                self.ensure_hash(entry)
            devices.free_memory()
            return entry

    # ---- backend (--backend auto|torch|openvino) -------------------------------------------------
    def backend_name(self, loaded: Optional[LoadedModel] = None) -> str:
        """What runs the UNet of ``loaded`` (default: the current model), or would on its next job."""
        loaded = loaded or self.current
        if loaded is not None and loaded.openvino is not None:
            return loaded.openvino.label
        if loaded is None or loaded.openvino_error is None:
            if openvino_backend.wanted(self.settings, self.device):
                return openvino_backend.LABEL
        return "PyTorch"

    def _openvino_fits(self, loaded: LoadedModel, pipe) -> Optional[str]:
        """Why ``loaded`` cannot run its UNet on OpenVINO (None: it can)."""
        if not openvino_backend.wanted(self.settings, self.device) or loaded.openvino_error is not None:
            return ""
        said = self.settings.backend == "openvino"  # with auto, models OpenVINO does not take run on PyTorch silently
        if getattr(pipe, "text_encoder_2", None) is not None:
            return "--backend openvino: SDXL runs on PyTorch for now" if said else ""
        c = loaded.pipe.unet.config
        if any(getattr(c, k, None) is not None for k in ("class_embed_type", "num_class_embeds", "addition_embed_type",
                                                          "time_cond_proj_dim")):
            return "--backend openvino: this UNet takes extra conditioning; it runs on PyTorch" if said else ""
        if loaded.level != MemoryLevel.AS_LOADED or loaded.dtype != devices.float32():
            return ""
        return None

    def _compact_torch_unet(self, loaded: LoadedModel) -> None:
        """While OpenVINO runs the UNet, its PyTorch copy (kept for LoRA jobs) is held in fp16 when that
        loses nothing: every weight came from an fp16 checkpoint, so fp16 holds it exactly. Halves the
        copy (1.7 instead of 3.4 GB for SD 1.5); ``torch_unet_ready`` casts it back."""
        import torch

        unet = loaded.pipe.unet
        if devices.is_accelerator(self.device) or any(p.dtype != torch.float32 for p in unet.parameters()):
            return
        if all(torch.equal(p, p.half().float()) for p in unet.parameters()):
            unet.to(torch.float16)
            devices.free_memory()

    def torch_unet_ready(self, loaded: LoadedModel) -> None:
        """The PyTorch UNet in the model's working dtype (after ``_compact_torch_unet``), before a job or
        a LoRA uses it."""
        unet = loaded.pipe.unet
        if unet.dtype != loaded.dtype:
            unet.to(loaded.dtype)
            loaded.nbytes = devices.module_bytes(loaded.pipe) + (loaded.openvino.nbytes if loaded.openvino else 0)

    @contextlib.contextmanager
    def backend_for_job(self, loaded: LoadedModel, pipe, on_progress: Optional[Callable[[int], None]] = None,
                     torch_reason: Optional[str] = None):
        """Run ``pipe`` (a view of ``loaded``) on the backend ``--backend`` chooses for the duration;
        yields ``(backend label, warnings)``. OpenVINO: the UNet, the VAE and the text encoder are
        converted on the model's first job
        (``on_progress(percent)``) or read from the disk cache; a failed conversion leaves the model on
        PyTorch with one warning, never fails the job. ``torch_reason``: this job needs the PyTorch
        modules (a LoRA); it says so in the warnings."""
        with self.lock:
            why = self._openvino_fits(loaded, pipe)
            warnings: list[str] = []
            if why is None and torch_reason:
                warnings.append(f"{torch_reason}: this job ran on PyTorch, not OpenVINO")
                why = torch_reason
            elif why:
                warnings.append(why)
            if why is None and loaded.openvino is None:
                try:
                    loaded.openvino = openvino_backend.prepare(
                        loaded.pipe, openvino_backend.identity_of(loaded.entry), on_progress, vae=loaded.own_vae,
                        precision=self.settings.openvino_precision)
                except Exception as e:  # noqa: BLE001 - any conversion failure means: stay on PyTorch
                    loaded.openvino_error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                    log.warning("OpenVINO conversion of %s failed (%s); it runs on PyTorch", loaded.name,
                                loaded.openvino_error)
                    warnings.append(f"OpenVINO conversion failed ({loaded.openvino_error}); this model runs on PyTorch")
                    why = loaded.openvino_error
                else:
                    warnings.extend(f"OpenVINO conversion of the {part} failed ({why_not}); it runs on PyTorch"
                                    for part, why_not in loaded.openvino.failed.items())
                    self._compact_torch_unet(loaded)
                    loaded.nbytes = devices.module_bytes(loaded.pipe) + loaded.openvino.nbytes
                    self._evict()
            if why is not None:
                self.torch_unet_ready(loaded)
            parts = loaded.openvino if why is None else None
            with openvino_backend.swapped(pipe, parts):
                yield (parts.label if parts is not None else "PyTorch"), warnings

    # ---- memory ladder ------------------------------------------------------------------------
    def available_levels(self) -> list[MemoryLevel]:
        """Levels 3 and 4 need an accelerator; on a CPU-only machine they are skipped."""
        if devices.is_accelerator(self.device):
            return list(MemoryLevel)
        return [lv for lv in MemoryLevel if not lv.offloads]

    def apply_level(self, loaded: LoadedModel, level: MemoryLevel, pipe, force: bool = False) -> None:
        import torch

        level = MemoryLevel(level)
        if not force and level == loaded.level and loaded.view_levels.get(id(pipe)) == level:
            return
        _unhook(loaded, force=level.offloads)
        loaded.view_levels.clear()
        if level == MemoryLevel.CPU:
            loaded.pipe.to("cpu", torch.float32)
            loaded.device, loaded.dtype = torch.device("cpu"), torch.float32
        elif loaded.device is None or loaded.device.type != self.device.type or loaded.dtype != self.dtype:
            if not level.offloads:
                loaded.pipe.to(self.device, self.dtype)
                loaded.device, loaded.dtype = self.device, self.dtype
        if level >= MemoryLevel.ATTENTION_SLICING:
            pipe.enable_attention_slicing()
        else:
            pipe.disable_attention_slicing()
        vae = pipe.vae
        if level >= MemoryLevel.VAE_TILING:
            vae.enable_slicing()
            vae.enable_tiling()
        else:
            vae.disable_slicing()
            vae.disable_tiling()
        if level == MemoryLevel.MODEL_OFFLOAD:
            loaded.pipe.to("cpu")
            pipe.enable_model_cpu_offload(device=self.device)
            loaded.device = self.device
        elif level == MemoryLevel.SEQUENTIAL_OFFLOAD:
            loaded.pipe.to("cpu")
            pipe.enable_sequential_cpu_offload(device=self.device)
            loaded.device = self.device
        loaded.level = level
        loaded.view_levels[id(pipe)] = level

    def run(self, fn: Callable[[Any, LoadedModel], Any], size: tuple = (), pipeline_cls=None,
            model: Optional[str] = None, on_retry: Optional[Callable[[int, BaseException], None]] = None):
        """Run ``fn(pipe, loaded)`` at the best level; on OOM free memory, go one level down, retry.

        Returns ``(result, level_used)``. ``fn`` must be repeatable (it builds its own generators).
        """
        with self.lock:
            loaded = self.select(model)
            levels = self.available_levels()
            key = (loaded.name, *size)
            start = self._levels.get(key, self._start_level())
            start = min((lv for lv in levels if lv >= start), default=levels[-1])
            pipe = loaded.pipeline(pipeline_cls) if pipeline_cls else loaded.pipe
            for level in [lv for lv in levels if lv >= start]:
                self.apply_level(loaded, level, pipe)
                try:
                    result = fn(pipe, loaded)
                except BaseException as e:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                    if not devices.is_out_of_memory(e):
                        raise
                    log.warning("out of memory at level %d (%s); retrying one level down", level, level.label)
                    del e
                    devices.free_memory()
                    if on_retry:
                        on_retry(level, None)
                    continue
                self._levels[key] = level
                return result, level
            raise OutOfMemory(
                f"out of memory at every memory level ({', '.join(lv.label for lv in levels)}); "
                f"try a smaller size or batch")

    def remembered_level(self, name: str, *size) -> Optional[MemoryLevel]:
        return self._levels.get((name, *size))

    # ---- ESRGAN-family upscalers ---------------------------------------------------------------
    def run_upscaler(self, name: str, fn: Callable[[Any, Any], Any]):
        """Run ``fn(model, device)`` with the listed upscaler ``name`` loaded (the last
        MAX_CACHED_UPSCALERS stay in RAM) and placed on the working device; on out-of-memory there,
        free memory and run it on the CPU. Returns ``(result, level_used)``."""
        with self.lock:
            entry = self.find(name, registry.UPSCALER_KIND)
            model = self._upscaler(entry)
            places = [(self.device, MemoryLevel.AS_LOADED)]
            if devices.is_accelerator(self.device):
                places.append((devices.cpu(), MemoryLevel.CPU))
            for device, level in places:
                try:
                    model.model.to(device=device, dtype=devices.float32())
                    return fn(model, device), level
                except BaseException as e:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                    if not devices.is_out_of_memory(e):
                        raise
                    log.warning("out of memory upscaling with %s on %s; retrying on the CPU", name, device)
                    del e
                    model.model.to("cpu")
                    devices.free_memory()
            raise OutOfMemory(f"out of memory upscaling with {name} even on the CPU; try a smaller image")

    def _upscaler(self, entry: registry.ModelEntry):
        cached = self._upscalers.pop(entry.path, None)
        if cached is None:
            cached = loader.load_upscaler(entry)
        self._upscalers[entry.path] = cached  # most recent last
        while len(self._upscalers) > MAX_CACHED_UPSCALERS:
            self._upscalers.popitem(last=False)
            devices.free_memory()
        return cached

    # ---- reporting ----------------------------------------------------------------------------
    def status(self) -> dict:
        cur = self.current
        return {
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "current": cur.name if cur else None,
            "architecture": cur.architecture if cur else None,
            "vae": (cur.vae_entry.filename if cur.vae_entry else "built-in") if cur else None,
            "memory_level": int(cur.level) if cur else None,
            "memory_level_name": cur.level.label if cur else None,
            "cached": [{"name": m.name, "bytes": m.nbytes, "load_seconds": round(m.load_seconds, 2)}
                       for m in self._cache.values()],
            "cache_budget_bytes": self.cache_budget,
            "cache_count": len(self._cache),
            "backend": self.backend_name(cur),
            "upscalers_cached": [Path(p).stem for p in self._upscalers],
            **devices.memory_report(self.device),
        }


def _unhook(loaded: LoadedModel, force: bool = False) -> None:
    """Remove CPU-offload hooks (levels 3 and 4) from every pipeline view of a model."""
    if force or loaded.level.offloads:
        for p in loaded.all_pipelines():
            p.remove_all_hooks()
