"""Worker pool throughput: ``python -m bench.workers [--jobs 8] [--steps 2] [--ray]``.

Jobs per minute through the queue with 1 and 2 workers on the tiny test pipelines (64x64), each
job from its own owner. CPU workers share this machine's cores, so 2 workers are not expected to be
faster here; the point is that the pool costs nothing and that jobs overlap. With ``--ray`` the same
with 1 and 2 Ray CPU actors (PNG round trip and polling included). Writes bench/results/workers.json.

GPU scaling is printed as an estimate: each GPU worker runs its own jobs on its own device, so N
GPUs give about N times one GPU's jobs per minute, less the studio-side work per image (PNG decode
and save, a few tens of ms), as long as the queue holds at least N jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_models() -> Path:
    from tests import tiny

    root = Path(tempfile.mkdtemp(prefix="sdui-bench-workers-"))
    (root / "Stable-diffusion").mkdir()
    tiny.save_single_file(tiny.tiny_pipeline(seed=0), root / "Stable-diffusion" / "tiny.safetensors")
    return root


class Setup:
    """A started queue on a set of workers, warmed up: every worker has loaded the model."""

    def __init__(self, kind: str, workers, engine, max_queue: int):
        from sdui.jobs import JobQueue
        from sdui.types import GenerationRequest

        self.kind, self.n = kind, len(workers)
        self.queue = JobQueue(engine, workers=workers, max_queue=max_queue).start()
        warm = [self.queue.submit(GenerationRequest(prompt="warm", model="tiny", steps=1, width=64, height=64, seed=i),
                                  f"w{i}") for i in range(len(workers))]
        for j in warm:
            j.wait(600)

    def measure(self, n_jobs: int, steps: int) -> dict:
        from sdui.types import GenerationRequest

        t0 = time.perf_counter()
        jobs = [self.queue.submit(GenerationRequest(prompt="a cat", model="tiny", steps=steps, width=64, height=64,
                                                    seed=i), f"user{i}") for i in range(n_jobs)]
        for j in jobs:
            j.wait(600)
        wall = time.perf_counter() - t0
        failed = [j.error for j in jobs if j.state != "done"]
        if failed:
            raise RuntimeError(f"jobs failed: {failed[:3]}")
        return {"wall_s": wall, "per_job_s": sum((j.finished or 0) - (j.started or 0) for j in jobs) / n_jobs,
                "by_worker": sorted({j.worker for j in jobs})}


def measure_interleaved(setups: list, n_jobs: int, steps: int, rounds: int) -> list[dict]:
    """Each setup ``rounds`` times, in turn (this VM's speed drifts between minutes); the median run."""
    runs: dict[int, list[dict]] = {i: [] for i in range(len(setups))}
    for _ in range(rounds):
        for i, setup in enumerate(setups):
            runs[i].append(setup.measure(n_jobs, steps))
    rows = []
    for i, setup in enumerate(setups):
        best = sorted(runs[i], key=lambda r: r["wall_s"])[len(runs[i]) // 2]
        rows.append({"kind": setup.kind, "workers": setup.n, "jobs": n_jobs, "wall_s": round(best["wall_s"], 3),
                     "jobs_per_min": round(60 * n_jobs / best["wall_s"], 1), "per_job_s": round(best["per_job_s"], 3),
                     "all_wall_s": [round(r["wall_s"], 3) for r in runs[i]], "by_worker": best["by_worker"]})
        print(rows[-1], flush=True)
    for setup in setups:
        setup.queue.stop()
    return rows


def main(argv=None) -> int:
    from sdui.process import reexec_with_one_malloc_arena

    reexec_with_one_malloc_arena()
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--jobs", type=int, default=8, help="Jobs per measurement. Default: 8.")
    parser.add_argument("--steps", type=int, default=2, help="Sampling steps per job. Default: 2.")
    parser.add_argument("--rounds", type=int, default=3, help="Runs of each setup, interleaved; the median is kept. "
                        "Default: 3.")
    parser.add_argument("--ray", action="store_true", help="Also measure 1 and 2 Ray CPU actors (needs ray).")
    args = parser.parse_args(argv)

    import torch

    from sdui.config import Settings
    from sdui.engine import Engine
    from sdui.workers import local_workers

    from .common import machine_info

    models = tiny_models()
    outputs = tempfile.mkdtemp(prefix="sdui-bench-out-")
    setups = []
    for devices in ("cpu", "cpu,cpu"):
        settings = Settings(models_dir=str(models), outputs_dir=outputs, use_cpu="all", devices=devices, no_watermark=True)
        engine = Engine(settings)
        setups.append(Setup("local", local_workers(engine, settings), engine, args.jobs + 1))
    rows = measure_interleaved(setups, args.jobs, args.steps, args.rounds)
    if args.ray:
        import ray

        from sdui import cluster

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            setups = []
            for n in (1, 2):
                settings = Settings(models_dir=str(models), outputs_dir=outputs, use_cpu="all", no_watermark=True)
                engine = Engine(settings)
                workers = [cluster.start_actor(engine, settings, "cpu", 10 * n + i, num_cpus=0.5) for i in range(n)]
                setups.append(Setup("ray", workers, engine, args.jobs + 1))
            rows += measure_interleaved(setups, args.jobs, args.steps, args.rounds)
        finally:
            ray.shutdown()
    base = {r["kind"]: r["jobs_per_min"] for r in rows if r["workers"] == 1}
    print("\n| workers | kind | jobs/min | ratio to 1 worker | mean s/job |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['kind']} | {r['jobs_per_min']} | {r['jobs_per_min'] / base[r['kind']]:.2f} | "
              f"{r['per_job_s']} |")
    print(f"\nmachine: {machine_info()}; torch threads {torch.get_num_threads()}; {args.jobs} jobs of 64x64, "
          f"{args.steps} steps, median of {args.rounds} interleaved runs")
    print("GPU estimate (not measured): N GPU workers ~ N x one GPU's jobs/min while >= N jobs wait; "
          "e.g. SD 1.5 512x512 20 steps at ~2 s/job on one card -> ~30 jobs/min, two cards ~55-60 jobs/min.")
    out = Path(__file__).resolve().parent / "results" / "workers.json"
    out.write_text(json.dumps({"machine": machine_info(), "jobs": args.jobs, "steps": args.steps, "rounds": args.rounds,
                               "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
