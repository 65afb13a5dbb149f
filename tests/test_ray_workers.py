"""Workers as Ray actors (``--ray-address``), on a local Ray instance the test starts: two CPU actors
on the tiny pipelines stand in for two GPU machines. Progress, cancel, images and model files cross
the process boundary for real; a killed actor's job is finished by the other with the same pixels."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'sdui[cluster]')")

from sdui import cluster  # noqa: E402
from sdui.config import Settings  # noqa: E402
from sdui.engine import Engine  # noqa: E402
from sdui.jobs import JobQueue  # noqa: E402
from sdui.types import GenerationRequest  # noqa: E402

ACTOR_CPUS = 0.5  # two test actors and a third (model transfer, late join) fit in num_cpus=2


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2,  # a new instance, never a `ray start` one left on this machine
             include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def studio(ray_local, models_root, tmp_path_factory):
    settings = Settings(models_dir=str(models_root), outputs_dir=str(tmp_path_factory.mktemp("outputs")),
                        use_cpu="all", devices="cpu,cpu", ray_address="local-test")
    engine = Engine(settings)
    workers = [cluster.start_actor(engine, settings, "cpu", i, num_cpus=ACTOR_CPUS) for i in range(2)]
    queue = JobQueue(engine, workers=workers).start()
    yield engine, queue, settings
    queue.stop()
    engine.manager.release_all()


def _req(steps=4, seed=21, **kw) -> GenerationRequest:
    return GenerationRequest(prompt="a lighthouse", model="tiny", steps=steps, width=64, height=64, seed=seed, **kw)


def _wait_for_progress(job, step, timeout=180):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if job.progress is not None and job.progress.step >= step:
            return job.progress
        if job.state not in ("queued", "running"):
            raise AssertionError(f"job ended before step {step}: {job.state} {job.error}")
        time.sleep(0.05)
    raise AssertionError(f"no progress to step {step} came back from the worker")


def test_a_remote_job_returns_the_same_pixels_and_is_saved_by_the_studio(studio):
    engine, queue, settings = studio
    job = queue.submit(_req(save=True), "alice")
    assert job.wait(300) and job.state == "done", job.error
    assert job.worker.startswith("ray-")
    (img,) = job.result.images
    reference = engine.generate(_req()).images[0]
    assert img.image.tobytes() == reference.image.tobytes() and img.infotext == reference.infotext
    assert img.path and Path(img.path).is_file() and Path(img.path).is_relative_to(settings.outputs_dir)
    assert job.progress is not None and job.progress.step == 4  # progress came back across the boundary


def test_cancel_reaches_the_job_on_a_remote_worker(studio):
    engine, queue, _ = studio
    job = queue.submit(_req(steps=150, batch_count=4), "bob")
    _wait_for_progress(job, 2)
    assert queue.cancel("bob") == 1
    assert job.wait(120), "the remote job did not stop"
    assert job.state == "cancelled" and job.progress.image_index == 0


def test_a_killed_workers_job_is_finished_by_the_other_with_identical_pixels(studio):
    engine, queue, _ = studio
    reference = engine.generate(_req(steps=30, seed=5)).images[0].image
    job = queue.submit(_req(steps=30, seed=5), "carol")
    _wait_for_progress(job, 1)
    victim = next(w for w in queue.workers if w.name == job.worker)
    ray.kill(victim.actor)
    assert job.wait(300) and job.state == "done", job.error
    assert job.worker != victim.name and job.attempts == 2
    assert "was lost mid-job" in job.result.warnings[0]
    assert job.result.images[0].image.tobytes() == reference.tobytes()
    assert victim not in queue.workers and len(queue.workers) == 1


def test_a_worker_that_joins_later_takes_jobs(studio):
    engine, queue, settings = studio
    started = cluster.top_up(queue, engine, settings)  # --devices cpu,cpu wants two; one was killed above
    assert len(started) == 1 and len(queue.workers) == 2
    busy = queue.submit(_req(steps=150, seed=1, batch_count=4), "dave")
    _wait_for_progress(busy, 1)
    job = queue.submit(_req(steps=2, seed=2), "erin")
    assert job.wait(300) and job.state == "done", job.error
    assert job.worker != busy.worker
    queue.cancel("dave")
    busy.wait(120)


def test_a_worker_without_the_file_receives_it_verified_by_sha256(studio, tmp_path):
    engine, _, settings = studio
    empty = tmp_path / "worker-models"
    (empty / "Stable-diffusion").mkdir(parents=True)
    worker = cluster.start_actor(engine, settings, "cpu", 99, models_dir=str(empty), num_cpus=ACTOR_CPUS)
    queue = JobQueue(engine, workers=[worker]).start()
    try:
        with pytest.raises(ray.exceptions.RayTaskError, match="SHA-256"):
            cluster.send_file(worker.actor, "bad.safetensors", Path(engine.find_model("tiny").path), "0" * 64)
        assert not (empty / "Stable-diffusion" / "bad.safetensors").exists()
        job = queue.submit(_req(), "frank")
        assert job.wait(300) and job.state == "done", job.error
        sent = empty / "Stable-diffusion" / "tiny.safetensors"
        assert cluster.file_sha256(sent) == engine.file_sha256(engine.find_model("tiny").path)
        assert job.result.images[0].image.tobytes() == engine.generate(_req()).images[0].image.tobytes()
        assert not list(empty.rglob("*.part"))
    finally:
        queue.stop()


def test_a_cancel_that_arrives_before_the_actor_starts_the_job_still_stops_it(studio):
    engine, queue, _ = studio
    actor = queue.workers[0].actor
    assert ray.get(actor.cancel.remote("early-job")) is False  # nothing running under that id yet
    out = ray.get(actor.generate.remote("early-job", engine.prepare(_req(steps=150))))
    assert out["state"] == "cancelled" and "before start" in out["message"]
