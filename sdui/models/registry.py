"""What is on disk: checkpoints, VAEs, LoRAs and upscalers, with names, formats and hashes.

Folder layout is AUTOMATIC1111's ``models/`` tree: ``Stable-diffusion/`` (checkpoints, single files
or diffusers folders), ``VAE/``, ``Lora/``, ``ESRGAN/`` and ``RealESRGAN/``. ``--ckpt-dir`` adds a
folder of checkpoints, ``--ckpt`` one file, folder or Hub id. Hub ids already in the local
Hugging Face cache are listed too, so they work offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from . import detect, formats, picklescan
from ..types import Architecture, ModelKind, ModelLoadError

CHECKPOINT_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
UPSCALER_EXTS = (".pth", ".pt", ".safetensors")
CHECKPOINT, VAE_KIND, LORA_KIND, UPSCALER_KIND, EMBEDDING_KIND = ModelKind  # the kinds of model on disk (types.ModelKind)
EMBEDDING_EXTS = (".pt", ".bin", ".safetensors")  # A1111 also reads embeddings hidden in PNG/WebP images; sdui does not


def cache_dir() -> Path:
    return Path(os.environ.get("SDUI_CACHE_DIR") or Path.home() / ".cache" / "sdui")


@dataclass
class ModelEntry:
    name: str
    path: str
    kind: ModelKind = CHECKPOINT
    format: str = formats.UNKNOWN
    architecture: Architecture = detect.UNKNOWN
    config_dir: Optional[str] = None  # a <stem>.config/ folder beside the file, if any
    yaml: Optional[str] = None  # an A1111 <stem>.yaml beside the file, if any
    error: Optional[str] = None
    sha256: Optional[str] = None
    extra: dict = field(default_factory=dict)

    @property
    def short_hash(self) -> Optional[str]:
        return self.sha256[:10] if self.sha256 else None

    @property
    def filename(self) -> str:
        """The name with its extension for files (A1111 titles use it), the name for folders and Hub ids."""
        if not self.is_file:
            return self.name
        return self.name + Path(self.path).suffix

    @property
    def title(self) -> str:
        """A1111's checkpoint title: ``name.safetensors [shorthash]`` (the hash only once known)."""
        return f"{self.filename} [{self.short_hash}]" if self.short_hash else self.filename

    @property
    def is_file(self) -> bool:
        return self.format not in (formats.DIFFUSERS, formats.HUB)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["hash"] = self.short_hash
        d["title"] = self.title
        # what the architecture id means, in words ("SD 2.x depth-to-image"); None for custom/hub/unknown
        d["architecture_label"] = detect.ARCH_LABELS.get(self.architecture) if self.architecture else None
        return d


class HashCache:
    """SHA-256 of whole files, cached on disk by path + size + mtime (A1111's "shorthash" = first 10)."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "hashes.json"
        self._lock = threading.Lock()
        self._data: dict | None = None

    def _load(self) -> dict:
        if self._data is None:
            try:
                self._data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._data = {}
        return self._data

    @staticmethod
    def _stamp(path: str) -> list:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]

    def cached(self, path: str) -> Optional[str]:
        with self._lock:
            item = self._load().get(os.path.abspath(path))
            try:
                if item and item["stamp"] == self._stamp(path):
                    return item["sha256"]
            except OSError:
                return None
        return None

    def sha256(self, path: str) -> str:
        hit = self.cached(path)
        if hit:
            return hit
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        with self._lock:
            data = self._load()
            data[os.path.abspath(path)] = {"stamp": self._stamp(path), "sha256": digest}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        return digest


def describe_file(path: Path, name: str, kind: str) -> ModelEntry:
    """Format, architecture and sidecars of one file; errors are recorded, never raised, so one
    bad file cannot stop a listing."""
    entry = ModelEntry(name=name, path=str(path), kind=kind)
    try:
        _describe_into(entry, path, kind)
    except ModelLoadError as e:
        entry.error = str(e)
    except OSError as e:
        entry.error = f"{path}: cannot read ({e.strerror or e})"
    except Exception as e:  # noqa: BLE001 - last line of defence; the known causes are handled above
        entry.error = f"{path}: unreadable ({type(e).__name__}: {str(e)[:200]})"
    return entry


def _describe_into(entry: ModelEntry, path: Path, kind: str) -> None:
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):  # a FIFO would block the listing forever; never open one
        raise ModelLoadError(f"{path}: not a regular file ({formats.file_kind(mode)})")
    stem = path.with_suffix("")
    if (cfg := Path(str(stem) + ".config")).is_dir():
        entry.config_dir = str(cfg)
    if (yml := Path(str(stem) + ".yaml")).is_file():
        entry.yaml = str(yml)
    entry.format = formats.sniff_format(path)
    shapes = None
    if entry.format == formats.SAFETENSORS:
        shapes = formats.tensor_shapes(path, entry.format)  # validates the header, for every kind
    elif entry.format in (formats.PICKLE, formats.PICKLE_ZIP) and (problem := picklescan.check(path, entry.format)):
        raise ModelLoadError(f"{path}: {problem}")
    if kind == CHECKPOINT:
        if shapes is not None:
            if problem := detect.shape_problem(shapes):
                raise ModelLoadError(f"{path}: corrupt checkpoint ({problem})")
            entry.architecture = detect.detect_architecture(shapes)
        elif entry.format in (formats.PICKLE, formats.PICKLE_ZIP):
            # Reading keys means unpickling (safely); left to load time to keep listing fast.
            entry.architecture = detect.UNKNOWN
        else:
            formats.load_state_dict(path, entry.format)  # raises with the reason
        if entry.yaml:
            entry.architecture = detect.architecture_from_yaml(entry.architecture, detect.yaml_hints(Path(entry.yaml)))
        if entry.config_dir:
            entry.architecture = detect.CUSTOM
    elif entry.format == formats.UNKNOWN:
        raise ModelLoadError(f"{path}: not a model file (neither safetensors nor a PyTorch checkpoint)")
    elif kind == VAE_KIND and shapes is not None and detect.vae_layout(shapes) is None:
        raise ModelLoadError(f"{path}: not a VAE (no encoder/decoder weights found)")


def _is_diffusers_folder(p: Path) -> bool:
    try:
        return (p / "model_index.json").is_file()
    except OSError:  # an unreadable folder (pathlib re-raises EACCES): not one we can load
        return False


def _iter_checkpoints(root: Path):
    """Single files and diffusers folders under ``root`` (a diffusers folder is not descended into).

    Names are yielded whatever the file is (FIFOs included): ``describe_file`` reports those it
    cannot read instead of skipping them silently."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        d = Path(dirpath)
        keep = []
        for sub in sorted(dirnames):
            p = d / sub
            if sub.endswith(".config") or sub.startswith("."):
                continue
            if _is_diffusers_folder(p):
                yield p
            else:
                keep.append(sub)
        dirnames[:] = keep
        for fn in sorted(filenames):
            if fn.lower().endswith(CHECKPOINT_EXTS):
                yield d / fn


def _unique_name(base: str, rel: str, taken: set) -> str:
    name = base if base not in taken else rel
    taken.add(name)
    return name


def hub_cache_models() -> list[str]:
    """Hub ids of diffusers pipelines already in the local Hugging Face cache."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return []
    root = Path(constants.HF_HUB_CACHE)
    out = []
    if root.is_dir():
        for repo in sorted(root.glob("models--*")):
            if any(repo.glob("snapshots/*/model_index.json")):
                out.append(repo.name[len("models--"):].replace("--", "/"))
    return out


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it: the hub is never contacted."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def checkpoint_folder(models_dir: str | os.PathLike) -> Path:
    """``models/Stable-diffusion/``: where checkpoints live in A1111's layout."""
    return Path(models_dir) / "Stable-diffusion"


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not os.path.exists(text) and not text.startswith((".", "/", "~"))


def scan(models_dir: str | None = None, ckpt_dir: str | None = None, ckpt: str | None = None,
         include_hub_cache: bool = True, embeddings_dir: str | None = None) -> dict[str, list[ModelEntry]]:
    """Everything found, by kind: {"checkpoint": [...], "vae": [...], "lora": [...], "upscaler": [...],
    "embedding": [...]}."""
    found: dict[str, list[ModelEntry]] = {CHECKPOINT: [], VAE_KIND: [], LORA_KIND: [], UPSCALER_KIND: [],
                                          EMBEDDING_KIND: []}
    taken: set = set()
    seen_paths: set = set()

    def add_checkpoint(p: Path, root: Optional[Path]):
        real = os.path.realpath(p)
        if real in seen_paths:
            return
        seen_paths.add(real)
        rel = str(p.relative_to(root)) if root else p.name
        base = p.name if p.is_dir() else p.stem
        rel_noext = rel if p.is_dir() else str(Path(rel).with_suffix(""))
        name = _unique_name(base, rel_noext.replace(os.sep, "/"), taken)
        if p.is_dir():
            found[CHECKPOINT].append(describe_folder(p, name))
        else:
            found[CHECKPOINT].append(describe_file(p, name, CHECKPOINT))

    def add_checkpoint_or_error(p: Path, root: Optional[Path]):
        try:
            add_checkpoint(p, root)
        except Exception as e:  # noqa: BLE001 - describe_* record their own; this is the path handling
            found[CHECKPOINT].append(_unlistable(p, CHECKPOINT, e))

    roots = []
    if models_dir:
        roots.append(checkpoint_folder(models_dir))
    if ckpt_dir:
        roots.append(Path(ckpt_dir))
    for root in roots:
        for p in _iter_checkpoints(root):
            add_checkpoint_or_error(p, root)
    if ckpt:
        p = Path(ckpt).expanduser()
        if p.exists():
            add_checkpoint_or_error(p, None)
        elif looks_like_hub_id(ckpt) and ckpt not in taken:
            taken.add(ckpt)
            found[CHECKPOINT].append(ModelEntry(name=ckpt, path=ckpt, format=formats.HUB, architecture=detect.HUB))
        else:
            found[CHECKPOINT].append(ModelEntry(name=p.name, path=str(p), error=f"{ckpt}: no such file, folder or Hub id"))
    if include_hub_cache:
        for repo_id in hub_cache_models():
            if repo_id not in taken:
                taken.add(repo_id)
                found[CHECKPOINT].append(ModelEntry(name=repo_id, path=repo_id, format=formats.HUB, architecture=detect.HUB))
    if models_dir:
        for sub, kind, exts in (("VAE", VAE_KIND, CHECKPOINT_EXTS), ("Lora", LORA_KIND, (".safetensors", ".pt", ".ckpt")),
                                ("ESRGAN", UPSCALER_KIND, UPSCALER_EXTS), ("RealESRGAN", UPSCALER_KIND, UPSCALER_EXTS)):
            folder = Path(models_dir) / sub
            if folder.is_dir():
                names = {e.name for e in found[kind]}
                for p in sorted(folder.rglob("*")):
                    # anything but a folder is described, so a FIFO or socket is listed with its error
                    if p.name.lower().endswith(exts) and not _is_dir(p):
                        rel = str(p.relative_to(folder).with_suffix("")).replace(os.sep, "/")
                        found[kind].append(describe_file(p, rel if p.stem in names else p.stem, kind))
                        names.add(p.stem)
    if embeddings_dir:
        found[EMBEDDING_KIND] = scan_embeddings(Path(embeddings_dir))
    return found


def scan_embeddings(folder: Path) -> list[ModelEntry]:
    """Textual-inversion files anywhere under ``folder`` (A1111's ``embeddings/``): the file's stem is
    its name (the word prompts use); a second file with a stem already taken is named by its path
    inside the folder. Empty files are passed over, as A1111 does; pickles are checked here without
    being unpickled, like every other kind."""
    out: list[ModelEntry] = []
    if not _is_dir(folder):
        return out
    names: set = set()
    for p in sorted(folder.rglob("*")):
        if not p.name.lower().endswith(EMBEDDING_EXTS) or _is_dir(p):
            continue
        try:
            if p.stat().st_size == 0:
                continue
        except OSError:
            pass  # described below with the reason
        rel = str(p.relative_to(folder).with_suffix("")).replace(os.sep, "/")
        out.append(describe_file(p, rel if p.stem in names else p.stem, EMBEDDING_KIND))
        names.add(p.stem)
    return out


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def _unlistable(p: Path, kind: str, e: Exception) -> ModelEntry:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {str(e)[:200]}"
    return ModelEntry(name=p.name, path=str(p), kind=kind, error=f"{p}: cannot list ({reason})")


MAX_CONFIG_JSON = 1024 * 1024  # a diffusers model_index.json or config.json is a few KB


def read_json_object(path: Path) -> dict:
    """A small JSON file holding an object, read without trusting it: a FIFO, a huge file, deep
    nesting or a JSON value that is not an object raise ModelLoadError (OSError if unreadable)."""
    with formats.open_regular(path) as f:
        raw = f.read(MAX_CONFIG_JSON + 1)
    if len(raw) > MAX_CONFIG_JSON:
        raise ModelLoadError(f"{path}: not a diffusers config (larger than {MAX_CONFIG_JSON // 1024} KB)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise ModelLoadError(f"{path}: not a diffusers config (invalid JSON: {str(e)[:200]})") from None
    except RecursionError:
        raise ModelLoadError(f"{path}: not a diffusers config (nested {formats.json_depth(raw)} levels deep)") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: not a diffusers config (a JSON {type(data).__name__}, not an object)")
    return data


def describe_folder(folder: Path, name: str) -> ModelEntry:
    """A diffusers folder; a model_index.json that diffusers could not read is the entry's error."""
    entry = ModelEntry(name=name, path=str(folder), format=formats.DIFFUSERS)
    try:
        index = read_json_object(folder / "model_index.json")
    except ModelLoadError as e:
        entry.error = str(e)
    except FileNotFoundError:
        entry.error = f"{folder}: not a diffusers folder (no model_index.json)"
    except OSError as e:
        entry.error = f"{folder / 'model_index.json'}: cannot read ({e.strerror or e})"
    else:
        entry.architecture = _folder_architecture(folder, index)
    return entry


def _folder_architecture(folder: Path, index: dict) -> str:
    try:
        unet = read_json_object(folder / "unet" / "config.json")
    except (OSError, ModelLoadError):  # no UNet config (or not a usable one): architecture unknown
        return detect.UNKNOWN
    cls = index.get("_class_name")
    cls = cls if isinstance(cls, str) else ""
    if "XL" in cls:
        return detect.SDXL
    if "Upscale" in cls:
        return detect.X4_UPSCALER
    if "Depth2Img" in cls:
        return detect.SD2_DEPTH
    inpaint = unet.get("in_channels") == 9
    if unet.get("cross_attention_dim") == 1024:
        return detect.SD2_INPAINT if inpaint else detect.SD2
    if unet.get("cross_attention_dim") == 768:
        return detect.SD1_INPAINT if inpaint else detect.SD1
    return detect.CUSTOM
