"""The facade the UI, the REST API and the CLI all call:
``Engine.generate(request, on_progress, cancel) -> GenerationResult``.

It checks the request before any model work, lets the model manager pick and place the model
and run each batch on the memory ladder, and turns pixels into saved PNGs with A1111 infotext
and the invisible watermark.
"""

from __future__ import annotations

import copy
import functools
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

from . import __version__, prompt_schedule, prompts, prompts_sdxl, samplers
from .fields import INPAINT_AREAS, LATENT_UPSCALE_MODES, MASK_MODES, UPSCALE_MODES, VARIATION_MODES
from .images import infotext, outputs, watermark
from .config import Settings
from .history import History
from .server_defaults import DefaultsStore, ServerDefaults
from .models import detect, devices, download, registry
from .models.manager import AUTOMATIC_VAE, NO_VAE, ModelManager
from .models.tokenizer import import_clip_tokenizer
from .pipelines import depth, hires, img2img, inpaint, refiner, txt2img, upscale, vae_guard
from .pipelines.common import Job, decode_partial, is_cancelled
from .types import (Architecture, Cancelled, GeneratedImage, GenerationRequest, GenerationResult, InvalidRequest, Limits,
                    MemoryLevel, ModelKind, PREPARING_STAGE, Progress, Skipped, UnknownModelError)

log = logging.getLogger(__name__)

_TASKS = {"txt2img": txt2img, "img2img": img2img, "inpaint": inpaint}
_CLASSES = {  # mode -> (SD 1.x/2.x class, SDXL class)
    "txt2img": ("StableDiffusionPipeline", "StableDiffusionXLPipeline"),
    "img2img": ("StableDiffusionImg2ImgPipeline", "StableDiffusionXLImg2ImgPipeline"),
    "inpaint": ("StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline"),
}


class Engine:
    def __init__(self, settings: Settings | None = None, manager: ModelManager | None = None):
        self.settings = settings or Settings()
        import_clip_tokenizer()  # here, before the model-loading thread and the page's token counter race for it
        self.manager = manager or ModelManager(self.settings)
        self.limits = Limits(max_size=self.settings.max_size)
        outputs.clean_stale_temporaries(self.settings.outputs_dir)  # debris of a killed earlier run
        self._siblings: list[Engine] = []  # the other devices' engines (for_device), refreshed and unloaded with this one
        self.history = History(self.settings.outputs_dir)  # the images on disk, with their owners (sdui.history)
        every = self.settings.preview_every
        self.defaults = DefaultsStore(self.settings.settings_file, self.limits,  # the owner's Settings tab
                                      ServerDefaults(preview_every=max(0, int(every)) if every is not None else 4))

    # ---- what the front ends may ask: the only door to the model manager ----------------------
    def checkpoints(self) -> list[registry.ModelEntry]:
        return self.manager.checkpoints()

    def models(self, kind: ModelKind = ModelKind.CHECKPOINT) -> list[registry.ModelEntry]:
        """Every model of ``kind`` found on disk, usable or not (an unusable one carries its error)."""
        return self.manager.entries(kind)

    def model_choices(self) -> list[tuple[str, str]]:
        """(A1111 title, name) of the usable checkpoints a txt2img/img2img request may name."""
        return [(e.title, e.name) for e in self.checkpoints() if not e.error and e.architecture != Architecture.X4_UPSCALER]

    def default_checkpoint(self) -> Optional[registry.ModelEntry]:
        """The server's default model (``--ckpt``, else the first listed), the same for every client."""
        return self.manager.default_checkpoint()

    def find_model(self, name: str, kind: ModelKind = ModelKind.CHECKPOINT) -> registry.ModelEntry:
        """A listed model by name, title, file name or short hash (never a path: clients name what
        the server lists); raises UnknownModelError listing what there is."""
        return self.manager.find(name, kind)

    def refresh(self) -> None:
        """Look at the models folders again."""
        self.manager.refresh()
        for other in self._siblings:
            other.refresh()

    def vae_choices(self) -> list[str]:
        """A1111's "SD VAE" choices: Automatic, None, then the VAE files (``--vae-path`` included)."""
        return [AUTOMATIC_VAE, NO_VAE, *(e.filename for e in self.models(ModelKind.VAE) if not e.error)]

    def default_vae_choice(self) -> str:
        return self.manager.default_vae_choice()

    def check_vae_choice(self, choice: str) -> str:
        """``choice`` if it is Automatic, None or a listed VAE; raises UnknownModelError otherwise."""
        return self.manager.check_vae_choice(choice)

    def find_checkpoint_by_hash(self, wanted: str) -> registry.ModelEntry:
        """The listed checkpoint whose SHA-256 starts with ``wanted`` (A1111's ``sd_checkpoint_hash``:
        all 64 hex digits, or the first 10); files not hashed yet are hashed now (each read whole,
        once). Raises UnknownModelError listing the models."""
        text = wanted.strip().lower() if isinstance(wanted, str) else ""
        usable = [e for e in self.checkpoints() if not e.error]
        if len(text) >= 8:
            for hashed_now in (False, True):
                for e in usable:
                    if hashed_now and e.sha256 is None and e.is_file:
                        self.manager.ensure_hash(e)
                    if e.sha256 and e.sha256.lower().startswith(text):
                        return e
        names = ", ".join(e.name for e in usable) or "none found"
        raise UnknownModelError(f"no checkpoint has the hash '{text[:64]}'. Available: {names}")

    def preview_period(self) -> int:
        """Live previews are made every this many sampling steps (and at the last one); 0: none. The
        owner's Settings tab value, else ``--preview-every`` (A1111's "show_progress_every_n_steps")."""
        return max(0, int(self.defaults.get().preview_every))

    def server_defaults(self) -> ServerDefaults:
        """The owner's defaults (Settings tab, ``--settings-file``): sampler, steps, size, preview period,
        image format, saving."""
        return self.defaults.get()

    def set_server_defaults(self, changes: dict) -> ServerDefaults:
        """Change the owner's defaults (each checked; InvalidRequest names a bad one) and write the file."""
        return self.defaults.update(changes)

    def prompt_tokens(self, text: str) -> tuple[int, int]:
        """(tokens, chunk capacity) of a prompt as A1111's counter shows them ("23/75", "80/150"):
        counted with the shipped CLIP tokenizer, never a model's, so nothing is loaded; extra-network
        tags (<lora:...>) do not count, BREAK starts a new chunk."""
        text = prompts.EXTRA_NETWORK_TAG.sub("", text or "")
        chunks = prompts.tokenize(_shipped_tokenizer(), text)
        tokens = prompts.token_count(_shipped_tokenizer(), text)
        return tokens, max(1, len(chunks.ids)) * prompts.CHUNK

    def unload_checkpoints(self) -> None:
        """Free every loaded checkpoint (A1111's unload-checkpoint); waits for a running job, and the
        next job loads its model again."""
        self.manager.release_all()
        for other in self._siblings:
            other.unload_checkpoints()

    def reload_checkpoint(self, name: Optional[str] = None) -> str:
        """Load ``name`` (a listed checkpoint; None: the loaded one, else the server's default) now, so
        the next job does not wait for it (A1111's reload-checkpoint). Returns the loaded model's name."""
        with self.manager.lock:
            return self.manager.select(name).name

    def sampler_names(self) -> list[str]:
        return samplers.sampler_names()

    def upscaler_names(self) -> list[str]:
        names = [upscale.LANCZOS, upscale.NEAREST]
        if self._x4_models():
            names.append(upscale.SD_X4)
        names += [e.name for e in self.models(ModelKind.UPSCALER) if not e.error]
        return names

    def hires_upscaler_names(self) -> list[str]:
        """Hires. fix upscalers in A1111's order: the latent modes, then None, Lanczos, Nearest and the
        ESRGAN-family models (the SD x4 upscaler is a checkpoint, not one of them)."""
        return [*LATENT_UPSCALE_MODES, hires.NONE, upscale.LANCZOS, upscale.NEAREST,
                *(e.name for e in self.models(ModelKind.UPSCALER) if not e.error)]

    def lora_listing(self) -> list[dict]:
        """The files in ``models/Lora/`` as A1111's ``/sdapi/v1/loras`` lists them: ``name`` (what a
        ``<lora:name:weight>`` tag uses), ``alias`` (``ss_output_name``, also accepted), ``path`` and
        ``metadata`` (the safetensors header's ``__metadata__``)."""
        return self.manager.loras.listing()

    def lora_names(self, model: Optional[str] = None) -> list[str]:
        """The names of the LoRAs that fit the checkpoint ``model`` (a listed name; None or unknown: the
        server's default), for a picker that inserts ``<lora:name:1>`` into the prompt."""
        entry = None
        if model:
            try:
                entry = self.manager.find(model)
            except UnknownModelError:
                entry = None
        entry = entry or self.manager.default_checkpoint()
        return self.manager.loras.names_for(entry.architecture if entry else None)

    def embedding_listing(self, model: Optional[str] = None) -> dict:
        """The files in the embeddings folder as A1111's ``/sdapi/v1/embeddings`` lists them for the
        checkpoint ``model`` (a listed name; None: the loaded one, else the server's default):
        ``{"loaded": {name: {step, sd_checkpoint, sd_checkpoint_name, shape, vectors}}, "skipped": {...}}``,
        skipped = made for another text-encoder width (or not usable on that model yet)."""
        return self.manager.embeddings.listing(model)

    def model_listing(self, hash_files: bool = False) -> list[registry.ModelEntry]:
        """Every model of every kind, looked up afresh, with SHA-256 where cached (or computed for
        every file with ``hash_files``, which reads each file whole)."""
        self.refresh()
        out = []
        for kind in ModelKind:
            for e in self.models(kind):
                if e.is_file and not e.error and e.sha256 is None:
                    e.sha256 = self.manager.hashes.sha256(e.path) if hash_files else self.manager.hashes.cached(e.path)
                out.append(e)
        return out

    CHECKPOINT_EXTENSIONS = registry.CHECKPOINT_EXTS

    def checkpoint_folder(self) -> Path:
        """``models/Stable-diffusion/`` of the owner's ``--models-dir``."""
        return registry.checkpoint_folder(self.settings.models_dir).resolve()

    # ---- the owner's first-start download (never a side effect of a request) --------------------
    DEFAULT_DOWNLOAD = download.DEFAULT_MODEL

    @staticmethod
    def hub_reachable() -> bool:
        return download.hub_reachable()

    def download_default_model(self, on_progress=None) -> Path:
        """Fetch the default checkpoint into the checkpoint folder (verified), then list it."""
        path = download.download(download.DEFAULT_MODEL, self.checkpoint_folder(), on_progress=on_progress)
        self.refresh()
        return path

    @property
    def device_name(self) -> str:
        return str(self.manager.device)

    # ---- one Engine per device (sdui.workers) ---------------------------------------------------
    def for_device(self, device: str) -> "Engine":
        """An Engine like this one on ``device``: its own model manager and memory ladder, the same
        models, outputs folder and hash cache."""
        settings = self.settings.replace(device=device, use_cpu="all" if device == "cpu" else None, devices=None)
        other = Engine(settings, ModelManager(settings, hash_cache=self.manager.hashes))
        other.history, other.defaults = self.history, self.defaults  # one index and one Settings store per studio
        self._siblings.append(other)
        return other

    def current_model_name(self) -> Optional[str]:
        """The checkpoint on the device now (no lock: the queue asks while it dispatches)."""
        return self.manager.current.name if self.manager.current else None

    def loaded_model_names(self) -> list[str]:
        """Checkpoints in memory: on the device or in the RAM cache."""
        return self.manager.cached_names()

    def file_sha256(self, path: str) -> str:
        """SHA-256 of a model file (from the hash cache when the file has not changed)."""
        return self.manager.hashes.sha256(path)

    def cache_budget(self) -> int:
        return self.manager.cache_budget

    def set_cache_budget(self, nbytes: int) -> None:
        self.manager.cache_budget = int(nbytes)

    def memory_report(self) -> dict:
        """RAM (and VRAM on CUDA) in bytes: ``ram_rss_bytes``, ``ram_total_bytes``, ``vram_*``."""
        return devices.memory_report(self.manager.device)

    def _x4_models(self) -> list[registry.ModelEntry]:
        return [e for e in self.checkpoints() if e.architecture == detect.X4_UPSCALER and not e.error]

    # ---- generation ---------------------------------------------------------------------------
    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """Validate and fill in defaults (random seed) before any model work; raises InvalidRequest."""
        req = request.replace()
        req.validate(self.limits)
        if req.mode != "upscale":
            req.round_size()
        if req.mode != "upscale" or req.upscaler == upscale.SD_X4:
            sampler, schedule = samplers.resolve(req.sampler, req.scheduler)
            req.sampler, req.scheduler = sampler.name, schedule
        if req.mode == "txt2img" and req.enable_hr:
            self._check_hires(req)
        if req.mode != "upscale":
            self._check_model_choice(req)
        if req.mode == "txt2img" and req.refiner_checkpoint not in ("", "None"):
            self._check_refiner(req)
        else:
            req.refiner_checkpoint = ""
        return self._check_seed(req)

    def _check_refiner(self, req: GenerationRequest) -> None:
        """A1111's refiner: a checkpoint the server lists (its name, title or "name [hash]"), SDXL here."""
        if not isinstance(req.refiner_checkpoint, str) or len(req.refiner_checkpoint) > 1000:
            raise InvalidRequest("refiner_checkpoint", req.refiner_checkpoint, "the name of a checkpoint the server lists")
        entry = self.manager.find(req.refiner_checkpoint)  # raises UnknownModelError listing the models
        if entry.architecture not in (Architecture.SDXL, Architecture.CUSTOM, Architecture.UNKNOWN):
            raise InvalidRequest("refiner_checkpoint", entry.name, "an SDXL checkpoint (sdui switches models mid-sampling "
                                 f"with diffusers' SDXL denoising_end/start); this one is {entry.architecture}")
        req.refiner_checkpoint = entry.name
        if req.enable_hr:
            req.notes.append("Refiner: not applied together with Hires. fix yet; the refiner was not used")
            req.refiner_checkpoint = ""

    def _check_model_choice(self, req: GenerationRequest) -> None:
        """Model and VAE are names the server lists (a client never names a path or a Hub id);
        none given means the server's default, the same for everyone."""
        mgr = self.manager
        if req.model is None:
            default = mgr.default_checkpoint()
            req.model = default.name if default else None  # None: select() says no checkpoint was found
        elif not isinstance(req.model, str) or len(req.model) > 1000:
            raise InvalidRequest("model", req.model, "the name of a checkpoint the server lists")
        else:
            req.model = mgr.find(req.model).name  # raises UnknownModelError listing the models
        if req.vae is None or req.vae == "":
            req.vae = mgr.default_vae_choice()
        if not isinstance(req.vae, str) or len(req.vae) > 1000:
            raise InvalidRequest("vae", req.vae, "Automatic, None or the name of a file in models/VAE/")
        try:
            mgr.check_vae_choice(req.vae)
        except UnknownModelError:
            names = [e.filename for e in mgr.entries(ModelKind.VAE) if not e.error]
            raise InvalidRequest("vae", req.vae, f"one of {', '.join([AUTOMATIC_VAE, NO_VAE, *names])}") from None

    @staticmethod
    def _check_seed(req: GenerationRequest) -> GenerationRequest:
        if req.seed == -1:
            req.seed = random.randrange(2**32 - 1 - req.batch_size * req.batch_count)
        if req.seed + req.batch_size * req.batch_count - 1 > 2**32 - 1:
            raise InvalidRequest("seed", req.seed, f"at most {2**32 - req.batch_size * req.batch_count} for this batch")
        if req.mode in VARIATION_MODES:  # A1111's variation seed: fixed like the seed; image i uses subseed + i
            if req.subseed == -1:
                req.subseed = random.randrange(2**32 - 1 - req.batch_size * req.batch_count)
            if req.subseed + req.batch_size * req.batch_count - 1 > 2**32 - 1:
                raise InvalidRequest("subseed", req.subseed,
                                     f"at most {2**32 - req.batch_size * req.batch_count} for this batch")
        return req

    def generate(self, request: GenerationRequest, on_progress: Optional[Callable[[Progress], None]] = None,
                 cancel=None, skip=None) -> GenerationResult:
        """``cancel`` (an Event) stops the job, keeping the finished images; ``skip`` (an Event, A1111's
        Skip) ends the current image (batch) only: its partial image is kept, unsaved, and the job goes
        on with the next; the engine clears ``skip`` once it has acted on it."""
        t0 = time.perf_counter()
        req = self.prepare(request)
        if is_cancelled(cancel):
            raise Cancelled("interrupted before start")
        if req.mode == "upscale":
            result = self._upscale(req, on_progress, cancel)
        else:
            result = self._diffuse(req, on_progress, cancel, skip)
        result.seconds = time.perf_counter() - t0
        return result

    def _diffuse(self, req: GenerationRequest, on_progress, cancel, skip=None) -> GenerationResult:
        import diffusers

        _quiet_libraries()
        mgr = self.manager
        with mgr.lock:
            loaded = mgr.select(req.model)
            arch = loaded.architecture
            if arch == detect.X4_UPSCALER:
                raise InvalidRequest("model", loaded.name,
                                     "a text-to-image checkpoint; this one is the x4 upscaler (use Upscale)")
            model_hash = mgr.ensure_hash(loaded.entry)
            vae = mgr.use_vae(loaded, req.vae)
            is_xl = isinstance(loaded.pipe, diffusers.StableDiffusionXLPipeline)
            mode = req.mode
            if loaded.pipe.unet.config.in_channels == 9 and mode != "inpaint":
                raise InvalidRequest("model", loaded.name, "an ordinary checkpoint for txt2img/img2img; this one is "
                                     "an inpainting model (use inpaint mode)")
            cls = getattr(diffusers, _CLASSES[mode][1 if is_xl else 0])
            task = _TASKS[mode]
            if arch == detect.SD2_DEPTH or isinstance(loaded.pipe, diffusers.StableDiffusionDepth2ImgPipeline):  # depth-to-image
                cls, task = self._depth_setup(loaded, req)
            elif req.depth_map is not None:
                req.notes.append("depth_map applies only to an SD 2 depth model; ignored")
            if mode == "txt2img" and req.enable_hr:  # Hires. fix: keep the latents; one progress count for both passes
                task, on_progress = hires, hires.combined_progress(on_progress, req)
            refining = mode == "txt2img" and bool(req.refiner_checkpoint) and req.refiner_switch_at < 1
            if refining:  # A1111's refiner: this model samples up to the switch, the refiner the rest
                if not is_xl:
                    raise InvalidRequest("refiner_checkpoint", req.refiner_checkpoint, "no refiner with this model: "
                                         "sdui switches models mid-sampling on SDXL models only")
                task = refiner
            result = GenerationResult(images=[], request=req, model_name=loaded.name, model_hash=model_hash or "",
                                      vae_name=vae.filename if vae else None, vae_hash=vae.short_hash if vae else None,
                                      warnings=list(req.notes))
            total = req.batch_size * req.batch_count
            backends_used: set[str] = set()  # "Backend: OpenVINO" in the infotext when the UNet ran there
            for n in range(req.batch_count):
                if is_cancelled(cancel):
                    raise _cancelled(result)
                if skip is not None:
                    skip.clear()  # a Skip pressed between two images ends nothing (A1111 resets it here too)
                seeds = [req.seed + n * req.batch_size + i for i in range(req.batch_size)]

                # Hires. fix: the second pass runs this with its own req and task, and first_pass=the first's req
                def run_batch(pipe, loaded, seeds=seeds, n=n, req=req, task=task, first_pass=None):
                    job = Job(request=req, seeds=seeds, device=loaded.execution_device, on_progress=on_progress,
                              cancel=cancel, skip=skip, image_index=n * req.batch_size, image_total=total,
                              preview_every=self.preview_period())
                    noise_seed = seeds[0] if len(seeds) == 1 else list(seeds)
                    plan = samplers.plan_sampling(loaded.base_scheduler_config, req.sampler, req.scheduler,
                                                  steps=req.steps, seed=noise_seed, is_sdxl=is_xl)
                    pipe.scheduler, job.sigmas = plan.scheduler, plan.sigmas
                    job.warnings.extend(plan.warnings)
                    pipe.set_progress_bar_config(disable=True)
                    # A1111's <lora:...> tags: out of the text the encoder sees, onto the model (SD 1.x/2.x)
                    if prompts.extract_lora_tags(req.prompt).loras:
                        mgr.torch_unet_ready(loaded)  # LoRAs load into the PyTorch UNet at its working precision
                    prompt, lora_warnings = mgr.loras.use(loaded, pipe, req.prompt, req.negative_prompt)
                    job.warnings.extend(lora_warnings)
                    lora_reason = "LoRA" if prompt != req.prompt else None
                    # A1111's textual-inversion embeddings: each name becomes its vectors' tokens
                    prompt, negative_prompt, ti_warnings = mgr.embeddings.use(loaded, pipe, prompt, req.negative_prompt)
                    job.warnings.extend(ti_warnings)
                    # A1111's hires timeline: the second pass's schedule goes on from the first pass's steps
                    span, hires_span = prompt_schedule.total_steps(req.sampler, req.steps), None
                    if first_pass is not None:
                        span, hires_span = prompt_schedule.total_steps(first_pass.sampler, first_pass.steps), span
                    # --backend: UNet, VAE and text encoder on OpenVINO (CPU) or PyTorch; a LoRA needs PyTorch's
                    with mgr.backend_for_job(loaded, pipe, _preparing_progress(on_progress), lora_reason) as (name, notes):
                        job.warnings.extend(notes)
                        backends_used.add(name)
                        if not is_xl:
                            clip_skip = 1 if Architecture.of(arch).is_sd2 else req.clip_skip
                            if clip_skip != req.clip_skip:  # A1111's OpenCLIP encoder ignores the setting too
                                job.warnings.append("Clip skip does not apply to SD 2.x models (as in A1111); ignored")
                            # A1111's prompt editing [from:to:when] and alternation [a|b]: each text encoded once;
                            # the StepTracker swaps the embeddings at the steps job.cond_schedule says
                            cond = prompt_schedule.encode_schedule(
                                lambda p, n: prompts.encode(pipe, p, n, job.device, clip_skip), prompt, negative_prompt,
                                span, hires_span)
                        else:
                            if req.clip_skip != 1:  # A1111's sdxl_clip_l_skip option is off by default
                                job.warnings.append("Clip skip does not apply to SDXL models (as in A1111); ignored")
                            # A1111's SDXL conditioning: both encoders, emphasis, chunks, pooled vectors (prompts_sdxl)
                            cond = prompts_sdxl.encode_schedule(pipe, prompt, negative_prompt, span, job.device, hires_span)
                            job.pooled_prompt_embeds = cond.pooled_prompt_embeds
                            job.negative_pooled_prompt_embeds = cond.negative_pooled_prompt_embeds
                        job.prompt_embeds, job.negative_prompt_embeds = cond.prompt_embeds, cond.negative_prompt_embeds
                        job.cond_schedule = cond.schedule
                        job.warnings.extend(cond.warnings)
                        try:
                            # A1111's VAE precision rescue: a NaN half decode is redone in fp32 (--no-half-vae: always)
                            with vae_guard.guarded_decode(pipe, job.warnings, self.settings.no_half_vae):
                                return task.run(pipe, job), job.warnings
                        except Cancelled as stop:
                            stop.partial_images = decode_partial(pipe, job)
                            raise

                try:
                    (pil_images, warnings), level = mgr.run(run_batch, size=(req.width, req.height), pipeline_cls=cls,
                                                            model=loaded.name)
                    if mode == "txt2img" and req.enable_hr:  # A1111's Hires. fix: upscale, then img2img at the target size
                        (pil_images, hr_warnings), hr_level = self._hires_fix(pil_images, req, run_batch, loaded, cancel)
                        warnings, level = warnings + hr_warnings, max(level, hr_level)
                    if refining:  # the refiner samples the rest from the switch's latents
                        (pil_images, r_warnings), r_level = self._refine(pil_images, req, run_batch, cancel)
                        warnings, level = warnings + [w for w in r_warnings if w not in warnings], max(level, r_level)
                except Cancelled as stop:
                    for img, seed in zip(getattr(stop, "partial_images", []), seeds, strict=False):
                        result.images.append(self._finish(img, req, seed, loaded.name, model_hash, arch,
                                                          result.memory_level, vae, partial=True,
                                                          backend=_backend_label(backends_used)))
                    if isinstance(stop, Skipped) and not is_cancelled(cancel):
                        skip.clear()
                        backends_used.clear()
                        continue  # A1111's Skip: on with the next image
                    raise _cancelled(result) from None
                result.memory_level = max(result.memory_level, level)
                for w in warnings:
                    if w not in result.warnings:
                        result.warnings.append(w)
                for img, seed in zip(pil_images, seeds, strict=False):
                    result.images.append(self._finish(img, req, seed, loaded.name, model_hash, arch, level, vae,
                                                      backend=_backend_label(backends_used)))
                backends_used.clear()
        return result

    def _refiner_infotext(self, req: GenerationRequest) -> dict:
        """A1111's ``Refiner: name [hash]`` and ``Refiner switch at: 0.8`` when a refiner ran."""
        if req.mode != "txt2img" or not req.refiner_checkpoint or req.refiner_switch_at >= 1:
            return {}
        try:
            entry = self.manager.find(req.refiner_checkpoint)
        except UnknownModelError:
            return {}
        short = self.manager.ensure_hash(entry)
        return {"Refiner": f"{entry.name} [{short}]" if short else entry.name, "Refiner switch at": req.refiner_switch_at}

    def _refine(self, latents, req: GenerationRequest, run_batch, cancel):
        """The refiner's part of one batch, through the manager like any model (it becomes the current
        model; the first one stays in the RAM cache as the budget allows): ``run_batch`` with the
        refiner's own prompt encoding, from ``latents``. Returns ``((images, warnings), memory level)``."""
        import diffusers

        if is_cancelled(cancel):
            raise Cancelled("interrupted")
        second = req.replace(init_image=latents)
        refiner_model = self.manager.select(req.refiner_checkpoint)
        if not isinstance(refiner_model.pipe, (diffusers.StableDiffusionXLPipeline, diffusers.StableDiffusionXLImg2ImgPipeline)):
            raise InvalidRequest("refiner_checkpoint", refiner_model.name, "an SDXL checkpoint (base or refiner)")
        return self.manager.run(lambda pipe, model: run_batch(pipe, model, req=second, task=refiner.SecondPass),
                                size=(req.width, req.height), pipeline_cls=diffusers.StableDiffusionXLImg2ImgPipeline,
                                model=refiner_model.name)

    def _depth_setup(self, loaded, req: GenerationRequest):
        """The pipeline class and task of a job on the SD 2 depth model: img2img only, with the user's
        depth map or the estimator's (loaded by the manager, set on the pipeline)."""
        import diffusers

        if req.mode != "img2img":
            raise InvalidRequest("model", loaded.name, f"a model for {req.mode}; this one is the SD 2 depth model, which "
                                 f"works in img2img (it keeps the input image's depth)")
        pipe = loaded.pipe
        if req.depth_map is None:
            model, processor = self.manager.depth.get()  # InvalidRequest on depth_map when there is none
            model.to(loaded.execution_device)
            pipe.register_modules(depth_estimator=model, feature_extractor=processor)
        return diffusers.StableDiffusionDepth2ImgPipeline, depth

    def depth_available(self) -> bool:
        """Whether a depth estimator is installed (else a depth model needs a supplied depth map)."""
        return self.manager.depth.available()

    def depth_preview(self, image):
        """The estimator's depth map of ``image`` (8-bit grayscale, near = bright), what an SD 2 depth
        model would be conditioned on; raises InvalidRequest when no estimator is installed."""
        return self.manager.depth.estimate(image, self.manager.device)

    def _hires_fix(self, first, req: GenerationRequest, run_batch, loaded, cancel):
        """A1111's Hires. fix for one batch (``sample_hr_pass``): the first pass's latents (latent
        modes) or images (pixel upscalers) upscaled to the target size, then ``run_batch`` again as an
        img2img pass there, with the same seeds, on the memory ladder at the target size. Returns
        ``((images, warnings), memory level)``; interrupted before the second pass's first step, the
        first pass's images are the partial ones."""
        import diffusers

        target = req.hires_target()
        try:
            if is_cancelled(cancel):
                raise Cancelled("interrupted")
            if hires.is_latent(req.hr_upscaler):
                start = hires.upscale_latents(first.latents, target, req.hr_upscaler)
            else:
                once = self._pixel_upscaler(req.hr_upscaler, cancel)
                start = [hires.upscale_pixels(img, target, once) for img in first]
            second = hires.second_pass_request(req, start)
            is_xl = isinstance(loaded.pipe, diffusers.StableDiffusionXLPipeline)
            cls = getattr(diffusers, _CLASSES["img2img"][1 if is_xl else 0])
            return self.manager.run(lambda pipe, model: run_batch(pipe, model, req=second, task=hires, first_pass=req),
                                    size=(target.width, target.height), pipeline_cls=cls, model=loaded.name)
        except Cancelled as stop:
            if not getattr(stop, "partial_images", None):
                stop.partial_images = list(first)
            raise

    def _pixel_upscaler(self, name: str, cancel):
        """One pass of the pixel upscaler ``name`` as ``(image, scale) -> image``: A1111's None, Lanczos
        and Nearest, or an ESRGAN-family model at its own scale (loaded and placed by the manager)."""
        if name in (hires.NONE, upscale.LANCZOS, upscale.NEAREST):
            return hires.simple_upscaler(name)

        def once(img, scale):
            def fn(model, device):
                job = Job(request=GenerationRequest(mode="upscale", init_image=img, upscale_factor=float(model.scale)),
                          seeds=[0], device=device, cancel=cancel)
                return upscale.run_esrgan(model, job, device)[0]

            return self.manager.run_upscaler(name, fn)[0]

        return once

    def _check_hires(self, req: GenerationRequest) -> None:
        """The Hires. fix upscaler is one the server lists; its sampler and schedule type are A1111's."""
        hires.normalize(req)
        names = self.hires_upscaler_names()
        if req.hr_upscaler not in names:
            raise InvalidRequest("hr_upscaler", req.hr_upscaler, f"one of {', '.join(names)}")
        if req.hr_sampler or req.hr_scheduler:
            try:
                sampler, schedule = samplers.resolve(req.hr_sampler or req.sampler, req.hr_scheduler or req.scheduler)
            except InvalidRequest as e:
                raise InvalidRequest(f"hr_{e.field}", e.value, e.allowed) from None
            req.hr_sampler = sampler.name if sampler.name != req.sampler else ""
            req.hr_scheduler = schedule if schedule != req.scheduler else ""

    def _upscale(self, req: GenerationRequest, on_progress, cancel) -> GenerationResult:
        """A1111's extras upscale: ``upscaler`` by the factor (or to cover Width x Height), blended with
        ``upscaler_2`` at its visibility, then (Scale to, Crop to fit) the centre cropped to Width x Height."""
        result = GenerationResult(images=[], request=req)
        second = req.upscaler_2 not in ("", hires.NONE) and req.upscaler_2_visibility > 0
        if req.upscaler_2 not in ("", hires.NONE) and req.upscaler_2 not in self.upscaler_names():
            raise InvalidRequest("upscaler_2", req.upscaler_2, f"None or one of {', '.join(self.upscaler_names())}")
        factor = upscale.factor_of(req)
        job = Job(request=req.replace(upscale_factor=factor), seeds=[req.seed], device=self.manager.device,
                  on_progress=on_progress, cancel=cancel)
        arch = Architecture.SD1
        try:
            out, arch = self._upscale_with(req.upscaler, "upscaler", job, result)
            if second:
                job.request = job.request.replace(upscaler=req.upscaler_2)
                out2, arch2 = self._upscale_with(req.upscaler_2, "upscaler_2", job, result)
                out = [upscale.blend(a, b, req.upscaler_2_visibility) for a, b in zip(out, out2, strict=True)]
                arch = arch if arch == detect.X4_UPSCALER else arch2
        except Cancelled:
            raise _cancelled(result) from None
        out = [upscale.crop_to_fit(img, req) for img in out]
        for img in out:
            result.images.append(self._finish(img, req, None, result.model_name, "", arch, result.memory_level))
        return result

    def _upscale_with(self, name: str, field_name: str, job: Job, result: GenerationResult):
        """``job``'s image through the upscaler ``name`` (at ``job.request.upscale_factor``):
        ``(images, architecture)``; the memory level and an SD x4 model's name go into ``result``."""
        req = job.request
        arch = Architecture.SD1
        if name in (upscale.LANCZOS, upscale.NEAREST):
            return upscale.run_simple(job, name), arch
        if name == upscale.SD_X4 or name in {e.name for e in self._x4_models()}:
            models = self._x4_models()
            if not models:
                raise InvalidRequest(field_name, name, f"one of {', '.join(self.upscaler_names())} "
                                                       "(no SD x4 upscaler checkpoint found)")
            target = name if name != upscale.SD_X4 else models[0].name
            with self.manager.lock:
                (out, level) = self.manager.run(lambda pipe, loaded: upscale.run_sd_x4(pipe, job),
                                                size=("x4",) + req.init_image.size, model=target)
            result.memory_level = max(result.memory_level, level)
            result.model_name = target
            return out, detect.X4_UPSCALER
        entries = {e.name: e for e in self.models(ModelKind.UPSCALER)}
        if name not in entries:
            raise InvalidRequest(field_name, name, f"one of {', '.join(self.upscaler_names())}")
        problem = entries[name].error
        if problem:
            raise InvalidRequest(field_name, name, problem)
        out, level = self.manager.run_upscaler(name, lambda model, device: upscale.run_esrgan(model, job, device))
        result.memory_level = max(result.memory_level, level)
        return out, arch

    # ---- outputs ------------------------------------------------------------------------------
    def infotext_params(self, req: GenerationRequest, seed, model_name: str, model_hash: str, width: int,
                        height: int, vae: Optional[registry.ModelEntry] = None) -> dict:
        if req.mode == "upscale":
            # A1111's keys (scripts/postprocessing_upscale.py), in its order
            p: dict[str, Any]
            if req.upscale_mode == UPSCALE_MODES[1]:
                to = f"{req.upscale_to_width}x{req.upscale_to_height}"
                p = {"Postprocess upscale to": to, "Postprocess crop to": to if req.upscale_crop else None}
            else:
                p = {"Postprocess upscale by": req.upscale_factor}
            p["Postprocess upscaler"] = req.upscaler
            if req.upscaler_2 not in ("", hires.NONE) and req.upscaler_2_visibility > 0:
                p["Postprocess upscaler 2"] = req.upscaler_2
            if req.upscaler == upscale.SD_X4 or model_name:
                p.update({"Steps": req.steps, "Sampler": req.sampler, "CFG scale": req.cfg_scale, "Seed": seed,
                          "Noise level": req.noise_level, "Model": model_name or None})
            return p
        hires_fix = req.mode == "txt2img" and req.enable_hr
        if hires_fix:  # A1111: Size is the first pass's; the Hires keys say the rest
            width, height = req.width, req.height
        p = {
            "Steps": req.steps,
            "Sampler": req.sampler,
            "Schedule type": None if req.scheduler == "Automatic" else req.scheduler,
            "CFG scale": req.cfg_scale,
            "Seed": seed,
            "Size": f"{width}x{height}",
            "Model hash": model_hash or None,
            "Model": model_name or None,
            # A1111: "VAE hash: xxxxxxxxxx, VAE: name.safetensors" when a VAE file is used
            "VAE hash": vae.short_hash if vae else None,
            "VAE": vae.filename if vae else None,
            **_variation_infotext(req, seed),
            "Denoising strength": req.denoising_strength if req.mode in ("img2img", "inpaint") or hires_fix else None,
            "Clip skip": req.clip_skip if req.clip_skip > 1 else None,  # A1111 writes it only when it is not 1
            "Mask blur": req.mask_blur if req.mode == "inpaint" else None,
            "Masked content": req.inpainting_fill if req.mode == "inpaint" else None,
            # A1111 writes the mask mode only when it is the inverted one
            "Mask mode": req.inpainting_mask_invert if req.mode == "inpaint" and req.inpainting_mask_invert != MASK_MODES[0]
            else None,
            # A1111 writes these two only for "Only masked"
            **({"Inpaint area": req.inpaint_full_res, "Masked area padding": req.inpaint_full_res_padding}
               if req.mode == "inpaint" and req.inpaint_full_res == INPAINT_AREAS[1] else {}),
            **(hires.infotext(req) if hires_fix else {}),  # A1111's extra_generation_params order
            **self._refiner_infotext(req),
            "Lora hashes": self.manager.loras.hashes(req.prompt, model_name),  # A1111: "name: 0123456789ab, ..."
            # A1111: "name: 0123456789ab, ..." for the embeddings the prompt, then the negative prompt, used
            "TI hashes": self.manager.embeddings.hashes(req.prompt, req.negative_prompt, model_name),
        }
        return p

    def _finish(self, img, req: GenerationRequest, seed, model_name, model_hash, arch, level,
                vae: Optional[registry.ModelEntry] = None, partial: bool = False,
                backend: Optional[str] = None) -> GeneratedImage:
        """Infotext, watermark and (unless ``partial``: an interrupted image is never saved) the PNG."""
        params = self.infotext_params(req, seed, model_name, model_hash, img.width, img.height, vae)
        wm_on = (not self.settings.no_watermark) if req.watermark is None else req.watermark
        marked = False
        if wm_on and watermark.can_watermark(img):
            img = watermark.add_watermark(img, watermark.watermark_text_for(arch))
            marked = True
        elif wm_on:
            params["Watermark"] = f"none (under {watermark.WATERMARK_MIN_SIZE}px)"
        if level:
            params["Memory level"] = f"{int(level)} ({MemoryLevel(level).label})"
        if backend:  # only when the UNet ran on OpenVINO: PyTorch is what every A1111 image says nothing about
            params["Backend"] = backend
        params["Version"] = f"sdui {__version__}"
        text = infotext.build_infotext(req.prompt if req.mode != "upscale" or req.upscaler == upscale.SD_X4 else "",
                                     req.negative_prompt if req.mode != "upscale" else "", params)
        img.info["parameters"] = text
        path = None
        if req.save and not partial:
            folder = outputs.output_folder(self.settings.outputs_dir, req.mode)
            path = str(outputs.save_image(img, folder, seed, text, req.output_format))
        return GeneratedImage(image=img, seed=seed if seed is not None else -1, infotext=text, path=path,
                              watermarked=marked, partial=partial)

    def save_grid(self, grid, req: GenerationRequest, first: Optional[GeneratedImage],
                  infotext_text: Optional[str] = None) -> GeneratedImage:
        """An X/Y/Z plot's grid (``sdui.xyz``), saved where A1111 saves grids (``outputs/txt2img-grids/<date>/``,
        ``img2img-grids`` for img2img and inpaint) as ``NNNNN-grid.png``, with ``infotext`` (the plot's: the
        first cell's plus A1111's "Script", "X Type", "X Values", ... keys) or else the first cell's."""
        text = infotext_text if infotext_text is not None else (first.infotext if first else "")
        grid.info["parameters"] = text
        path = None
        if req.save:
            folder = outputs.output_folder(self.settings.outputs_dir, req.mode, grid=True)
            path = str(outputs.save_image(grid, folder, "grid", text, req.output_format))
        return GeneratedImage(image=grid, seed=first.seed if first else req.seed, infotext=text, path=path)

    # ---- PNG info -----------------------------------------------------------------------------
    @staticmethod
    def png_info(img) -> dict:
        text = infotext.read_infotext(img)
        out = {"infotext": text or "", "parameters": infotext.parse_infotext(text) if text else {}}
        out["watermark"] = watermark.verify_watermark(img)
        return out

    def status(self) -> dict:
        """Device, precision, the loaded model, its memory level, the RAM cache and memory in use."""
        return self.manager.status()


def _variation_infotext(req: GenerationRequest, seed) -> dict:
    """A1111's "Variation seed" (image i's: subseed + i), "Variation seed strength" (both only when the
    strength is not 0) and "Seed resize from" (WxH, only when both are set), in its order (after VAE)."""
    if req.mode not in VARIATION_MODES:
        return {}
    varied = req.subseed_strength != 0 and isinstance(seed, int)
    resized = req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0
    return {"Variation seed": req.subseed + (seed - req.seed) if varied else None,
            "Variation seed strength": req.subseed_strength if varied else None,
            "Seed resize from": f"{req.seed_resize_from_w}x{req.seed_resize_from_h}" if resized else None}


@functools.lru_cache(maxsize=1)
def _shipped_tokenizer():
    from .models.tokenizer import load_clip_tokenizer

    tok = copy.deepcopy(load_clip_tokenizer())  # a copy: the cached one is the pipelines' (77 tokens)
    tok.model_max_length = 2**31  # only counting here: no "longer than 77" warning for long prompts
    return tok


def _cancelled(result: GenerationResult) -> Cancelled:
    finished = sum(1 for im in result.images if not im.partial)
    exc = Cancelled(f"interrupted; {finished} finished image(s) kept")
    exc.partial = result
    return exc


def _backend_label(used: set) -> Optional[str]:
    """The infotext's "Backend" for a batch whose UNet ran on ``used``: set only for OpenVINO ("OpenVINO",
    or "OpenVINO bf16" with --openvino-precision bf16)."""
    return next((name for name in sorted(used) if name.startswith("OpenVINO")), None)


def _preparing_progress(on_progress: Optional[Callable[[Progress], None]]) -> Optional[Callable[[int], None]]:
    """The one-time OpenVINO conversion as progress: "Preparing the CPU-optimised model, once" 0-100."""
    if on_progress is None:
        return None
    t0 = time.perf_counter()

    def report(percent: int) -> None:
        on_progress(Progress(step=percent, total=100, elapsed=time.perf_counter() - t0, eta=0.0, stage=PREPARING_STAGE))

    return report


def _quiet_libraries() -> None:
    """diffusers/transformers warn on every load about things users cannot act on."""
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.set_verbosity_error()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()
    except ImportError:
        pass
