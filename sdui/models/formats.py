"""Decide a checkpoint's format from its bytes and read it without ever running code.

- safetensors: an 8-byte little-endian header length, then a JSON header. We check the length
  against the file size before reading it, so a header claiming terabytes cannot exhaust memory.
- PyTorch pickles (zip-based ``.ckpt``/``.pt``/``.bin`` and the legacy pickle stream) are read only
  with ``torch.load(weights_only=True)``: torch's restricted unpickler refuses anything but tensors
  and plain containers. There is no fallback to unsafe loading anywhere in sdui.

The extension is never trusted: a safetensors file named ``.ckpt`` loads as safetensors, and a
pickle named ``.safetensors`` goes through the restricted unpickler.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..types import ModelLoadError

SAFETENSORS = "safetensors"
PICKLE_ZIP = "pickle-zip"
PICKLE = "pickle"
GGUF = "gguf"
DIFFUSERS = "diffusers"
HUB = "hub"
UNKNOWN = "unknown"

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the library's own limit is 100 MB too
_DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def sniff_format(path: str | os.PathLike) -> str:
    """The format of ``path`` judged from its first bytes (or ``model_index.json`` for a folder)."""
    p = Path(path)
    if p.is_dir():
        return DIFFUSERS if (p / "model_index.json").is_file() else UNKNOWN
    with open(p, "rb") as f:
        head = f.read(16)
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and n > 1:
            return SAFETENSORS
    if head[:4] == b"PK\x03\x04":
        return PICKLE_ZIP
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return PICKLE
    if head[:4] == b"GGUF":
        return GGUF
    return UNKNOWN


@dataclass
class TensorInfo:
    shape: tuple
    dtype: str


def read_safetensors_header(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Keys, shapes and dtypes from a safetensors header, validated against the file size."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ModelLoadError(f"{path}: truncated safetensors file (no header)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_SAFETENSORS_HEADER or n > size - 8:
            raise ModelLoadError(
                f"{path}: corrupt safetensors header: it claims {n} bytes but the file has {size} bytes "
                f"(header limit {MAX_SAFETENSORS_HEADER})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_size = size - 8 - n
    out: dict[str, TensorInfo] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            shape = tuple(int(d) for d in info["shape"])
            dtype = info["dtype"]
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(f"{path}: corrupt safetensors header entry for {key!r}") from None
        if end > data_size or begin > end:
            raise ModelLoadError(
                f"{path}: truncated safetensors file: tensor {key!r} ends at byte {end} of the data, "
                f"but only {data_size} bytes are present")
        out[key] = TensorInfo(shape, dtype)
    return out


def load_state_dict(path: str | os.PathLike, fmt: str | None = None):
    """Every tensor of a single-file checkpoint, on the CPU, read safely.

    Raises ModelLoadError naming the file and the reason (truncated, corrupt, unsafe, not a model).
    """
    import torch

    path = str(path)
    fmt = fmt or sniff_format(path)
    if fmt == SAFETENSORS:
        read_safetensors_header(path)  # size checks before the library maps the file
        from safetensors.torch import load_file

        try:
            sd = load_file(path, device="cpu")
        except Exception as e:  # safetensors raises its own SafetensorError
            raise ModelLoadError(f"{path}: unreadable safetensors file ({e})") from None
    elif fmt in (PICKLE_ZIP, PICKLE):
        if fmt == PICKLE_ZIP and not zipfile.is_zipfile(path):
            raise ModelLoadError(f"{path}: truncated or corrupt checkpoint (broken zip archive)")
        # torch.load picks safetensors by a ".safetensors" name; a pickle so named goes in as a file
        # object (no mmap then) so the bytes, not the name, decide.
        by_name = path.lower().endswith(".safetensors")
        try:
            if by_name:
                with open(path, "rb") as f:
                    sd = torch.load(f, map_location="cpu", weights_only=True)
            else:
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=(fmt == PICKLE_ZIP))
        except pickle.UnpicklingError as e:
            # torch's message goes on to explain how to load unsafely; keep only what was refused
            found = [ln.strip() for ln in str(e).splitlines() if "Unsupported" in ln or "GLOBAL" in ln]
            what = re.sub(r"\x1b\[[0-9;]*m", "", found[0]).split(" was not an allowed")[0] if found else "unsupported content"
            raise ModelLoadError(
                f"{path}: refused to load: the pickle contains objects other than tensors, which could run "
                f"code ({what}). Use a .safetensors version of this model.") from None
        except (EOFError, zipfile.BadZipFile, struct.error) as e:
            raise ModelLoadError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {e})") from None
        except RuntimeError as e:
            raise ModelLoadError(f"{path}: truncated or corrupt checkpoint ({str(e)[:300]})") from None
    elif fmt == GGUF:
        raise ModelLoadError(f"{path}: GGUF checkpoints are not supported; use .safetensors or .ckpt")
    else:
        raise ModelLoadError(f"{path}: not a model file (neither safetensors nor a PyTorch checkpoint)")
    return unwrap_state_dict(sd, path)


def unwrap_state_dict(sd, path: str = "checkpoint"):
    import torch

    while isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{path}: not a model file (it holds a {type(sd).__name__}, not a dict of tensors)")
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(f"{path}: not a model file (no tensors in it)")
    return tensors


def tensor_shapes(path: str | os.PathLike, fmt: str | None = None) -> dict[str, tuple]:
    """Key -> shape without reading the weights where the format allows (safetensors)."""
    fmt = fmt or sniff_format(path)
    if fmt == SAFETENSORS:
        return {k: v.shape for k, v in read_safetensors_header(path).items()}
    sd = load_state_dict(path, fmt)
    return {k: tuple(v.shape) for k, v in sd.items()}


class CheckpointSource:
    """A single-file checkpoint read one component at a time.

    safetensors: keys and shapes come from the header; ``take(prefixes)`` reads only the tensors
    under those prefixes, so loading never holds the whole file and the built model at once
    (peak memory ~ model + its largest component, not model + file). Pickles are read whole, safely,
    once (zip pickles memory-mapped).
    """

    def __init__(self, path: str | os.PathLike, fmt: str | None = None):
        self.path = str(path)
        self.format = fmt if fmt and fmt != UNKNOWN else sniff_format(path)
        self._sd = None
        if self.format == SAFETENSORS:
            self._shapes = {k: v.shape for k, v in read_safetensors_header(self.path).items()}
        else:
            self._sd = load_state_dict(self.path, self.format)
            self._shapes = {k: tuple(v.shape) for k, v in self._sd.items()}

    def shapes(self) -> dict[str, tuple]:
        return dict(self._shapes)

    def keys(self):
        return self._shapes.keys()

    def take(self, prefixes: tuple[str, ...] | None = None, dtype=None) -> dict:
        """The tensors whose keys start with one of ``prefixes`` (all of them for None), floating
        ones cast to ``dtype`` tensor by tensor, so a file's fp16 copy and the model's fp32 copy are
        never both in memory (the model then takes these tensors as its parameters, no copy)."""
        wanted = [k for k in self._shapes if prefixes is None or k.startswith(prefixes)]

        def cast(t):
            return t.to(dtype) if dtype is not None and t.is_floating_point() and t.dtype != dtype else t

        if self._sd is not None:
            return {k: cast(self._sd[k]) for k in wanted}
        from safetensors import safe_open

        try:
            with safe_open(self.path, framework="pt", device="cpu") as f:
                return {k: cast(f.get_tensor(k)) for k in wanted}
        except Exception as e:  # safetensors raises its own SafetensorError
            raise ModelLoadError(f"{self.path}: unreadable safetensors file ({e})") from None

    def close(self) -> None:
        self._sd = None
