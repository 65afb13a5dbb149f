"""Textual-inversion embeddings (A1111's ``embeddings/`` folder, ``--embeddings-dir``) on the
manager's cached models.

- Files (A1111 ``modules/textual_inversion/textual_inversion.py``): ``.pt``/``.bin`` pickles, read
  only through torch's ``weights_only`` unpickler after ``picklescan`` (never unpickled otherwise),
  and ``.safetensors``. Layouts: A1111's own (``string_to_param`` {"*": tensor} with ``step``,
  ``sd_checkpoint``, ``sd_checkpoint_name``), one tensor under any key (diffusers' {token: tensor},
  safetensors' ``emb_params``), and SDXL's ``clip_l`` + ``clip_g``. The file's stem is the word
  prompts use, whatever name is stored inside (as in A1111).
- Fit: A1111 compares an embedding's width ("shape": 768 for SD 1.x, 1024 for SD 2.x, 768 + 1280 for
  SDXL) with the model's and lists the others as skipped. On SDXL only two-part files fit, and each
  part goes onto its own encoder: ``clip_l`` onto CLIP ViT-L (``text_encoder``/``tokenizer``),
  ``clip_g`` onto OpenCLIP ViT-bigG (``text_encoder_2``/``tokenizer_2``), under the same tokens
  (as diffusers' docs load SDXL embeddings).
- Loading: each file once per model, with diffusers' ``load_textual_inversion``, onto a copy of the
  model's tokenizer made at its first embedding (single-file models share one tokenizer object), and
  under tokens of sdui's own (``<ti-<sha256>-<i>>``, one per vector) rather than the name itself:
  diffusers adds the name as a token, which would split every word containing it ("cat" would cut
  "category") and refuse names already in the vocabulary. Existing tokens keep their ids and rows,
  so a prompt that names no embedding encodes byte for byte as before.
- Prompts: a name is found as A1111 finds it, by the words CLIP splits the text into (case does not
  matter, ``my-embed`` matches ``my - embed`` but not ``my-embeds``), in the prompt and the negative
  prompt, and replaced by its tokens before the emphasis parser runs, so ``(name:1.2)`` weights every
  vector (this is what diffusers' ``maybe_convert_prompt`` does for its own token names).
- Infotext: ``TI hashes: "name: 0123456789ab"``, the first 12 hex digits of the file's SHA-256
  (A1111 ``Embedding.shorthash``), for the embeddings a job used.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import pickle
import re
import struct
import time
import weakref
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from . import formats, picklescan, registry
from .. import prompts
from ..types import Architecture, InvalidRequest, ModelLoadError, UnknownModelError, redact_paths

if TYPE_CHECKING:
    from .manager import LoadedModel, ModelManager

log = logging.getLogger(__name__)

HASH_CHARS = 12  # A1111's Embedding.shorthash
MAX_FILE_BYTES = 32 * 1024 * 1024  # a 75-vector SDXL embedding in fp32 is 0.6 MB; a checkpoint dropped here is refused
MAX_VECTORS = prompts.CHUNK  # more than a prompt chunk holds could never be placed
SDXL_PARTS = ("clip_l", "clip_g")
_NO_SEPARATORS = str.maketrans("", "", ":,")  # A1111 drops them from names in "TI hashes"
_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
_ARCH_WIDTHS = {Architecture.SD1: 768, Architecture.SD1_INPAINT: 768, Architecture.SD2: 1024, Architecture.SD2_V: 1024,
                Architecture.SD2_INPAINT: 1024, Architecture.SD2_DEPTH: 1024, Architecture.X4_UPSCALER: 1024}


# ---- what a file holds ------------------------------------------------------------------------------
@dataclass
class EmbeddingFile:
    """One file's vectors and A1111's listing fields, or why it cannot be used (``error``)."""

    stamp: tuple
    vectors: Any = None  # (count, width) float32 tensor; for SDXL {"clip_l": ..., "clip_g": ...}
    count: int = 0  # A1111 "vectors"
    width: int = 0  # A1111 "shape"
    step: Optional[int] = None
    sd_checkpoint: Optional[str] = None
    sd_checkpoint_name: Optional[str] = None
    error: Optional[str] = None

    @property
    def is_sdxl(self) -> bool:
        return isinstance(self.vectors, dict)

    def a1111(self) -> dict:
        """The fields A1111's ``/sdapi/v1/embeddings`` gives each embedding."""
        return {"step": self.step, "sd_checkpoint": self.sd_checkpoint, "sd_checkpoint_name": self.sd_checkpoint_name,
                "shape": self.width, "vectors": self.count}


def _stamp(path: str) -> tuple:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns)


def read_raw(path: str, fmt: str) -> Any:
    """The object a file holds, read without running code: safetensors through ``formats``, pickles
    only if ``picklescan`` finds nothing but what torch's ``weights_only`` loader allows, and then only
    through that loader. (``formats.load_state_dict`` keeps top-level tensors only, and A1111's
    layout nests its tensor under ``string_to_param``.)"""
    import torch

    if fmt == formats.SAFETENSORS:
        return formats.load_state_dict(path, fmt)
    if fmt not in (formats.PICKLE, formats.PICKLE_ZIP):
        raise ModelLoadError(f"{path}: not an embedding file (neither safetensors nor a PyTorch pickle)")
    problem = picklescan.check(path, fmt)
    if problem:
        raise ModelLoadError(f"{path}: {problem}")
    try:
        with formats.open_regular(path) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelLoadError(f"{path}: refused to load: the pickle contains objects other than tensors, which could "
                             f"run code. Use a .safetensors version of this embedding.") from None
    except (EOFError, zipfile.BadZipFile, struct.error, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{path}: truncated or corrupt file ({type(e).__name__}: {str(e)[:200]})") from None


def _matrix(t: Any, path: str, what: str):
    import torch

    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() not in (1, 2) or t.numel() == 0:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ModelLoadError(f"{path}: not an embedding ({what} is {shape}, not a matrix of vectors)")
    t = t.detach().to("cpu", torch.float32)
    return t.unsqueeze(0) if t.dim() == 1 else t  # diffusers' one-vector files hold a plain vector


def parse(data: Any, path: str, stamp: tuple = ()) -> EmbeddingFile:
    """A1111's reading of an embedding file's contents (``load_from_file``); raises ModelLoadError."""
    import torch

    if not isinstance(data, dict) or not data:
        raise ModelLoadError(f"{path}: not an embedding (it holds a {type(data).__name__}, not a dict of tensors)")
    out = EmbeddingFile(stamp=stamp)
    if "string_to_param" in data:  # A1111's own .pt
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            count = len(params) if isinstance(params, dict) else 0
            raise ModelLoadError(f"{path}: not a usable embedding (string_to_param holds {count} terms; A1111 takes one)")
        out.vectors = _matrix(next(iter(params.values())), path, "string_to_param")
        out.count, out.width = out.vectors.shape
    elif all(k in data for k in SDXL_PARTS):  # SDXL: one set of vectors per text encoder
        parts = {k: _matrix(data[k], path, k) for k in SDXL_PARTS}
        if parts["clip_l"].shape[0] != parts["clip_g"].shape[0]:
            raise ModelLoadError(f"{path}: not a usable embedding (clip_l has {parts['clip_l'].shape[0]} vectors, "
                                 f"clip_g {parts['clip_g'].shape[0]})")
        out.vectors = parts
        out.count = parts["clip_g"].shape[0]
        out.width = parts["clip_l"].shape[1] + parts["clip_g"].shape[1]
    else:  # diffusers concepts: {token: tensor}; safetensors files: {"emb_params": tensor}
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        key = "emb_params" if "emb_params" in tensors else next(iter(tensors), None) if len(data) == 1 else None
        if key is None:
            raise ModelLoadError(f"{path}: neither a textual-inversion embedding nor a diffusers concept (keys: "
                                 f"{', '.join(map(str, list(data)[:5]))})")
        out.vectors = _matrix(tensors[key], path, key)
        out.count, out.width = out.vectors.shape
    if out.count > MAX_VECTORS:
        raise ModelLoadError(f"{path}: not a usable embedding ({out.count} vectors; a prompt chunk holds {MAX_VECTORS})")
    step = data.get("step")
    out.step = step if isinstance(step, int) and not isinstance(step, bool) else None
    for key in ("sd_checkpoint", "sd_checkpoint_name"):
        value = data.get(key)
        setattr(out, key, value if isinstance(value, str) else None)
    return out


def read_file(entry: registry.ModelEntry) -> EmbeddingFile:
    """The embedding ``entry`` names; a file that cannot be used carries its reason (never raises,
    except OSError when the file is gone)."""
    stamp = _stamp(entry.path)
    if entry.error:
        return EmbeddingFile(stamp=stamp, error=entry.error)
    if stamp[0] > MAX_FILE_BYTES:
        return EmbeddingFile(stamp=stamp, error=f"{entry.path}: too large for an embedding ({stamp[0] // 2**20} MB; "
                                                f"at most {MAX_FILE_BYTES // 2**20} MB)")
    try:
        return parse(read_raw(entry.path, entry.format), entry.path, stamp)
    except ModelLoadError as e:
        return EmbeddingFile(stamp=stamp, error=str(e))


# ---- finding names in prompts -------------------------------------------------------------------------
# CLIP's pre-tokenizer (openai/CLIP simple_tokenizer): contractions, runs of letters, single digits,
# runs of other characters. BPE works inside these words, so a name's token ids appear in a prompt's
# (A1111's test) exactly where its words do.
_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+")
# Prompt syntax read before A1111 looks for names: a weight or step number after ":" ("(cat:1.2)",
# "[a:b:0.5]") and the BREAK keyword. Skipped over, so a file named "1" or "break" cannot break them.
_SYNTAX = r"(?P<syntax>:\s*[+-]?[.\d]+\s*[)\]]|(?-i:\bBREAK\b))"
_LEAD = {"letter": r"(?<![^\W\d_])", "other": r"(?<![^\s\w])(?<!_)", "digit": ""}
_TRAIL = {"letter": r"(?![^\W\d_])", "other": r"(?![^\s\w])(?!_)", "digit": ""}


def _class(ch: str) -> str:
    return "letter" if ch.isalpha() else "digit" if ch.isdigit() else "other"


def words(name: str) -> tuple[str, ...]:
    """The words CLIP splits ``name`` into (lower case)."""
    return tuple(_WORDS.findall(name.lower()))


def _word_pattern(pieces: tuple[str, ...]) -> str:
    out = [_LEAD[_class(pieces[0][0])]]
    for i, piece in enumerate(pieces):
        if i:  # two words of one kind need space between them, or CLIP would read one word
            same = _class(pieces[i - 1][-1]) == _class(piece[0]) != "digit"
            out.append(r"\s+" if same else r"\s*")
        out.append(re.escape(piece))
    out.append(_TRAIL[_class(pieces[-1][-1])])
    return "".join(out)


@functools.lru_cache(maxsize=8)
def _matcher(names: tuple[str, ...]) -> tuple[Optional[re.Pattern], dict[str, str]]:
    """One pattern finding every name (longer word sequences first, as A1111 tries them) and the
    group -> name table; the first of two names with the same words wins."""
    by_words: dict[tuple, str] = {}
    for name in names:
        pieces = words(name)
        if pieces:
            by_words.setdefault(pieces, name)
    if not by_words:
        return None, {}
    ordered = sorted(by_words.items(), key=lambda kv: (-len(kv[0]), -sum(map(len, kv[0]))))
    groups = {f"e{i}": name for i, (_, name) in enumerate(ordered)}
    pattern = "|".join([_SYNTAX, *(f"(?P<e{i}>{_word_pattern(pieces)})" for i, (pieces, _) in enumerate(ordered))])
    return re.compile(pattern, re.IGNORECASE), groups


def mentions(text: str, names: tuple[str, ...]) -> list[str]:
    """The names ``text`` mentions, in order of first mention."""
    pattern, groups = _matcher(names)
    if pattern is None or not text:
        return []
    return list(dict.fromkeys(groups[m.lastgroup] for m in pattern.finditer(text) if m.lastgroup in groups))


def expand(text: str, names: tuple[str, ...], tokens: dict[str, list[str]]) -> str:
    """``text`` with each mention of a name in ``tokens`` replaced by its tokens, in one pass (a
    replacement is never searched again)."""
    pattern, groups = _matcher(names)
    if pattern is None or not text or not tokens:
        return text

    def replace(m: re.Match) -> str:
        toks = tokens.get(groups.get(m.lastgroup or "", ""))
        return " ".join(toks) if toks else m.group(0)

    return pattern.sub(replace, text)


# ---- embeddings on the cached models ------------------------------------------------------------------
@dataclass
class _ModelTokens:
    """One model's own tokenizer and the tokens of each embedding loaded on it (by content hash)."""

    tokenizer: Any
    tokens: dict[str, list[str]] = field(default_factory=dict)
    tokenizer_2: Any = None  # SDXL's second tokenizer (a copy too); None on SD 1.x/2.x


def _folder_stamp(folder: str) -> Optional[int]:
    try:
        return os.stat(folder).st_mtime_ns
    except OSError:
        return None


class ModelEmbeddings:
    def __init__(self, manager: "ModelManager"):
        self.manager = manager
        self._files: dict[str, EmbeddingFile] = {}  # path -> contents, while the file's size and mtime hold
        self._models: "weakref.WeakKeyDictionary[Any, _ModelTokens]" = weakref.WeakKeyDictionary()  # by text encoder
        self._folder_seen: Optional[int] = None

    # ---- the folder ---------------------------------------------------------------------------------
    def entries(self) -> list[registry.ModelEntry]:
        """The listed files. As A1111 does before every job, the folder is looked at again when its
        modification time changed (a file added or removed), so no restart or refresh is needed."""
        stamp = _folder_stamp(self.manager.settings.embeddings_dir)
        if self._folder_seen is not None and stamp != self._folder_seen:
            self.manager.refresh()
        self._folder_seen = stamp
        return self.manager.entries(registry.EMBEDDING_KIND)

    def _names(self, entries: list[registry.ModelEntry]) -> tuple[str, ...]:
        return tuple(e.name for e in entries)

    def file(self, entry: registry.ModelEntry) -> EmbeddingFile:
        cached = self._files.get(entry.path)
        try:
            if cached is not None and cached.stamp == _stamp(entry.path) and not entry.error:
                return cached
            cached = read_file(entry)
        except OSError as e:
            return EmbeddingFile(stamp=(), error=f"{entry.path}: cannot read ({e.strerror or e})")
        self._files[entry.path] = cached
        return cached

    # ---- fit ----------------------------------------------------------------------------------------
    def _width_of(self, loaded: "LoadedModel") -> tuple[Optional[int], bool]:
        """(text-encoder width, is SDXL) of a loaded model; width None when it has no text encoder."""
        pipe = loaded.pipe
        te, te2 = getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)
        if te2 is not None:  # SDXL: A1111's "shape" is both widths together (768 + 1280)
            if te is None or not hasattr(pipe, "load_textual_inversion"):
                return None, True
            return int(te.get_input_embeddings().weight.shape[-1] + te2.get_input_embeddings().weight.shape[-1]), True
        if te is None or not hasattr(pipe, "load_textual_inversion"):
            return None, False
        return int(te.get_input_embeddings().weight.shape[-1]), False

    def _width_on_disk(self, entry: registry.ModelEntry) -> tuple[Optional[int], bool]:
        """The same for a model not loaded, from its architecture or its config folder; (None, False)
        when neither says (then every embedding is listed as loaded, as A1111 does before it knows)."""
        arch = Architecture.of(entry.architecture)
        if arch == Architecture.SDXL:
            return 768 + 1280, True
        if arch in _ARCH_WIDTHS:
            return _ARCH_WIDTHS[arch], False
        folder = entry.config_dir or (entry.path if entry.format == formats.DIFFUSERS else None)
        if folder:
            if (Path(folder) / "text_encoder_2").is_dir():
                return None, True
            try:
                width = registry.read_json_object(Path(folder) / "text_encoder" / "config.json").get("hidden_size")
            except (OSError, ModelLoadError):
                width = None
            if isinstance(width, int) and not isinstance(width, bool):
                return width, False
        return None, False

    def _target_width(self, model: Optional[str]) -> tuple[Optional[int], bool, str]:
        """(width, is SDXL, model name) of ``model`` (a listed name), else the current model, else the
        server's default."""
        mgr = self.manager
        entry = None
        if model:
            try:
                entry = mgr.find(model)
            except UnknownModelError:
                entry = None
        loaded = mgr.cached_model(entry.name) if entry else mgr.current
        if loaded is not None:
            return (*self._width_of(loaded), loaded.name)
        entry = entry or mgr.default_checkpoint()
        if entry is None:
            return None, False, ""
        return (*self._width_on_disk(entry), entry.name)

    @staticmethod
    def fit_problem(f: EmbeddingFile, width: Optional[int], is_sdxl: bool, model_name: str) -> Optional[str]:
        """Why embedding ``f`` cannot go on a model of this width, in words; None when it can (or the
        model's width is not known)."""
        if is_sdxl and not f.is_sdxl:
            made = _FAMILIES.get(f.width, "another model family")
            return (f"it has one set of {f.width}-wide vectors ({made}), but the model '{model_name}' is SDXL, which "
                    f"takes two-part embeddings (clip_l + clip_g); an embedding works only on the family it was made for")
        if f.is_sdxl and not is_sdxl:
            return (f"it is an SDXL embedding (clip_l + clip_g), but the model '{model_name}' is not SDXL; an embedding "
                    f"works only on the family it was made for")
        if width is not None and f.width != width:
            made = _FAMILIES.get(f.width, "another model family")
            return (f"its vectors are {f.width} wide ({made}), but the model '{model_name}' takes {width}-wide vectors "
                    f"({_FAMILIES.get(width, 'its text encoder')}); an embedding works only on the family it was made for")
        return None

    def listing(self, model: Optional[str] = None) -> dict:
        """A1111's ``/sdapi/v1/embeddings`` for ``model`` (else the current model, else the default):
        ``loaded`` (they fit its text encoder) sorted by name as A1111 sorts them, and ``skipped``; a
        file that cannot be read is in neither (A1111 logs it; ``models`` lists it with its error)."""
        width, is_sdxl, name = self._target_width(model)
        loaded: dict[str, dict] = {}
        skipped: dict[str, dict] = {}
        for entry in self.entries():
            f = self.file(entry)
            if f.error:
                continue
            target = skipped if self.fit_problem(f, width, is_sdxl, name) else loaded
            target[entry.name] = f.a1111()
        return {"loaded": dict(sorted(loaded.items(), key=lambda kv: kv[0].lower())), "skipped": skipped}

    # ---- a job's prompts ----------------------------------------------------------------------------
    def use(self, loaded: "LoadedModel", pipe, prompt: str, negative_prompt: str = "") -> tuple[str, str, list[str]]:
        """The embeddings ``prompt`` and ``negative_prompt`` name, loaded onto ``loaded``'s model (once
        per model), and both texts with each name replaced by its tokens; plus warnings. ``pipe`` is the
        pipeline view the job runs (its memory level is put back after an embedding is loaded).

        A name whose file cannot be used, or that does not fit this model, stays plain text and is
        warned about (A1111 lists such a file as skipped and reads the word as text)."""
        with self.manager.lock:
            entries = self.entries()
            names = self._names(entries)
            named = mentions(prompt, names) + mentions(negative_prompt, names)
            if not named:
                return prompt, negative_prompt, []
            by_name = {e.name: e for e in entries}
            width, is_sdxl = self._width_of(loaded)
            warnings: list[str] = []
            wanted: dict[str, tuple[registry.ModelEntry, EmbeddingFile]] = {}
            for name in dict.fromkeys(named):
                entry = by_name[name]
                f = self.file(entry)
                problem = f.error or self.fit_problem(f, width, is_sdxl, loaded.name)
                if problem is None and width is None:
                    problem = "this model's pipeline cannot load embeddings"
                if problem:  # the file's name, not the server's path: warnings reach remote clients
                    warnings.append(f"Embedding '{name}' was not applied: {redact_paths(problem)}")
                else:
                    wanted[name] = (entry, f)
            tokens = self._load(loaded, pipe, wanted, warnings)
            return expand(prompt, names, tokens), expand(negative_prompt, names, tokens), warnings

    def _model_tokens(self, loaded: "LoadedModel") -> _ModelTokens:
        """The model's own tokenizer (a copy, made once: tokens added to it must not reach other models),
        set on every pipeline view of the model."""
        te = loaded.pipe.text_encoder
        state = self._models.get(te)
        if state is None:
            state = _ModelTokens(tokenizer=copy.deepcopy(loaded.pipe.tokenizer))
            if getattr(loaded.pipe, "tokenizer_2", None) is not None:
                state.tokenizer_2 = copy.deepcopy(loaded.pipe.tokenizer_2)
            self._models[te] = state
        for p in loaded.all_pipelines():
            if getattr(p, "tokenizer", None) is not state.tokenizer:
                p.register_modules(tokenizer=state.tokenizer)
            if state.tokenizer_2 is not None and getattr(p, "tokenizer_2", None) is not state.tokenizer_2:
                p.register_modules(tokenizer_2=state.tokenizer_2)
        return state

    def _load(self, loaded: "LoadedModel", pipe, wanted: dict, warnings: list) -> dict[str, list[str]]:
        from .lora_adapters import unhook

        if not wanted:
            return {}
        state = self._model_tokens(loaded)
        keys = {}
        for name, (entry, _) in list(wanted.items()):
            try:
                keys[name] = self.manager.hashes.sha256(entry.path)[:16]
            except OSError as e:
                warnings.append(f"Embedding '{name}' was not applied: cannot read it ({e.strerror or e})")
                del wanted[name]
        new = [(name, f, keys[name]) for name, (_, f) in wanted.items() if keys[name] not in state.tokens]
        if new:
            offloaded = loaded.level.offloads
            if offloaded:  # the embedding table is replaced by a larger one; accelerate's hooks must not be on it
                unhook(loaded, force=True)
            try:
                for name, f, key in new:
                    t0 = time.perf_counter()
                    toks = prompts.embedding_tokens(key, f.count)
                    # (vectors, tokenizer, text encoder) per encoder: SDXL's clip_l and clip_g parts, each on its own
                    parts = [(f.vectors["clip_l"], state.tokenizer, loaded.pipe.text_encoder),
                             (f.vectors["clip_g"], state.tokenizer_2, loaded.pipe.text_encoder_2)] if f.is_sdxl else [
                                 (f.vectors, state.tokenizer, loaded.pipe.text_encoder)]
                    before = [(tok, te, len(tok), te.get_input_embeddings().weight.shape[0]) for _, tok, te in parts]
                    try:
                        for (vectors, tok, te), (_, _, _, rows) in zip(parts, before, strict=True):
                            if rows != len(tok):
                                raise ModelLoadError(f"the tokenizer has {len(tok)} tokens but the text encoder "
                                                     f"{rows} rows")
                            # grown here without transformers' mean resizing (the covariance of the whole table and a
                            # random draw, for rows diffusers overwrites at once); diffusers then finds the table the
                            # right size and writes the vectors in
                            te.resize_token_embeddings(rows + f.count, mean_resizing=False)
                            loaded.pipe.load_textual_inversion(vectors, token=toks, tokenizer=tok, text_encoder=te)
                    except Exception as e:  # noqa: BLE001 - what diffusers refuses is a warning, the job goes on
                        for tok, te, count, rows in before:  # each table as it was, where its tokenizer did not grow
                            if len(tok) == count and te.get_input_embeddings().weight.shape[0] != rows:
                                te.resize_token_embeddings(rows, mean_resizing=False)
                        warnings.append(f"Embedding '{name}' was not applied: cannot load it "
                                        f"({type(e).__name__}: {' '.join(str(e).split())[:300]})")
                        continue
                    state.tokens[key] = toks
                    log.info("embedding %s (%d vectors) loaded into %s in %.2fs", name, f.count, loaded.name,
                             time.perf_counter() - t0)
            finally:
                if offloaded:
                    self.manager.apply_level(loaded, loaded.level, pipe, force=True)
        return {name: state.tokens[keys[name]] for name in wanted if keys[name] in state.tokens}

    def hashes(self, prompt: str, negative_prompt: str = "", model_name: Optional[str] = None) -> Optional[str]:
        """A1111's "TI hashes" infotext value for the embeddings the prompt, then the negative prompt,
        use on the model ``model_name``: ``name: 0123456789ab`` joined by ", " (the file's name without
        ":" and ","); None when there are none."""
        entries = self.manager.entries(registry.EMBEDDING_KIND)
        names = self._names(entries)
        try:
            text = prompts.extract_lora_tags(prompt or "").text  # the tags are not prompt text
        except InvalidRequest:
            text = prompt or ""
        named = list(dict.fromkeys(mentions(text, names) + mentions(negative_prompt or "", names)))
        if not named:
            return None
        loaded = self.manager.cached_model(model_name)
        width, is_sdxl, shown = (*self._width_of(loaded), loaded.name) if loaded else self._target_width(model_name)
        by_name = {e.name: e for e in entries}
        out = []
        for name in named:
            entry = by_name[name]
            f = self.file(entry)
            if f.error or self.fit_problem(f, width, is_sdxl, shown) or (loaded is not None and width is None):
                continue
            try:
                digest = self.manager.hashes.sha256(entry.path)
            except OSError:
                continue
            out.append(f"{name.translate(_NO_SEPARATORS)}: {digest[:HASH_CHARS]}")
        return ", ".join(out) or None
