"""The lasting history (``sdui.history``): an index of the outputs folder that a new server reads back,
owners kept apart, delete only by the owner, search by prompt."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from sdui.history import INDEX_NAME, History, NotYours
from sdui.jobs import JobQueue
from sdui.types import GenerationRequest

BASE = dict(steps=2, width=64, height=64, model="tiny")


def _make(queue: JobQueue, owner: str, prompt: str, seed: int = 1):
    job = queue.submit(GenerationRequest(prompt=prompt, seed=seed, **BASE), owner)
    assert job.wait(120) and job.result and job.result.images[0].path, job.error
    return job


@pytest.fixture()
def made(make_engine):
    """Two owners' images through the queue (which records them), then the server 'stops'."""
    engine = make_engine()
    queue = JobQueue(engine).start()
    try:
        a = _make(queue, "ui:alice-browser", "a red lighthouse at dusk", 1)
        b = _make(queue, "ui:bob-browser", "a blue teapot", 2)
    finally:
        queue.stop()
    return engine, a, b


def test_the_index_survives_a_restart(made, make_engine):
    engine, a, _ = made
    root = engine.history.root
    assert (root / INDEX_NAME).is_file()
    fresh = make_engine(outputs_dir=engine.settings.outputs_dir)  # a new server on the same outputs folder
    assert fresh.history is not engine.history
    items = fresh.history.items("ui:alice-browser")
    assert [e.path for e in items] == [engine.history._rel(a.result.images[0].path)]
    e = items[0]
    assert e.prompt == "a red lighthouse at dusk" and e.mode == "txt2img"
    assert e.params["Seed"] == "1" and e.params["Steps"] == "2" and e.params["Size"] == "64x64"
    assert "a red lighthouse" in e.caption() and "Seed 1" in e.caption() and "Steps 2" in e.caption()


def test_owners_are_kept_apart(made):
    engine, _, _ = made
    h = History(engine.settings.outputs_dir)
    assert [e.prompt for e in h.items("ui:alice-browser")] == ["a red lighthouse at dusk"]
    assert [e.prompt for e in h.items("ui:bob-browser")] == ["a blue teapot"]
    assert h.items("ui:someone-else") == [] and h.items(None) == []


def test_deleting_someone_elses_image_is_refused(made):
    engine, a, b = made
    h = History(engine.settings.outputs_dir)
    bobs = h.items("ui:bob-browser")[0]
    with pytest.raises(NotYours):
        h.delete(bobs.path, "ui:alice-browser")
    assert h.full_path(bobs).is_file()
    with pytest.raises(NotYours):
        h.delete("../../etc/passwd", "ui:alice-browser")
    alices = h.items("ui:alice-browser")[0]
    h.delete(alices.path, "ui:alice-browser")
    assert not h.full_path(alices).exists()
    assert History(engine.settings.outputs_dir).items("ui:alice-browser") == []  # gone from the index on disk too


def test_search_by_prompt_words(made):
    engine, _, _ = made
    h = engine.history
    h.alias("ui:bob-browser", "ui:alice-browser")  # one viewer, both images
    assert [e.prompt for e in h.items("ui:alice-browser", "LIGHTHOUSE")] == ["a red lighthouse at dusk"]
    assert [e.prompt for e in h.items("ui:alice-browser", "red dusk")] == ["a red lighthouse at dusk"]
    assert h.items("ui:alice-browser", "red teapot") == []
    assert len(h.items("ui:alice-browser", "")) == 2


def test_a_login_gets_its_browsers_images_and_later_ones(make_engine):
    engine = make_engine()
    queue = JobQueue(engine).start()
    try:
        _make(queue, "ui:laptop", "before login")
        assert engine.history.alias("ui:laptop", "login:alice") == 1
        _make(queue, "ui:laptop", "after login", 3)
    finally:
        queue.stop()
    again = History(engine.settings.outputs_dir)  # a restart keeps the alias too
    assert sorted(e.prompt for e in again.items("login:alice")) == ["after login", "before login"]
    assert again.items("ui:laptop") == []


def test_files_on_disk_without_an_owner_are_listed_as_unowned_and_kept_up_to_date(made):
    engine, a, _ = made
    src = a.result.images[0].path
    copy = engine.history.root / "txt2img-images" / "copied.png"
    shutil.copyfile(src, copy)
    (engine.history.root / "notes.txt").write_text("not an image")
    h = History(engine.settings.outputs_dir)
    unowned = [e for e in h.items(None, include_unowned=True)]
    assert [e.path for e in unowned] == ["txt2img-images/copied.png"]
    assert unowned[0].prompt == "a red lighthouse at dusk"
    assert "txt2img-images/copied.png" not in [e.path for e in h.items("ui:alice-browser")]
    Image.new("RGB", (8, 8)).save(copy)  # changed on disk: read again
    assert h.items(None, include_unowned=True)[0].prompt == ""
    copy.unlink()
    assert h.items(None, include_unowned=True) == []
    saved = json.loads((engine.history.root / INDEX_NAME).read_text())
    assert "txt2img-images/copied.png" not in [e["path"] for e in saved["entries"]]


def test_a_broken_index_is_rebuilt_from_the_files(made):
    engine, _, _ = made
    (engine.history.root / INDEX_NAME).write_text("{ not json")
    h = History(engine.settings.outputs_dir)
    assert len(h.items(None, include_unowned=True)) == 2  # owners unknown now, the images still listed


def test_the_ui_shows_a_login_its_own_and_the_owner_the_unowned(made, tmp_path):
    """The History tab's rules (sdui/ui/tabs/history.py) on the same index: a login's images, the first
    login also those of no known owner, --shared-outputs everyone's; a fake Gradio request carries the login."""
    from types import SimpleNamespace

    from sdui.config import Settings
    from sdui.ui.session import Publisher
    from sdui.ui.tabs import history as tab

    engine, a, b = made
    engine.history.alias("ui:alice-browser", "login:ann")
    shutil.copyfile(a.result.images[0].path, engine.history.root / "txt2img-images" / "old.png")

    def ctx(**kw):
        return SimpleNamespace(engine=engine, settings=Settings(outputs_dir=engine.settings.outputs_dir, **kw),
                               publisher=Publisher())

    logins = ctx(gradio_auth="ann:pw,bob:pw")
    ann, bob = SimpleNamespace(username="ann"), SimpleNamespace(username="bob")
    assert len(tab.gallery_items(logins, "any-token", ann)[1]) == 2  # hers and the unowned old file
    assert tab.gallery_items(logins, "token-b", bob)[1] == []
    assert len(tab.gallery_items(ctx(gradio_auth="ann:pw", shared_outputs=True), "t", bob)[1]) == 3
    local = ctx()  # no logins, not --listen: the browser's own and the unowned ones
    bobs = engine.history._rel(b.result.images[0].path)
    assert set(tab.gallery_items(local, "bob-browser", None)[1]) == {"txt2img-images/old.png", bobs}
    assert "txt2img-images/old.png" not in tab.gallery_items(ctx(listen=True), "bob-browser", None)[1]
