"""Full-size detection tier (``-m slow``, outside the default run): for every architecture sdui ships a
config for, a checkpoint with the real architecture's shapes and random weights is written in the
ORIGINAL single-file key layout (``sdui.models.export``), found with no config beside it, detected,
loaded through the shipped config (assets/configs/<arch>) and run for one step at 64x64.

Memory: one model at a time, built and loaded in bf16 (as small as fp16; CPU bf16 matmuls are about
twice as fast) (SDXL: about 7 GB while saving); run with
``nice -n 5 ... -m slow tests/test_fullsize.py`` when 12 GB are free. Load times are printed
(``-s``). The only thing faked besides the training: for SD 2.x the UNet's output layer is set so
that A1111's v-prediction test (used where the keys cannot tell) has a definite answer (v: the
output is -1.5 everywhere; epsilon: 0), as a trained model's output would.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from sdui.assets_path import CONFIGS_DIR
from sdui.models import detect, loader, registry
from sdui.models.export import save_single_file

pytestmark = pytest.mark.slow

ARCHS = [detect.SD1, detect.SD1_INPAINT, detect.SD2, detect.SD2_V, detect.SD2_INPAINT, detect.SD2_DEPTH, detect.SDXL,
         detect.X4_UPSCALER]


def _build(arch: str):
    """The shipped config's pipeline with random bf16 weights (SD 2.x 768-v is the SD 2.x 512 layout)."""
    import diffusers
    import transformers

    from sdui.models.tokenizer import OPENCLIP_PAD, load_clip_tokenizer

    folder = CONFIGS_DIR / (detect.SD2 if arch == detect.SD2_V else arch)
    index = loader._read_index(folder)
    parts = {}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        for name, spec in index.items():
            if name.startswith("_") or not isinstance(spec, list):
                continue
            if spec[0] is None:
                parts[name] = None
            elif name.startswith("tokenizer"):
                parts[name] = load_clip_tokenizer(OPENCLIP_PAD if name == "tokenizer_2" or arch not in (
                    detect.SD1, detect.SD1_INPAINT, detect.SDXL) else None)
            elif spec[0] == "transformers":
                cls = getattr(transformers, spec[1])
                parts[name] = cls(cls.config_class.from_pretrained(folder / name))
            else:
                cls = getattr(diffusers, spec[1])
                if issubclass(cls, diffusers.SchedulerMixin):
                    parts[name] = cls.from_pretrained(folder, subfolder=name)
                else:
                    parts[name] = cls.from_config(cls.load_config(folder / name))
    finally:
        torch.set_default_dtype(previous)
    pipe_cls = getattr(diffusers, index["_class_name"])
    extra = {k: index[k] for k in ("max_noise_level", "requires_safety_checker") if k in index}
    return pipe_cls(**parts, **extra)


def _set_v_answer(unet, v: bool) -> None:
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.fill_(-1.5 if v else 0.0)


def _one_step(pipe, arch: str):
    g = torch.Generator().manual_seed(0)
    kw = dict(prompt="a house", num_inference_steps=1, generator=g, output_type="np")
    image = Image.new("RGB", (64, 64), (120, 90, 60))
    if arch in (detect.SD1_INPAINT, detect.SD2_INPAINT):
        return pipe(image=image, mask_image=Image.new("L", (64, 64), 255), height=64, width=64, **kw).images
    if arch == detect.SD2_DEPTH:
        return pipe(image=image, depth_map=torch.rand(1, 64, 64), strength=1.0, **kw).images
    if arch == detect.X4_UPSCALER:
        return pipe(image=image.resize((16, 16)), **kw).images
    return pipe(height=64, width=64, **kw).images


@pytest.mark.parametrize("arch", ARCHS)
def test_full_size_original_layout_is_detected_loaded_and_runs(arch, tmp_path):
    pipe = _build(arch)
    if arch in (detect.SD2, detect.SD2_V):
        _set_v_answer(pipe.unet, arch == detect.SD2_V)
    params = sum(p.numel() for p in pipe.unet.parameters())
    path = Path(save_single_file(pipe, tmp_path / f"{arch}-random.safetensors", dtype=torch.bfloat16))
    del pipe
    gc.collect()
    entry = registry.describe_file(path, f"{arch}-random", registry.CHECKPOINT)
    expected = detect.SD2 if arch == detect.SD2_V else arch  # keys cannot tell 768-v from 512: the loader's test does
    assert entry.config_dir is None and entry.architecture == expected, entry.error
    t0 = time.perf_counter()
    result = loader.load(entry, torch.bfloat16)
    seconds = time.perf_counter() - t0
    if arch in (detect.SD2, detect.SD2_V):
        assert result.needs_v_check
        assert loader.settle_v_prediction(result.pipe) == (arch == detect.SD2_V)
    pipe = result.pipe
    assert sum(p.numel() for p in pipe.unet.parameters()) == params and pipe.unet.dtype == torch.bfloat16
    pipe.set_progress_bar_config(disable=True)
    out = _one_step(pipe, arch)
    assert out.shape[-1] == 3 and out.shape[1:3] == (64, 64)
    print(f"\nfull-size {arch}: UNet {params / 1e6:.0f}M parameters, {path.stat().st_size / 2**30:.2f} GiB file, "
          f"load {seconds:.1f}s")
    del pipe, result
    path.unlink()  # GBs: not kept in pytest's temporary folders
    gc.collect()
