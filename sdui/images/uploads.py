"""Uploads: decode and check images from clients (base64, data URLs, bytes), encode PNGs for
answers, and A1111's resize modes."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Optional

from PIL import Image, UnidentifiedImageError

from ..types import InvalidRequest
from .infotext import png_text

MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


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
    img.save(buf, format="PNG", pnginfo=png_text(infotext))
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
        return _resize_and_fill(img, width, height)
    return img.resize((width, height), Image.LANCZOS)


def _resize_and_fill(img: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's mode 2 (modules/images.py resize_image): fit inside, centre, and fill each bar by
    stretching the fitted image's edge row (or column) across it."""
    ratio, src_ratio = width / height, img.width / img.height
    src_w = width if ratio < src_ratio else img.width * height // img.height
    src_h = height if ratio >= src_ratio else img.height * width // img.width
    fitted = img.resize((src_w, src_h), Image.LANCZOS)
    out = Image.new("RGB", (width, height))
    out.paste(fitted, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        bar = height // 2 - src_h // 2
        if bar > 0:
            out.paste(fitted.resize((width, bar), box=(0, 0, width, 0)), box=(0, 0))
            out.paste(fitted.resize((width, bar), box=(0, fitted.height, width, fitted.height)), box=(0, bar + src_h))
    elif ratio > src_ratio:
        bar = width // 2 - src_w // 2
        if bar > 0:
            out.paste(fitted.resize((bar, height), box=(0, 0, 0, height)), box=(0, 0))
            out.paste(fitted.resize((bar, height), box=(fitted.width, 0, fitted.width, height)), box=(bar + src_w, 0))
    return out
