"""On-disk embedding cache: one SQLite file per encoder identity, keyed by a hash of the input.

The connection opens on first use and is shared by the threads of a process under a lock; a pickled
cache carries only its location and reopens the file on the other side.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.encoders.identity import identity_fingerprint
from fewshot.errors import CorruptFileError, InputError


class EmbeddingCache:
    """Embeddings of one encoder, stored by the SHA-256 of each input's bytes.

    Parameters
    ----------
    folder : where cache files live; one ``<fingerprint>.sqlite`` per encoder identity.
    identity : the encoder identity; a different model (or tuned weights) gets a different file, so a
        stale vector can never be served for another encoder.
    dim : embedding dimension, checked on every read.
    """

    def __init__(self, folder: str | Path, identity: dict[str, Any], dim: int) -> None:
        self.folder = Path(folder)
        self.path = self.folder / f"{identity_fingerprint(identity)}.sqlite"
        self.dim = dim
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.folder.exists() and not self.folder.is_dir():
                raise InputError(f"the embedding cache folder {self.folder} is a file; give a folder for cache_dir")
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
                conn.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
                conn.commit()
            except sqlite3.DatabaseError as exc:
                raise CorruptFileError(
                    f"the embedding cache {self.path} cannot be read ({exc}); delete it and it is rebuilt as "
                    "texts are encoded again"
                ) from exc
            self._conn = conn
        return self._conn

    @staticmethod
    def key(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        """Return the cached vectors for the keys that are present."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            db = self._db()
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk).fetchall()
                for k, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.shape[0] == self.dim:  # a damaged row is simply recomputed
                        found[k] = vec
        return found

    def put_many(self, keys: list[str], vectors: np.ndarray) -> None:
        rows = [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in zip(keys, vectors)]
        with self._lock:
            db = self._db()
            with db:
                db.executemany("INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return self._db().execute("SELECT COUNT(*) FROM emb").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "path": self.path, "dim": self.dim}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._conn = None
        self._lock = threading.Lock()
