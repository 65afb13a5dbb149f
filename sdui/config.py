"""Settings: one declared table of every option, its default and its help text.

The command line (app.py, ``sdui serve`` and the CLI's model flags) is generated from this table,
so a flag cannot exist without help text; a test checks every option is documented.
Flag names follow AUTOMATIC1111's where the meaning is the same.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Option:
    """One setting's flag and help; its default is the Settings field's (one source)."""

    name: str  # attribute name; the flag is --name-with-dashes
    help: str
    type: Any = str
    choices: Optional[tuple] = None
    group: str = "models"  # "models" flags also exist on every CLI sub-command
    flag: Optional[str] = None  # explicit flag name where A1111's differs from the attribute

    @property
    def default(self) -> Any:
        return _SETTINGS_DEFAULTS[self.name]


OPTIONS: tuple[Option, ...] = (
    # where things are
    Option("models_dir", "Root of an AUTOMATIC1111-style models tree (Stable-diffusion/, VAE/, Lora/, ESRGAN/)."),
    Option("ckpt_dir", "Extra folder to search for checkpoints (single files and diffusers folders)."),
    Option("ckpt", "Checkpoint to load at start: a name from the list, a file path, a diffusers folder or a Hub id."),
    Option("vae_path", "VAE used when a request does not choose one (A1111 --vae-path): a file, or a name "
           "from models/VAE/. Default: Automatic (VAE/<checkpoint stem>.* if present, else the checkpoint's own)."),
    Option("embeddings_dir", "Folder of textual-inversion embeddings (.pt, .bin, .safetensors), searched with its "
           "subfolders (A1111 --embeddings-dir); a file's name is the word prompts use for it. A relative path is taken "
           "from the folder sdui was started in, like --models-dir (A1111 keeps embeddings/ in its install folder, "
           "beside models/)."),
    Option("outputs_dir", "Where generated images are saved (A1111 layout: txt2img-images/DATE/...)."),
    # device and precision
    Option("use_cpu", "'all' runs every model on the CPU, as in A1111.", choices=("all",)),
    Option("device", "Device: auto (CUDA, then MPS, then CPU), cuda, cuda:N, mps or cpu."),
    Option("no_half", "Keep weights in fp32 even on a GPU (A1111 --no-half).", type=bool),
    Option("no_half_vae", "Decode images with the VAE in fp32 even when the model runs in half precision (A1111 "
           "--no-half-vae); without it a half decode that gives NaNs is redone in fp32.", type=bool),
    Option("precision", "'full' means fp32 everywhere, as in A1111.", choices=("autocast", "full")),
    Option("half_dtype", "Half type on a GPU: fp16 or bf16.", choices=("fp16", "bf16")),
    Option("medvram", "Start at memory level 3 (model CPU offload) on a GPU, as A1111 --medvram.", type=bool),
    Option("lowvram", "Start at memory level 4 (sequential CPU offload) on a GPU, as A1111 --lowvram.", type=bool),
    Option("devices", "Run one worker per device, e.g. cuda:0,cuda:1: each has its own model manager and memory "
           "ladder, and a waiting job goes to a free one (the one that has its model loaded first). Default: every "
           "CUDA device when there are several, else one worker on --device. On a CPU, cpu,cpu makes two workers "
           "(they share the cores, so nothing gets faster).", group="server"),
    Option("ray_address", "Run the workers as Ray actors, one per GPU of the Ray cluster at this address (host:port, "
           "or 'auto' for the cluster `ray start` made on this machine); this process keeps the queue, the UI/API and "
           "the saved images. Needs `pip install sdui[cluster]`. With --devices, one actor per entry instead.",
           group="server"),
    Option("backend", "What runs the UNet, VAE and text encoder: 'openvino' (OpenVINO on the CPU, a UNet step about "
           "1.9× faster than PyTorch there; the model is converted once on first use and kept under the cache folder), 'torch' "
           "(PyTorch), or 'auto' "
           "(OpenVINO when the device is the CPU and the openvino package is installed: pip install sdui[openvino]).",
           choices=("auto", "torch", "openvino")),
    Option("openvino_precision", "Arithmetic of the OpenVINO backend: 'f32' (the default: images within 2/255 of "
           "PyTorch's) or 'bf16' (on CPUs with native bf16, AVX-512 BF16 or AMX, about twice as fast, with small "
           "differences in the image as fp16 on a GPU has; a CPU without it stays on f32).",
           choices=("f32", "bf16")),
    Option("ram_cache_gb", "RAM budget in GB for recently used models (default: the RAM available at start less a "
           "reserve of 15 percent of RAM, at least 2 GB; never under a quarter of RAM).", type=float),
    # output
    Option("no_watermark", "Do not embed the invisible watermark in saved images.", type=bool),
    Option("max_size", "Largest width/height accepted, in pixels.", type=int),
    Option("preview_every", "Live preview every this many sampling steps, 0 for none (A1111's "
           "show_progress_every_n_steps setting); the UI shows it in the output area at the output's size.", type=int),
    # server
    Option("listen", "Serve on all interfaces (0.0.0.0) so other machines on the LAN can connect.", type=bool, group="server"),
    Option("port", "Port to serve on.", type=int, group="server"),
    Option("api", "Serve the A1111-compatible REST API under /sdapi/v1/.", type=bool, group="server"),
    Option("gradio_auth", "Require login: user:pass[,user2:pass2].", group="server"),
    Option("gradio_auth_path", "File with user:pass entries (one per line or comma separated).", group="server"),
    Option("api_auth", "HTTP Basic credentials for the API: user:pass[,user2:pass2].", group="server"),
    Option("open_browser", "Open the UI in the default browser once the server is up.", type=bool, group="server"),
    Option("queue_size", "Most jobs waiting at once; a full queue answers at once instead of hanging.", type=int, group="server"),
    Option("shared_outputs", "Let every user see every user's images (default: each session sees its own).", type=bool,
           group="server"),
    Option("allowed_hosts", "Extra host names the server answers to, comma-separated (it always answers "
           "localhost/127.0.0.1 and, with --listen, its IP addresses and hostname); needed behind a reverse proxy or "
           "for another DNS name. Other names are refused, which stops DNS-rebinding pages. '*' answers any name.",
           group="server"),
    Option("cors_allow_origins", "Web origins (scheme://host[:port], comma-separated) allowed to use the server "
           "from a browser page with the user's login: they get CORS headers and may send POSTs. Default: only the "
           "server's own pages. '*' allows every site, as A1111's flag of the same name does.", group="server"),
    Option("max_request_mb", "Largest request body or upload in MB. 64 holds an img2img request with a "
           "2048x2048 RGBA PNG (at most ~17 MB, ~22 MB as base64) plus a mask of the same size and the JSON around "
           "them.", type=int, group="server"),
    Option("styles_file", "A1111 styles file (CSV with the columns name,prompt,negative_prompt) that /sdapi/v1/prompt-styles "
           "lists; a missing file lists no styles. A relative path is taken from the folder sdui was started in, as "
           "A1111 does.", group="server"),
    Option("settings_file", "JSON file with the owner's defaults from the UI's Settings tab (sampler, steps, size, "
           "live preview frequency, image file format, saving to disk); written when they change there. A relative path "
           "is taken from the folder sdui was started in.", group="server"),
    Option("api_server_stop", "Let the API's admin stop the server with POST /sdapi/v1/server-kill or server-stop (the "
           "admin is the first --api-auth user; without credentials, a client on this machine). Off, those routes "
           "answer 404, as in A1111.", type=bool, group="server"),
    Option("log_level", "Console log level. At info, every API request that does work is one line (client, route, "
           "size, steps, seconds, status) and every refused request says why.",
           choices=("debug", "info", "warning", "error"), group="server"),
)

_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass
class Settings:
    models_dir: str = "models"
    ckpt_dir: Optional[str] = None
    ckpt: Optional[str] = None
    vae_path: Optional[str] = None
    embeddings_dir: str = "embeddings"
    outputs_dir: str = "outputs"
    use_cpu: Optional[str] = None
    device: str = "auto"
    no_half: bool = False
    no_half_vae: bool = False
    precision: str = "autocast"
    half_dtype: str = "fp16"
    medvram: bool = False
    lowvram: bool = False
    devices: Optional[str] = None
    ray_address: Optional[str] = None
    backend: str = "auto"
    openvino_precision: str = "f32"
    ram_cache_gb: Optional[float] = None
    no_watermark: bool = False
    max_size: int = 2048
    preview_every: int = 4
    listen: bool = False
    port: int = 7860
    api: bool = False
    gradio_auth: Optional[str] = None
    gradio_auth_path: Optional[str] = None
    api_auth: Optional[str] = None
    open_browser: bool = False
    queue_size: int = 16
    shared_outputs: bool = False
    allowed_hosts: Optional[str] = None
    cors_allow_origins: Optional[str] = None
    max_request_mb: int = 64
    styles_file: str = "styles.csv"
    settings_file: str = "sdui-settings.json"
    api_server_stop: bool = False
    log_level: str = "info"
    extra: dict = field(default_factory=dict)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    @property
    def full_precision(self) -> bool:
        return self.no_half or self.precision == "full"

    @property
    def start_memory_level(self) -> int:
        return 4 if self.lowvram else 3 if self.medvram else 0


_SETTINGS_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings) if f.name != "extra"}


def flag_name(opt: Option) -> str:
    return opt.flag or "--" + opt.name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, groups: tuple[str, ...] = ("models", "server")) -> None:
    for opt in OPTIONS:
        if opt.group not in groups:
            continue
        help_text = opt.help + ("" if opt.default in (None, False) else f" Default: {opt.default}.")
        if opt.type is bool:
            parser.add_argument(flag_name(opt), dest=opt.name, action="store_true", default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag_name(opt), dest=opt.name, type=opt.type, choices=opt.choices,
                                default=argparse.SUPPRESS, help=help_text, metavar=None if opt.choices else opt.name.upper())


def settings_from_args(args: argparse.Namespace, **overrides) -> Settings:
    values = {name: getattr(args, name) for name in _BY_NAME if hasattr(args, name)}
    values.update(overrides)
    return Settings(**values)


def undocumented_settings() -> list[str]:
    """Settings fields with no Option row or no help text (a test asserts this is empty)."""
    names = [f.name for f in dataclasses.fields(Settings) if f.name != "extra"]
    return [n for n in names if n not in _BY_NAME or not _BY_NAME[n].help.strip()]
