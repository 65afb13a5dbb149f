"""A1111 prompt styles from the owner's ``--styles-file``: read (``GET /sdapi/v1/prompt-styles`` and the
UI's Styles picker), applied to a prompt as A1111 applies them, and saved (the UI's "save as a style").

The file is A1111's ``styles.csv``: a header row ``name,prompt,negative_prompt`` (the old
``name,text`` form is read too), then one style per row; rows with no name or a name starting with
``#`` are skipped, and a later row replaces an earlier one of the same name, as A1111 reads it. The
file is read on each request (it is small, and the owner may edit it while the server runs); a
missing file means no styles, and a file that cannot be read lists none and says why in the log.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import threading
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)


def read_styles(path: str) -> list[dict[str, str]]:
    """[{"name", "prompt", "negative_prompt"}, ...] from an A1111 styles file; [] if there is none."""
    file = Path(path)
    if not file.is_file():
        return []
    styles: dict[str, dict[str, str]] = {}
    try:
        with open(file, encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f, skipinitialspace=True):
                name = row.get("name") or ""
                if not name or name.startswith("#"):
                    continue
                prompt = row["prompt"] if "prompt" in row else row.get("text")
                styles[name] = {"name": name, "prompt": prompt or "", "negative_prompt": row.get("negative_prompt") or ""}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        log.warning("styles file %s could not be read (%s); no styles are listed", file, e)
        return []
    return list(styles.values())


FIELDNAMES = ("name", "prompt", "negative_prompt")
_write_lock = threading.Lock()


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """A1111's ``merge_prompts``: a style with ``{prompt}`` takes the prompt in that place; any other is
    appended after ``", "`` (empty parts left out)."""
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, names: Iterable[str], styles: list[dict[str, str]]) -> tuple[str, str]:
    """(prompt, negative prompt) with the named styles applied one after another, in the order given
    (A1111's ``apply_styles_to_prompt`` / ``apply_negative_styles_to_prompt``). Raises KeyError naming
    a style the file does not have."""
    by_name = {s["name"]: s for s in styles}
    for name in names:
        if name not in by_name:
            raise KeyError(name)
        prompt = merge_prompts(by_name[name]["prompt"], prompt)
        negative_prompt = merge_prompts(by_name[name]["negative_prompt"], negative_prompt)
    return prompt, negative_prompt


def save_style(path: str, name: str, prompt: str, negative_prompt: str) -> list[dict[str, str]]:
    """Add (or replace, keeping its place) the style ``name`` in the styles file and write the whole file
    atomically (a temporary file beside it, then a rename: a reader never sees half a file). Returns
    the styles now in the file. Raises ValueError for an empty name, OSError when it cannot be written."""
    name = (name or "").strip()
    if not name or name.startswith("#"):
        raise ValueError("Give the style a name (not starting with #).")
    file = Path(path)
    with _write_lock:
        styles = {s["name"]: s for s in read_styles(str(file))}
        styles[name] = {"name": name, "prompt": prompt or "", "negative_prompt": negative_prompt or ""}
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=FIELDNAMES)  # as A1111 writes it (utf-8-sig, CRLF)
        writer.writeheader()
        writer.writerows(styles.values())
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            with open(tmp, "w", encoding="utf-8-sig", newline="") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, file)
        finally:
            tmp.unlink(missing_ok=True)
    return list(styles.values())
