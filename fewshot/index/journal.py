"""The write-ahead journal of a durable index: every add and removal, on disk before it is acknowledged.

A durable :class:`~fewshot.index.EmbeddingIndex` (``EmbeddingIndex.open``) appends each write to
``journal-<save_id>.log`` beside the save it started from, and ``fsync``s it, before changing anything in
memory or returning. Loading a save replays its journal. A checkpoint writes a new save, after which the old
journal is a stale file of a previous save and is removed with it.

Each record is one frame: ``b"FSJR"``, the header's length, the body's length and a CRC-32 of both (big-endian
unsigned 32-bit integers), then the header (JSON: the operation, ids, labels, metadata, item texts) and the
body (the vectors, float32, row-major). A process killed while appending leaves at most one torn frame at the
end; that write was never acknowledged, so replay drops it (and a writer truncates it away). That is a frame
cut short, or one whole but failing its checksum and ending in zero bytes (the file grew, its last pages were
never written). Any other bad frame is corruption and is reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.errors import CorruptFileError, warn_user

MAGIC = b"FSJR"
ZERO_TAIL = 16  # zero bytes that end a whole frame failing its checksum for it to be taken for a torn write
FRAME = struct.Struct(">4sIII")
STEM = "journal"
SUFFIX = ".log"
LOGICAL = STEM + SUFFIX  # the name the storage layer uses to know journal files are fewshot's


def journal_path(folder: str | Path, save_id: str) -> Path:
    return Path(folder) / f"{STEM}-{save_id}{SUFFIX}"


def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    crc = zlib.crc32(body, zlib.crc32(head))
    return FRAME.pack(MAGIC, len(head), len(body), crc) + head + body


def read_frames(data: bytes, where: str, warn: bool = True) -> tuple[list[tuple[dict[str, Any], bytes]], int]:
    """The whole frames in ``data`` and the offset where they end (a torn last frame is left out; one whole
    but failing its checksum is warned of unless ``warn`` is False)."""
    frames: list[tuple[dict[str, Any], bytes]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < FRAME.size:
            break  # a torn frame header at the very end
        magic, n_head, n_body, crc = FRAME.unpack_from(data, pos)
        end = pos + FRAME.size + n_head + n_body
        if magic != MAGIC:
            if not any(data[pos:]):  # the file grew and none of the last write reached the disk: never acknowledged
                if warn:
                    warn_user(
                        f"{where}: the journal ends in {len(data) - pos} zero bytes; they are left out as a write a "
                        "crash cut short"
                    )
                break
            raise CorruptFileError(f"{where}: journal frame at byte {pos} has no marker; the journal is damaged")
        if end > len(data):
            _torn_tail(data, pos, where)
            break  # torn at the end: never acknowledged
        head = data[pos + FRAME.size : pos + FRAME.size + n_head]
        body = data[pos + FRAME.size + n_head : end]
        if zlib.crc32(body, zlib.crc32(head)) != crc:
            if end == len(data) and not any(data[max(pos + FRAME.size, end - ZERO_TAIL) : end]):
                _torn_tail(data, pos, where)
                # whole but wrong, and ending in zeros: a write a crash cut short after the file grew (the
                # pages never written read as zeros; never acknowledged), so it is left out, and said. A JSON
                # header holds no zero byte, and vectors do not end in four zero floats.
                if warn:
                    warn_user(
                        f"{where}: the journal's last record (byte {pos}, {end - pos} bytes) fails its checksum; it is "
                        "left out as a write a crash cut short. If that write was acknowledged, the journal is damaged"
                    )
                break
            raise CorruptFileError(
                f"{where}: journal frame at byte {pos} fails its checksum; the journal is damaged (moving its "
                "journal-*.log file aside opens the last save without the writes the journal holds)"
            )
        frames.append((json.loads(head.decode("utf-8")), body))
        pos = end
    return frames, pos


def _torn_tail(data: bytes, pos: int, where: str) -> None:
    """Check that the bad frame at ``pos`` is a torn last write: no whole, valid frame may follow it (a
    damaged length field would otherwise pass for a torn tail and hide every acknowledged write after it)."""
    start = data.find(MAGIC, pos + 1)
    while start != -1 and len(data) - start >= FRAME.size:
        _, n_head, n_body, crc = FRAME.unpack_from(data, start)
        end = start + FRAME.size + n_head + n_body
        if end <= len(data):
            head, body = data[start + FRAME.size : start + FRAME.size + n_head], data[start + FRAME.size + n_head : end]
            if zlib.crc32(body, zlib.crc32(head)) == crc:
                raise CorruptFileError(
                    f"{where}: journal frame at byte {pos} is damaged and whole frames follow it; the journal is "
                    "damaged (nothing was changed on disk)"
                )
        start = data.find(MAGIC, start + 1)


def add_record(ids: np.ndarray, E: np.ndarray, labels: list[Any], metadata: list[str], items: list[Any]) -> bytes:
    """A frame for an add: ``metadata`` as the JSON texts the table stores, ``labels`` as JSON values."""
    header = {"op": "add", "ids": [int(i) for i in ids], "labels": labels, "metadata": metadata, "items": items}
    header["dim"] = int(E.shape[1])
    return encode_frame(header, np.ascontiguousarray(E, dtype=np.float32).tobytes())


def remove_record(ids: list[int]) -> bytes:
    return encode_frame({"op": "remove", "ids": [int(i) for i in ids]})


def count_change(path: Path) -> int:
    """How many items the journal at ``path`` adds, less those it removes (0 when there is none), from its
    frames' headers alone (an add holds new ids only, a removal present ones only), skipping the vectors: a
    listing of indexes should not have to load each one to count it."""
    change = 0
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return 0
    with f:
        size, pos = os.fstat(f.fileno()).st_size, 0
        while size - pos >= FRAME.size:
            raw = f.read(FRAME.size)
            if len(raw) < FRAME.size:
                break  # cut short while this read it (a refused write's record taken back)
            magic, n_head, n_body, _ = FRAME.unpack(raw)
            end = pos + FRAME.size + n_head + n_body
            if magic != MAGIC or end > size:
                break  # a torn last write, never acknowledged (a damaged journal is the load's to report)
            try:
                header = json.loads(f.read(n_head))
                change += len(header["ids"]) * (1 if header["op"] == "add" else -1)
            except (ValueError, KeyError, TypeError):
                break
            f.seek(end)
            pos = end
    return change


class JournalWriter:
    """Appends frames to one journal file, each write flushed and fsynced before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        existing = path.read_bytes() if path.exists() else b""
        _, good = read_frames(existing, str(path), warn=False)  # the load before it said so
        self._f = open(path, "ab")
        if good < len(existing):  # a torn frame of a killed writer: cut it before appending
            self._f.truncate(good)
            self._f.seek(good)
        if not existing:
            from fewshot.storage.bundle import fsync_dir

            os.fsync(self._f.fileno())
            fsync_dir(path.parent)  # the new file's name is durable too

    def append(self, frame: bytes) -> None:
        self._f.write(frame)
        self._f.flush()
        os.fsync(self._f.fileno())

    @contextlib.contextmanager
    def logged(self, frame: bytes) -> Iterator[None]:
        """Append ``frame``, then run the block that applies it in memory; when the block fails, cut the
        frame off again, so that the journal never holds a write that was refused (a reader could not
        apply it, and would refuse the whole folder)."""
        before = self.size
        self.append(frame)
        try:
            yield
        except BaseException:
            self._f.truncate(before)
            self._f.flush()
            os.fsync(self._f.fileno())
            raise

    @property
    def size(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
