"""Figures 1-4 of the benchmark issue, each a ratio against a baseline measured in the same run on
the full-size SD 1.5 architecture with random weights, on the CPU."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import PeakRSS, Report, anon_rss, rss, timed

REPO = Path(__file__).resolve().parent.parent
PROMPT, NEGATIVE = "a lighthouse on a cliff at dusk, oil painting", "blurry"


def _plain_call(pipe, size, steps, seed=1):
    import torch

    from sdui import samplers

    pipe.scheduler = samplers.make_scheduler(pipe.scheduler.config, "Euler a")
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, negative_prompt=NEGATIVE, generator=[torch.Generator("cpu").manual_seed(seed)],
                num_inference_steps=steps, guidance_scale=7.0, height=size, width=size).images[0]


def _median_spread(values: list[float]) -> tuple[float, str]:
    import statistics

    return statistics.median(values), f"{min(values):.2f}-{max(values):.2f}"


def _ui_page(browser, base: str, model_title_prefix: str, size: int, steps: int):
    """A page of the UI with the bench's model, prompt and settings chosen, as a user would."""
    from tests.test_ui_browser import open_page, pick, set_number, set_text

    context, page = open_page(browser, base)
    titles = page.evaluate("() => [...document.querySelectorAll('#sd_model_checkpoint li[role=option]')]"
                           ".map(li => li.getAttribute('aria-label'))")
    title = next((t for t in titles if t and t.startswith(model_title_prefix)), None)
    if title is None:  # the list renders on opening
        page.locator("#sd_model_checkpoint input").click()
        page.wait_for_selector("#sd_model_checkpoint li[role=option]")
        title = page.evaluate("() => [...document.querySelectorAll('#sd_model_checkpoint li[role=option]')]"
                              ".map(li => li.getAttribute('aria-label'))"
                              f".find(t => t && t.startsWith({model_title_prefix!r}))")
        page.keyboard.press("Escape")
    pick(page, "sd_model_checkpoint", title)
    set_text(page, "txt2img_prompt", PROMPT)
    set_text(page, "txt2img_neg_prompt", NEGATIVE)
    set_number(page, "txt2img_steps", steps)
    set_number(page, "txt2img_width", size)
    set_number(page, "txt2img_height", size)
    return context, page


# Click Generate and time, in the page's own clock, the first sdui progress element (what the user sees
# first: "In the queue", "Starting" or a step) and the finished infotext of this seed.
_CLICK_JS = """async (seed) => {
  const status = () => document.querySelector('#txt2img_status');
  const info = () => document.querySelector('#txt2img_infotext textarea');
  const t0 = performance.now();
  let first = null;
  const seen = () => {
    if (first === null && status() && status().querySelector('.sdui-progress')) {
      first = performance.now() - t0;
      obs.disconnect();  // measured: the rest of the job's page updates are not the harness's business
    }
  };
  const obs = new MutationObserver(seen);
  obs.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
  document.querySelector('#txt2img_generate').click();
  while (!(info() && info().value.includes('Seed: ' + seed + ','))) { await new Promise(r => setTimeout(r, 50)); }
  obs.disconnect();
  return {first_progress_ms: first, done_s: (performance.now() - t0) / 1000};
}"""


def figure1_overhead(report: Report, models: Path, size: int = 128, steps: int = 4, pairs: int = 5, cli: bool = True) -> None:
    """One txt2img through the engine, the REST API and the UI (headless Chromium), each against a
    plain diffusers call on the same weights; ``pairs`` rounds, interleaved (the order rotates each
    round, so a slow minute hits every path), medians and spread. The engine runs with
    ``--backend torch`` here: this figure is sdui's overhead on the same computation (figure 3 is
    the speed of sdui's default backend)."""
    import httpx
    from playwright.sync_api import sync_playwright

    from sdui.config import Settings
    from sdui.engine import Engine
    from sdui.server import create_app
    from sdui.types import GenerationRequest
    from tests.server_util import running_server
    from tests.test_ui_browser import ARGS, CHROMIUM, set_number

    out = Path(tempfile.mkdtemp(prefix="sdui-bench-"))
    settings = Settings(models_dir=str(models), outputs_dir=str(out), api=True, backend="torch")
    engine = Engine(settings)
    req = GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, steps=steps, width=size, height=size, seed=1,
                            model="sd15-random-0", sampler="Euler a", cfg_scale=7.0)
    engine.generate(req)  # warm-up: load, hash, first-call costs
    pipe = engine.manager.current.pipe
    _plain_call(pipe, size, steps)
    body = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": steps, "width": size, "height": size, "seed": 1,
            "sampler_name": "Euler a", "cfg_scale": 7.0, "override_settings": {"sd_model_checkpoint": "sd15-random-0"},
            "save_images": True}
    times: dict[str, list[float]] = {"plain": [], "engine": [], "api": [], "ui": []}
    click_ms: list[float] = []
    app = create_app(settings, engine=engine, with_ui=True)
    with running_server(app) as base, httpx.Client(base_url=base, timeout=600) as c, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context, page = _ui_page(browser, base, "sd15-random-0", size, steps)
        c.post("/sdapi/v1/txt2img", json=body).raise_for_status()
        seed = [1000]

        def ui_once():
            seed[0] += 1
            set_number(page, "txt2img_seed", seed[0])
            r = page.evaluate(_CLICK_JS, seed[0])
            if r["first_progress_ms"] is not None:
                click_ms.append(r["first_progress_ms"])
            return r["done_s"]

        ui_once()  # warm-up of the page's path
        click_ms.clear()
        runs = {"plain": lambda: timed(lambda: _plain_call(pipe, size, steps)),
                "engine": lambda: timed(lambda: engine.generate(req)),
                "api": lambda: timed(lambda: c.post("/sdapi/v1/txt2img", json=body).raise_for_status()),
                "ui": ui_once}
        order = list(runs)
        for i in range(pairs):
            for name in order[i % 4:] + order[:i % 4]:
                times[name].append(runs[name]())
            print(f"[1 overhead] round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
        context.close()
        browser.close()
    plain, plain_spread = _median_spread(times["plain"])
    for name, label in (("engine", "engine"), ("api", "REST API"), ("ui", "web UI (click to infotext, Chromium)")):
        value, spread = _median_spread(times[name])
        # The ratio is the median of the rounds' own ratios (each path against the plain call of the same
        # round, minutes apart at most): this VM's speed drifts by 10-25% between minutes, which a ratio of
        # the two medians would carry in full.
        paired, paired_spread = _median_spread([t / p for t, p in zip(times[name], times["plain"], strict=True)])
        report.add("1 overhead", f"{label}, {size}px {steps} steps, {pairs} interleaved pairs", value, "s/image", plain,
                   "<= 1.02x", paired <= 1.02,
                   f"time: median, spread {spread} s; plain diffusers {plain_spread} s; ratio: median of the {pairs} "
                   f"paired ratios (spread {paired_spread}), ratio of the medians {value / plain:.3f}", ratio=paired)
    if click_ms:
        value, spread = _median_spread(click_ms)
        report.add("1 overhead", f"click to first progress in the browser, median of {len(click_ms)}", value, "ms", None,
                   "<= 150 ms", value <= 150, f"spread {spread} ms; Playwright, page clock")
    engine.manager.release_all()
    pipe = engine = app = None  # let the models go before the CLI figure
    gc.collect()
    if cli:
        _cli_vs_script(report, models, out, size, steps)


_PLAIN_SCRIPT = """
import sys, torch
from diffusers import StableDiffusionPipeline
from sdui.models.tokenizer import load_clip_tokenizer
from sdui.models.loader import CONFIGS_DIR
from sdui import samplers
pipe = StableDiffusionPipeline.from_single_file(sys.argv[1], config=str(CONFIGS_DIR / "sd15"), tokenizer=load_clip_tokenizer(),
        safety_checker=None, requires_safety_checker=False, torch_dtype=torch.float32)
pipe.scheduler = samplers.make_scheduler(pipe.scheduler.config, "Euler a")
img = pipe(sys.argv[2], negative_prompt=sys.argv[3], generator=[torch.Generator("cpu").manual_seed(1)],
           num_inference_steps=int(sys.argv[4]), guidance_scale=7.0, height=int(sys.argv[5]), width=int(sys.argv[5])).images[0]
img.save(sys.argv[6])
"""


def _cli_vs_script(report: Report, models: Path, out: Path, size: int, steps: int) -> None:
    ckpt = models / "Stable-diffusion" / "sd15-random-0.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    script = [sys.executable, "-c", _PLAIN_SCRIPT, str(ckpt), PROMPT, NEGATIVE, str(steps), str(size), str(out / "plain.png")]
    cli = [sys.executable, "-m", "sdui.cli", "txt2img", "--prompt", PROMPT, "--negative-prompt", NEGATIVE, "--ckpt",
           str(ckpt), "--models-dir", str(models), "--steps", str(steps), "--W", str(size), "--H", str(size), "--seed", "1",
           "--outdir", str(out / "cli"), "--quiet"]
    t_script = timed(lambda: subprocess.run(script, env=env, check=True, capture_output=True))
    t_cli = timed(lambda: subprocess.run(cli, env=env, check=True, capture_output=True))
    report.add("1 overhead", "CLI process (start, load, 1 image)", t_cli, "s", t_script, None, None,
               "vs a plain diffusers script: from_single_file + one call")


def figure2_load_switch(report: Report, models: Path, switches: int = 20) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from sdui.config import Settings
    from sdui.models import devices
    from sdui.models.loader import CONFIGS_DIR
    from sdui.models.manager import ModelManager
    from sdui.models.tokenizer import load_clip_tokenizer

    ckpt = models / "Stable-diffusion" / "sd15-random-0.safetensors"
    ckpt.read_bytes()  # same page-cache state for both loaders

    def plain_load():
        p = StableDiffusionPipeline.from_single_file(str(ckpt), config=str(CONFIGS_DIR / "sd15"), tokenizer=load_clip_tokenizer(),
                                                     safety_checker=None, requires_safety_checker=False,
                                                     torch_dtype=torch.float32)
        del p
        gc.collect()

    plain = timed(plain_load)
    devices.free_memory()
    mgr = ModelManager(Settings(models_dir=str(models)))
    t0 = time.perf_counter()
    loaded = mgr.select("sd15-random-0")
    cold = time.perf_counter() - t0
    model_bytes = loaded.nbytes
    report.add("2 load/switch", "cold load, fp16 original-layout file", cold, "s", plain, "about 1x", None,
               "vs StableDiffusionPipeline.from_single_file(config=...)")
    mgr.release_all()
    devices.free_memory()
    _switch_through_the_api(report, models, cold, switches)

    mgr.cache_budget = int(model_bytes * 1.5)  # one model: every switch loads (the A1111 default behaviour)
    names = [f"sd15-random-{i}" for i in range(3)]
    for n in names:
        mgr.select(n)
    devices.free_memory()
    peak_ratio = peak_anon_ratio = 0.0
    for i in range(6):
        devices.free_memory()
        before, before_anon = rss(), anon_rss()
        with PeakRSS() as peak:
            mgr.select(names[i % 3])
        peak_ratio = max(peak_ratio, (peak.peak - before) / model_bytes)
        peak_anon_ratio = max(peak_anon_ratio, (peak.peak_anon - before_anon) / model_bytes)
    report.add("2 load/switch", "peak memory growth during a reloading switch / model size (anonymous RSS)",
               peak_anon_ratio, "x", None, "<= 1.3x", peak_anon_ratio <= 1.3,
               f"model {model_bytes / 2**30:.2f} GiB in fp32; cache of one model", ratio=peak_anon_ratio)
    mgr.release_all()
    devices.free_memory()


def _switch_through_the_api(report: Report, models: Path, cold: float, switches: int) -> None:
    """Two checkpoints alternated through the REST API at default settings (the RAM cache budget and
    the backend as a user gets them): the median added time of a switching request over a request
    on the same model, and RSS after ``switches`` switches against the first cycle."""
    import statistics

    import httpx

    from sdui.config import Settings
    from sdui.models import devices
    from sdui.server import create_app
    from tests.server_util import running_server

    out = Path(tempfile.mkdtemp(prefix="sdui-bench-"))
    settings = Settings(models_dir=str(models), outputs_dir=str(out), api=True)  # defaults otherwise
    app = create_app(settings, with_ui=False)
    names = ["sd15-random-0", "sd15-random-1"]

    def body(model):
        return {"prompt": PROMPT, "steps": 1, "width": 64, "height": 64, "seed": 1, "sampler_name": "Euler",
                "save_images": False, "override_settings": {"sd_model_checkpoint": model}}

    with running_server(app) as base, httpx.Client(base_url=base, timeout=1800) as c:
        def call(model):
            t0 = time.perf_counter()
            c.post("/sdapi/v1/txt2img", json=body(model)).raise_for_status()
            return time.perf_counter() - t0

        for n in names + names:  # first cycle: load both (and prepare the backend for each)
            call(n)
        devices.free_memory()
        first_cycle = rss()
        same, switched, current = [], [], names[1]
        for i in range(switches):
            other = names[0] if current == names[1] else names[1]
            if i < 10:
                same.append(call(current))  # a request on the model already current
            switched.append(call(other))  # then one on the other model: a switch
            current = other
        devices.free_memory()
        after = rss()
        cached = len(app.state.engine.status()["cached"])
        budget = app.state.engine.status()["cache_budget_bytes"]
    added = statistics.median(switched[:10]) - statistics.median(same)
    report.add("2 load/switch", "added time per switch, 2 SD 1.5 checkpoints via the API, defaults (median of 10)",
               added, "s", cold, "<= 0.3 s", added <= 0.3,
               f"switching request {statistics.median(switched[:10]):.2f} s vs same-model {statistics.median(same):.2f} s; "
               f"cache holds {cached}, budget {budget / 2**30:.1f} GiB")
    report.add("2 load/switch", f"RSS after {switches} switches between 2 checkpoints (API, defaults)", after / 2**30, "GiB",
               first_cycle / 2**30, "<= 1.05x first cycle", after / first_cycle <= 1.05)


_PLAIN_FP32 = """
import sys, time, torch
from diffusers import StableDiffusionPipeline
from sdui.models.tokenizer import load_clip_tokenizer
from sdui.models.loader import CONFIGS_DIR
from sdui import samplers
pipe = StableDiffusionPipeline.from_single_file(sys.argv[1], config=str(CONFIGS_DIR / "sd15"), tokenizer=load_clip_tokenizer(),
        safety_checker=None, requires_safety_checker=False, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
pipe.scheduler = samplers.make_scheduler(pipe.scheduler.config, "Euler a")
for line in sys.stdin:  # one image per line read ("SIZE STEPS"): the bench interleaves these with sdui's
    size, steps = (int(x) for x in line.split())
    t0 = time.perf_counter()
    pipe(sys.argv[2], negative_prompt=sys.argv[3], generator=[torch.Generator("cpu").manual_seed(1)],
         num_inference_steps=steps, guidance_scale=7.0, height=size, width=size).images[0]
    print(time.perf_counter() - t0, flush=True)
"""

CPU_CASES = ((256, 8, 2), (512, 20, 1))  # (size, steps, interleaved pairs): the two whole-image targets


def figure3_cpu_speed(report: Report, models: Path, cases=CPU_CASES) -> None:
    """Whole txt2img images (each case: size, steps, pairs; Euler a, CFG 7) through sdui's engine at
    default settings (on a CPU with openvino installed: the OpenVINO backend) against a plain diffusers
    fp32 script (its own process, loaded once), interleaved; the one-time conversion is timed apart."""
    import statistics

    from sdui.config import Settings
    from sdui.engine import Engine
    from sdui.types import GenerationRequest, Progress

    ckpt = models / "Stable-diffusion" / "sd15-random-0.safetensors"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    plain = subprocess.Popen([sys.executable, "-c", _PLAIN_FP32, str(ckpt), PROMPT, NEGATIVE],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def plain_once(size: int, steps: int) -> float:
        plain.stdin.write(f"{size} {steps}\n")
        plain.stdin.flush()
        return float(plain.stdout.readline())

    out = Path(tempfile.mkdtemp(prefix="sdui-bench-"))
    engine = Engine(Settings(models_dir=str(models), outputs_dir=str(out)))

    def request(size: int, steps: int) -> GenerationRequest:
        return GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, steps=steps, width=size, height=size, seed=1,
                                 model="sd15-random-0", sampler="Euler a", cfg_scale=7.0, save=False)

    preparing: list[Progress] = []
    t0 = time.perf_counter()
    engine.generate(request(64, 1), on_progress=lambda p: preparing.append(p) if p.stage != "sampling" else None)
    first = time.perf_counter() - t0
    backend = engine.status()["backend"]
    prep = preparing[-1].elapsed if preparing else 0.0
    report.add("3 CPU speed", "one-time preparation of the CPU-optimised model (convert + compile)" if preparing
               else "first job (no conversion: the IR was on disk)", prep if preparing else first, "s", None, None, None,
               f"backend {backend}; first job {first:.1f} s in all")
    plain_once(64, 1)  # warm-up of the plain script (weights paged in, first-call costs)

    def interleaved(engine, req, pairs: int, tag: str) -> tuple[float, float, object]:
        sdui_t, plain_t, image = [], [], None
        for i in range(pairs):
            for which in (("plain", "sdui") if i % 2 == 0 else ("sdui", "plain")):
                if which == "plain":
                    plain_t.append(plain_once(req.width, req.steps))
                else:
                    t0 = time.perf_counter()
                    image = engine.generate(req).images[0].image
                    sdui_t.append(time.perf_counter() - t0)
            print(f"[3 CPU speed] {tag}{req.width}px {req.steps} steps, pair {i + 1}: plain {plain_t[-1]:.1f}s, "
                  f"sdui {sdui_t[-1]:.1f}s", flush=True)
        return statistics.median(sdui_t), statistics.median(plain_t), image

    images = {}
    for size, steps, pairs in cases:
        s, p, images[size, steps] = interleaved(engine, request(size, steps), pairs, "")
        report.add("3 CPU speed", f"whole txt2img {size}px {steps} steps: plain diffusers fp32 / sdui default ({backend})",
                   p / s, "x faster", None, ">= 1.8x", p / s >= 1.8,
                   f"sdui {s:.1f} s (median of {pairs}), plain diffusers {p:.1f} s; interleaved", ratio=p / s)
    engine.manager.release_all()
    # the opt-in --openvino-precision bf16, on CPUs that compute bf16 natively: the first case again
    size, steps, pairs = cases[0]
    try:
        import numpy as np
        import openvino

        native = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except ImportError:
        native = False
    if native and backend.startswith("OpenVINO"):
        bf16 = Engine(Settings(models_dir=str(models), outputs_dir=str(out), openvino_precision="bf16"))
        bf16.generate(request(64, 1))  # compile (the IR is on disk)
        s, p, image = interleaved(bf16, request(size, steps), pairs, "bf16 ")
        diff = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(images[size, steps], dtype=np.int16))
        report.add("3 CPU speed", f"whole txt2img {size}px {steps} steps: plain diffusers fp32 / sdui "
                   f"--openvino-precision bf16 (opt-in)", p / s, "x faster", None, ">= 1.8x", p / s >= 1.8,
                   f"sdui {s:.1f} s (median of {pairs}), plain diffusers {p:.1f} s; interleaved; image vs the f32 "
                   f"one: mean {diff.mean():.1f}/255, max {diff.max()}/255", ratio=p / s)
        bf16.manager.release_all()
    plain.stdin.close()
    plain.wait()


def figure4_ladder(report: Report, models: Path, size: int = 128, steps: int = 2) -> None:
    from sdui.config import Settings
    from sdui.models.manager import ModelManager

    mgr = ModelManager(Settings(models_dir=str(models)))
    loaded = mgr.select("sd15-random-0")
    pipe = loaded.pipe
    base = None
    for level in mgr.available_levels():
        mgr.apply_level(loaded, level, pipe)
        _plain_call(pipe, size, 1)
        t = timed(lambda: _plain_call(pipe, size, steps), 1) / steps
        if base is None:
            base = t
        report.add("4 ladder", f"level {int(level)} ({level.label})", t, "s/step", base, None, None, f"{size}px, incl. decode")
    mgr.release_all()
