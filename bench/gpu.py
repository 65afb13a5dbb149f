"""Figure 5 (GPU only, never in CI): ``python -m bench.gpu``.

it/s at 512x512, 50 steps, fp16: diffusers defaults vs sdui defaults vs sdui with torch.compile;
peak VRAM at each memory level; the lowest level that completes 512x512; and the fraction of the
card's fp16 peak reached (an SD 1.5 UNet step is ~0.84 TFLOP per image, 1.68 TFLOP with CFG).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TFLOP_PER_CFG_STEP = 1.68
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "L4": 121.0}


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("bench.gpu needs a CUDA GPU; this machine has none.")
        return 1
    from sdui import samplers
    from sdui.config import Settings
    from sdui.models.manager import ModelManager

    from .common import Report, machine_info, models_tree

    report = Report(machine=machine_info())
    name = torch.cuda.get_device_name(0)
    print(f"device: {name}", flush=True)
    models = models_tree(1)
    steps, size = 50, 512

    def run(pipe):
        pipe.scheduler = samplers.make_scheduler(pipe.scheduler.config, "Euler a")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        pipe("a photo", num_inference_steps=steps, height=size, width=size,
             generator=torch.Generator("cpu").manual_seed(0))
        torch.cuda.synchronize()
        return steps / (time.perf_counter() - t0)

    # diffusers defaults: fp16 pipeline straight from the single file
    from diffusers import StableDiffusionPipeline

    from sdui.models.loader import CONFIGS_DIR
    from sdui.models.tokenizer import load_clip_tokenizer

    ckpt = models / "Stable-diffusion" / "sd15-random-0.safetensors"
    stock = StableDiffusionPipeline.from_single_file(str(ckpt), config=str(CONFIGS_DIR / "sd15"), tokenizer=load_clip_tokenizer(),
                                                     safety_checker=None, requires_safety_checker=False,
                                                     torch_dtype=torch.float16).to("cuda")
    stock.set_progress_bar_config(disable=True)
    run(stock)
    base = run(stock)
    report.add("5 GPU", "diffusers default", base, "it/s")
    del stock
    torch.cuda.empty_cache()

    mgr = ModelManager(Settings(models_dir=str(models)))
    loaded = mgr.select("sd15-random-0")
    pipe = loaded.pipe
    pipe.set_progress_bar_config(disable=True)
    run(pipe)
    ours = run(pipe)
    report.add("5 GPU", "sdui default", ours, "it/s", base, ratio=ours / base)
    peak = PEAK_TFLOPS.get(next((k for k in PEAK_TFLOPS if k in name), ""), None)
    if peak:
        report.add("5 GPU", "fraction of fp16 dense peak", ours * TFLOP_PER_CFG_STEP / peak, "", None,
                   note=f"{peak} TFLOP/s assumed for {name}")
    pipe.unet = torch.compile(pipe.unet, mode="max-autotune-no-cudagraphs")
    run(pipe)
    compiled = run(pipe)
    report.add("5 GPU", "sdui + torch.compile", compiled, "it/s", base, ratio=compiled / base)
    pipe.unet = pipe.unet._orig_mod
    lowest = None
    for level in mgr.available_levels():
        mgr.apply_level(loaded, level, pipe)
        torch.cuda.reset_peak_memory_stats()
        try:
            run(pipe)
            lowest = level
        except torch.cuda.OutOfMemoryError:
            continue
        report.add("5 GPU", f"peak VRAM at level {int(level)} ({level.label})", torch.cuda.max_memory_allocated() / 2**30, "GiB")
    report.add("5 GPU", "highest level tried that completed 512px", float(lowest if lowest is not None else -1), "level")
    path = report.save("gpu")
    print(report.table())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
