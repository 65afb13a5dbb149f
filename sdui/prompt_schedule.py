"""A1111 prompt editing and alternation: ``[from:to:when]``, ``[to:when]``, ``[from::when]`` and ``[a|b|c]``.

A prompt with this syntax becomes a schedule: a list of ``(end_step, text)`` pairs, each text an
ordinary prompt (emphasis, BREAK and long prompts still work inside it) that ``prompts.encode`` turns
into embeddings. At each denoising step the pipeline gets the embeddings of the first pair whose
``end_step`` covers the step. The rules are AUTOMATIC1111's ``modules/prompt_parser.py``:

- grammar (its lark grammar, parsed here by a small recursive-descent parser: no lark dependency).
  Inside an edit, an alternation or emphasis the brackets must balance; at the top level a bracket
  group that does not parse, and a stray ``[ ] ( ) :``, is text. A ``|`` outside ``[...]`` (or a
  lone trailing backslash) makes A1111's parser fail, and the whole prompt is used as written.
  Escaped ``\\[`` ``\\]`` ``\\(`` ``\\)`` stay text (kept escaped, so the emphasis parser later
  reads them as literal brackets). Emphasis ``(...)``, ``(...:w)`` and ``[...]`` around or inside
  edits is kept as text, so ``([cat:dog:5]:1.2)`` weights both. One difference: where an unbalanced
  prompt can be read two ways (a run of stray brackets right after an edit, as in
  ``(a [cat:dog:5]))``), A1111's Earley parser sometimes settles on the literal reading; here a
  bracket group that parses is always a group. On prompts whose brackets balance the schedules are
  the same (checked against A1111's parser on random prompts).
- ``when`` (``get_learned_conditioning_prompt_schedules``, A1111 >= 1.6, "old prompt editing
  timelines" off): a number with a decimal point is a fraction of the steps (``0.25`` -> 25 of
  100), one without is a step number (``16``); ``int()`` truncates and the result is capped at the
  steps. An edit that lands before step 1 (``0``, ``0.0``, negative) is simply "to" from the start.
- alternation ``[a|b|c]``: schedule step ``t`` (1-based) uses option ``(t - 1) % n``; an empty
  option is allowed (``[fe|]male``).
- which pair a step uses (``reconstruct_cond_batch``): A1111's CFG denoiser counts model calls from
  0 (``CFGDenoiser.step``) and uses the first pair with ``call <= end_step``. So
  ``[fantasy:cyberpunk:16]`` at 100 steps is "fantasy" for calls 0..16 and "cyberpunk" from call
  17, and ``[cat|dog]`` runs cat, cat, dog, cat, dog, ... (its schedule entries 1, 2, 3, ... start
  at 1 while the calls start at 0). sdui does the same with diffusers' step index.
- how many steps the schedule spans (``StableDiffusionProcessing.setup_conds``): the requested
  steps, doubled for A1111's "second order" samplers (``SamplerData.total_steps``), whose every
  step is two model calls. img2img and inpaint use the same span although only about
  ``steps * denoising strength`` calls run, counted from 0 (A1111 does this too: an edit at
  ``0.5`` with strength 0.5 never happens).

- the Hires. fix second pass (``calculate_hr_conds``): its own schedule over its own steps
  (``hires_steps=``, doubled for a second-order hires sampler), on A1111's hires timeline: a
  fraction above 1 or a step number past the first pass's steps lands in the second pass
  (``[cat:dog:1.5]`` switches at half of the hires steps); an edit that ended in the first pass
  is "to" all through the second (``[cat:dog:0.5]``). The ``hr_prompt`` takes the same syntax.

Not done here: ``AND`` (composable diffusion), SDXL pipelines (which get the prompt as text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

# A1111's samplers whose options say "second_order" (sd_samplers_kdiffusion.samplers_k_diffusion);
# SamplerData.total_steps doubles the schedule's steps for them.
SECOND_ORDER_SAMPLERS = frozenset({"Heun", "DPM2", "DPM2 a", "DPM++ SDE", "DPM++ 2S a"})
MAX_NESTING = 100  # brackets nested deeper than this: the prompt is used as written

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")  # A1111's `plain` terminal
_STRAY = "[]():"  # what A1111's start rule lets stand alone as text at the top level
_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)\s*")  # [WS] SIGNED_NUMBER [WS]


# ---- parse tree: a list of nodes; a node is text, a nested list, an Edit or an Alternation ----------
@dataclass
class Edit:
    """``[before:after:when]``; ``before`` is None for ``[after:when]``."""

    before: Optional[list]
    after: list
    when: str
    end: int = 0  # the step it switches after, for the schedule being built


@dataclass
class Alternation:
    options: list


Node = Union[str, list, Edit, Alternation]


class _NoParse(Exception):
    pass


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.groups: dict[int, Any] = {}  # start -> (node, end) or None: each bracket is parsed once

    def start(self) -> list:
        """A1111's ``start: (prompt | /[][():]/+)*``: groups where they parse, else stray text."""
        text, out, i = self.text, [], 0
        while i < len(text):
            nodes, i = self.prompt(i, 0)
            out.extend(nodes)
            if i < len(text):
                if text[i] not in _STRAY:
                    raise _NoParse  # "|" outside brackets, or a lone trailing backslash
                out.append(text[i])
                i += 1
        return out

    def prompt(self, i: int, depth: int) -> tuple[list, int]:
        """As many plain runs and brackets as parse from ``i``; stops at anything else."""
        text, out = self.text, []
        while i < len(text):
            m = _PLAIN.match(text, i)
            if m:
                out.append(m.group(0))
                i = m.end()
                continue
            if text[i] not in "[(":
                break
            group = self.group(i, depth + 1)
            if group is None:
                break
            node, i = group
            out.append(node)
        return out, i

    def group(self, i: int, depth: int):
        if i not in self.groups:
            if depth > MAX_NESTING:
                raise _NoParse
            self.groups[i] = self._group(i, depth)
        return self.groups[i]

    def _group(self, i: int, depth: int):
        text = self.text
        first, j = self.prompt(i + 1, depth)
        sep = text[j] if j < len(text) else ""
        if text[i] == "(":  # emphasis: (p) or (p:p)
            if sep == ")":
                return ["(", first, ")"], j + 1
            if sep == ":":
                second, k = self.prompt(j + 1, depth)
                if text[k:k + 1] == ")":
                    return ["(", first, ":", second, ")"], k + 1
            return None
        if sep == "]":  # [p]: de-emphasis
            return ["[", first, "]"], j + 1
        if sep == "|":
            options = [first]
            while text[j:j + 1] == "|":
                option, j = self.prompt(j + 1, depth)
                options.append(option)
            return (Alternation(options), j + 1) if text[j:j + 1] == "]" else None
        if sep != ":":
            return None
        second, k = self.prompt(j + 1, depth)
        if text[k:k + 1] == "]":  # [to:when]: what follows the colon must be the number
            m = _NUMBER.fullmatch(text, j + 1, k)
            return (Edit(None, first, m.group(1)), k + 1) if m else None
        if text[k:k + 1] == ":":  # [from:to:when]
            m = _NUMBER.match(text, k + 1)
            if m and text[m.end():m.end() + 1] == "]":
                return Edit(first, second, m.group(1)), m.end() + 1
        return None


def parse(text: str) -> Optional[list]:
    """The parse tree of ``text``, or None where A1111's parser would fail (then the prompt is used as
    written)."""
    try:
        return _Parser(text).start()
    except _NoParse:
        return None


def _walk(nodes):
    for node in nodes:
        if isinstance(node, list):
            yield from _walk(node)
        elif isinstance(node, Edit):
            yield node
            yield from _walk([node.before or [], node.after])
        elif isinstance(node, Alternation):
            yield node
            yield from _walk(node.options)


def _text_at(nodes, step: int) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, list):
            out.append(_text_at(node, step))
        elif isinstance(node, Edit):
            out.append(_text_at(node.before or [] if step <= node.end else node.after, step))
        else:
            out.append(_text_at(node.options[(step - 1) % len(node.options)], step))
    return "".join(out)


def prompt_schedule(prompt: str, steps: int, hires_steps: Optional[int] = None,
                    use_old_scheduling: bool = False) -> list[tuple[int, str]]:
    """``[(end_step, text), ...]`` for ``prompt``, as A1111's ``get_learned_conditioning_prompt_schedules``:
    ``"a [fantasy:cyberpunk:16] landscape"``, 100 -> ``[(16, "a fantasy landscape"), (100, "a cyberpunk landscape")]``.

    ``hires_steps``: the schedule of a hires fix second pass (integer ``when`` counts on from the
    first pass's ``steps``; a fraction is of both passes, 1.0 being the end of the first).
    ``use_old_scheduling``: A1111's "Use old prompt editing timelines" (``when`` < 1 is a fraction).
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, span = 0, 0.0, steps
    else:
        int_offset, flt_offset, span = steps, 1.0, hires_steps
    tree = parse(prompt)
    if tree is None:
        return [(span, prompt)]
    ends = {span}
    for node in _walk(tree):
        if isinstance(node, Alternation):
            ends.update(range(1, span + 1))
            continue
        v = float(node.when)
        if use_old_scheduling:
            v = v * span if v < 1 else v
        elif "." in node.when:
            v = (v - flt_offset) * span
        else:
            v = v - int_offset
        node.end = min(span, int(v))
        if node.end >= 1:
            ends.add(node.end)
    return [(t, _text_at(tree, t)) for t in sorted(ends)]


def is_edited(prompt: str, steps: int) -> bool:
    """Whether ``prompt`` edits or alternates anything over ``steps`` (else it is used as written)."""
    schedule = prompt_schedule(prompt, steps)
    return len(schedule) > 1 or schedule[0][1] != prompt


def entry_index(ends: list[int], call: int) -> int:
    """The schedule entry model call ``call`` (0-based) uses: the first whose end covers it, else the
    first (A1111's ``reconstruct_cond_batch``)."""
    for index, end in enumerate(ends):
        if call <= end:
            return index
    return 0


def total_steps(sampler: str, steps: int) -> int:
    """The steps a schedule spans for ``sampler`` (A1111 ``SamplerData.total_steps``): twice the steps
    for a second-order sampler, which calls the model twice a step."""
    return steps * 2 if sampler in SECOND_ORDER_SAMPLERS else steps


# ---- conditioning ---------------------------------------------------------------------------------
@dataclass
class ConditioningSchedule:
    """The embeddings of every schedule entry, positive and negative, all of one length."""

    positive: list[tuple[int, Any]]  # (end_step, embeddings (1, tokens, dim))
    negative: list[tuple[int, Any]]

    def indexes(self, call: int) -> tuple[int, int]:
        return (entry_index([e for e, _ in self.positive], call), entry_index([e for e, _ in self.negative], call))

    def at(self, call: int) -> tuple[Any, Any]:
        """(positive, negative) embeddings for model call ``call``."""
        p, n = self.indexes(call)
        return self.positive[p][1], self.negative[n][1]

    def pipeline_embeds(self, call: int, images: int, guidance: bool):
        """What a diffusers SD pipeline holds as ``prompt_embeds`` in its loop for call ``call``: each
        side repeated per image and, with classifier-free guidance, ``cat([negative, positive])``."""
        import torch

        c, uc = self.at(call)
        c = c.repeat(images, 1, 1)
        return torch.cat([uc.repeat(images, 1, 1), c]) if guidance else c


@dataclass
class ScheduledConditioning:
    """The embeddings a pipeline starts with and, when either prompt is edited or alternates, the
    schedule that changes them (None: the same embeddings at every step)."""

    prompt_embeds: Any
    negative_prompt_embeds: Any
    schedule: Optional[ConditioningSchedule] = None
    warnings: list[str] = field(default_factory=list)


def encode_schedule(encode: Callable[[str, str], Any], prompt: str, negative_prompt: str, steps: int,
                    hires_steps: Optional[int] = None) -> ScheduledConditioning:
    """Encode ``prompt`` and ``negative_prompt`` with their schedules for ``steps`` (see ``total_steps``).

    ``encode(prompt, negative)`` returns a ``prompts.Conditioning`` (e.g. ``prompts.encode`` bound to a
    pipeline). A prompt pair without editing syntax is one ``encode`` call, exactly as without this
    module; otherwise every distinct text is encoded once and every entry is padded with the empty
    prompt's encoding to the longest (as ``prompts.encode`` pads positive and negative).
    """
    pos = prompt_schedule(prompt, steps, hires_steps)
    neg = prompt_schedule(negative_prompt, steps, hires_steps)
    if len(pos) == 1 and len(neg) == 1:
        cond = encode(pos[0][1], neg[0][1])
        return ScheduledConditioning(cond.prompt_embeds, cond.negative_prompt_embeds, None, list(cond.warnings))
    pos_texts = list(dict.fromkeys(t for _, t in pos))
    neg_texts = list(dict.fromkeys(t for _, t in neg))
    encoded_pos: dict[str, Any] = {}
    encoded_neg: dict[str, Any] = {}
    warnings: list[str] = []
    for i in range(max(len(pos_texts), len(neg_texts))):
        p = pos_texts[i] if i < len(pos_texts) else ""
        n = neg_texts[i] if i < len(neg_texts) else ""
        cond = encode(p, n)
        encoded_pos.setdefault(p, cond.prompt_embeds)
        encoded_neg.setdefault(n, cond.negative_prompt_embeds)
        warnings += [w for w in cond.warnings if w not in warnings]
    everything = [*encoded_pos.values(), *encoded_neg.values()]
    longest = max(e.shape[1] for e in everything)
    if any(e.shape[1] != longest for e in everything):
        import torch

        empty = encode("", "").prompt_embeds

        def pad(e):
            while e.shape[1] < longest:
                e = torch.cat([e, empty], dim=1)
            return e

        encoded_pos = {t: pad(e) for t, e in encoded_pos.items()}
        encoded_neg = {t: pad(e) for t, e in encoded_neg.items()}
    schedule = ConditioningSchedule([(end, encoded_pos[t]) for end, t in pos], [(end, encoded_neg[t]) for end, t in neg])
    c, uc = schedule.at(0)
    return ScheduledConditioning(c, uc, schedule, warnings)
