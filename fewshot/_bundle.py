"""Atomic, pickle-free saves: a folder of data files plus a ``manifest.json`` that names and checks them.

A save writes every data file under a fresh name, then replaces ``manifest.json`` by one atomic rename, and
only then deletes the files the old manifest named. A process killed at any point leaves either the old
manifest with its intact files or the new one with its files: the previous save stays loadable. Loading
checks each file's size and SHA-256 against the manifest before any parser sees it, so a truncated or
altered file is reported as such instead of crashing FAISS or SQLite.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fewshot.errors import CorruptFileError, InputError

MANIFEST = "manifest.json"
FORMAT = "fewshot"
FORMAT_VERSION = 1

Writer = Callable[[Path], None]


def versions() -> dict[str, str]:
    """Versions of the pieces that decide whether a save can be read back."""
    import faiss
    import numpy

    from fewshot import __version__

    return {
        "fewshot": __version__,
        "numpy": numpy.__version__,
        "faiss": getattr(faiss, "__version__", "unknown"),
        "python": platform.python_version(),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    mpath = path / MANIFEST
    if not mpath.exists():
        return None
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{mpath} is not valid JSON ({exc}); the save is damaged") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptFileError(f"{mpath} is not a fewshot manifest")
    return manifest


def write_bundle(path: str | Path, kind: str, meta: dict[str, Any], files: dict[str, Writer]) -> Path:
    """Save a bundle of ``kind`` at ``path`` atomically.

    Parameters
    ----------
    path : folder to write; created if missing. An existing folder must hold a save of the same ``kind``
        (it is replaced) or be empty: fewshot never overwrites files it did not write.
    kind : what is saved, e.g. ``"index"`` or ``"classifier"``; checked again on load.
    meta : JSON-serialisable description stored in the manifest.
    files : logical file name -> function that writes that file to the path it is given.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot save to {path}: it is a file, not a folder")
    path.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(path)
    if old is None:
        foreign = [p.name for p in path.iterdir() if not p.name.startswith(".fewshot-")]
        if foreign:
            raise InputError(
                f"cannot save to {path}: the folder holds files fewshot did not write "
                f"({', '.join(sorted(foreign)[:3])}); choose an empty or new folder"
            )
    elif old.get("type") != kind:
        raise InputError(f"cannot save a {kind} to {path}: it holds a saved {old.get('type')}")

    token = secrets.token_hex(4)
    entries: dict[str, dict[str, Any]] = {}
    for logical, writer in files.items():
        stem, dot, suffix = logical.partition(".")
        real = f"{stem}-{token}{dot}{suffix}"
        target = path / real
        writer(target)
        with open(target, "rb+") as f:
            os.fsync(f.fileno())
        entries[logical] = {"name": real, "bytes": target.stat().st_size, "sha256": _sha256(target)}

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "type": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        **{k: v for k, v in meta.items() if k not in ("format", "format_version", "type", "files")},
        "files": entries,
    }
    tmp = path / f".fewshot-{token}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / MANIFEST)
    _fsync_dir(path)

    keep = {MANIFEST} | {e["name"] for e in entries.values()}
    for p in path.iterdir():
        if p.name not in keep:
            p.unlink(missing_ok=True)
    return path


def read_bundle(path: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, Path]]:
    """Open a bundle of ``kind``; return its manifest and the verified path of each logical file."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no saved {kind} at {path}")
    manifest = _read_manifest(path)
    if manifest is None:
        raise CorruptFileError(f"{path} is not a fewshot save: it has no {MANIFEST}")
    if manifest.get("type") != kind:
        raise CorruptFileError(f"{path} holds a saved {manifest.get('type')}, not a {kind}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CorruptFileError(
            f"{path} was written by a newer fewshot (format {manifest['format_version']}); upgrade to read it"
        )
    out: dict[str, Path] = {}
    for logical, entry in manifest.get("files", {}).items():
        p = path / entry["name"]
        if not p.exists():
            raise CorruptFileError(f"{path}: file {entry['name']} ({logical}) named in the manifest is missing")
        size = p.stat().st_size
        if size != entry["bytes"]:
            raise CorruptFileError(
                f"{p} is {size} bytes but the manifest says {entry['bytes']}: the file is truncated or altered"
            )
        if _sha256(p) != entry["sha256"]:
            raise CorruptFileError(f"{p} fails its checksum: the file is corrupt or was altered")
        out[logical] = p
    return manifest, out
