"""Models derived from a source model (ONNX exports, distilled static models), built once and cached on disk.

Layout under ``$FEWSHOT_HOME`` (default ``~/.cache/fewshot``)::

    onnx/<weights_sha256>-<variant>-v<N>/     an ONNX export: model.onnx, tokenizer.json, manifest.json
    static/<weights_sha256>-<variant>-v<N>/   a static model distilled with model2vec
    sources/<fingerprint>.json                a local model folder's content hash -> its weights_sha256

Folders are keyed by the SHA-256 of the source's loaded weights (:func:`fewshot.encoders.weights_sha256`), so a
tuned or replaced model never picks up another's export. Finding that hash needs the torch model loaded; the
``sources`` map remembers it for a local folder (keyed by a hash of the folder's files), so an encoder whose
export exists starts without importing torch at all.

Each folder is built in a temporary folder beside it and renamed into place, under a lock, so a process
killed midway leaves nothing half-written and two processes never build the same folder at once.

A folder's modification time is set each time a process opens it, and again at most every
:data:`USE_RENEWAL` seconds while a process keeps embedding with it (:class:`UseMark`: a service running
for months keeps the model it serves), so :func:`cache_entries` can tell when each was last used and
:func:`prune` (``fewshot cache prune``) can remove those not used for a while, and the temporary folders of
builds that were killed. Nothing else deletes them: a tuned body's export, made on first use, stays until
pruned (a saved model whose export was pruned exports its body again when next used).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewshot.errors import AccessError, CorruptFileError
from fewshot.storage.bundle import new_file_mode

BUILD_TIMEOUT = 1800.0  # seconds a process waits for another one building the same folder
_FINGERPRINTS: dict[tuple, str] = {}
_MANIFESTS: dict[tuple, dict[str, Any]] = {}
_FINGERPRINT_LOCK = threading.Lock()


def fewshot_home() -> Path:
    """The cache root: ``$FEWSHOT_HOME``, or ``~/.cache/fewshot``."""
    return Path(os.environ.get("FEWSHOT_HOME") or Path.home() / ".cache" / "fewshot").expanduser()


def make_cache_folder(path: Path) -> None:
    """Create ``path`` (a folder under the cache root) and its parents; :class:`AccessError` naming
    ``FEWSHOT_HOME`` when that cannot be done (the root, or a folder on the way, is a file or not writable)."""
    with cache_writes(path, making=True):
        path.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def cache_writes(path: Path, making: bool = False) -> Iterator[None]:
    """Turn a refusal to write ``path`` under the cache (permissions, a read-only file system, and when
    ``making`` the folder a file in the way) into an :class:`AccessError` naming ``FEWSHOT_HOME``."""
    refusals = (PermissionError, FileExistsError, NotADirectoryError) if making else (PermissionError,)
    try:
        yield
    except OSError as exc:
        if not isinstance(exc, refusals) and exc.errno != errno.EROFS:
            raise
        what = f"cannot make the model cache folder {path}" if making else f"cannot write {path} in the model cache"
        raise AccessError(
            f"{what} ({(exc.strerror or str(exc)).lower()}): the cache lives under FEWSHOT_HOME (now "
            f"{fewshot_home()}); set it to a folder this process may write"
        ) from None


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_fingerprint(folder: str | Path) -> str:
    """SHA-256 over the relative names and bytes of every file under ``folder``, or of one file (remembered per
    process while no file's size or modification time changes)."""
    root = Path(folder).resolve()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    stat_key = (str(root), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    with _FINGERPRINT_LOCK:
        if stat_key in _FINGERPRINTS:
            return _FINGERPRINTS[stat_key]
    h = hashlib.sha256()
    for p in files:
        h.update((p.name if p == root else p.relative_to(root).as_posix()).encode("utf-8") + b"\0")
        h.update(sha256_file(p).encode("ascii"))
    digest = h.hexdigest()
    with _FINGERPRINT_LOCK:
        _FINGERPRINTS[stat_key] = digest
    return digest


def _sources_file(folder: str | Path) -> Path:
    return fewshot_home() / "sources" / f"{folder_fingerprint(folder)}.json"


def _digest(record: dict[str, Any]) -> str:
    """The SHA-256 of a cache record's JSON, less its own digest (so that an edit by hand is seen)."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def known_source(folder: str | Path) -> dict[str, Any] | None:
    """What was recorded for a local model folder (or weights file) with exactly these bytes: its
    ``weights_sha256`` and any facts stored beside it (``dim``), or None (also for a record edited since it
    was written: the hash is then computed again)."""
    try:
        data = json.loads(_sources_file(folder).read_text(encoding="utf-8"))
        sha = data["weights_sha256"]
        if data["record_sha256"] != _digest(data):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return data if isinstance(sha, str) and len(sha) == 64 else None


def known_weights_sha(folder: str | Path) -> str | None:
    """The weights hash recorded for a local model folder (or weights file) with exactly these bytes, or None."""
    record = known_source(folder)
    return None if record is None else record["weights_sha256"]


def remember_weights_sha(folder: str | Path, sha: str, **facts: Any) -> None:
    """Record ``sha`` (and ``facts``, such as the vector size) for the local model folder ``folder`` as its
    files are now."""
    target = _sources_file(folder)
    record = {"folder": str(Path(folder).resolve()), "weights_sha256": sha, **facts}
    write_text_atomic(target, json.dumps({**record, "record_sha256": _digest(record)}) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    make_cache_folder(path.parent)
    with cache_writes(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The ``manifest.json`` of a derived-model folder whose files all match their recorded hashes, and which
    matches its own recorded hash (its settings, such as the maximum sequence length, edited by hand would
    change the vectors), else None.

    Files are hashed once per process while their size, modification time and inode stay the same.
    """
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if manifest["record_sha256"] != _digest(manifest):
            return None
        files = manifest["files"]
        stats = {name: (folder / name).stat() for name in files}
        key = (str(folder), tuple((n, st.st_size, st.st_mtime_ns, st.st_ino) for n, st in sorted(stats.items())))
        with _FINGERPRINT_LOCK:
            if _MANIFESTS.get(key) == manifest:
                return manifest
        for name, meta in files.items():
            if stats[name].st_size != meta["size"] or sha256_file(folder / name) != meta["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    with _FINGERPRINT_LOCK:
        _MANIFESTS[key] = manifest
    return manifest


def _damage(folder: Path) -> str:
    """What keeps :func:`read_manifest` from accepting ``folder``, in words."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        files = manifest["files"]
        if "record_sha256" not in manifest:
            return "it was written by an earlier fewshot, whose manifest.json records no SHA-256 of its own"
        if manifest["record_sha256"] != _digest(manifest):
            return "manifest.json was changed since it was written (it no longer matches its own SHA-256)"
    except FileNotFoundError:
        return "no manifest.json"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"manifest.json unreadable: {exc}"
    for name, meta in files.items():
        try:
            if (folder / name).stat().st_size != meta["size"]:
                return f"{name} is not the size its manifest records"
            if sha256_file(folder / name) != meta["sha256"]:
                return f"{name} no longer matches its manifest's SHA-256"
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, KeyError, TypeError) as exc:
            return f"{name}: {exc}"
    return "it changed while it was read"


def write_manifest(folder: Path, manifest: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """Write ``manifest.json`` into ``folder`` with the size and SHA-256 of each of ``files``."""
    manifest = {
        **manifest,
        "files": {n: {"size": (folder / n).stat().st_size, "sha256": sha256_file(folder / n)} for n in files},
    }
    manifest["record_sha256"] = _digest(manifest)
    write_text_atomic(folder / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def cached_build(target: Path, build: Callable[[Path], None]) -> dict[str, Any]:
    """The manifest of the derived-model folder ``target``, building it first if it is missing or damaged.

    ``build(tmp)`` fills an empty temporary folder and writes its manifest (:func:`write_manifest`); the
    folder is then renamed to ``target``. A lock on ``target`` makes a second process wait for the first
    one's build instead of repeating it; a damaged folder (a file that no longer matches the manifest) is
    moved aside and built again.
    """
    from fewshot.storage.lock import FolderLock

    manifest = read_manifest(target)
    if manifest is not None and mark_used(target):  # else pruned meanwhile: built again below
        return manifest
    make_cache_folder(target.parent)
    lock_folder = target.parent / ".locks" / target.name
    with cache_writes(lock_folder):
        lock = FolderLock(lock_folder, timeout=BUILD_TIMEOUT).acquire()
    try:
        manifest = read_manifest(target)  # built by another process while this one waited
        if manifest is not None:
            return manifest
        with cache_writes(target):
            if target.exists():  # damaged: set aside (only a folder this cache made), then build anew
                from fewshot.errors import warn_user

                warn_user(f"the cached model {target} is damaged ({_damage(target)}); building it again")
                trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.damaged-"))
                os.replace(target, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.building-"))
        try:
            build(tmp)
            os.chmod(tmp, new_file_mode(folder=True))  # mkdtemp makes it 0700
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        lock.release()
    manifest = read_manifest(target)
    if manifest is None:  # pragma: no cover - the build wrote an inconsistent folder
        raise CorruptFileError(f"{target}: the folder just built does not match its manifest")
    mark_used(target)
    return manifest


# -- what the cache holds, and pruning it ------------------------------------------------------------
KINDS = ("onnx", "static")  # the derived-model folders under the cache root
# the zero-shot label expansion's word vectors, one file an encoder (fewshot.classifiers.expansion), and the
# temporary file a process writes one through
VOCAB_NAME = re.compile(r"[0-9a-f]{20}-[0-9a-f]{12}\.npz")
VOCAB_TEMPORARY = re.compile(r"\.([0-9a-f]{20}-[0-9a-f]{12}\.npz)\.\d+\.\d+\.tmp")
# how this cache names a derived model: the source weights' SHA-256, a variant, a format version and, for
# int8 exports, the recipe ("<sha>-int8-v1.2"); any other folder there is the user's and is never touched
CACHE_NAME = re.compile(r"[0-9a-f]{64}-[a-z0-9]+-v\d+(\.[a-z0-9]+)?")
TEMPORARY = (".building-", ".damaged-", ".scratch-")  # infixes of the temporary folders a build makes
TEMPORARY_AGE = 3600.0  # seconds untouched after which a temporary folder is taken for a killed build's
USE_RENEWAL = 3600.0  # seconds between the marks of a folder a running process keeps embedding with


def mark_used(folder: Path) -> bool:
    """Record that ``folder`` is in use now (its modification time); False when it is gone (pruned since it
    was read). A read-only cache is left as it is."""
    try:
        os.utime(folder)
    except FileNotFoundError:
        return False
    except OSError:
        pass
    return True


class UseMark:
    """Marks ``folder`` used (:func:`mark_used`) when called, at most once every :data:`USE_RENEWAL` seconds:
    a runtime calls it on every batch it embeds, so the folder of a model a long-running process keeps
    using is never taken for unused by :func:`prune`, at the cost of a clock read a call."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.last = time.monotonic()  # opening the folder marked it

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last >= USE_RENEWAL:
            self.last = now
            mark_used(self.folder)


def _manifest_json(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest as written, without checking its files' hashes (listing a cache of models
    several hundred MB each must not read them all); None when missing or unreadable."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


@dataclass(frozen=True)
class CacheEntry:
    """One folder of the cache (a derived model, or the temporary folder of a build), or one file of word
    vectors (kind "vocab") or its temporary file."""

    path: Path
    kind: str  # "onnx", "static" or "vocab"
    size: int  # bytes of its files
    used: float  # when a process last opened it (or, for a temporary folder, last wrote it): a POSIX time
    temporary: bool  # a build's temporary folder, left by a process killed while building
    manifest: dict[str, Any] | None  # as written (hashes unchecked); None for a temporary folder or no manifest

    @property
    def target(self) -> str:
        """The name of the derived-model folder (or word-vector file) this one is (or was being built as)."""
        if self.kind == "vocab":
            found = VOCAB_TEMPORARY.fullmatch(self.path.name)
            return found.group(1) if found else self.path.name
        return _target_of(self.path.name) if self.temporary else self.path.name

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: path, kind, size, last use, and what the manifest says it is."""
        out: dict[str, Any] = {
            "path": str(self.path),
            "kind": self.kind,
            "size_bytes": self.size,
            "last_used": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.used)),
        }
        if self.temporary:
            out["temporary"] = True
        elif self.kind == "vocab":
            out["holds"] = "word vectors of the zero-shot label expansion"
        elif self.manifest is None:
            out["damaged"] = True
        else:
            m = self.manifest
            if "weights_sha256" in m:  # an ONNX export of these weights
                out["weights_sha256"], out["quantization"] = m["weights_sha256"], m.get("quantization")
            if isinstance(m.get("distilled_from"), dict):  # a static model distilled from a source model
                out["distilled_from"] = m["distilled_from"]
        return out


def _target_of(temporary_name: str) -> str:
    """The derived-model folder a build's temporary folder is for: ``.<target>.building-xyz`` -> target."""
    name = temporary_name[1:]
    for infix in TEMPORARY:
        if infix in name:
            return name[: name.index(infix)]
    return name


def _size(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def cache_entries(home: Path | None = None) -> list[CacheEntry]:
    """Every derived-model folder under ``home`` (default :func:`fewshot_home`) and every temporary folder of a
    build, least recently used first."""
    home = fewshot_home() if home is None else Path(home)
    if home.exists() and not home.is_dir():
        raise AccessError(f"the model cache root {home} (FEWSHOT_HOME) is a file, not a folder")
    entries = []
    for kind in KINDS:
        root = home / kind
        if not root.is_dir():
            continue
        for folder in root.iterdir():
            if not folder.is_dir() or folder.is_symlink() or folder.name == ".locks":
                continue
            temporary = folder.name.startswith(".") and any(t in folder.name for t in TEMPORARY)
            if folder.name.startswith(".") and not temporary:
                continue
            if not CACHE_NAME.fullmatch(_target_of(folder.name) if temporary else folder.name):
                continue  # not a folder this cache made (a model2vec model kept here by hand, notes...)
            try:
                used = folder.stat().st_mtime
            except OSError:  # removed meanwhile
                continue
            manifest = None if temporary else _manifest_json(folder)
            entries.append(CacheEntry(folder, kind, _size(folder), used, temporary, manifest))
    if (home / "vocab").is_dir():
        for file in (home / "vocab").iterdir():
            temporary = VOCAB_TEMPORARY.fullmatch(file.name) is not None
            if not (temporary or VOCAB_NAME.fullmatch(file.name)) or file.is_symlink():
                continue
            try:
                st = file.stat()
            except OSError:  # removed meanwhile
                continue
            entries.append(CacheEntry(file, "vocab", st.st_size, st.st_mtime, temporary, None))
    return sorted(entries, key=lambda e: e.used)


def remove_entry(entry: CacheEntry, unused_since: float = math.inf, dry_run: bool = False) -> bool:
    """Delete ``entry``'s folder unless a process is building it now (its build lock is held) or it was used
    after ``unused_since`` (a POSIX time; checked again under the lock, as a process may have opened it since
    it was listed); returns whether it was removed (with ``dry_run``, whether it would be). The folder is
    first renamed aside in one step, so no process finds it half-deleted."""
    from fewshot.errors import LockTimeoutError
    from fewshot.storage.lock import FolderLock

    if entry.kind == "vocab":  # a file, written whole in one step under its folder's lock
        try:
            with FolderLock(entry.path.parent, timeout=0):
                if entry.path.stat().st_mtime > unused_since:
                    return False
                if not dry_run:
                    entry.path.unlink()
        except (LockTimeoutError, FileNotFoundError):
            return False
        return True
    lock_folder = entry.path.parent / ".locks" / entry.target
    try:
        with FolderLock(lock_folder, timeout=0):
            try:
                if entry.path.stat().st_mtime > unused_since:
                    return False
            except FileNotFoundError:
                return False
            if dry_run:
                return True
            trash = Path(tempfile.mkdtemp(dir=entry.path.parent, prefix=f".{entry.target}.damaged-"))
            os.replace(entry.path, trash / "old")
    except LockTimeoutError:
        return False
    shutil.rmtree(trash, ignore_errors=True)  # what is left (a file in use elsewhere) goes at the next prune
    return True


def prune(older_than_days: float, home: Path | None = None, dry_run: bool = False) -> list[CacheEntry]:
    """Remove the derived models not used for ``older_than_days`` days (0: all of them) and the temporary
    folders of killed builds (untouched for :data:`TEMPORARY_AGE` seconds); returns what was removed (with
    ``dry_run``, what would be). A folder being built now is kept, and so is one opened while the prune ran.
    A process that loaded a model before it was pruned keeps it in memory; one that opens it afterwards
    builds it again. A folder that cannot be removed (permissions) is skipped and logged."""
    if not (isinstance(older_than_days, int | float) and older_than_days >= 0):
        from fewshot.errors import InputError

        raise InputError(f"older_than_days must be a number of days, 0 or more, got {older_than_days!r}")
    now = time.time()
    removed = []
    for entry in cache_entries(home):
        # a temporary folder may belong to a build under another name's lock: one still written to within
        # the hour may be in use
        unused_since = now - TEMPORARY_AGE if entry.temporary else now - older_than_days * 86400
        if entry.used > unused_since:
            continue
        try:
            if remove_entry(entry, unused_since, dry_run):
                removed.append(entry)
        except OSError as exc:
            logging.getLogger(__name__).warning("could not remove %s: %s", entry.path, exc)
    return removed
