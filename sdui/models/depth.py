"""Depth estimators for the SD 2 depth-to-image model (``512-depth-ema``).

The depth model is conditioned on a depth map as MiDaS DPT-Hybrid makes it (relative inverse depth:
near is bright), which diffusers' ``StableDiffusionDepth2ImgPipeline`` computes with transformers'
``DPTForDepthEstimation``. The checkpoint's own ``depth_model.*`` weights are in MiDaS' layout, which
neither library reads, so the estimator is a separate transformers model: a folder in
``models/depth/`` (``config.json``, ``model.safetensors``, ``preprocessor_config.json``, as
``Intel/dpt-hybrid-midas`` is published), else ``Intel/dpt-hybrid-midas`` in the Hugging Face cache.
Only safetensors weights are read (never a pickle). Without any, a depth model still runs on a depth
map the user supplies.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..types import InvalidRequest, ModelLoadError

if TYPE_CHECKING:
    from .manager import ModelManager

log = logging.getLogger(__name__)

FOLDER = "depth"
HUB_ID = "Intel/dpt-hybrid-midas"
NO_ESTIMATOR = ("a depth image: no depth estimator is installed (put a transformers DPT depth model such as "
                f"{HUB_ID}, with model.safetensors, in models/depth/), so the depth map must be supplied")


class DepthEstimators:
    def __init__(self, manager: "ModelManager"):
        self.manager = manager
        self._loaded: Optional[tuple[str, Any, Any]] = None  # (folder, model, image processor)

    def folders(self) -> list[Path]:
        """Usable estimator folders: models/depth/* (sorted), then the Hub id in the HF cache."""
        root = Path(self.manager.settings.models_dir) / FOLDER
        found = sorted(p for p in root.iterdir() if (p / "config.json").is_file() and (p / "model.safetensors").is_file()) \
            if root.is_dir() else []
        try:
            from huggingface_hub import snapshot_download

            cached = Path(snapshot_download(HUB_ID, local_files_only=True))
            if (cached / "model.safetensors").is_file():
                found.append(cached)
        except Exception:  # noqa: BLE001 - not in the cache (or no hub library): nothing to add
            pass
        return found

    def available(self) -> bool:
        return bool(self.folders())

    def get(self) -> tuple[Any, Any]:
        """(DPTForDepthEstimation, DPTImageProcessor), loaded once; raises InvalidRequest (on
        ``depth_map``) when there is none, ModelLoadError when the folder cannot be read."""
        with self.manager.lock:
            folders = self.folders()
            if not folders:
                raise InvalidRequest("depth_map", None, NO_ESTIMATOR)
            folder = str(folders[0])
            if self._loaded is None or self._loaded[0] != folder:
                self._loaded = None
                self._loaded = (folder, *_load(folder))
            return self._loaded[1], self._loaded[2]

    def estimate(self, image, device) -> Any:
        """The estimator's depth map of ``image`` as an 8-bit grayscale PIL image (near = bright), at
        the image's size: what the depth model is conditioned on (before its own normalisation)."""
        import numpy as np
        import torch
        from PIL import Image

        model, processor = self.get()
        with self.manager.lock, torch.no_grad():
            model.to(device)
            pixels = processor(images=image.convert("RGB"), return_tensors="pt").pixel_values.to(device, model.dtype)
            depth = model(pixels).predicted_depth.float()
            depth = torch.nn.functional.interpolate(depth.unsqueeze(1), size=(image.height, image.width), mode="bicubic",
                                                    align_corners=False)[0, 0]
        lo, hi = depth.min(), depth.max()
        depth = (depth - lo) / (hi - lo) if hi > lo else torch.zeros_like(depth)
        return Image.fromarray((depth.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8), mode="L")


def _load(folder: str) -> tuple[Any, Any]:
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    t0 = time.perf_counter()
    try:
        model = DPTForDepthEstimation.from_pretrained(folder, use_safetensors=True, local_files_only=True).eval()
        processor = DPTImageProcessor.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many types; the user needs the reason
        raise ModelLoadError(f"{folder}: cannot load the depth estimator ({type(e).__name__}: {str(e)[:300]})") from None
    log.info("depth estimator %s loaded in %.2fs", Path(folder).name, time.perf_counter() - t0)
    return model, processor


def depth_tensor(image) -> Any:
    """A user's depth image (any mode; bright = near, as MiDaS) as the (1, H, W) float tensor the
    depth pipeline takes (it rescales it to the latents and normalises it itself)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255.0).unsqueeze(0)
