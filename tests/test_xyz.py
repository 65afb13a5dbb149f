"""A1111's X/Y/Z plot (``sdui.xyz``): its value syntax, and one queued job that makes every cell, the
labelled grid beside them, progress over the whole grid and an interrupt that stops it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sdui import xyz
from sdui.images import infotext
from sdui.jobs import JobQueue
from sdui.types import GenerationRequest, InvalidRequest, JobState

BASE = dict(prompt="a red fox", steps=2, width=64, height=64, seed=5, model="tiny")


@pytest.mark.parametrize("axis,text,want", [
    ("Steps", "1, 2,3", [1, 2, 3]),
    ("Steps", "1-5", [1, 2, 3, 4, 5]),
    ("Steps", "1-10 (+2)", [1, 3, 5, 7, 9]),
    ("Steps", "10-1 (-3)", [10, 7, 4]),
    ("Steps", "1-10 [5]", [1, 3, 5, 7, 10]),
    ("Seed", "1-3, 10", [1, 2, 3, 10]),
    ("CFG Scale", "5-7 (+0.5)", [5.0, 5.5, 6.0, 6.5, 7.0]),
    ("CFG Scale", "1-2 [3]", [1.0, 1.5, 2.0]),
    ("CFG Scale", "3, 7.5", [3.0, 7.5]),
    ("Sampler", 'Euler a, "DPM++ 2M", DDIM', ["Euler a", "DPM++ 2M", "DDIM"]),
    ("Prompt S/R", "fox, cat, dog", ["fox", "cat", "dog"]),
    ("Size", "64x64, 96x64", ["64x64", "96x64"]),
])
def test_a1111_value_syntax(axis, text, want):
    assert xyz.parse_values(axis, text) == want


def test_bad_values_name_the_axis_and_the_value():
    with pytest.raises(InvalidRequest) as err:
        xyz.parse_values("Steps", "1, two")
    assert err.value.field == "Steps" and "'two'" in str(err.value) and "1-10 (+2)" in str(err.value)
    with pytest.raises(InvalidRequest, match="Size"):
        xyz.parse_values("Size", "64 by 64")
    with pytest.raises(InvalidRequest, match="at most 100 cells"):
        xyz.Plan.parse([("Seed", "1-11"), ("Steps", "1-10")])
    with pytest.raises(InvalidRequest, match="at least one axis"):
        xyz.Plan.parse([("Nothing", ""), ("Nothing", "")])


def test_prompt_sr_replaces_the_first_value_and_a_missing_one_is_refused(make_engine):
    plan = xyz.Plan.parse([("Prompt S/R", "fox, cat")])
    base = GenerationRequest(**BASE)
    assert [plan.cell_request(base, i, 0, 0).prompt for i in range(2)] == ["a red fox", "a red cat"]
    with pytest.raises(InvalidRequest, match="Prompt S/R"):
        xyz.Plan.parse([("Prompt S/R", "wolf, cat")]).prepare(make_engine(), base)


def test_a_2x2_steps_by_cfg_plot_is_one_job_with_4_cells_and_a_labelled_grid(make_engine):
    engine = make_engine()
    queue = JobQueue(engine).start()
    seen = []
    try:
        plan = xyz.Plan.parse([("Steps", "1, 2"), ("CFG Scale", "3, 7")])
        job = queue.submit(GenerationRequest(**{**BASE, "seed": -1}), "ui:me", plan=plan)
        while not job.wait(0.05):
            if job.progress:
                seen.append((job.progress.image_index, job.progress.image_total))
        seen.append((job.progress.image_index, job.progress.image_total))  # the last cell's may end between two polls
        assert job.state == JobState.DONE, job.error
    finally:
        queue.stop()
    grid, *cells = job.result.images
    assert len(cells) == 4 and all(c.path for c in cells) and grid.path.endswith("-grid.png")
    # A1111's folders: the cells in txt2img-images/<date>/, the grid in txt2img-grids/<date>/
    assert {Path(c.path).parent.parent.name for c in cells} == {"txt2img-images"}
    grid_dir = Path(grid.path).parent
    assert grid_dir.parent.name == "txt2img-grids" and grid_dir.name == Path(cells[0].path).parent.name
    assert grid_dir.parent.parent == Path(engine.settings.outputs_dir)
    # the grid's infotext: the first cell's plus A1111's Script / X Type / X Values keys
    grid_params = infotext.parse_infotext(grid.infotext)
    assert (grid_params["Script"], grid_params["X Type"], grid_params["X Values"], grid_params["Y Type"],
            grid_params["Y Values"]) == ("X/Y/Z plot", "Steps", "1, 2", "CFG Scale", "3, 7")
    assert grid_params["Seed"] == infotext.parse_infotext(cells[0].infotext)["Seed"]
    assert infotext.read_infotext(grid.path) == grid.infotext
    params = [infotext.parse_infotext(c.infotext) for c in cells]
    assert [(p["Steps"], p["CFG scale"]) for p in params] == [("1", "3"), ("2", "3"), ("1", "7"), ("2", "7")]
    assert len({p["Seed"] for p in params}) == 1  # a random seed is fixed once for the whole plot
    assert grid.image.size == xyz.grid_size(plan, 64, 64)
    assert grid.image.width > 2 * 64 and grid.image.height > 2 * 64  # room for the labels
    assert grid.image.getpixel((5, 5)) == (255, 255, 255)  # the label margin
    assert max(i for i, _ in seen) == 3 and {t for _, t in seen} == {4}  # progress over the whole grid
    assert "Steps: 1" in plan.labels(0) and plan.labels(1) == ["CFG Scale: 3", "CFG Scale: 7"]
    # the history lists every file of the plot for its owner, the grid as a "txt2img grid"
    items = engine.history.items("ui:me")
    assert len(items) == 5
    assert [e.mode for e in items if e.path.endswith("-grid.png")] == ["txt2img grid"]


def test_an_interrupt_stops_the_plot(make_engine):
    engine = make_engine()
    queue = JobQueue(engine).start()
    try:
        plan = xyz.Plan.parse([("Seed", "1-4"), ("Steps", "2, 3")])
        job = queue.submit(GenerationRequest(**BASE), "ui:me", plan=plan)
        started = threading.Event()
        while not job.wait(0.02):
            if job.progress and job.progress.image_index >= 1:
                started.set()
                queue.cancel("ui:me")
                break
        assert started.is_set()
        assert job.wait(120) and job.state == JobState.CANCELLED
    finally:
        queue.stop()
    finished = [im for im in (job.result.images if job.result else []) if not im.partial]
    assert 1 <= len(finished) < plan.cell_count
    assert not any(im.path and im.path.endswith("-grid.png") for im in finished)  # no grid for a stopped plot
