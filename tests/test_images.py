"""Infotext (A1111's format, both ways), atomic saves, uploads, and the invisible watermark."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from sdui.images import infotext, outputs, uploads, watermark
from sdui.types import InvalidRequest

# Real infotexts as A1111 wrote them (from model cards and extension docs).
A1111_V13 = ("masterpiece, best quality, 1girl\n"
             "Negative prompt: (worst quality:1.4), (bad and mutated hands:1.3), easynegative\n"
             "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1270640879, Size: 540x960, "
             "Model hash: ec6f68ea63, Model: lyriel_v16, Version: v1.3.2")
A1111_QUOTED = ("a photo of <'EM_1'>\n"
                "Negative prompt: {'EM_2'}\n"
                "Steps: 8, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1374372309, Size: 512x512, "
                "Model hash: c6bbc15e32, Model: sd-v1-5-inpainting, "
                "EmbeddingMerge: \"<'EM_1'>=<'sky' * 2/4 + 'forest' * 3/4>, {'EM_2'}={'blurry'+'cropped'}\", "
                "Conditional mask weight: 1")
A1111_MULTILINE = ("first line of the prompt,\nsecond line (detail:1.2)\n"
                   "Negative prompt: bad,\nugly\n"
                   "Steps: 30, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 768x512, "
                   "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.55, Clip skip: 2")


def test_parses_a1111_v13_infotext_field_for_field():
    p = infotext.parse_infotext(A1111_V13)
    assert p["Prompt"] == "masterpiece, best quality, 1girl"
    assert p["Negative prompt"] == "(worst quality:1.4), (bad and mutated hands:1.3), easynegative"
    assert (p["Steps"], p["Sampler"], p["CFG scale"], p["Seed"]) == ("20", "DPM++ 2M Karras", "7", "1270640879")
    assert (p["Size-1"], p["Size-2"], p["Model hash"], p["Model"], p["Version"]) == \
        ("540", "960", "ec6f68ea63", "lyriel_v16", "v1.3.2")


def test_parses_quoted_values_with_commas_and_colons():
    p = infotext.parse_infotext(A1111_QUOTED)
    assert p["EmbeddingMerge"] == "<'EM_1'>=<'sky' * 2/4 + 'forest' * 3/4>, {'EM_2'}={'blurry'+'cropped'}"
    assert p["Conditional mask weight"] == "1" and p["Negative prompt"] == "{'EM_2'}"


def test_parses_multiline_prompts_and_fills_a_request():
    p = infotext.parse_infotext(A1111_MULTILINE)
    assert p["Prompt"] == "first line of the prompt,\nsecond line (detail:1.2)"
    assert p["Negative prompt"] == "bad,\nugly"
    fields = infotext.infotext_to_request_fields(p)
    assert fields["width"] == 768 and fields["height"] == 512 and fields["scheduler"] == "Karras"
    assert fields["cfg_scale"] == 7.5 and fields["denoising_strength"] == 0.55 and fields["seed"] == 42


def test_prompt_only_text_has_no_parameters():
    p = infotext.parse_infotext("just a prompt, nothing else")
    assert p == {"Prompt": "just a prompt, nothing else", "Negative prompt": ""}


def test_written_infotext_follows_a1111_order_and_quoting_and_round_trips():
    params = {"Steps": 20, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7.0, "Seed": 42,
              "Size": "512x512", "Model hash": "6ce0161689", "Model": "my, model: v2", "Denoising strength": None}
    text = infotext.build_infotext("a cat", "", params)
    assert text == ('a cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, '
                    'Size: 512x512, Model hash: 6ce0161689, Model: "my, model: v2"')
    back = infotext.parse_infotext(text)
    assert back["Model"] == "my, model: v2" and back["CFG scale"] == "7" and back["Negative prompt"] == ""


def test_negative_prompt_line_only_when_present():
    assert "Negative prompt" not in infotext.build_infotext("p", "", {"Steps": 1, "Sampler": "Euler", "Seed": 1})
    assert "\nNegative prompt: bad\n" in infotext.build_infotext("p", "bad", {"Steps": 1, "Sampler": "Euler", "Seed": 1})


def test_concurrent_saves_get_unique_numbers_and_leave_no_temp_files(tmp_path):
    paths, errors = [], []

    def save(i):
        img = Image.new("RGB", (8, 8), (10, 20, i))  # one image object per job, as the engine makes them
        try:
            paths.append(outputs.save_png(img, tmp_path, 100 + i, f"prompt {i}\nSteps: 1, Sampler: Euler, Seed: {i}"))
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    numbers = sorted(int(p.name[:5]) for p in paths)
    assert numbers == list(range(16))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    for p in paths:
        seed = int(p.stem.split("-")[1])
        assert infotext.read_infotext(Image.open(p)).startswith(f"prompt {seed - 100}\n")


def test_output_folders_follow_a1111_layout(tmp_path):
    import datetime

    day = datetime.date(2026, 1, 2)
    assert outputs.output_folder(str(tmp_path), "txt2img", day) == tmp_path / "txt2img-images" / "2026-01-02"
    assert outputs.output_folder(str(tmp_path), "inpaint", day).parent.name == "img2img-images"
    assert outputs.output_folder(str(tmp_path), "upscale", day).parent.name == "extras-images"


@pytest.mark.parametrize("data,problem", [
    (b"", "readable"), (b"\x89PNG\r\n\x1a\n broken", "readable"), ("not base64 at all!!", "image"), (12, "an image")])
def test_broken_uploads_get_a_clear_error(data, problem):
    with pytest.raises(InvalidRequest, match=problem):
        uploads.decode_image(data, "init_image")


def test_a_string_is_never_read_as_a_server_path(tmp_path):
    secret = tmp_path / "someone-elses.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(secret)
    with pytest.raises(InvalidRequest):
        uploads.decode_image(str(secret), "init_images")


def test_uploads_decode_from_bytes_base64_and_data_urls():
    buf = io.BytesIO()
    Image.new("RGBA", (5, 4), (255, 0, 0, 0)).save(buf, format="PNG")
    raw = buf.getvalue()
    import base64

    b64 = base64.b64encode(raw).decode()
    for data in (raw, b64, "data:image/png;base64," + b64):
        img = uploads.decode_image(data)
        assert img.size == (5, 4) and img.mode == "RGB"
        assert img.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, as A1111


# ---- A1111's resize modes, checked by pixels ------------------------------------------------------
GREEN, YELLOW, RED, BLUE, MAGENTA = (0, 255, 0), (255, 255, 0), (255, 0, 0), (0, 0, 255), (255, 0, 255)


def regions_image() -> Image.Image:
    """200x100 (2:1) with regions that show what a resize kept, cut or stretched: a green band on
    top (rows 0-19), then four columns: yellow (x 0-19), red (20-99), blue (100-179), magenta (180-199)."""
    a = np.zeros((100, 200, 3), dtype=np.uint8)
    a[:20] = GREEN
    a[20:, :20], a[20:, 20:100], a[20:, 100:180], a[20:, 180:] = YELLOW, RED, BLUE, MAGENTA
    return Image.fromarray(a)


def colour_at(img: Image.Image, x: int, y: int):
    """The region colour nearest to pixel (x, y); None if it is a blend of regions (an edge)."""
    pixel = np.asarray(img.getpixel((x, y)), dtype=float)
    best = min((GREEN, YELLOW, RED, BLUE, MAGENTA), key=lambda c: np.abs(pixel - c).sum())
    return best if np.abs(pixel - best).max() <= 40 else None


def _run_length(img: Image.Image, colour, *, row: int | None = None, column: int | None = None) -> int:
    a = np.asarray(img, dtype=int)
    line = a[row] if row is not None else a[:, column]
    return int((np.abs(line - colour).max(axis=1) <= 40).sum())


def test_just_resize_stretches_each_axis_on_its_own():
    """2:1 to 64x128: x scaled by 0.32, y by 1.28; every region is kept, in proportion per axis."""
    out = uploads.resize_for_request(regions_image(), 64, 128, "Just resize")
    assert out.size == (64, 128)
    assert [colour_at(out, x, 80) for x in (2, 20, 44, 62)] == [YELLOW, RED, BLUE, MAGENTA]
    assert colour_at(out, 20, 10) == GREEN and colour_at(out, 44, 10) == GREEN
    assert abs(_run_length(out, GREEN, column=30) - 0.2 * 128) <= 2  # the band is 20% of the height
    assert abs(_run_length(out, RED, row=80) - 0.4 * 64) <= 2  # red is 40% of the width
    assert abs(_run_length(out, YELLOW, row=80) - 0.1 * 64) <= 2


def test_crop_and_resize_fills_the_frame_and_cuts_the_sides():
    """2:1 to 64x128: scaled by 1.28 to fill the height (256x128), then the centre 64 columns kept:
    source x 75-125, so only red and blue remain, half each; the yellow and magenta sides are cut."""
    out = uploads.resize_for_request(regions_image(), 64, 128, "Crop and resize")
    assert out.size == (64, 128)
    assert [colour_at(out, x, 80) for x in (2, 28, 36, 62)] == [RED, RED, BLUE, BLUE]
    assert abs(_run_length(out, RED, row=80) - 32) <= 1
    assert colour_at(out, 20, 10) == GREEN and abs(_run_length(out, GREEN, column=30) - 0.2 * 128) <= 2
    a = np.asarray(out, dtype=int)
    for cut in (YELLOW, MAGENTA):
        assert not (np.abs(a - cut).max(axis=2) <= 40).any(), f"{cut} should have been cropped away"


def test_resize_and_fill_keeps_all_of_the_source_inside_and_fills_the_bars():
    """2:1 to 64x128: scaled by 0.32 to fit the width (64x32), pasted at rows 48-79 with every region
    in proportion; the bars above and below are filled with colour, not left black."""
    src = regions_image()
    out = uploads.resize_for_request(src, 64, 128, "Resize and fill")
    assert out.size == (64, 128)
    fitted = src.resize((64, 32), Image.LANCZOS)
    assert np.array_equal(np.asarray(out)[48:80], np.asarray(fitted)), "the whole source, scaled, sits in the middle"
    assert [colour_at(out, x, 70) for x in (2, 20, 44, 62)] == [YELLOW, RED, BLUE, MAGENTA]
    assert colour_at(out, 20, 50) == GREEN
    # the bottom bar carries the bottom edge's colours down, column by column
    assert [colour_at(out, x, y) for y in (84, 120) for x in (2, 20, 44, 62)] == [YELLOW, RED, BLUE, MAGENTA] * 2
    assert colour_at(out, 20, 2) == GREEN  # the top bar starts with the top edge's colour
    assert (np.asarray(out).max(axis=2) > 0).all(), "no black bars"


def test_resize_and_fill_bars_repeat_the_edge_rows_like_a1111():
    """A1111 (modules/images.py resize_image, mode 2) stretches the fitted image's first row over the
    top bar and its last row over the bottom bar: here the whole top bar (rows 0-47) is green."""
    out = uploads.resize_for_request(regions_image(), 64, 128, "Resize and fill")
    assert all(colour_at(out, x, y) == GREEN for y in (0, 20, 30, 40, 47) for x in (2, 20, 44, 62))


def test_a_request_at_the_source_size_is_left_alone():
    src = regions_image()
    for mode in ("Just resize", "Crop and resize", "Resize and fill"):
        assert np.array_equal(np.asarray(uploads.resize_for_request(src, 200, 100, mode)), np.asarray(src))


def _photo_like(size=320, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((size, size), Image.BICUBIC)


def test_watermark_embeds_and_verifies_with_bit_score():
    img = _photo_like()
    marked = watermark.add_watermark(img, "StableDiffusionV1")
    res = watermark.verify_watermark(marked)
    assert res["payload"] == "StableDiffusionV1" and res["score"] >= 0.9 and res["present"]
    assert not watermark.verify_watermark(img)["present"]
    res2 = watermark.verify_watermark(watermark.add_watermark(img, "SDV2"))
    assert res2["payload"] == "SDV2" and res2["present"]


def test_watermark_survives_png_round_trip(tmp_path):
    marked = watermark.add_watermark(_photo_like(seed=1), "StableDiffusionV1")
    p = outputs.save_png(marked, tmp_path, 1, "x\nSteps: 1, Sampler: Euler, Seed: 1")
    assert watermark.verify_watermark(Image.open(p).convert("RGB"))["score"] >= 0.9


def test_small_images_are_not_watermarked():
    assert not watermark.can_watermark(Image.new("RGB", (255, 512)))
    assert watermark.verify_watermark(Image.new("RGB", (64, 64)))["present"] is False
