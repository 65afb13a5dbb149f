"""Each client's A1111 options: what ``GET options`` shows it, what ``POST options`` and a request's
``override_settings`` may change, and what each change does here.

``GET`` shows every key of A1111's own table (``a1111_options``) with the value sdui uses, then the
client's own choices. ``POST`` takes the whole dict back (Open WebUI posts everything it got):

- every value is type-checked against the key's A1111 type (422 naming ``options.KEY``); ``null``
  leaves a key as it is;
- a key whose value equals what ``GET`` shows is a no-op (this is how unchanged output folders
  come back);
- the owner's keys (output folders, file-name patterns, ``OWNER_ONLY``) may not be changed: 403;
- ``APPLIED`` keys take effect for this client; every other A1111 key is stored (``GET`` shows it
  back, as A1111's ``test_options_write`` expects) but changes nothing here, and the answer lists it
  under ``ignored``; keys A1111 does not have are not stored and are listed under ``unknown`` too.

Clip skip (``CLIP_stop_at_last_layers``) is applied to the client's generations. ``eta_noise_seed_delta``
is stored like the ignored keys: sdui does not apply it yet, so the ``POST`` answer lists it as ignored,
and every generation made while it (or another option in ``NOT_APPLIED_TO_IMAGES``) differs from
sdui's value lists it in ``info.ignored``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..images.outputs import FORMATS
from ..types import InvalidRequest, SduiError
from .a1111_options import A1111_API_RESTRICTED, A1111_DEFAULTS, A1111_RESTRICTED
from .state import ApiState

# sdui's own keys, shown after A1111's
SDUI_KEYS: dict[str, Any] = {"invisible_watermark": True}
KNOWN = {**A1111_DEFAULTS, **SDUI_KEYS}

APPLIED = frozenset({"sd_model_checkpoint", "sd_checkpoint_hash", "sd_vae", "samples_save", "samples_format",
                     "live_previews_enable", "show_progress_every_n_steps", "CLIP_stop_at_last_layers"})

OWNER_ONLY = frozenset(A1111_RESTRICTED | A1111_API_RESTRICTED | {k for k in A1111_DEFAULTS if k.startswith("outdir_")}
                       | {"temp_dir", "grid_zip_filename_pattern", "invisible_watermark"})

# options that change A1111's images and that sdui does not apply (listed in info.ignored when set)
NOT_APPLIED_TO_IMAGES = (
    "eta_noise_seed_delta", "randn_source", "eta_ddim", "eta_ancestral", "s_churn",
    "s_tmin", "s_tmax", "s_noise", "s_min_uncond", "k_sched_type", "sigma_min", "sigma_max", "rho",
    "always_discard_next_to_last_sigma", "sgm_noise_multiplier", "uni_pc_variant", "uni_pc_skip_type", "uni_pc_order",
    "uni_pc_lower_order_final", "tiling", "enable_emphasis", "use_old_emphasis_implementation", "comma_padding_backtrack",
    "upcast_attn", "token_merging_ratio", "token_merging_ratio_img2img", "pad_cond_uncond", "initial_noise_multiplier",
    "img2img_extra_noise", "inpainting_mask_weight", "img2img_color_correction", "img2img_fix_steps",
    "img2img_background_color", "sd_vae_encode_method", "sd_vae_decode_method", "face_restoration", "sd_unet",
    "sd_hypernetwork", "enable_quantization", "use_old_karras_scheduler_sigmas", "no_dpmpp_sde_batch_determinism",
    "enable_pnginfo", "add_model_hash_to_info", "add_model_name_to_info", "add_vae_name_to_info", "add_vae_hash_to_info",
    "add_version_to_infotext", "save_txt",
)

MAX_TEXT = 4096  # characters in a stored string option
MAX_ITEMS = 256  # items in a stored list option
_HEX = re.compile(r"[0-9a-f]{8,64}")


class Forbidden(SduiError):
    """The client asked to change something only the server's owner decides (answered 403)."""


def server_values(state: ApiState) -> dict[str, Any]:
    """The options whose value here is sdui's, not A1111's default, the same for every client."""
    settings, out = state.settings, Path(state.settings.outputs_dir)
    return {
        # the owner's Settings-tab defaults (one store: sdui.server_defaults)
        "samples_format": state.engine.server_defaults().output_format,
        # grids: only the X/Y/Z plot's, saved with its images (sdui.api.scripts), in A1111's grid folders
        "samples_save": state.engine.server_defaults().save, "grid_format": "png", "grid_save": True, "return_grid": True,
        "outdir_txt2img_samples": str(out / "txt2img-images"), "outdir_img2img_samples": str(out / "img2img-images"),
        "outdir_extras_samples": str(out / "extras-images"), "outdir_txt2img_grids": str(out / "txt2img-grids"),
        "outdir_img2img_grids": str(out / "img2img-grids"),
        "randn_source": "CPU",  # every image's noise comes from its own CPU generator
        "show_progress_every_n_steps": state.engine.preview_period(),
        "show_progress_type": "Approx cheap",  # a fixed linear map of the latents, as A1111's "Approx cheap"
        "auto_launch_browser": "Local" if settings.open_browser else "Disable",
        "sd_vae": state.engine.default_vae_choice(),
        "invisible_watermark": not settings.no_watermark,
    }


def _checkpoint(state: ApiState, owner: str):
    """The client's checkpoint entry (its choice, else the server's default), or None."""
    name = state.model_for(owner)
    if name:
        try:
            return state.engine.find_model(name)
        except SduiError:
            pass
    return state.engine.default_checkpoint()


def options_for(state: ApiState, owner: str) -> dict[str, Any]:
    """Everything ``GET options`` shows this client."""
    values = {**A1111_DEFAULTS, **SDUI_KEYS, **server_values(state), **state.stored_options(owner)}
    entry = _checkpoint(state, owner)
    values["sd_model_checkpoint"] = entry.title if entry else None
    values["sd_checkpoint_hash"] = (entry.sha256 or "") if entry else ""
    values["sd_vae"] = state.vae_for(owner) or values["sd_vae"]
    return values


# ---- types ----------------------------------------------------------------------------------------
def check_value(key: str, value: Any, where: str) -> Any:
    """``value`` if it has the A1111 type of ``key`` (ints may come as whole floats); raises
    InvalidRequest naming ``where.key`` otherwise."""
    default = KNOWN[key]
    name = f"{where}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InvalidRequest(name, value, "true or false")
    elif isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(name, value, "an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidRequest(name, value, "a number")
    elif isinstance(default, list):
        if (not isinstance(value, list) or len(value) > MAX_ITEMS
                or not all(isinstance(v, str) and len(v) <= MAX_TEXT for v in value)):
            raise InvalidRequest(name, value, f"a list of at most {MAX_ITEMS} names (strings)")
    elif not isinstance(value, str) or len(value) > MAX_TEXT:  # str, or None (a name: sd_model_checkpoint)
        raise InvalidRequest(name, value, f"a string of at most {MAX_TEXT} characters")
    return _check_meaning(key, value, name)


def _check_meaning(key: str, value: Any, name: str) -> Any:
    if key == "samples_format":
        fmt = {"jpeg": "jpg"}.get(value.lower(), value.lower())
        if fmt not in FORMATS:
            raise InvalidRequest(name, value, f"one of {', '.join(FORMATS)} (the infotext is written into each)")
        return fmt
    if key == "show_progress_every_n_steps" and not -1 <= value <= 1000:
        raise InvalidRequest(name, value, "-1 (only finished images) to 1000 steps")
    if key == "CLIP_stop_at_last_layers" and not 1 <= value <= 12:
        raise InvalidRequest(name, value, "1 to 12")
    if key == "sd_checkpoint_hash" and value and not _HEX.fullmatch(value.strip().lower()):
        raise InvalidRequest(name, value, "a checkpoint's SHA-256 (64 hex digits) or its first 10")
    return value


def _refuse_owner_key(key: str, where: str) -> Forbidden:
    if key == "invisible_watermark":
        why = "the invisible watermark is the server owner's choice (--no-watermark)"
    elif key in A1111_API_RESTRICTED:
        why = "A1111 does not take this option from its API either"
    else:
        why = "output folders and file names are the server owner's choice (--outputs-dir)"
    return Forbidden(f"{where}.{key} may not be changed by a client: {why}. Send it back unchanged, or leave it out")


# ---- POST options ---------------------------------------------------------------------------------
@dataclass
class Outcome:
    applied: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def answer(self) -> dict:
        return {"applied": sorted(self.applied), "ignored": sorted(self.ignored + self.unknown),
                "unknown": sorted(self.unknown)}


def apply_options(state: ApiState, owner: str, body: dict) -> Outcome:
    """``POST options`` for this client: check everything first, then apply it all (or nothing)."""
    current = options_for(state, owner)
    outcome, changes = Outcome(), {}
    for key, value in body.items():
        if key not in KNOWN:
            outcome.unknown.append(key)
            continue
        if value is None:  # null: leave it as it is
            continue
        value = check_value(key, value, "options")
        if value == current[key] or (key == "sd_checkpoint_hash" and not value):
            continue
        if key in OWNER_ONLY:
            raise _refuse_owner_key(key, "options")
        changes[key] = value
    model, vae = _checked_model_and_vae(state, changes, "options")
    if model is not None:
        state.set_model(owner, model)
    if vae is not None:
        state.set_vae(owner, vae)
    stored = {k: v for k, v in changes.items() if k not in ("sd_model_checkpoint", "sd_checkpoint_hash", "sd_vae")}
    state.store_options(owner, stored)
    for key in changes:
        (outcome.applied if key in APPLIED else outcome.ignored).append(key)
    return outcome


def _checked_model_and_vae(state: ApiState, changes: dict, where: str) -> tuple[Optional[str], Optional[str]]:
    """The model (by name, or by ``sd_checkpoint_hash``) and VAE a change names, both checked
    (raises UnknownModelError / InvalidRequest) before anything is applied."""
    engine = state.engine
    model = changes.get("sd_model_checkpoint")
    if model is not None:
        model = engine.find_model(model).name
    wanted = changes.get("sd_checkpoint_hash")
    if wanted:
        by_hash = engine.find_checkpoint_by_hash(wanted.strip().lower())
        if model is not None and model != by_hash.name:
            raise InvalidRequest(f"{where}.sd_checkpoint_hash", wanted,
                                 f"the hash of '{model}', the sd_model_checkpoint sent with it (or leave one out)")
        model = by_hash.name
    vae = changes.get("sd_vae")
    if vae is not None:
        vae = engine.check_vae_choice(vae)
    return model, vae


# ---- override_settings (one request) --------------------------------------------------------------
@dataclass
class RequestOptions:
    """What a generation request's options come to: the client's options with its
    ``override_settings`` on top."""

    values: dict[str, Any]
    model_by_hash: Optional[str] = None
    ignored: list[str] = field(default_factory=list)


def for_request(state: ApiState, owner: str, override: Optional[dict]) -> RequestOptions:
    """The options one generation runs under. ``sd_model_checkpoint`` and ``sd_vae`` of
    ``override_settings`` are left to the request (checked with it); every other key is checked here
    and, when it changes nothing here, named in ``info.ignored``."""
    values = options_for(state, owner)
    out = RequestOptions(values=values)
    sdui = {**A1111_DEFAULTS, **server_values(state)}
    for key, value in (override or {}).items():
        if key in ("sd_model_checkpoint", "sd_vae"):
            continue
        if key not in KNOWN:
            out.ignored.append(f"override_settings.{key}")
            continue
        if value is None:
            continue
        value = check_value(key, value, "override_settings")
        if value == values[key] or (key == "sd_checkpoint_hash" and not value):
            continue
        if key in OWNER_ONLY:
            raise _refuse_owner_key(key, "override_settings")
        if key == "sd_checkpoint_hash":
            if not (override or {}).get("sd_model_checkpoint"):
                out.model_by_hash = state.engine.find_checkpoint_by_hash(value.strip().lower()).name
            continue
        values[key] = value
    for key in NOT_APPLIED_TO_IMAGES:  # values differ from sdui's only by the client's choice
        if values[key] != sdui[key]:
            out.ignored.append(f"{'override_settings' if key in (override or {}) else 'options'}.{key}")
    return out


def saves_images(state: ApiState, owner: str) -> bool:
    """This client's ``samples_save`` (the owner's default unless it chose)."""
    return bool(state.stored_options(owner).get("samples_save", state.engine.server_defaults().save))


def preview_choice(state: ApiState, owner: str) -> tuple[bool, int]:
    """(live previews on, show one every N steps) for ``GET progress``; -1 or 0: only finished images."""
    stored = state.stored_options(owner)
    every = stored.get("show_progress_every_n_steps", state.engine.preview_period())
    return bool(stored.get("live_previews_enable", True)), int(every)
