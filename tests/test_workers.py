"""The worker pool on one host (``--devices``): two CPU workers stand in for two GPUs (each its own
Engine and model manager, as each GPU's would be). Jobs run at once, go to the worker that has their
model, and a lost worker's job is run again elsewhere."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from sdui import jobs
from sdui.jobs import JobQueue
from sdui.types import GenerationRequest
from sdui.workers import EngineWorker, Worker, WorkerLost, local_workers, parse_devices


def _req(model="tiny", steps=12, seed=11, **kw) -> GenerationRequest:
    return GenerationRequest(prompt="a cat", model=model, steps=steps, width=64, height=64, seed=seed, **kw)


@pytest.fixture()
def pool(make_engine):
    engine = make_engine(devices="cpu,cpu", use_cpu="all")
    workers = local_workers(engine, engine.settings)
    queue = JobQueue(engine, workers=workers).start()
    yield queue, workers
    queue.stop()
    for w in workers:
        w.engine.manager.release_all()


def test_default_is_one_worker_the_engine_itself(make_engine):
    engine = make_engine()
    (worker,) = local_workers(engine, engine.settings)
    assert isinstance(worker, EngineWorker) and worker.engine is engine
    queue = JobQueue(engine)
    assert len(queue.workers) == 1 and queue.workers[0].engine is engine


def test_devices_flag_makes_one_engine_per_device_and_refuses_nonsense(make_engine):
    engine = make_engine(devices="cpu,cpu", use_cpu="all")
    workers = local_workers(engine, engine.settings)
    assert [w.name for w in workers] == ["0:cpu", "1:cpu"]
    assert workers[0].engine is engine and workers[1].engine is not engine
    assert workers[1].engine.manager is not engine.manager  # its own model manager and memory ladder
    assert workers[0].engine.cache_budget() == workers[1].engine.cache_budget()
    with pytest.raises(ValueError, match="not a device"):
        parse_devices("cuda:0,gpu7")


def test_two_workers_run_two_users_jobs_at_the_same_moment(pool, monkeypatch):
    queue, workers = pool
    for w in workers:  # both have the model in memory, so both start sampling at once
        w.engine.reload_checkpoint("tiny")
    seen: dict[str, list[float]] = {}
    real = jobs._record_progress

    def timed(job, p):
        seen.setdefault(job.id, []).append(time.monotonic())
        real(job, p)

    monkeypatch.setattr(jobs, "_record_progress", timed)
    a = queue.submit(_req(steps=30, seed=1), "alice")
    b = queue.submit(_req(steps=30, seed=2), "bob")
    assert a.wait(300) and b.wait(300)
    assert a.state == "done" and b.state == "done", (a.error, b.error)
    assert {a.worker, b.worker} == {"0:cpu", "1:cpu"}
    (a0, a1), (b0, b1) = (seen[a.id][0], seen[a.id][-1]), (seen[b.id][0], seen[b.id][-1])
    assert max(a0, b0) < min(a1, b1), "the two jobs' sampling did not overlap in time"
    assert [w.jobs_done for w in workers] == [1, 1]


def test_a_job_goes_to_the_worker_that_has_its_model(pool):
    queue, workers = pool
    workers[0].engine.reload_checkpoint("tiny")
    workers[1].engine.reload_checkpoint("other")
    job = queue.submit(_req(model="other", steps=2), "alice")
    assert job.wait(300) and job.state == "done", job.error
    assert job.worker == "1:cpu"  # not the first-listed, equally idle worker 0
    job = queue.submit(_req(model="tiny", steps=2), "alice")
    assert job.wait(300) and job.worker == "0:cpu"


def test_the_models_panel_lists_each_worker(pool):
    from sdui.ui.tabs.models import status_markdown

    queue, workers = pool
    workers[1].engine.reload_checkpoint("other")
    status = queue.worker_status()
    assert [(s["name"], s["device"], s["current"], s["job"]) for s in status] == [
        ("0:cpu", "cpu", None, None), ("1:cpu", "cpu", "other", None)]
    text = status_markdown(SimpleNamespace(engine=workers[0].engine, queue=queue))
    assert "**Workers:**" in text and "**1:cpu** · cpu · model: other · idle" in text


def test_the_api_lists_workers_and_unload_reaches_every_device(models_root, tmp_path):
    from fastapi.testclient import TestClient

    from sdui.config import Settings
    from sdui.server import create_app

    app = create_app(Settings(models_dir=str(models_root), outputs_dir=str(tmp_path), api=True, use_cpu="all",
                              devices="cpu,cpu"), with_ui=False)
    queue = app.state.queue
    try:
        client = TestClient(app, base_url="http://127.0.0.1:7860")
        r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64})
        assert r.status_code == 200, r.text
        workers = client.get("/sdapi/v1/memory").json()["sdui"]["workers"]
        assert [w["name"] for w in workers] == ["0:cpu", "1:cpu"] and sum(w["jobs_done"] for w in workers) == 1
        assert any(w["current"] for w in workers)
        queue.workers[1].engine.reload_checkpoint("other")
        assert all(w.loaded_models() for w in queue.workers)
        assert client.post("/sdapi/v1/unload-checkpoint").status_code == 200
        assert all(not w.loaded_models() for w in queue.workers)  # the second device's engine let go too
    finally:
        queue.stop()


class _Fake(Worker):
    """Simulated worker (a dying process needs Ray, see test_ray_workers): answers from ``behaviour``."""

    def __init__(self, name, behaviour, engine):
        super().__init__(name)
        self.behaviour, self.engine, self.calls = behaviour, engine, 0

    def generate(self, request, on_progress=None, cancel=None, skip=None):
        self.calls += 1
        return self.behaviour(self, request, on_progress, cancel)


def _dies(worker, request, on_progress, cancel):
    raise WorkerLost("simulated: the actor's process exited")


def _works(worker, request, on_progress, cancel):
    return worker.engine.generate(request, on_progress=on_progress, cancel=cancel)


def test_simulated_lost_worker_job_is_retried_once_with_a_note(make_engine):
    engine = make_engine()
    dead, good = _Fake("dead", _dies, engine), _Fake("good", _works, engine)
    good.jobs_done = 5  # so the dying one is picked first
    queue = JobQueue(engine, workers=[dead, good]).start()
    try:
        job = queue.submit(_req(steps=2), "alice")
        assert job.wait(300) and job.state == "done", job.error
        assert job.worker == "good" and job.attempts == 2 and dead.calls == 1
        assert job.result.warnings[0].startswith("Worker dead was lost mid-job")
        assert [w.name for w in queue.workers] == ["good"]
        reference = engine.generate(_req(steps=2)).images[0].image
        assert job.result.images[0].image.tobytes() == reference.tobytes()
    finally:
        queue.stop()


def test_simulated_second_loss_fails_the_job_with_the_reason(make_engine):
    engine = make_engine()
    queue = JobQueue(engine, workers=[_Fake("a", _dies, engine), _Fake("b", _dies, engine), _Fake("c", _dies, engine)])
    queue.start()
    try:
        job = queue.submit(_req(steps=2), "alice")
        assert job.wait(60) and job.state == "failed"
        assert "was lost" in job.error and "already retried once" in job.error
        assert len(queue.workers) == 1  # two lost, the third never got the job
    finally:
        queue.stop()


def test_a_worker_added_later_takes_waiting_jobs(make_engine):
    engine = make_engine()
    release = threading.Event()

    def blocked(worker, request, on_progress, cancel):
        release.wait(120)
        return worker.engine.generate(request)

    busy = _Fake("busy", blocked, engine)
    queue = JobQueue(engine, workers=[busy]).start()
    try:
        first = queue.submit(_req(steps=2), "alice")
        second = queue.submit(_req(steps=2, seed=3), "bob")
        time.sleep(0.2)
        assert second.state == "queued"
        queue.add_worker(EngineWorker(engine, "late"))
        assert second.wait(300) and second.state == "done" and second.worker == "late"
        assert first.state == "running"
    finally:
        release.set()
        queue.stop()


def test_serve_refuses_a_device_this_machine_lacks_in_one_sentence(models_root, tmp_path, capsys):
    """This machine has no GPU: a cuda device in --devices is an error at start, not at the first job."""
    from sdui import server

    code = server.main(["--models-dir", str(models_root), "--outputs-dir", str(tmp_path), "--devices", "cpu,cuda:3"])
    assert code == 2
    assert "--devices: cuda:3 is not on this machine" in capsys.readouterr().err


def test_ray_address_without_ray_runs_the_embedded_worker(make_engine, monkeypatch, caplog):
    """Ray missing is simulated (it may be installed here): the studio warns and runs as without the flag."""
    from sdui import cluster, server

    def missing():
        raise cluster.RayMissing("--ray-address needs Ray: pip install 'sdui[cluster]'")

    monkeypatch.setattr(cluster, "_ray", missing)
    engine = make_engine(ray_address="auto")
    (worker,) = server.make_workers(engine, engine.settings)
    assert isinstance(worker, EngineWorker) and worker.engine is engine
    assert "needs Ray" in caplog.text
