"""A1111 prompt syntax -> text-encoder embeddings.

Supported as AUTOMATIC1111 does: ``(word)`` x1.1, ``[word]`` /1.1, ``(word:1.3)``, escaped
``\\(`` ``\\)`` ``\\[`` ``\\]``, prompts longer than 75 tokens (encoded in 75-token chunks and
concatenated) and ``BREAK`` (start a new chunk). Emphasis multiplies the chunk's hidden states and
then restores their mean ("Original" emphasis in A1111).

Why not compel: its weighting syntax is ``word+``/``(word)1.3`` and its A1111 mode does not
reproduce A1111's chunking and mean restoration; users paste A1111 prompts, so we follow A1111.

Exactness: a prompt with no emphasis and at most 75 tokens gives exactly the embeddings of
diffusers' own ``encode_prompt`` (same ids: BOS + tokens + EOS + pad to 77; no multiplication).

LoRA tags (``<lora:name:weight>``, A1111's extra-network syntax) are taken out of the text by
``extract_lora_tags`` before encoding; the model manager applies the LoRAs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .types import InvalidRequest

CHUNK = 75
MAX_CHUNKS = 20  # 1,500 tokens; the rest is cut and reported

_ATTENTION = re.compile(
    r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|   # escapes
\(|\[|                        # openers
:\s*([+-]?[.\d]+)\s*\)|       # (text:1.3) closer
\)|]|                         # closers
[^\\()\[\]:]+|                # plain text
:
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_attention(text: str) -> list[tuple[str, float]]:
    """``"a (cat:1.2) [dog]"`` -> ``[("a ", 1.0), ("cat", 1.2), (" ", 1.0), ("dog", 0.909...)]``.

    ``("BREAK", -1)`` marks a chunk break. Unbalanced brackets apply to the end of the text.
    """
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for item in res[start:]:
            item[1] *= factor

    for m in _ATTENTION.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_open.append(len(res))
        elif piece == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            multiply_from(round_open.pop(), float(weight))
        elif piece == ")" and round_open:
            multiply_from(round_open.pop(), 1.1)
        elif piece == "]" and square_open:
            multiply_from(square_open.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(_BREAK.split(piece)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_open:
        multiply_from(pos, 1.1)
    for pos in square_open:
        multiply_from(pos, 1 / 1.1)
    if not res:
        res = [["", 1.0]]
    merged = [res[0]]
    for item in res[1:]:
        if item[1] == merged[-1][1] and item[1] != -1:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return [(t, w) for t, w in merged]


@dataclass
class TokenChunks:
    ids: list[list[int]] = field(default_factory=list)  # each BOS + 75 + EOS = 77
    weights: list[list[float]] = field(default_factory=list)
    truncated_tokens: int = 0

    @property
    def emphasised(self) -> bool:
        return any(w != 1.0 for chunk in self.weights for w in chunk)


# The tokens a textual-inversion embedding of ``count`` vectors is written as (models/embeddings.py adds
# them to the model's tokenizer); ``tokenize`` reads them back to keep an embedding's vectors in one chunk.
_EMBEDDING_TOKEN = re.compile(r"<ti-(\w+)-(\d+)>")


def embedding_tokens(key: str, count: int) -> list[str]:
    return [f"<ti-{key}-{i}>" for i in range(count)]


def _embedding_starts(tokenizer) -> dict[int, int]:
    """Token id of each multi-vector embedding's first vector -> how many vectors it has."""
    added = getattr(tokenizer, "get_added_vocab", dict)()
    counts: dict[str, int] = {}
    firsts: dict[str, int] = {}
    for token, token_id in added.items():
        m = _EMBEDDING_TOKEN.fullmatch(token)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
            if m.group(2) == "0":
                firsts[m.group(1)] = token_id
    return {firsts[k]: n for k, n in counts.items() if k in firsts and n > 1}


def tokenize(tokenizer, text: str) -> TokenChunks:
    """A1111-style chunking of a prompt into 77-token windows with per-token weights. A multi-vector
    embedding that would straddle a chunk boundary starts the next chunk whole, the current one padded
    (A1111 ``sd_hijack_clip``: ``if len(chunk.tokens) + emb_len > chunk_length: next_chunk()``)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    out = TokenChunks()
    cur_ids: list[int] = []
    cur_w: list[float] = []

    def close(force: bool = False) -> None:
        nonlocal cur_ids, cur_w
        if not cur_ids and not force:
            return
        n = len(cur_ids)
        out.ids.append([bos] + cur_ids + [eos] + [pad] * (CHUNK - n))
        out.weights.append([1.0] + cur_w + [1.0] * (CHUNK - n + 1))
        cur_ids, cur_w = [], []

    fragments = parse_attention(text)
    texts = [t for t, w in fragments if w != -1]
    encoded = tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"] if texts else []
    it = iter(encoded)
    starts = _embedding_starts(tokenizer) if "<ti-" in text else {}
    for _text, weight in fragments:
        if weight == -1:
            close(force=True)
            continue
        for tok in next(it):
            if len(cur_ids) == CHUNK or (tok in starts and len(cur_ids) + starts[tok] > CHUNK):
                close()
            cur_ids.append(tok)
            cur_w.append(weight)
    close(force=not out.ids)
    if len(out.ids) > MAX_CHUNKS:
        out.truncated_tokens = sum(sum(1 for t in c[1:-1] if t != pad) for c in out.ids[MAX_CHUNKS:])
        out.ids, out.weights = out.ids[:MAX_CHUNKS], out.weights[:MAX_CHUNKS]
    return out


def _encode_chunks(text_encoder, chunks: TokenChunks, device, clip_skip: int = 1):
    import torch

    ids = torch.tensor(chunks.ids, device=device)
    dtype = text_encoder.dtype
    if clip_skip > 1:
        # A1111 (sd_hijack_clip.encode_with_transformers): the hidden state clip_skip layers from the
        # end, through the final layer norm; diffusers' clip_skip=k is A1111's k+1
        hidden = text_encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
        # transformers 5's CLIPTextModel holds the layer norm itself (4.x: under .text_model)
        z = getattr(text_encoder, "text_model", text_encoder).final_layer_norm(hidden)
    else:
        z = text_encoder(ids)[0]  # (chunks, 77, dim)
    if chunks.emphasised:
        w = torch.tensor(chunks.weights, device=device, dtype=z.dtype).unsqueeze(-1)
        # A1111 (sd_hijack_clip.process_tokens) restores the mean chunk by chunk, so emphasis in
        # one 75-token chunk does not rescale the others
        original_mean = z.mean(dim=(1, 2), keepdim=True)
        z = z * w
        z = z * (original_mean / z.mean(dim=(1, 2), keepdim=True))
    return z.reshape(1, -1, z.shape[-1]).to(dtype)


@dataclass
class Conditioning:
    prompt_embeds: object
    negative_prompt_embeds: object
    warnings: list[str] = field(default_factory=list)


def encode(pipe, prompt: str, negative_prompt: str, device, clip_skip: int = 1) -> Conditioning:
    """Positive and negative embeddings of equal length for an SD 1.x/2.x pipeline (``clip_skip`` as
    A1111's: 1 = the last layer)."""
    import torch

    tok, enc = pipe.tokenizer, pipe.text_encoder
    pos, neg = tokenize(tok, prompt), tokenize(tok, negative_prompt)
    warnings = []
    for label, chunks in (("prompt", pos), ("negative prompt", neg)):
        if chunks.truncated_tokens:
            warnings.append(f"{label} was cut: {chunks.truncated_tokens} tokens past {MAX_CHUNKS * CHUNK} were ignored")
    with torch.no_grad():
        c = _encode_chunks(enc, pos, device, clip_skip)
        uc = _encode_chunks(enc, neg, device, clip_skip)
        if c.shape[1] != uc.shape[1]:
            # as A1111: pad the shorter side with the empty prompt's encoding
            empty = _encode_chunks(enc, tokenize(tok, ""), device, clip_skip)
            while c.shape[1] < uc.shape[1]:
                c = torch.cat([c, empty], dim=1)
            while uc.shape[1] < c.shape[1]:
                uc = torch.cat([uc, empty], dim=1)
    return Conditioning(c, uc, warnings)


def token_count(tokenizer, text: str) -> int:
    """Tokens in the prompt (what the UI shows as 'n/75'), without its ``<lora:...>`` (and any other
    extra-network) tags, which never reach the encoder (A1111's token counter strips them too)."""
    text = EXTRA_NETWORK_TAG.sub("", text)
    return sum(len(ids) for ids in tokenizer([t for t, w in parse_attention(text) if w != -1],
                                             add_special_tokens=False)["input_ids"])


# ---- LoRA tags: A1111's extra-network syntax --------------------------------------------------
# A1111 (modules/extra_networks.py) removes every ``<type:args>`` tag from the prompt before it is
# encoded, whatever the type, and splits args on ":"; an item holding one "=" is named
# (``te=0.5``), the others positional. Its Lora extension (extra_networks_lora.py) reads
# ``<lora:name[:te[:unet[:dyn]]]>`` with te defaulting to 1.0 and unet to te, then lets named
# ``te=``/``unet=`` override them; ``lyco`` is an alias of ``lora``.
EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")
LORA_TYPES = ("lora", "lyco")
_LORA_FORM = ("a LoRA tag: <lora:name>, <lora:name:weight> or <lora:name:te_weight:unet_weight> "
              "(weights are finite numbers; te=… and unet=… may name them)")


@dataclass
class LoraTag:
    """One ``<lora:...>`` tag: the name as written, the text-encoder and UNet weights, the tag itself."""

    name: str
    te_weight: float
    unet_weight: float
    text: str


@dataclass
class ExtraNetworks:
    """A prompt with its extra-network tags taken out (the text the encoder sees), the LoRA tags
    in prompt order, and what could not be used (a sentence each)."""

    text: str
    loras: list[LoraTag] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def extract_lora_tags(text: str) -> ExtraNetworks:
    """``"a cat <lora:ink:0.8>"`` -> ``ExtraNetworks("a cat ", [LoraTag("ink", 0.8, 0.8, "<lora:ink:0.8>")])``.

    Every ``<type:args>`` tag is removed, as A1111 removes it, leaving the whitespace around it
    as it was. Tags of other types (``hypernet`` ...) are removed with a warning: sdui has no such
    networks. Raises InvalidRequest for a LoRA tag whose weights are not finite numbers (A1111
    would log an error and generate without any LoRA).
    """
    out = ExtraNetworks(text="")

    def found(m: re.Match) -> str:
        kind, args = m.group(1), m.group(2)
        if kind not in LORA_TYPES:
            out.warnings.append(f"{m.group(0)[:80]} was removed from the prompt: only <lora:...> tags are supported "
                                f"(A1111 removes every <{kind}:...> tag too)")
            return ""
        positional, named = [], {}
        for item in args.split(":"):
            parts = item.split("=", 2)
            if len(parts) == 2:
                named[parts[0]] = parts[1]
            else:
                positional.append(item)
        if not positional or not positional[0].strip():
            raise InvalidRequest("prompt", m.group(0), _LORA_FORM)
        try:
            te = float(positional[1]) if len(positional) > 1 else 1.0
            te = float(named.get("te", te))
            unet = float(positional[2]) if len(positional) > 2 else te
            unet = float(named.get("unet", unet))
        except ValueError:
            raise InvalidRequest("prompt", m.group(0), _LORA_FORM) from None
        if not (math.isfinite(te) and math.isfinite(unet)):
            raise InvalidRequest("prompt", m.group(0), _LORA_FORM)
        if len(positional) > 3 or "dyn" in named:
            out.warnings.append(f"{m.group(0)[:80]}: the DyLoRA dimension is not supported; the whole LoRA was used")
        out.loras.append(LoraTag(positional[0], te, unet, m.group(0)))
        return ""

    out.text = EXTRA_NETWORK_TAG.sub(found, text)
    return out
