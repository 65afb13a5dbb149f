"""Decide a checkpoint's format from its bytes and read it without ever running code.

- safetensors: an 8-byte little-endian header length, then a JSON header. We check the length
  against the file size before reading it, so a header claiming terabytes cannot exhaust memory.
- PyTorch pickles (zip-based ``.ckpt``/``.pt``/``.bin`` and the legacy pickle stream) are read only
  with ``torch.load(weights_only=True)``: torch's restricted unpickler refuses anything but tensors
  and plain containers. There is no fallback to unsafe loading anywhere in sdui. Listing checks
  pickles earlier, by reading their opcodes without unpickling them (``picklescan``).
- Only regular files are opened (``open_regular``): a FIFO named ``model.ckpt`` would block forever.

The extension is never trusted: a safetensors file named ``.ckpt`` loads as safetensors, and a
pickle named ``.safetensors`` goes through the restricted unpickler.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pickle
import re
import stat
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
MAX_RANK = 64  # torch's own limit on tensor dimensions
MAX_DIM = 2**63 - 1  # the library reads dimensions as 64-bit unsigned, torch as 64-bit signed
# Bits per element of every dtype the safetensors library knows (F4/F6 pack several per byte).
_DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
               "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
               "C64": 64, "F64": 64, "I64": 64, "U64": 64}
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for error messages."""
    return next((what for test, what in _FILE_KINDS if test(mode)), "not a plain file")


def open_regular(path: str | os.PathLike):
    """``open(path, "rb")`` that refuses anything but a regular file.

    Opened non-blocking and checked on the open descriptor: a FIFO would block the open (and the
    whole listing) forever, and checking the name first would leave a window to swap the file.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ModelLoadError(f"{path}: not a regular file ({file_kind(mode)})")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sniff_format(path: str | os.PathLike) -> str:
    """The format of ``path`` judged from its first bytes (or ``model_index.json`` for a folder).

    Anything but a folder or a regular file (FIFO, socket, device) is UNKNOWN and never read.
    """
    p = Path(path)
    if p.is_dir():
        return DIFFUSERS if (p / "model_index.json").is_file() else UNKNOWN
    if not p.is_file():
        return UNKNOWN
    try:
        with open_regular(p) as f:
            head = f.read(16)
    except ModelLoadError:  # swapped for a FIFO or the like since the check above
        return UNKNOWN
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
    """Keys, shapes and dtypes from a safetensors header, validated as the safetensors library
    would before it maps the file, so that a file passing here also loads."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(8)
        if len(raw) < 8:
            raise ModelLoadError(f"{path}: truncated safetensors file (no header)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_SAFETENSORS_HEADER or n > size - 8:
            raise ModelLoadError(
                f"{path}: corrupt safetensors header: it claims {n} bytes but the file has {size} bytes "
                f"(header limit {MAX_SAFETENSORS_HEADER})")
        header = _parse_header(path, f.read(n))
    return _check_tensors(path, header, data_size=size - 8 - n)


def _parse_header(path, raw: bytes) -> dict:
    """The header's JSON object, its ``__metadata__`` removed after checking it."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError as e:  # bad UTF-8, bad JSON, or an integer of more digits than int() accepts
        raise ModelLoadError(f"{path}: corrupt safetensors header ({str(e)[:200]})") from None
    except RecursionError:  # json.loads recurses once per level; a valid header nests 3 deep
        raise ModelLoadError(f"{path}: corrupt safetensors header (nested {json_depth(raw)} levels deep)") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: corrupt safetensors header (not a JSON object)")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelLoadError(f"{path}: corrupt safetensors header (__metadata__ is not a map of strings)")
    return header


_JSON_STRING = re.compile(rb'"[^"]*"?')  # after escapes are dropped; an unclosed one runs to the end
_DEPTH_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")  # +1 / -1 as signed bytes
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes) -> int:
    """The deepest bracket nesting in a JSON text, brackets inside strings not counted."""
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")  # escapes pair up left to right, as JSON reads them
    steps = _JSON_STRING.sub(b"", text).translate(_DEPTH_STEPS, _NOT_BRACKETS)
    return max(itertools.accumulate(memoryview(steps).cast("b")), default=0)


def _check_tensors(path, header: dict, data_size: int) -> dict[str, TensorInfo]:
    """Each entry's dtype, shape and offsets checked, then the offsets checked to tile the data
    exactly, in order, as the library requires (it refuses gaps, overlaps and trailing bytes)."""
    out: dict[str, TensorInfo] = {}
    spans = []
    for key, info in header.items():
        problem = _entry_problem(info)
        if problem:
            raise ModelLoadError(f"{path}: corrupt safetensors header entry for {key!r} ({problem})")
        begin, end = info["data_offsets"]
        if end > data_size:
            raise ModelLoadError(
                f"{path}: truncated safetensors file: tensor {key!r} ends at byte {end} of the data, "
                f"but only {data_size} bytes are present")
        spans.append((begin, end, key))
        out[key] = TensorInfo(tuple(info["shape"]), info["dtype"])
    covered = 0
    for begin, end, key in sorted(spans):
        if begin != covered:
            raise ModelLoadError(f"{path}: corrupt safetensors header: tensor {key!r} starts at byte {begin} "
                                 f"of the data, but the tensor before it ends at byte {covered}")
        covered = end
    if covered != data_size:
        raise ModelLoadError(f"{path}: corrupt safetensors file: the tensors cover {covered} bytes of data, "
                             f"but the file holds {data_size}")
    return out


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _entry_problem(info) -> str | None:
    """What is wrong with one tensor's header entry, in words, or None."""
    if not isinstance(info, dict):
        return "not a JSON object"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPE_BITS:
        return f"unknown dtype {str(dtype)[:40]!r}"
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_int(d) and 0 <= d <= MAX_DIM for d in shape):
        return f"shape must be a list of at most {MAX_RANK} whole numbers from 0 to 2**63-1"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        return "data_offsets must be two whole numbers"
    begin, end = offsets
    if not 0 <= begin <= end:
        return f"data_offsets [{begin}, {end}] do not make a byte range"
    if math.prod(shape) * _DTYPE_BITS[dtype] != 8 * (end - begin):  # shape is bounded above, so prod is cheap
        return f"shape {str(shape)[:80]} of {dtype} does not fill its {end - begin} bytes"
    return None


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
