"""Where indexes saved by name live."""

from __future__ import annotations

import os
from pathlib import Path

from fewshot.errors import InputError


def index_dir() -> Path:
    """Where indexes saved by name live: ``$FEWSHOT_INDEX_DIR``, or ``indexes/`` in the working folder."""
    return Path(os.environ.get("FEWSHOT_INDEX_DIR", "indexes"))


def resolve_index_path(spec: str | Path) -> Path:
    """A bare name (``"news"``) means ``indexes/news``; a ``Path``, or anything with a path separator or a
    leading dot, is a path."""
    text = str(spec)
    if not text.strip():
        raise InputError("index name is empty")
    if isinstance(spec, Path) or os.sep in text or "/" in text or text.startswith("."):
        return Path(spec)
    return index_dir() / text
