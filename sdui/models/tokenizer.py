"""The CLIP tokenizer, built from the BPE vocabulary that ships inside open_clip_torch.

Every Stable Diffusion text encoder (CLIP ViT-L for SD 1.x and SDXL, OpenCLIP ViT-H/bigG for
SD 2.x and SDXL) uses the same 49,408-token byte-level BPE. open_clip ships it as
``bpe_simple_vocab_16e6.txt.gz``; we turn it into the ``vocab.json`` + ``merges.txt`` pair that
``transformers.CLIPTokenizer.from_pretrained(folder)`` reads (transformers 5's ``vocab_file=``
constructor silently builds a 3-token vocabulary, so a folder it must be).

The folder is shipped as package data (the repository's ``assets/tokenizer``, installed as
``sdui/assets/tokenizer``; see ``sdui.assets_path``); ``python -m sdui.models.tokenizer``
regenerates it and a test checks the shipped files equal a fresh build.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from pathlib import Path

from ..assets_path import TOKENIZER_DIR

# open_clip's SimpleTokenizer keeps the first 49152 - 256 - 2 merges (see its __init__).
_N_MERGES = 49152 - 256 - 2
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# SD 2.x and SDXL's second encoder pad with "!" (token 0) as open_clip does; SD 1.x pads with EOS.
OPENCLIP_PAD = "!"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode table (the base of the CLIP vocabulary)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=False))


def open_clip_bpe_path() -> str:
    from open_clip.tokenizer import default_bpe

    return default_bpe()


def build_vocab_and_merges(bpe_path: str | None = None) -> tuple[dict[str, int], list[str]]:
    with gzip.open(bpe_path or open_clip_bpe_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : _N_MERGES + 1]
    base = list(_bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_tokenizer_files(folder: str | os.PathLike, bpe_path: str | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab_and_merges(bpe_path)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def import_clip_tokenizer():
    """transformers' CLIPTokenizer class. transformers imports its classes lazily and that import is
    not thread-safe: the page's token counter asking for the tokenizer while another thread loads a
    model failed with "cannot import name 'CLIPTokenizer' from 'transformers'". The engine calls this
    once, in the thread that builds it, before either can start."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer


@functools.lru_cache(maxsize=4)
def load_clip_tokenizer(pad_token: str | None = None, folder: str | None = None):
    """A real CLIPTokenizer from the shipped folder; ``pad_token="!"`` for OpenCLIP encoders."""
    CLIPTokenizer = import_clip_tokenizer()
    kwargs = {"pad_token": pad_token} if pad_token else {}
    tok = CLIPTokenizer.from_pretrained(str(folder or TOKENIZER_DIR), local_files_only=True, **kwargs)
    if len(tok) != 49408:
        raise RuntimeError(f"CLIP tokenizer in {folder or TOKENIZER_DIR} has {len(tok)} tokens, expected 49408")
    return tok


if __name__ == "__main__":
    print(write_tokenizer_files(TOKENIZER_DIR))
