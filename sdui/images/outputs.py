"""Outputs: atomic PNG saves in A1111's folder layout and numbering, and clean-up of the
temporaries a killed run left behind."""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from datetime import date
from pathlib import Path
from typing import Optional

from PIL import Image

from ..types import DiskFull
from .infotext import png_text

_save_lock = threading.Lock()
_NUMBERED = re.compile(r"^(\d{5})-")


def output_folder(outputs_dir: str, mode: str, day: date | None = None, grid: bool = False) -> Path:
    """A1111's folders: ``txt2img-images/<date>/`` etc. for images, and for grids (an X/Y/Z plot's)
    ``txt2img-grids/<date>/`` or ``img2img-grids/<date>/`` (its ``outdir_*_grids`` with "Save grids to
    a subdirectory" on, its default)."""
    if grid:
        sub = {"txt2img": "txt2img-grids", "img2img": "img2img-grids", "inpaint": "img2img-grids"}[mode]
    else:
        sub = {"txt2img": "txt2img-images", "img2img": "img2img-images", "inpaint": "img2img-images",
               "upscale": "extras-images"}[mode]
    return Path(outputs_dir) / sub / (day or date.today()).isoformat()


_TEMPORARY = re.compile(r"^\.tmp-(\d+)-\d+-\d+\.(?:png|jpg|webp)$")  # save_image's own naming, nothing else
STALE_TEMPORARY_SECONDS = 3600
FORMATS = ("png", "jpg", "webp")  # A1111's samples_format values sdui writes
JPEG_WEBP_QUALITY = 80  # A1111's jpeg_quality default


def save_png(img: Image.Image, folder: Path, seed: Optional[int], infotext: Optional[str]) -> Path:
    return save_image(img, folder, seed, infotext, "png")


def save_image(img: Image.Image, folder: Path, seed: Optional[int | str], infotext: Optional[str],
               fmt: str = "png") -> Path:
    """Atomically save as ``NNNNN-<seed>.<fmt>`` (A1111 numbering): temporary file, fsync, then a hard
    link to the final name, which fails instead of overwriting if another job took the number.
    PNG keeps the infotext in its ``parameters`` chunk; JPEG and WebP in EXIF UserComment, as A1111
    writes them. Whatever fails (a full disk mid-write included), no temporary or partial file is
    left behind; a full disk raises DiskFull. (PIL keeps encoder state on the Image object, so one
    object must not be saved by two threads at once; every job makes its own images.)"""
    if fmt not in FORMATS:
        raise ValueError(f"image format {fmt!r}: one of {', '.join(FORMATS)}")
    tmp = folder / f".tmp-{os.getpid()}-{threading.get_ident()}-{id(img)}.{fmt}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            _write(img, f, fmt, infotext)
            f.flush()
            os.fsync(f.fileno())
        final = _claim_number(tmp, folder, seed)
        _fsync_dir(folder)
        return final
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull("The disk is full: image not saved") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _write(img: Image.Image, f, fmt: str, infotext: Optional[str]) -> None:
    if fmt == "png":
        img.save(f, format="PNG", pnginfo=png_text(infotext))
        return
    exif = Image.Exif()
    if infotext:  # EXIF UserComment in the Exif IFD, UTF-16 with the UNICODE marker, as A1111 (piexif) writes it
        exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + infotext.encode("utf-16-be")
    img.convert("RGB").save(f, format="JPEG" if fmt == "jpg" else "WEBP", quality=JPEG_WEBP_QUALITY, exif=exif.tobytes())


def _claim_number(tmp: Path, folder: Path, seed: Optional[int | str]) -> Path:
    """Give ``tmp`` the next free ``NNNNN-seed.png`` name without ever overwriting a file."""
    suffix = f"-{seed}" if seed is not None else ""
    with _save_lock:
        numbers = [int(m.group(1)) for p in os.listdir(folder) if (m := _NUMBERED.match(p))]
        n = max(numbers, default=-1) + 1
        while True:
            final = folder / f"{n:05d}{suffix}{tmp.suffix}"
            try:
                os.link(tmp, final)
                return final
            except FileExistsError:
                n += 1
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                # file systems without hard links: claim the name exclusively, then replace it
                try:
                    os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    n += 1
                    continue
                try:
                    os.replace(tmp, final)
                except OSError:
                    final.unlink(missing_ok=True)  # never leave the empty placeholder
                    raise
                return final


def clean_stale_temporaries(outputs_dir: str | os.PathLike, max_age: float = STALE_TEMPORARY_SECONDS) -> int:
    """Delete ``save_png`` temporaries that a killed process left in the outputs folder (only that
    naming pattern, only inside ``outputs_dir``): those of a process that is gone, or older than
    ``max_age`` seconds. Returns how many were removed."""
    root = Path(outputs_dir)
    if not root.is_dir():
        return 0
    removed = 0
    now = time.time()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            m = _TEMPORARY.match(name)
            if not m:
                continue
            path = Path(dirpath) / name
            try:
                stale = not _process_alive(int(m.group(1))) or now - path.lstat().st_mtime > max_age
                if stale and path.is_file() and not path.is_symlink():
                    path.unlink()
                    removed += 1
            except OSError:
                continue
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
