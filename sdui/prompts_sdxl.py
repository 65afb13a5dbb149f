"""SDXL prompts as AUTOMATIC1111 encodes them (``modules/sd_models_xl.py``, ``modules/sd_hijack_clip.py``).

- Both text encoders read the same A1111 prompt (emphasis ``(word:1.2)``, ``[word]``, ``BREAK``,
  75-token chunks; ``prompts.tokenize``), each with its own tokenizer: CLIP ViT-L pads with its end
  token, OpenCLIP ViT-bigG with ``!`` (id 0), as in A1111 and diffusers.
- Each chunk goes through each encoder on its own (as A1111 loops over chunks); the hidden states
  taken are the penultimate layer's, without the final layer norm (A1111: ``layer="hidden",
  layer_idx=11`` for CLIP-L, ``layer="penultimate"`` for OpenCLIP-G; diffusers: ``hidden_states[-2]``).
  Emphasis multiplies each encoder's chunk and restores that chunk's mean ("Original" emphasis).
  The two encoders' states are concatenated on the feature axis (768 + 1280 = 2048 on SDXL), the
  chunks on the token axis.
- The pooled embedding (SDXL's ``text_embeds``) is the second encoder's projection of the FIRST chunk
  (A1111 ``zs[0].pooled``), never weighted.
- An empty negative prompt is zeros, both the hidden states and the pooled vector (A1111
  ``force_zero_negative_prompt``; diffusers ``force_zeros_for_empty_prompt``).
- Size conditioning: A1111 sends ``original_size = target_size = (height, width)`` of the request and
  ``crops_coords_top_left = (0, 0)`` (its ``sdxl_crop_top``/``sdxl_crop_left`` options default to 0),
  which are diffusers' defaults, so the pipelines get no size arguments.
- Clip skip does not apply (A1111's ``sdxl_clip_l_skip`` option is off by default).

Exactness: a prompt with no emphasis and at most 75 tokens gives exactly diffusers' ``encode_prompt``
embeddings (same ids, same layers, no multiplication), so such prompts generate the same pixels as
handing diffusers the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from . import prompt_schedule, prompts


@dataclass
class XLConditioning(prompts.Conditioning):
    pooled_prompt_embeds: Any = None
    negative_pooled_prompt_embeds: Any = None


def encoders(pipe) -> list[tuple[Any, Any]]:
    """(tokenizer, text encoder) pairs the pipeline has, in SDXL's order (the refiner has only the second)."""
    pairs = [(getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)),
             (getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None))]
    return [(t, e) for t, e in pairs if t is not None and e is not None]


def _weighted(z, chunks: prompts.TokenChunks):
    """A1111's "Original" emphasis, chunk by chunk: multiply, then restore the chunk's mean."""
    import torch

    if not chunks.emphasised:
        return z
    w = torch.tensor(chunks.weights, device=z.device, dtype=z.dtype).unsqueeze(-1)
    original_mean = z.mean(dim=(1, 2), keepdim=True)
    z = z * w
    return z * (original_mean / z.mean(dim=(1, 2), keepdim=True))


def encode_text(pipe, text: str, device) -> tuple[Any, Any, int]:
    """(hidden states (1, 77 * chunks, width), pooled (1, projection), tokens cut) of one prompt."""
    import torch

    pairs = encoders(pipe)
    tokenized = [prompts.tokenize(tok, text) for tok, _ in pairs]
    count = max(len(t.ids) for t in tokenized)
    for (tok, _), chunks in zip(pairs, tokenized, strict=True):
        while len(chunks.ids) < count:  # the encoders' tokenizers split alike; should one not, pad with empty chunks
            empty = prompts.tokenize(tok, "")
            chunks.ids += empty.ids
            chunks.weights += empty.weights
    chunk_states, pooled = [], None
    for i in range(count):  # chunk by chunk, as A1111 does (a chunk's result does not depend on the others)
        states = []
        for (_, encoder), chunks in zip(pairs, tokenized, strict=True):
            one = prompts.TokenChunks(chunks.ids[i:i + 1], chunks.weights[i:i + 1])
            out = encoder(torch.tensor(one.ids, device=device), output_hidden_states=True)
            if i == 0 and out[0].ndim == 2:  # CLIPTextModelWithProjection's text_embeds: the first chunk's is SDXL's
                pooled = out[0]
            states.append(_weighted(out.hidden_states[-2], one))
        chunk_states.append(torch.cat(states, dim=-1))
    z = torch.cat(chunk_states, dim=1)
    dtype = pairs[-1][1].dtype
    return z.reshape(1, -1, z.shape[-1]).to(dtype), pooled.to(dtype), tokenized[0].truncated_tokens


def encode(pipe, prompt: str, negative_prompt: str, device) -> XLConditioning:
    """Positive and negative embeddings of equal length, with their pooled vectors, for an SDXL pipeline."""
    import torch

    warnings = []
    with torch.no_grad():
        c, pooled, cut = encode_text(pipe, prompt, device)
        if cut:
            warnings.append(f"prompt was cut: {cut} tokens past {prompts.MAX_CHUNKS * prompts.CHUNK} were ignored")
        if negative_prompt == "" and getattr(pipe.config, "force_zeros_for_empty_prompt", True):
            uc, neg_pooled = torch.zeros_like(c), torch.zeros_like(pooled)
        else:
            uc, neg_pooled, cut = encode_text(pipe, negative_prompt, device)
            if cut:
                warnings.append(f"negative prompt was cut: {cut} tokens past {prompts.MAX_CHUNKS * prompts.CHUNK} "
                                "were ignored")
        if c.shape[1] != uc.shape[1]:  # as prompts.encode: pad the shorter side with the empty prompt's encoding
            empty = encode_text(pipe, "", device)[0]
            while c.shape[1] < uc.shape[1]:
                c = torch.cat([c, empty], dim=1)
            while uc.shape[1] < c.shape[1]:
                uc = torch.cat([uc, empty], dim=1)
    return XLConditioning(c, uc, warnings, pooled, neg_pooled)


@dataclass
class XLConditioningSchedule(prompt_schedule.ConditioningSchedule):
    """A prompt-editing schedule whose entries also carry SDXL's pooled vectors (aligned with
    ``positive``/``negative``)."""

    pooled_positive: list = field(default_factory=list)
    pooled_negative: list = field(default_factory=list)

    def pipeline_tensors(self, call: int, images: int, guidance: bool) -> dict:
        """What an SDXL pipeline holds in its loop for model call ``call``: ``prompt_embeds`` and
        ``add_text_embeds`` (the pooled vectors), each repeated per image, negative first under CFG."""
        import torch

        p, n = self.indexes(call)
        pooled = self.pooled_positive[p][1].repeat(images, 1)
        if guidance:
            pooled = torch.cat([self.pooled_negative[n][1].repeat(images, 1), pooled])
        return {"prompt_embeds": self.pipeline_embeds(call, images, guidance), "add_text_embeds": pooled}


@dataclass
class XLScheduledConditioning(prompt_schedule.ScheduledConditioning):
    pooled_prompt_embeds: Any = None
    negative_pooled_prompt_embeds: Any = None


def encode_schedule(pipe, prompt: str, negative_prompt: str, steps: int, device,
                    hires_steps: Optional[int] = None) -> XLScheduledConditioning:
    """``prompt_schedule.encode_schedule`` for SDXL: prompt editing ``[from:to:when]`` and alternation
    ``[a|b]`` switch both the hidden states and the pooled vectors at the same steps."""
    pooled_pos: dict[str, Any] = {}
    pooled_neg: dict[str, Any] = {}

    def encode_pair(p: str, n: str) -> XLConditioning:
        cond = encode(pipe, p, n, device)
        pooled_pos.setdefault(p, cond.pooled_prompt_embeds)
        pooled_neg.setdefault(n, cond.negative_pooled_prompt_embeds)
        return cond

    cond = prompt_schedule.encode_schedule(encode_pair, prompt, negative_prompt, steps, hires_steps)
    pos = prompt_schedule.prompt_schedule(prompt, steps, hires_steps)
    neg = prompt_schedule.prompt_schedule(negative_prompt, steps, hires_steps)
    schedule = None
    if cond.schedule is not None:
        schedule = XLConditioningSchedule(cond.schedule.positive, cond.schedule.negative,
                                          [(end, pooled_pos[t]) for end, t in pos], [(end, pooled_neg[t]) for end, t in neg])
    first_pos, first_neg = (schedule.indexes(0) if schedule else (0, 0))
    return XLScheduledConditioning(cond.prompt_embeds, cond.negative_prompt_embeds, schedule, cond.warnings,
                                   pooled_pos[pos[first_pos][1]], pooled_neg[neg[first_neg][1]])
