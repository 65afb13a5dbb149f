"""LoRA files (A1111's ``models/Lora/``) on a loaded pipeline, through diffusers and peft.

- Identity as A1111 writes it: the "Lora hashes" infotext value is the first 12 hex digits of
  the safetensors header's ``sshs_model_hash`` when present, else of kohya's "addnet" hash
  (SHA-256 of everything after the header) for safetensors and of the whole file for pickles
  (A1111 ``extensions-builtin/Lora/network.py`` NetworkOnDisk, ``modules/hashes.py``).
- Metadata as A1111's ``/sdapi/v1/loras`` lists it (header ``__metadata__``, JSON-looking values
  parsed, cover images dropped).
- Fit: a LoRA made for another architecture (an SDXL LoRA on an SD 1.5 model...) is refused from
  its key names and shapes alone, before any weight is read, naming both architectures.
- Loading: each file once per model as a peft adapter named by its content hash (diffusers
  converts kohya, diffusers and peft key layouts); a job's LoRA set is switched with
  ``set_adapters`` (per-component weights: A1111's text-encoder and UNet multipliers) or
  ``disable_lora``; the checkpoint is never reloaded. peft wraps the UNet's and the text
  encoder's layers in place, so sdui's own prompt encoding (``prompts.encode`` calls
  ``pipe.text_encoder`` directly) goes through the text-encoder LoRA too.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Optional

from . import detect, formats
from .registry import ModelEntry

HASH_CHARS = 12  # A1111's LoRA shorthash (checkpoints use 10)
MAX_CACHED_ADAPTERS = 6  # per model, besides the ones a job uses; LoRAs are 10-300 MB each
# A1111 (network.py) shows these metadata keys first, in this order
_METADATA_ORDER = {"ss_sd_model_name": 1, "ss_resolution": 2, "ss_clip_skip": 3, "ss_num_train_images": 10,
                   "ss_tag_frequency": 20}
_TE_PREFIXES = ("lora_te_", "lora_te1_", "text_encoder.")
_TE2_PREFIXES = ("lora_te2_", "text_encoder_2.")
_DOWN_SUFFIXES = (".lora_down.weight", ".lora_A.weight", ".down.weight")
COMPONENTS_TE = ("text_encoder", "text_encoder_2")


def _stamp(path: str) -> tuple:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns)


# ---- what a file is -------------------------------------------------------------------------------
def read_metadata(path: str) -> dict:
    """The safetensors header's ``__metadata__`` as A1111 returns it (values that hold a JSON object
    are parsed; ``ssmd_cover_images`` dropped; A1111's display order). {} for other formats and for
    a header that cannot be read: metadata is informative, never a reason to refuse a file."""
    try:
        with formats.open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(8)
            if len(raw) < 8:
                return {}
            (n,) = struct.unpack("<Q", raw)
            if n > formats.MAX_SAFETENSORS_HEADER or n > size - 8:
                return {}
            header = json.loads(f.read(n).decode("utf-8"))
    except (OSError, ValueError, RecursionError, formats.ModelLoadError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        return {}
    out = {}
    for key, value in sorted(meta.items(), key=lambda kv: _METADATA_ORDER.get(kv[0], 999)):
        if key == "ssmd_cover_images":
            continue
        if isinstance(value, str) and value[:1] == "{":
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                pass
        out[key] = value
    return out


def addnet_hash(path: str) -> str:
    """kohya's hash of a safetensors file: SHA-256 of the bytes after the header (so editing the
    metadata keeps the hash); A1111 uses it for LoRAs."""
    h = hashlib.sha256()
    with formats.open_regular(path) as f:
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(n + 8)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class LoraFile:
    """What sdui knows of one LoRA file, valid while its size and mtime stay the same."""

    stamp: tuple
    metadata: dict
    content_hash: str = ""  # addnet hash (safetensors) or SHA-256 of the file: names its adapter
    failures: dict = field(default_factory=dict)  # id(pipe) -> why it cannot go on that model (None: any)

    def a1111_hash(self) -> str:
        """A1111's hash of the LoRA (its first HASH_CHARS are the infotext's): the header's
        ``sshs_model_hash`` when given, else the content hash (``LoraState.content_hash`` first)."""
        claimed = self.metadata.get("sshs_model_hash")
        return claimed if isinstance(claimed, str) and claimed else self.content_hash


def fit_problem(shapes: dict[str, tuple], metadata: dict, pipe, model_label: Optional[str]) -> Optional[tuple[str, str]]:
    """``(lora_architecture, model_architecture)`` when the LoRA was made for another architecture
    than ``pipe``'s, else None. Read from key names and shapes: a second text encoder (``lora_te2_``,
    ``text_encoder_2.``) means SDXL; the input width of a cross-attention key/value projection is the
    text-embedding width the UNet was trained with (768 SD 1.x, 1024 SD 2.x, 2048 SDXL); the width of a
    text-encoder projection is the encoder's."""
    lora_xl, lora_ctx, lora_te = _widths(shapes, metadata)
    unet_ctx = pipe.unet.config.cross_attention_dim
    if not isinstance(unet_ctx, int):  # a per-block list: not an SD-family UNet, no width to compare
        unet_ctx, lora_ctx = None, None
    model_xl = getattr(pipe, "text_encoder_2", None) is not None
    te = getattr(pipe, "text_encoder", None)
    model_te = getattr(getattr(te, "config", None), "hidden_size", None)
    if (lora_xl == model_xl and (lora_ctx is None or lora_ctx == unet_ctx)
            and (lora_te is None or model_te is None or lora_te == model_te)):
        return None
    return _label(lora_ctx, lora_te, lora_xl), model_label or _label(unet_ctx, model_te, model_xl, custom=True)


def _widths(shapes: dict[str, tuple], metadata: dict) -> tuple[bool, Optional[int], Optional[int]]:
    """(made for SDXL, cross-attention context width, text-encoder width) of a LoRA, from its keys."""
    lora_xl = any(k.startswith(_TE2_PREFIXES) for k in shapes)
    lora_ctx = lora_te = None
    for key, shape in shapes.items():
        if len(shape) != 2 or not key.endswith(_DOWN_SUFFIXES):
            continue
        if lora_ctx is None and "attn2" in key and ("to_k" in key or "to_v" in key):
            lora_ctx = shape[1]
        if lora_te is None and key.startswith(_TE_PREFIXES) and "q_proj" in key:
            lora_te = shape[1]
    if lora_ctx is None and lora_te is None and not lora_xl:
        base = str(metadata.get("ss_base_model_version", ""))
        lora_xl = base.startswith("sdxl")
    return lora_xl, lora_ctx, lora_te


def family(shapes: dict[str, tuple], metadata: dict) -> Optional[str]:
    """"SD 1.x", "SD 2.x" or "SDXL" for a LoRA, from its keys (as ``fit_problem`` reads them); None
    when they do not say."""
    xl, ctx, te = _widths(shapes, metadata)
    label = _label(ctx, te, xl)
    return label if label in FAMILIES else None


FAMILIES = ("SD 1.x", "SD 2.x", "SDXL")
_CHECKPOINT_FAMILIES = {detect.SD1: "SD 1.x", detect.SD1_INPAINT: "SD 1.x", detect.SD2: "SD 2.x", detect.SD2_V: "SD 2.x",
                        detect.SD2_INPAINT: "SD 2.x", detect.SDXL: "SDXL"}


def checkpoint_family(architecture) -> Optional[str]:
    """The LoRA family a checkpoint architecture takes; None for custom and unknown ones."""
    return _CHECKPOINT_FAMILIES.get(architecture)


def _label(ctx: Optional[int], te: Optional[int], xl: bool, custom: bool = False) -> str:
    """SDXL, SD 1.x or SD 2.x from the widths (cross-attention context, else text encoder), or the widths."""
    if xl or ctx == 2048:
        return "SDXL"
    width = ctx if ctx is not None else te  # SD 1.x: 768 both (CLIP-L); SD 2.x: 1024 both (OpenCLIP-H)
    if width in (768, 1024):
        return "SD 1.x" if width == 768 else "SD 2.x"
    what = "a custom model" if custom else "a model"
    if ctx is not None:
        return f"{what} with {ctx}-wide cross-attention"
    return f"{what} with a {te}-wide text encoder" if te is not None else "an unknown architecture"


def model_label(architecture) -> Optional[str]:
    """A checkpoint architecture's name for messages (None for custom and unknown ones)."""
    return detect.ARCH_LABELS.get(architecture) if architecture in detect.CHECKPOINT_ARCHS else None


# ---- a pipeline's adapters ------------------------------------------------------------------------
def peft_available() -> bool:
    from diffusers.utils import USE_PEFT_BACKEND

    return bool(USE_PEFT_BACKEND)


def can_take_loras(pipe) -> bool:
    """An SD pipeline with diffusers' LoRA loader, and peft installed (diffusers needs it)."""
    return hasattr(pipe, "load_lora_weights") and hasattr(pipe, "set_adapters") and peft_available()


def adapter_name(sha256: str) -> str:
    """Adapters are named by the file's content, so a changed file is a new adapter (peft names
    cannot hold ".")."""
    return f"lora_{sha256[:16]}"


def adapters_on(pipe) -> dict[str, list[str]]:
    """Adapter name -> the components (unet, text_encoder...) that hold it."""
    if not can_take_loras(pipe):
        return {}
    out: dict[str, list[str]] = {}
    for component, names in pipe.get_list_adapters().items():
        for name in names:
            out.setdefault(name, []).append(component)
    return out


def load_adapter(pipe, state_dict: dict, name: str) -> list[str]:
    """Add ``state_dict`` (any layout diffusers converts) to ``pipe`` as adapter ``name``; returns
    the components that took it. On failure nothing of it is left on the pipeline."""
    try:
        with _quietly():
            # low_cpu_mem_usage=False: peft makes the LoRA layers on each wrapped layer's device and in
            # its dtype and copies the file's tensors into them (assigning would keep the file's device
            # and dtype, a CPU fp16 tensor beside a CUDA fp32 layer)
            pipe.load_lora_weights(state_dict, adapter_name=name, low_cpu_mem_usage=False)
    except BaseException:
        delete_adapter(pipe, name)
        raise
    return adapters_on(pipe).get(name, [])


@contextmanager
def _quietly():
    """While an adapter loads: transformers draws a progress bar and logs a "LOAD REPORT" calling
    the other adapters' weights missing, diffusers warns when a LoRA has no text-encoder part, peft
    when a model gets a second adapter. All expected here; a server's console should not fill up."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    shown, t_level, d_level = tlog.is_progress_bar_enabled(), tlog.get_verbosity(), dlog.get_verbosity()
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
    dlog.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            yield
    finally:
        tlog.set_verbosity(t_level)
        dlog.set_verbosity(d_level)
        if shown:
            tlog.enable_progress_bar()


def delete_adapter(pipe, name: str) -> None:
    if name in adapters_on(pipe):
        pipe.delete_adapters([name])


def activate(pipe, weights: "OrderedDict[str, tuple[float, float]]") -> None:
    """Make exactly these adapters active: name -> (text-encoder weight, UNet weight); none: every
    LoRA layer off, so the pipeline computes exactly what it did before any LoRA was loaded."""
    held = adapters_on(pipe)
    if not held:
        return
    if not weights:
        pipe.disable_lora()
        return
    pipe.enable_lora()
    per_adapter = []
    for name, (te, unet) in weights.items():
        per_adapter.append({c: (unet if c == "unet" else te) for c in held.get(name, []) if c == "unet" or c in COMPONENTS_TE})
    pipe.set_adapters(list(weights), adapter_weights=per_adapter)


@dataclass
class LoraState:
    """The model manager's LoRA bookkeeping: per file what was learned (hash, metadata, a load
    failure), per model its adapters, least recently used first."""

    files: dict[str, LoraFile] = field(default_factory=dict)  # path -> what is known of it (this version)
    adapters: dict[int, "OrderedDict[str, str]"] = field(default_factory=dict)  # id(pipe) -> adapter -> path

    def file(self, entry: ModelEntry) -> LoraFile:
        stamp = _stamp(entry.path)
        known = self.files.get(entry.path)
        if known is None or known.stamp != stamp:
            is_safetensors = entry.format == formats.SAFETENSORS
            known = LoraFile(stamp=stamp, metadata=read_metadata(entry.path) if is_safetensors else {})
            self.files[entry.path] = known
        return known

    def content_hash(self, entry: ModelEntry, whole_file_sha256) -> str:
        """kohya's addnet hash of a safetensors LoRA, ``whole_file_sha256(path)`` of a pickle (the
        manager's disk-cached one), as A1111 hashes them; computed once per file version."""
        known = self.file(entry)
        if not known.content_hash:
            is_safetensors = entry.format == formats.SAFETENSORS
            known.content_hash = addnet_hash(entry.path) if is_safetensors else whole_file_sha256(entry.path)
        return known.content_hash

    def failure(self, entry: ModelEntry, pipe) -> Optional[str]:
        """Why this version of the file could not be loaded into ``pipe`` (or into any model); tried
        again once the file changes."""
        failures = self.file(entry).failures
        return failures.get(None) or failures.get(id(pipe))

    def fail(self, entry: ModelEntry, pipe, reason: str) -> None:
        """Remember a failure: for every model when ``pipe`` is None (the file cannot be read)."""
        self.file(entry).failures[None if pipe is None else id(pipe)] = reason

    def order(self, pipe) -> "OrderedDict[str, str]":
        """This pipeline's adapters (LRU first), pruned to those it really holds."""
        held = adapters_on(pipe)
        mine = self.adapters.setdefault(id(pipe), OrderedDict())
        for name in [n for n in mine if n not in held]:
            del mine[name]
        for name in held:
            mine.setdefault(name, "")
        return mine


def describe(entry: ModelEntry, known: LoraFile) -> dict[str, Any]:
    """A1111's ``/sdapi/v1/loras`` item: name, alias (``ss_output_name``), path, metadata."""
    alias = known.metadata.get("ss_output_name")
    return {"name": entry.name, "alias": alias if isinstance(alias, str) and alias else entry.name, "path": entry.path,
            "metadata": known.metadata}
