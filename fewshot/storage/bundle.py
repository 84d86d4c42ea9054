"""Atomic, pickle-free saves: a folder of data files plus a ``manifest.json`` that names and checks them.

A save, holding the folder's writer lock (:class:`~fewshot.storage.lock.FolderLock`), writes every data file
under a fresh name, then replaces ``manifest.json`` by one atomic rename, and only then deletes the files the
old manifest named (and leftovers of saves that were killed before their rename). A process killed at any
point leaves either the old manifest with its intact files or the new one with its files, so the previous
save stays loadable, and a folder left by a killed first save is taken over by the next save.

The manifest carries a SHA-256 of its own content and the size and SHA-256 of every file, so an altered
manifest (two class names swapped) or a truncated file is reported instead of giving wrong answers. Loading
reads each file once into memory and checks it there; readers take no lock: a file a reader has opened
stays readable when a writer deletes it, and a reader that finds a file gone re-reads the manifest.

Each save has a ``save_id``. An object loaded from a folder remembers it, and its next save there is refused
with :class:`~fewshot.errors.ConcurrentWriteError` if another writer has saved in between (no lost update).

Only files fewshot wrote are ever deleted: the names in a manifest, ``<stem>-<8 hex digits><suffix>`` files
of the logical names being saved, and ``.fewshot-*.tmp``; anything else in the folder is left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import secrets
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fewshot.errors import AccessError, ConcurrentWriteError, CorruptFileError, InputError, SaveNotFoundError
from fewshot.storage.lock import LOCK_NAME, FolderLock

MANIFEST = "manifest.json"
FORMAT = "fewshot"
FORMAT_VERSION = 2
READ_RETRIES = 20  # a reader re-reads the manifest at most this often while writers replace files under it

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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON without its own ``checksum`` field."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return sha256_bytes(blob.encode("utf-8"))


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The checked manifest of the save in ``path``, or None when the folder holds none."""
    mpath = Path(path) / MANIFEST
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CorruptFileError(f"{mpath} is a folder, not a manifest; the save is damaged") from None
    except PermissionError:
        raise AccessError(f"cannot read {mpath}: permission denied") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{mpath} is not valid JSON ({exc}); the save is damaged") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptFileError(f"{mpath} is not a fewshot manifest")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CorruptFileError(f"{mpath} was written by a newer fewshot (format {version}); upgrade to read it")
    if version < FORMAT_VERSION:
        raise CorruptFileError(
            f"{mpath} was written by an older fewshot (format {version}; this one reads {FORMAT_VERSION}); "
            "fit or build it again"
        )
    if manifest.get("checksum") != manifest_checksum(manifest):
        raise CorruptFileError(f"{mpath} fails its checksum: the manifest was edited or damaged")
    return manifest


def _ours(name: str, stems: set[tuple[str, str]]) -> bool:
    """Whether ``name`` is a file a fewshot save of these logical names may have left behind."""
    if name.startswith(".fewshot-") and name.endswith(".tmp"):
        return True
    for stem, suffix in stems:
        if re.fullmatch(re.escape(stem) + r"-[0-9a-f]{8}" + re.escape(suffix), name):
            return True
    return False


def _split(logical: str) -> tuple[str, str]:
    stem, dot, suffix = logical.partition(".")
    return stem, dot + suffix


def _umask() -> int:
    try:  # Linux reports it without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(folder: bool = False) -> int:
    """The permission bits ``open()`` (or ``mkdir``) gives a new file (folder) under this process's umask:
    what a saved file gets however its writer made it, so a model saved by one user can be served by another
    as any file of theirs could."""
    return (0o777 if folder else 0o666) & ~_umask()


def check_folder_place(path: Path, failing: str) -> None:
    """Raise unless a folder can be written at ``path``: it is a folder or does not exist, and the nearest
    folder that exists (itself, or the closest above it) is a folder this process may write in.
    ``failing`` starts the message ("cannot save to PATH")."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{failing}: it is a file, not a folder")
    nearest = path  # the folder itself, or the nearest one that exists above it
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise InputError(f"{failing}: {nearest} is a file, not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise AccessError(f"{failing}: {nearest} is not writable")
    if nearest != path:  # folders to make: try one, as access() says yes to root even in /proc or /sys
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".fewshot-probe-", dir=nearest))
        except OSError as exc:
            raise AccessError(f"{failing}: no folder can be made in {nearest} ({exc.strerror})") from None


def check_target(path: str | Path, bundle_type: str, logical_names: list[str] | tuple[str, ...] = ()) -> None:
    """Raise :class:`InputError` unless a ``bundle_type`` save can be written to ``path``.

    Callers run it before expensive work (encoding), so that a folder that cannot take the save is
    reported first. A folder can take a save when it is new or empty, holds a save of the same type, or
    holds only files a killed fewshot save left behind.
    """
    path = Path(path)
    check_folder_place(path, f"cannot save to {path}")
    if not path.exists():
        return
    old = read_manifest(path)
    if old is not None:
        if old.get("type") != bundle_type:
            raise InputError(f"cannot save {_a(bundle_type)} to {path}: it holds a saved {old.get('type')}")
        return
    stems = {_split(n) for n in logical_names}
    foreign = [p.name for p in path.iterdir() if p.name != LOCK_NAME and not _ours(p.name, stems)]
    if foreign:
        raise InputError(
            f"cannot save to {path}: the folder holds files fewshot did not write "
            f"({', '.join(sorted(foreign)[:3])}); choose an empty or new folder"
        )


def _json_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with numpy scalars and arrays as plain JSON values (a parameter given as ``np.int64(3)``);
    :class:`InputError` for what JSON cannot store (NaN, infinity, other objects)."""

    def plain(value: Any) -> Any:
        if hasattr(value, "item") and getattr(value, "shape", None) == ():
            return value.item()  # a numpy scalar
        if hasattr(value, "tolist"):
            return value.tolist()
        raise TypeError(f"{type(value).__name__} {value!r}")

    try:
        return json.loads(json.dumps(meta, default=plain, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot save: the description holds a value JSON cannot store ({exc})") from exc


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def write_bundle(
    path: str | Path,
    bundle_type: str,
    meta: dict[str, Any],
    files: dict[str, Writer],
    *,
    expect_save_id: str | None = None,
    lock: FolderLock | None = None,
    owned: tuple[str, ...] = (),
    still_current: Callable[[dict[str, Any]], str | None] | None = None,
) -> dict[str, Any]:
    """Save a bundle of ``bundle_type`` at ``path`` atomically; return the new manifest.

    Parameters
    ----------
    path : folder to write; created if missing (see :func:`check_target` for what it may already hold).
    bundle_type : what is saved, e.g. ``"index"`` or ``"classifier"``; checked again on load.
    meta : JSON-serialisable description stored in the manifest.
    files : logical file name (``"index.faiss"``) -> function that writes that file to the path it is given.
    expect_save_id : the ``save_id`` of the save this object was loaded from (or last wrote) in this
        folder; if the folder now holds another, :class:`ConcurrentWriteError` is raised and nothing is
        written. None: replace whatever save of this type is there.
    lock : the folder's lock when the caller already holds it (a load-modify-save); otherwise it is
        taken for the duration of the write.
    owned : logical names of other files this bundle type writes beside its save (a journal): their
        ``<stem>-<8 hex digits><suffix>`` files are fewshot's, and are removed when they belong to an old save.
    still_current : called under the lock with the folder's manifest when there is one; a message it returns
        (writes the caller has not seen, such as a grown journal) is raised as :class:`ConcurrentWriteError`.
    """
    path = Path(path)
    meta = _json_meta(meta)  # before anything is written: a value JSON cannot hold leaves no stray file
    own_lock = lock is None or not lock.held
    lock = FolderLock(path) if own_lock else lock
    names = [*files, *owned]
    if own_lock:
        check_target(path, bundle_type, names)  # before creating anything
        lock.acquire()
    try:
        check_target(path, bundle_type, names)
        old = read_manifest(path)
        if expect_save_id is not None and old is not None and old.get("save_id") != expect_save_id:
            raise ConcurrentWriteError(
                f"{path} was saved by another writer after this {bundle_type} was loaded from or saved to it; load "
                "it again and redo the change (or hold the folder's lock for the whole load-modify-save, as update() "
                "does)"
            )
        if still_current is not None and old is not None:
            problem = still_current(old)
            if problem:
                raise ConcurrentWriteError(f"{path}: {problem}")
        token = secrets.token_hex(4)
        entries: dict[str, dict[str, Any]] = {}
        for logical, writer in files.items():
            stem, suffix = _split(logical)
            real = f"{stem}-{token}{suffix}"
            target = path / real
            writer(target)
            os.chmod(target, new_file_mode())  # a writer that makes its file through a temporary one gets 0600
            with open(target, "rb+") as f:
                os.fsync(f.fileno())
            entries[logical] = {"name": real, "bytes": target.stat().st_size, "sha256": _sha256_file(target)}

        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "type": bundle_type,
            "save_id": token,
            "generation": int(old.get("generation", 0)) + 1 if old else 1,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": versions(),
            **{k: v for k, v in meta.items() if k not in _RESERVED},
            "files": entries,
        }
        manifest["checksum"] = manifest_checksum(manifest)
        tmp = path / f".fewshot-{token}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path / MANIFEST)
        fsync_dir(path)

        keep = {e["name"] for e in entries.values()}
        stale = {e["name"] for e in (old or {}).get("files", {}).values()} - keep
        stems = {_split(n) for n in names} | {_split(n) for n in (old or {}).get("files", {})}
        for p in path.iterdir():
            if p.name in keep or p.name in (MANIFEST, LOCK_NAME):
                continue
            if p.name in stale or _ours(p.name, stems):
                p.unlink(missing_ok=True)
        return manifest
    finally:
        if own_lock:
            lock.release()


_RESERVED = ("format", "format_version", "type", "files", "save_id", "generation", "checksum", "created", "versions")


def read_bundle(path: str | Path, bundle_type: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Open a bundle of ``bundle_type``: its checked manifest and the checked bytes of each logical file.

    A file that a concurrent save deleted after the manifest was read makes the reader start again from the
    new manifest; a file missing from an unchanged manifest is corruption.
    """
    path = Path(path)
    if not path.is_dir():
        raise SaveNotFoundError(f"no saved {bundle_type} at {path}")
    for _ in range(READ_RETRIES):
        manifest = read_manifest(path)
        if manifest is None:
            raise CorruptFileError(f"{path} is not a fewshot save: it has no {MANIFEST}")
        if manifest.get("type") != bundle_type:
            raise CorruptFileError(f"{path} holds a saved {manifest.get('type')}, not {_a(bundle_type)}")
        out: dict[str, bytes] = {}
        retry = False
        for logical, entry in manifest["files"].items():
            p = path / entry["name"]
            try:
                data = p.read_bytes()
            except PermissionError:
                raise AccessError(f"cannot read {p} ({logical}): permission denied") from None
            except IsADirectoryError:
                raise CorruptFileError(f"{p} ({logical}) is a folder, not a file; the save is damaged") from None
            except FileNotFoundError:
                again = read_manifest(path)
                if again is not None and again.get("save_id") != manifest.get("save_id"):
                    retry = True  # a writer replaced the save while we read it
                    break
                raise CorruptFileError(
                    f"{path}: file {entry['name']} ({logical}) named in the manifest is missing"
                ) from None
            if len(data) != entry["bytes"]:
                raise CorruptFileError(
                    f"{p} is {len(data)} bytes but the manifest says {entry['bytes']}: the file is truncated or altered"
                )
            if sha256_bytes(data) != entry["sha256"]:
                raise CorruptFileError(f"{p} fails its checksum: the file is corrupt or was altered")
            out[logical] = data
        if not retry:
            return manifest, out
    raise CorruptFileError(f"{path} kept changing while it was read ({READ_RETRIES} saves in a row); try again")
