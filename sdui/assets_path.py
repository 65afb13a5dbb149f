"""Where sdui's shipped data lives: the ``sdui.assets`` package (architecture config folders for
single-file checkpoints, the CLIP tokenizer).

The files stay in the repository's top-level ``assets/`` folder; ``pyproject.toml`` maps the
package ``sdui.assets`` to that folder (``package-dir``) and lists its files as package data, so a
wheel installs them as ``sdui/assets/``. Callers need a real folder (diffusers' and transformers'
``from_pretrained(folder)``), found once, in this order:

1. ``importlib.resources.files("sdui.assets")``: a real directory after ``pip install .`` or a
   wheel, and the checkout's ``assets/`` after ``pip install -e .`` (setuptools' editable finder
   maps ``sdui.assets`` there).
2. The same package imported from a zip (zipapp, zipimport): its files are copied once into
   ``<cache dir>/assets/<content hash>/`` and that copy is used.
3. Source tree only: ``sdui`` imported from a checkout that is not installed (``PYTHONPATH=.``,
   or an editable install made before the mapping existed) cannot import ``sdui.assets``, whose
   folder is not inside ``sdui/``; then the ``assets/`` folder beside this ``sdui/`` folder is
   used, provided a ``pyproject.toml`` sits next to both.

Every caller uses ``ASSETS_DIR`` / ``CONFIGS_DIR`` / ``TOKENIZER_DIR`` from here.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PACKAGE = "sdui.assets"


@functools.lru_cache(maxsize=1)
def assets_dir() -> Path:
    """The folder holding ``configs/<arch>/`` and ``tokenizer/`` (see the module docstring)."""
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError as e:
        if e.name != PACKAGE:
            raise
        return _source_tree_assets()
    if isinstance(root, Path):
        return root
    return _extract(root)


def _source_tree_assets() -> Path:
    checkout = Path(__file__).resolve().parent.parent
    folder = checkout / "assets"
    if (checkout / "pyproject.toml").is_file() and (folder / "configs").is_dir():
        return folder
    raise RuntimeError(
        f"sdui's data package '{PACKAGE}' is missing (sdui was imported from {Path(__file__).parent}): "
        "reinstall sdui (pip install .) or run from a complete source checkout")


def _extract(root: Traversable) -> Path:
    """Copy a non-filesystem package (e.g. inside a zip) once to a folder named by its content."""
    files: dict[str, bytes] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = prefix + child.name
            if child.is_dir():
                walk(child, name + "/")
            elif not child.name.endswith((".py", ".pyc")):
                files[name] = child.read_bytes()

    walk(root, "")
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    from .models.registry import cache_dir  # the one definition of the cache folder; imported only here

    parent = cache_dir() / "assets"
    target = parent / digest.hexdigest()[:16]
    if target.is_dir():
        return target
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=parent))
    for name, data in files.items():
        path = staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    try:
        os.replace(staging, target)
    except OSError:  # another process extracted the same content first
        if not target.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return target


ASSETS_DIR = assets_dir()
CONFIGS_DIR = ASSETS_DIR / "configs"
TOKENIZER_DIR = ASSETS_DIR / "tokenizer"
