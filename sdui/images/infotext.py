"""A1111 infotext: the ``parameters`` text of a PNG, written and parsed field for field as A1111
does (key order, JSON quoting of values with ``,`` ``:`` or newlines, multi-line prompts)."""

from __future__ import annotations

import json
import re
from typing import Optional

from PIL import Image, PngImagePlugin

from .. import fields

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
    for key, f in fields.BY_INFOTEXT.items():  # the keys and types of the field table
        if key in params and f.name not in out:
            try:
                out[f.name] = f.kind(params[key])
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


def png_text(infotext: Optional[str]):
    """The PNG ``parameters`` text chunk A1111 writes (None for no text)."""
    if not infotext:
        return None
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)
    return info
