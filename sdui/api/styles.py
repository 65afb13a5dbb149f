"""A1111 prompt styles from the owner's ``--styles-file`` (``GET /sdapi/v1/prompt-styles``).

The file is A1111's ``styles.csv``: a header row ``name,prompt,negative_prompt`` (the old
``name,text`` form is read too), then one style per row; rows with no name or a name starting with
``#`` are skipped, and a later row replaces an earlier one of the same name, as A1111 reads it. The
file is read on each request (it is small, and the owner may edit it while the server runs); a
missing file means no styles, and a file that cannot be read lists none and says why in the log.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

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
