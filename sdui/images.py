"""Images in and out: decode and check uploads, A1111 infotext (write and parse), the invisible
watermark, and atomic saves in A1111's folder layout."""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import re
import threading
import time
from datetime import date
from pathlib import Path
from typing import Optional

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .types import DiskFull, InvalidRequest

MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


# ---- uploads ------------------------------------------------------------------------------------
def decode_image(data, field_name: str = "image", mode: str = "RGB") -> Image.Image:
    """A PIL image from bytes, a ``Path``, base64 text / data URL, or a PIL image; clear errors otherwise."""
    if isinstance(data, Image.Image):
        img = data
    else:
        if isinstance(data, str):
            text = data.strip()
            if text.startswith("data:"):
                text = text.split(",", 1)[-1]
            # text is base64 only, never a path: strings come from API clients, and a path would let
            # a client read images on the server (other users' outputs included)
            try:
                raw = base64.b64decode(text, validate=False)
            except (ValueError, TypeError):
                raise InvalidRequest(field_name, "<text>", "a PNG/JPEG/WebP image as base64 or a data URL") from None
        elif isinstance(data, (bytes, bytearray)):
            raw = bytes(data)
        elif isinstance(data, os.PathLike):
            raw = Path(data).read_bytes()
        else:
            raise InvalidRequest(field_name, type(data).__name__, "an image")
        if len(raw) > MAX_UPLOAD_BYTES:
            raise InvalidRequest(field_name, f"<{len(raw)} bytes>", f"at most {MAX_UPLOAD_BYTES // 2**20} MB")
        try:
            img = Image.open(io.BytesIO(raw))
            if img.width * img.height > MAX_UPLOAD_PIXELS:
                raise InvalidRequest(field_name, f"{img.width}x{img.height}", f"at most {MAX_UPLOAD_PIXELS} pixels")
            img.load()
        except InvalidRequest:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise InvalidRequest(field_name, "<data>", f"a readable PNG/JPEG/WebP image ({type(e).__name__})") from None
    if mode and img.mode != mode:
        if mode == "RGB" and img.mode in ("RGBA", "LA", "P"):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba).convert("RGB")
        else:
            img = img.convert(mode)
    return img


def encode_png_base64(img: Image.Image, infotext: Optional[str] = None) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=_pnginfo(infotext))
    return base64.b64encode(buf.getvalue()).decode("ascii")


def resize_for_request(img: Image.Image, width: int, height: int, resize_mode: str = "Just resize") -> Image.Image:
    """A1111's resize modes: "Just resize" stretches, "Crop and resize" fills then centre-crops,
    "Resize and fill" fits inside and fills the bars by stretching the edges."""
    if img.size == (width, height):
        return img
    if resize_mode == "Crop and resize":
        scale = max(width / img.width, height / img.height)
        w, h = round(img.width * scale), round(img.height * scale)
        r = img.resize((w, h), Image.LANCZOS)
        left, top = (w - width) // 2, (h - height) // 2
        return r.crop((left, top, left + width, top + height))
    if resize_mode == "Resize and fill":
        scale = min(width / img.width, height / img.height)
        w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
        r = img.resize((w, h), Image.LANCZOS)
        canvas = img.resize((width, height), Image.LANCZOS)  # stretched background instead of black bars
        canvas.paste(r, ((width - w) // 2, (height - h) // 2))
        return canvas
    return img.resize((width, height), Image.LANCZOS)


# ---- infotext ------------------------------------------------------------------------------------
def quote(value) -> str:
    """A1111's rule: a value containing ``,`` ``:`` or a newline is written as a JSON string."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _num(x) -> str:
    """7.0 -> "7", 7.5 -> "7.5" (as A1111 prints CFG scale and strengths)."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def build_infotext(prompt: str, negative_prompt: str, params: dict) -> str:
    """``prompt`` / ``Negative prompt: ...`` / ``Key: value, ...`` with None values left out."""
    fields = ", ".join(f"{k}: {quote(_num(v))}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{fields}".strip()


_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_infotext(text: str) -> dict:
    """A1111 infotext -> ``{"Prompt", "Negative prompt", "Steps", ..., "Size-1", "Size-2"}``.

    Reads what A1111 writes: multi-line prompts, a multi-line negative prompt, quoted values.
    The last line is the parameter line only when it holds at least three ``key: value`` pairs.
    """
    res: dict = {}
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    res["Prompt"] = "\n".join(prompt_lines)
    res["Negative prompt"] = "\n".join(negative_lines)
    for key, value in _PARAM.findall(last):
        value = unquote(value.strip()) if value.strip().startswith('"') else value.strip()
        m = _SIZE.match(value)
        if m:
            res[f"{key}-1"], res[f"{key}-2"] = m.group(1), m.group(2)
        res[key] = value
    # old A1111 files: "Sampler: DPM++ 2M Karras" means Schedule type Karras
    return res


def infotext_to_request_fields(params: dict) -> dict:
    """Parsed infotext -> GenerationRequest keyword arguments (only the fields it names)."""
    out: dict = {"prompt": params.get("Prompt", ""), "negative_prompt": params.get("Negative prompt", "")}
    conv = {"Steps": ("steps", int), "Sampler": ("sampler", str), "Schedule type": ("scheduler", str),
            "CFG scale": ("cfg_scale", float), "Seed": ("seed", int), "Denoising strength": ("denoising_strength", float),
            "Mask blur": ("mask_blur", int), "Noise level": ("noise_level", int)}
    for key, (name, typ) in conv.items():
        if key in params:
            try:
                out[name] = typ(params[key])
            except ValueError:
                pass
    if "Size-1" in params:
        out["width"], out["height"] = int(params["Size-1"]), int(params["Size-2"])
    if "Model" in params or "Model hash" in params:
        out["model_hint"] = {"name": params.get("Model"), "hash": params.get("Model hash")}
    return out


def read_infotext(img_or_path) -> Optional[str]:
    img = img_or_path if isinstance(img_or_path, Image.Image) else Image.open(img_or_path)
    text = img.info.get("parameters")
    if text is None and "exif" in img.info:  # A1111 JPEG/WebP: EXIF UserComment
        try:
            exif = img.getexif().get_ifd(0x8769)
            comment = exif.get(0x9286)
            if isinstance(comment, bytes):
                text = comment[8:].decode("utf-16-be" if comment[:8] == b"UNICODE\0" else "utf-8", "ignore")
        except (KeyError, ValueError, AttributeError):
            text = None
    return text


# ---- watermark -----------------------------------------------------------------------------------
WATERMARKS = {"sd1": "StableDiffusionV1", "sd2": "SDV2"}
WATERMARK_MIN_SIZE = 256


def watermark_text_for(architecture: str) -> str:
    return WATERMARKS["sd2"] if architecture.startswith("sd2") or architecture == "x4-upscaler" else WATERMARKS["sd1"]


def can_watermark(img: Image.Image) -> bool:
    return min(img.size) >= WATERMARK_MIN_SIZE


def add_watermark(img: Image.Image, text: str) -> Image.Image:
    """Embed ``text`` with invisible-watermark's dwtDct method, as Stability's scripts do."""
    import numpy as np
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", text.encode("utf-8"))
    bgr = np.ascontiguousarray(np.array(img.convert("RGB"))[:, :, ::-1])
    marked = encoder.encode(bgr, "dwtDct")
    return Image.fromarray(np.ascontiguousarray(marked[:, :, ::-1]))


def _bits(data: bytes) -> list[int]:
    return [(byte >> (7 - i)) & 1 for byte in data for i in range(8)]


def verify_watermark(img: Image.Image) -> dict:
    """``{"payload", "score", "present"}``: the best-matching known payload and the fraction of its
    bits found. dwtDct decoding has bit errors, so we score bits instead of comparing strings;
    a fresh output scores >= 0.9, an unmarked image about 0.5."""
    import numpy as np
    from imwatermark import WatermarkDecoder

    if not can_watermark(img):
        return {"payload": None, "score": 0.0, "present": False, "reason": f"smaller than {WATERMARK_MIN_SIZE}px"}
    bgr = np.ascontiguousarray(np.array(img.convert("RGB"))[:, :, ::-1])
    best = {"payload": None, "score": 0.0}
    for text in WATERMARKS.values():
        expected = _bits(text.encode("utf-8"))
        found = WatermarkDecoder("bits", len(expected)).decode(bgr, "dwtDct")
        score = float(np.mean([int(a) == b for a, b in zip(found, expected)]))
        if score > best["score"]:
            best = {"payload": text, "score": score}
    best["present"] = best["score"] >= 0.9
    return best


# ---- saving --------------------------------------------------------------------------------------
_save_lock = threading.Lock()
_NUMBERED = re.compile(r"^(\d{5})-")


def _pnginfo(infotext: Optional[str]):
    if not infotext:
        return None
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)
    return info


def output_folder(outputs_dir: str, mode: str, day: date | None = None) -> Path:
    sub = {"txt2img": "txt2img-images", "img2img": "img2img-images", "inpaint": "img2img-images",
           "upscale": "extras-images"}[mode]
    return Path(outputs_dir) / sub / (day or date.today()).isoformat()


_TEMPORARY = re.compile(r"^\.tmp-(\d+)-\d+-\d+\.png$")  # save_png's own naming, nothing else
STALE_TEMPORARY_SECONDS = 3600


def save_png(img: Image.Image, folder: Path, seed: Optional[int], infotext: Optional[str]) -> Path:
    """Atomically save as ``NNNNN-<seed>.png`` (A1111 numbering): temporary file, fsync, then a hard
    link to the final name, which fails instead of overwriting if another job took the number.
    Whatever fails (a full disk mid-write included), no temporary or partial file is left behind;
    a full disk raises DiskFull. (PIL keeps encoder state on the Image object, so one object must
    not be saved by two threads at once; every job makes its own images.)"""
    tmp = folder / f".tmp-{os.getpid()}-{threading.get_ident()}-{id(img)}.png"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            img.save(f, format="PNG", pnginfo=_pnginfo(infotext))
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


def _claim_number(tmp: Path, folder: Path, seed: Optional[int]) -> Path:
    """Give ``tmp`` the next free ``NNNNN-seed.png`` name without ever overwriting a file."""
    suffix = f"-{seed}" if seed is not None else ""
    with _save_lock:
        numbers = [int(m.group(1)) for p in os.listdir(folder) if (m := _NUMBERED.match(p))]
        n = max(numbers, default=-1) + 1
        while True:
            final = folder / f"{n:05d}{suffix}.png"
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
