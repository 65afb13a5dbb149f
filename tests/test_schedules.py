"""A1111 schedule types ("Schedule type"): every one is A1111's own sigma sequence, applied exactly
or refused (or, for the samplers A1111 runs on timesteps, ignored as A1111 does, with a warning).

The expected numbers are computed here again from the definitions A1111 uses: ldm's
alphas_cumprod (float64, stored as float32), k-diffusion's DiscreteSchedule (sigma table,
t_to_sigma, sigma_to_t, get_sigmas) and get_sigmas_karras/exponential/polyexponential, and the
functions of A1111's modules/sd_schedulers.py; in float32 torch where A1111 computes in torch."""

from __future__ import annotations

import inspect
import math

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from sdui import samplers
from sdui.types import GenerationRequest, InvalidRequest
from tests.tiny import SCHED

LABELS = ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
          "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]
API_NAMES = ["automatic", "uniform", "karras", "exponential", "polyexponential", "sgm_uniform", "kl_optimal",
             "align_your_steps", "simple", "normal", "ddim", "beta"]
STEPS = [1, 2, 3, 4, 7, 10, 11, 20, 32]


# ---- A1111's sigmas, written again from its sources ---------------------------------------------------
class A1111Model:
    """What A1111's CompVisDenoiser knows of an SD model: its sigma table and the t <-> sigma maps."""

    def __init__(self, config):
        assert config["beta_schedule"] == "scaled_linear"  # ldm's "linear" schedule
        n = config["num_train_timesteps"]
        betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n, dtype=torch.float64) ** 2
        alphas_cumprod = torch.tensor(np.cumprod(1.0 - betas.numpy()), dtype=torch.float32)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()
        self.sigma_min, self.sigma_max = self.sigmas[0].item(), self.sigmas[-1].item()

    def t_to_sigma(self, t):
        t = t.float()
        lo, hi, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()

    def sigma_to_t(self, sigma):
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        lo = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        hi = lo + 1
        w = ((self.log_sigmas[lo] - log_sigma) / (self.log_sigmas[lo] - self.log_sigmas[hi])).clamp(0, 1)
        return ((1 - w) * lo + w * hi).view(sigma.shape)

    def get_sigmas(self, n):
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return torch.cat([self.t_to_sigma(t), torch.zeros(1)])


def a1111_sigmas(model: A1111Model, label: str, n: int, is_sdxl: bool = False) -> np.ndarray:
    lo, hi = model.sigma_min, model.sigma_max
    zero = torch.zeros(1)
    if label == "Uniform":
        out = model.get_sigmas(n)
    elif label == "Karras":  # Karras et al. (2022), rho = 7
        ramp = torch.linspace(0, 1, n)
        out = torch.cat([(hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7, zero])
    elif label == "Exponential":
        out = torch.cat([torch.linspace(math.log(hi), math.log(lo), n).exp(), zero])
    elif label == "Polyexponential":  # rho = 1
        ramp = torch.linspace(1, 0, n) ** 1.0
        out = torch.cat([torch.exp(ramp * (math.log(hi) - math.log(lo)) + math.log(lo)), zero])
    elif label in ("SGM Uniform", "Normal"):
        start, end = model.sigma_to_t(torch.tensor(hi)), model.sigma_to_t(torch.tensor(lo))
        ts = torch.linspace(start, end, n + 1)[:-1] if label == "SGM Uniform" else torch.linspace(start, end, n)
        out = torch.tensor([model.t_to_sigma(t).item() for t in ts] + [0.0])
    elif label == "KL Optimal":  # ends at sigma_min, not 0
        a_lo, a_hi = torch.arctan(torch.tensor(lo)), torch.arctan(torch.tensor(hi))
        i = torch.arange(n + 1)
        out = torch.tan(i / n * a_lo + (1.0 - i / n) * a_hi)
    elif label == "Align Your Steps":
        table = ([14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029] if is_sdxl else
                 [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029])
        if n != len(table):  # log-linear interpolation of the decreasing table
            ys = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(table)), np.log(table[::-1]))
            table = list(np.exp(ys)[::-1])
        out = torch.tensor(table + [0.0])
    elif label == "Simple":
        step = len(model.sigmas) / n
        out = torch.tensor([model.sigmas[-(1 + int(x * step))].item() for x in range(n)] + [0.0])
    elif label == "DDIM":
        step, x, values = max(len(model.sigmas) // n, 1), 1, []
        while x < len(model.sigmas):
            values.append(model.sigmas[x].item())
            x += step
        out = torch.tensor(values[::-1] + [0.0])
    elif label == "Beta":  # Lee et al. (2024), alpha = beta = 0.6
        ts = [stats.beta.ppf(x, 0.6, 0.6) for x in 1 - np.linspace(0, 1, n)]
        out = torch.tensor([lo + x * (hi - lo) for x in ts] + [0.0])
    else:
        raise AssertionError(label)
    return out.double().numpy()


def assert_same_sigmas(got, want, what=""):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (what, got, want)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=what)


@pytest.fixture(scope="module")
def config():
    return diffusers.PNDMScheduler(**SCHED).config  # the tiny models' scheduler config (SD's)


@pytest.fixture(scope="module")
def a1111(config):
    return A1111Model(config)


# ---- names ----------------------------------------------------------------------------------------------
def test_every_label_api_name_and_alias_is_accepted_in_any_case():
    for label, api in zip(LABELS, API_NAMES, strict=True):
        for text in (label, api, label.lower(), label.upper(), api.upper(), f"  {label.swapcase()} "):
            assert samplers.resolve("Euler", text) == (samplers.resolve("Euler")[0], label), text
    assert samplers.resolve("Euler", "sgmuniform")[1] == "SGM Uniform"  # A1111's alias
    assert samplers.resolve("Euler", None)[1] == "Automatic" and samplers.resolve("Euler", "")[1] == "Automatic"


def test_an_unknown_schedule_type_is_refused_naming_the_field_and_the_choices():
    with pytest.raises(InvalidRequest) as err:
        samplers.resolve("Euler", "Linear quadratic")
    assert err.value.field == "scheduler"
    assert all(label in str(err.value) for label in LABELS) and all(n in str(err.value) for n in API_NAMES)
    with pytest.raises(InvalidRequest, match="scheduler"):
        samplers.resolve("Euler", 3)


def test_the_schedulers_listing_has_a1111s_shape_and_order():
    listing = samplers.schedule_listing()
    assert [s["name"] for s in listing] == API_NAMES and [s["label"] for s in listing] == LABELS
    by_name = {s["name"]: s for s in listing}
    assert set(by_name["karras"]) == {"name", "label", "aliases", "default_rho", "need_inner_model"}
    assert by_name["karras"]["default_rho"] == 7.0 and by_name["polyexponential"]["default_rho"] == 1.0
    assert by_name["sgm_uniform"]["aliases"] == ["SGMUniform"] and by_name["beta"]["aliases"] is None
    assert [s["name"] for s in listing if s["need_inner_model"]] == ["uniform", "sgm_uniform", "simple", "normal",
                                                                       "ddim", "beta"]
    assert samplers.schedule_names() == LABELS
    assert [samplers.SCHEDULE_API_NAMES[n] for n in samplers.schedule_names()] == API_NAMES
    # every listed type is applied by at least one sampler
    assert set(LABELS) <= {label for s in samplers.SAMPLERS for label in samplers.schedules_for(s)}


# ---- the sigma sequences -------------------------------------------------------------------------------
@pytest.mark.parametrize("label", LABELS[1:])
def test_each_schedule_type_is_a1111s_sigma_sequence(config, a1111, label):
    for n in STEPS:
        for xl in ((False, True) if label == "Align Your Steps" else (False,)):
            got = samplers.schedule_sigmas(config, label, n, is_sdxl=xl)
            assert_same_sigmas(got, a1111_sigmas(a1111, label, n, is_sdxl=xl), f"{label} n={n} sdxl={xl}")


def test_the_sigma_table_ends_are_the_models(config, a1111):
    table = samplers.model_sigmas(config)
    assert len(table) == 1000
    assert_same_sigmas(table, a1111.sigmas.double().numpy())
    assert abs(table[-1] - 14.6146) < 1e-4 and abs(table[0] - 0.0292) < 1e-4


BUILTIN_CASES = [(s.name, label) for s in samplers.SAMPLERS for label in s.builtin_schedules]


@pytest.mark.parametrize("sampler,label", BUILTIN_CASES)
def test_a_diffusers_builtin_schedule_gives_a1111s_sigmas(config, a1111, sampler, label):
    """Karras/Exponential/Beta through diffusers' own options: the scheduler's sigmas, once set,
    are A1111's (second-order schedulers repeat each sigma; compare the distinct sequence)."""
    for n in (3, 10, 25):
        plan = samplers.plan_sampling(config, sampler, label, steps=n)
        assert plan.sigmas is None and plan.warnings == []
        plan.scheduler.set_timesteps(n)
        values = plan.scheduler.sigmas.double().numpy()
        distinct = [values[0]] + [v for prev, v in zip(values[:-1], values[1:], strict=True) if v != prev]
        assert_same_sigmas(distinct, a1111_sigmas(a1111, label, n), f"{sampler} {label} n={n}")


@pytest.mark.parametrize("label", LABELS[1:])
def test_euler_takes_every_schedule_type_as_sigmas(config, a1111, label):
    plan = samplers.plan_sampling(config, "Euler", label, steps=7)
    if plan.sigmas is None:  # a built-in option
        plan.scheduler.set_timesteps(7)
    else:
        plan.scheduler.set_timesteps(sigmas=plan.sigmas)
    assert_same_sigmas(plan.scheduler.sigmas.double().numpy(), a1111_sigmas(a1111, label, 7), label)
    assert float(plan.scheduler.init_noise_sigma) == pytest.approx(float(plan.scheduler.sigmas[0]))  # A1111: noise * sigma_max


def test_the_declared_capabilities_match_the_installed_diffusers():
    for s in samplers.SAMPLERS:
        cls = getattr(diffusers, s.scheduler_class)
        init = inspect.signature(cls.__init__).parameters
        for label in s.builtin_schedules:
            flag = next(t.builtin for t in samplers.SCHEDULE_TYPES if t.label == label)
            assert flag in init and "timestep_spacing" in init, (s.name, label)
        if s.takes_sigmas:
            assert "sigmas" in inspect.signature(cls.set_timesteps).parameters, s.name


# ---- what each sampler takes ---------------------------------------------------------------------------
def test_a_schedule_type_a_sampler_cannot_apply_is_refused_listing_what_works():
    for sampler, schedule, works in [("Euler a", "Karras", ["Automatic"]), ("DPM++ 2M", "normal", ["Karras", "Beta"]),
                                     ("LCM", "SGM Uniform", ["Automatic"]), ("DPM2 a", "Align Your Steps", ["Exponential"])]:
        with pytest.raises(InvalidRequest) as err:
            samplers.resolve(sampler, schedule)
        msg = str(err.value)
        assert err.value.field == "scheduler" and sampler in msg and "Euler" in msg, msg
        assert all(w in msg for w in works), msg
    with pytest.raises(InvalidRequest, match="scheduler"):
        samplers.resolve("Euler a Karras")  # an old combined name the sampler cannot apply either


def test_samplers_a1111_runs_on_timesteps_ignore_the_schedule_type_as_a1111_does_and_say_so(config):
    # SillyTavern's default request: DDIM with scheduler "normal"
    for name in ("DDIM", "PLMS", "UniPC"):
        plan = samplers.plan_sampling(config, name, "normal", steps=4)
        assert plan.sigmas is None and plan.schedule == "Normal"
        assert plan.warnings and "ignores" in plan.warnings[0] and name in plan.warnings[0]
        automatic = samplers.make_scheduler(config, name)
        assert dict(plan.scheduler.config) == dict(automatic.config)
    plan = samplers.plan_sampling(config, "UniPC", "Karras", steps=4)  # what UniPC can apply, it applies
    assert plan.scheduler.config.use_karras_sigmas is True and plan.warnings == []


def test_dpmpp_2m_sde_heun_is_the_heun_variant_of_the_sde_solver(config):
    sched = samplers.make_scheduler(config, "dpm++ 2m sde heun")
    assert type(sched).__name__ == "DPMSolverMultistepScheduler"
    assert (sched.config.algorithm_type, sched.config.solver_type) == ("sde-dpmsolver++", "heun")
    assert samplers.resolve("DPM++ 2M SDE Heun Karras") == (samplers.resolve("k_dpmpp_2m_sde_heun")[0], "Karras")
    assert samplers.resolve("DPM++ 2M Karras") == (samplers.resolve("DPM++ 2M")[0], "Karras")


@pytest.mark.parametrize("name", ["DPM++ 2S a", "DPM++ 3M SDE", "Restart", "DPM fast", "DPM adaptive", "DDIM CFG++",
                                  "dpm++ 3m sde exponential", "k_dpm_ad"])
def test_a1111_samplers_without_an_exact_diffusers_equivalent_are_refused(name):
    with pytest.raises(InvalidRequest) as err:
        samplers.resolve(name)
    msg = str(err.value)
    assert err.value.field == "sampler" and "not available in sdui" in msg and "available: " in msg
    assert all(n in msg for n in samplers.sampler_names())
    assert name not in samplers.sampler_names()


def test_a_computed_schedule_needs_the_steps(config):
    with pytest.raises(ValueError, match="steps"):
        samplers.make_scheduler(config, "Euler", "Normal")


# ---- end to end: the engine's pixels equal a plain diffusers call given the same sigmas ---------------
def _plain_euler(pipe, config, sigmas, prompt, negative, seed, cfg, size):
    """A stock diffusers call with A1111's sigmas. ``timestep_spacing="linspace"`` only makes the
    initial noise sigma_max (A1111's x = noise * sigmas[0]); the sigmas themselves are the ones passed."""
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(config, timestep_spacing="linspace")
    out = pipe(prompt, negative_prompt=negative, generator=torch.Generator("cpu").manual_seed(seed),
               sigmas=[float(s) for s in sigmas], guidance_scale=cfg, height=size, width=size, output_type="pil")
    return np.asarray(out.images[0], dtype=np.int16)


@pytest.fixture()
def sampled(monkeypatch):
    """The sigmas and initial noise sigma each txt2img pipeline call actually sampled with."""
    seen = []
    original = diffusers.StableDiffusionPipeline.__call__

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen.append((self.scheduler.sigmas.double().numpy().copy(), float(self.scheduler.init_noise_sigma)))
        return out

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "__call__", spy)
    return seen


@pytest.mark.parametrize("label", ["Karras", "SGM Uniform", "Simple", "Normal", "Align Your Steps"])
def test_engine_pixels_equal_a_plain_diffusers_call_given_a1111s_sigmas(make_engine, sampled, label):
    engine = make_engine(no_watermark=True)
    req = GenerationRequest(prompt="a lighthouse at dusk", negative_prompt="fog", sampler="Euler", scheduler=label,
                            steps=4, cfg_scale=6.0, width=64, height=64, seed=77, model="tiny", save=False)
    ours = engine.generate(req)
    assert f"Schedule type: {label}" in ours.images[0].infotext and not ours.warnings
    loaded = engine.manager.current
    sigmas = a1111_sigmas(A1111Model(loaded.base_scheduler_config), label, 4)
    (used, init_sigma), = sampled  # the engine sampled with exactly these (the tiny model's pixels are forgiving)
    assert_same_sigmas(used, sigmas, label)
    assert init_sigma == pytest.approx(sigmas[0], rel=1e-6)
    ref = _plain_euler(loaded.pipe, loaded.base_scheduler_config, sigmas, "a lighthouse at dusk", "fog", 77, 6.0, 64)
    assert np.abs(np.asarray(ours.images[0].image, dtype=np.int16) - ref).max() <= 1, label


def test_img2img_and_inpaint_hand_the_pipeline_the_schedule(make_engine, monkeypatch):
    engine = make_engine(no_watermark=True)
    rng = np.random.default_rng(3)
    init = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    req = GenerationRequest(mode="img2img", prompt="a boat", sampler="Euler", scheduler="SGM Uniform", steps=4,
                            denoising_strength=0.5, width=64, height=64, seed=9, model="tiny", save=False, init_image=init)
    ours = engine.generate(req)
    loaded = engine.manager.current
    config = loaded.base_scheduler_config
    sigmas = a1111_sigmas(A1111Model(config), "SGM Uniform", 4)
    plain = diffusers.StableDiffusionImg2ImgPipeline(**loaded.pipe.components)
    plain.set_progress_bar_config(disable=True)
    plain.scheduler = diffusers.EulerDiscreteScheduler.from_config(config, timestep_spacing="linspace")
    ref = plain("a boat", image=init, strength=0.5, sigmas=[float(s) for s in sigmas], guidance_scale=7.0,
                generator=torch.Generator("cpu").manual_seed(9), output_type="pil").images[0]
    assert np.abs(np.asarray(ours.images[0].image, dtype=np.int16) - np.asarray(ref, dtype=np.int16)).max() <= 1

    seen = {}
    original = diffusers.StableDiffusionInpaintPipeline.__call__

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(diffusers.StableDiffusionInpaintPipeline, "__call__", spy)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    out = engine.generate(req.replace(mode="inpaint", model="tiny-inpaint", mask=mask, scheduler="Align Your Steps",
                                      mask_blur=0))
    assert len(out.images) == 1
    assert_same_sigmas(seen["sigmas"], a1111_sigmas(A1111Model(config), "Align Your Steps", 4))


def test_sillytaverns_default_request_runs_and_warns(make_engine):
    engine = make_engine(no_watermark=True)
    base = dict(prompt="a cat", sampler="DDIM", steps=3, width=64, height=64, seed=4, model="tiny", save=False)
    normal = engine.generate(GenerationRequest(**base, scheduler="normal"))
    automatic = engine.generate(GenerationRequest(**base, scheduler="Automatic"))
    assert any("A1111 ignores it" in w for w in normal.warnings) and not automatic.warnings
    assert np.array_equal(np.asarray(normal.images[0].image), np.asarray(automatic.images[0].image))
    with pytest.raises(InvalidRequest, match="scheduler"):
        engine.generate(GenerationRequest(**{**base, "sampler": "Euler a"}, scheduler="Normal"))
