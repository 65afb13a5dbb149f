"""Fetch the default checkpoint from the Hugging Face Hub, for a first start with no model.

The file is streamed into ``<name>.part`` beside its final place, hashed while it arrives,
checked (the SHA-256 the hub announces for the file, then the safetensors header against the
size) and only then renamed into ``models/Stable-diffusion/``: a cut connection, a wrong file or a
full disk never leaves a half-written checkpoint where the model list would find it.
``HF_ENDPOINT`` points at a mirror (or, in the tests, at a local fake hub); ``HF_HUB_OFFLINE=1``
means the hub is never contacted.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import formats
from .registry import hub_offline
from ..types import ModelLoadError

CHUNK = 1 << 20


@dataclass(frozen=True)
class HubFile:
    repo: str
    filename: str
    label: str
    approx_bytes: int


# Stable Diffusion 1.5, EMA-only weights, safetensors: the model A1111 and Easy Diffusion start with.
DEFAULT_MODEL = HubFile("stable-diffusion-v1-5/stable-diffusion-v1-5", "v1-5-pruned-emaonly.safetensors",
                        "Stable Diffusion 1.5", 4_265_146_304)

_busy = threading.Lock()  # one download at a time, whoever asks


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def file_url(f: HubFile) -> str:
    return f"{endpoint()}/{f.repo}/resolve/main/{f.filename}"


def hub_reachable(f: Optional[HubFile] = None, timeout: float = 3.0) -> bool:
    """Whether the file (default: DEFAULT_MODEL) can be fetched now (a HEAD request, redirects not followed)."""
    f = f or DEFAULT_MODEL
    if hub_offline():
        return False
    import httpx

    try:
        r = httpx.head(file_url(f), timeout=timeout, follow_redirects=False)
    except (httpx.HTTPError, OSError):
        return False
    return r.status_code in (200, 302, 303, 307, 308)


@dataclass
class DownloadProgress:
    done: int
    total: Optional[int]
    elapsed: float

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def eta(self) -> Optional[float]:
        if not self.total or not self.done:
            return None
        return self.elapsed * (self.total - self.done) / self.done


def download(f: HubFile, folder: str | os.PathLike, on_progress: Optional[Callable[[DownloadProgress], None]] = None,
             cancel: Optional[threading.Event] = None, timeout: float = 30.0) -> Path:
    """Download ``f`` into ``folder`` and return its path; raises ModelLoadError with the reason.
    An existing file of that name is never overwritten."""
    import httpx

    if hub_offline():
        raise ModelLoadError("the hub is not contacted: HF_HUB_OFFLINE is set")
    folder = Path(folder)
    dest = folder / f.filename
    if dest.exists():
        raise ModelLoadError(f"{dest} already exists")
    if not _busy.acquire(blocking=False):
        raise ModelLoadError("a download is already running; wait for it to finish")
    part = folder / (f.filename + ".part")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        t0 = time.monotonic()
        with httpx.stream("GET", file_url(f), follow_redirects=True, timeout=timeout) as r:
            if r.status_code != 200:
                raise ModelLoadError(f"{file_url(f)}: the hub answered HTTP {r.status_code}")
            expected = _announced_sha256(r)
            total = int(r.headers["content-length"]) if r.headers.get("content-length", "").isdigit() else None
            done = 0
            with open(part, "wb") as out:
                for chunk in r.iter_raw(CHUNK):
                    if cancel is not None and cancel.is_set():
                        raise ModelLoadError("download cancelled")
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(DownloadProgress(done, total, time.monotonic() - t0))
                out.flush()
                os.fsync(out.fileno())
        if total is not None and done != total:
            raise ModelLoadError(f"{f.filename}: the connection ended after {done} of {total} bytes")
        if expected and digest.hexdigest() != expected:
            raise ModelLoadError(f"{f.filename}: SHA-256 {digest.hexdigest()[:10]}… differs from the hub's "
                                 f"{expected[:10]}…; the file was discarded")
        if formats.sniff_format(part) != formats.SAFETENSORS:
            raise ModelLoadError(f"{f.filename}: the download is not a safetensors file; it was discarded")
        formats.read_safetensors_header(part)  # header and size agree, or this raises
        os.replace(part, dest)
        return dest
    except (httpx.HTTPError, OSError) as e:
        raise ModelLoadError(f"{file_url(f)}: download failed ({type(e).__name__}: {e})") from None
    finally:
        part.unlink(missing_ok=True)
        _busy.release()


def _announced_sha256(response) -> Optional[str]:
    """The hub names an LFS file's SHA-256 in ``X-Linked-Etag`` (on the redirect) or ``ETag``."""
    for r in [*response.history, response]:
        for key in ("x-linked-etag", "etag"):
            value = r.headers.get(key, "").strip().strip('"').removeprefix("W/").strip('"')
            if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
                return value
    return None
