"""The OpenVINO backend for CPUs: the UNet (where a CPU spends its time) runs as an OpenVINO model.

On first use of a checkpoint its UNet is converted with ``openvino.convert_model`` (dynamic batch,
height, width and prompt length), saved as IR under ``<cache>/openvino/<key>/`` (``key``: the
checkpoint's SHA-256, the UNet config and the OpenVINO version) and compiled for the CPU in fp32;
OpenVINO's own ``CACHE_DIR`` keeps the compiled blob. A second start reads the IR (no conversion).

The pipeline calls ``OpenVinoUnet`` exactly as it calls the diffusers UNet (``.sample``,
``return_dict=False``, ``.config``, ``.dtype``, ``.device``); calls it cannot serve (an extra
conditioning input, a latent size the traced graph does not take) go to the PyTorch UNet, which
stays in the model (LoRAs load into it). The text encoder and the VAE stay PyTorch: textual-inversion
embeddings and VAE choices apply as before.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import Settings
from . import registry

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")
LABEL = "OpenVINO"  # infotext "Backend: OpenVINO", the Models panel


def available() -> bool:
    """Is the ``openvino`` package importable (``pip install sdui[openvino]``)?"""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def wanted(settings: Settings, device) -> bool:
    """Does ``--backend`` ask for OpenVINO on this device? ``auto``: on the CPU when the package is
    installed; ``openvino``: on the CPU (a GPU keeps PyTorch: the CPU plugin would be slower there)."""
    choice = getattr(settings, "backend", "auto") or "auto"
    if choice == "auto":  # SDUI_AUTO_BACKEND=torch pins what auto means (the test suite's reference checks do)
        choice = os.environ.get("SDUI_AUTO_BACKEND", "auto")
    if choice == "torch" or getattr(device, "type", str(device)) != "cpu":
        return False
    return available()


def cache_root() -> Path:
    return registry.cache_dir() / "openvino"


def model_key(identity: str, unet) -> str:
    """The IR's folder name: the checkpoint's identity (SHA-256), the UNet's shape and OpenVINO's version."""
    import openvino

    config = json.dumps(dict(unet.config), sort_keys=True, default=str)
    text = f"{identity}|{config}|{openvino.__version__}|any-size"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def identity_of(entry: registry.ModelEntry) -> str:
    """The checkpoint's SHA-256 for a file; a folder or Hub id by path and its weights' dates."""
    if entry.sha256:
        return entry.sha256
    p = Path(entry.path)
    stamps = sorted(f"{q.relative_to(p)}:{q.stat().st_mtime_ns}:{q.stat().st_size}"
                    for q in p.glob("unet/*") if q.is_file()) if p.is_dir() else []
    return f"{entry.path}|{'|'.join(stamps)}"


@functools.lru_cache(maxsize=None)
def _trace_class():
    """The three inputs the SD 1.x/2.x pipelines give the UNet, as positional tensors (made on first
    use: this module does not import torch at import time)."""
    import torch

    class UnetForTrace(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    return UnetForTrace


def convert_unet(unet, path: Path) -> None:
    """Trace ``unet`` with shapes the pipeline really uses and save the IR at ``path`` (``.xml``)."""
    import openvino as ov
    import torch

    channels = unet.config.in_channels
    cross = unet.config.cross_attention_dim
    # a latent size the UNet cannot halve evenly: diffusers then upsamples to each skip connection's own
    # size, which the trace keeps as a shape computation, so the IR takes every size, not only multiples of 64 px
    size = 2 ** getattr(unet, "num_upsamplers", 3) + 1
    example = (torch.randn(2, channels, size, size), torch.tensor(999.0), torch.randn(2, 77, cross))
    shapes = [ov.PartialShape([-1, channels, -1, -1]), ov.PartialShape([]), ov.PartialShape([-1, -1, cross])]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape asserts the dynamic shapes make moot
        model = ov.convert_model(_trace_class()(unet).eval(), example_input=example, input=shapes)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.xml")
    # fp32 weights as they are: fp16 compression would cost the 2/255 closeness on fp32 checkpoints
    ov.save_model(model, tmp, compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
    os.replace(tmp, path)  # the .xml last: its presence means the IR is complete


def OpenVinoUnet(compiled, unet, nbytes: int = 0):
    """A stand-in for the diffusers UNet ``unet`` whose forward runs ``compiled``."""
    return _unet_class()(compiled, unet, nbytes)


@functools.lru_cache(maxsize=None)
def _unet_class():
    import torch

    class OpenVinoUnet(torch.nn.Module):
        def __init__(self, compiled, unet, nbytes):
            super().__init__()
            self.compiled = compiled
            self.nbytes = nbytes
            self.calls = {"openvino": 0, "torch": 0}
            object.__setattr__(self, "torch_unet", unet)  # not a sub-module: its weights are not ours
            self.config = unet.config

        @property
        def dtype(self):
            return torch.float32

        @property
        def device(self):
            return torch.device("cpu")

        def __getattr__(self, name):  # add_embedding, time_embedding, ... as the PyTorch UNet has them
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(object.__getattribute__(self, "torch_unet"), name)

        def serves(self, sample, timestep, extra: dict) -> bool:
            if any(v is not None for v in extra.values()):
                return False
            return not torch.is_tensor(timestep) or timestep.numel() == 1

        def forward(self, sample, timestep, encoder_hidden_states, return_dict: bool = True, **extra):
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            if not self.serves(sample, timestep, extra):
                self.calls["torch"] += 1
                if self.torch_unet.dtype != sample.dtype:  # held in fp16 beside OpenVINO (manager._compact_torch_unet)
                    self.torch_unet.to(sample.dtype)
                return self.torch_unet(sample, timestep, encoder_hidden_states, return_dict=return_dict, **extra)
            self.calls["openvino"] += 1
            t = timestep.reshape(()) if torch.is_tensor(timestep) else torch.tensor(timestep)
            out = self.compiled([sample.detach().float().numpy(), t.detach().float().numpy(),
                                 encoder_hidden_states.detach().float().numpy()])[0]
            result = torch.from_numpy(out.copy()).to(sample.dtype)
            return (result,) if not return_dict else UNet2DConditionOutput(sample=result)

    return OpenVinoUnet


def compile_ir(path: Path):
    import openvino as ov

    core = ov.Core()
    blobs = cache_root() / "compiled"
    blobs.mkdir(parents=True, exist_ok=True)
    core.set_property({"CACHE_DIR": str(blobs)})
    return core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def prepare(unet, identity: str, on_progress: Optional[Callable[[int], None]] = None):
    """The OpenVINO stand-in for ``unet``: from the saved IR when there is one, else converted now
    (``on_progress(percent)`` along the way). Raises whatever conversion raises."""
    report = on_progress or (lambda pct: None)
    path = cache_root() / model_key(identity, unet) / "unet.xml"
    t0 = time.perf_counter()
    converted = False
    if not path.is_file():
        report(5)
        convert_unet(unet, path)
        converted = True
        report(70)
    compiled = compile_ir(path)
    report(100)
    nbytes = path.with_suffix(".bin").stat().st_size
    log.info("OpenVINO UNet %s in %.1fs (%s)", "converted and compiled" if converted else "loaded", time.perf_counter() - t0,
             path.parent.name)
    return OpenVinoUnet(compiled, unet, nbytes)


@contextlib.contextmanager
def unet_swapped(pipe, unet: Any):
    """``pipe`` calls ``unet`` for the duration (the pipeline's config and its other views untouched)."""
    if unet is None:
        yield
        return
    before = pipe.__dict__.get("unet")
    pipe.__dict__["unet"] = unet
    try:
        yield
    finally:
        pipe.__dict__["unet"] = before
