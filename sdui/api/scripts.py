"""A1111's selectable scripts over the API: ``script_name`` "x/y/z plot" with ``script_args``, the
positional arguments of A1111's ``scripts/xyz_grid.py`` ``run()``. They become an ``sdui.xyz.Plan``
that the queue runs as one job, as the UI's X/Y/Z plot does (no second copy of the grid code here).

Axis types are indices into A1111's axis list as its txt2img or img2img tab shows it (A1111 drops the
other tab's ``AxisOptionTxt2Img`` / ``AxisOptionImg2Img`` entries, so the same axis can have two
indices). The list is A1111 1.10's; sdui also takes the axis's label ("Steps") in place of an index.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Optional

from .. import xyz
from ..types import SduiError

XYZ_TITLE = "X/Y/Z plot"
SCRIPTS = {"txt2img": [XYZ_TITLE.lower()], "img2img": [XYZ_TITLE.lower()]}  # GET /sdapi/v1/scripts

# A1111 1.10's axis_options, in its order: (label, the one tab it is on, or None for both)
A1111_AXES: tuple[tuple[str, Optional[str]], ...] = (
    ("Nothing", None), ("Seed", None), ("Var. seed", None), ("Var. strength", None), ("Steps", None),
    ("Hires steps", "txt2img"), ("CFG Scale", None), ("Image CFG Scale", "img2img"), ("Prompt S/R", None),
    ("Prompt order", None), ("Sampler", "txt2img"), ("Hires sampler", "txt2img"), ("Sampler", "img2img"),
    ("Checkpoint name", None), ("Negative Guidance minimum sigma", None), ("Sigma Churn", None), ("Sigma min", None),
    ("Sigma max", None), ("Sigma noise", None), ("Schedule type", None), ("Schedule min sigma", None),
    ("Schedule max sigma", None), ("Schedule rho", None), ("Skip Early CFG", None), ("Beta schedule alpha", None),
    ("Beta schedule beta", None), ("Eta", None), ("Clip skip", None), ("Denoising", None),
    ("Initial noise multiplier", None), ("Extra noise", None), ("Hires upscaler", "txt2img"),
    ("Cond. Image Mask Weight", "img2img"), ("VAE", None), ("Styles", None), ("UniPC Order", None),
    ("Face restore", None), ("Token merging ratio", None), ("Token merging ratio high-res", None),
    ("Always discard next-to-last sigma", None), ("SGM noise multiplier", None), ("Refiner checkpoint", None),
    ("Refiner switch at", None), ("RNG source", None), ("FP8 mode", None), ("Size", None),
)
# axes whose values A1111 takes from the ``*_values_dropdown`` list unless ``csv_mode`` is on
_CHOICE_AXES = frozenset({"Sampler", "Schedule type", "Checkpoint name"})

# A1111 1.10's run() after ``p``, with its UI defaults (what a shorter list is filled with)
ARGS: tuple[tuple[str, Any], ...] = (
    ("x_type", 1), ("x_values", ""), ("x_values_dropdown", []),
    ("y_type", 0), ("y_values", ""), ("y_values_dropdown", []),
    ("z_type", 0), ("z_values", ""), ("z_values_dropdown", []),
    ("draw_legend", True), ("include_lone_images", False), ("include_sub_grids", False), ("no_fixed_seeds", False),
    ("vary_seeds_x", False), ("vary_seeds_y", False), ("vary_seeds_z", False), ("margin_size", 0), ("csv_mode", False),
)
# A1111 1.6 to 1.9 (15 arguments: no vary_seeds_*) and 1.1 to 1.5 (14: no csv_mode either)
_OLD_TAIL = ("no_fixed_seeds", "margin_size", "csv_mode")
# what sdui's plot does not do, and the value that asks for nothing
_NOT_DONE = {"include_sub_grids": False, "no_fixed_seeds": False, "vary_seeds_x": False, "vary_seeds_y": False,
             "vary_seeds_z": False, "margin_size": 0}


class ScriptProblem(SduiError):
    """A ``script_name`` / ``script_args`` sdui cannot run; the message is the sentence for the client (422)."""


@dataclass
class ScriptCall:
    plan: xyz.Plan
    include_lone_images: bool = False
    ignored: list[str] = field(default_factory=list)  # "script_args.<name>" asked for and not done


def axis_labels(mode: str) -> list[str]:
    """A1111's axis list as its txt2img or img2img tab has it (inpaint is the img2img tab)."""
    tab = "txt2img" if mode == "txt2img" else "img2img"
    return [label for label, only in A1111_AXES if only in (None, tab)]


def supported_labels(mode: str) -> list[str]:
    """The axes of A1111's list sdui's plot makes, with their indices for that tab: ``["1 Seed", ...]``."""
    sdui_mode = "txt2img" if mode == "txt2img" else "img2img"
    return [f"{i} {label}" for i, label in enumerate(axis_labels(mode))
            if label in xyz.AXES and sdui_mode in xyz.AXES[label].modes]


def find_script(name: Optional[str]) -> Optional[str]:
    """The script ``script_name`` asks for (A1111 compares titles ignoring case); None for none; an
    unknown one is refused, as A1111 answers it (422 "Script '...' not found")."""
    if name is None or name == "":
        return None
    if name.strip().lower() == XYZ_TITLE.lower():
        return XYZ_TITLE
    raise ScriptProblem(f"Script '{name}' not found: this server runs only the \"{XYZ_TITLE.lower()}\" script")


def _named_args(args: list) -> dict[str, Any]:
    names = [n for n, _ in ARGS]
    if len(args) in (14, 15):  # an older A1111's layout: the same nine axis arguments, then a shorter tail
        names = names[:13] + list(_OLD_TAIL[1:len(args) - 12])
    elif len(args) > len(ARGS):
        raise ScriptProblem(f"script_args has {len(args)} values; the {XYZ_TITLE.lower()} script takes at most "
                            f"{len(ARGS)}: {', '.join(names)}")
    out = dict(ARGS)
    out.update(zip(names, args, strict=False))  # a shorter list keeps the defaults
    return out


def _axis_label(value: Any, which: str, mode: str) -> str:
    labels = axis_labels(mode)
    tab = "txt2img" if mode == "txt2img" else "img2img"
    supported = ", ".join(supported_labels(mode))
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(labels):
            raise ScriptProblem(f"{which}_type {value} is not an axis of A1111's {tab} X/Y/Z plot (0 to "
                                f"{len(labels) - 1}); this server plots 0 Nothing, {supported}.")
        label = labels[value]
    elif isinstance(value, str) and value.strip():
        label = next((lb for lb in labels if lb.lower() == value.strip().lower()), "")
        if not label:
            raise ScriptProblem(f"{which}_type \"{value}\" is not an axis of A1111's {tab} X/Y/Z plot; this server "
                                f"plots 0 Nothing, {supported}.")
    else:
        raise ScriptProblem(f"{which}_type must be an axis index (an integer) or an axis name; this server plots "
                            f"0 Nothing, {supported}.")
    if label != xyz.NOTHING and (label not in xyz.AXES or tab not in xyz.AXES[label].modes):
        raise ScriptProblem(f"The X/Y/Z plot axis \"{label}\" ({which}_type {labels.index(label)}) is not supported "
                            f"here; this server plots these axes of A1111's {tab} list: {supported}.")
    return label


def _values_text(label: str, text: Any, dropdown: Any, csv_mode: bool, which: str) -> str:
    """An axis's values as the text ``sdui.xyz`` parses: the dropdown list (A1111's
    ``list_to_csv_string``) for a choice axis unless ``csv_mode``, else the text."""
    if label in _CHOICE_AXES and not csv_mode and dropdown:
        if not isinstance(dropdown, list) or not all(isinstance(v, str) for v in dropdown):
            raise ScriptProblem(f"{which}_values_dropdown must be a list of names.")
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(dropdown)
        return buf.getvalue()
    if text is None:
        return ""
    if not isinstance(text, (str, int, float)) or isinstance(text, bool):
        raise ScriptProblem(f"{which}_values must be text such as \"1, 2, 3\" or \"1-10 (+2)\".")
    return str(text)


def parse_xyz_args(args: Any, mode: str) -> ScriptCall:
    """A1111's ``script_args`` for "x/y/z plot" as a plan; refused with a sentence naming the problem."""
    if not isinstance(args, list):
        raise ScriptProblem(f"script_args must be a list of the {XYZ_TITLE.lower()} script's arguments: "
                            f"{', '.join(n for n, _ in ARGS)}.")
    a = _named_args(args)
    csv_mode = bool(a.get("csv_mode"))
    pairs = []
    for which in "xyz":
        label = _axis_label(a[f"{which}_type"], which, mode)
        pairs.append((label, _values_text(label, a[f"{which}_values"], a[f"{which}_values_dropdown"], csv_mode, which)))
    plan = xyz.Plan.parse(pairs, draw_legend=bool(a["draw_legend"]), mode="txt2img" if mode == "txt2img" else "img2img")
    ignored = [f"script_args.{name}" for name, off in _NOT_DONE.items() if name in a and a[name] not in (off, None)]
    return ScriptCall(plan=plan, include_lone_images=bool(a["include_lone_images"]), ignored=ignored)


def plot_answer(call: ScriptCall, job, info: dict) -> list:
    """What A1111 answers for a finished plot: the images (the grid, then with ``include_lone_images``
    each cell's first image) and ``info`` updated in place: one infotext per grid and cell, the cells'
    seeds and prompts, ``index_of_first_image`` 1. An interrupted plot (no grid) answers what it made."""
    from ..types import JobState

    res = job.result
    imgs = list(res.images) if res else []
    if job.state != JobState.DONE or not imgs:
        return imgs
    grid, rest = imgs[0], imgs[1:]
    base = job.request
    per_cell = max(1, base.batch_size * base.batch_count)
    cells_at = call.plan.cells()
    cells = rest[::per_cell] if len(rest) == len(cells_at) * per_cell else rest
    reqs = [call.plan.cell_request(base, *c) for c in cells_at][:len(cells)]
    seeds = [c.seed for c in cells]
    info.update({
        "seed": seeds[0] if seeds else info.get("seed"), "all_seeds": seeds,
        "all_prompts": [r.prompt for r in reqs], "all_negative_prompts": [r.negative_prompt for r in reqs],
        "all_subseeds": [r.subseed + s - r.seed if r.mode == "txt2img" and r.subseed >= 0 else -1
                         for r, s in zip(reqs, seeds, strict=True)],
        "infotexts": [grid.infotext] + [c.infotext for c in cells], "index_of_first_image": 1,
        "partial_images": [],
    })
    return [grid] + (cells if call.include_lone_images else [])
