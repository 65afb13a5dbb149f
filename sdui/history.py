"""History that lasts: every image in the outputs folder, listed from what is on disk.

An index file (``outputs/.sdui-history.json``) holds, per image (its path relative to the outputs
folder): the owner that made it, the prompt, the key parameters of its infotext, the file's mtime and
size. It is brought up to date incrementally on each listing (new files are read once, changed ones
again, vanished ones dropped), written atomically, and read back by the next server: a restart keeps
the history. Owners are strings the front end chooses (a login, a browser session); images the index
did not see being made (from before it existed, the CLI, copied in) have no owner (``None``), and the
front end decides who may see those (the server's owner).

Nothing here imports torch or gradio; nothing happens at import.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from .images import infotext as infotext_mod
from .types import SduiError

INDEX_NAME = ".sdui-history.json"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")
KEY_PARAMS = ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model", "Denoising strength",
              "Variation seed", "Postprocess upscaler", "Postprocess upscale by")
_MODES = {"txt2img-images": "txt2img", "img2img-images": "img2img", "extras-images": "upscale",
          "txt2img-grids": "txt2img grid", "img2img-grids": "img2img grid"}
_TEMPORARY = re.compile(r"^\.tmp-")


class NotYours(SduiError, PermissionError):
    """The image belongs to someone else (or to nobody you may act for)."""


@dataclass
class Entry:
    path: str  # relative to the outputs folder, with "/"
    owner: Optional[str]
    mtime_ns: int
    size: int
    prompt: str = ""
    negative_prompt: str = ""
    mode: str = ""
    params: dict = field(default_factory=dict)  # the key infotext values (strings), KEY_PARAMS order
    infotext: str = ""

    def caption(self, width: int = 80) -> str:
        """``prompt · Steps 20 · Euler a · CFG 7 · Seed 42 · 512x512 · txt2img`` (shortened prompt)."""
        prompt = " ".join(self.prompt.split())
        if len(prompt) > width:
            prompt = prompt[: width - 1] + "…"
        p = self.params
        bits = [prompt or f"({self.mode or 'image'})"]
        if "Steps" in p:
            bits.append(f"Steps {p['Steps']}")
        if "Sampler" in p:
            bits.append(p["Sampler"])
        if "CFG scale" in p:
            bits.append(f"CFG {p['CFG scale']}")
        if "Seed" in p:
            bits.append(f"Seed {p['Seed']}")
        if "Postprocess upscaler" in p:
            bits.append(f"{p['Postprocess upscaler']} x{p.get('Postprocess upscale by', '?')}")
        if "Size" in p:
            bits.append(p["Size"])
        if self.mode and prompt:
            bits.append(self.mode)
        return " · ".join(bits)


class History:
    """The index of one outputs folder. Thread-safe; one instance per server (the engine's)."""

    def __init__(self, outputs_dir: str | os.PathLike):
        self.root = Path(outputs_dir)
        self.index_path = self.root / INDEX_NAME
        self._lock = threading.RLock()
        self._entries: Optional[dict[str, Entry]] = None  # loaded on first use
        self._aliases: dict[str, str] = {}  # job owner (a browser session) -> history owner (its login)

    # ---- the index file --------------------------------------------------------------------------
    def _load(self) -> dict[str, Entry]:
        if self._entries is not None:
            return self._entries
        entries: dict[str, Entry] = {}
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
            self._aliases = {str(k): str(v) for k, v in (data.get("aliases") or {}).items()}
            for raw in data.get("entries", []):
                try:
                    e = Entry(**raw)
                except TypeError:
                    continue
                entries[e.path] = e
        except (OSError, ValueError, AttributeError):
            pass  # no index yet, or unreadable: rebuilt from the files (owners of old files are then unknown)
        self._entries = entries
        return entries

    def _save(self) -> None:
        entries = self._load()
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{os.getpid()}-{threading.get_ident()}-history.json"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "aliases": self._aliases, "entries": [asdict(e) for e in entries.values()]}, f,
                          ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.index_path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk: the index is rebuilt next time; the images are what matter

    # ---- keeping it up to date ------------------------------------------------------------------
    def _rel(self, path: str | os.PathLike) -> Optional[str]:
        try:
            return Path(os.path.realpath(path)).relative_to(os.path.realpath(self.root)).as_posix()
        except ValueError:
            return None  # saved somewhere else (the CLI's --outdir): not this history's

    def _read(self, rel: str, owner: Optional[str], st: os.stat_result) -> Entry:
        text = ""
        try:
            text = infotext_mod.read_infotext(str(self.root / rel)) or ""
        except (OSError, ValueError, SyntaxError):
            pass
        parsed = infotext_mod.parse_infotext(text) if text else {}
        params = {k: str(parsed[k]) for k in KEY_PARAMS if k in parsed}
        return Entry(path=rel, owner=owner, mtime_ns=st.st_mtime_ns, size=st.st_size, prompt=parsed.get("Prompt", ""),
                     negative_prompt=parsed.get("Negative prompt", ""), mode=_MODES.get(rel.split("/")[0], ""),
                     params=params, infotext=text)

    def record(self, paths: Iterable[Optional[str]], owner: Optional[str]) -> None:
        """Add just-saved images made for ``owner`` (the job's; its alias when it has one)."""
        with self._lock:
            entries = self._load()
            owner = self._aliases.get(owner, owner) if owner else owner
            changed = False
            for path in paths:
                rel = self._rel(path) if path else None
                if rel is None:
                    continue
                try:
                    st = os.stat(self.root / rel)
                except OSError:
                    continue
                entries[rel] = self._read(rel, owner, st)
                changed = True
            if changed:
                self._save()

    def scan(self) -> None:
        """Bring the index in line with the folder: read new and changed files, drop vanished ones."""
        with self._lock:
            entries = self._load()
            seen = set()
            changed = False
            if self.root.is_dir():
                for dirpath, dirs, files in os.walk(self.root):
                    dirs[:] = [d for d in dirs if not d.startswith(".")]
                    for name in files:
                        if not name.lower().endswith(IMAGE_EXTS) or _TEMPORARY.match(name):
                            continue
                        full = Path(dirpath) / name
                        rel = full.relative_to(self.root).as_posix()
                        try:
                            st = full.stat()
                        except OSError:
                            continue
                        seen.add(rel)
                        old = entries.get(rel)
                        if old is not None and (old.mtime_ns, old.size) == (st.st_mtime_ns, st.st_size):
                            continue
                        entries[rel] = self._read(rel, old.owner if old else None, st)
                        changed = True
            for rel in [r for r in entries if r not in seen]:
                del entries[rel]
                changed = True
            if changed:
                self._save()

    # ---- what the front ends ask ------------------------------------------------------------------
    @staticmethod
    def _visible(e: Entry, owner: Optional[str], include_unowned: bool, everyone: bool) -> bool:
        return everyone or (owner is not None and e.owner == owner) or (include_unowned and e.owner is None)

    def items(self, owner: Optional[str], query: str = "", include_unowned: bool = False, limit: int = 200,
              everyone: bool = False) -> list[Entry]:
        """``owner``'s images (and, with ``include_unowned``, those of no known owner; with ``everyone``,
        all: --shared-outputs), newest first, whose prompt contains every word of ``query`` (any case)."""
        self.scan()
        words = query.lower().split()
        with self._lock:
            mine = [e for e in self._load().values() if self._visible(e, owner, include_unowned, everyone)]
        mine = [e for e in mine if all(w in e.prompt.lower() for w in words)]
        mine.sort(key=lambda e: (e.mtime_ns, e.path), reverse=True)
        return mine[:limit]

    def get(self, rel: str, owner: Optional[str], include_unowned: bool = False, everyone: bool = False) -> Entry:
        """The entry at ``rel`` if ``owner`` may see it; raises NotYours otherwise (also for no such image)."""
        with self._lock:
            e = self._load().get(rel)
        if e is None or not self._visible(e, owner, include_unowned, everyone):
            raise NotYours("That image is not in your history.")
        return e

    def full_path(self, e: Entry) -> Path:
        return self.root / e.path

    def delete(self, rel: str, owner: Optional[str], include_unowned: bool = False) -> None:
        """Delete the file and its entry; only ``owner``'s own images (and unowned ones when allowed)."""
        with self._lock:
            e = self.get(rel, owner, include_unowned)
            full = self.full_path(e)
            if not os.path.realpath(full).startswith(os.path.realpath(self.root) + os.sep):
                raise NotYours("That image is not in the outputs folder.")
            try:
                full.unlink()
            except FileNotFoundError:
                pass
            self._load().pop(rel, None)
            self._save()

    def alias(self, job_owner: str, history_owner: str) -> int:
        """From now on, images of jobs owned by ``job_owner`` (a browser session) join ``history_owner``'s
        history (the login using that browser), and so do the ones it made before. Returns how many moved."""
        with self._lock:
            self._load()
            if job_owner == history_owner:
                return 0
            changed = self._aliases.get(job_owner) != history_owner
            self._aliases[job_owner] = history_owner
            n = self.reassign(job_owner, history_owner, save=False)
            if changed or n:
                self._save()
            return n

    def reassign(self, old_owner: str, new_owner: str, save: bool = True) -> int:
        """Give ``old_owner``'s images to ``new_owner``."""
        with self._lock:
            n = 0
            for e in self._load().values():
                if e.owner == old_owner:
                    e.owner = new_owner
                    n += 1
            if n and save:
                self._save()
            return n
