"""The owner's defaults (Settings tab, ``--settings-file``): checked, written atomically, read back by the
next server, used for previews, the saved image format and saving, shown to API clients as the
server's options, and changeable only by the owner when there are logins."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from sdui.config import Settings
from sdui.server_defaults import DefaultsStore, ServerDefaults
from sdui.types import InvalidRequest, Limits


def test_defaults_round_trip_through_the_file(tmp_path):
    path = tmp_path / "conf" / "sdui-settings.json"
    store = DefaultsStore(path, Limits())
    assert store.get() == ServerDefaults()  # no file yet: the built-in defaults
    store.update({"sampler": "DDIM", "steps": 9, "width": 640, "height": 384, "preview_every": 2,
                  "output_format": "webp", "save": False})
    again = DefaultsStore(path, Limits()).get()  # a restarted server
    assert again == ServerDefaults(sampler="DDIM", steps=9, width=640, height=384, preview_every=2,
                                   output_format="webp", save=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["sdui-settings.json"]  # no temporary left


@pytest.mark.parametrize("change,words", [
    ({"sampler": "Euler b"}, "Sampling method='Euler b' is not allowed: one of Euler a"),
    ({"steps": 0}, "from 1 to 150"),
    ({"width": 100}, "a multiple of 8"),
    ({"width": 4096}, "from 64 to 2048"),
    ({"preview_every": 0}, "from 1 to 150"),
    ({"output_format": "gif"}, "one of png, jpg, webp"),
    ({"save": "yes"}, "true or false"),
])
def test_bad_values_are_refused_and_nothing_changes(tmp_path, change, words):
    path = tmp_path / "s.json"
    store = DefaultsStore(path, Limits())
    store.update({"steps": 12})
    with pytest.raises(InvalidRequest) as err:
        store.update({"sampler": "DDIM", **change})
    assert words in str(err.value)
    assert store.get().sampler == "Euler a" and json.loads(path.read_text())["sampler"] == "Euler a"


def test_a_broken_or_stale_file_falls_back_per_value(tmp_path, caplog):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"sampler": "No such sampler", "steps": 30}))
    assert DefaultsStore(path, Limits()).get() == ServerDefaults(steps=30)
    assert "No such sampler" in caplog.text
    path.write_text("{ not json")
    assert DefaultsStore(path, Limits()).get() == ServerDefaults()


def test_engine_previews_and_saves_as_the_owner_says(make_engine, tmp_path):
    from sdui.types import GenerationRequest
    from sdui.ui.tabs.settings import output_fields

    engine = make_engine(settings_file=str(tmp_path / "s.json"))
    req = dict(prompt="x", steps=3, width=64, height=64, model="tiny", seed=1)
    steps = []
    engine.generate(GenerationRequest(**req, save=False), on_progress=lambda p: p.preview and steps.append(p.step))
    assert steps == [3]  # the built-in default: every 4 steps and at the last one
    engine.set_server_defaults({"preview_every": 1, "output_format": "jpg"})
    assert engine.preview_period() == 1
    fields = output_fields(SimpleNamespace(engine=engine))
    assert fields == {"save": True, "output_format": "jpg"}
    steps.clear()
    r = engine.generate(GenerationRequest(**req, **fields), on_progress=lambda p: p.preview and steps.append(p.step))
    assert steps == [1, 2, 3]
    assert r.images[0].path.endswith(".jpg")


def test_api_options_show_the_owners_defaults(models_root, tmp_path):
    from fastapi.testclient import TestClient

    from sdui.server import create_app

    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path / "out"), api=True,
                        settings_file=str(tmp_path / "s.json"))
    app = create_app(settings, with_ui=False)
    try:
        app.state.engine.set_server_defaults({"output_format": "webp", "save": False, "preview_every": 5})
        c = TestClient(app, base_url="http://127.0.0.1:7860")
        opts = c.get("/sdapi/v1/options").json()
        assert (opts["samples_format"], opts["samples_save"], opts["show_progress_every_n_steps"]) == ("webp", False, 5)
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64})
        assert r.status_code == 200 and json.loads(r.json()["info"])["saved"] == []  # saving is off
    finally:
        app.state.queue.stop()


def test_only_the_owner_may_change_them_when_there_are_logins():
    from sdui.ui.tabs.settings import may_change

    def ctx(**kw):
        return SimpleNamespace(settings=Settings(**kw))

    with_logins = ctx(gradio_auth="boss:pw,guest:pw2")
    assert may_change(with_logins, SimpleNamespace(username="boss"))
    assert not may_change(with_logins, SimpleNamespace(username="guest"))
    assert not may_change(with_logins, None)
    assert may_change(ctx(), None) and may_change(ctx(listen=True), None)  # no logins: anyone, as in A1111
