"""A1111's X/Y/Z plot script: up to three axes of values, one image per combination, and a labelled grid.

The axes and their value syntax are A1111's (``scripts/xyz_grid.py``): comma-separated lists (CSV
quoting), integer ranges ``1-5``, ``1-10 (+2)``, ``10-1 (-3)`` and counts ``1-10 [5]`` (evenly spaced),
the same for numbers (``5-9 (+1.5)``, ``0.2-0.8 [4]``); "Prompt S/R" replaces its first value in the
prompts by each value in turn. One plan is one job in the queue: every cell runs through
``Engine.generate`` (so each is saved with its own infotext), progress counts over the whole grid, an
interrupt stops it between or inside cells, and the grid (Pillow) is saved beside the cells.

Nothing here imports torch or gradio.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .fields import VARIATION_MODES
from .types import Cancelled, GenerationRequest, GenerationResult, InvalidRequest, Progress

NOTHING = "Nothing"
MAX_CELLS = 100  # one job; a larger plot is refused with the count in the message

# A1111's regular expressions for ranges, as xyz_grid.py writes them
_RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
_RANGE_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")
_RANGE_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*\])?\s*")
_RANGE_COUNT_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*\])?\s*")


def _size(value: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
    if not m:
        raise ValueError(value)
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class Axis:
    label: str  # A1111's axis name, also the grid's label ("Steps: 20")
    kind: type  # int, float or str
    apply: Callable[[GenerationRequest, Any, list], None]  # (request, value, all values of the axis)
    show_label: bool = True  # "Steps: 20"; False: the value alone (Prompt S/R, as A1111)
    modes: tuple[str, ...] = ("txt2img", "img2img", "inpaint")


def _set(name: str):
    def apply(req: GenerationRequest, value, _values) -> None:
        setattr(req, name, value)
    return apply


def _prompt_sr(req: GenerationRequest, value: str, values: list) -> None:
    search = values[0]
    if search not in req.prompt and search not in req.negative_prompt:
        raise InvalidRequest("Prompt S/R", search, "text that is in the prompt or the negative prompt (the first value "
                                                   "is what the others replace)")
    req.prompt = req.prompt.replace(search, value)
    req.negative_prompt = req.negative_prompt.replace(search, value)


def _set_size(req: GenerationRequest, value, _values) -> None:
    req.width, req.height = _size(value)


AXES: dict[str, Axis] = {a.label: a for a in (
    Axis("Seed", int, _set("seed")),
    Axis("Var. seed", int, _set("subseed"), modes=VARIATION_MODES),
    Axis("Var. strength", float, _set("subseed_strength"), modes=VARIATION_MODES),
    Axis("Steps", int, _set("steps")),
    Axis("CFG Scale", float, _set("cfg_scale")),
    Axis("Prompt S/R", str, _prompt_sr, show_label=False),
    Axis("Sampler", str, _set("sampler")),
    Axis("Schedule type", str, _set("scheduler")),
    Axis("Checkpoint name", str, _set("model")),
    Axis("Denoising", float, _set("denoising_strength"), modes=("img2img", "inpaint")),
    Axis("Size", str, _set_size),
    Axis("Clip skip", int, _set("clip_skip")),
)}


def axis_names(mode: str = "txt2img") -> list[str]:
    return [NOTHING, *(name for name, a in AXES.items() if mode in a.modes)]


def _csv_list(text: str) -> list[str]:
    """A1111's ``csv_string_to_list_strip``: CSV fields (quotes allowed), stripped, empty ones dropped."""
    rows = csv.reader(io.StringIO(text or ""), skipinitialspace=True)
    return [v.strip() for row in rows for v in row if v.strip()]


def parse_values(axis_name: str, text: str) -> list:
    """The values of one axis from A1111's syntax; raises InvalidRequest naming the axis and the bad value."""
    axis = AXES.get(axis_name)
    if axis is None:
        raise InvalidRequest("X/Y/Z axis", axis_name, f"one of {', '.join(axis_names())}")
    raw = _csv_list(text)
    out: list = []
    try:
        for val in raw:
            if axis.kind is int and (m := _RANGE.fullmatch(val)):
                start, end = int(m.group(1).replace(" ", "")), int(m.group(2).replace(" ", "")) + 1
                step = int(m.group(3)) if m.group(3) is not None else 1
                out += list(range(start, end, step)) if step else [start]
            elif axis.kind is int and (m := _RANGE_COUNT.fullmatch(val)):
                start, end = int(m.group(1).replace(" ", "")), int(m.group(2).replace(" ", ""))
                num = int(m.group(3)) if m.group(3) is not None else 1
                out += [int(x) for x in _linspace(start, end, num)]
            elif axis.kind is float and (m := _RANGE_FLOAT.fullmatch(val)):
                start, end = float(m.group(1).replace(" ", "")), float(m.group(2).replace(" ", ""))
                step = float(m.group(3)) if m.group(3) is not None else 1.0
                out += _arange(start, end + step, step)
            elif axis.kind is float and (m := _RANGE_COUNT_FLOAT.fullmatch(val)):
                start, end = float(m.group(1).replace(" ", "")), float(m.group(2).replace(" ", ""))
                num = int(float(m.group(3))) if m.group(3) is not None else 1
                out += _linspace(start, end, num)
            elif axis.kind is str and axis_name == "Size":
                _size(val)
                out.append(val)
            else:
                out.append(axis.kind(val))
    except ValueError:
        what = {int: "integers", float: "numbers", str: "values"}[axis.kind]
        example = "512x768, 768x512" if axis_name == "Size" else "1, 2, 3 or 1-5 or 1-10 (+2) or 1-10 [5]"
        raise InvalidRequest(axis_name, val, f"{what} separated by commas ({example})") from None
    if not out:
        raise InvalidRequest(axis_name, text, "at least one value")
    return out


def _linspace(start: float, end: float, num: int) -> list[float]:
    """numpy's linspace (A1111 uses it), without numpy."""
    if num <= 1:
        return [float(start)] if num == 1 else []
    step = (end - start) / (num - 1)
    return [start + i * step if i < num - 1 else float(end) for i in range(num)]


def _arange(start: float, stop: float, step: float) -> list[float]:
    """numpy's arange for floats (A1111: ``np.arange(start, end + step, step)``)."""
    if step == 0:
        return [start]
    n = max(0, int(-(-(stop - start) // step)))
    return [start + i * step for i in range(n)]


def format_value(axis: Axis, value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{axis.label}: {text}" if axis.show_label else text


@dataclass
class Plan:
    """Up to three axes (name, values); an axis named "Nothing" (or left out) has the one value None."""

    axes: list[tuple[str, list]] = field(default_factory=list)
    draw_legend: bool = True
    texts: list[str] = field(default_factory=list)  # each axis's values as written (the grid's "X Values")

    @classmethod
    def parse(cls, pairs: list[tuple[str, str]], draw_legend: bool = True, mode: str = "txt2img") -> "Plan":
        """From the UI: [(axis name, values text)] for X, Y, Z."""
        axes: list[tuple[str, list]] = []
        texts: list[str] = []
        for name, text in pairs[:3]:
            texts.append(text or "")
            if not name or name == NOTHING:
                axes.append((NOTHING, [None]))
                continue
            axis = AXES.get(name)
            if axis is not None and mode not in axis.modes:
                raise InvalidRequest("X/Y/Z axis", name, f"one of {', '.join(axis_names(mode))} for {mode}")
            axes.append((name, parse_values(name, text)))
        while len(axes) < 3:
            axes.append((NOTHING, [None]))
        plan = cls(axes=axes, draw_legend=draw_legend, texts=texts)
        if plan.cell_count > MAX_CELLS:
            raise InvalidRequest("X/Y/Z plot", f"{plan.cell_count} images", f"at most {MAX_CELLS} cells in one plot")
        if all(n == NOTHING for n, _ in axes):
            raise InvalidRequest("X/Y/Z plot", "no axis", "at least one axis with values")
        return plan

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(len(v) for _, v in self.axes)  # type: ignore[return-value]

    @property
    def cell_count(self) -> int:
        x, y, z = self.shape
        return x * y * z

    def cells(self) -> list[tuple[int, int, int]]:
        """(ix, iy, iz) in A1111's order: X fastest, then Y, then Z."""
        x, y, z = self.shape
        return [(ix, iy, iz) for iz in range(z) for iy in range(y) for ix in range(x)]

    def cell_request(self, base: GenerationRequest, ix: int, iy: int, iz: int) -> GenerationRequest:
        req = base.replace()
        for (name, values), i in zip(self.axes, (ix, iy, iz), strict=True):
            if name != NOTHING:
                AXES[name].apply(req, values[i], values)
        return req

    def labels(self, which: int) -> list[str]:
        name, values = self.axes[which]
        return [] if name == NOTHING else [format_value(AXES[name], v) for v in values]

    def grid_infotext(self, first: str) -> str:
        """The grid's infotext, as A1111's: the first cell's with "Script: X/Y/Z plot" and each axis's
        "X Type" / "X Values" (Y, Z likewise) added before "Version"."""
        from .images.infotext import quote

        extra = [("Script", "X/Y/Z plot")]
        for letter, (name, _values), text in zip("XYZ", self.axes, (self.texts + [""] * 3)[:3], strict=True):
            if name != NOTHING:
                extra += [(f"{letter} Type", name), (f"{letter} Values", text)]
        added = ", ".join(f"{k}: {quote(v)}" for k, v in extra)
        head, sep, last = first.rpartition("\n")
        before, version, after = last.partition(", Version: ")
        last = f"{before}, {added}{version}{after}" if version else (f"{last}, {added}" if last else added)
        return f"{head}{sep}{last}"

    def prepare(self, engine, request: GenerationRequest) -> GenerationRequest:
        """Check every cell before any model work (a bad value anywhere refuses the whole plot) and fix
        the random seed(s) once, as A1111 does, so that cells differ only by their axes. Returns the base."""
        base = engine.prepare(request)  # a random seed / variation seed becomes a fixed one here
        for ix, iy, iz in self.cells():
            engine.prepare(self.cell_request(base, ix, iy, iz))
        return base

    def run(self, engine, base: GenerationRequest, on_progress: Optional[Callable[[Progress], None]] = None,
            cancel=None) -> GenerationResult:
        """Every cell through ``engine.generate``, then the grid; the result's images: the grid first (as
        A1111 answers), then each cell's images. Interrupted, Cancelled carries the finished cells."""
        cells = self.cells()
        per_cell = base.batch_size * base.batch_count
        total = len(cells) * per_cell
        result = GenerationResult(images=[], request=base)
        firsts: list = []
        for n, (ix, iy, iz) in enumerate(cells):
            req = self.cell_request(base, ix, iy, iz)

            def progress(p: Progress, n=n) -> None:
                if on_progress is not None:
                    on_progress(Progress(step=p.step, total=p.total, elapsed=p.elapsed, eta=p.eta,
                                         image_index=n * per_cell + p.image_index, image_total=total,
                                         preview=p.preview, preview_step=p.preview_step, stage=p.stage))
            try:
                cell = engine.generate(req, on_progress=progress, cancel=cancel)
            except Cancelled as stop:
                done = getattr(stop, "partial", None)
                if done is not None:
                    result.images += done.images
                exc = Cancelled(f"interrupted after {n} of {len(cells)} X/Y/Z cells")
                exc.partial = result
                raise exc from None
            result.images += cell.images
            result.model_name, result.model_hash = cell.model_name, cell.model_hash
            result.memory_level = max(result.memory_level, cell.memory_level)
            result.warnings += [w for w in cell.warnings if w not in result.warnings]
            firsts.append(cell.images[0] if cell.images else None)
        grid = draw_grid(self, [f.image if f else None for f in firsts])
        first = firsts[0]
        text = self.grid_infotext(first.infotext) if first is not None else None
        result.images.insert(0, engine.save_grid(grid, base, first, text))
        return result


# ---- the grid image -------------------------------------------------------------------------------
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_grid(plan: Plan, images: list) -> Any:
    """The labelled grid: per Z value one X-by-Y block (X labels on top, Y labels on the left), the
    blocks side by side under their Z label; cells keep their own size (the largest one sets the pitch)."""
    from PIL import Image, ImageDraw

    nx, ny, nz = plan.shape
    sized = [im for im in images if im is not None]
    cw = max((im.width for im in sized), default=64)
    ch = max((im.height for im in sized), default=64)
    font_size = max(12, min(cw, ch) // 10)
    font = _font(font_size)
    xl, yl, zl = plan.labels(0), plan.labels(1), plan.labels(2)
    legend = plan.draw_legend
    pad = font_size // 2
    line = font_size + pad
    top = line * 2 if legend and xl else 0
    left = 0
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if legend and yl:
        left = max(int(probe.textlength(t, font=font)) for t in yl) + 2 * pad
    ztop = line * 2 if legend and zl and nz > 1 else 0
    block_w, block_h = left + nx * cw, top + ny * ch
    gap = pad * 2 if nz > 1 else 0
    grid = Image.new("RGB", (nz * block_w + (nz - 1) * gap, ztop + block_h), "white")
    draw = ImageDraw.Draw(grid)
    for iz in range(nz):
        ox = iz * (block_w + gap)
        if ztop:
            draw.text((ox + left + nx * cw / 2, ztop / 2), zl[iz], fill="black", font=font, anchor="mm")
        for iy in range(ny):
            for ix in range(nx):
                im = images[(iz * ny + iy) * nx + ix]
                if im is not None:
                    grid.paste(im.convert("RGB"), (ox + left + ix * cw, ztop + top + iy * ch))
        if top:
            for ix, text in enumerate(xl):
                draw.text((ox + left + ix * cw + cw / 2, ztop + top / 2), text, fill="black", font=font, anchor="mm")
        if left:
            for iy, text in enumerate(yl):
                draw.text((ox + left / 2, ztop + top + iy * ch + ch / 2), text, fill="black", font=font, anchor="mm")
    return grid


def grid_size(plan: Plan, cell_w: int, cell_h: int) -> tuple[int, int]:
    """The grid's pixel size for cells of cell_w x cell_h (what ``draw_grid`` makes)."""
    from PIL import Image

    blank = Image.new("RGB", (cell_w, cell_h))
    return draw_grid(plan, [blank] * plan.cell_count).size
