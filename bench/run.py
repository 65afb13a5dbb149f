"""``python -m bench [--figures 1,2,3,4] [--switches 20] [--reconvert] [--cpu-cases 256x8x2,512x20x1]``: prints each figure with
pass/miss, writes bench/results/cpu.json and cpu.md, and puts the table (with the machine, the date
and how busy the machine was) into README.md between the ``bench:cpu`` markers."""

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
    parser.add_argument("--reconvert", action="store_true",
                        help="Empty the bench's OpenVINO cache first, so figure 3 times the one-time conversion.")
    parser.add_argument("--pairs", type=int, default=5, help="Interleaved rounds of figure 1. Default: 5.")
    parser.add_argument("--cpu-cases", default="256x8x2,512x20x1",
                        help="Figure 3's whole images as SIZExSTEPSxPAIRS, comma-separated. Default: 256x8x2,512x20x1 "
                             "(the 512 px pair takes about 15 minutes on 2 cores).")
    parser.add_argument("--skip-cli", action="store_true", help="Leave out figure 1's CLI process row (minutes).")
    args = parser.parse_args(argv)
    from .common import CACHE

    # the bench's own sdui cache (OpenVINO IR, compiled blobs), not the user's
    os.environ.setdefault("SDUI_CACHE_DIR", str(CACHE / "sdui-cache"))
    if args.reconvert:
        import shutil

        shutil.rmtree(Path(os.environ["SDUI_CACHE_DIR"]) / "openvino", ignore_errors=True)
    from . import figures
    from .common import Report, machine_info, models_tree

    report = Report(machine=machine_info())
    report.machine["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report.machine["load_at_start"] = round(os.getloadavg()[0], 1)
    print(f"machine: {report.machine}", flush=True)
    t0 = time.time()
    models = models_tree(3)
    wanted = {int(x) for x in args.figures.split(",") if x}
    # figure 3 first: it times the one-time OpenVINO conversion that figure 2's jobs then reuse
    try:
        cases = [tuple(int(x) for x in case.split("x")) for case in args.cpu_cases.split(",") if case]
    except ValueError:
        cases = []
    if not cases or any(len(c) != 3 or min(c) < 1 for c in cases):
        parser.error(f"--cpu-cases {args.cpu_cases!r}: SIZExSTEPSxPAIRS, comma-separated, each at least 1 (256x8x2)")
    runs = {3: lambda: figures.figure3_cpu_speed(report, models, cases),
            2: lambda: figures.figure2_load_switch(report, models, args.switches),
            1: lambda: figures.figure1_overhead(report, models, pairs=args.pairs, cli=not args.skip_cli),
            4: lambda: figures.figure4_ladder(report, models)}
    for number, run in runs.items():
        if number in wanted:
            try:
                run()
            except Exception as e:  # noqa: BLE001 - one figure failing still leaves the others' numbers
                import traceback

                traceback.print_exc()
                report.add(f"{number} failed", f"{type(e).__name__}: {str(e)[:200]}", 0.0, "", ok=False)
    report.machine["load_at_end"] = round(os.getloadavg()[0], 1)
    report.machine["minutes"] = round((time.time() - t0) / 60, 1)
    _keep_other_figures(report, wanted)
    path = report.save("cpu")
    text = f"{machine_line(report.machine)}\n\n{report.table()}\n"
    print(f"\n{text}\nwrote {path} in {time.time() - t0:.0f}s", flush=True)
    (path.parent / "cpu.md").write_text(text)
    readme = Path(__file__).resolve().parent.parent / "README.md"
    update_readme(readme, text)
    return 0


def _keep_other_figures(report, wanted: set) -> None:
    """A run of some figures keeps the last saved rows of the others, each figure with the date of the
    run that measured it (said in the machine line), so the README's table stays whole."""
    import json
    from dataclasses import fields

    from .common import RESULTS, Row

    def number(figure) -> str:
        return str(figure).split()[0]

    dates = {number(r.figure): report.machine["date"] for r in report.rows}
    try:
        before = json.loads((RESULTS / "cpu.json").read_text())
    except (OSError, ValueError):
        before = {}
    names = {f.name for f in fields(Row)}
    kept = [Row(**{k: v for k, v in r.items() if k in names}) for r in before.get("rows", [])
            if number(r["figure"]).isdigit() and int(number(r["figure"])) not in wanted]
    old_dates = before.get("machine", {}).get("figure_dates", {})
    for r in kept:
        dates.setdefault(number(r.figure), old_dates.get(number(r.figure), before["machine"].get("date")))
    report.rows.extend(kept)
    report.machine["figure_dates"] = dates
    older: dict = {}
    for fig, date in sorted(dates.items()):
        if date != report.machine["date"]:
            older.setdefault(date, []).append(fig)
    if older:
        report.machine["kept"] = "; ".join(f"figure{'s' if len(figs) > 1 else ''} {', '.join(figs)} from the run of {date}"
                                           for date, figs in older.items())


BEGIN, END = "<!-- bench:cpu -->", "<!-- /bench:cpu -->"


def machine_line(m: dict) -> str:
    busy = m["load_at_start"] > 1.5 * m["cores"] or m["load_at_end"] > 1.5 * m["cores"]
    return (f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, torch {m['torch']}"
            f"{', OpenVINO ' + m['openvino'] if m.get('openvino') else ''}; run {m['date']} ({m['minutes']} min); "
            f"load average {m['load_at_start']} at start, {m['load_at_end']} at end"
            + (" — a shared, busy machine: other processes ran meanwhile, which is why every comparison is "
               "interleaved and reported as medians" if busy else "")
            + (f"; {m['kept']}" if m.get("kept") else ""))


def update_readme(readme: Path, text: str) -> None:
    """Put ``text`` between the bench markers of README.md (nothing happens without them)."""
    if not readme.is_file():
        return
    body = readme.read_text()
    if BEGIN in body and END in body:
        head, rest = body.split(BEGIN, 1)
        readme.write_text(f"{head}{BEGIN}\n{text}{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    raise SystemExit(main())
