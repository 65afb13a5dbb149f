"""Shared bench helpers: the full-size SD 1.5 checkpoint with random weights (built once, cached),
timing, an RSS sampler for peaks, and the result table."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

CACHE = Path(os.environ.get("SDUI_BENCH_CACHE", Path(__file__).resolve().parent / ".cache"))
RESULTS = Path(__file__).resolve().parent / "results"


def sd15_pipeline():
    """Full-size SD 1.5 architecture from the shipped configs, random weights (cost does not depend
    on the values)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdui.models.loader import CONFIGS_DIR
    from sdui.models.tokenizer import load_clip_tokenizer

    cfg = CONFIGS_DIR / "sd15"
    torch.manual_seed(0)
    return StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")),
        tokenizer=load_clip_tokenizer(), scheduler=PNDMScheduler.from_pretrained(cfg, subfolder="scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def models_tree(n_checkpoints: int = 3) -> Path:
    """``.cache/models/Stable-diffusion/sd15-random-{0..n-1}.safetensors``: original layout, fp16,
    no config beside them (loaded through the bundled config). Extra names are hard links."""
    import torch

    from sdui.models.export import save_single_file

    folder = CACHE / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    first = folder / "sd15-random-0.safetensors"
    if not first.exists():
        print("building the full-size SD 1.5 random-weight checkpoint (once; cached in bench/.cache) ...", flush=True)
        save_single_file(sd15_pipeline(), first, dtype=torch.float16)
    for i in range(1, n_checkpoints):
        p = folder / f"sd15-random-{i}.safetensors"
        if not p.exists():
            try:
                os.link(first, p)
            except OSError:
                import shutil

                shutil.copyfile(first, p)
    return CACHE / "models"


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def anon_rss() -> int:
    """Anonymous resident memory (RssAnon): what the process really holds, without the file pages
    of a memory-mapped checkpoint, which the kernel can drop at any time."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss()


class PeakRSS:
    """Samples RSS and anonymous RSS every 20 ms in a thread; ``peak`` / ``peak_anon`` are the highest seen."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self.peak_anon, self._stop = interval, 0, 0, threading.Event()

    def _sample(self):
        self.peak = max(self.peak, rss())
        self.peak_anon = max(self.peak_anon, anon_rss())

    def __enter__(self):
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def timed(fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@dataclass
class Row:
    figure: str
    name: str
    value: float
    unit: str
    baseline: Optional[float] = None
    ratio: Optional[float] = None
    target: Optional[str] = None
    passed: Optional[bool] = None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    machine: dict = field(default_factory=dict)

    def add(self, figure, name, value, unit, baseline=None, target=None, ok=None, note="", ratio=None):
        if ratio is None and baseline:
            ratio = value / baseline
        row = Row(figure, name, round(value, 4), unit, None if baseline is None else round(baseline, 4),
                  None if ratio is None else round(ratio, 3), target, ok, note)
        self.rows.append(row)
        mark = "" if ok is None else (" PASS" if ok else " MISS")
        ratio_s = "" if ratio is None else f"  ratio {ratio:.3f}"
        print(f"[{figure}] {name}: {value:.3f} {unit}{ratio_s}{'  target ' + target if target else ''}{mark}"
              f"{'  (' + note + ')' if note else ''}", flush=True)
        return row

    def table(self) -> str:
        lines = ["| figure | measure | value | baseline | ratio | target | result |", "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            res = "" if r.passed is None else ("pass" if r.passed else "**miss**")
            lines.append(f"| {r.figure} | {r.name} | {r.value} {r.unit} | {'' if r.baseline is None else r.baseline} | "
                         f"{'' if r.ratio is None else r.ratio} | {r.target or ''} | {res} |")
        return "\n".join(lines)

    def save(self, name: str) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps({"machine": self.machine, "rows": [asdict(r) for r in self.rows]}, indent=2))
        return path


def machine_info() -> dict:
    import platform

    import psutil
    import torch

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import openvino

        info["openvino"] = openvino.__version__.split("-")[0]
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
        if name:
            info["cpu"] = name
    except OSError:
        pass
    return info
