"""Fixtures: an A1111-style models tree of tiny random-weight pipelines in every format, and an
engine factory. Everything is offline (HF_HUB_OFFLINE=1) and on the CPU."""

from __future__ import annotations

import os
import tempfile

# Before anything imports huggingface_hub: offline, and caches inside the test session.
_SESSION_TMP = tempfile.mkdtemp(prefix="sdui-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", os.path.join(_SESSION_TMP, "hf"))
os.environ["SDUI_CACHE_DIR"] = os.path.join(_SESSION_TMP, "sdui-cache")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# --backend auto means PyTorch in the tests, so reference checks compare like with like (exact to plain
# diffusers) and progress is the same whichever test converts a model first; tests/test_openvino.py runs
# the OpenVINO backend by name and checks what auto means.
os.environ["SDUI_AUTO_BACKEND"] = "torch"

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests import tiny  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_pipe():
    return tiny.tiny_pipeline(seed=0)


@pytest.fixture(scope="session")
def models_root(tiny_pipe, tmp_path_factory) -> Path:
    """models/ with: Stable-diffusion/{tiny.safetensors+.config, tiny-ckpt.ckpt+.config,
    tiny-folder/ (diffusers), other.safetensors+.config (different weights),
    tiny-inpaint/ (9-channel diffusers folder)} and ESRGAN/tiny-esrgan.pth."""
    root = tmp_path_factory.mktemp("models")
    sd = root / "Stable-diffusion"
    sd.mkdir()
    tiny.save_single_file(tiny_pipe, sd / "tiny.safetensors")
    tiny.save_single_file(tiny_pipe, sd / "tiny-ckpt.ckpt")
    tiny_pipe.save_pretrained(sd / "tiny-folder")
    other = tiny.tiny_pipeline(seed=100)
    tiny.save_single_file(other, sd / "other.safetensors")
    tiny.tiny_pipeline(seed=7, inpaint=True).save_pretrained(sd / "tiny-inpaint")
    tiny.tiny_x4_upscaler().save_pretrained(sd / "tiny-x4")
    (root / "VAE").mkdir()
    (root / "Lora").mkdir()
    esr = root / "ESRGAN"
    esr.mkdir()
    torch.save(tiny.tiny_esrgan_state_dict(), esr / "tiny-esrgan.pth")
    return root


@pytest.fixture()
def make_engine(models_root, tmp_path):
    """Factory: ``make_engine(**settings_overrides)`` -> Engine on the tiny models, outputs in tmp."""
    from sdui.config import Settings
    from sdui.engine import Engine

    engines = []

    def make(**overrides):
        values = {"models_dir": str(models_root), "outputs_dir": str(tmp_path / "outputs"), **overrides}
        settings = Settings(**values)
        engine = Engine(settings)
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        e.manager.release_all()


@pytest.fixture()
def hub_cache(tiny_pipe, tmp_path, monkeypatch) -> str:
    """A local Hugging Face cache holding the tiny pipeline as ``someone/tiny-sd`` (as a download
    would leave it), made the current cache; returns the Hub id."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    repo = hub / "models--someone--tiny-sd"
    tiny_pipe.save_pretrained(repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    return "someone/tiny-sd"


@pytest.fixture()
def scratch_models(tiny_pipe, tmp_path) -> Path:
    """A writable models/ tree for tests that add or break files."""
    root = tmp_path / "models"
    (root / "Stable-diffusion").mkdir(parents=True)
    return root


def copy_model(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
        cfg = Path(str(src.with_suffix("")) + ".config")
        if cfg.is_dir():
            shutil.copytree(cfg, Path(str(dst.with_suffix("")) + ".config"))
    return dst


@pytest.fixture(scope="session")
def tiny_xl_pipe():
    return tiny.tiny_sdxl_pipeline(seed=0)


@pytest.fixture(scope="session")
def xl_models_root(tiny_xl_pipe, tmp_path_factory) -> Path:
    """models/ with Stable-diffusion/tiny-xl/ (a tiny SDXL diffusers folder) and empty Lora/, VAE/."""
    root = tmp_path_factory.mktemp("xl-models")
    tiny_xl_pipe.save_pretrained(root / "Stable-diffusion" / "tiny-xl")
    (root / "Lora").mkdir()
    (root / "VAE").mkdir()
    return root


@pytest.fixture(scope="module")
def xl_engine(xl_models_root, tmp_path_factory):
    """An Engine on the tiny SDXL model (no watermark: pixels compare with plain diffusers)."""
    from sdui.config import Settings
    from sdui.engine import Engine

    e = Engine(Settings(models_dir=str(xl_models_root), outputs_dir=str(tmp_path_factory.mktemp("xl-outputs")),
                        embeddings_dir=str(tmp_path_factory.mktemp("xl-embeddings")), no_watermark=True))
    yield e
    e.manager.release_all()
