"""Where indexes saved by name live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fewshot.errors import InputError


def index_dir() -> Path:
    """Where indexes saved by name live: ``$FEWSHOT_INDEX_DIR``, or ``indexes/`` in the working folder."""
    return Path(os.environ.get("FEWSHOT_INDEX_DIR", "indexes"))


def checked_name(name: Any) -> str:
    """``name`` if it is a plain folder name an index may save under in ``indexes/`` (no path in it)."""
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or os.sep in name:
        raise InputError(
            f"an index name is a folder name under indexes/, not a path: got {name!r}; save(path) takes a path"
        )
    return name


def resolve_index_path(spec: str | Path) -> Path:
    """A bare name (``"news"``) means ``indexes/news``; a ``Path``, or anything with a path separator or a
    leading dot, is a path."""
    text = str(spec)
    if not text.strip():
        raise InputError("index name is empty")
    if isinstance(spec, Path) or os.sep in text or "/" in text or text.startswith("."):
        return Path(spec)
    return index_dir() / text
