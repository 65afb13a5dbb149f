"""/docs describes every route of the A1111-compatible API (each handler is a documented,
module-level function)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from sdui.config import Settings
from sdui.server import create_app


def test_every_api_route_has_a_description_in_the_openapi_document(models_root, tmp_path):
    app = create_app(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True), with_ui=False)
    try:
        doc = TestClient(app, base_url="http://127.0.0.1:7860").get("/openapi.json").json()
    finally:
        app.state.queue.stop()
    routes = [(path, method, op) for path, ops in doc["paths"].items() if path.startswith("/sdapi/v1/")
              for method, op in ops.items()]
    assert len(routes) >= 17
    undocumented = [f"{method.upper()} {path}" for path, method, op in routes if not op.get("description", "").strip()]
    assert undocumented == []
