"""Hostile files in the models folder: each one is listed with its own error, none of them stops the
listing or the CLI, nothing but a regular file is opened, and no pickle is run to find out."""

from __future__ import annotations

import json
import os
import pickle
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sdui.models import detect, formats, picklescan, registry

CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
pytestmark = pytest.mark.timeout(60)  # a FIFO that is opened blocks forever: fail, don't hang


class _RunsShell:
    """Unpickling this runs a shell command (``os.system`` pickles as ``posix.system`` on Linux)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _safetensors_raw(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def _safetensors_json(path: Path, header: dict, data: bytes = b"") -> Path:
    return _safetensors_raw(path, json.dumps(header).encode(), data)


def _f32(shape, offsets) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": offsets}


def _evil_payload(canary: Path, tensors: bool = True) -> dict:
    # a bare pickle.dump of a tensor imports torch.storage._load_from_bytes, itself refused: leave it
    # out there, so the only import refused is the shell's
    weights = {"w": torch.ones(2)} if tensors else {"w": [1.0, 2.0]}
    return {"state_dict": weights, "evil": _RunsShell(f"echo pwned > {canary}")}


def _write_pickle(path: Path, payload, how: str) -> Path:
    if how == "zip":
        torch.save(payload, path)
    elif how == "legacy-torch":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle stream, protocol 2 (GLOBAL) or 4 (STACK_GLOBAL with memoised strings)
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=int(how.split("-")[1]))
    return path


# What each hostile checkpoint is, and words its error line must contain.
BAD_CHECKPOINTS = {
    "nested": "nested 100001 levels deep",
    "string-offsets": "data_offsets must be two whole numbers",
    "infinite-shape": "shape must be a list",
    "huge-shape": "shape must be a list",
    "empty-conv-in": f"tensor '{CONV_IN}' has shape []",
    "bad-metadata": "__metadata__ is not a map of strings",
    "x": "not a regular file (a FIFO)",
    "evil-zip": "refused: would run code (imports posix.system)",
    "evil-legacy": "refused: would run code (imports posix.system)",
    "evil-proto4": "refused: would run code (imports posix.system)",
    "listy": "not a diffusers config (a JSON list, not an object)",
    "deep-index": "not a diffusers config (nested 5001 levels deep)",
}
GOOD_CHECKPOINTS = {"good", "good-with-odd-yaml", "clean-zip", "clean-legacy"}


@pytest.fixture()
def hostile_tree(tmp_path) -> tuple[Path, Path]:
    """models/ with a good file beside every kind of hostile one; returns (root, canary path)."""
    picklescan.cache_clear()
    root = tmp_path / "models"
    sd = root / "Stable-diffusion"
    sd.mkdir(parents=True)
    canary = tmp_path / "pwned.txt"

    save_file({"a": torch.ones(2), "b": torch.zeros(3, dtype=torch.float16)}, sd / "good.safetensors")
    save_file({"a": torch.ones(2)}, sd / "good-with-odd-yaml.safetensors")
    (sd / "good-with-odd-yaml.yaml").write_text("- a list\n- not a mapping\n")
    _write_pickle(sd / "clean-zip.ckpt", {"state_dict": {"w": torch.ones(2)}, "global_step": 3}, "zip")
    _write_pickle(sd / "clean-legacy.ckpt", {"state_dict": {"w": torch.ones(2)}}, "legacy-torch")

    _safetensors_raw(sd / "nested.safetensors", b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    _safetensors_json(sd / "string-offsets.safetensors", {"a": _f32([1], ["0", "4"])}, b"\0" * 4)
    _safetensors_raw(sd / "infinite-shape.safetensors",
                     b'{"a": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}}', b"\0" * 4)
    _safetensors_json(sd / "huge-shape.safetensors", {"a": _f32([2**70, 2**70], [0, 4])}, b"\0" * 4)
    _safetensors_json(sd / "empty-conv-in.safetensors", {CONV_IN: _f32([], [0, 4])}, b"\0" * 4)
    _safetensors_json(sd / "bad-metadata.safetensors", {"__metadata__": {"step": 5}, "a": _f32([], [0, 4])}, b"\0" * 4)
    os.mkfifo(sd / "x.ckpt")
    _write_pickle(sd / "evil-zip.ckpt", _evil_payload(canary), "zip")
    _write_pickle(sd / "evil-legacy.ckpt", _evil_payload(canary, tensors=False), "pickle-2")
    _write_pickle(sd / "evil-proto4.pt", _evil_payload(canary, tensors=False), "pickle-4")
    (sd / "listy").mkdir()
    (sd / "listy" / "model_index.json").write_text("[1, 2]")
    (sd / "deep-index").mkdir()
    (sd / "deep-index" / "model_index.json").write_text("[" * 5001 + "]" * 5001)

    esrgan = root / "ESRGAN"
    esrgan.mkdir()
    torch.save({"conv_first.weight": torch.ones(4, 3, 3, 3)}, esrgan / "clean.pth")
    _write_pickle(esrgan / "evil.pth", _evil_payload(canary), "zip")
    os.mkfifo(esrgan / "pipe.pth")
    return root, canary


@pytest.mark.timeout(20)
def test_every_hostile_file_gets_its_own_error_and_the_rest_is_listed(hostile_tree):
    root, canary = hostile_tree
    found = registry.scan(str(root), include_hub_cache=False)
    by_name = {e.name: e for e in found["checkpoint"]}
    assert set(by_name) == set(BAD_CHECKPOINTS) | GOOD_CHECKPOINTS  # every file listed, none dropped...
    assert len(found["checkpoint"]) == len(by_name)  # ...and each once
    for name, words in BAD_CHECKPOINTS.items():
        assert by_name[name].error and words in by_name[name].error, (name, by_name[name].error)
    assert by_name["evil-zip"].error.startswith(str(root / "Stable-diffusion" / "evil-zip.ckpt") + ": ")
    for name in GOOD_CHECKPOINTS:
        assert by_name[name].error is None, (name, by_name[name].error)
    upscalers = {e.name: e.error for e in found["upscaler"]}
    assert upscalers["clean"] is None
    assert "refused: would run code (imports posix.system)" in upscalers["evil"]
    assert "not a regular file (a FIFO)" in upscalers["pipe"]
    assert not canary.exists()  # listing never unpickled anything


@pytest.mark.timeout(20)
def test_cli_lists_every_file_with_its_error_and_succeeds(hostile_tree, capsys):
    from sdui.cli import main

    root, canary = hostile_tree
    assert main(["models", "--json", "--models-dir", str(root)]) == 0
    rows = {(r["kind"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    for name, words in BAD_CHECKPOINTS.items():
        assert words in (rows[("checkpoint", name)]["error"] or ""), name
    assert all(rows[("checkpoint", name)]["error"] is None for name in GOOD_CHECKPOINTS)
    assert not canary.exists()


@pytest.mark.parametrize("how", ["zip", "legacy-torch", "pickle-2", "pickle-4"])
def test_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, how):
    canary = tmp_path / "pwned.txt"
    torch_made = how in ("zip", "legacy-torch")
    path = _write_pickle(tmp_path / "evil.ckpt", _evil_payload(canary, tensors=torch_made), how)
    entry = registry.describe_file(path, "evil", registry.CHECKPOINT)
    assert entry.error == f"{path}: refused: would run code (imports posix.system)"
    assert not canary.exists()


@pytest.mark.parametrize("make", [
    lambda p: torch.save({"state_dict": {"w": torch.ones(2, dtype=torch.bfloat16)}}, p),
    lambda p: torch.save({"w": torch.nn.Parameter(torch.ones(2))}, p, _use_new_zipfile_serialization=False),
    lambda p: torch.save(torch.nn.Linear(2, 2).state_dict(), p),  # an OrderedDict, as ESRGAN files are
], ids=["zip-bf16", "legacy-parameter", "ordered-dict"])
def test_scan_agrees_with_torchs_weights_only_loader_on_clean_files(tmp_path, make):
    path = tmp_path / "clean.pt"
    make(path)
    torch.load(path, weights_only=True)  # torch accepts it...
    assert picklescan.check(path, formats.sniff_format(path)) is None  # ...and so does the listing


def test_import_via_memoised_strings_is_seen(tmp_path):
    """A STACK_GLOBAL whose module and name come from the memo (BINGET), not pushed right before it."""
    module, name = b"\x8c\x05posix\x94", b"\x8c\x06system\x94"  # SHORT_BINUNICODE + MEMOIZE: memo 0, 1
    stream = b"\x80\x04" + module + name + b"0" + b"0" + b"h\x00h\x01\x93" + b"." # POP, POP, BINGET 0, BINGET 1
    path = tmp_path / "memo.ckpt"
    path.write_bytes(stream)
    assert picklescan.check(path, formats.PICKLE) == "refused: would run code (imports posix.system)"


def test_pickle_scan_is_cached_until_the_file_changes(hostile_tree):
    root, _ = hostile_tree
    path = root / "Stable-diffusion" / "clean-zip.ckpt"
    picklescan.cache_clear()
    registry.describe_file(path, "clean-zip", registry.CHECKPOINT)
    assert picklescan.cache_info().misses == 1
    registry.describe_file(path, "clean-zip", registry.CHECKPOINT)
    info = picklescan.cache_info()
    assert (info.hits, info.misses) == (1, 1)  # unchanged: not read again
    later = time.time() + 10
    os.utime(path, (later, later))
    registry.describe_file(path, "clean-zip", registry.CHECKPOINT)
    assert picklescan.cache_info().misses == 2  # new mtime: scanned again


@pytest.mark.timeout(20)
def test_sniffing_a_fifo_does_not_open_it(tmp_path):
    fifo = tmp_path / "x.safetensors"
    os.mkfifo(fifo)
    assert formats.sniff_format(fifo) == formats.UNKNOWN
    with pytest.raises(registry.ModelLoadError, match="not a regular file"):
        formats.read_safetensors_header(fifo)


@pytest.mark.parametrize("header, data", [
    ({"a": _f32([1], [0, 4])}, b"\0" * 8),  # trailing bytes
    ({"a": _f32([1], [4, 8])}, b"\0" * 8),  # a gap before the first tensor
    ({"a": _f32([2], [0, 8]), "b": _f32([1], [4, 8])}, b"\0" * 8),  # overlapping tensors
    ({"a": _f32([3], [0, 8])}, b"\0" * 8),  # shape and byte count disagree
    ({"a": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
    ({"a": _f32([-1], [0, 4])}, b"\0" * 4),
], ids=["trailing", "gap", "overlap", "size-mismatch", "dtype", "negative-dim"])
def test_header_check_refuses_what_the_safetensors_library_refuses(tmp_path, header, data):
    path = _safetensors_json(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(SafetensorError), safe_open(path, framework="pt") as f:
        [f.get_tensor(k) for k in f.keys()]  # noqa: SIM118 - safe_open's handle is not a dict
    with pytest.raises(registry.ModelLoadError, match=f"^{path}: "):
        formats.read_safetensors_header(path)


def test_detection_does_not_index_past_a_claimed_shape():
    assert detect.detect_architecture({CONV_IN: ()}) == detect.UNKNOWN
    assert "dimensions" in detect.shape_problem({CONV_IN: (320,)})
    assert detect.shape_problem({CONV_IN: (320, 4, 3, 3)}) is None
