"""A checkpoint that has left the list (its file removed, the list refreshed) while a page still
shows it: Generate says why and puts the dropdown back on the model this session used before. The
Generate and X/Y/Z handlers of the built UI, called directly (no browser)."""

from __future__ import annotations

import pytest

from sdui.ui import session
from tests.conftest import copy_model


@pytest.fixture()
def studio(models_root, scratch_models, tmp_path):
    from sdui.config import Settings
    from sdui.engine import Engine
    from sdui.jobs import JobQueue
    from sdui.ui.app import build_ui

    sd = scratch_models / "Stable-diffusion"
    copy_model(models_root / "Stable-diffusion" / "tiny.safetensors", sd / "tiny.safetensors")
    copy_model(models_root / "Stable-diffusion" / "other.safetensors", sd / "other.safetensors")
    engine = Engine(Settings(models_dir=str(scratch_models), outputs_dir=str(tmp_path / "outputs")))
    queue = JobQueue(engine).start()
    demo = build_ui(engine, queue, engine.settings)
    yield demo, engine, sd
    queue.stop()
    engine.manager.release_all()


def _click_handler(demo, elem_id: str):
    """The click handler of a button, and its inputs and outputs."""
    target = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)._id
    fn = next(f for f in demo.fns.values() if any(t == (target, "click") for t in f.targets))
    return fn.fn, fn.inputs, fn.outputs


def _run(demo, elem_id: str, **values_by_elem_id) -> list[dict]:
    """Every update the handler yields, as {elem_id or component: value}, with the inputs at their
    defaults except those named."""
    handler, inputs, outputs = _click_handler(demo, elem_id)
    data = {}
    for comp in inputs:
        key = getattr(comp, "elem_id", None)
        data[comp] = values_by_elem_id.get(key, comp.value) if key else comp.value
        if data[comp] is None and comp.__class__.__name__ == "Textbox":
            data[comp] = ""  # what the page sends for an empty box
    for comp in inputs:  # the states without an elem_id: the session token and this session's models
        if comp.__class__.__name__ == "BrowserState":
            data[comp] = session.new_token()
        elif comp.__class__.__name__ == "State" and comp.value == []:
            data[comp] = values_by_elem_id.get("chosen", [])
    return [{(getattr(c, "elem_id", None) or c): v for c, v in update.items()} for update in handler(data)]


def _model_updates(updates: list[dict]) -> list:
    return [u["sd_model_checkpoint"] for u in updates if "sd_model_checkpoint" in u]


@pytest.mark.parametrize("button", ["txt2img_generate", "txt2img_xyz_generate"])
def test_a_model_that_left_the_list_fails_the_job_and_the_dropdown_goes_back(studio, button):
    demo, engine, sd = studio
    (sd / "other.safetensors").unlink()
    engine.refresh()  # the file is gone and the list refreshed; this page still shows "other"
    fields = {"txt2img_prompt": "a fox", "sd_model_checkpoint": "other", "chosen": ["other", "tiny"], "txt2img_steps": 2,
              "txt2img_width": 64, "txt2img_height": 64}
    if button.endswith("xyz_generate"):
        fields.update({"txt2img_xyz_x_type": "Seed", "txt2img_xyz_x_values": "1, 2"})
    updates = _run(demo, button, **fields)
    last_status = [u["txt2img_status"] for u in updates if "txt2img_status" in u][-1]
    assert "sdui-message error" in last_status and "other" in last_status
    (back,) = _model_updates(updates)
    assert back["value"] == "tiny"  # the newest of this session's models that is still listed
    assert [name for _, name in back["choices"]] == ["tiny"]


def test_a_job_on_a_listed_model_leaves_the_dropdown_alone(studio):
    demo, _, _ = studio
    updates = _run(demo, "txt2img_generate", txt2img_prompt="a fox", sd_model_checkpoint="tiny", chosen=["tiny"], txt2img_steps=2,
                   txt2img_width=64, txt2img_height=64)
    assert "Done: 1 image(s)" in updates[-1]["txt2img_status"]
    assert _model_updates(updates) == []
