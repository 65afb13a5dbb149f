"""A1111 prompt styles for ``GET /sdapi/v1/prompt-styles``: the reader lives in ``sdui.styles`` (the UI's
Styles picker reads the same file)."""

from __future__ import annotations

from ..styles import read_styles

__all__ = ["read_styles"]
