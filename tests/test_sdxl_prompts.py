"""SDXL prompts as A1111 encodes them (sdui/prompts_sdxl.py): both encoders' penultimate states
concatenated, emphasis, 75-token chunks, BREAK, the pooled vector of the first chunk, zeros for an
empty negative prompt, A1111's size conditioning, and prompt editing switching both the states and
the pooled vectors. On a tiny random-weight SDXL pipeline (tests/tiny.py)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from sdui import prompts, prompts_sdxl, samplers
from sdui.types import GenerationRequest

CPU = torch.device("cpu")
L = 32  # the tiny CLIP-L width; the tiny OpenCLIP-G part follows it


def test_plain_prompt_equals_diffusers_encode_prompt_exactly(tiny_xl_pipe):
    ours = prompts_sdxl.encode(tiny_xl_pipe, "a red cube on a table", "blurry, dark", CPU)
    c, uc, pooled, neg_pooled = tiny_xl_pipe.encode_prompt("a red cube on a table", device=CPU, num_images_per_prompt=1,
                                                           do_classifier_free_guidance=True,
                                                           negative_prompt="blurry, dark")
    assert ours.prompt_embeds.shape == (1, 77, 64)
    assert torch.equal(ours.prompt_embeds, c) and torch.equal(ours.negative_prompt_embeds, uc)
    assert torch.equal(ours.pooled_prompt_embeds, pooled) and torch.equal(ours.negative_pooled_prompt_embeds, neg_pooled)


def test_empty_negative_prompt_is_zeros_as_a1111_and_diffusers(tiny_xl_pipe):
    ours = prompts_sdxl.encode(tiny_xl_pipe, "a red cube", "", CPU)
    c, uc, pooled, neg_pooled = tiny_xl_pipe.encode_prompt("a red cube", device=CPU, num_images_per_prompt=1,
                                                           do_classifier_free_guidance=True, negative_prompt=None)
    assert not ours.negative_prompt_embeds.any() and not ours.negative_pooled_prompt_embeds.any()
    assert torch.equal(ours.negative_prompt_embeds, uc) and torch.equal(ours.negative_pooled_prompt_embeds, neg_pooled)


@pytest.mark.parametrize("weight", [1.5, 0.6])
def test_emphasis_weights_each_encoders_tokens_then_restores_the_mean(tiny_xl_pipe, weight):
    """A1111's "Original" emphasis, for each encoder's chunk on its own: multiply the token's states,
    then rescale the chunk to its unweighted mean. The pooled vector is never weighted."""
    plain, plain_pooled, _ = prompts_sdxl.encode_text(tiny_xl_pipe, "red cube", CPU)
    z, pooled, _ = prompts_sdxl.encode_text(tiny_xl_pipe, f"(red:{weight}) cube", CPU)
    w = torch.ones(1, 77, 1)
    w[0, 1] = weight  # BOS, then "red"
    for part in (slice(0, L), slice(L, 2 * L)):
        expected = plain[..., part] * w
        expected = expected * (plain[..., part].mean() / expected.mean())
        assert torch.allclose(z[..., part], expected, atol=1e-6)
    assert not torch.allclose(z, plain)
    assert torch.equal(pooled, plain_pooled)


def test_break_starts_a_new_chunk_on_both_encoders(tiny_xl_pipe):
    z, pooled, _ = prompts_sdxl.encode_text(tiny_xl_pipe, "a red cube BREAK a blue sky", CPU)
    first, first_pooled, _ = prompts_sdxl.encode_text(tiny_xl_pipe, "a red cube", CPU)
    second, _, _ = prompts_sdxl.encode_text(tiny_xl_pipe, "a blue sky", CPU)
    assert z.shape == (1, 154, 64)
    assert torch.equal(z[:, :77], first) and torch.equal(z[:, 77:], second)
    assert torch.equal(pooled, first_pooled)  # A1111: zs[0].pooled


def test_long_prompt_is_chunked_and_pooled_from_its_first_chunk(tiny_xl_pipe):
    text = " ".join(["cat"] * 100)  # 100 tokens: chunks of 75 and 25
    z, pooled, cut = prompts_sdxl.encode_text(tiny_xl_pipe, text, CPU)
    assert z.shape == (1, 154, 64) and cut == 0
    ids = prompts.tokenize(tiny_xl_pipe.tokenizer_2, text).ids
    with torch.no_grad():
        first_chunk = tiny_xl_pipe.text_encoder_2(torch.tensor(ids[:1]))[0]
        second_chunk = tiny_xl_pipe.text_encoder_2(torch.tensor(ids[1:]))[0]
    assert torch.equal(pooled, first_chunk) and not torch.equal(pooled, second_chunk)


def test_positive_and_negative_get_equal_lengths(tiny_xl_pipe):
    cond = prompts_sdxl.encode(tiny_xl_pipe, "a BREAK b BREAK c", "blurry", CPU)
    assert cond.prompt_embeds.shape == cond.negative_prompt_embeds.shape == (1, 231, 64)


# ---- through the engine ---------------------------------------------------------------------------------
@contextmanager
def unet_calls(engine):
    """(encoder_hidden_states, added_cond_kwargs) of every UNet call while the block runs."""
    engine.reload_checkpoint("tiny-xl")
    unet = engine.manager.current.pipe.unet
    seen = []
    original = unet.forward

    def forward(*args, **kwargs):
        added = {k: v.detach().clone() for k, v in kwargs["added_cond_kwargs"].items()}
        seen.append((kwargs["encoder_hidden_states"].detach().clone(), added))
        return original(*args, **kwargs)

    unet.forward = forward
    try:
        yield seen
    finally:
        del unet.forward


def request(**kw):
    base = dict(prompt="a red cube", sampler="Euler", steps=4, width=64, height=64, seed=11, model="tiny-xl", save=False)
    return GenerationRequest(**{**base, **kw})


def test_plain_prompt_gives_the_pixels_of_a_plain_diffusers_call(xl_engine):
    """No A1111 syntax: exactly the image diffusers makes from the text (what sdui did before)."""
    ours = xl_engine.generate(request(prompt="a watercolor fox", batch_size=2, steps=3))
    pipe = xl_engine.manager.current.pipe
    pipe.scheduler = samplers.make_scheduler(xl_engine.manager.current.base_scheduler_config, "Euler")
    ref = pipe(prompt="a watercolor fox", num_images_per_prompt=2, num_inference_steps=3, guidance_scale=7.0,
               height=64, width=64, generator=[torch.Generator("cpu").manual_seed(s) for s in (11, 12)],
               output_type="pil").images
    for got, want in zip(ours.images, ref, strict=True):
        assert got.image.tobytes() == want.tobytes()


def test_emphasis_reaches_the_image(xl_engine):
    plain = xl_engine.generate(request(prompt="a red cube")).images[0].image
    weighted = xl_engine.generate(request(prompt="a (red:1.8) cube")).images[0].image
    assert np.abs(np.asarray(plain, dtype=int) - np.asarray(weighted, dtype=int)).max() > 0


def test_size_conditioning_is_a1111s_default(xl_engine):
    """A1111 (sd_models_xl.get_learned_conditioning): original_size = target_size = (height, width),
    crop (0, 0); SDXL's time ids are [orig_h, orig_w, crop_top, crop_left, target_h, target_w]."""
    with unet_calls(xl_engine) as calls:
        xl_engine.generate(request(width=96, height=64, steps=2))
    for _, added in calls:
        assert added["time_ids"].tolist() == [[64, 96, 0, 0, 64, 96]] * 2


def test_edit_switches_states_and_pooled_vectors_at_the_right_call(xl_engine):
    """``[red:blue:2]`` at 4 steps: calls 0, 1, 2 use "a red cube", call 3 "a blue cube": both the
    hidden states and the pooled vectors (add_text_embeds); the negative half stays zeros."""
    with unet_calls(xl_engine) as calls:
        xl_engine.generate(request(prompt="a [red:blue:2] cube"))
    pipe = xl_engine.manager.current.pipe
    red = prompts_sdxl.encode_text(pipe, "a red cube", CPU)
    blue = prompts_sdxl.encode_text(pipe, "a blue cube", CPU)
    got = []
    for states, added in calls:
        assert not states[0].any() and not added["text_embeds"][0].any()
        for name, (z, pooled, _) in (("red", red), ("blue", blue)):
            if torch.equal(states[1], z[0]) and torch.equal(added["text_embeds"][1], pooled[0]):
                got.append(name)
                break
        else:
            got.append("?")
    assert got == ["red", "red", "red", "blue"]


def test_alternation_alternates_on_sdxl(xl_engine):
    with unet_calls(xl_engine) as calls:
        xl_engine.generate(request(prompt="a [red|blue] cube", negative_prompt="blurry"))
    pipe = xl_engine.manager.current.pipe
    red = prompts_sdxl.encode_text(pipe, "a red cube", CPU)[1]
    blue = prompts_sdxl.encode_text(pipe, "a blue cube", CPU)[1]
    pooled = [added["text_embeds"][1] for _, added in calls]
    names = ["red" if torch.equal(p, red[0]) else "blue" if torch.equal(p, blue[0]) else "?" for p in pooled]
    assert names == ["red", "red", "blue", "red"]  # A1111: entry t = call - 1 counted from 1


def test_no_sdxl_warning_for_a1111_syntax(xl_engine):
    result = xl_engine.generate(request(prompt="a (red:1.2) cube BREAK [dog|cat]", steps=2))
    assert not any("SDXL" in w for w in result.warnings), result.warnings


def test_img2img_inpaint_and_hires_fix_run_on_sdxl_with_a1111_syntax(xl_engine):
    """The SDXL img2img / inpaint / Hires. fix pipelines get the embeddings and pooled vectors too."""
    from PIL import Image

    init = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    prompt = "a (red:1.2) cube BREAK [dog|cat]"
    i2i = xl_engine.generate(request(mode="img2img", prompt=prompt, init_image=init, denoising_strength=0.6))
    inp = xl_engine.generate(request(mode="inpaint", prompt=prompt, init_image=init, mask=mask, denoising_strength=0.9,
                                     watermark=False))
    hr = xl_engine.generate(request(prompt=prompt, enable_hr=True, hr_scale=1.5, steps=2, denoising_strength=0.5))
    assert i2i.images[0].image.size == inp.images[0].image.size == (64, 64) and hr.images[0].image.size == (96, 96)
    far = (slice(0, 4), slice(None))  # rows beyond the mask and its blur keep their pixels exactly
    assert np.array_equal(np.asarray(inp.images[0].image)[far], np.asarray(init)[far])


def test_cli_makes_an_sdxl_image_from_an_a1111_prompt(xl_models_root, tmp_path, capsys):
    from PIL import Image

    from sdui import cli

    code = cli.main(["txt2img", "--prompt", "a (red:1.3) cube BREAK [blue:green:1] sky", "--steps", "2", "--W", "64",
                     "--H", "64", "--seed", "3", "--ckpt", "tiny-xl", "--models-dir", str(xl_models_root), "--outdir",
                     str(tmp_path / "cli"), "--quiet"])
    assert code == 0
    png = Image.open(capsys.readouterr().out.split()[0])
    assert png.size == (64, 64) and png.info["parameters"].startswith("a (red:1.3) cube BREAK [blue:green:1] sky\n")
