"""One battery for both index kinds, approximate search checked against exact, and the persistence rules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fewshot.index as index_module
from fewshot import EmbeddingIndex
from fewshot.errors import CorruptFileError, DimensionError, EncoderMismatchError, InputError
from tests.conftest import REPO, FakeEncoder


def vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture(params=["flat", "hnsw"])
def kind(request):
    return request.param


def filled(kind: str, n: int = 300, dim: int = 32) -> tuple[EmbeddingIndex, np.ndarray]:
    X = vectors(n, dim)
    index = EmbeddingIndex(dim=dim, kind=kind)
    index.add_embeddings(
        X,
        labels=["even" if i % 2 == 0 else "odd" for i in range(n)],
        metadata=[{"lang": ["en", "fr", "de"][i % 3], "n": i} for i in range(n)],
        items=[f"item {i}" for i in range(n)],
    )
    return index, X


# -- battery: both kinds --------------------------------------------------------------------------------
def test_each_vector_finds_itself_first(kind):
    index, X = filled(kind)
    D, I = index.search_embeddings(X[:50], k=5)
    assert (I[:, 0] == np.arange(50)).all()
    np.testing.assert_allclose(D[:, 0], 1.0, atol=1e-5)
    assert (np.diff(D, axis=1) <= 1e-6).all()  # best first


def test_search_returns_hits_with_fields(kind):
    index, X = filled(kind)
    hits = index.search(X[7], k=3)
    assert [h.id for h in hits][0] == 7
    assert hits[0].item == "item 7" and hits[0].label == "odd" and hits[0].metadata == {"lang": "fr", "n": 7}
    several = index.search(X[:4], k=2)
    assert len(several) == 4 and all(len(h) == 2 for h in several)


def test_where_filters_on_label_metadata_and_id(kind):
    index, X = filled(kind)
    for where, ok in [
        ({"label": "even"}, lambda i: i % 2 == 0),
        ({"lang": "de"}, lambda i: i % 3 == 2),
        ({"lang": ["en", "fr"], "label": "odd"}, lambda i: i % 3 != 2 and i % 2 == 1),
        ({"id": [3, 4, 5]}, lambda i: i in (3, 4, 5)),
        ({"n": 10}, lambda i: i == 10),
    ]:
        hits = index.search(X[1], k=10, where=where)
        assert hits and all(ok(h.id) for h in hits), where
        # and the filtered search is the exact best among the matching items
        allowed = [i for i in range(len(X)) if ok(i)]
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        best = np.array(allowed)[np.argsort(-(Xn[allowed] @ Xn[1]))[: len(hits)]]
        assert [h.id for h in hits] == best.tolist(), where
    assert index.search(X[1], k=5, where={"lang": "xx"}) == []


def test_filter_through_faiss_selector_matches_exact(kind, monkeypatch):
    index, X = filled(kind)
    exact = index.search_embeddings(X[:5], k=5, where={"label": "odd"})[1]
    monkeypatch.setattr(index_module, "EXACT_FILTER_LIMIT", 0)  # force the IDSelector path
    assert (index.search_embeddings(X[:5], k=5, where={"label": "odd"})[1] == exact).all()


def test_remove_and_len(kind):
    index, X = filled(kind)
    assert len(index) == 300
    assert index.remove([0, 1, 999]) == 2
    assert len(index) == 298
    I = index.search_embeddings(X[:2], k=5)[1]
    assert 0 not in I and 1 not in I
    index.add_embeddings(X[:1], ids=[1000])  # new ids may be added after a removal
    assert index.search_embeddings(X[:1], k=1)[1][0, 0] == 1000


def test_save_load_round_trip(kind, tmp_path):
    index, X = filled(kind)
    index.remove([5])
    index.save(tmp_path / "ix")
    again = EmbeddingIndex.load(tmp_path / "ix")
    assert len(again) == 299 and again.kind == kind
    a, b = index.search(X[:10], k=5), again.search(X[:10], k=5)
    assert [[h.id for h in r] for r in a] == [[h.id for h in r] for r in b]
    assert b[0][0].metadata == {"lang": "en", "n": 0}
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["count"] == 299 and manifest["dim"] == 32 and manifest["metric"] == "inner_product"
    assert manifest["kind"] == kind and "faiss" in manifest["versions"]
    # new ids continue after the largest one ever used
    assert again.add_embeddings(X[:1])[0] == 300


def test_bad_inputs(kind):
    index, X = filled(kind, n=20)
    with pytest.raises(DimensionError, match="dimension 8"):
        index.add_embeddings(np.ones((2, 8)))
    with pytest.raises(DimensionError):
        index.search_embeddings(np.ones((1, 8)))
    with pytest.raises(InputError, match="already in the index"):
        index.add_embeddings(X[:2], ids=[0, 50])
    with pytest.raises(InputError, match="duplicates"):
        index.add_embeddings(X[:2], ids=[60, 60])
    with pytest.raises(InputError, match="2 entries for 3"):
        index.add_embeddings(X[:3], labels=["a", "b"])
    with pytest.raises(InputError, match="k must be"):
        index.search(X[0], k=0)
    with pytest.raises(InputError, match="no encoder"):
        index.search("a text query")
    assert len(index) == 20  # nothing half-added


# -- approximate against exact -----------------------------------------------------------------------
def test_hnsw_recall_at_10_against_flat():
    rng = np.random.default_rng(42)
    centres = rng.standard_normal((50, 64))
    X = (centres[rng.integers(0, 50, 20_000)] + 0.8 * rng.standard_normal((20_000, 64))).astype(np.float32)
    Q = (centres[rng.integers(0, 50, 200)] + 0.8 * rng.standard_normal((200, 64))).astype(np.float32)
    flat, hnsw = EmbeddingIndex(dim=64, kind="flat"), EmbeddingIndex(dim=64, kind="hnsw")
    flat.add_embeddings(X)
    hnsw.add_embeddings(X)
    Df, If = flat.search_embeddings(Q, k=10)
    Dh, Ih = hnsw.search_embeddings(Q, k=10)
    # ties: a hit counts if its score reaches the exact 10th score
    hits = [(np.isin(Ih[q], If[q]) | (Dh[q] >= Df[q, -1] - 1e-6)).sum() for q in range(len(Q))]
    assert np.mean(hits) / 10 >= 0.95


def test_auto_switches_to_hnsw_past_threshold():
    index = EmbeddingIndex(dim=16, kind="auto", auto_threshold=100)
    X = vectors(150, 16)
    index.add_embeddings(X[:100])
    assert index.structure == "flat"
    index.add_embeddings(X[100:])
    assert index.structure == "hnsw"
    assert (index.search_embeddings(X[:20], k=1)[1][:, 0] == np.arange(20)).all()


def test_hnsw_removals_survive_save_and_compact(tmp_path):
    index, X = filled("hnsw")
    index.remove([0, 2])
    index.save(tmp_path / "h")
    again = EmbeddingIndex.load(tmp_path / "h")
    assert again.info()["removed_pending_compaction"] == 2
    assert 0 not in again.search_embeddings(X[:1], k=3)[1]
    again.compact()
    assert again.info()["removed_pending_compaction"] == 0 and again._index.ntotal == 298
    assert 0 not in again.search_embeddings(X[:1], k=3)[1]


# -- encoders and files ---------------------------------------------------------------------------------
def test_text_round_trip_and_encoder_mismatch(tmp_path):
    enc = FakeEncoder(dim=16, seed=0)
    index = EmbeddingIndex(encoder=enc)
    index.add(["red apple", "green apple", "blue sky"], labels=["fruit", "fruit", "sky"])
    assert index.search("apple red", k=1)[0].item == "red apple"
    index.save(tmp_path / "t")
    again = EmbeddingIndex.load(tmp_path / "t", encoder=FakeEncoder(dim=16, seed=0))
    assert again.search("blue", k=1)[0].label == "sky"
    with pytest.raises(EncoderMismatchError, match="different encoders|not comparable"):
        EmbeddingIndex.load(tmp_path / "t", encoder=FakeEncoder(dim=16, seed=1))


def test_real_encoder_recorded_and_recreated(tmp_path, text_encoder):
    index = EmbeddingIndex(encoder=text_encoder)
    index.add(["The cat sat on the mat.", "Stocks fell sharply on Monday.", "The striker scored a goal."])
    index.save(tmp_path / "r")
    again = EmbeddingIndex.load(tmp_path / "r")  # encoder recreated from the manifest
    assert again.search("football match", k=1)[0].id == 2
    with pytest.raises(EncoderMismatchError):
        EmbeddingIndex.load(tmp_path / "r", encoder=FakeEncoder(dim=384))


def test_truncated_corrupt_and_inconsistent_files(tmp_path):
    index, _ = filled("flat", n=50)
    path = index.save(tmp_path / "c")
    manifest = json.loads((path / "manifest.json").read_text())
    faiss_file = path / manifest["files"]["index.faiss"]["name"]
    data = faiss_file.read_bytes()
    faiss_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="truncated"):
        EmbeddingIndex.load(path)
    faiss_file.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(CorruptFileError, match="checksum"):
        EmbeddingIndex.load(path)
    faiss_file.write_bytes(data)
    EmbeddingIndex.load(path)  # intact again
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        EmbeddingIndex.load(path)
    manifest["count"] = 51
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptFileError, match="inconsistent"):
        EmbeddingIndex.load(path)
    del manifest["dim"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptFileError, match="lacks or garbles"):
        EmbeddingIndex.load(path)
    with pytest.raises(FileNotFoundError):
        EmbeddingIndex.load(tmp_path / "missing")


def test_save_refuses_a_folder_with_foreign_files(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    index, _ = filled("flat", n=5)
    with pytest.raises(InputError, match="did not write"):
        index.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_bare_name_saves_under_index_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_INDEX_DIR", str(tmp_path / "store"))
    index, X = filled("flat", n=5)
    index.name = "news"
    assert index.save() == tmp_path / "store" / "news"
    assert len(EmbeddingIndex.load("news")) == 5


@pytest.mark.parametrize("moment", ["before-manifest", "mid-data-file"])
def test_killed_save_leaves_previous_save_loadable(tmp_path, moment):
    """A save killed by SIGKILL (no cleanup runs) must leave the previous save intact and loadable."""
    path = tmp_path / "k"
    index, X = filled("flat", n=100)
    index.save(path)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import numpy as np
        import fewshot._bundle as bundle
        from fewshot import EmbeddingIndex
        index = EmbeddingIndex.load({str(path)!r})
        index.add_embeddings(np.ones((5, 32), dtype=np.float32))
        if {moment!r} == "before-manifest":
            bundle.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        else:
            def die(p):
                with open(p, "r+b") as f:
                    f.truncate(10)
                os.kill(os.getpid(), signal.SIGKILL)
            bundle._sha256 = die
        index.save({str(path)!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, env={**os.environ})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    again = EmbeddingIndex.load(path)
    assert len(again) == 100
    assert (again.search_embeddings(X[:5], k=1)[1][:, 0] == np.arange(5)).all()
    # and the next save cleans up the orphaned files of the killed one
    again.save(path)
    names = sorted(p.name for p in path.iterdir())
    assert len(names) == 3 and "manifest.json" in names
