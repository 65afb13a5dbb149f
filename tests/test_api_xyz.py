"""A1111's X/Y/Z plot over the API (``script_name`` "x/y/z plot" with A1111's positional
``script_args``), on tiny models in process: the answer's images (grid first, then the cells), one
infotext each, the cells' seeds and steps as the axes say, the grid saved in ``txt2img-grids``, and
the refusals (an axis sdui does not plot, an unknown script) as sentences."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdui.api import scripts
from sdui.config import Settings
from sdui.images import infotext
from sdui.server import create_app
from tests.server_util import app_client, png_b64, shutdown_app

TXT = {"prompt": "a lantern", "steps": 2, "width": 64, "height": 64, "seed": 21, "sampler_name": "Euler a",
       "override_settings": {"sd_model_checkpoint": "tiny"}}


def _args(x_type, x_values, y_type=0, y_values="", include_lone_images=True, **kw):
    """A1111 1.10's script_args for xyz_grid.py's run(), its UI defaults for the rest."""
    named = {**dict(scripts.ARGS), "x_type": x_type, "x_values": x_values, "y_type": y_type, "y_values": y_values,
             "include_lone_images": include_lone_images, **kw}
    return [named[n] for n, _ in scripts.ARGS]


@pytest.fixture(scope="module")
def app(models_root, tmp_path_factory):
    outputs = tmp_path_factory.mktemp("api-xyz-outputs")
    settings = Settings(models_dir=str(models_root), outputs_dir=str(outputs), api=True, queue_size=4)
    app = create_app(settings, with_ui=False)
    app.state.outputs = outputs
    yield app
    shutdown_app(app)


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_a1111_axis_indices_differ_between_txt2img_and_img2img_as_in_a1111():
    t2i, i2i = scripts.axis_labels("txt2img"), scripts.axis_labels("img2img")
    assert (t2i[0], t2i[1], t2i[4], t2i[6], t2i[7], t2i[9], t2i[11], t2i[17]) == (
        "Nothing", "Seed", "Steps", "CFG Scale", "Prompt S/R", "Sampler", "Checkpoint name", "Schedule type")
    assert (i2i[5], i2i[7], i2i[9], i2i[10], i2i[25]) == ("CFG Scale", "Prompt S/R", "Sampler", "Checkpoint name",
                                                          "Denoising")
    assert "Hires steps" in t2i and "Hires steps" not in i2i and "Image CFG Scale" in i2i
    assert t2i[-1] == i2i[-1] == "Size"


def test_older_a1111_argument_layouts_are_read_by_their_length():
    fifteen = [4, "1, 2", [], 0, "", [], 0, "", [], True, True, False, False, 8, True]  # A1111 1.6-1.9
    call = scripts.parse_xyz_args(fifteen, "txt2img")
    assert call.plan.axes[0] == ("Steps", [1, 2]) and call.include_lone_images
    assert call.ignored == ["script_args.margin_size"]
    with pytest.raises(scripts.ScriptProblem, match="at most 18"):
        scripts.parse_xyz_args([0] * 19, "txt2img")


def test_txt2img_plot_answers_the_grid_then_each_cell_with_one_infotext_each(app):
    body = {**TXT, "save_images": True, "script_name": "X/Y/Z plot",
            "script_args": _args(1, "7, 8", 4, "1-2", include_sub_grids=True)}  # Seed x Steps, 2x2
    with app_client(app) as c:
        r = c.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    images = [_png(b) for b in r.json()["images"]]
    info = json.loads(r.json()["info"])
    assert len(images) == 5 and len(info["infotexts"]) == 5 and info["index_of_first_image"] == 1
    grid, cells = images[0], images[1:]
    assert grid.width > 2 * 64 and grid.height > 2 * 64 and all(im.size == (64, 64) for im in cells)
    # each image carries its own infotext, the same as info.infotexts; the cells' follow the axes (X fastest)
    assert [im.info["parameters"] for im in images] == info["infotexts"]
    params = [infotext.parse_infotext(t) for t in info["infotexts"][1:]]
    assert [(p["Seed"], p["Steps"]) for p in params] == [("7", "1"), ("8", "1"), ("7", "2"), ("8", "2")]
    assert info["all_seeds"] == [7, 8, 7, 8] and info["seed"] == 7
    grid_params = infotext.parse_infotext(info["infotexts"][0])
    assert (grid_params["Script"], grid_params["X Type"], grid_params["X Values"], grid_params["Y Type"]) == (
        "X/Y/Z plot", "Seed", "7, 8", "Steps")
    assert info["ignored"] == ["script_args.include_sub_grids"]
    # saved as A1111 saves them: the cells in txt2img-images/<date>/, the grid in txt2img-grids/<date>/
    saved = [Path(p) for p in info["saved"]]
    grid_files = [p for p in saved if p.name.endswith("-grid.png")]
    assert len(saved) == 5 and len(grid_files) == 1
    root = Path(app.state.outputs)
    assert grid_files[0].parent.parent == root / "txt2img-grids"
    assert {p.parent.parent for p in saved if p not in grid_files} == {root / "txt2img-images"}
    assert np.array_equal(np.asarray(Image.open(grid_files[0])), np.asarray(grid))


def test_without_lone_images_only_the_grid_comes_back_and_a_sampler_axis_takes_its_dropdown(app):
    # A1111: Sampler is a choice axis, its values come from x_values_dropdown unless csv_mode is on
    body = {**TXT, "script_name": "x/y/z plot",
            "script_args": _args(9, "", include_lone_images=False, x_values_dropdown=["Euler", "Euler a"])}
    with app_client(app) as c:
        r = c.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert len(r.json()["images"]) == 1
    grid = _png(r.json()["images"][0])
    assert grid.width == 2 * 64 and grid.height > 64  # two cells side by side under the X labels
    # as A1111: info.infotexts keeps the grid's and every cell's even when the cells are not sent
    assert [infotext.parse_infotext(t)["Sampler"] for t in info["infotexts"][1:]] == ["Euler", "Euler a"]
    assert info["saved"] == []  # save_images off: nothing written, the grid neither


def test_img2img_plot_uses_img2img_axis_indices_and_saves_its_grid_in_img2img_grids(app):
    init = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    body = {**TXT, "init_images": [png_b64(init)], "save_images": True, "script_name": "x/y/z plot",
            "script_args": _args(25, "0.5, 1.0")}  # 25 is Denoising on A1111's img2img tab
    with app_client(app) as c:
        r = c.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert [infotext.parse_infotext(t)["Denoising strength"] for t in info["infotexts"][1:]] == ["0.5", "1"]
    grid_file = next(Path(p) for p in info["saved"] if p.endswith("-grid.png"))
    assert grid_file.parent.parent == Path(app.state.outputs) / "img2img-grids"


@pytest.mark.parametrize("path,args,needles", [
    ("txt2img", _args(5, "1, 2"), ['"Hires steps"', "not supported", "4 Steps", "1 Seed", "11 Checkpoint name"]),
    ("txt2img", _args(1, "1, 2", 26, "0.5"), ['"Denoising"', "not supported"]),  # sdui: img2img's axis only
    ("img2img", _args(5, "1"), ["init_images"]),  # 5 is CFG Scale on img2img: gets past the axis check to the missing image
    ("txt2img", _args(99, "1"), ["x_type 99", "0 to 42", "4 Steps"]),
    ("txt2img", _args("Eta", "1"), ['"Eta"', "not supported"]),
    ("txt2img", _args(4, "1, two"), ["'two'", "Steps"]),
])
def test_an_axis_sdui_does_not_plot_is_refused_with_a_sentence_naming_it(app, path, args, needles):
    with app_client(app) as c:
        r = c.post(f"/sdapi/v1/{path}", json={**TXT, "script_name": "x/y/z plot", "script_args": args})
        alive = c.get("/sdapi/v1/scripts")
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert all(n in detail for n in needles), detail
    assert alive.status_code == 200


def test_the_readme_names_the_axis_indices_the_api_takes():
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8").split())
    for mode in ("txt2img", "img2img"):
        assert f"{mode}: {', '.join(scripts.supported_labels(mode))}" in readme


def test_options_name_the_grid_folders(app):
    with app_client(app) as c:
        opts = c.get("/sdapi/v1/options").json()
    root = Path(app.state.outputs)
    assert (opts["outdir_txt2img_grids"], opts["outdir_img2img_grids"]) == (str(root / "txt2img-grids"),
                                                                            str(root / "img2img-grids"))


def test_an_unknown_script_is_refused_as_a1111_does_and_scripts_lists_the_plot(app):
    with app_client(app) as c:
        r = c.post("/sdapi/v1/txt2img", json={**TXT, "script_name": "prompt matrix", "script_args": [True]})
        listed = c.get("/sdapi/v1/scripts").json()
    assert r.status_code == 422 and "Script 'prompt matrix' not found" in r.json()["detail"]
    assert listed == {"txt2img": ["x/y/z plot"], "img2img": ["x/y/z plot"]}
