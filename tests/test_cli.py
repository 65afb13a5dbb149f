"""The ``sdui`` command on tiny models: generation, bad input, pnginfo, watermark, models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdui import cli
from sdui.images import infotext, outputs, watermark

REPO = Path(__file__).resolve().parent.parent


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_txt2img_writes_pngs_with_metadata_and_a_progress_bar(models_root, tmp_path, capsys):
    code, out, err = _run(capsys, "txt2img", "--prompt", "a tiny castle", "--negative-prompt", "fog", "--ckpt", "tiny",
                          "--models-dir", models_root, "--outdir", tmp_path, "--steps", 3, "--W", 64, "--H", 64,
                          "--seed", 9, "--n-samples", 2, "--n-iter", 1, "--no-watermark", "--skip_grid")
    assert code == 0, err
    paths = out.split()
    assert len(paths) == 2 and all(p.endswith(("-9.png", "-10.png")) for p in paths)
    assert "sampling [" in err and "3/3" in err
    text = infotext.read_infotext(Image.open(paths[0]))
    assert text.startswith("a tiny castle\nNegative prompt: fog\nSteps: 3, Sampler: Euler a,")


def test_cli_and_engine_give_the_same_pixels(models_root, tmp_path, capsys, make_engine):
    from sdui.types import GenerationRequest

    code, out, _ = _run(capsys, "txt2img", "--prompt", "same", "--ckpt", "tiny", "--models-dir", models_root,
                        "--outdir", tmp_path / "cli", "--steps", 2, "--W", 64, "--H", 64, "--seed", 5, "--plms", "--quiet")
    assert code == 0
    r = make_engine().generate(GenerationRequest(prompt="same", model="tiny", steps=2, width=64, height=64, seed=5,
                                                 sampler="PLMS"))
    assert open(out.split()[0], "rb").read() == open(r.images[0].path, "rb").read()


def test_img2img_and_inpaint_from_files(models_root, tmp_path, capsys):
    init = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(init)
    mask = tmp_path / "mask.png"
    m = Image.new("L", (70, 50), 0)
    m.paste(255, (20, 10, 50, 40))
    m.save(mask)
    common = ["--ckpt", "tiny", "--models-dir", models_root, "--outdir", tmp_path, "--steps", 4, "--W", 64, "--H", 64,
              "--quiet", "--prompt", "x"]
    code, out, err = _run(capsys, "img2img", "--init-img", init, "--strength", 0.5, *common)
    assert code == 0, err
    assert "/img2img-images/" in out, out
    code, out, err = _run(capsys, "inpaint", "--init-img", init, "--mask", mask, "--masked-content", "fill", *common)
    assert code == 0, err
    assert Image.open(out.split()[0]).size == (64, 64)


def test_upscale_command(models_root, tmp_path, capsys):
    src = tmp_path / "small.png"
    Image.new("RGB", (30, 20), (1, 2, 3)).save(src)
    code, out, err = _run(capsys, "upscale", "--image", src, "--upscaler", "tiny-esrgan", "--models-dir", models_root,
                          "--outdir", tmp_path, "--quiet")
    assert code == 0, err
    assert Image.open(out.split()[0]).size == (120, 80)


def test_hires_fix_flags_reach_the_engine(models_root, tmp_path, capsys):
    common = ["--prompt", "a castle", "--ckpt", "tiny", "--models-dir", models_root, "--outdir", tmp_path, "--steps", 2,
              "--W", 64, "--H", 64, "--seed", 3, "--quiet", "--no-watermark"]
    code, out, err = _run(capsys, "txt2img", *common, "--enable-hr", "--hr-scale", 2, "--hr-upscaler", "Lanczos",
                          "--hr-second-pass-steps", 3, "--denoising-strength", 0.5)
    assert code == 0, err
    img = Image.open(out.split()[0])
    assert img.size == (128, 128)
    text = infotext.read_infotext(img)
    for key in ("Size: 64x64", "Denoising strength: 0.5", "Hires upscale: 2", "Hires steps: 3",
                "Hires upscaler: Lanczos"):
        assert key in text, key
    code, out, err = _run(capsys, "txt2img", *common, "--no-enable-hr", "--hr-scale", 2)
    assert code == 0, err
    assert Image.open(out.split()[0]).size == (64, 64)  # --no-enable-hr: one pass
    code, _, err = _run(capsys, "txt2img", *common, "--enable-hr", "--hr-scale", 9)
    assert code == 2 and "hr_scale=9.0 is not allowed" in err


def test_only_masked_and_extras_scale_to_flags(models_root, tmp_path, capsys):
    init, mask = tmp_path / "in.png", tmp_path / "mask.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(init)
    m = Image.new("L", (70, 50), 0)
    m.paste(255, (20, 10, 30, 20))
    m.save(mask)
    code, out, err = _run(capsys, "inpaint", "--init-img", init, "--mask", mask, "--inpaint-area", "Only masked",
                          "--masked-area-padding", 8, "--prompt", "x", "--ckpt", "tiny", "--models-dir", models_root,
                          "--outdir", tmp_path, "--steps", 2, "--W", 64, "--H", 64, "--quiet")
    assert code == 0, err
    img = Image.open(out.split()[0])
    assert img.size == (70, 50) and "Masked area padding: 8" in infotext.read_infotext(img)
    small = tmp_path / "small.png"
    Image.new("RGB", (30, 20), (1, 2, 3)).save(small)
    scale_to = ["upscale", "--image", small, "--upscaler", "Lanczos", "--upscale-mode", "Scale to", "--upscale-to-width",
                40, "--upscale-to-height", 40, "--models-dir", models_root, "--outdir", tmp_path, "--quiet"]
    code, out, err = _run(capsys, *scale_to)
    assert code == 0, err
    assert Image.open(out.split()[0]).size == (40, 40)
    code, out, err = _run(capsys, *scale_to, "--no-crop-to-fit")
    assert code == 0, err
    assert Image.open(out.split()[0]).size == (60, 40)


@pytest.mark.parametrize("argv,needle", [
    (["--W", "63"], "width=63 is not allowed: an integer from 64 to 2048"),
    (["--sampler", "Euler b"], "sampler='Euler b' is not allowed: one of Euler a"),
    (["--steps", "500"], "steps=500 is not allowed: an integer from 1 to 150"),
    (["--ckpt", "missing-model"], "missing-model: no such file, folder or Hub id"),
])
def test_bad_input_exits_2_with_one_clear_line(models_root, tmp_path, capsys, argv, needle):
    code, out, err = _run(capsys, "txt2img", "--prompt", "p", "--models-dir", models_root, "--outdir", tmp_path,
                          "--W", 64, "--H", 64, "--steps", 2, "--quiet", *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("sdui: error: ")


def test_missing_init_image_file(models_root, tmp_path, capsys):
    code, _, err = _run(capsys, "img2img", "--init-img", tmp_path / "nope.png", "--prompt", "p", "--models-dir", models_root)
    assert code == 2 and "nope.png: cannot read" in err


def test_pnginfo_reads_our_files_and_a1111_files(tmp_path, capsys):
    from tests.test_images import A1111_V13

    p = outputs.save_png(Image.new("RGB", (8, 8)), tmp_path, 1, A1111_V13)
    code, out, _ = _run(capsys, "pnginfo", p)
    assert code == 0 and out.strip() == A1111_V13
    code, out, _ = _run(capsys, "pnginfo", p, "--json")
    assert json.loads(out)["Model hash"] == "ec6f68ea63"
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    code, _, err = _run(capsys, "pnginfo", plain)
    assert code == 1 and "no generation parameters" in err


def test_watermark_command_prints_payload_and_score(tmp_path, capsys):
    from tests.test_images import _photo_like

    marked = tmp_path / "m.png"
    watermark.add_watermark(_photo_like(), "StableDiffusionV1").save(marked)
    code, out, _ = _run(capsys, "watermark", marked)
    assert code == 0 and "payload 'StableDiffusionV1'" in out and "bit match" in out
    clean = tmp_path / "c.png"
    _photo_like().save(clean)
    code, out, _ = _run(capsys, "watermark", clean)
    assert code == 1 and "not found" in out


def test_models_json_lists_formats_architectures_and_errors(models_root, tmp_path, capsys):
    root = tmp_path / "m"
    shutil.copytree(models_root, root)
    (root / "Stable-diffusion" / "junk.safetensors").write_text("hello")
    code, out, _ = _run(capsys, "models", "--models-dir", root, "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert {"name", "path", "format", "architecture", "error"} <= set(rows["tiny"])
    assert rows["tiny"]["format"] == "safetensors" and rows["tiny-folder"]["format"] == "diffusers"
    assert rows["tiny-x4"]["architecture"] == "x4-upscaler"
    assert "not a model file" in rows["junk"]["error"]
    code, out, _ = _run(capsys, "models", "--models-dir", root)
    assert "ERROR:" in out and "junk" in out


def _installed_console_script() -> Path | None:
    """The ``sdui`` script pip installed next to this interpreter (the venv's bin/), else on PATH."""
    here = Path(sys.executable).parent / ("sdui.exe" if os.name == "nt" else "sdui")
    if here.is_file():
        return here
    found = shutil.which("sdui")
    return Path(found) if found else None


def test_installed_console_script_runs():
    """The ``sdui`` command that ``pip install`` made from ``[project.scripts]``, not ``python -m``."""
    script = _installed_console_script()
    if script is None:
        pytest.skip("the sdui console script is not installed (pip install -e . makes venv/bin/sdui)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(script), "txt2img", "--help"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--negative-prompt" in proc.stdout and "--ckpt" in proc.stdout
