"""What the server holds: encoders, models and indexes under its root, loaded on first use and kept.

Encoders are shared: one :class:`~fewshot.serve.batching.CoalescingEncoder` per encoder identity (the
fields of :data:`fewshot.encoders.IDENTITY_KEYS`), whatever number of models and indexes use it, so their
requests share model calls.

Durability. A model fit or an added example is saved (``save``: atomic, fsynced) before the call returns.
An index is first loaded read-only, without its lock, so that other writers (the CLI, a script) are not held
off by searches; the copy is reloaded when the folder changes. Its first write opens it with
:meth:`EmbeddingIndex.open`, which holds the folder's writer lock and appends every add and removal to a
journal on disk (fsynced) before it returns; a restart after ``kill -9`` replays the journal over the last
save. Concurrent additions to one index are merged (:class:`GroupCommit`) into one journal write. After
``release_after_s`` with no write the lock is let go (the journal stays, as a reader's load replays it) and
the index is served read-only again, until its next write opens it once more; one that took the lock for
a request that wrote nothing (refused, or out of its time while it encoded) lets go after
:data:`UNUSED_LOCK_GRACE_S` instead. A second process on the same root finds the lock held: it serves the
index read-only, reloading it when the folder changes, and answers its writes 409 until the lock is free.

Every method here is blocking; the app calls them from its worker threads, never on the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.classifiers import FewShotClassifier, ZeroShotClassifier
from fewshot.encoders import IDENTITY_KEYS, Encoder, check_same_encoder, encoder_from_identity, identity_fingerprint
from fewshot.errors import ConcurrentWriteError, CorruptFileError, FewShotError, InputError, LockTimeoutError
from fewshot.index import EmbeddingIndex, journal
from fewshot.index.embedding_index import UNFINISHED, check_readable, holds_index
from fewshot.serve.batching import CoalescingEncoder, GroupCommit, begin_write, out_of_time
from fewshot.serve.errors import ApiError, DeadlineExceeded, not_found
from fewshot.serve.settings import NAME_RE, ServeSettings
from fewshot.storage import FolderLock, read_manifest
from fewshot.storage.bundle import fsync_dir
from fewshot.storage.lock import LOCK_NAME

UNUSED_LOCK_GRACE_S = 2.0  # an index lock taken for a write that never came is let go this long after
RELEASE_CHECK_S = 1.0  # the releaser looks for index locks to let go this often (at most)
TRASH_PREFIX = ".deleted-"  # a deleted model or index is renamed to this (hidden, never a valid name), then removed


def check_name(name: str, kind: str) -> str:
    """``name`` if it is a valid model or index name (:data:`fewshot.serve.settings.NAME_PATTERN`), else a 400."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ApiError(
            400,
            "bad_name",
            f"{kind} name {name!r} is not allowed: use 1 to 64 letters, digits, '_', '.' or '-', not starting "
            "with '.' or '-'",
            "name",
        )
    return name


log = logging.getLogger("fewshot.serve")


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _folder(root: Path, name: str, kind: str) -> Path:
    """``root/name``, refused when something other than a folder (a stray file) holds the name."""
    folder = root / name
    if folder.exists() and not folder.is_dir():
        raise ApiError(
            500, "storage_access", f"{folder} is a file, not a {kind}'s folder; remove it from the server's root"
        )
    return folder


def _manifest_of(folder: Path, kind: str, types: tuple[str, ...]) -> dict[str, Any] | None:
    """The manifest of the save in ``folder`` (None when it holds none); a save of another type than
    ``types`` (an index copied into models/) is refused (409), so that the routes of a ``kind`` never read,
    delete or replace what is not theirs."""
    manifest = read_manifest(folder)
    if manifest is not None and manifest.get("type") not in types:
        raise ApiError(
            409,
            "wrong_type",
            f"{folder} holds a saved {manifest.get('type')}, not a {kind}; nothing was changed",
            "name",
        )
    return manifest


def _folder_signature(folder: Path) -> tuple:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
        # the lock file changes when a writer takes the lock (it names itself there), not when the index does
        return tuple(
            (e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file() and e.name != LOCK_NAME
        )
    except FileNotFoundError:
        return ()


class _Guard:
    """Many users of an entry at once, or one replacing or deleting it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._users = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True
            while self._users:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


@dataclass(eq=False)
class IndexEntry:
    index: EmbeddingIndex
    writable: bool
    commit: GroupCommit
    signature: tuple = ()
    checked: float = 0.0
    closed: bool = False
    guard: _Guard = field(default_factory=_Guard)
    written: float = field(default_factory=time.monotonic)  # last write (held entries let go when idle)
    wrote: bool = False  # a write request has ended well since the lock was taken


@dataclass(eq=False)
class ModelEntry:
    model: FewShotClassifier | ZeroShotClassifier
    kind: str
    signature: tuple[int, int, int] | None


def _saved_folders(folder: Path, unreadable: dict[str, Any] | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each well-named subfolder of ``folder`` that holds a save, with its manifest, in name order; a folder
    whose manifest cannot be read gives ``unreadable`` (skipped when None)."""
    if not folder.is_dir():
        return
    for sub in sorted(folder.iterdir()):
        if not sub.is_dir() or not NAME_RE.fullmatch(sub.name):
            continue
        try:
            manifest = read_manifest(sub)
        except FewShotError:
            manifest = unreadable
        if manifest is not None:
            yield sub, manifest


class Registry:
    """Encoders, models and indexes of one root folder (see the module docstring)."""

    def __init__(
        self, settings: ServeSettings, observer: Callable[[CoalescingEncoder, int, int], None] | None = None
    ) -> None:
        self.settings = settings
        self.observer = observer
        self._lock = threading.RLock()  # guards the dicts below, never held across a load
        self._encoders: dict[str, CoalescingEncoder] = {}
        self._spec_keys: dict[str, str] = {}
        self._models: dict[str, ModelEntry] = {}
        self._indexes: dict[str, IndexEntry] = {}
        self._name_locks: dict[tuple[str, str], threading.RLock] = {}
        self._zeroshot: OrderedDict[str, ZeroShotClassifier] = OrderedDict()
        self.closed = False
        self._stop = threading.Event()
        self._releaser: threading.Thread | None = None

    # -- encoders ---------------------------------------------------------------------------------------
    @staticmethod
    def encoder_key(identity: dict[str, Any]) -> str:
        return identity_fingerprint({k: identity.get(k) for k in IDENTITY_KEYS})

    def _wrap(self, base: Encoder, key: str) -> CoalescingEncoder:
        with self._lock:
            found = self._encoders.get(key)
            if found is None:
                found = self._encoders[key] = CoalescingEncoder(
                    base,
                    max_batch_size=self.settings.max_batch_size,
                    max_wait_ms=self.settings.max_wait_ms,
                    gap_ms=self.settings.batch_gap_ms,
                    observer=self.observer,
                )
            return found

    def encoder_for_spec(self, spec: str, field_name: str = "encoder") -> CoalescingEncoder:
        """The shared encoder for a spec a client named (text, image, conse or one the operator allowed)."""
        if spec not in self.settings.encoders:
            raise ApiError(
                400,
                "bad_encoder",
                f"encoder {spec!r} is not offered by this server; choose one of {', '.join(self.settings.encoders)}",
                field_name,
            )
        with self._lock:
            key = self._spec_keys.get(spec)
            if key is not None:
                return self._encoders[key]
        from fewshot.cli.common import make_encoder

        base = make_encoder(spec, images=False)
        key = self.encoder_key(base.identity)  # loads the weights (once per process: they are shared)
        wrapper = self._wrap(base, key)
        with self._lock:
            self._spec_keys[spec] = key
        return wrapper

    def encoder_for_identity(self, identity: dict[str, Any]) -> CoalescingEncoder:
        """The shared encoder that a save's recorded identity describes (recreated and checked once)."""
        key = self.encoder_key(identity)
        with self._lock:
            found = self._encoders.get(key)
        if found is not None:
            return found
        base = encoder_from_identity(identity)
        check_same_encoder(identity, base, "the saved model or index")
        return self._wrap(base, key)

    def encoders(self) -> dict[str, CoalescingEncoder]:
        with self._lock:
            return dict(self._encoders)

    def _name_lock(self, kind: str, name: str) -> threading.RLock:
        with self._lock:
            return self._name_locks.setdefault((kind, name), threading.RLock())

    # -- models -----------------------------------------------------------------------------------------
    def model_folder(self, name: str) -> Path:
        return _folder(self.settings.models_dir, check_name(name, "model"), "model")

    def list_models(self) -> list[dict[str, Any]]:
        out = []
        for sub, manifest in _saved_folders(self.settings.models_dir, unreadable={"type": "unreadable"}):
            if manifest.get("type") not in ("classifier", "zeroshot", "unreadable"):
                continue
            with self._lock:
                loaded = sub.name in self._models
            out.append(
                {"name": sub.name, "type": manifest["type"], "loaded": loaded, "created": manifest.get("created")}
            )
        return out

    def _load_model(self, folder: Path) -> ModelEntry:
        signature = _signature(folder / "manifest.json")
        manifest = _manifest_of(folder, "model", ("classifier", "zeroshot"))
        if manifest is None:
            raise not_found("model", folder.name)
        cls = FewShotClassifier if manifest["type"] == "classifier" else ZeroShotClassifier
        identity = manifest.get("encoder") or {}
        if identity.get("tuned_from") is not None:
            # a contrastively tuned body travels with the model: load it once, then share it like any other
            key = self.encoder_key(identity)
            with self._lock:
                wrapper = self._encoders.get(key)
            if wrapper is None:
                wrapper = self._wrap(cls.load(folder).encoder_, key)
        else:
            wrapper = self.encoder_for_identity(identity)
        return ModelEntry(cls.load(folder, encoder=wrapper), manifest["type"], signature)

    def model(self, name: str) -> ModelEntry:
        """The model saved under ``models/<name>/``, loaded on first use, reloaded when its save changes."""
        folder = self.model_folder(name)
        with self._lock:
            entry = self._models.get(name)
        current = _signature(folder / "manifest.json")
        if current is None:
            with self._lock:
                self._models.pop(name, None)
            raise not_found("model", name)
        if entry is not None and entry.signature == current:
            return entry
        with self._name_lock("model", name):
            with self._lock:
                entry = self._models.get(name)
            if entry is not None and entry.signature == _signature(folder / "manifest.json"):
                return entry
            entry = self._load_model(folder)
            with self._lock:
                self._models[name] = entry
            return entry

    def fit_model(self, name: str, inputs: list[Any], labels: list[Any], spec: str, **params: Any) -> ModelEntry:
        """Fit a few-shot classifier and save it under ``models/<name>/`` (replacing one there) before returning."""
        folder = self.model_folder(name)
        encoder = self.encoder_for_spec(spec)
        clf = FewShotClassifier(encoder=encoder, **params).fit(inputs, labels)
        with self._name_lock("model", name):
            begin_write()  # a request already answered (timed out) saves nothing; from here it is waited for
            self.settings.models_dir.mkdir(parents=True, exist_ok=True)
            if self._save_state(folder, "model", ("classifier", "zeroshot")) == "damaged":  # replaced, damaged or not
                self._remove_folder(folder)
            clf.save(folder, overwrite=True)
            entry = ModelEntry(clf, "classifier", _signature(folder / "manifest.json"))
            with self._lock:
                self._models[name] = entry
        return entry

    def add_examples(self, name: str, inputs: list[Any], labels: list[Any]) -> ModelEntry:
        """Add labelled examples (a new label is a new class) to a saved model, saved before returning.

        The change is made on a copy freshly loaded from disk and swapped in after its save, so predictions
        never see an unsaved change, and a save by another process in between is redone on top of it.
        """
        folder = self.model_folder(name)
        with self._name_lock("model", name):
            for attempt in range(3):
                entry = self.model(name)
                if entry.kind != "classifier":
                    raise ApiError(
                        409, "wrong_model_type", f"model {name!r} is zero-shot; it takes no examples", "name"
                    )
                fresh = self._load_model(folder)
                fresh.model.add_examples(inputs, labels)
                begin_write()
                try:
                    fresh.model.save(folder)
                except ConcurrentWriteError:
                    if attempt == 2:
                        raise
                    continue
                fresh.signature = _signature(folder / "manifest.json")
                with self._lock:
                    self._models[name] = fresh
                return fresh
        raise AssertionError("unreachable")  # pragma: no cover

    def delete_model(self, name: str) -> None:
        folder = self.model_folder(name)
        with self._name_lock("model", name):
            if self._save_state(folder, "model", ("classifier", "zeroshot")) is None:
                raise not_found("model", name)
            self._remove_folder(folder)
            with self._lock:
                self._models.pop(name, None)

    @staticmethod
    def _save_state(folder: Path, kind: str, types: tuple[str, ...]) -> str | None:
        """None when ``folder`` holds no save, "damaged" when its manifest can no longer be read (deleting it,
        or fitting a model of its name, clears it, as nothing else through the API can), else "ok"; a save
        of another type is refused (:func:`_manifest_of`)."""
        try:
            return None if _manifest_of(folder, kind, types) is None else "ok"
        except CorruptFileError:
            return "damaged"

    def _remove_folder(self, folder: Path) -> None:
        """Take the folder's writer lock, rename it out of sight (atomic), then delete it."""
        trash = folder.parent / f"{TRASH_PREFIX}{folder.name}-{secrets.token_hex(4)}"
        with FolderLock(folder, self.settings.lock_timeout_s):
            begin_write()  # the lock is taken: from here the removal is waited for
            os.rename(folder, trash)
            fsync_dir(folder.parent)
        shutil.rmtree(trash, ignore_errors=True)

    # -- zero-shot ----------------------------------------------------------------------------------------
    def zeroshot(
        self,
        labels: Any,
        spec: str,
        abstain: float | None,
        expand: str = "auto",
        frame: str = "auto",
        pool: str = "soft",
    ) -> ZeroShotClassifier:
        """A zero-shot classifier for these labels and settings, kept (up to ``zeroshot_cache`` of them) for
        reuse."""
        import json

        if len(labels) > self.settings.max_labels:
            raise ApiError(
                413,
                "too_many_labels",
                f"{len(labels)} labels; this server takes at most {self.settings.max_labels}",
                "labels",
            )
        if not labels:
            raise ApiError(400, "bad_input", "labels is empty; give at least one label", "labels")
        if spec == "image":
            spec = "conse"  # label text meets images through ConSE
        encoder = self.encoder_for_spec(spec)
        pairs = list(labels.items()) if isinstance(labels, dict) else list(labels)  # the order is the classes' order
        key = json.dumps([pairs, self.encoder_key(encoder.identity), abstain, expand, frame, pool])
        with self._lock:
            found = self._zeroshot.get(key)
            if found is not None:
                self._zeroshot.move_to_end(key)
                return found
        zs = ZeroShotClassifier(labels, encoder=encoder, abstain=abstain, expand=expand, frame=frame, pool=pool).fit()
        with self._lock:
            self._zeroshot[key] = zs
            while len(self._zeroshot) > self.settings.zeroshot_cache:
                self._zeroshot.popitem(last=False)
        return zs

    # -- indexes ----------------------------------------------------------------------------------------
    def index_folder(self, name: str) -> Path:
        return _folder(self.settings.indexes_dir, check_name(name, "index"), "index")

    def list_indexes(self) -> list[dict[str, Any]]:
        out = []
        for sub, manifest in _saved_folders(self.settings.indexes_dir, unreadable={"type": "unreadable"}):
            if manifest.get("type") == "unreadable":  # a damaged save: listed, as models are, so it can be deleted
                out.append({"name": sub.name, "loaded": False, "count": None, "unreadable": True})
                continue
            if manifest.get("type") != "index" or manifest.get(UNFINISHED):  # a killed first save: no index
                continue
            with self._lock:
                entry = self._indexes.get(sub.name)
            count = len(entry.index) if entry is not None else _saved_count(sub, manifest)
            out.append({"name": sub.name, "loaded": entry is not None, "count": count})
        return out

    def _commit_for(self, index: EmbeddingIndex) -> GroupCommit:
        def one(E: np.ndarray, ids: Any, labels: Any, metadata: Any, items: Any) -> np.ndarray:
            return index.add_embeddings(E, ids=ids, labels=labels, metadata=metadata, items=items)

        def many(batch: list[dict[str, Any]]) -> list[np.ndarray]:
            E = np.vstack([b["E"] for b in batch])
            ids = None if batch[0]["ids"] is None else [i for b in batch for i in b["ids"]]
            out = index.add_embeddings(
                E,
                ids=ids,
                labels=[x for b in batch for x in b["labels"]],
                metadata=[x for b in batch for x in b["metadata"]],
                items=[x for b in batch for x in b["items"]],
            )
            parts, start = [], 0
            for b in batch:
                parts.append(out[start : start + len(b["E"])])
                start += len(b["E"])
            return parts

        return GroupCommit(one, many, lambda args: args["ids"] is None)

    def _open_index(self, folder: Path, timeout: float | None) -> IndexEntry:
        """Open an index durably (holding its lock), or read-only when another process holds it and
        ``timeout`` passes; with ``timeout`` None, read-only (a search takes no lock, so the CLI and the
        library can write to an index the server has only searched)."""
        manifest = _manifest_of(folder, "index", ("index",))
        if manifest is None:
            raise not_found("index", folder.name)
        identity = manifest.get("encoder")
        encoder = self.encoder_for_identity(identity) if identity is not None else None
        signature = _folder_signature(folder)
        index = None
        if timeout is not None:
            with contextlib.suppress(LockTimeoutError):  # held by another process: read-only
                index = EmbeddingIndex.open(folder, encoder=encoder, timeout=timeout)
        writable = index is not None
        if index is None:
            index = EmbeddingIndex.load(folder, encoder=encoder)
        return IndexEntry(index, writable, self._commit_for(index), signature, time.monotonic())

    @contextmanager
    def index(self, name: str, write: bool = False) -> Iterator[IndexEntry]:
        """Use the index saved under ``indexes/<name>/`` (loaded on first use and kept).

        ``write=True`` needs the folder's lock: when another process holds it for longer than
        ``lock_timeout_s``, :class:`~fewshot.errors.LockTimeoutError` (answered 409).
        """
        folder = self.index_folder(name)
        while True:
            entry = self._index_entry(name, folder, write)
            with entry.guard.shared():
                if entry.closed or (write and not entry.writable):
                    continue  # replaced, deleted or let go meanwhile: look again
                failed = True
                try:
                    yield entry
                    failed = False
                finally:
                    if write:
                        self._written(entry, failed)
                return

    def _written(self, entry: IndexEntry, failed: bool) -> None:
        """Note the end of a write request: it keeps the lock for ``release_after_s`` more, unless no request
        has written since the lock was taken (this one was refused, or ran out of time while it encoded), when
        the releaser lets go after :data:`UNUSED_LOCK_GRACE_S` so that other writers are not held off for it."""
        if not failed:
            entry.wrote = True
        if entry.wrote:
            entry.written = time.monotonic()
        else:
            entry.written = time.monotonic() - max(self.settings.release_after_s - UNUSED_LOCK_GRACE_S, 0.0)

    def _index_entry(self, name: str, folder: Path, write: bool) -> IndexEntry:
        with self._lock:
            entry = self._indexes.get(name)
        if entry is not None and entry.writable:
            if (folder / "manifest.json").exists():  # one stat: still on disk
                return entry
            self._forget_removed(name, entry)
            raise not_found("index", name)
        if entry is not None and not write and time.monotonic() - entry.checked < self.settings.refresh_s:
            return entry
        with self._name_lock("index", name):
            with self._lock:
                entry = self._indexes.get(name)
            if entry is not None and entry.writable:
                return entry
            if entry is not None and not write:
                if time.monotonic() - entry.checked < self.settings.refresh_s:
                    return entry
                if _folder_signature(folder) == entry.signature:
                    entry.checked = time.monotonic()
                    return entry
            if read_manifest(folder) is None:
                raise not_found("index", name)
            new = self._open_index(folder, self.settings.lock_timeout_s if write else None)
            if write and new.writable and out_of_time():  # it waited for the lock past its time: let go at once
                new.index.close(checkpoint=False)
                raise DeadlineExceeded("the request ran out of time waiting for the index's lock; nothing was written")
            if write and not new.writable:
                raise LockTimeoutError(
                    f"index {name!r} is held by another writer process; this server can search it but not change "
                    f"it until that process lets go"
                )
            with self._lock:
                old = self._indexes.get(name)
                self._indexes[name] = new
            if old is not None:
                with old.guard.exclusive():
                    old.closed = True
            if new.writable:
                self._start_releaser()
            return new

    def _forget_removed(self, name: str, entry: IndexEntry) -> None:
        """Close an index whose folder was removed from disk while this server held it (by hand, or another
        tool): writes to it would be acknowledged and then lost, so it is answered as gone instead."""
        log.warning("index %r: its folder was removed while the server held it; it is closed", name)
        with self._name_lock("index", name):
            with self._lock:
                if self._indexes.get(name) is entry:
                    del self._indexes[name]
            with entry.guard.exclusive():
                if not entry.closed:
                    entry.closed = True
                    entry.index.close(checkpoint=False)

    def create_index(self, name: str, spec: str, kind: str) -> IndexEntry:
        folder = self.index_folder(name)
        encoder = self.encoder_for_spec(spec)
        with self._name_lock("index", name):
            _manifest_of(folder, "index", ("index",))  # a save of another type there: 409, named
            if holds_index(folder):  # (a killed first save's placeholder is taken over)
                raise ApiError(409, "exists", f"index {name!r} already exists", "name")
            begin_write()
            index = EmbeddingIndex.open(
                folder, encoder=encoder, create=True, kind=kind, timeout=self.settings.lock_timeout_s
            )
            entry = IndexEntry(index, True, self._commit_for(index), _folder_signature(folder), time.monotonic())
            entry.wrote = True  # the creation was its write
            with self._lock:
                self._indexes[name] = entry
            self._start_releaser()
            return entry

    def delete_index(self, name: str) -> None:
        folder = self.index_folder(name)
        with self._name_lock("index", name):
            if self._save_state(folder, "index", ("index",)) is None:
                raise not_found("index", name)
            with self._lock:
                entry = self._indexes.pop(name, None)
            if entry is not None:
                with entry.guard.exclusive():
                    entry.closed = True
                    entry.index.close(checkpoint=False)
            self._remove_folder(folder)

    def add_items(self, entry: IndexEntry, inputs: list[Any], **rows: Any) -> np.ndarray:
        """Encode ``inputs`` (shared model calls) and add them with ``rows`` (ids, labels, metadata, items),
        merged with concurrent additions into one durable write; the ids, durable when this returns."""
        if entry.index.encoder is None:
            raise InputError("this index stores raw vectors and has no encoder; it cannot add text or images")
        E = entry.index.encoder.encode(inputs)
        check_readable(E, inputs, "items", entry.index.encoder)
        begin_write()
        return entry.commit.submit(E=E, **rows)

    def merged_writes(self) -> int:
        with self._lock:
            entries = list(self._indexes.values())
        return sum(e.commit.merged_calls for e in entries)

    def release_idle(self) -> list[str]:
        """Let go of every index held for writing that has had no write for ``release_after_s`` (its lock freed,
        its journal kept), so that other writers may take it; it is served read-only until its next write.
        Returns the names let go."""
        limit = self.settings.release_after_s
        with self._lock:
            idle = [(n, e) for n, e in self._indexes.items() if e.writable and time.monotonic() - e.written >= limit]
        released = []
        for name, entry in idle:
            with self._name_lock("index", name):
                with self._lock:
                    if self.closed or self._indexes.get(name) is not entry:
                        continue
                with entry.guard.exclusive():  # waits for the searches and writes under way
                    if entry.closed or time.monotonic() - entry.written < limit:
                        continue
                    folder = self.index_folder(name)  # the read-only copy first: what fails leaves the entry open
                    copy = IndexEntry(
                        entry.index, False, self._commit_for(entry.index), _folder_signature(folder), time.monotonic()
                    )
                    entry.index.close(checkpoint=False)  # every write is in the journal already
                    entry.closed = True
                    with self._lock:
                        self._indexes[name] = copy
            log.info("index %r: no write for %g s; its lock is let go", name, limit)
            released.append(name)
        return released

    def _start_releaser(self) -> None:
        with self._lock:
            if self._releaser is not None or self.closed:
                return
            every = min(max(self.settings.release_after_s / 2, 0.05), RELEASE_CHECK_S)

            def run() -> None:
                while not self._stop.wait(every):
                    try:
                        self.release_idle()
                    except Exception:  # pragma: no cover - logged; the index stays held, as before
                        log.exception("letting go of idle indexes failed")

            self._releaser = threading.Thread(target=run, name="fewshot-release-idle", daemon=True)
            self._releaser.start()

    # -- lifecycle ----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Checkpoint and release every index this server holds, and stop the batchers."""
        self._stop.set()
        if self._releaser is not None:
            self._releaser.join()
        with self._lock:
            entries, self._indexes = list(self._indexes.values()), {}
            encoders = list(self._encoders.values())
            self.closed = True
        for entry in entries:
            with entry.guard.exclusive():
                entry.closed = True
                try:
                    entry.index.close(checkpoint=entry.writable)
                except FewShotError:  # pragma: no cover - the journal still holds every write
                    entry.index.close(checkpoint=False)
        for enc in encoders:
            enc.close()


def _saved_count(folder: Path, manifest: dict[str, Any]) -> int | None:
    """The items of the index saved in ``folder``: its last save's count and what its journal (written by a
    server since, perhaps killed before a checkpoint) adds and removes."""
    for _ in range(3):  # a checkpoint may replace the save and start a new journal while this reads
        count = manifest.get("count")
        if not isinstance(count, int) or not isinstance(manifest.get("save_id"), str):
            return count
        try:
            change = journal.count_change(journal.journal_path(folder, manifest["save_id"]))
            now = read_manifest(folder)
        except (OSError, FewShotError):
            return count
        if now is None or now.get("save_id") == manifest["save_id"]:
            return count + change
        manifest = now
    return manifest.get("count")
