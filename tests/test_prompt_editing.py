"""A1111 prompt editing ``[from:to:when]`` and alternation ``[a|b]``: the schedules A1111's
``prompt_parser.get_learned_conditioning_prompt_schedules`` makes, and the conditioning the UNet gets
at each model call (A1111's ``reconstruct_cond_batch``: call k, counted from 0, uses the first entry
whose end step is >= k)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from sdui import prompt_schedule, prompts, samplers
from sdui.prompt_schedule import entry_index, prompt_schedule as schedule
from sdui.types import GenerationRequest

CPU = torch.device("cpu")


# ---- schedules --------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt,expected", [
    # the examples in the docstring of A1111's get_learned_conditioning_prompt_schedules (10 steps)
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(t, "a" if t % 2 else "(b:1.1)") for t in range(1, 11)]),
    ("[fe|]male", [(t, "female" if t % 2 else "male") for t in range(1, 11)]),
    ("[fe|||]male", [(t, "female" if t % 4 == 1 else "male") for t in range(1, 11)]),
    # its docstring says [[5, 'a  c'], [10, 'a {b|d{ c']] ("not handling this right now"), but its lark
    # grammar cannot parse a "|" outside [a|b] at all, so A1111 itself uses the prompt as written
    ("a [{b|d{:.5] c", [(10, "a [{b|d{:.5] c")]),
])
def test_schedules_match_a1111(prompt, expected):
    assert schedule(prompt, 10) == expected


def test_a1111_source_comment_example():
    """The example at the top of A1111's prompt_parser.py, at 100 steps."""
    prompt = ("fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
              "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]")
    assert schedule(prompt, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


@pytest.mark.parametrize("prompt,steps,expected", [
    ("a [fantasy:cyberpunk:16] landscape", 100, [(16, "a fantasy landscape"), (100, "a cyberpunk landscape")]),
    ("a [fantasy:cyberpunk:0.25] landscape", 20, [(5, "a fantasy landscape"), (20, "a cyberpunk landscape")]),
    ("a cat[ in a hat::0.5]", 10, [(5, "a cat in a hat"), (10, "a cat")]),  # [from::when]: removed after
    ("a cat[ in a hat:4]", 10, [(4, "a cat"), (10, "a cat in a hat")]),  # [to:when]: added after
    ("[[a:b:0.3]:c:0.6]", 10, [(3, "a"), (6, "b"), (10, "c")]),  # nested
    ("[cat|dog]", 4, [(1, "cat"), (2, "dog"), (3, "cat"), (4, "dog")]),
    ("a [cat|dog|bird]", 4, [(1, "a cat"), (2, "a dog"), (3, "a bird"), (4, "a cat")]),
    ("[[cat|dog]:bird:2]", 4, [(1, "cat"), (2, "dog"), (3, "bird"), (4, "bird")]),  # alternation inside an edit
    ("([cat:dog:5]:1.2)", 10, [(5, "(cat:1.2)"), (10, "(dog:1.2)")]),  # emphasis around an edit stays
    ("[cat:dog:5] <lora:ink:0.5>", 10, [(5, "cat <lora:ink:0.5>"), (10, "dog <lora:ink:0.5>")]),
])
def test_editing_forms(prompt, steps, expected):
    assert schedule(prompt, steps) == expected


@pytest.mark.parametrize("when,expected", [
    ("1.0", [(10, "a")]),  # a decimal point makes it a fraction: 1.0 of the steps, so never
    ("0", [(10, "b")]),  # before step 1: "to" from the start
    ("0.0", [(10, "b")]),
    ("-3", [(10, "b")]),
    ("50", [(10, "a")]),  # capped at the steps
    ("0.99", [(9, "a"), (10, "b")]),  # int() truncates
    ("1e1", [(10, "a")]),  # a SIGNED_NUMBER without a point: a step number
    (" 4 ", [(4, "a"), (10, "b")]),
])
def test_when_follows_a1111_1_6_rules(when, expected):
    """A1111 >= 1.6 ("Use old prompt editing timelines" off): a point makes a fraction, else a step."""
    assert schedule(f"[a:b:{when}]", 10) == expected


def test_old_timelines_and_hires_steps():
    # the old rule: below 1 is a fraction, else a step number
    assert schedule("[a:b:1.0]", 10, use_old_scheduling=True) == [(1, "a"), (10, "b")]
    # the hires pass (A1111's docstring): steps count on from the first pass, fractions span both passes
    assert schedule("a [b:.5] c", 10, hires_steps=10) == [(10, "a b c")]
    assert schedule("a [b:1.5] c", 10, hires_steps=10) == [(5, "a  c"), (10, "a b c")]
    assert schedule("a [b:14] c", 10, hires_steps=10) == [(4, "a  c"), (10, "a b c")]


@pytest.mark.parametrize("prompt", [
    "a \\[cat:dog:3\\] b",  # escaped brackets are text
    "\\[cat|dog\\]",
    "a cat | a dog",  # a "|" outside [a|b]: A1111's parser fails and takes the prompt as written
    "[a:b]",  # no number
    "[a:b:c:3]",
    "[a|b:3]",
    "(a:1.2) [b] ((c))",  # emphasis only
    "[" * 500 + "deep" + "]" * 500,  # nested deeper than MAX_NESTING: as written
    "",
])
def test_not_editing_stays_as_written(prompt):
    assert schedule(prompt, 10) == [(10, prompt)]
    assert not prompt_schedule.is_edited(prompt, 10)


def test_escaped_brackets_reach_the_encoder_as_brackets():
    [(_, text)] = schedule("a \\[cat:dog:3\\] b", 10)
    assert prompts.parse_attention(text) == [("a [cat:dog:3] b", 1.0)]


def test_a_long_prompt_parses_quickly():
    """Each bracket is parsed once (20,000 characters is the request limit)."""
    assert len(schedule("[a:b:3] (c:1.1) [d|e] " * 900, 20)) == 20
    assert schedule("[x" * 10_000, 20) == [(20, "[x" * 10_000)]


def test_which_entry_each_model_call_uses():
    """A1111's reconstruct_cond_batch with its CFG denoiser's call count (from 0)."""
    ends = [16, 100]
    assert [entry_index(ends, k) for k in (0, 15, 16, 17, 99)] == [0, 0, 0, 1, 1]
    assert entry_index(ends, 101) == 0  # past the end: the first entry, as A1111
    alternation = [1, 2, 3, 4]
    assert [entry_index(alternation, k) for k in range(4)] == [0, 0, 1, 2]


def test_second_order_samplers_span_twice_the_steps():
    assert prompt_schedule.total_steps("Heun", 20) == 40
    assert prompt_schedule.total_steps("Euler a", 20) == 20
    known = set(samplers.sampler_names()) | set(samplers.UNAVAILABLE)
    assert prompt_schedule.SECOND_ORDER_SAMPLERS <= known


# ---- conditioning at each model call --------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(models_root, tmp_path_factory):
    from sdui.config import Settings
    from sdui.engine import Engine

    e = Engine(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path_factory.mktemp("outputs")),
                        no_watermark=True))
    yield e
    e.manager.release_all()


@contextmanager
def unet_calls(engine):
    """The encoder_hidden_states of every UNet call while the block runs."""
    engine.reload_checkpoint("tiny")
    unet = engine.manager.current.pipe.unet
    seen = []
    original = unet.forward

    def forward(*args, **kwargs):
        seen.append(kwargs["encoder_hidden_states"].detach().clone())
        return original(*args, **kwargs)

    unet.forward = forward
    try:
        yield seen
    finally:
        del unet.forward


def encoded(engine, text: str):
    """What prompts.encode gives ``text`` on the tiny model: (1, tokens, dim)."""
    return prompts.encode(engine.manager.current.pipe, text, "", CPU).prompt_embeds


def names(calls, texts: dict, side: str = "positive") -> list[str]:
    """For each UNet call, which of ``texts`` (name -> embeddings) every image of ``side`` got."""
    out = []
    for states in calls:
        half = states.shape[0] // 2
        rows = states[half:] if side == "positive" else states[:half]
        found = [name for name, e in texts.items() if all(torch.equal(row, e[0]) for row in rows)]
        out.append(found[0] if len(found) == 1 else "?")
    return out


def request(**kw):
    base = dict(prompt="a red cube", sampler="Euler", steps=4, width=64, height=64, seed=11, model="tiny", save=False)
    return GenerationRequest(**{**base, **kw})


def test_plain_prompt_is_byte_identical_to_a_plain_encode(engine):
    """No editing syntax: the embeddings of prompts.encode at every call, no schedule, and the same
    pixels as a diffusers call given those embeddings (what sdui did before prompt editing)."""
    req = request(prompt="a watercolor fox", negative_prompt="blurry", batch_size=2, steps=3)
    with unet_calls(engine) as calls:
        ours = engine.generate(req)
    pipe = engine.manager.current.pipe
    cond = prompts.encode(pipe, "a watercolor fox", "blurry", CPU)
    expected = torch.cat([cond.negative_prompt_embeds.repeat(2, 1, 1), cond.prompt_embeds.repeat(2, 1, 1)])
    assert len(calls) == 3 and all(torch.equal(c, expected) for c in calls)

    pipe.scheduler = samplers.make_scheduler(engine.manager.current.base_scheduler_config, "Euler")
    out = pipe(prompt_embeds=cond.prompt_embeds, negative_prompt_embeds=cond.negative_prompt_embeds,
               num_images_per_prompt=2, num_inference_steps=3, guidance_scale=req.cfg_scale, height=64, width=64,
               generator=[torch.Generator("cpu").manual_seed(s) for s in (11, 12)], output_type="pil")
    for got, want in zip(ours.images, out.images, strict=True):
        assert got.image.tobytes() == want.tobytes()


def test_edit_switches_after_its_end_step(engine):
    """``[red:blue:2]`` at 4 steps: schedule [(2, red), (4, blue)]; calls 0, 1, 2 use red, call 3 blue;
    with a batch of 2 every image gets it, the negative half stays the empty prompt's."""
    with unet_calls(engine) as calls:
        engine.generate(request(prompt="a [red:blue:2] cube", batch_size=2))
    red, blue, empty = encoded(engine, "a red cube"), encoded(engine, "a blue cube"), encoded(engine, "")
    assert [c.shape for c in calls] == [(4, 77, 32)] * 4
    assert names(calls, {"red": red, "blue": blue}) == ["red", "red", "red", "blue"]
    assert names(calls, {"empty": empty}, side="negative") == ["empty"] * 4


@pytest.mark.parametrize("prompt", ["a [red:blue:2] cube", "a [red:blue:0.5] cube"])
def test_edit_does_not_switch_one_step_early(engine, prompt):
    """The StepTracker runs after a call and sets up the next one: a tracker that used the entry of
    the call just finished (or counted calls from 1) would give call 2 "blue"."""
    with unet_calls(engine) as calls:
        engine.generate(request(prompt=prompt))
    red, blue = encoded(engine, "a red cube"), encoded(engine, "a blue cube")
    assert names(calls, {"red": red, "blue": blue})[2] == "red", "switched one step early"
    assert names(calls, {"red": red, "blue": blue})[3] == "blue"


def test_alternation_changes_every_call(engine):
    """``[red|blue]``: schedule entries 1, 2, 3, ... alternate; A1111's call count starts at 0, so calls 0
    and 1 both use entry 1 and from then on every call changes."""
    with unet_calls(engine) as calls:
        engine.generate(request(prompt="a [red|blue] cube", steps=6))
    got = names(calls, {"red": encoded(engine, "a red cube"), "blue": encoded(engine, "a blue cube")})
    assert got == ["red", "red", "blue", "red", "blue", "red"]
    assert all(a != b for a, b in zip(got[1:], got[2:], strict=False))


def test_negative_prompt_takes_the_same_syntax(engine):
    with unet_calls(engine) as calls:
        engine.generate(request(negative_prompt="[ugly:blurry:1]", steps=3))
    negatives = {"ugly": encoded(engine, "ugly"), "blurry": encoded(engine, "blurry")}
    assert names(calls, negatives, side="negative") == ["ugly", "ugly", "blurry"]
    assert names(calls, {"red": encoded(engine, "a red cube")}) == ["red"] * 3


def test_entries_of_different_lengths_are_padded_alike(engine):
    """A 2-chunk entry makes every entry (and the negative) 154 tokens: the shorter ones padded with
    the empty prompt's encoding, as prompts.encode pads positive and negative."""
    long_text = " ".join(["tree"] * 90)
    with unet_calls(engine) as calls:
        engine.generate(request(prompt=f"[a red cube:{long_text}:1]", steps=3))
    empty = encoded(engine, "")
    assert [c.shape for c in calls] == [(2, 154, 32)] * 3
    red = torch.cat([encoded(engine, "a red cube"), empty], dim=1)
    trees = encoded(engine, long_text)
    assert names(calls, {"red": red, "trees": trees}) == ["red", "red", "trees"]
    assert names(calls, {"empty": torch.cat([empty, empty], dim=1)}, side="negative") == ["empty"] * 3


def test_second_order_sampler_counts_every_model_call(engine):
    """Heun calls the model twice a step (2 x 3 - 1 = 5 calls); A1111 spans the schedule over 6."""
    with unet_calls(engine) as calls:
        engine.generate(request(prompt="a [red:blue:2] cube", sampler="Heun", steps=3))
    got = names(calls, {"red": encoded(engine, "a red cube"), "blue": encoded(engine, "a blue cube")})
    assert got == ["red", "red", "red", "blue", "blue"]


def test_img2img_schedule_spans_the_requested_steps(engine):
    """img2img at strength 0.5 runs 3 of 6 steps, counted from 0 against a 6-step schedule, as
    A1111 does: [red:blue:1] switches at the third call, [red:blue:0.5] (step 3) never does."""
    init = Image.new("RGB", (64, 64), (120, 80, 40))
    texts = None
    for prompt, expected in (("a [red:blue:1] cube", ["red", "red", "blue"]), ("a [red:blue:0.5] cube", ["red"] * 3)):
        with unet_calls(engine) as calls:
            engine.generate(request(mode="img2img", init_image=init, denoising_strength=0.5, steps=6, prompt=prompt))
        texts = texts or {"red": encoded(engine, "a red cube"), "blue": encoded(engine, "a blue cube")}
        assert names(calls, texts) == expected


def test_editing_changes_the_pixels_and_matches_a_plain_diffusers_swap(engine):
    """The edited image differs from both pure prompts, and equals a stock diffusers call whose own
    callback swaps the embeddings before call 3 (the reference check)."""
    edited = engine.generate(request(prompt="a [red:blue:2] cube")).images[0]
    red_img = engine.generate(request(prompt="a red cube")).images[0].image
    blue_img = engine.generate(request(prompt="a blue cube")).images[0].image
    assert edited.image.tobytes() not in (red_img.tobytes(), blue_img.tobytes())
    assert edited.infotext.startswith("a [red:blue:2] cube\n")  # the prompt as typed, as A1111 writes it

    pipe = engine.manager.current.pipe
    red, blue, empty = encoded(engine, "a red cube"), encoded(engine, "a blue cube"), encoded(engine, "")

    def swap(pipe, i, t, kwargs):
        return {"prompt_embeds": torch.cat([empty, blue])} if i + 1 == 3 else kwargs

    pipe.scheduler = samplers.make_scheduler(engine.manager.current.base_scheduler_config, "Euler")
    ref = pipe(prompt_embeds=red, negative_prompt_embeds=empty, num_inference_steps=4, guidance_scale=7.0,
               height=64, width=64, generator=torch.Generator("cpu").manual_seed(11), callback_on_step_end=swap,
               output_type="pil").images[0]
    # exact: the same operations in the same order (the tiny model's text has little effect on pixels,
    # so the 1/255 tolerance of other reference checks could not tell a swap one call early)
    assert np.array_equal(np.asarray(edited.image), np.asarray(ref))


def test_hires_pass_has_its_own_schedule_on_a1111s_timeline(engine):
    """Hires. fix: the second pass gets a schedule built for its own steps, on A1111's (>= 1.6) hires
    timeline: a fraction above 1 (or a step number past the first pass's steps) lands in the second
    pass, so ``[red:blue:1.5]`` switches at half of the hires steps; a fraction below 1 is the first
    pass's, so ``[red:blue:0.5]`` is "blue" all through the second pass. A second pass that reused the
    first pass's schedule would give red, red, red, blue for 0.5 and red throughout for 1.5."""
    hires = dict(enable_hr=True, hr_upscaler="Lanczos", hr_scale=2.0, hr_second_pass_steps=4, denoising_strength=1.0)
    texts = None
    for prompt, expected in (("a [red:blue:1.5] cube", ["red"] * 4 + ["red", "red", "red", "blue"]),
                             ("a [red:blue:6] cube", ["red"] * 4 + ["red", "red", "red", "blue"]),
                             ("a [red:blue:0.5] cube", ["red", "red", "red", "blue"] + ["blue"] * 4)):
        with unet_calls(engine) as calls:
            engine.generate(request(prompt=prompt, **hires))
        texts = texts or {"red": encoded(engine, "a red cube"), "blue": encoded(engine, "a blue cube")}
        assert names(calls, texts) == expected, prompt


def test_hires_prompt_editing_uses_the_hires_steps(engine):
    """``hr_prompt`` takes the syntax too: at 6 hires steps ``[green:blue:1.5]`` is green for calls 0-3."""
    with unet_calls(engine) as calls:
        engine.generate(request(prompt="a red cube", enable_hr=True, hr_upscaler="Lanczos", hr_second_pass_steps=6,
                                denoising_strength=1.0, hr_prompt="a [green:blue:1.5] cube"))
    texts = {"red": encoded(engine, "a red cube"), "green": encoded(engine, "a green cube"),
             "blue": encoded(engine, "a blue cube")}
    assert names(calls, texts) == ["red"] * 4 + ["green"] * 4 + ["blue"] * 2
