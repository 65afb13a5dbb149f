"""The invisible watermark (invisible-watermark's dwtDct, as Stability's scripts embed it): add it
to outputs and score how much of a known payload an image carries."""

from __future__ import annotations

from PIL import Image

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
        score = float(np.mean([int(a) == b for a, b in zip(found, expected, strict=False)]))
        if score > best["score"]:
            best = {"payload": text, "score": score}
    best["present"] = best["score"] >= 0.9
    return best
