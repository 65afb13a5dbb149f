"""The model manager: device and precision, switching, the RAM cache, freeing, the memory ladder."""

from __future__ import annotations

import gc
import shutil
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from sdui.config import Settings
from sdui.models import devices
from sdui.models.manager import ModelManager, OutOfMemory
from sdui.types import GenerationRequest, ModelLoadError, UnknownModelError
from tests.conftest import copy_model


def _manager(models_root, **kw) -> ModelManager:
    return ModelManager(Settings(models_dir=str(models_root), **kw))


# ---- device and precision ----------------------------------------------------------------------
def test_cpu_is_always_fp32_whatever_the_flags():
    for s in (Settings(), Settings(half_dtype="bf16"), Settings(medvram=True)):
        assert devices.pick_dtype(s, torch.device("cpu")) == torch.float32


def test_gpu_precision_follows_a1111_flags_without_a_gpu():
    """Only the choice is tested here (no GPU on this machine): a torch.device('cuda') object."""
    cuda = torch.device("cuda")
    assert devices.pick_dtype(Settings(), cuda) == torch.float16
    assert devices.pick_dtype(Settings(half_dtype="bf16"), cuda) == torch.bfloat16
    assert devices.pick_dtype(Settings(no_half=True), cuda) == torch.float32
    assert devices.pick_dtype(Settings(precision="full"), cuda) == torch.float32


def test_use_cpu_all_and_auto_pick_cpu_here():
    assert devices.pick_device(Settings(use_cpu="all")).type == "cpu"
    assert devices.pick_device(Settings()).type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_medvram_and_lowvram_set_the_starting_level():
    assert Settings().start_memory_level == 0
    assert Settings(medvram=True).start_memory_level == 3
    assert Settings(lowvram=True).start_memory_level == 4


# ---- switching and caching ---------------------------------------------------------------------
def test_switch_and_switch_back_from_ram_cache(models_root):
    m = _manager(models_root)
    a = m.select("tiny")
    b = m.select("other")
    assert m.current is b and m.cached_names() == ["tiny", "other"]
    t0 = time.perf_counter()
    again = m.select("tiny")
    assert again is a, "switching back must reuse the cached model, not reload it"
    assert time.perf_counter() - t0 < 1.0


def test_find_accepts_a1111_titles_hashes_and_paths(models_root):
    m = _manager(models_root)
    entry = m.find("tiny")
    m.ensure_hash(entry)
    assert m.find(entry.title) is entry and m.find(entry.short_hash) is entry
    # paths are for the owner (flags, CLI) only; a remote client names what is listed
    assert m.find(entry.path, trusted=True) is entry
    with pytest.raises(UnknownModelError):
        m.find(entry.path)
    with pytest.raises(UnknownModelError, match="Available: .*tiny"):
        m.find("no-such-model")


def test_failed_load_keeps_the_current_model_usable(models_root, tmp_path, make_engine):
    root = tmp_path / "m"
    sd = root / "Stable-diffusion"
    sd.mkdir(parents=True)
    copy_model(models_root / "Stable-diffusion" / "tiny.safetensors", sd / "good.safetensors")
    good = (sd / "good.safetensors").read_bytes()
    (sd / "broken.safetensors").write_bytes(good[: len(good) // 2])
    shutil.copytree(sd / "good.config", sd / "broken.config")
    engine = make_engine(models_dir=str(root))
    engine.manager.select("good")
    with pytest.raises(ModelLoadError, match="broken.safetensors: .*truncated"):
        engine.manager.select("broken")
    assert engine.manager.current.name == "good"
    result = engine.generate(GenerationRequest(prompt="still works", steps=2, width=64, height=64, seed=1))
    assert result.model_name == "good" and len(result.images) == 1


def test_lru_eviction_respects_the_budget(models_root):
    m = _manager(models_root)
    one = m.select("tiny").nbytes
    m.cache_budget = int(one * 2.5)  # room for two
    m.select("tiny")
    m.select("other")
    m.select("tiny-ckpt")
    assert m.cached_names() == ["other", "tiny-ckpt"]
    m.select("other")  # touch: now tiny-ckpt is the oldest
    m.select("tiny-folder")
    assert m.cached_names() == ["other", "tiny-folder"]
    m.cache_budget = 0
    m.select("tiny")
    assert m.cached_names() == ["tiny"], "the current model is kept even over budget, nothing else"


def test_released_models_are_really_freed(models_root):
    m = _manager(models_root, ram_cache_gb=0)
    unet_ref = weakref.ref(m.select("tiny").pipe.unet)
    m.select("other")  # budget 0: tiny is evicted
    gc.collect()
    assert unet_ref() is None, "something still holds the evicted model's UNet"
    pipe_ref = weakref.ref(m.current.pipe)
    m.release_all()
    gc.collect()
    assert pipe_ref() is None and m.current is None


def test_repeated_switching_does_not_grow_memory(models_root):
    """Three checkpoints, twenty cycles, cache of one: RSS after the last cycle is not above the first."""
    m = _manager(models_root, ram_cache_gb=0)
    names = ["tiny", "other", "tiny-ckpt"]
    for n in names:
        m.select(n)
    devices.free_memory()
    after_first = devices.rss_bytes()
    for _ in range(20):
        for n in names:
            m.select(n)
    devices.free_memory()
    grown = devices.rss_bytes() - after_first
    one_model = m.current.nbytes
    assert grown < 2 * one_model, f"RSS grew by {grown / 2**20:.1f} MiB over 20 cycles (model {one_model / 2**20:.1f} MiB)"


def test_one_lock_serialises_model_work(models_root):
    m = _manager(models_root)
    m.select("tiny")
    inside, release = threading.Event(), threading.Event()
    order = []

    def long_job(pipe, loaded):
        inside.set()
        release.wait(5)
        order.append("job done")

    t = threading.Thread(target=lambda: m.run(long_job, size=(64, 64)))
    t.start()
    assert inside.wait(5)
    switcher = threading.Thread(target=lambda: (m.select("other"), order.append("switched")))
    switcher.start()
    time.sleep(0.3)
    assert order == [], "a switch ran while a job held the model"
    release.set()
    t.join(5)
    switcher.join(10)
    assert order == ["job done", "switched"]


# ---- memory ladder -----------------------------------------------------------------------------
def test_levels_3_and_4_are_skipped_without_an_accelerator(models_root):
    m = _manager(models_root)
    assert m.available_levels() == [0, 1, 2, 5]


def _oom_once(module):
    """Make ``module.forward`` raise a (simulated) CUDA out-of-memory error on its next call only."""
    original = module.forward
    calls = {"n": 0}

    def forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return original(*args, **kwargs)

    module.forward = forward
    return calls


@pytest.mark.parametrize("stage", ["text_encoder", "unet", "vae_decoder"])
def test_simulated_oom_at_each_stage_retries_one_level_down_with_the_same_image(make_engine, stage):
    engine = make_engine(no_watermark=True)
    req = GenerationRequest(prompt="a lighthouse", steps=3, width=64, height=64, seed=11, model="tiny", save=False)
    clean = engine.generate(req)
    assert clean.memory_level == 0
    pipe = engine.manager.current.pipeline(__import__("diffusers").StableDiffusionPipeline)
    module = {"text_encoder": pipe.text_encoder, "unet": pipe.unet, "vae_decoder": pipe.vae.decoder}[stage]
    calls = _oom_once(module)
    engine.manager._levels.clear()
    retried = engine.generate(req)
    del module.forward
    assert calls["n"] >= 2, "the failing stage was not run again"
    assert retried.memory_level == 1
    assert engine.manager.remembered_level("tiny", 64, 64) == 1
    a = np.asarray(clean.images[0].image, dtype=np.int16)
    b = np.asarray(retried.images[0].image, dtype=np.int16)
    assert np.abs(a - b).max() <= 2
    assert "Memory level: 1" in retried.images[0].infotext


def test_persistent_simulated_oom_walks_every_cpu_level_then_reports(models_root):
    m = _manager(models_root)
    m.select("tiny")
    seen = []

    def always_oom(pipe, loaded):
        seen.append(loaded.level)
        raise torch.cuda.OutOfMemoryError("simulated")

    with pytest.raises(OutOfMemory, match="every memory level"):
        m.run(always_oom, size=(64, 64))
    assert seen == [0, 1, 2, 5]
    result, level = m.run(lambda pipe, loaded: "fine", size=(64, 64))  # the manager still works
    assert result == "fine" and level == 0


def test_non_oom_errors_are_not_retried(models_root):
    m = _manager(models_root)
    m.select("tiny")
    seen = []

    def broken(pipe, loaded):
        seen.append(loaded.level)
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError):
        m.run(broken, size=(64, 64))
    assert seen == [0]
