"""Per-browser-session plumbing: who the session is, running a job through the shared queue while
streaming progress, and handing saved PNGs to Gradio without exposing the outputs folder.

A session is identified by a random token kept in the browser's localStorage (``gr.BrowserState``),
so it survives a page reload; the token is the owner of the session's jobs in the queue, which is
how one user can never see, cancel or fetch another's work. Never imports torch.
"""

from __future__ import annotations

import html
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Optional

from .. import fields as field_table
from ..jobs import Job, JobQueue
from ..types import PREPARING_STAGE, GenerationRequest, InvalidRequest, JobState, SduiError

POLL_SECONDS = 0.25


def new_token() -> str:
    return uuid.uuid4().hex


NOT_READY = "This page has not finished loading yet; wait a moment and try again."


def owner_for(token: Optional[str]) -> Optional[str]:
    """The queue owner of a browser session, or None before the page has its token. There is no
    shared "anonymous" owner: two browsers that both lacked a token would see and cancel each
    other's jobs."""
    return f"ui:{token}" if token else None


class Publisher:
    """Copies of saved PNGs in Gradio's upload folder, each under a random directory, so a gallery
    shows the exact file (metadata and watermark intact) while the outputs folder itself is never
    served: nobody can fetch another user's image by guessing its predictable name.

    Each image is copied once and reused by every later page load and History refresh; the copies
    are a least-recently-used set with a byte budget, so the temporary folder stays bounded on a
    shared server however often pages are loaded."""

    def __init__(self, budget_bytes: int = 512 * 2**20, max_items: int = 2000):
        self.budget_bytes, self.max_items = budget_bytes, max_items
        self._copies: "OrderedDict[tuple, tuple[Path, int]]" = OrderedDict()  # key -> (copy, bytes)
        self._bytes = 0
        self._lock = threading.Lock()
        self._root: Optional[Path] = None

    def publish(self, path: str) -> str:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._copies.get(key)
            if hit is not None and hit[0].exists():
                self._copies.move_to_end(key)
                return str(hit[0])
            if hit is not None:
                self._drop(key)
            folder = self._folder() / uuid.uuid4().hex
            folder.mkdir(parents=True)
            dst = folder / os.path.basename(path)
            shutil.copyfile(path, dst)
            self._copies[key] = (dst, st.st_size)
            self._bytes += st.st_size
            while len(self._copies) > 1 and (self._bytes > self.budget_bytes or len(self._copies) > self.max_items):
                self._drop(next(iter(self._copies)))
            return str(dst)

    def publish_image(self, image, infotext: str = "") -> str:
        """An image that was not saved (saving to disk is off): a PNG with its infotext, in a random
        folder of its own, dropped with the oldest copies like the others."""
        from ..images.infotext import png_text

        with self._lock:
            folder = self._folder() / uuid.uuid4().hex
            folder.mkdir(parents=True)
            dst = folder / "image.png"
            image.save(dst, format="PNG", pnginfo=png_text(infotext))
            size = dst.stat().st_size
            self._copies[("unsaved", str(dst))] = (dst, size)
            self._bytes += size
            while len(self._copies) > 1 and (self._bytes > self.budget_bytes or len(self._copies) > self.max_items):
                self._drop(next(iter(self._copies)))
            return str(dst)

    def _folder(self) -> Path:
        if self._root is None:
            from gradio.utils import get_upload_folder

            self._root = Path(get_upload_folder()) / f"sdui-{uuid.uuid4().hex}"
        return self._root

    def _drop(self, key) -> None:
        copy, size = self._copies.pop(key)
        self._bytes -= size
        shutil.rmtree(copy.parent, ignore_errors=True)

    @property
    def count(self) -> int:
        return len(self._copies)


def progress_html(job: Job, position: int) -> str:
    if job.state == JobState.QUEUED:
        return f'<div class="sdui-progress queued">In the queue: position {position}</div>'
    p = job.progress
    # Interrupt/Skip pressed: said here, on the job's own line, not by those buttons' answers: a second
    # event writing the status line could land after the job's final message and stay on screen.
    if job.cancel_event.is_set():
        return bar_html(int(job.fraction * 100), "Interrupting…")
    if job.skip_event.is_set():
        return bar_html(int(job.fraction * 100), "Skipping this image…")
    if p is None:
        return '<div class="sdui-progress">Starting (loading the model if needed)…</div>'
    pct = int(job.fraction * 100)
    if p.stage == PREPARING_STAGE:  # the one-time OpenVINO conversion
        return bar_html(p.step, f"{p.stage}: {p.step}%")
    label = f"{p.stage} step {p.step}/{p.total}"
    if p.image_total > 1:
        label = f"image {p.image_index + 1}/{p.image_total}, " + label
    return bar_html(pct, f"{label} · {pct}% · ETA {p.eta:.0f}s")


def bar_html(pct: int, label: str) -> str:
    """A progress bar filled to ``pct`` percent with ``label`` on it."""
    return (f'<div class="sdui-progress running"><div class="bar" style="width:{pct}%"></div>'
            f'<span>{html.escape(label)}</span></div>')


def message_html(text: str, kind: str = "error") -> str:
    role = "alert" if kind == "error" else "status"
    return f'<div class="sdui-message {kind}" role="{role}">{html.escape(text)}</div>'


# What to do, for the request fields a person meets as "missing" rather than "out of range".
_SENTENCES = {
    "init_image": "Upload an image or draw on the blank canvas first, then Generate.",
    "mask": "Paint over the part to change, then Generate.",
}


def sentence(error: Exception) -> str:
    """A refused request as a sentence a person reads (the API keeps the field=value form)."""
    if not isinstance(error, InvalidRequest):
        return str(error)
    name = error.field
    if name in _SENTENCES:
        return _SENTENCES[name]
    f = field_table.BY_NAME.get(name)
    label = f.label if f is not None and f.label else name.replace("_", " ").capitalize()
    if name == "seed" and isinstance(error.value, (int, float)) and error.value > field_table.MAX_SEED:
        return f"The seed must be at most {field_table.MAX_SEED}."
    allowed = error.allowed.rstrip(".")
    return f"{label} must be {allowed}." if label else f"{allowed}."


def request_fields(values: dict) -> dict:
    """The generation controls' values as request fields: sliders' floats made ints where the field
    table says int, and an empty seed box means a random seed (-1), as A1111 reads it."""
    from .controls import coerce

    out = {}
    for name, value in values.items():
        if name == "seed" and (value is None or value == ""):
            value = -1
        if name == "seed" and isinstance(value, float) and value > field_table.MAX_SEED:
            raise InvalidRequest("seed", value, f"at most {field_table.MAX_SEED}")
        out[name] = coerce(name, value)
    return out


def run_job(queue: JobQueue, request: GenerationRequest, owner: Optional[str]) -> Iterator[dict]:
    """Submit and follow one job. Yields dicts with "status" (HTML), "preview" (a small PIL image or
    None) and, at the end, "result" (the finished job) or "error" (a user-facing message)."""
    if not owner:
        yield {"status": message_html(NOT_READY), "error": NOT_READY}
        return
    try:
        job = queue.submit(request, owner)
    except (SduiError, ValueError) as e:
        yield {"status": message_html(sentence(e)), "error": sentence(e)}
        return
    last_preview, step_text = None, ""
    # at once, not after the first poll: the click is answered with "In the queue" / "Starting" now
    shown = progress_html(job, queue.position(job))
    yield {"status": shown, "preview": None}
    while not job.wait(POLL_SECONDS):
        p = job.progress
        status = progress_html(job, queue.position(job))
        if p is not None and p.preview is not None and p.preview is not last_preview:
            last_preview = p.preview
            step_text = f"step {p.preview_step or p.step}/{p.total}"
        elif status == shown:
            continue  # nothing new: no update for the page to render (the browser shares the CPU with the job)
        shown = status
        yield {"status": status, "preview": last_preview, "step_text": step_text}
    if job.state == JobState.FAILED:
        yield {"status": message_html(job.error or "failed"), "error": job.error}
        return
    n = sum(1 for im in job.result.images if not im.partial) if job.result else 0  # the partial one is not saved
    partial = sum(1 for im in job.result.images if im.partial) if job.result else 0
    if job.state == JobState.CANCELLED:
        text = f"Interrupted. {n} finished image(s) kept." if n else "Interrupted. Nothing was saved."
        if partial:
            text += " The unfinished image is shown, not saved."
        yield {"status": message_html(text, "info"), "result": job}
        return
    took = (job.finished or time.time()) - (job.started or job.created)
    warnings = job.result.warnings if job.result else []
    note = "".join(message_html(w, "warning") for w in warnings)
    skipped = f" {partial} skipped (shown unfinished, not saved)." if partial else ""
    yield {"status": message_html(f"Done: {n} image(s) in {took:.1f}s.{skipped}", "info") + note, "result": job}


def interrupt(queue: JobQueue, token: Optional[str]) -> Optional[str]:
    """Interrupt this session's jobs (never anyone else's). The status line to show when nothing of
    this session's was running; None when a job was: its own progress line says "Interrupting…" and
    then how it ended (this button's answer would race that final message)."""
    owner = owner_for(token)
    n = queue.cancel(owner) if owner else 0
    return None if n else message_html("Nothing of yours is running.", "info")


def skip(queue: JobQueue, token: Optional[str]) -> Optional[str]:
    """A1111's Skip for this session's running job: end the current image, go on with the next.
    As ``interrupt``: None when a job was running (its progress line says "Skipping this image…")."""
    owner = owner_for(token)
    done = queue.skip(owner) if owner else False
    return None if done else message_html("Nothing of yours is running.", "info")


def result_items(job: Job, publisher: Publisher) -> tuple[list, list[dict]]:
    """The gallery items of a finished job (saved PNGs as published copies; an interrupted or
    skipped image as the picture itself, captioned "not saved") and, in the same order, each
    image's seed and infotext (what the selection shows and reuses)."""
    items, meta = [], []
    if job.result:
        for im in job.result.images:
            if im.path:
                items.append((publisher.publish(im.path), f"seed {im.seed}"))
            elif im.partial:
                items.append((im.image, f"Interrupted: unfinished, not saved · seed {im.seed}"))
            else:
                items.append((im.image, f"seed {im.seed} (not saved)"))
            meta.append({"seed": im.seed, "infotext": im.infotext, "partial": bool(im.partial)})
    return items, meta


def gallery_items(job: Job, publisher: Publisher) -> list[tuple[str, str]]:
    out = []
    if job.result:
        for im in job.result.images:
            if im.path:
                out.append((publisher.publish(im.path), f"seed {im.seed}"))
            elif not im.partial and im.image is not None:  # uifeat: saving to disk is off (Settings)
                out.append((publisher.publish_image(im.image, im.infotext), f"seed {im.seed} (not saved)"))
    return out


def history_items(queue: JobQueue, owner: str, publisher: Publisher, limit: int = 60) -> list[tuple[str, str]]:
    """This session's saved images, newest first."""
    out = []
    if not owner:
        return out
    for job in queue.jobs_for(owner):
        if job.state not in (JobState.DONE, JobState.CANCELLED) or not job.result:
            continue
        for im in reversed(job.result.images):
            if im.path and os.path.exists(im.path):
                out.append((publisher.publish(im.path), f"{job.request.mode} · seed {im.seed}"))
                if len(out) >= limit:
                    return out
    return out
