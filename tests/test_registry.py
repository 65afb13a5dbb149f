"""Finding models: A1111 tree, --ckpt-dir, --ckpt, diffusers folders, the HF cache; hashes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

from sdui.models import formats, registry


def test_a1111_tree_is_found_with_names_formats_and_kinds(models_root):
    found = registry.scan(str(models_root), include_hub_cache=False)
    ckpts = {e.name: e for e in found["checkpoint"]}
    assert set(ckpts) == {"tiny", "tiny-ckpt", "tiny-folder", "other", "tiny-inpaint", "tiny-x4"}
    assert ckpts["tiny"].format == formats.SAFETENSORS and ckpts["tiny"].config_dir.endswith("tiny.config")
    assert ckpts["tiny-ckpt"].format == formats.PICKLE_ZIP
    assert ckpts["tiny-folder"].format == formats.DIFFUSERS
    assert ckpts["tiny-x4"].architecture == "x4-upscaler"
    assert [e.name for e in found["upscaler"]] == ["tiny-esrgan"]
    assert all(e.error is None for e in found["checkpoint"])


def test_config_folders_are_not_listed_as_models(models_root):
    found = registry.scan(str(models_root), include_hub_cache=False)
    assert not any(e.path.endswith(".config") for e in found["checkpoint"])


def test_ckpt_dir_and_ckpt_file_are_searched_too(models_root, tmp_path):
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    shutil.copy(models_root / "Stable-diffusion" / "tiny.safetensors", extra / "copy.safetensors")
    single = tmp_path / "single.safetensors"
    shutil.copy(models_root / "Stable-diffusion" / "tiny.safetensors", single)
    found = registry.scan(None, ckpt_dir=str(extra), ckpt=str(single), include_hub_cache=False)
    assert {e.name for e in found["checkpoint"]} == {"copy", "single"}


def test_same_stem_in_two_folders_gets_distinct_names(models_root, tmp_path):
    root = tmp_path / "m"
    (root / "Stable-diffusion" / "sub").mkdir(parents=True)
    src = models_root / "Stable-diffusion" / "tiny.safetensors"
    shutil.copy(src, root / "Stable-diffusion" / "a.safetensors")
    shutil.copy(src, root / "Stable-diffusion" / "sub" / "a.safetensors")
    names = sorted(e.name for e in registry.scan(str(root), include_hub_cache=False)["checkpoint"])
    assert names == ["a", "sub/a"]


def test_unloadable_files_are_listed_with_the_reason(tmp_path):
    root = tmp_path / "m"
    (root / "Stable-diffusion").mkdir(parents=True)
    (root / "Stable-diffusion" / "notes.safetensors").write_text("not a model")
    (entry,) = registry.scan(str(root), include_hub_cache=False)["checkpoint"]
    assert "not a model file" in entry.error


def test_short_hash_is_a1111_shorthash_and_cached_by_stamp(tmp_path):
    p = tmp_path / "f.safetensors"
    p.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    cache = registry.HashCache(tmp_path / "hashes.json")
    digest = cache.sha256(str(p))
    assert digest == hashlib.sha256(p.read_bytes()).hexdigest()
    assert json.loads((tmp_path / "hashes.json").read_text())[str(p)]["sha256"] == digest
    assert registry.HashCache(tmp_path / "hashes.json").cached(str(p)) == digest  # survives a restart
    p.write_bytes(b"changed")
    os.utime(p, (time.time() + 5, time.time() + 5))
    assert registry.HashCache(tmp_path / "hashes.json").cached(str(p)) is None
    entry = registry.ModelEntry(name="f", path=str(p), sha256=cache.sha256(str(p)))
    assert entry.short_hash == hashlib.sha256(b"changed").hexdigest()[:10]
    assert entry.title == f"f.safetensors [{entry.short_hash}]"


def test_hub_ids_in_the_local_cache_are_listed(hub_cache):
    assert registry.hub_cache_models() == [hub_cache]
    found = registry.scan(None)
    assert [(e.name, e.format) for e in found["checkpoint"]] == [(hub_cache, formats.HUB)]
