"""On-disk embedding cache: one SQLite file per encoder identity, keyed by a hash of the input."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np


def identity_fingerprint(identity: dict[str, Any]) -> str:
    """A short stable hash of an encoder identity (used to name cache files)."""
    blob = json.dumps(identity, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:20]


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
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{identity_fingerprint(identity)}.sqlite"
        self.dim = dim
        self._conn = sqlite3.connect(self.path)
        self._conn.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._conn.commit()

    @staticmethod
    def key(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        """Return the cached vectors for the keys that are present."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk)
            for k, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape[0] == self.dim:  # a damaged row is simply recomputed
                    found[k] = vec
        return found

    def put_many(self, keys: list[str], vectors: np.ndarray) -> None:
        rows = [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in zip(keys, vectors)]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM emb").fetchone()[0]

    def close(self) -> None:
        self._conn.close()
