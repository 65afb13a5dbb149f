"""The ``sdui`` command: CompVis-style scripts grown up.

    sdui txt2img --prompt "a cat" [--negative-prompt N] [--ckpt NAME] [--sampler "Euler a"] ...
    sdui img2img --init-img in.png --strength 0.75 --prompt ...
    sdui inpaint --init-img in.png --mask mask.png --prompt ...
    sdui upscale --image in.png [--upscaler NAME] [--prompt P] [--noise-level 20]
    sdui pnginfo FILE | sdui watermark FILE | sdui models [--json] | sdui serve [server flags]

Bad input exits with status 2 and one line naming the problem; a progress bar goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import config, fields
from .types import Cancelled, GenerationRequest, Limits, SduiError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _add_generation_flags(p: argparse.ArgumentParser, mode: str) -> None:
    """The request flags of ``mode``, derived from the field table (names, defaults, ranges, help)."""
    g = p.add_argument_group("generation")
    limits = Limits()
    for f in fields.for_mode(mode):
        if not f.cli:
            continue
        if f.kind is bool:  # --flag / --no-flag
            g.add_argument(*f.cli, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                           help=f"{f.help} Default: {'on' if f.default else 'off'}.")
            continue
        if f.kind is str:
            shown = f"{f.help} Default: {f.default}." if f.default else f.help
        else:
            shown = f"{f.help} {f.range_text(limits).capitalize()}. Default: {f.default}."
        kw = dict(dest=f.name, type=f.kind, default=f.default, choices=f.choices, help=shown)
        if f.name == "prompt" and mode != "upscale":
            kw.update(required=True, default=None)
        g.add_argument(*f.cli, **kw)
    g.add_argument("--plms", action="store_true", help="Same as --sampler PLMS (CompVis script flag).")
    g.add_argument("--outdir", default=None, help="Folder for the outputs (A1111 layout below it). Default: --outputs-dir.")
    g.add_argument("--skip_grid", "--skip-grid", action="store_true",
                   help="Accepted for CompVis compatibility; sdui never writes grids.")
    g.add_argument("--quiet", action="store_true", help="No progress bar.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdui", description="Local Stable Diffusion: generate, upscale, inspect, serve.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mode, text in (("txt2img", "Make images from a prompt."), ("img2img", "Redraw an image guided by a prompt."),
                       ("inpaint", "Redraw the masked part of an image."),
                       ("upscale", "Enlarge an image (SD x4, ESRGAN, Lanczos).")):
        p = sub.add_parser(mode, help=text, description=text)
        _add_generation_flags(p, mode)
        if mode in ("img2img", "inpaint"):
            p.add_argument("--init-img", "--init_img", dest="init_img", required=True, help="The starting image.")
        if mode == "inpaint":
            p.add_argument("--mask", required=True, help="Mask image: white = redraw, black = keep.")
        if mode == "img2img":
            p.add_argument("--depth-map", dest="depth_map", help="SD 2 depth model: the depth image (bright = near); "
                                                                 "without it the depth estimator makes one.")
        if mode == "upscale":
            p.add_argument("--image", required=True, help="The image to enlarge.")
        config.add_arguments(p, groups=("models",))
    p = sub.add_parser("pnginfo", help="Print the generation parameters stored in a PNG.")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="Print the parsed fields as JSON.")
    p = sub.add_parser("watermark", help="Check an image for the invisible watermark.")
    p.add_argument("file")
    p = sub.add_parser("models", help="List the models found, with format, architecture and errors.")
    p.add_argument("--json", action="store_true", help="Print a JSON list.")
    p.add_argument("--hash", action="store_true", help="Compute missing SHA-256 hashes (reads every file).")
    config.add_arguments(p, groups=("models",))
    p = sub.add_parser("download", help="Fetch the default checkpoint (Stable Diffusion 1.5, safetensors) from the "
                       "Hugging Face Hub into models/Stable-diffusion/, verified against the hub's SHA-256.")
    config.add_arguments(p, groups=("models",))
    p = sub.add_parser("serve", help="Start the web UI (and the API with --api).")
    config.add_arguments(p, groups=("models", "server"))
    return parser


class ProgressBar:
    def __init__(self, stream=None, width: int = 30):
        self._stream, self.width, self.last = stream, width, 0.0

    @property
    def stream(self):
        return self._stream or sys.stderr

    def __call__(self, p) -> None:
        now = time.monotonic()
        if p.step < p.total and now - self.last < 0.1:
            return
        self.last = now
        done = int(self.width * p.step / max(p.total, 1))
        label = f"image {p.image_index + 1}/{p.image_total} " if p.image_total > 1 else ""
        self.stream.write(f"\r{label}{p.stage} [{'#' * done}{'.' * (self.width - done)}] {p.step}/{p.total} "
                          f"{p.elapsed:5.1f}s eta {p.eta:5.1f}s")
        if p.step >= p.total:
            self.stream.write("\n")
        self.stream.flush()


def _request_from_args(args, mode: str) -> GenerationRequest:
    from .images.uploads import decode_image

    # --ckpt and --vae-path reach the engine as the owner's settings (the server default), which
    # may be paths or Hub ids; a request itself only ever names what the server lists
    kw = {f.name: getattr(args, f.name) for f in fields.for_mode(mode) if f.cli}
    kw.update(mode=mode, prompt=args.prompt or "")
    if getattr(args, "plms", False):
        kw["sampler"] = "PLMS"
    if mode in ("img2img", "inpaint"):
        kw["init_image"] = decode_image(_read(args.init_img), "init_img")
    if mode == "inpaint":
        kw["mask"] = decode_image(_read(args.mask), "mask", mode="L")
    if mode == "img2img" and args.depth_map:
        kw["depth_map"] = decode_image(_read(args.depth_map), "depth_map", mode="L")
    if mode == "upscale":
        kw["init_image"] = decode_image(_read(args.image), "image")
    return GenerationRequest(**kw)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SduiError(f"{path}: cannot read ({e.strerror})") from None


def _settings(args, **over) -> config.Settings:
    s = config.settings_from_args(args, **over)
    if getattr(args, "outdir", None):
        s = s.replace(outputs_dir=args.outdir)
    return s


def cmd_generate(args, mode: str) -> int:
    from .engine import Engine

    settings = _settings(args)
    request = _request_from_args(args, mode)
    engine = Engine(settings)
    engine.prepare(request)  # bad input fails before any model is loaded
    result = engine.generate(request, on_progress=None if args.quiet else ProgressBar())
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for im in result.images:
        print(im.path or "(not saved)")
    return 0


def cmd_pnginfo(args) -> int:
    from PIL import Image

    from .images.infotext import parse_infotext, read_infotext

    try:
        img = Image.open(args.file)
    except (OSError, ValueError) as e:
        raise SduiError(f"{args.file}: not a readable image ({type(e).__name__})") from None
    text = read_infotext(img)
    if not text:
        print(f"{args.file}: no generation parameters stored", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(parse_infotext(text), indent=2, ensure_ascii=False) if args.json else text)
    return 0


def cmd_watermark(args) -> int:
    from PIL import Image

    from .images.watermark import verify_watermark

    try:
        img = Image.open(args.file).convert("RGB")
    except (OSError, ValueError) as e:
        raise SduiError(f"{args.file}: not a readable image ({type(e).__name__})") from None
    res = verify_watermark(img)
    if res.get("reason"):
        print(f"no watermark checked: image {res['reason']}")
        return EXIT_FAILED
    state = "present" if res["present"] else "not found"
    print(f"watermark {state}: payload {res['payload']!r}, bit match {res['score']:.3f}")
    return 0 if res["present"] else EXIT_FAILED


def cmd_models(args) -> int:
    from .engine import Engine

    settings = _settings(args)
    rows = [e.to_json() for e in Engine(settings).model_listing(hash_files=args.hash)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models found under {settings.models_dir}")
    for d in rows:
        status = f"ERROR: {d['error']}" if d["error"] else f"{d['format']}, {d['architecture_label'] or d['architecture']}"
        print(f"{d['kind']:<10} {d['title']:<40} {status}  ({d['path']})")
    return 0


def cmd_download(args) -> int:
    from .engine import Engine

    engine = Engine(_settings(args))
    f = engine.DEFAULT_DOWNLOAD
    print(f"downloading {f.label} ({f.repo}/{f.filename}) into {engine.checkpoint_folder()}", file=sys.stderr)

    def show(p):
        pct = f"{p.fraction * 100:5.1f}%" if p.total else ""
        sys.stderr.write(f"\r{p.done / 1e9:6.2f} GB {pct} {p.elapsed:6.0f}s")
        sys.stderr.flush()

    path = engine.download_default_model(on_progress=show)
    sys.stderr.write("\n")
    print(path)
    return 0


def cmd_serve(args) -> int:
    from .server import serve

    return serve(config.settings_from_args(args))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.command in ("txt2img", "img2img", "inpaint", "upscale"):
            return cmd_generate(args, args.command)
        return {"pnginfo": cmd_pnginfo, "watermark": cmd_watermark, "models": cmd_models, "download": cmd_download,
                "serve": cmd_serve}[args.command](args)
    except Cancelled as e:
        print(f"sdui: {e}", file=sys.stderr)
        return 130
    except (SduiError, ValueError) as e:
        print(f"sdui: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("sdui: interrupted", file=sys.stderr)
        return 130


def entry() -> int:
    """The ``sdui`` console script: one malloc arena (see process.reexec_with_one_malloc_arena), then main."""
    from .process import reexec_with_one_malloc_arena

    reexec_with_one_malloc_arena()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
