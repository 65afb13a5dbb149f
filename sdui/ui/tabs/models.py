"""Models: what was found (with errors), device, precision, memory level, RAM/VRAM in use."""

from __future__ import annotations

import html
from types import SimpleNamespace

import gradio as gr

from ..controls import UIContext

COLUMNS = ["title", "format", "architecture", "error", "path"]


def model_rows(ctx: UIContext) -> list[list]:
    rows = []
    for e in ctx.engine.checkpoints():
        d = e.to_json()
        rows.append([d["title"], d["format"], d["architecture_label"] or d["architecture"], d["error"] or "", d["path"]])
    return rows


def table_html(rows: list[list]) -> str:
    """The models as an HTML table; each cell names its column (``data-label``) so that on a phone
    studio.css can show every model as a card of "column: value" lines (no sideways scrolling)."""
    if not rows:
        return "<p>No checkpoints found.</p>"
    head = "".join(f"<th scope='col'>{html.escape(c)}</th>" for c in COLUMNS)
    cells = (("".join(f"<td data-label='{html.escape(c)}'>{html.escape(str(v))}</td>" for c, v in zip(COLUMNS, row, strict=True)))
             for row in rows)
    body = "".join(f"<tr>{row}</tr>" for row in cells)
    return f"<table class='sdui-models'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def status_markdown(ctx: UIContext) -> str:
    s = ctx.engine.status()
    gb = 1024**3
    n = len(s["cached"])
    lines = [f"**Device:** {s['device']} · **precision:** {s['dtype']} · **backend:** {s['backend']}",
             f"**Loaded:** {s['current'] or 'nothing yet'}"
             + (f" ({s['architecture']}) · **VAE:** {s['vae']} · **memory level:** {s['memory_level']} ({s['memory_level_name']})"
                if s["current"] else ""),
             f"**RAM cache:** holds {n} model{'' if n == 1 else 's'}"
             f"{': ' + ', '.join(c['name'] for c in s['cached']) if n else ''} "
             f"({sum(c['bytes'] for c in s['cached']) / gb:.1f} of a {s['cache_budget_bytes'] / gb:.1f} GB budget)",
             f"**RAM in use:** {s['ram_rss_bytes'] / gb:.2f} of {s['ram_total_bytes'] / gb:.1f} GB"]
    if "vram_total_bytes" in s:
        lines.append(f"**VRAM:** {s['vram_allocated_bytes'] / gb:.2f} GB allocated, "
                     f"{s['vram_free_bytes'] / gb:.2f} of {s['vram_total_bytes'] / gb:.1f} GB free")
    lines.append(f"**Queue:** {ctx.queue.pending_count} waiting")
    workers = ctx.queue.worker_status()
    if len(workers) > 1 or any(w.get("kind") == "ray" for w in workers):
        lines.append("**Workers:**\n\n" + "\n".join(f"- {worker_line(w)}" for w in workers))
    return "\n\n".join(lines)


def worker_line(w: dict) -> str:
    """One worker as the Models panel lists it: name, device, model loaded, job running, memory."""
    gb = 1024**3
    memory = (f"VRAM {(w['vram_total_bytes'] - w['vram_free_bytes']) / gb:.1f} of {w['vram_total_bytes'] / gb:.1f} GB"
              if "vram_total_bytes" in w else f"RAM {w['ram_rss_bytes'] / gb:.2f} GB" if "ram_rss_bytes" in w else "")
    job = f"running {w['job']}" if w.get("job") else "idle"
    where = f" on {w['host']}" if w.get("host") else ""
    return (f"**{w['name']}**{where} · {w.get('device') or '?'} · model: {w.get('current') or 'none'} · {job} · "
            f"{w['jobs_done']} done" + (f" · {memory}" if memory else ""))


def render(ctx: UIContext) -> SimpleNamespace:
    status = gr.Markdown(status_markdown(ctx), elem_id="models_status")
    table = gr.HTML(table_html(model_rows(ctx)), elem_id="models_table")
    refresh = gr.Button("Refresh", elem_id="models_refresh")
    return SimpleNamespace(status=status, table=table, refresh=refresh)


def wire(ctx: UIContext, tab: SimpleNamespace) -> None:
    def refresh():
        ctx.engine.refresh()
        return status_markdown(ctx), table_html(model_rows(ctx))

    tab.refresh.click(refresh, outputs=[tab.status, tab.table])
