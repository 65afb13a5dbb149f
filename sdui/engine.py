"""The facade the UI, the REST API and the CLI all call:
``Engine.generate(request, on_progress, cancel) -> GenerationResult``.

It checks the request before any model work, lets the model manager pick and place the model
and run each batch on the memory ladder, and turns pixels into saved PNGs with A1111 infotext
and the invisible watermark.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Callable, Optional

from . import __version__, prompt_schedule, prompts, samplers
from .fields import LATENT_UPSCALE_MODES, MASK_MODES
from .images import infotext, outputs, watermark
from .config import Settings
from .models import detect, devices, download, registry
from .models.manager import AUTOMATIC_VAE, NO_VAE, ModelManager
from .pipelines import hires, img2img, inpaint, txt2img, upscale
from .pipelines.common import Job, decode_partial, is_cancelled
from .types import (Architecture, Cancelled, GeneratedImage, GenerationRequest, GenerationResult, InvalidRequest, Limits,
                    MemoryLevel, ModelKind, PREPARING_STAGE, Progress, UnknownModelError)

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
        self.manager = manager or ModelManager(self.settings)
        self.limits = Limits(max_size=self.settings.max_size)
        outputs.clean_stale_temporaries(self.settings.outputs_dir)  # debris of a killed earlier run

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
        """Live previews are made every this many sampling steps (and at the last one)."""
        from .pipelines.common import PREVIEW_EVERY

        return PREVIEW_EVERY

    def unload_checkpoints(self) -> None:
        """Free every loaded checkpoint (A1111's unload-checkpoint); waits for a running job, and the
        next job loads its model again."""
        self.manager.release_all()

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
        return self._check_seed(req)

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
        return req

    def generate(self, request: GenerationRequest, on_progress: Optional[Callable[[Progress], None]] = None,
                 cancel=None) -> GenerationResult:
        t0 = time.perf_counter()
        req = self.prepare(request)
        if is_cancelled(cancel):
            raise Cancelled("interrupted before start")
        if req.mode == "upscale":
            result = self._upscale(req, on_progress, cancel)
        else:
            result = self._diffuse(req, on_progress, cancel)
        result.seconds = time.perf_counter() - t0
        return result

    def _diffuse(self, req: GenerationRequest, on_progress, cancel) -> GenerationResult:
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
            if mode == "txt2img" and req.enable_hr:  # Hires. fix: keep the latents; one progress count for both passes
                task, on_progress = hires, hires.combined_progress(on_progress, req)
            result = GenerationResult(images=[], request=req, model_name=loaded.name, model_hash=model_hash or "",
                                      vae_name=vae.filename if vae else None, vae_hash=vae.short_hash if vae else None,
                                      warnings=list(req.notes))
            total = req.batch_size * req.batch_count
            backends_used: set[str] = set()  # "Backend: OpenVINO" in the infotext when the UNet ran there
            for n in range(req.batch_count):
                if is_cancelled(cancel):
                    raise _cancelled(result)
                seeds = [req.seed + n * req.batch_size + i for i in range(req.batch_size)]

                def run_batch(pipe, loaded, seeds=seeds, n=n, req=req, task=task):  # Hires. fix: another req, task
                    job = Job(request=req, seeds=seeds, device=loaded.execution_device, on_progress=on_progress,
                              cancel=cancel, image_index=n * req.batch_size, image_total=total)
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
                    # A1111's textual-inversion embeddings: each name becomes its vectors' tokens (SD 1.x/2.x)
                    prompt, negative_prompt, ti_warnings = mgr.embeddings.use(loaded, pipe, prompt, req.negative_prompt)
                    job.warnings.extend(ti_warnings)
                    if not is_xl:
                        clip_skip = 1 if Architecture.of(arch).is_sd2 else req.clip_skip
                        if clip_skip != req.clip_skip:  # A1111's OpenCLIP encoder ignores the setting too
                            job.warnings.append("Clip skip does not apply to SD 2.x models (as in A1111); ignored")
                        # A1111's prompt editing [from:to:when] and alternation [a|b]: each text encoded once;
                        # the StepTracker swaps the embeddings at the steps job.cond_schedule says
                        cond = prompt_schedule.encode_schedule(
                            lambda p, n: prompts.encode(pipe, p, n, job.device, clip_skip), prompt, negative_prompt,
                            prompt_schedule.total_steps(req.sampler, req.steps))
                        job.prompt_embeds, job.negative_prompt_embeds = cond.prompt_embeds, cond.negative_prompt_embeds
                        job.cond_schedule = cond.schedule
                        job.warnings.extend(cond.warnings)
                    elif prompts.token_count(pipe.tokenizer, req.prompt) > prompts.CHUNK or any(
                            w != 1.0 for _, w in prompts.parse_attention(req.prompt)):
                        job.warnings.append("SDXL: emphasis and prompts over 75 tokens are not applied yet; "
                                            "the prompt was used as plain text and cut at 75 tokens")
                    if is_xl and any(prompt_schedule.is_edited(t, req.steps) for t in (req.prompt, req.negative_prompt)):
                        job.warnings.append("SDXL: prompt editing [from:to:when] and alternation [a|b] are not applied "
                                            "yet; the prompt was used as written")
                    # --backend: the UNet on OpenVINO (CPU) or PyTorch; a LoRA needs the PyTorch UNet
                    lora_reason = "LoRA" if prompt != req.prompt else None
                    with mgr.unet_backend(loaded, pipe, _preparing_progress(on_progress), lora_reason) as (name, notes):
                        job.warnings.extend(notes)
                        backends_used.add(name)
                        try:
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
                except Cancelled as stop:
                    for img, seed in zip(getattr(stop, "partial_images", []), seeds, strict=False):
                        result.images.append(self._finish(img, req, seed, loaded.name, model_hash, arch,
                                                          result.memory_level, vae, partial=True,
                                                          backend=_backend_label(backends_used)))
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
            return self.manager.run(lambda pipe, model: run_batch(pipe, model, req=second, task=hires),
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
        result = GenerationResult(images=[], request=req)
        job = Job(request=req, seeds=[req.seed], device=self.manager.device, on_progress=on_progress, cancel=cancel)
        name = req.upscaler
        arch = Architecture.SD1
        try:
            if name in (upscale.LANCZOS, upscale.NEAREST):
                out = upscale.run_simple(job, name)
            elif name == upscale.SD_X4 or name in {e.name for e in self._x4_models()}:
                models = self._x4_models()
                if not models:
                    raise InvalidRequest("upscaler", name, f"one of {', '.join(self.upscaler_names())} "
                                                           "(no SD x4 upscaler checkpoint found)")
                target = name if name != upscale.SD_X4 else models[0].name
                with self.manager.lock:
                    (out, level) = self.manager.run(lambda pipe, loaded: upscale.run_sd_x4(pipe, job),
                                                    size=("x4",) + req.init_image.size, model=target)
                result.memory_level = level
                result.model_name = target
                arch = detect.X4_UPSCALER
            else:
                entries = {e.name: e for e in self.models(ModelKind.UPSCALER)}
                if name not in entries:
                    raise InvalidRequest("upscaler", name, f"one of {', '.join(self.upscaler_names())}")
                problem = entries[name].error
                if problem:
                    raise InvalidRequest("upscaler", name, problem)
                out, result.memory_level = self.manager.run_upscaler(
                    name, lambda model, device: upscale.run_esrgan(model, job, device))
        except Cancelled:
            raise _cancelled(result) from None
        for img in out:
            result.images.append(self._finish(img, req, None, result.model_name, "", arch, result.memory_level))
        return result

    # ---- outputs ------------------------------------------------------------------------------
    def infotext_params(self, req: GenerationRequest, seed, model_name: str, model_hash: str, width: int,
                        height: int, vae: Optional[registry.ModelEntry] = None) -> dict:
        if req.mode == "upscale":
            p = {"Postprocess upscale by": req.upscale_factor, "Postprocess upscaler": req.upscaler}
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
            "Denoising strength": req.denoising_strength if req.mode in ("img2img", "inpaint") or hires_fix else None,
            "Clip skip": req.clip_skip if req.clip_skip > 1 else None,  # A1111 writes it only when it is not 1
            "Mask blur": req.mask_blur if req.mode == "inpaint" else None,
            "Masked content": req.inpainting_fill if req.mode == "inpaint" else None,
            # A1111 writes the mask mode only when it is the inverted one
            "Mask mode": req.inpainting_mask_invert if req.mode == "inpaint" and req.inpainting_mask_invert != MASK_MODES[0]
            else None,
            **(hires.infotext(req) if hires_fix else {}),  # A1111's extra_generation_params order
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


def _cancelled(result: GenerationResult) -> Cancelled:
    finished = sum(1 for im in result.images if not im.partial)
    exc = Cancelled(f"interrupted; {finished} finished image(s) kept")
    exc.partial = result
    return exc


def _backend_label(used: set) -> Optional[str]:
    """The infotext's "Backend" for a batch whose UNet ran on ``used``: set only for OpenVINO."""
    return "OpenVINO" if "OpenVINO" in used else None


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
