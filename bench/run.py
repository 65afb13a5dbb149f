"""``python -m bench [--figures 1,2,3,4] [--switches 20]``: prints each figure with pass/miss
and writes bench/results/cpu.json plus a Markdown table (for the README)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    from sdui.process import reexec_with_one_malloc_arena

    reexec_with_one_malloc_arena()  # as app.py and the sdui command do: measure what users run
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--figures", default="1,2,3,4", help="Which figures to run. Default: 1,2,3,4.")
    parser.add_argument("--switches", type=int, default=20, help="Switches for the memory figure. Default: 20.")
    args = parser.parse_args(argv)
    from . import figures
    from .common import Report, machine_info, models_tree

    report = Report(machine=machine_info())
    print(f"machine: {report.machine}", flush=True)
    t0 = time.time()
    models = models_tree(3)
    wanted = {int(x) for x in args.figures.split(",") if x}
    if 1 in wanted:
        figures.figure1_overhead(report, models)
    if 2 in wanted:
        figures.figure2_load_switch(report, models, args.switches)
    if 3 in wanted:
        figures.figure3_cpu_speed(report, models)
    if 4 in wanted:
        figures.figure4_ladder(report, models)
    path = report.save("cpu")
    print(f"\n{report.table()}\n\nwrote {path} in {time.time() - t0:.0f}s", flush=True)
    (path.parent / "cpu.md").write_text(report.table() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
