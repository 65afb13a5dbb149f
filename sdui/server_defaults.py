"""The server owner's defaults (the UI's Settings tab), kept in one JSON file (``--settings-file``).

What they are: the sampler, steps and size a new page starts with, how often a live preview is made,
the file format saved images get (png, jpg or webp, the infotext inside each) and whether images are
saved to disk at all. The same values are what the REST API's ``GET /sdapi/v1/options`` shows as the
server's ``samples_format``, ``samples_save`` and ``show_progress_every_n_steps`` (a client may still
choose its own there). The file is read once, rewritten atomically on each change, and read back by
the next server; a value in it that is no longer valid (a sampler renamed, a size beyond ``--max-size``)
falls back to the built-in default with a line in the log.

Nothing here imports torch or gradio; nothing happens at import.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fields, samplers
from .types import InvalidRequest, Limits

log = logging.getLogger(__name__)

FORMATS = ("png", "jpg", "webp")
PREVIEW_RANGE = (1, 150)


@dataclass(frozen=True)
class ServerDefaults:
    sampler: str = fields.default("sampler")
    steps: int = fields.default("steps")
    width: int = fields.default("width")
    height: int = fields.default("height")
    preview_every: int = 4  # a live preview every this many sampling steps (and at the last one)
    output_format: str = fields.default("output_format")
    save: bool = True  # save generated images to the outputs folder

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


KEYS = tuple(f.name for f in dataclasses.fields(ServerDefaults))
LABELS = {"sampler": "Sampling method", "steps": "Sampling steps", "width": "Width", "height": "Height",
          "preview_every": "Live preview every N steps", "output_format": "File format for images",
          "save": "Save images to disk"}


def check(key: str, value: Any, limits: Limits) -> Any:
    """``value`` as the type of ``key`` if it is allowed; InvalidRequest naming the setting and the range."""
    label = LABELS.get(key, key)
    if key not in KEYS:
        raise InvalidRequest("setting", key, f"one of {', '.join(KEYS)}")
    if key == "sampler":
        names = samplers.sampler_names()
        if value not in names:
            raise InvalidRequest(label, value, f"one of {', '.join(names)}")
        return value
    if key == "output_format":
        if value not in FORMATS:
            raise InvalidRequest(label, value, f"one of {', '.join(FORMATS)}")
        return value
    if key == "save":
        if not isinstance(value, bool):
            raise InvalidRequest(label, value, "true or false")
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(label, value, "an integer")
    if key == "preview_every":
        lo, hi = PREVIEW_RANGE
    else:
        lo, hi = fields.BY_NAME[key].bounds(limits)
    if not lo <= value <= hi or (key in ("width", "height") and value % 8):
        extra = ", a multiple of 8" if key in ("width", "height") else ""
        raise InvalidRequest(label, value, f"an integer from {int(lo)} to {int(hi)}{extra}")  # type: ignore[arg-type]
    return value


class DefaultsStore:
    """The owner's defaults and their file. Thread-safe."""

    def __init__(self, path: str | os.PathLike, limits: Limits, base: ServerDefaults | None = None):
        self.path = Path(path)
        self.limits = limits
        self.base = base or ServerDefaults()  # what the file does not set (the command line's --preview-every)
        self._lock = threading.Lock()
        self._values: ServerDefaults | None = None

    def get(self) -> ServerDefaults:
        with self._lock:
            if self._values is None:
                self._values = self._read()
            return self._values

    def _read(self) -> ServerDefaults:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self.base
        except (OSError, ValueError) as e:
            log.warning("settings file %s could not be read (%s); using the built-in defaults", self.path, e)
            return self.base
        good = {}
        for key, value in (raw if isinstance(raw, dict) else {}).items():
            try:
                good[key] = check(key, value, self.limits)
            except InvalidRequest as e:
                log.warning("settings file %s: %s; the built-in default is used", self.path, e)
        return dataclasses.replace(self.base, **good)

    def update(self, changes: dict[str, Any]) -> ServerDefaults:
        """Check every change (InvalidRequest for the first bad one; nothing changes then), then write the
        file atomically and return the new defaults."""
        checked = {key: check(key, value, self.limits) for key, value in changes.items()}
        with self._lock:
            current = self._values if self._values is not None else self._read()
            new = dataclasses.replace(current, **checked)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(new.as_dict(), f, indent=2)
                    f.write("\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            finally:
                tmp.unlink(missing_ok=True)
            self._values = new
            return new
