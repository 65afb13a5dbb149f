"""A1111's command-line flags (``GET /sdapi/v1/cmd-flags``): every flag's ``argparse`` name and default.

Taken from AUTOMATIC1111/stable-diffusion-webui ``modules/cmd_args.py`` at commit
04b4508a66de58c9f3a422fdcad4dd2ec3ad39ce, in file order, then the flags later releases added that
clients read (``--models-dir``, ``--lora-dir``, ``--medvram-sdxl``, ``--api-server-stop``,
``--timeout-keep-alive``, ``--loglevel``, ...). A1111's defaults are paths inside its install
(``data_path``, ``models_path``); they are written here relative to that folder, and
``models/...`` paths follow sdui's ``--models-dir`` in ``flags()``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

A1111_FLAG_DEFAULTS: dict[str, Any] = {
    "f": False,
    "update_all_extensions": False,
    "skip_python_version_check": False,
    "skip_torch_cuda_test": False,
    "reinstall_xformers": False,
    "reinstall_torch": False,
    "update_check": False,
    "tests": None,
    "no_tests": False,
    "skip_install": False,
    "data_dir": ".",
    "config": "configs/v1-inference.yaml",
    "ckpt": "model.ckpt",
    "ckpt_dir": None,
    "vae_dir": None,
    "gfpgan_dir": "./GFPGAN",
    "gfpgan_model": None,
    "no_half": False,
    "no_half_vae": False,
    "no_progressbar_hiding": False,
    "max_batch_count": 16,
    "embeddings_dir": "embeddings",
    "textual_inversion_templates_dir": "textual_inversion_templates",
    "hypernetwork_dir": "models/hypernetworks",
    "localizations_dir": "localizations",
    "allow_code": False,
    "medvram": False,
    "lowvram": False,
    "lowram": False,
    "always_batch_cond_uncond": False,
    "unload_gfpgan": False,
    "precision": "autocast",
    "upcast_sampling": False,
    "share": False,
    "ngrok": None,
    "ngrok_region": "us",
    "enable_insecure_extension_access": False,
    "codeformer_models_path": "models/Codeformer",
    "gfpgan_models_path": "models/GFPGAN",
    "esrgan_models_path": "models/ESRGAN",
    "bsrgan_models_path": "models/BSRGAN",
    "realesrgan_models_path": "models/RealESRGAN",
    "clip_models_path": None,
    "xformers": False,
    "force_enable_xformers": False,
    "xformers_flash_attention": False,
    "deepdanbooru": False,
    "opt_split_attention": False,
    "opt_sub_quad_attention": False,
    "sub_quad_q_chunk_size": 1024,
    "sub_quad_kv_chunk_size": None,
    "sub_quad_chunk_threshold": None,
    "opt_split_attention_invokeai": False,
    "opt_split_attention_v1": False,
    "opt_sdp_attention": False,
    "opt_sdp_no_mem_attention": False,
    "disable_opt_split_attention": False,
    "disable_nan_check": False,
    "use_cpu": [],
    "listen": False,
    "port": None,
    "show_negative_prompt": False,
    "ui_config_file": "ui-config.json",
    "hide_ui_dir_config": False,
    "freeze_settings": False,
    "ui_settings_file": "config.json",
    "gradio_debug": False,
    "gradio_auth": None,
    "gradio_auth_path": None,
    "gradio_img2img_tool": None,
    "gradio_inpaint_tool": None,
    "opt_channelslast": False,
    "styles_file": "styles.csv",
    "autolaunch": False,
    "theme": None,
    "use_textbox_seed": False,
    "disable_console_progressbars": False,
    "enable_console_prompts": False,
    "vae_path": None,
    "disable_safe_unpickle": False,
    "api": False,
    "api_auth": None,
    "api_log": False,
    "nowebui": False,
    "ui_debug_mode": False,
    "device_id": None,
    "administrator": False,
    "cors_allow_origins": None,
    "cors_allow_origins_regex": None,
    "tls_keyfile": None,
    "tls_certfile": None,
    "disable_tls_verify": None,
    "server_name": None,
    "gradio_queue": True,
    "no_gradio_queue": False,
    "skip_version_check": False,
    "no_hashing": False,
    "no_download_sd_model": False,
    "subpath": None,
    "add_stop_route": False,
    # added by later releases
    "models_dir": None,
    "lora_dir": "models/Lora",
    "medvram_sdxl": False,
    "api_server_stop": False,
    "timeout_keep_alive": 30,
    "loglevel": None,
    "disable_all_extensions": False,
    "disable_extra_extensions": False,
    "skip_load_model_at_start": False,
}

SECRETS = ("gradio_auth", "api_auth", "ngrok", "tls_keyfile")
HIDDEN = "***"


def flags(settings, max_batch_count: int) -> dict[str, Any]:
    """A1111's flags with sdui's value where the flag means the same here (A1111's default
    otherwise), then sdui's own settings; credentials are ``***``."""
    models = Path(settings.models_dir)
    out = dict(A1111_FLAG_DEFAULTS)
    for key, default in A1111_FLAG_DEFAULTS.items():
        if isinstance(default, str) and default.startswith("models/"):
            out[key] = str(models / default.split("/", 1)[1])
    device = settings.device or ""
    out.update({
        "ckpt": settings.ckpt, "ckpt_dir": settings.ckpt_dir, "vae_dir": str(models / "VAE"), "vae_path": settings.vae_path,
        "no_half": settings.no_half, "precision": settings.precision, "medvram": settings.medvram,
        "lowvram": settings.lowvram, "use_cpu": [settings.use_cpu] if settings.use_cpu else [],
        "device_id": device.split(":", 1)[1] if device.startswith("cuda:") else None,
        "max_batch_count": max_batch_count, "listen": settings.listen, "port": settings.port, "api": settings.api,
        "gradio_auth": settings.gradio_auth, "gradio_auth_path": settings.gradio_auth_path,
        "api_auth": settings.api_auth, "cors_allow_origins": settings.cors_allow_origins,
        "styles_file": settings.styles_file, "autolaunch": settings.open_browser, "models_dir": settings.models_dir,
        "embeddings_dir": settings.embeddings_dir,
        "api_server_stop": settings.api_server_stop, "loglevel": settings.log_level.upper(),
        "api_log": True,  # sdui logs every API request (see --log-level)
        "hide_ui_dir_config": True,  # clients may not change output folders here
        "no_download_sd_model": True,  # sdui downloads a model only when its owner asks
        "timeout_keep_alive": 5,  # uvicorn's default, which sdui keeps
    })
    for f in dataclasses.fields(settings):
        if f.name != "extra" and f.name not in out:
            out[f.name] = getattr(settings, f.name)
    for key in SECRETS:
        if out.get(key):
            out[key] = HIDDEN
    return out
