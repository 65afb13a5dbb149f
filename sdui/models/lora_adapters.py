"""A1111's ``<lora:name:weight>`` prompt tags on the manager's cached models: which file a tag
names, loading each file once per model as a peft adapter, switching sets, hashes for the
infotext, and unloading. The file-level work (hashes, metadata, architecture fit, diffusers calls)
is in ``lora.py``; this is the part that needs the manager (its listing, lock and cached models)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Optional

from . import formats, lora, registry
from .. import prompts
from ..types import InvalidRequest, ModelLoadError

if TYPE_CHECKING:
    from .manager import LoadedModel, ModelManager


def unhook(loaded: "LoadedModel", force: bool = False) -> None:
    from .manager import _unhook  # the manager's one helper for offload hooks (imported late: it imports us)

    _unhook(loaded, force)

log = logging.getLogger(__name__)
_NO_SEPARATORS = str.maketrans("", "", ":,")  # A1111 drops them from names in "Lora hashes"


class ModelLoras:
    def __init__(self, manager: "ModelManager"):
        self.manager = manager
        self.state = lora.LoraState()  # LoRA files' hashes and metadata, each model's adapters

    def find(self, name: str) -> Optional[registry.ModelEntry]:
        """The LoRA a prompt tag names: a listed name (the file's stem), else the ``ss_output_name``
        alias A1111 also accepts when one file has it; None when there is none."""
        entries = self.manager.entries(registry.LORA_KIND)
        for wanted in dict.fromkeys((name, name.strip())):  # " name" finds nothing in A1111; we forgive it
            for e in entries:
                if e.name == wanted:
                    return e
            aliased = [e for e in entries if not e.error and self._file(e).metadata.get("ss_output_name") == wanted]
            if len(aliased) == 1:
                return aliased[0]
        return None

    def _file(self, entry: registry.ModelEntry) -> lora.LoraFile:
        try:
            return self.state.file(entry)
        except OSError:  # gone since the listing
            return lora.LoraFile(stamp=(), metadata={}, failures={None: "the file is gone"})

    def listing(self) -> list[dict]:
        """Every file in ``models/Lora/`` as A1111's ``/sdapi/v1/loras`` lists it: name, alias, path, metadata."""
        return [lora.describe(e, self._file(e)) for e in self.manager.entries(registry.LORA_KIND)]

    def names_for(self, architecture) -> list[str]:
        """The listed LoRAs that fit a checkpoint of ``architecture`` (what a picker shows): each
        safetensors file's family read from its header; a file whose family is not known without
        reading it whole (a pickle), or a checkpoint of a custom architecture, is not filtered out."""
        wanted = lora.checkpoint_family(architecture)
        out = []
        for e in self.manager.entries(registry.LORA_KIND):
            if e.error:
                continue
            if wanted is not None and e.format == formats.SAFETENSORS:
                try:
                    made_for = lora.family(formats.tensor_shapes(e.path, e.format), self._file(e).metadata)
                except (ModelLoadError, OSError):
                    continue
                if made_for is not None and made_for != wanted:
                    continue
            out.append(e.name)
        return out

    def takes_loras(self, loaded: LoadedModel) -> bool:
        return lora.can_take_loras(loaded.pipe)

    def use(self, loaded: LoadedModel, pipe, prompt: str, negative_prompt: str = "") -> tuple[str, list[str]]:
        """Apply the ``<lora:...>`` tags of ``prompt`` to ``loaded``'s model; return the prompt without
        its tags (what the text encoder sees) and warnings. ``pipe`` is the pipeline view the job runs
        (its memory level is put back after a LoRA is loaded). No tags: every LoRA layer is off and the
        model computes exactly what it did before any LoRA. Each file is loaded once per model and kept
        (``lora.MAX_CACHED_ADAPTERS`` beyond the job's); switching sets only changes adapter weights.

        An unknown name is a warning and the job goes on without it, as in A1111 (which notes "Lora not
        found"): a prompt pasted from elsewhere should still run, and the warning lists what there is.
        Raises InvalidRequest for a malformed tag or a LoRA of another architecture, before any LoRA
        weight is read."""
        parsed = prompts.extract_lora_tags(prompt)
        warnings = list(parsed.warnings)
        if any(m.group(1) in prompts.LORA_TYPES for m in prompts.EXTRA_NETWORK_TAG.finditer(negative_prompt or "")):
            warnings.append("LoRA tags in the negative prompt are read as text, not applied (as in A1111); to steer "
                            "away from a LoRA give it a negative weight in the prompt, e.g. <lora:name:-1>")
        with self.manager.lock:
            base = loaded.pipe
            if parsed.loras and not self.takes_loras(loaded):
                why = ("the peft package is not installed" if not lora.peft_available()
                       else "this model's pipeline cannot load LoRAs")
                warnings.append(f"LoRA tags were not applied ({why}); they were read as prompt text")
                return prompt, warnings
            wanted: "OrderedDict[str, list]" = OrderedDict()  # adapter -> [entry, te weight, unet weight, tag]
            for tag in parsed.loras:
                entry = self.find(tag.name)
                if entry is None:
                    names = ", ".join(e.name for e in self.manager.entries(registry.LORA_KIND) if not e.error) or "none"
                    warnings.append(f"LoRA '{tag.name[:80]}' not found; available: {names}")
                    continue
                problem = entry.error or self._failure(entry, base)
                if problem:
                    warnings.append(f"LoRA '{tag.name}' was not applied: {problem}")
                    continue
                try:
                    name = lora.adapter_name(self.state.content_hash(entry, self.manager.hashes.sha256))
                except OSError as e:
                    warnings.append(f"LoRA '{tag.name}' was not applied: cannot read it ({e.strerror or e})")
                    continue
                item = wanted.setdefault(name, [entry, 0.0, 0.0, tag.text])  # named twice: A1111 applies both
                item[1] += tag.te_weight
                item[2] += tag.unet_weight
            self._load_adapters(loaded, pipe, wanted, warnings)
            held = lora.adapters_on(base)
            active = OrderedDict((n, (item[1], item[2])) for n, item in wanted.items() if n in held)
            order = self.state.order(base)
            for name in active:
                order.move_to_end(name)
            lora.activate(base, active)
        return parsed.text, warnings

    def _failure(self, entry: registry.ModelEntry, pipe) -> Optional[str]:
        try:
            return self.state.failure(entry, pipe)
        except OSError:
            return "the file is gone"

    def _load_adapters(self, loaded: LoadedModel, pipe, wanted: "OrderedDict[str, list]", warnings: list) -> None:
        """Check every LoRA not on the model yet against the model's architecture, then load them. A
        file that cannot be read or loaded is a warning (A1111 notes "Networks with errors" and goes
        on); one made for another architecture is refused before any LoRA weight is read (for
        safetensors: pickles are read whole to see their shapes)."""
        base = loaded.pipe
        held = lora.adapters_on(base)
        label = lora.model_label(loaded.architecture)
        new = []
        for name, (entry, _, _, tag) in wanted.items():
            if name in held:
                continue
            try:
                if entry.format == formats.SAFETENSORS:
                    state_dict, shapes = None, formats.tensor_shapes(entry.path, entry.format)
                else:
                    state_dict = formats.load_state_dict(entry.path, entry.format)
                    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
            except (ModelLoadError, OSError) as e:
                self.state.fail(entry, None, str(e))
                warnings.append(f"LoRA '{entry.name}' was not applied: {e}")
                continue
            misfit = lora.fit_problem(shapes, self._file(entry).metadata, base, label)
            if misfit:
                raise InvalidRequest("prompt", tag, f"LoRA '{entry.name}' was made for {misfit[0]}, but the model "
                                     f"'{loaded.name}' is {misfit[1]}; a LoRA works only on the architecture it was "
                                     f"trained for")
            new.append((name, entry, state_dict))
        if not new:
            return
        offloaded = loaded.level.offloads
        if offloaded:  # peft wraps layers; accelerate's hooks must not be on them meanwhile
            unhook(loaded, force=True)
        order = self.state.order(base)
        try:
            for name, entry, state_dict in new:
                t0 = time.perf_counter()
                try:
                    if state_dict is None:
                        state_dict = formats.load_state_dict(entry.path, entry.format)
                    components = lora.load_adapter(base, state_dict, name)
                except Exception as e:  # noqa: BLE001 - a file diffusers cannot take: warned, as A1111 does
                    reason = f"cannot load it ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
                    self.state.fail(entry, None if isinstance(e, (ModelLoadError, OSError)) else base, reason)
                    warnings.append(f"LoRA '{entry.name}' was not applied: {reason}")
                    continue
                finally:
                    state_dict = None
                if not components:
                    self.state.fail(entry, base, "none of its layers exists in this model")
                    warnings.append(f"LoRA '{entry.name}' was not applied: none of its layers exists in this model")
                    continue
                for old, path in list(order.items()):  # the file changed: its old version goes
                    if path == entry.path and old != name:
                        lora.delete_adapter(base, old)
                        del order[old]
                order[name] = entry.path
                log.info("LoRA %s loaded into %s (%s) in %.2fs", entry.name, loaded.name, ", ".join(components),
                         time.perf_counter() - t0)
            spare = [n for n in order if n not in wanted]
            for name in spare[:max(0, len(spare) - lora.MAX_CACHED_ADAPTERS)]:  # least recently used first
                lora.delete_adapter(base, name)
                del order[name]
        finally:
            if offloaded:
                self.manager.apply_level(loaded, loaded.level, pipe, force=True)

    def hashes(self, prompt: str, model_name: Optional[str] = None) -> Optional[str]:
        """A1111's "Lora hashes" infotext value for the LoRAs ``prompt`` names that are found and
        usable: ``name: 0123456789ab`` joined by ", " (the name as written, without ":" and ","); None
        when there are none or the model ``model_name`` does not take LoRAs."""
        try:
            tags = prompts.extract_lora_tags(prompt or "").loras
        except InvalidRequest:
            return None
        loaded = self.manager.cached_model(model_name) if model_name else None
        if not tags or (loaded is not None and not self.takes_loras(loaded)):
            return None
        out: dict[str, str] = {}
        for tag in tags:
            entry = self.find(tag.name)
            if entry is None or entry.error or self._failure(entry, loaded.pipe if loaded else None):
                continue
            try:
                self.state.content_hash(entry, self.manager.hashes.sha256)
            except OSError:
                continue
            mentioned = tag.name.strip().translate(_NO_SEPARATORS)
            out.setdefault(mentioned, self._file(entry).a1111_hash()[:lora.HASH_CHARS])
        return ", ".join(f"{k}: {v}" for k, v in out.items()) or None

    def unload(self, name: Optional[str] = None) -> None:
        """Take every LoRA off the cached model ``name`` (all cached models for None): peft's layers
        are removed and the base weights are the ones loaded, byte for byte."""
        with self.manager.lock:
            models = self.manager.cached_models() if name is None else [m for m in [self.manager.cached_model(name)] if m]
            for loaded in models:
                if not lora.adapters_on(loaded.pipe):
                    continue
                unhook(loaded, force=True)
                loaded.view_levels.clear()  # the next run puts the memory level back
                loaded.pipe.unload_lora_weights()
                self.state.adapters.pop(id(loaded.pipe), None)
