"""A1111 sampler names and schedule types -> a diffusers scheduler (and the sigmas to hand the pipeline).

Each scheduler is built with ``from_config(model's scheduler config)`` plus only the options the
name implies. The schedule type ("Karras", "Normal", ...) is a separate choice, as in A1111 1.6+;
old combined names such as "DPM++ 2M Karras" are still accepted.

A schedule type means exactly A1111's sigma sequence (``modules/sd_schedulers.py`` and
k-diffusion's ``get_sigmas_*``), computed from the model's own sigma table
sqrt((1 - alphas_cumprod) / alphas_cumprod). sdui applies one in one of two ways, and only where
the result is that sequence:

- a diffusers option (``use_karras_sigmas``, ``use_exponential_sigmas``, ``use_beta_sigmas``) with
  ``timestep_spacing="linspace"``, so that the range is the model's whole sigma table as in A1111
  (with SD's "leading" spacing diffusers would start the range at the first inference timestep);
- the sequence computed here and passed as the pipeline's ``sigmas=``, for the schedulers whose
  ``set_timesteps`` takes sigmas (in diffusers 0.42: Euler).

Anything else is refused with the list of what works, except for the samplers A1111 itself runs on
timesteps and for which it ignores the schedule type (DDIM, PLMS, UniPC): there sdui does what A1111
does, and says so in the result's warnings.

"Automatic" is the sampler's own default: the diffusers scheduler as the model's scheduler config
sets it up (A1111's per-sampler defaults, e.g. Karras for DPM++ 2M, are a separate, explicit choice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from .types import InvalidRequest


@dataclass(frozen=True)
class Schedule:
    """An A1111 schedule type, with the fields ``GET /sdapi/v1/schedulers`` lists."""

    name: str  # API name
    label: str
    aliases: tuple = ()
    default_rho: float = -1
    need_inner_model: bool = False
    builtin: Optional[str] = None  # the diffusers config flag that yields the same sigmas (with linspace spacing)


SCHEDULE_TYPES: tuple[Schedule, ...] = (
    Schedule("automatic", "Automatic"),
    Schedule("uniform", "Uniform", need_inner_model=True),
    Schedule("karras", "Karras", default_rho=7.0, builtin="use_karras_sigmas"),
    Schedule("exponential", "Exponential", builtin="use_exponential_sigmas"),
    # A1111's polyexponential with its default rho=1 is exactly the exponential schedule
    # (exp(ramp * (log max - log min) + log min) with a linear ramp), so the same flag applies.
    Schedule("polyexponential", "Polyexponential", default_rho=1.0, builtin="use_exponential_sigmas"),
    Schedule("sgm_uniform", "SGM Uniform", aliases=("SGMUniform",), need_inner_model=True),
    Schedule("kl_optimal", "KL Optimal"),
    Schedule("align_your_steps", "Align Your Steps"),
    Schedule("simple", "Simple", need_inner_model=True),
    Schedule("normal", "Normal", need_inner_model=True),
    Schedule("ddim", "DDIM", need_inner_model=True),
    # diffusers' beta sigmas use alpha = beta = 0.6, A1111's default beta_dist_alpha/beta_dist_beta
    Schedule("beta", "Beta", need_inner_model=True, builtin="use_beta_sigmas"),
)
AUTOMATIC = "Automatic"
_SCHEDULE_BY_LABEL = {s.label: s for s in SCHEDULE_TYPES}
_SCHEDULE_BY_LOWER: dict[str, str] = {}
for _sch in SCHEDULE_TYPES:
    for _key in (_sch.label, _sch.name, *_sch.aliases):
        _SCHEDULE_BY_LOWER[_key.lower()] = _sch.label
# A1111 scheduler labels as the API lists them: label -> API name
SCHEDULE_API_NAMES = {s.label: s.name for s in SCHEDULE_TYPES}
BUILTIN_SCHEDULES = tuple(s.label for s in SCHEDULE_TYPES if s.builtin)


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler_class: str
    options: dict = field(default_factory=dict)
    aliases: tuple = ()
    # schedule types the diffusers class computes itself from a config flag (see Schedule.builtin)
    builtin_schedules: tuple = BUILTIN_SCHEDULES
    # its set_timesteps takes ``sigmas=``: every schedule type sdui computes works
    takes_sigmas: bool = False
    # A1111 runs it on timesteps and ignores the schedule type: any type is accepted and, unless
    # applied as above, ignored with a warning, as A1111 does
    a1111_ignores_schedule: bool = False


SAMPLERS: tuple[Sampler, ...] = (
    # diffusers' EulerAncestralDiscreteScheduler has no sigma options and no ``sigmas=``
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", aliases=("k_euler_a", "euler_ancestral"), builtin_schedules=()),
    Sampler("Euler", "EulerDiscreteScheduler", aliases=("k_euler", "euler"), takes_sigmas=True),
    Sampler("LMS", "LMSDiscreteScheduler", aliases=("k_lms", "lms")),  # needs scipy
    Sampler("Heun", "HeunDiscreteScheduler", aliases=("k_heun", "heun")),
    Sampler("DPM2", "KDPM2DiscreteScheduler", aliases=("k_dpm_2", "dpm2")),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", aliases=("k_dpm_2_a", "dpm2_ancestral")),
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", aliases=("k_dpmpp_2m", "dpmpp_2m")),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
            aliases=("k_dpmpp_2m_sde", "dpmpp_2m_sde")),
    # k-diffusion's sample_dpmpp_2m_sde(solver_type="heun") step is x' = (s'/s) e^-h x + (1 - e^-2h) D0
    # + ((1 - e^-2h) / (-2h) + 1) (D0 - D_prev) / r + noise, first order on the first step and a plain
    # denoise on the last: term for term diffusers' sde-dpmsolver++ second-order "heun" update
    # (the noise comes from the seeded generator instead of a Brownian tree, as for DPM++ 2M SDE).
    Sampler("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
            aliases=("k_dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun")),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", aliases=("k_dpmpp_sde", "dpmpp_sde")),  # torchsde
    Sampler("DDIM", "DDIMScheduler", aliases=("ddim",), builtin_schedules=(), a1111_ignores_schedule=True),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, aliases=("plms", "pndm"), builtin_schedules=(),
            a1111_ignores_schedule=True),
    Sampler("UniPC", "UniPCMultistepScheduler", aliases=("unipc",), a1111_ignores_schedule=True),
    # A1111's LCM honours schedule types; diffusers' LCMScheduler takes neither sigma options nor sigmas
    Sampler("LCM", "LCMScheduler", aliases=("lcm",), builtin_schedules=()),
)

# A1111 samplers with no exact diffusers equivalent: refused, with the reason.
UNAVAILABLE: dict[str, str] = {
    "DPM++ 2S a": "diffusers' DPMSolverSinglestepScheduler is a different algorithm (no ancestral noise; its "
                  "intermediate point is a schedule step, not the log-midpoint towards sigma_down)",
    "DPM++ 3M SDE": "diffusers' third-order sde-dpmsolver++ update is not k-diffusion's (the second-difference "
                    "term's constant has the opposite sign in diffusers 0.42)",
    "Restart": "no diffusers scheduler implements Restart sampling",
    "DPM fast": "no diffusers scheduler implements k-diffusion's DPM-Solver with fixed orders",
    "DPM adaptive": "no diffusers scheduler implements k-diffusion's adaptive DPM-Solver",
    "DDIM CFG++": "CFG++ changes the guidance inside the step; no diffusers scheduler implements it",
}
_UNAVAILABLE_ALIASES = {"k_dpmpp_2s_a": "DPM++ 2S a", "k_dpmpp_3m_sde": "DPM++ 3M SDE", "restart": "Restart",
                        "k_dpm_fast": "DPM fast", "k_dpm_ad": "DPM adaptive", "ddim_cfgpp": "DDIM CFG++"}

_BY_NAME = {s.name.lower(): s for s in SAMPLERS}
for _s in SAMPLERS:
    for _a in _s.aliases:
        _BY_NAME[_a.lower()] = _s
_UNAVAILABLE_BY_NAME = {n.lower(): n for n in UNAVAILABLE} | _UNAVAILABLE_ALIASES

# Align Your Steps tables (https://research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html), as in A1111
AYS_SD = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)
BETA_ALPHA = BETA_BETA = 0.6  # A1111's beta_dist_alpha / beta_dist_beta defaults


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def schedule_names() -> list[str]:
    """Every schedule type label, in A1111's order (each works with at least Euler)."""
    return [s.label for s in SCHEDULE_TYPES]


def schedule_listing() -> list[dict]:
    """``GET /sdapi/v1/schedulers`` in A1111's shape."""
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
             "need_inner_model": s.need_inner_model} for s in SCHEDULE_TYPES]


def schedules_for(sampler: Sampler) -> list[str]:
    """The schedule types ``sampler`` applies exactly (Automatic first)."""
    return [s.label for s in SCHEDULE_TYPES
            if s.label == AUTOMATIC or sampler.takes_sigmas or s.label in sampler.builtin_schedules]


def _schedule_label(schedule) -> str:
    if schedule is None:
        return AUTOMATIC
    if not isinstance(schedule, str):
        raise InvalidRequest("scheduler", schedule, "one of " + ", ".join(schedule_names()))
    label = _SCHEDULE_BY_LOWER.get(schedule.strip().lower() or AUTOMATIC.lower())
    if label is None:
        raise InvalidRequest("scheduler", schedule, "one of " + ", ".join(schedule_names())
                             + " (or their API names " + ", ".join(SCHEDULE_API_NAMES.values()) + ")")
    return label


def _unavailable(name, canonical: str) -> InvalidRequest:
    return InvalidRequest("sampler", name, f"{canonical} is not available in sdui (no exact diffusers equivalent: "
                                           f"{UNAVAILABLE[canonical]}); available: " + ", ".join(sampler_names()))


def _find_sampler(name, schedule: str) -> tuple[Sampler, str]:
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("sampler", name, "one of " + ", ".join(sampler_names()))
    text = name.strip().lower()
    if text in _BY_NAME:
        return _BY_NAME[text], schedule
    if text in _UNAVAILABLE_BY_NAME:
        raise _unavailable(name, _UNAVAILABLE_BY_NAME[text])
    for key, label in _SCHEDULE_BY_LOWER.items():  # "DPM++ 2M Karras" -> ("DPM++ 2M", "Karras"), as A1111 reads it
        if label != AUTOMATIC and text.endswith(" " + key):
            base = text[: -len(key) - 1]
            if base in _BY_NAME:
                return _BY_NAME[base], label
            if base in _UNAVAILABLE_BY_NAME:
                raise _unavailable(name, _UNAVAILABLE_BY_NAME[base])
    raise InvalidRequest("sampler", name, "one of " + ", ".join(sampler_names()))


def resolve(name: str, schedule: Optional[str] = AUTOMATIC) -> tuple[Sampler, str]:
    """(sampler, schedule type label) for A1111 names, any case; "DPM++ 2M Karras" -> ("DPM++ 2M", "Karras").

    Raises InvalidRequest naming ``sampler`` or ``scheduler`` for an unknown name, an A1111 sampler
    sdui does not have, or a schedule type the sampler cannot apply exactly."""
    label = _schedule_label(schedule)
    sampler, label = _find_sampler(name, label)
    allowed = schedules_for(sampler)
    if label not in allowed and not sampler.a1111_ignores_schedule:
        anywhere = ", ".join(s.name for s in SAMPLERS if s.takes_sigmas)
        raise InvalidRequest("scheduler", label, f"one of {', '.join(allowed)} (what the {sampler.name} sampler can "
                                                 f"apply exactly; every schedule type works with {anywhere})")
    return sampler, label


# ---- the model's sigma table and A1111's schedules --------------------------------------------------
def _betas(config):
    import numpy as np

    n = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    kind = config.get("beta_schedule", "linear")
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    if trained is not None:
        betas = np.asarray(trained, dtype=np.float64)
    elif kind == "linear":
        betas = np.linspace(start, end, n, dtype=np.float64)
    elif kind == "scaled_linear":  # ldm's "linear": the SD checkpoints' schedule
        betas = np.linspace(start**0.5, end**0.5, n, dtype=np.float64) ** 2
    elif kind == "squaredcos_cap_v2":
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)])
    else:
        raise ValueError(f"beta_schedule={kind!r} is not one of linear, scaled_linear, squaredcos_cap_v2")
    if config.get("rescale_betas_zero_snr", False):  # as diffusers does it
        root = np.sqrt(np.cumprod(1.0 - betas))
        root = (root - root[-1]) * root[0] / (root[0] - root[-1])
        bar = root**2
        betas = 1.0 - np.concatenate([bar[:1], bar[1:] / bar[:-1]])
    return betas


def model_sigmas(config):
    """The model's sigmas by training timestep (ascending), as A1111's k-diffusion wrapper has them:
    alphas_cumprod in float64, stored as float32 (ldm's buffer), then sqrt((1 - a) / a)."""
    import numpy as np

    alphas_cumprod = np.cumprod(1.0 - _betas(config)).astype(np.float32)
    if config.get("rescale_betas_zero_snr", False):
        alphas_cumprod[-1] = 2.0**-24  # diffusers' stand-in for zero, so that the first sigma is finite
    ac = alphas_cumprod.astype(np.float64)
    return np.sqrt((1.0 - ac) / ac)


def _t_to_sigma(log_sigmas, t):
    """k-diffusion DiscreteSchedule.t_to_sigma: log-linear between neighbouring table entries."""
    import numpy as np

    t = np.asarray(t, dtype=np.float64)
    low, high = np.floor(t).astype(int), np.ceil(t).astype(int)
    w = t - low
    return np.exp((1 - w) * log_sigmas[low] + w * log_sigmas[high])


def _sigma_to_t(log_sigmas, sigma: float) -> float:
    """k-diffusion DiscreteSchedule.sigma_to_t (unquantized)."""
    import numpy as np

    log_sigma = math.log(sigma)
    dists = log_sigma - log_sigmas
    low = min(int(np.cumsum(dists >= 0).argmax()), len(log_sigmas) - 2)
    w = (log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1])
    w = min(max(w, 0.0), 1.0)
    return (1 - w) * low + w * (low + 1)


def _loglinear_interp(values, n: int):
    import numpy as np

    xs = np.linspace(0, 1, len(values))
    ys = np.log(np.asarray(values, dtype=np.float64)[::-1])
    return np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy()


def schedule_sigmas(config, schedule: str, steps: int, is_sdxl: bool = False):
    """A1111's sigma sequence (``steps`` + 1 values, float64) for the schedule type ``schedule`` on
    the model whose scheduler config is ``config``. Ends in 0, except KL Optimal (ends at sigma_min,
    as in A1111); A1111's DDIM type may give a few more steps than asked for, as in A1111."""
    import numpy as np

    label = _schedule_label(schedule)
    if label == AUTOMATIC:
        raise ValueError("Automatic is the sampler's own schedule, not a sigma sequence")
    n = int(steps)
    if n < 1:
        raise ValueError(f"steps={steps} must be at least 1")
    table = model_sigmas(config)
    log_table = np.log(table)
    smin, smax = float(table[0]), float(table[-1])
    t_max = len(table) - 1

    def with_zero(values):
        return np.append(np.asarray(values, dtype=np.float64), 0.0)

    if label == "Uniform":  # inner_model.get_sigmas(n)
        return with_zero(_t_to_sigma(log_table, np.linspace(t_max, 0, n)))
    if label == "Karras":
        rho = 7.0
        ramp = np.linspace(0, 1, n)
        return with_zero((smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho)
    if label == "Exponential":
        return with_zero(np.exp(np.linspace(math.log(smax), math.log(smin), n)))
    if label == "Polyexponential":
        rho = 1.0
        ramp = np.linspace(1, 0, n) ** rho
        return with_zero(np.exp(ramp * (math.log(smax) - math.log(smin)) + math.log(smin)))
    if label in ("SGM Uniform", "Normal"):
        start, end = _sigma_to_t(log_table, smax), _sigma_to_t(log_table, smin)
        ts = np.linspace(start, end, n + 1)[:-1] if label == "SGM Uniform" else np.linspace(start, end, n)
        return with_zero(_t_to_sigma(log_table, ts))
    if label == "KL Optimal":
        alpha_min, alpha_max = math.atan(smin), math.atan(smax)
        i = np.arange(n + 1)
        return np.tan(i / n * alpha_min + (1.0 - i / n) * alpha_max)
    if label == "Align Your Steps":
        ays = AYS_SDXL if is_sdxl else AYS_SD
        return with_zero(ays if n == len(ays) else _loglinear_interp(ays, n))
    if label == "Simple":
        ss = len(table) / n
        return with_zero([table[-(1 + int(x * ss))] for x in range(n)])
    if label == "DDIM":
        ss = max(len(table) // n, 1)
        return with_zero(table[1::ss][::-1])
    if label == "Beta":
        from scipy import stats

        ts = [stats.beta.ppf(x, BETA_ALPHA, BETA_BETA) for x in 1 - np.linspace(0, 1, n)]
        return with_zero([smin + x * (smax - smin) for x in ts])
    raise ValueError(f"no sigma formula for {label}")  # pragma: no cover - every type is listed above


# ---- building the scheduler ---------------------------------------------------------------------------
@dataclass
class SamplingPlan:
    """What a task needs to sample as the request asks: the scheduler, the custom sigmas to pass
    as the pipeline's ``sigmas=`` (None: the scheduler's own), and what to tell the user."""

    sampler: Sampler
    schedule: str
    scheduler: Any
    sigmas: Optional[list] = None
    warnings: list = field(default_factory=list)


def plan_sampling(base_config, name: str, schedule: Optional[str] = AUTOMATIC, steps: Optional[int] = None,
                  seed: "int | list[int] | None" = None, is_sdxl: bool = False) -> SamplingPlan:
    """The scheduler (from the model's scheduler config) and custom sigmas for an A1111 sampler
    name and schedule type; ``steps`` is needed for the schedule types sdui computes, ``is_sdxl``
    picks Align Your Steps' SDXL table. Raises InvalidRequest as ``resolve`` does."""
    import diffusers

    sampler, label = resolve(name, schedule)
    options = dict(sampler.options)
    sigmas = None
    warnings = []
    if label != AUTOMATIC:
        sched = _SCHEDULE_BY_LABEL[label]
        if sched.builtin and label in sampler.builtin_schedules:
            options.update({sched.builtin: True, "timestep_spacing": "linspace"})
        elif sampler.takes_sigmas:
            if steps is None:
                raise ValueError(f"schedule type {label} needs the number of steps (use plan_sampling(..., steps=))")
            sigmas = [float(s) for s in schedule_sigmas(base_config, label, steps, is_sdxl=is_sdxl)]
            # diffusers starts from noise * sqrt(sigma_max^2 + 1) with "leading" spacing; A1111 from sigma_max
            options["timestep_spacing"] = "linspace"
        else:  # resolve() let it through only for these
            warnings.append(f"Schedule type {label} is not used by the {sampler.name} sampler (A1111 ignores it "
                            f"too); {sampler.name} ran on its own timesteps")
    if sampler.name == "DPM++ SDE" and seed is not None:
        # Its Brownian tree draws noise from its own seed; without this the same request differs.
        options["noise_sampler_seed"] = seed
    cls = getattr(diffusers, sampler.scheduler_class)
    try:
        scheduler = cls.from_config(base_config, **options)
    except (ImportError, ModuleNotFoundError) as e:
        raise InvalidRequest("sampler", name, f"a sampler whose package is installed ({e})") from None
    return SamplingPlan(sampler=sampler, schedule=label, scheduler=scheduler, sigmas=sigmas, warnings=warnings)


def make_scheduler(base_config, name: str, schedule: Optional[str] = AUTOMATIC,
                   seed: "int | list[int] | None" = None):
    """A new scheduler for the A1111 ``name`` built from the model's scheduler config. For a schedule
    type that needs custom sigmas use ``plan_sampling`` (this raises ValueError for one)."""
    return plan_sampling(base_config, name, schedule, seed=seed).scheduler
