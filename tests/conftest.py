from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # so tests can import the eval harness (it lives outside the package)

from fewshot._validate import as_text_list  # noqa: E402
from fewshot.encoders import Encoder, TextEncoder  # noqa: E402


class FakeEncoder(Encoder):
    """Deterministic text encoder for unit tests of maths: a seeded random vector per word, summed.

    Texts sharing words get similar vectors, so neighbours and prototypes behave sensibly; ``seed``
    changes the weights, and with them the identity.
    """

    def __init__(self, dim: int = 16, seed: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        self._dim, self.seed, self.calls = dim, seed, 0

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "family": "fake",
            "model": "fake",
            "weights_sha256": f"seed{self.seed}",
            "dim": self._dim,
            "normalize": self.normalize,
        }

    def validate(self, inputs: Any) -> list[str]:
        return as_text_list(inputs, what="texts")

    def _cache_bytes(self, item: str) -> bytes:
        return item.encode()

    def _encode(self, items: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        self.calls += len(items)
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for i, text in enumerate(items):
            for word in text.lower().split():
                h = int.from_bytes(hashlib.sha256(f"{self.seed}:{word}".encode()).digest()[:8], "little")
                out[i] += np.random.default_rng(h).standard_normal(self._dim).astype(np.float32)
        return out


@pytest.fixture(scope="session")
def text_encoder() -> TextEncoder:
    """The real bundled MiniLM, loaded once per test session."""
    return TextEncoder()


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


def clusters(n_classes: int = 3, per_class: int = 12, dim: int = 16, seed: int = 0, spread: float = 0.3):
    """Seeded Gaussian clusters around random unit centres: embeddings (n, dim) and integer labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(n_classes), per_class)
    E = centres[y] + spread * rng.standard_normal((len(y), dim)) / np.sqrt(dim)
    return E.astype(np.float32), y


@pytest.fixture(scope="session")
def data_root() -> Path:
    from eval.datasets import data_dir

    try:
        return data_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def subsample(ds_texts: list[str], labels: np.ndarray, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ds_texts), size=n, replace=False))
    return [ds_texts[i] for i in idx], labels[idx]


def rewrite_manifest(folder: Path, change) -> None:
    """Change a save's manifest in place and re-seal its checksum, as a buggy writer could (the checksum
    catches edits made by anything else)."""
    import json

    from fewshot.storage.bundle import manifest_checksum

    path = Path(folder) / "manifest.json"
    meta = json.loads(path.read_text())
    change(meta)
    meta["checksum"] = manifest_checksum(meta)
    path.write_text(json.dumps(meta))
