"""The float32 vectors of a compressed index, kept on disk and read back only to re-rank.

An IVF-PQ index keeps its compressed codes in memory; the exact vectors stay in append-only, immutable
segment files (``vectors-<16 hex digits>.f32``, rows of float32, row-major) that are memory-mapped, so a
search reads only the few rows it re-ranks and a collection much larger than memory can be held. Rows are
addressed by position (the order they were added); :class:`RawVectors` maps ids to positions.

Rows not yet saved stay in memory up to ``spill_rows`` and then go to a segment in a private spill folder;
a save links (or copies) every segment into the index folder, where the manifest lists each one with its
size and SHA-256. Segments are never changed once written, so a save of a grown index links the old ones
again instead of rewriting them, and a reader keeps reading a mapped segment even if a later compaction
deletes its name.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.errors import CorruptFileError

SEGMENT = re.compile(r"vectors-[0-9a-f]{16}\.f32")
SPILL_ROWS = 65_536  # unsaved rows kept in memory before they go to a spill segment
MAX_SEGMENTS = 32  # past this many, a save merges the trailing small segments (many small saves) into one


def _new_name() -> str:
    return f"vectors-{secrets.token_hex(8)}.f32"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_of(f)


def _sha256_of(f: Any) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 22), b""):
        h.update(block)
    return h.hexdigest()


class Segment:
    """One immutable file of ``rows`` float32 rows, mapped when made (from ``file``, an open file object of
    it, when given): a compaction elsewhere that deletes the file leaves this copy reading what it had."""

    def __init__(self, path: Path, rows: int, dim: int, sha256: str | None = None, file: Any = None) -> None:
        self.path, self.rows, self.dim, self.sha256 = Path(path), rows, dim, sha256
        source = file if file is not None else self.path
        self._map = np.memmap(source, dtype=np.float32, mode="r", shape=(rows, dim)) if rows else None

    def array(self) -> np.ndarray:
        return self._map if self._map is not None else np.empty((0, self.dim), dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        if self.sha256 is None:
            self.sha256 = sha256_file(self.path)
        return {"name": self.path.name, "rows": self.rows, "bytes": self.rows * self.dim * 4, "sha256": self.sha256}


def _write_segment(path: Path, *parts: np.ndarray) -> Segment:
    """One segment of the rows of ``parts`` in order, written (and fsynced) one part at a time."""
    h, rows = hashlib.sha256(), 0
    with open(path, "wb") as f:
        for part in parts:
            data = np.ascontiguousarray(part, dtype=np.float32).tobytes()
            f.write(data)
            h.update(data)
            rows += len(part)
        f.flush()
        os.fsync(f.fileno())
    return Segment(path, rows, parts[0].shape[1], h.hexdigest())


class RawVectors:
    """Exact vectors by id, on disk: segments plus an in-memory tail, and the id -> position map.

    Parameters
    ----------
    dim : vector dimension.
    spill_rows : unsaved rows kept in memory before they are written to a spill segment.
    """

    def __init__(self, dim: int, spill_rows: int = SPILL_ROWS) -> None:
        self.dim = dim
        self.spill_rows = spill_rows
        self.segments: list[Segment] = []
        self._tail: list[np.ndarray] = []
        self._tail_rows = 0
        self._tail_joined: np.ndarray | None = None
        self.pos_ids = np.empty(0, dtype=np.int64)  # position -> id (-1: removed)
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None  # (ids sorted, their positions)
        self._spill: Path | None = None
        self._cleanup: Any = None

    # -- sizes --------------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows held, removed ones included (positions run from 0 to rows - 1)."""
        return len(self.pos_ids)

    @property
    def live(self) -> int:
        return int((self.pos_ids >= 0).sum())

    # -- writing ------------------------------------------------------------------------------------
    def add(self, E: np.ndarray, ids: np.ndarray) -> None:
        E = np.ascontiguousarray(E, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        self._tail.append(E.copy())
        self._tail_rows += len(E)
        self._tail_joined = None
        start = self.rows
        self.pos_ids = np.concatenate([self.pos_ids, ids])
        if self._sorted is not None:
            sid, spos = self._sorted
            new_pos = np.arange(start, start + len(ids), dtype=np.int64)
            if len(sid) == 0 or (ids[0] > sid[-1] and (len(ids) < 2 or (np.diff(ids) > 0).all())):
                self._sorted = (np.concatenate([sid, ids]), np.concatenate([spos, new_pos]))
            else:
                self._sorted = None  # rebuilt on next use
        if self._tail_rows >= self.spill_rows:
            self._flush(self._spill_dir())

    def remove(self, ids: np.ndarray) -> None:
        pos = self.positions(np.asarray(ids, dtype=np.int64))
        pos = pos[pos >= 0]
        self.pos_ids[pos] = -1
        if self._sorted is not None:
            sid, spos = self._sorted
            keep = ~np.isin(spos, pos)
            self._sorted = (sid[keep], spos[keep])

    def _spill_dir(self) -> Path:
        if self._spill is None:
            self._spill = Path(tempfile.mkdtemp(prefix="fewshot-vectors-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._spill), True)
        return self._spill

    def _flush(self, folder: Path) -> None:
        """Write the in-memory tail as one segment in ``folder``."""
        if not self._tail_rows:
            return
        rows = np.concatenate(self._tail) if len(self._tail) > 1 else self._tail[0]
        self.segments.append(_write_segment(folder / _new_name(), rows))
        self._tail, self._tail_rows, self._tail_joined = [], 0, None

    def _tail_array(self) -> np.ndarray | None:
        if self._tail_joined is None and self._tail:
            self._tail = [np.concatenate(self._tail)] if len(self._tail) > 1 else self._tail
            self._tail_joined = self._tail[0]
        return self._tail_joined

    # -- reading ------------------------------------------------------------------------------------
    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of ``ids`` (-1 for ids not held)."""
        if self._sorted is None:
            live = np.flatnonzero(self.pos_ids >= 0)
            order = np.argsort(self.pos_ids[live], kind="stable")
            self._sorted = (self.pos_ids[live][order], live[order].astype(np.int64))
        sid, spos = self._sorted
        ids = np.asarray(ids, dtype=np.int64)
        if len(sid) == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        at = np.clip(np.searchsorted(sid, ids), 0, len(sid) - 1)
        return np.where(sid[at] == ids, spos[at], -1)

    def read(self, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` (all valid), shape (len(positions), dim)."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim), dtype=np.float32)
        if not len(positions):
            return out
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        start = 0
        bounds = []
        for seg in self.segments:
            bounds.append((start, start + seg.rows, seg))
            start += seg.rows
        tail = self._tail_array()
        for lo, hi, seg in bounds:
            a, b = np.searchsorted(sorted_pos, [lo, hi])
            if b > a:
                out[order[a:b]] = seg.array()[sorted_pos[a:b] - lo]
        a = np.searchsorted(sorted_pos, start)
        if a < len(sorted_pos):
            out[order[a:]] = tail[sorted_pos[a:] - start]
        return out

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        pos = self.positions(ids)
        if (pos < 0).any():
            raise KeyError(f"ids not stored: {ids[pos < 0][:5].tolist()}")
        return self.read(pos)

    def iter_live(self, chunk: int = 65_536):
        """(ids, vectors) of every live row, in position order, ``chunk`` rows at a time."""
        for start in range(0, self.rows, chunk):
            pos = np.arange(start, min(start + chunk, self.rows))
            ids = self.pos_ids[pos]
            keep = ids >= 0
            if keep.any():
                yield ids[keep], self.read(pos[keep])

    # -- saving and loading -------------------------------------------------------------------------
    def save_into(self, folder: Path) -> list[dict[str, Any]]:
        """Make every segment (and the tail) a file of ``folder``; return their descriptions for the manifest.

        A segment already in ``folder`` is kept; one elsewhere is hard-linked (copied across file systems).
        Past :data:`MAX_SEGMENTS` segments, the trailing ones of fewer than ``spill_rows`` rows each (left by
        many small saves) are merged into one, in order, so that positions stay what they were; the files
        merged are then stale and go with the save's cleanup."""
        self._flush(folder)
        if len(self.segments) > MAX_SEGMENTS:
            start = len(self.segments)
            while start > 0 and self.segments[start - 1].rows < self.spill_rows:
                start -= 1
            if len(self.segments) - start > 1:
                merged = _write_segment(folder / _new_name(), *(seg.array() for seg in self.segments[start:]))
                self.segments = self.segments[:start] + [merged]  # one assignment: a reader sees either list
        for i, seg in enumerate(self.segments):
            if seg.path.parent.resolve() == folder.resolve():
                continue
            target = folder / _new_name()
            try:
                os.link(seg.path, target)
            except OSError:
                shutil.copyfile(seg.path, target)
                with open(target, "rb+") as f:
                    os.fsync(f.fileno())
            self.segments[i] = Segment(target, seg.rows, seg.dim, seg.sha256)
        return [s.describe() for s in self.segments]

    @classmethod
    def load(cls, folder: Path, described: list[dict[str, Any]], pos_ids: np.ndarray, dim: int) -> RawVectors:
        """Open the segments a manifest lists, checking each one's size and SHA-256."""
        raw = cls(dim)
        total = 0
        for d in described:
            path = folder / d["name"]
            if not SEGMENT.fullmatch(d["name"]):
                raise CorruptFileError(f"{folder}: the manifest names an unexpected vector file {d['name']!r}")
            try:
                f = open(path, "rb")  # checked and mapped through one descriptor: a compaction that deletes
            except FileNotFoundError:  # the file later leaves this copy reading what it checked
                raise CorruptFileError(
                    f"{folder}: the vector file {d['name']} named in the manifest is missing"
                ) from None
            with f:
                size = os.fstat(f.fileno()).st_size
                if d["bytes"] != d["rows"] * dim * 4:
                    raise CorruptFileError(
                        f"{folder}: the manifest gives {d['name']} {d['rows']} rows of {dim} floats in {d['bytes']} "
                        "bytes, which cannot be: the manifest is altered"
                    )
                if size != d["bytes"]:
                    raise CorruptFileError(
                        f"{path} is {size} bytes but the manifest says {d['bytes']}: the file is truncated or altered"
                    )
                if _sha256_of(f) != d["sha256"]:
                    raise CorruptFileError(f"{path} fails its checksum: the file is corrupt or was altered")
                raw.segments.append(Segment(path, int(d["rows"]), dim, d["sha256"], file=f))
            total += int(d["rows"])
        if total != len(pos_ids):
            raise CorruptFileError(f"{folder}: the vector files hold {total} rows, the position map {len(pos_ids)}")
        raw.pos_ids = np.asarray(pos_ids, dtype=np.int64).copy()
        return raw

    def to_state(self) -> dict[str, Any]:
        """Everything, in memory (for pickling a small index)."""
        rows = [s.array() for s in self.segments] + list(self._tail)
        data = np.concatenate(rows) if rows else np.empty((0, self.dim), dtype=np.float32)
        return {"dim": self.dim, "pos_ids": self.pos_ids.copy(), "data": np.ascontiguousarray(data)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RawVectors:
        raw = cls(int(state["dim"]))
        data = np.asarray(state["data"], dtype=np.float32)
        if len(data):
            raw._tail, raw._tail_rows = [data.copy()], len(data)
        raw.pos_ids = np.asarray(state["pos_ids"], dtype=np.int64).copy()
        return raw


def stale_segments(folder: Path, keep: set[str]) -> list[Path]:
    """Segment files in ``folder`` that no save references (left by a killed save or a compaction)."""
    return [p for p in folder.iterdir() if SEGMENT.fullmatch(p.name) and p.name not in keep]
