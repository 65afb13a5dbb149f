"""Formats are decided by bytes, and no checkpoint can run code."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdui.models import formats
from sdui.types import ModelLoadError


def _tensors():
    return {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b.bias": torch.ones(4)}


class _MakesAFile:
    """Unpickling this object would create a file: the canary for code execution."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _evil_pickle(path: Path, canary: Path, zip_format: bool) -> Path:
    payload = {"state_dict": {"x": torch.ones(2)}, "evil": _MakesAFile(str(canary))}
    if zip_format:
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    return path


def test_safetensors_recognised_whatever_the_extension(tmp_path):
    for name in ("m.safetensors", "m.SAFETENSORS", "m.ckpt", "m.bin"):
        p = tmp_path / name
        save_file(_tensors(), p)
        assert formats.sniff_format(p) == formats.SAFETENSORS
        sd = formats.load_state_dict(p)
        assert torch.equal(sd["a.weight"], _tensors()["a.weight"])


def test_plain_state_dict_pickle_loads_even_when_named_safetensors(tmp_path):
    for name in ("m.ckpt", "m.safetensors", "m.pt"):
        p = tmp_path / name
        torch.save({"state_dict": _tensors(), "global_step": 5}, p)
        assert formats.sniff_format(p) == formats.PICKLE_ZIP
        sd = formats.load_state_dict(p)
        assert set(sd) == {"a.weight", "b.bias"}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip-pickle", "legacy-pickle"])
@pytest.mark.parametrize("name", ["evil.ckpt", "evil.safetensors", "evil.pt", "evil.bin"])
def test_malicious_pickle_never_runs_code(tmp_path, name, zip_format):
    canary = tmp_path / "pwned.txt"
    p = _evil_pickle(tmp_path / name, canary, zip_format)
    with pytest.raises(ModelLoadError) as err:
        formats.load_state_dict(p)
    assert not canary.exists(), "unpickling ran code"
    assert str(p) in str(err.value) and "refused" in str(err.value)


def test_truncated_safetensors_is_named_as_truncated(tmp_path):
    p = tmp_path / "cut.safetensors"
    save_file(_tensors(), p)
    data = p.read_bytes()
    p.write_bytes(data[:-10])
    with pytest.raises(ModelLoadError, match="truncated"):
        formats.load_state_dict(p)


def test_safetensors_header_claiming_huge_length_is_rejected_before_reading(tmp_path):
    p = tmp_path / "huge.safetensors"
    p.write_bytes(struct.pack("<Q", 2**50) + b'{"a": 1}' + b"\0" * 64)
    with pytest.raises(ModelLoadError, match="claims"):
        formats.load_state_dict(p)


def test_text_file_named_safetensors_is_not_a_model(tmp_path):
    p = tmp_path / "readme.safetensors"
    p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    assert formats.sniff_format(p) == formats.UNKNOWN
    with pytest.raises(ModelLoadError, match="not a model file"):
        formats.load_state_dict(p)


def test_truncated_pickle_checkpoint(tmp_path):
    p = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.randn(256, 256)}}, p)
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        formats.load_state_dict(p)


def test_pickle_without_tensors_is_not_a_model(tmp_path):
    p = tmp_path / "list.ckpt"
    torch.save([1, 2, 3], p)
    with pytest.raises(ModelLoadError, match="not a model file"):
        formats.load_state_dict(p)


def test_corrupt_safetensors_header_json(tmp_path):
    p = tmp_path / "bad.safetensors"
    header = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]'  # unterminated JSON
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(ModelLoadError, match="corrupt safetensors header"):
        formats.load_state_dict(p)


def test_header_shapes_are_read_without_loading_weights(tmp_path):
    p = tmp_path / "m.safetensors"
    save_file(_tensors(), p)
    assert formats.tensor_shapes(p) == {"a.weight": (2, 3), "b.bias": (4,)}


def test_no_unsafe_torch_load_anywhere_in_the_package():
    """There is no fallback to unsafe loading: every torch.load in sdui passes weights_only=True."""
    root = Path(__file__).resolve().parent.parent / "sdui"
    offenders = []
    for path in root.rglob("*.py"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path}:{lineno}")
            if "weights_only=False" in line or "pickle.load(" in line:
                offenders.append(f"{path}:{lineno}")
    assert offenders == []
