"""Packaging: the top-level ``assets/`` folder ships inside the wheel (and the sdist) as the
package data ``sdui.assets``, and sdui finds it when installed from a wheel, installed editable,
imported from a zip, or run from a source checkout.

Everything is built offline from a copy of the working tree (tracked and untracked, not ignored,
files) with the venv's setuptools; nothing is installed into the venv itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
NEEDED_TO_BUILD = ("pyproject.toml", "README.md", "assets/", "sdui/")


def _checkout_files() -> list[str]:
    """The checkout's files a build reads, as git sees them (falls back to walking when no git)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout.decode()
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [p.relative_to(REPO).as_posix() for p in REPO.rglob("*") if p.is_file()]
    return sorted(n for n in names if n.startswith(NEEDED_TO_BUILD) and "__pycache__" not in n
                  and not n.endswith(".pyc") and (REPO / n).is_file())


def _pip(*args: str, cwd: Path | None = None) -> None:
    proc = subprocess.run([PY, "-m", "pip", "--disable-pip-version-check", "--no-input", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _build_with_setuptools(hook: str, source: Path, out: Path) -> Path:
    """Call a PEP 517 hook of setuptools' backend (what pip calls), offline, in ``source``."""
    code = f"import sys; from setuptools import build_meta; print(build_meta.{hook}(sys.argv[1]))"
    proc = subprocess.run([PY, "-c", code, str(out)], cwd=source, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / proc.stdout.strip().splitlines()[-1]


def _python(code: str, *, cwd: Path, pythonpath: str | None = None, flags: tuple[str, ...] = (),
            **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in the venv's python from ``cwd`` (outside the repository)."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(HF_HUB_OFFLINE="1", SDUI_NO_REEXEC="1", **env)
    if pythonpath:
        environ["PYTHONPATH"] = pythonpath
    proc = subprocess.run([PY, *flags, "-c", code], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _is_under(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


@pytest.fixture(scope="module")
def checkout_files() -> list[str]:
    return _checkout_files()


@pytest.fixture(scope="module")
def source(tmp_path_factory, checkout_files) -> Path:
    """A clean copy of the checkout: what a fresh clone with these changes would hold."""
    src = tmp_path_factory.mktemp("pkg") / "src"
    for name in checkout_files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    return src


@pytest.fixture(scope="module")
def wheel(source) -> Path:
    out = source.parent / "wheel"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(source))
    (whl,) = out.glob("sdui-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel) -> Path:
    """The wheel installed non-editable, without dependencies, into its own folder (not the venv)."""
    target = wheel.parent.parent / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel))
    return target


def test_pyproject_lists_every_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from setuptools import find_namespace_packages

    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    on_disk = {p for p in find_namespace_packages(str(REPO), include=["sdui", "sdui.*"])
               if "__pycache__" not in p and any((REPO / p.replace(".", "/")).glob("*.py"))}
    missing = sorted((on_disk | {"sdui.assets"}) - set(listed))
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def _expected_wheel_files(checkout_files: list[str]) -> set[str]:
    modules = {n for n in checkout_files if n.startswith("sdui/") and n.endswith(".py")}
    assets = {"sdui/" + n for n in checkout_files if n.startswith("assets/")}
    return modules | assets


def test_wheel_ships_every_asset_and_every_module(wheel, checkout_files):
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("sdui/assets/__init__.py", "sdui/assets/configs/sd15/model_index.json",
                 "sdui/assets/configs/sd15/unet/config.json", "sdui/assets/configs/sdxl/text_encoder_2/config.json",
                 "sdui/assets/configs/x4-upscaler/low_res_scheduler/scheduler_config.json",
                 "sdui/assets/tokenizer/vocab.json", "sdui/assets/tokenizer/merges.txt",
                 "sdui/assets/tokenizer/tokenizer_config.json"):
        assert must in names
    assert len([n for n in checkout_files if n.startswith("assets/configs/")]) >= 35
    # Every asset and every module of the checkout: a new sub-package missing from pyproject's
    # explicit `packages` list, or a new kind of asset file missing from `package-data`, fails here.
    missing = _expected_wheel_files(checkout_files) - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert not [n for n in names if n.startswith("assets/")], "assets must ship inside sdui/, not at the top level"
    with zipfile.ZipFile(wheel) as z:
        shipped = z.read("sdui/assets/configs/sd15/unet/config.json")
    assert shipped == (REPO / "assets/configs/sd15/unet/config.json").read_bytes()


def test_sdist_ships_the_assets_and_builds_the_same_wheel(source, wheel, checkout_files):
    out = source.parent / "sdist"
    sdist = _build_with_setuptools("build_sdist", source, out)
    with tarfile.open(sdist) as t:
        in_sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {n for n in checkout_files if n.startswith("assets/")} <= in_sdist
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(sdist))
    (from_sdist,) = out.glob("sdui-*.whl")
    assert set(zipfile.ZipFile(from_sdist).namelist()) == set(zipfile.ZipFile(wheel).namelist())


PROBE = """
import json, sys
import sdui, sdui.cli
from sdui.assets_path import ASSETS_DIR
from sdui.models.loader import CONFIGS_DIR
from sdui.models.tokenizer import TOKENIZER_DIR, load_clip_tokenizer
from diffusers import UNet2DConditionModel

tok = load_clip_tokenizer()
unet = UNet2DConditionModel.load_config(CONFIGS_DIR / "sd15" / "unet")
print(json.dumps({"sdui": sdui.__file__, "cli": sdui.cli.__file__, "assets": str(ASSETS_DIR),
                  "configs": str(CONFIGS_DIR), "tokenizer_dir": str(TOKENIZER_DIR), "vocab": len(tok),
                  "ids": tok("a photo of a cat").input_ids, "cross_attention_dim": unet["cross_attention_dim"]}))
"""


def test_installed_wheel_runs_the_cli_and_uses_its_own_assets(installed, models_root, tmp_path):
    run_cli = ("import runpy, sys, sdui; print(sdui.__file__, file=sys.stderr); "
               f"sys.argv = ['sdui', 'models', '--json', '--models-dir', {str(models_root)!r}]; "
               "runpy.run_module('sdui.cli', run_name='__main__', alter_sys=True)")
    proc = _python(run_cli, cwd=tmp_path, pythonpath=str(installed))
    assert _is_under(proc.stderr.strip().splitlines()[0], installed), proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert "tiny" in rows and not rows["tiny"]["error"]

    facts = _last_json_line(_python(PROBE, cwd=tmp_path, pythonpath=str(installed)).stdout)
    assert _is_under(facts["sdui"], installed) and _is_under(facts["cli"], installed)
    assert Path(facts["assets"]).resolve() == (installed / "sdui" / "assets").resolve()
    for key in ("configs", "tokenizer_dir"):
        assert _is_under(facts[key], installed / "sdui" / "assets"), facts[key]
    assert facts["vocab"] == 49408 and facts["ids"][0] == 49406 and facts["ids"][-1] == 49407
    assert facts["cross_attention_dim"] == 768


LOCATE = """
import importlib.resources, json, sdui, sdui.assets_path as a
try:
    files = str(importlib.resources.files("sdui.assets"))
except ModuleNotFoundError:
    files = None
print(json.dumps({"sdui": sdui.__file__, "assets": str(a.ASSETS_DIR), "files": files}))
"""


def test_editable_install_maps_sdui_assets_to_the_top_level_folder(source, tmp_path):
    # setuptools' editable wheel, unpacked into a folder that is made a site dir by hand; -S keeps
    # the venv's own editable sdui (same finder module name) out of the way. Only the stdlib is needed.
    editable_wheel = _build_with_setuptools("build_editable", source, tmp_path / "ewheel")
    site_dir = tmp_path / "esite"
    zipfile.ZipFile(editable_wheel).extractall(site_dir)
    code = f"import site; site.addsitedir({str(site_dir)!r})\n" + LOCATE
    facts = _last_json_line(_python(code, cwd=tmp_path, flags=("-S",)).stdout)
    assert _is_under(facts["sdui"], source / "sdui")
    assert Path(facts["files"]) == Path(facts["assets"]) == source / "assets"


def test_source_checkout_without_install_falls_back_to_the_top_level_folder(source, tmp_path):
    code = f"import sys; sys.path.insert(0, {str(source)!r})\n" + LOCATE
    facts = _last_json_line(_python(code, cwd=tmp_path, flags=("-S",)).stdout)
    assert _is_under(facts["sdui"], source / "sdui")
    assert facts["files"] is None, "sdui.assets is not importable from a bare checkout"
    assert Path(facts["assets"]) == source / "assets"


def test_zipped_package_extracts_its_assets_once_into_the_cache(installed, tmp_path):
    archive = tmp_path / "sdui.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((installed / "sdui").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                z.write(path, path.relative_to(installed).as_posix())
    cache = tmp_path / "cache"
    runs = [_last_json_line(_python(LOCATE, cwd=tmp_path, pythonpath=str(archive), SDUI_CACHE_DIR=str(cache)).stdout)
            for _ in range(2)]
    assert runs[0]["sdui"].startswith(str(archive))
    assert runs[0]["assets"] == runs[1]["assets"] and _is_under(runs[0]["assets"], cache / "assets")
    assert len(list((cache / "assets").iterdir())) == 1, "extracted once, then reused"
    extracted = Path(runs[0]["assets"])
    for name in ("configs/sd15/unet/config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"):
        assert (extracted / name).read_bytes() == (installed / "sdui" / "assets" / name).read_bytes()
    assert not list(extracted.rglob("*.py"))


BUILD_FROM_CONFIGS = """
import json
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel
from sdui.assets_path import CONFIGS_DIR
counts = {}
with init_empty_weights():  # full-size architectures on the meta device: no memory, no weights
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(CONFIGS_DIR / "sd15" / "unet")))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(CONFIGS_DIR / "sd15" / "vae")))
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(str(CONFIGS_DIR / "sd15" / "text_encoder")))
for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text)):
    counts[name] = sum(p.numel() for p in module.parameters())
print(json.dumps({"configs": str(CONFIGS_DIR), "counts": counts}))
"""


def test_installed_wheel_builds_the_full_sd15_model_from_its_shipped_configs(installed, tmp_path):
    """The wheel's own architecture configs make the real SD 1.5 model (parameter counts of the
    published v1-5 UNet, VAE and CLIP ViT-L text encoder), built on the meta device so no weights are
    needed."""
    facts = _last_json_line(_python(BUILD_FROM_CONFIGS, cwd=tmp_path, pythonpath=str(installed)).stdout)
    assert _is_under(facts["configs"], installed / "sdui" / "assets")
    assert facts["counts"] == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
