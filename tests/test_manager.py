"""The model manager: device and precision, switching, the RAM cache, freeing, the memory ladder."""

from __future__ import annotations

import gc
import shutil
import threading
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
    """A manager on the tiny models, on the CPU whatever this machine has (a test that means another
    device says so, and fakes it)."""
    return ModelManager(Settings(models_dir=str(models_root), **{"device": "cpu", **kw}))


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


def _no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def _fake_gpu(monkeypatch) -> None:
    """torch reports a CUDA GPU (there may be none): for the choice of device only, nothing runs on it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_use_cpu_all_and_device_cpu_pick_the_cpu_even_with_a_fake_gpu(monkeypatch):
    _fake_gpu(monkeypatch)
    assert devices.pick_device(Settings(use_cpu="all")) == torch.device("cpu")
    assert devices.pick_device(Settings(use_cpu="all", device="cuda")) == torch.device("cpu")
    assert devices.pick_device(Settings(device="cpu")) == torch.device("cpu")


def test_auto_picks_the_cpu_without_cuda_or_mps(monkeypatch):
    _no_gpu(monkeypatch)
    assert devices.pick_device(Settings()) == torch.device("cpu")


def test_auto_picks_cuda_on_a_fake_gpu(monkeypatch):
    _fake_gpu(monkeypatch)
    assert devices.pick_device(Settings()) == torch.device("cuda")
    assert devices.pick_device(Settings(device="cuda:1")) == torch.device("cuda", 1)


def test_auto_picks_mps_on_a_fake_mac_without_cuda(monkeypatch):
    _no_gpu(monkeypatch)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.pick_device(Settings()) == torch.device("mps")


def test_asking_for_a_missing_gpu_is_a_clear_error(monkeypatch):
    _no_gpu(monkeypatch)
    with pytest.raises(RuntimeError, match="--device cuda: this torch build sees no CUDA GPU"):
        devices.pick_device(Settings(device="cuda"))
    with pytest.raises(RuntimeError, match="--device mps: MPS is not available"):
        devices.pick_device(Settings(device="mps"))


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
    again = m.select("tiny")
    # a reload would make a new LoadedModel and new modules: the same objects mean none happened
    assert again is a and again.pipe.unet is a.pipe.unet, "switching back must reuse the cached model, not reload it"
    assert m.current is a and m.cached_names() == ["other", "tiny"]


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


GB = 1024**3


def test_default_budget_is_sized_from_available_ram_not_a_quarter(models_root, monkeypatch):
    """A 24 GB machine with 22 GB available (faked: psutil's figures): two fp32 SD 1.5 models (~4.1 GB
    each) fit the default budget, which a quarter of RAM (6 GB) did not."""
    monkeypatch.setattr(devices, "total_ram_bytes", lambda: 24 * GB)
    monkeypatch.setattr(devices, "available_ram_bytes", lambda: 22 * GB)
    m = _manager(models_root)
    assert m.cache_budget == 22 * GB - devices.ram_reserve_bytes()
    assert m.cache_budget >= 2 * int(4.1 * GB) > 24 * GB // 4
    monkeypatch.setattr(devices, "available_ram_bytes", lambda: 1 * GB)  # a busy machine: never under a quarter
    assert _manager(models_root).cache_budget == 6 * GB
    assert _manager(models_root, ram_cache_gb=1.5).cache_budget == int(1.5 * GB)  # the owner's figure wins


def test_a_budget_set_in_settings_holds_that_many_models(models_root):
    one = _manager(models_root, ram_cache_gb=0).select("tiny").nbytes
    m = _manager(models_root, ram_cache_gb=2.5 * one / GB)  # room for two
    for name in ("tiny", "other", "tiny-ckpt", "other"):
        m.select(name)
    assert m.cached_names() == ["tiny-ckpt", "other"]
    assert m.status()["cache_count"] == 2


def test_low_available_ram_gives_cached_models_back_before_swapping(models_root, monkeypatch):
    """Available RAM (faked) falls under the reserve: the least recently used models leave the cache
    whatever the budget, until it is back above the reserve; the current model stays."""
    m = _manager(models_root, ram_cache_gb=100)
    m.select("tiny")
    m.select("other")
    m.select("tiny-ckpt")
    assert m.cached_names() == ["tiny", "other", "tiny-ckpt"]
    available = iter([0, devices.ram_reserve_bytes()])  # tiny goes; then there is enough again
    monkeypatch.setattr(devices, "available_ram_bytes", lambda: next(available))
    m.select("other")
    assert m.cached_names() == ["tiny-ckpt", "other"]
    monkeypatch.setattr(devices, "available_ram_bytes", lambda: 0)
    m.select("tiny-ckpt")
    assert m.cached_names() == ["tiny-ckpt"], "the current model is kept even when RAM is short, nothing else"


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


class _LockThatReportsWaits:
    """The manager's lock, wrapped: a thread in ``watched`` first tries it without blocking; a
    refused try means another thread held the lock at that moment, and ``on_refused()`` is called
    before the thread waits for the lock as it would have anyway."""

    def __init__(self, lock, on_refused):
        self._lock, self.on_refused = lock, on_refused
        self.watched: set[threading.Thread] = set()

    def acquire(self, blocking=True, timeout=-1):
        if threading.current_thread() in self.watched:
            if self._lock.acquire(blocking=False):
                return True
            self.on_refused()
        return self._lock.acquire(blocking, timeout)

    def release(self):
        self._lock.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def test_one_lock_serialises_model_work(models_root):
    """A checkpoint switch cannot run while a job holds the model; shown by events, not by sleeping.

    The job runs on this thread. From inside it, it starts a switcher thread (``select("other")``)
    and waits until the switcher has either been refused the lock or finished switching, whichever
    comes first. Still inside the job it records which: with one lock, the switcher must have been
    refused (this thread held the lock) and the model must still be "tiny". A switch that did not
    take the lock, or a job run outside it, would finish the switch instead, and the test fails
    whatever the timing. Once the job returns, the switch goes through."""
    m = _manager(models_root)
    m.select("tiny")
    refused, switched, refused_or_switched = threading.Event(), threading.Event(), threading.Event()
    lock = m.lock = _LockThatReportsWaits(m.lock, on_refused=lambda: (refused.set(), refused_or_switched.set()))
    order, in_job = [], {}

    def switch():
        m.select("other")
        order.append("switched")
        switched.set()
        refused_or_switched.set()

    switcher = threading.Thread(target=switch, name="switcher", daemon=True)
    lock.watched.add(switcher)

    def job(pipe, loaded):
        switcher.start()
        assert refused_or_switched.wait(60), "the switcher neither switched nor waited for the lock"
        in_job.update(refused=refused.is_set(), switched=switched.is_set(), current=m.current.name)
        order.append("job done")
        return "ok"

    result, _ = m.run(job, size=(64, 64))
    switcher.join(60)
    assert result == "ok" and not switcher.is_alive()
    assert in_job == {"refused": True, "switched": False, "current": "tiny"}, "a switch ran while a job held the model"
    assert order == ["job done", "switched"] and m.current.name == "other"


# ---- memory ladder -----------------------------------------------------------------------------
def test_levels_3_and_4_are_skipped_on_the_cpu(models_root):
    assert _manager(models_root, device="cpu").available_levels() == [0, 1, 2, 5]


def test_a_simulated_gpu_gets_all_six_levels(models_root, monkeypatch):
    _fake_gpu(monkeypatch)
    m = _manager(models_root, device="auto")
    assert m.device == torch.device("cuda")
    assert m.available_levels() == [0, 1, 2, 3, 4, 5]


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
def test_simulated_oom_at_each_stage_on_cpu_retries_one_level_down_with_the_same_image(make_engine, stage):
    engine = make_engine(no_watermark=True, device="cpu")
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
    m = _manager(models_root, device="cpu")
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
    m = _manager(models_root, device="cpu")
    m.select("tiny")
    seen = []

    def broken(pipe, loaded):
        seen.append(loaded.level)
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError):
        m.run(broken, size=(64, 64))
    assert seen == [0]
