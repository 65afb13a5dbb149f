"""The OpenVINO backend for CPUs: the UNet, the VAE's encoder and decoder and the text encoder run as
OpenVINO models.

On first use of a checkpoint each part is converted with ``openvino.convert_model`` (dynamic batch,
height, width and prompt length), saved as IR under ``<cache>/openvino/<key>/`` (``key``: the
checkpoint's SHA-256, the part's config and the OpenVINO version) and compiled for the CPU in fp32;
OpenVINO's own ``CACHE_DIR`` keeps the compiled blobs. A second start reads the IR (no conversion).

The pipeline calls each stand-in exactly as it calls the diffusers/transformers module it replaces;
calls a stand-in cannot serve go to the PyTorch module, which stays in the model:
- the UNet: an extra conditioning input, a timestep per sample (LoRAs load into the PyTorch UNet);
- the VAE: a VAE file chosen instead of the checkpoint's own (only the built-in one is converted);
- the text encoder: a textual-inversion token (its rows were added to the table after conversion:
  the IR holds the checkpoint's own vocabulary only).
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
from dataclasses import dataclass, field
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


def _config_text(module, **override) -> str:
    """A module's architecture as JSON for a cache key: without the bookkeeping (``_name_or_path`` is
    the bundled config's folder, which moves with the install; versions of the libraries) and with
    ``override`` (a text encoder's ``vocab_size``: embeddings grow the table and rewrite the config)."""
    config = module.config.to_dict() if hasattr(module.config, "to_dict") else dict(module.config)  # transformers / diffusers
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
    return json.dumps({**config, **override}, sort_keys=True, default=str)


def identity_of(entry: registry.ModelEntry) -> str:
    """The checkpoint's SHA-256 for a file; a folder by path and the dates and sizes of the weights of
    every converted part (a VAE dropped into ``vae/`` makes new IRs)."""
    if entry.sha256:
        return entry.sha256
    p = Path(entry.path)
    stamps = sorted(f"{q.relative_to(p)}:{q.stat().st_mtime_ns}:{q.stat().st_size}"
                    for part in ("unet", "vae", "text_encoder") for q in p.glob(f"{part}/*") if q.is_file()) if p.is_dir() else []
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
    _convert(_trace_class()(unet), example, shapes, path)


def _save(model, path: Path) -> None:
    import openvino as ov

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.xml")
    # fp32 weights as they are: fp16 compression would cost the 2/255 closeness on fp32 checkpoints
    ov.save_model(model, tmp, compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
    os.replace(tmp, path)  # the .xml last: its presence means the IR is complete


def _convert(module, example, shapes, path: Path) -> None:
    import openvino as ov
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape asserts the dynamic shapes make moot
        model = ov.convert_model(module.eval(), example_input=example, input=shapes)
    _save(model, path)


def convert_vae(vae, folder: Path) -> None:
    """The VAE's decoder (latents after ``post_quant_conv`` to pixels) and encoder (pixels to the moments
    before ``quant_conv``) as two IRs in ``folder``: ``vae_decoder.xml``, ``vae_encoder.xml``. Both take
    any batch and size; the tiled and sliced decodes call them per tile or image as they call the modules."""
    import openvino as ov
    import torch

    latent = vae.config.latent_channels
    _convert(vae.decoder, (torch.randn(1, latent, 9, 9),), [ov.PartialShape([-1, latent, -1, -1])],
             folder / "vae_decoder.xml")
    channels = vae.config.in_channels
    _convert(vae.encoder, (torch.randn(1, channels, 72, 72),), [ov.PartialShape([-1, channels, -1, -1])],
             folder / "vae_encoder.xml")


@functools.lru_cache(maxsize=None)
def _text_trace_class():
    import torch

    class TextEncoderForTrace(torch.nn.Module):
        """The last hidden state and every layer's hidden state (A1111's clip skip reads one of them)."""

        def __init__(self, text_encoder):
            super().__init__()
            self.text_encoder = text_encoder

        def forward(self, input_ids):
            out = self.text_encoder(input_ids, output_hidden_states=True, return_dict=True)
            return (out.last_hidden_state, *out.hidden_states)

    return TextEncoderForTrace


def own_vocabulary(tokenizer, text_encoder) -> int:
    """How many rows of the token table are the checkpoint's own (those beyond are textual-inversion
    tokens sdui added)."""
    rows = text_encoder.get_input_embeddings().weight.shape[0]
    return min(rows, getattr(tokenizer, "vocab_size", rows) or rows)


def convert_text_encoder(text_encoder, rows: int, path: Path) -> None:
    """The text encoder with the checkpoint's own ``rows`` of the token table (any batch, any length)."""
    import openvino as ov
    import torch

    table = text_encoder.get_input_embeddings()
    text_encoder.set_input_embeddings(torch.nn.Embedding.from_pretrained(table.weight[:rows], freeze=True))
    try:
        example = (torch.zeros(2, 77, dtype=torch.int64),)
        _convert(_text_trace_class()(text_encoder), example, [ov.PartialShape([-1, -1])], path)
    finally:
        text_encoder.set_input_embeddings(table)


def OpenVinoUnet(compiled, unet, nbytes: int = 0):
    """A stand-in for the diffusers UNet ``unet`` whose forward runs ``compiled``."""
    return _unet_class()(compiled, unet, nbytes)


@functools.lru_cache(maxsize=None)
def _standin_class():
    import torch

    class OpenVinoStandin(torch.nn.Module):
        """What every stand-in shares: the compiled model, its IR's size, call counts, and the PyTorch
        module it replaces (not a sub-module: its weights are not ours), whose attributes it answers."""

        def __init__(self, compiled, module, nbytes):
            super().__init__()
            self.compiled = compiled
            self.nbytes = nbytes
            self.calls = {"openvino": 0, "torch": 0}
            object.__setattr__(self, "torch_module", module)
            if hasattr(module, "config"):
                self.config = module.config

        @property
        def dtype(self):
            return torch.float32

        @property
        def device(self):
            return torch.device("cpu")

        def __getattr__(self, name):  # add_embedding, text_model (clip skip's final_layer_norm), ... from PyTorch's
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(object.__getattribute__(self, "torch_module"), name)

        def run(self, *arrays):
            """The compiled model's outputs for these tensors, as tensors (counted as an OpenVINO call)."""
            self.calls["openvino"] += 1
            outs = self.compiled([a.detach().numpy() for a in arrays])
            return [torch.from_numpy(outs[i].copy()) for i in range(len(outs))]

        def fallback(self, *args, **kwargs):
            self.calls["torch"] += 1
            return self.torch_module(*args, **kwargs)

    return OpenVinoStandin


@functools.lru_cache(maxsize=None)
def _unet_class():
    import torch

    class OpenVinoUnet(_standin_class()):
        @property
        def torch_unet(self):
            return self.torch_module

        def serves(self, sample, timestep, extra: dict) -> bool:
            if any(v is not None for v in extra.values()):
                return False
            return not torch.is_tensor(timestep) or timestep.numel() == 1

        def forward(self, sample, timestep, encoder_hidden_states, return_dict: bool = True, **extra):
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            if not self.serves(sample, timestep, extra):
                if self.torch_unet.dtype != sample.dtype:  # held in fp16 beside OpenVINO (manager._compact_torch_unet)
                    self.torch_unet.to(sample.dtype)
                return self.fallback(sample, timestep, encoder_hidden_states, return_dict=return_dict, **extra)
            t = timestep.reshape(()) if torch.is_tensor(timestep) else torch.tensor(timestep)
            result = self.run(sample.float(), t.float(), encoder_hidden_states.float())[0].to(sample.dtype)
            return (result,) if not return_dict else UNet2DConditionOutput(sample=result)

    return OpenVinoUnet


@functools.lru_cache(maxsize=None)
def _part_class():
    import torch

    class OpenVinoPart(_standin_class()):
        """A stand-in for the VAE's ``encoder`` or ``decoder``: one tensor in, one out."""

        def forward(self, sample, *args, **extra):
            if args or any(v is not None for v in extra.values()) or sample.dtype != torch.float32:
                return self.fallback(sample, *args, **extra)  # latent_embeds (a VAE variant), or a half VAE
            return self.run(sample)[0]

    return OpenVinoPart


@functools.lru_cache(maxsize=None)
def _text_class():
    import torch

    class OpenVinoTextEncoder(_standin_class()):
        """A stand-in for a CLIP text encoder: ``(ids)[0]`` and ``.hidden_states`` as transformers answers;
        an id beyond the checkpoint's own vocabulary (a textual-inversion token) goes to PyTorch."""

        def __init__(self, compiled, text_encoder, rows, nbytes):
            super().__init__(compiled, text_encoder, nbytes)
            self.rows = rows

        def forward(self, input_ids, output_hidden_states: bool = False, return_dict: bool = True, **extra):
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            if (any(v is not None for v in extra.values()) or self.torch_module.dtype != torch.float32
                    or int(input_ids.max()) >= self.rows):
                return self.fallback(input_ids, output_hidden_states=output_hidden_states, return_dict=return_dict, **extra)
            tensors = self.run(input_ids.to(torch.int64))
            hidden = tuple(tensors[1:]) if output_hidden_states else None
            # SD 1.x/2.x read the hidden states only; the pooled vector is not traced (SDXL stays PyTorch)
            out = BaseModelOutputWithPooling(last_hidden_state=tensors[0], hidden_states=hidden)
            return out if return_dict else (tensors[0],) + ((hidden,) if hidden else ())

    return OpenVinoTextEncoder


@dataclass
class OpenVinoModel:
    """A checkpoint's OpenVINO parts; ``vae`` is the PyTorch VAE they were converted from (its own)."""

    unet: Any
    decoder: Any
    encoder: Any
    text_encoder: Any
    vae: Any
    precision: str = "f32"  # what the CPU really computes in (a bf16 request on a CPU without bf16 is f32)
    failed: dict = field(default_factory=dict)  # part -> why its conversion failed (that part runs on PyTorch)

    @property
    def label(self) -> str:
        """The infotext's "Backend" value: "OpenVINO", or "OpenVINO bf16"."""
        return LABEL if self.precision == "f32" else f"{LABEL} {self.precision}"

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in (self.unet, self.decoder, self.encoder, self.text_encoder) if p is not None)


def compile_ir(path: Path, precision: str = "f32"):
    import openvino as ov

    core = ov.Core()
    blobs = cache_root() / "compiled"
    blobs.mkdir(parents=True, exist_ok=True)
    core.set_property({"CACHE_DIR": str(blobs)})
    if precision != "f32" and precision.upper() not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        log.warning("this CPU has no native %s; OpenVINO computes in f32", precision)
        precision = "f32"
    return core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision})


def _precision_of(compiled) -> str:
    """"f32" or "bf16": what the compiled model computes in (OpenVINO answers an element type)."""
    text = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    return "bf16" if "bf16" in text or "bfloat16" in text else "f32"


def part_key(identity: str, part: str, module, **override) -> str:
    """The IR folder of one part: the checkpoint's identity, the part's config and OpenVINO's version."""
    import openvino

    text = f"{identity}|{part}|{_config_text(module, **override)}|{openvino.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def prepare(pipe, identity: str, on_progress: Optional[Callable[[int], None]] = None, vae=None,
            precision: str = "f32") -> OpenVinoModel:
    """The OpenVINO parts of ``pipe`` (an SD 1.x/2.x pipeline as loaded; ``vae``: the checkpoint's own
    VAE, default ``pipe.vae``): from the saved IRs when they are there, else converted now
    (``on_progress(percent)`` along the way). Raises whatever the UNet's conversion raises; a VAE or
    text encoder that fails is left to PyTorch (``OpenVinoModel.failed`` says which and why)."""
    report = on_progress or (lambda pct: None)
    vae = pipe.vae if vae is None else vae
    t0 = time.perf_counter()
    unet_path = cache_root() / part_key(identity, "unet", pipe.unet) / "unet.xml"
    vae_dir = cache_root() / part_key(identity, "vae", vae)
    rows = own_vocabulary(pipe.tokenizer, pipe.text_encoder)
    text_path = cache_root() / part_key(identity, "text", pipe.text_encoder, vocab_size=rows) / "text_encoder.xml"
    converted: list[str] = []
    failed: dict[str, str] = {}

    def compiled(path: Path):
        return compile_ir(path, precision), path.with_suffix(".bin").stat().st_size

    def made(name: str, path: Path, convert: Callable[[], None], percent: int, build: Callable[[], Any],
             required: bool = False):
        try:
            if not path.is_file() or (name == "VAE" and not (path.parent / "vae_decoder.xml").is_file()):
                report(percent)
                convert()
                converted.append(name)
            return build()
        except Exception as e:  # noqa: BLE001 - a part that fails stays on PyTorch (the UNet: the caller decides)
            if required:
                raise
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log.warning("OpenVINO conversion of the %s failed (%s); it runs on PyTorch", name, failed[name])
            return None

    def unet_part():
        compiled_unet, n = compiled(unet_path)
        return OpenVinoUnet(compiled_unet, pipe.unet, n)

    def vae_parts():
        part = _part_class()
        (dec, n_dec), (enc, n_enc) = compiled(vae_dir / "vae_decoder.xml"), compiled(vae_dir / "vae_encoder.xml")
        return part(dec, vae.decoder, n_dec), part(enc, vae.encoder, n_enc)

    def text_part():
        text, n = compiled(text_path)
        return _text_class()(text, pipe.text_encoder, rows, n)

    unet = made("UNet", unet_path, lambda: convert_unet(pipe.unet, unet_path), 5, unet_part, required=True)
    vae_pair = made("VAE", vae_dir / "vae_encoder.xml", lambda: convert_vae(vae, vae_dir), 60, vae_parts) or (None, None)
    text = made("text encoder", text_path, lambda: convert_text_encoder(pipe.text_encoder, rows, text_path), 80, text_part)
    model = OpenVinoModel(unet=unet, decoder=vae_pair[0], encoder=vae_pair[1], text_encoder=text, vae=vae,
                          precision=_precision_of(unet.compiled), failed=failed)
    if converted:  # a later start only reads and compiles the IRs: no "once" message then
        report(100)
    log.info("OpenVINO parts of %s: %s in %.1fs", identity[:16], f"converted {', '.join(converted)}" if converted
             else "loaded from the cache", time.perf_counter() - t0)
    return model


@contextlib.contextmanager
def swapped(pipe, model: Optional[OpenVinoModel]):
    """``pipe`` calls ``model``'s parts for the duration (the pipeline's config and its other views
    untouched); the VAE's parts only while ``pipe``'s VAE is the one they were converted from."""
    if model is None:
        yield
        return
    before = {name: pipe.__dict__.get(name) for name in ("unet", "text_encoder")}
    pipe.__dict__["unet"] = model.unet
    if model.text_encoder is not None:
        pipe.__dict__["text_encoder"] = model.text_encoder
    vae = getattr(pipe, "vae", None)
    own_vae = vae is model.vae and model.decoder is not None
    if own_vae:
        vae._modules["decoder"], vae._modules["encoder"] = model.decoder, model.encoder
    try:
        yield
    finally:
        pipe.__dict__.update(before)
        if own_vae:
            vae._modules["decoder"], vae._modules["encoder"] = model.decoder.torch_module, model.encoder.torch_module
