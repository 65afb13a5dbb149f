"""A1111's request and response shapes (``/sdapi/v1``), field for field.

Unknown and unimplemented fields are accepted (so existing clients work unchanged) and reported
back in ``info["ignored"]`` instead of failing.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class Txt2ImgRequest(_Lenient):
    prompt: str = ""
    negative_prompt: str = ""
    styles: Optional[list[str]] = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: Optional[str] = None
    sampler_index: Optional[str] = None
    scheduler: Optional[str] = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: Optional[bool] = None
    tiling: Optional[bool] = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: Optional[float] = None
    denoising_strength: Optional[float] = 0.75  # A1111's txt2img default (the Hires. fix second pass)
    s_min_uncond: Optional[float] = None
    s_churn: Optional[float] = None
    s_tmax: Optional[float] = None
    s_tmin: Optional[float] = None
    s_noise: Optional[float] = None
    override_settings: Optional[dict[str, Any]] = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: Optional[str] = None
    refiner_switch_at: Optional[float] = None
    disable_extra_networks: bool = False
    comments: Optional[dict] = None
    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: Optional[str] = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: Optional[str] = None
    hr_sampler_name: Optional[str] = None
    hr_scheduler: Optional[str] = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: Optional[str] = None
    script_name: Optional[str] = None
    script_args: list = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict = Field(default_factory=dict)
    infotext: Optional[str] = None
    clip_skip: Optional[int] = None  # not A1111's own field, but SillyTavern sends it; else CLIP_stop_at_last_layers


class Img2ImgRequest(Txt2ImgRequest):
    init_images: Optional[list[str]] = None
    resize_mode: int = 0
    image_cfg_scale: Optional[float] = None
    mask: Optional[str] = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: Optional[int] = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: Optional[float] = None
    latent_mask: Optional[str] = None
    include_init_images: bool = False
    denoising_strength: Optional[float] = 0.75
    depth_map: Optional[str] = None  # sdui: base64 depth image for an SD 2 depth model (bright = near)


class ImageResponse(BaseModel):
    images: Optional[list[str]] = None
    parameters: dict
    info: str


class ExtrasBaseRequest(_Lenient):
    resize_mode: int = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0
    codeformer_visibility: float = 0
    codeformer_weight: float = 0
    upscaling_resize: float = 2
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0
    upscale_first: bool = False


class ExtraSingleImageRequest(ExtrasBaseRequest):
    image: str = ""


class ExtraSingleImageResponse(BaseModel):
    html_info: str
    image: Optional[str] = None
    info: str = Field("{}", description='sdui\'s addition: JSON, {"ignored": [the fields set to what sdui does not do]}')


class FileData(_Lenient):
    data: str
    name: str = ""


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData] = Field(default_factory=list)


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]
    info: str = Field("{}", description='sdui\'s addition: JSON, {"ignored": [the fields set to what sdui does not do]}')


class PNGInfoRequest(_Lenient):
    image: str


class PNGInfoResponse(BaseModel):
    info: str
    items: dict
    parameters: dict


# ---- what we do not implement, and the value that means "not asked for" ---------------------------
UNIMPLEMENTED_DEFAULTS: dict[str, Any] = {
    "restore_faces": (None, False), "tiling": (None, False), "eta": (None,), "s_min_uncond": (None, 0, 0.0),
    "s_churn": (None, 0, 0.0), "s_tmax": (None, 0, 0.0), "s_tmin": (None, 0, 0.0), "s_noise": (None, 1, 1.0),
    # script_name / script_args: the X/Y/Z plot runs (sdui.api.scripts); another script name is refused
    "alwayson_scripts": ({},), "image_cfg_scale": (None,),
    "initial_noise_multiplier": (None, 1, 1.0), "latent_mask": (None,),
    "include_init_images": (False,), "hr_checkpoint_name": (None, "", "Use same checkpoint"),
    "firstphase_width": (0,), "firstphase_height": (0,),  # A1111's old Hires. fix first-pass size: not applied
    "disable_extra_networks": (False,), "comments": (None,), "force_task_id": (None,),
}
# the extras' face restoration (no GFPGAN/CodeFormer here) and its order against upscaling (so nothing to order)
EXTRAS_UNIMPLEMENTED_DEFAULTS: dict[str, Any] = {
    "gfpgan_visibility": (0, 0.0), "codeformer_visibility": (0, 0.0), "codeformer_weight": (0, 0.0),
    "upscale_first": (False,),
}


def ignored_fields(req: BaseModel) -> list[str]:
    """Fields the client set to something we do not implement, plus fields A1111 does not know."""
    out = []
    unimplemented = EXTRAS_UNIMPLEMENTED_DEFAULTS if isinstance(req, ExtrasBaseRequest) else UNIMPLEMENTED_DEFAULTS
    for name in req.model_fields_set:
        if name in unimplemented and getattr(req, name) not in unimplemented[name]:
            out.append(name)
    if isinstance(req, Img2ImgRequest) and req.enable_hr:
        out.append("enable_hr")  # Hires. fix is txt2img's (A1111's img2img has none)
    if isinstance(req, Img2ImgRequest) and req.refiner_checkpoint not in (None, "", "None"):
        out.append("refiner_checkpoint")  # sdui's refiner is txt2img's for now
    out += sorted((req.model_extra or {}).keys())
    return sorted(set(out))
