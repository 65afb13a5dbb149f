"""A1111 sampler names -> diffusers schedulers.

Each scheduler is built with ``from_config(model's scheduler config)`` plus only the options the
name implies; the schedule type ("Karras", "Exponential", ...) is a separate choice, as in A1111
1.6+. Old combined names such as "DPM++ 2M Karras" are still accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import InvalidRequest


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler_class: str
    options: dict = field(default_factory=dict)
    aliases: tuple = ()
    supports_schedules: bool = True  # sigma schedules (Karras, ...) apply to k-diffusion style samplers


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", aliases=("k_euler_a", "euler_ancestral"), supports_schedules=False),
    Sampler("Euler", "EulerDiscreteScheduler", aliases=("k_euler", "euler")),
    Sampler("LMS", "LMSDiscreteScheduler", aliases=("k_lms", "lms")),  # needs scipy
    Sampler("Heun", "HeunDiscreteScheduler", aliases=("k_heun", "heun")),
    Sampler("DPM2", "KDPM2DiscreteScheduler", aliases=("k_dpm_2", "dpm2")),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", aliases=("k_dpm_2_a", "dpm2_ancestral")),
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", aliases=("k_dpmpp_2m", "dpmpp_2m")),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
            aliases=("k_dpmpp_2m_sde", "dpmpp_2m_sde")),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", aliases=("k_dpmpp_sde", "dpmpp_sde")),  # torchsde
    Sampler("DDIM", "DDIMScheduler", aliases=("ddim",), supports_schedules=False),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, aliases=("plms", "pndm"), supports_schedules=False),
    Sampler("UniPC", "UniPCMultistepScheduler", aliases=("unipc",)),
    Sampler("LCM", "LCMScheduler", aliases=("lcm",), supports_schedules=False),
)

# A1111 "Schedule type" -> scheduler option. "Automatic" changes nothing.
SCHEDULES: dict[str, dict] = {
    "Automatic": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
}
# A1111 scheduler labels as the API lists them: (name, label)
SCHEDULE_API_NAMES = {"Automatic": "automatic", "Karras": "karras", "Exponential": "exponential", "Beta": "beta"}

_BY_NAME = {s.name.lower(): s for s in SAMPLERS}
for _s in SAMPLERS:
    for _a in _s.aliases:
        _BY_NAME[_a.lower()] = _s


def sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS]


def schedule_names() -> list[str]:
    return list(SCHEDULES)


def resolve(name: str, schedule: str = "Automatic") -> tuple[Sampler, str]:
    """(sampler, schedule type) for an A1111 name; "DPM++ 2M Karras" -> ("DPM++ 2M", "Karras")."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest("sampler", name, "one of " + ", ".join(sampler_names()))
    text = name.strip()
    schedule = (schedule or "Automatic").strip()
    sched_by_lower = {k.lower(): k for k in SCHEDULES}
    sched_by_lower.update({v: k for k, v in SCHEDULE_API_NAMES.items()})
    if schedule.lower() not in sched_by_lower:
        raise InvalidRequest("scheduler", schedule, "one of " + ", ".join(SCHEDULES))
    schedule = sched_by_lower[schedule.lower()]
    sampler = _BY_NAME.get(text.lower())
    if sampler is None:
        for sched in SCHEDULES:
            suffix = " " + sched.lower()
            if sched != "Automatic" and text.lower().endswith(suffix) and text.lower()[: -len(suffix)] in _BY_NAME:
                sampler, schedule = _BY_NAME[text.lower()[: -len(suffix)]], sched
                break
    if sampler is None:
        raise InvalidRequest("sampler", name, "one of " + ", ".join(sampler_names()))
    return sampler, schedule


def make_scheduler(base_config, name: str, schedule: str = "Automatic", seed: "int | list[int] | None" = None):
    """A new scheduler for the A1111 ``name`` built from the model's scheduler config."""
    import diffusers

    sampler, schedule = resolve(name, schedule)
    cls = getattr(diffusers, sampler.scheduler_class)
    options = dict(sampler.options)
    if schedule != "Automatic" and sampler.supports_schedules:
        options.update(SCHEDULES[schedule])
    if sampler.name == "DPM++ SDE" and seed is not None:
        # Its Brownian tree draws noise from its own seed; without this the same request differs.
        options["noise_sampler_seed"] = seed
    try:
        return cls.from_config(base_config, **options)
    except (ImportError, ModuleNotFoundError) as e:
        raise InvalidRequest("sampler", name, f"a sampler whose package is installed ({e})") from None
