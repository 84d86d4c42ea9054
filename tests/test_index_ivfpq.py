"""The compressed IVF-PQ kind: the index battery run on a trained IVF-PQ store, approximate search against
exact, training and growth, the vectors on disk (re-ranking, saves, damage), durability and pickling."""

from __future__ import annotations

import inspect
import json
import pickle

import numpy as np
import pytest

import fewshot.index.vectors as vectors_module
import tests.test_index as battery
from fewshot import EmbeddingIndex
from fewshot.errors import CorruptFileError, EncoderMismatchError, InputError
from tests.conftest import FakeEncoder

SMALL = {"train_size": 256, "nlist": 8, "m": 8, "nbits": 6}  # trains on the battery's 300 vectors


def ivf_filled(kind: str, n: int = 300, dim: int = 32) -> tuple[EmbeddingIndex, np.ndarray]:
    """The battery's index, as a trained IVF-PQ store."""
    X = battery.vectors(n, dim)
    index = EmbeddingIndex(dim=dim, kind="ivfpq", ivfpq=SMALL)
    index.add_embeddings(
        X,
        labels=["even" if i % 2 == 0 else "odd" for i in range(n)],
        metadata=[{"lang": ["en", "fr", "de"][i % 3], "n": i} for i in range(n)],
        items=[f"item {i}" for i in range(n)],
    )
    assert index.structure == ("ivfpq" if n >= SMALL["train_size"] else "flat")  # too few to train: exact
    return index, X


BATTERY = [
    battery.test_each_vector_finds_itself_first,
    battery.test_search_takes_one_query_and_batch_search_many,
    battery.test_where_filters_on_label_metadata_and_id,
    battery.test_filter_through_faiss_selector_matches_exact,
    battery.test_remove_and_len,
    battery.test_save_load_round_trip,
    battery.test_bad_inputs_are_refused_with_their_reason,
    battery.test_a_batch_that_fails_midway_is_not_half_added,
]


@pytest.mark.parametrize("test", BATTERY, ids=[t.__name__ for t in BATTERY])
def test_the_index_battery_holds_for_ivfpq(test, monkeypatch, tmp_path):
    monkeypatch.setattr(battery, "filled", ivf_filled)
    kwargs = {"kind": "ivfpq", "monkeypatch": monkeypatch, "tmp_path": tmp_path}
    test(**{k: v for k, v in kwargs.items() if k in inspect.signature(test).parameters})


# -- approximate against exact -------------------------------------------------------------------------------
def clustered(n: int, nq: int, dim: int = 64, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim))
    X = (centres[rng.integers(0, 50, n)] + 0.8 * rng.standard_normal((n, dim))).astype(np.float32)
    Q = (centres[rng.integers(0, 50, nq)] + 0.8 * rng.standard_normal((nq, dim))).astype(np.float32)
    return X, Q


def recall(I: np.ndarray, If: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(I, If)]))


def test_ivfpq_recall_at_10_against_flat_and_what_re_ranking_adds():
    X, Q = clustered(20_000, 200)
    flat = EmbeddingIndex(dim=64, kind="flat")
    flat.add_embeddings(X)
    Df, If = flat.search_embeddings(Q, k=10)
    got = {}
    for refine in (0, 4):
        ivf = EmbeddingIndex(dim=64, kind="ivfpq", ivfpq={"train_size": 5_000, "m": 16, "refine": refine})
        for start in range(0, len(X), 4_000):
            ivf.add_embeddings(X[start : start + 4_000])
        assert ivf.structure == "ivfpq" and ivf.info()["ivfpq"]["nlist"] == 256  # 4 * sqrt(5000), a power of 2
        D, I = ivf.search_embeddings(Q, k=10)
        got[refine] = recall(I, If)
        if refine:  # re-ranked scores are the exact cosines
            exact = np.einsum("qkd,qd->qk", X[I] / np.linalg.norm(X[I], axis=2, keepdims=True), flat_norm(Q))
            np.testing.assert_allclose(D, exact, atol=1e-5)
    assert got[4] >= 0.95 and got[4] > got[0] + 0.1, got


def flat_norm(Q: np.ndarray) -> np.ndarray:
    return Q / np.linalg.norm(Q, axis=1, keepdims=True)


def test_stays_exact_until_enough_vectors_to_train_then_trains_on_a_sample(capfd):
    X, Q = clustered(1_200, 5, dim=32)
    index = EmbeddingIndex(dim=32, kind="ivfpq", ivfpq={"train_size": 1_000, "m": 8, "nbits": 6})
    index.add_embeddings(X[:999])
    assert index.structure == "flat" and not index.info()["ivfpq"]["trained"]
    index.add_embeddings(X[999:])
    info = index.info()["ivfpq"]
    assert index.structure == "ivfpq" and info["trained"] and info["vectors_on_disk"] == 1_200
    assert "WARNING" not in capfd.readouterr().err  # FAISS's k-means note on small samples stays quiet
    assert (index.search_embeddings(X[:20], k=1)[1][:, 0] == np.arange(20)).all()
    with pytest.raises(InputError, match="must divide the dimension 32"):
        EmbeddingIndex(dim=32, kind="ivfpq", ivfpq={"train_size": 10, "m": 7}).add_embeddings(X[:20])
    with pytest.raises(InputError, match="unknown ivfpq setting"):
        EmbeddingIndex(dim=32, ivfpq={"nprobes": 3})


def test_an_add_too_small_to_train_on_stays_exact_and_a_failed_training_loses_nothing(tmp_path, monkeypatch):
    from fewshot.errors import FewShotWarning
    from fewshot.index.vectors import VectorStore

    X, _ = clustered(400, 1, dim=32)
    # train_size is reached, but 1,000 lists need 1,000 vectors: the index stays exact rather than failing
    index = EmbeddingIndex(dim=32, kind="ivfpq", ivfpq={"nlist": 1000, "train_size": 100, "m": 8})
    index.add_embeddings(X[:50])
    index.save(tmp_path / "ivf")
    again = EmbeddingIndex.load(tmp_path / "ivf")
    again.add_embeddings(X[50:150])
    assert len(again) == 150 and again.structure == "flat"
    assert (again.search_embeddings(X[[0, 120]], k=1)[1][:, 0] == [0, 120]).all()
    again.save()
    assert len(EmbeddingIndex.load(tmp_path / "ivf")) == 150

    def broken(self, sample, expected):
        raise RuntimeError("out of memory")

    # a training that fails leaves every vector where it was, and the add stands
    monkeypatch.setattr(VectorStore, "_trained", broken)
    small = EmbeddingIndex(dim=32, kind="ivfpq", ivfpq={"train_size": 256, "nlist": 8, "m": 8})
    small.add_embeddings(X[:200])
    with pytest.warns(FewShotWarning, match="stays flat.*out of memory"):
        small.add_embeddings(X[200:300])
    assert len(small) == 300 and small.structure == "flat"
    assert (small.search_embeddings(X[[0, 250]], k=1)[1][:, 0] == [0, 250]).all()
    monkeypatch.undo()
    small.add_embeddings(X[300:])  # the next add trains
    assert small.structure == "ivfpq" and len(small) == 400
    assert (small.search_embeddings(X[[0, 250, 399]], k=1)[1][:, 0] == [0, 250, 399]).all()


def test_auto_moves_from_flat_to_hnsw_to_ivfpq():
    X, _ = clustered(1_000, 1, dim=32)
    index = EmbeddingIndex(dim=32, kind="auto", auto_threshold=100, ivfpq_threshold=600, ivfpq={"m": 8, "nbits": 6})
    index.add_embeddings(X[:100])
    assert index.structure == "flat"
    index.add_embeddings(X[100:400])
    assert index.structure == "hnsw"
    index.add_embeddings(X[400:])
    assert index.structure == "ivfpq" and len(index) == 1_000
    assert (index.search_embeddings(X[:20], k=1)[1][:, 0] == np.arange(20)).all()


def test_large_filters_widen_the_probe_and_never_leak(monkeypatch):
    X, Q = clustered(6_000, 20, dim=32)
    index = EmbeddingIndex(dim=32, kind="ivfpq", ivfpq={"train_size": 2_000, "m": 8, "nprobe": 2})
    index.add_embeddings(X, labels=[i % 10 for i in range(len(X))])
    monkeypatch.setattr(vectors_module, "EXACT_FILTER_LIMIT", 100)  # 600 matching items: the IVF path
    D, I = index.search_embeddings(Q, k=10, where={"label": 3})
    assert (I % 10 == 3).all()
    exact = EmbeddingIndex(dim=32, kind="flat")
    exact.add_embeddings(X, labels=[i % 10 for i in range(len(X))])
    assert recall(I, exact.search_embeddings(Q, k=10, where={"label": 3})[1]) >= 0.9


# -- the vectors on disk: saves, reuse, damage ----------------------------------------------------------------
def segments(path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("vectors-"))


def test_saves_link_the_vector_files_and_clean_up_what_no_save_uses(tmp_path):
    index, X = ivf_filled("ivfpq")
    path = index.save(tmp_path / "ix")
    first = segments(path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert len(first) == 1 and [d["name"] for d in manifest["raw"]] == first
    assert manifest["raw"][0]["rows"] == 300 and manifest["structure"] == "ivfpq"
    index.add_embeddings(battery.vectors(10, 32, seed=5))
    index.save(path)
    assert first[0] in segments(path) and len(segments(path)) == 2  # the old file is kept, a new one added
    (path / "vectors-0123456789abcdef.f32").write_bytes(b"\0" * 128)  # left by a killed save
    (path / "notes.txt").write_text("mine")
    again = EmbeddingIndex.load(path)
    again.remove([0, 1])
    again.compact()  # removed rows leave the files at the next save
    again.save(path)
    assert len(segments(path)) == 1 and (path / "notes.txt").read_text() == "mine"  # the orphan went too
    assert "vectors-0123456789abcdef.f32" not in segments(path)
    final = EmbeddingIndex.load(path)
    assert len(final) == 308 and 0 not in final.search_embeddings(X[:1], k=5)[1]
    copy = final.save(tmp_path / "copy")  # to another folder: the files are linked or copied
    assert len(EmbeddingIndex.load(copy)) == 308


def test_many_small_saves_merge_their_vector_files_and_keep_every_vector(tmp_path, monkeypatch):
    from fewshot.index import rawvectors

    monkeypatch.setattr(rawvectors, "MAX_SEGMENTS", 4)
    index, X = ivf_filled("ivfpq")
    path = index.save(tmp_path / "ix")
    extra = battery.vectors(30, 32, seed=5)
    for i in range(10):  # ten saves of three vectors each: one file a save, until they are merged
        index.add_embeddings(extra[3 * i : 3 * i + 3], ids=range(1000 + 3 * i, 1003 + 3 * i))
        index.remove([2 * i])  # removed rows keep their places in the merged file
        index.save(path)
        assert len(segments(path)) <= 5
    again = EmbeddingIndex.load(path)
    assert len(again) == 320
    queries, ids = np.vstack([X[[5, 299]], extra]), [5, 299, *range(1000, 1030)]
    for copy in (index, again):  # each vector finds itself with its exact score: read back from its place
        scores, found = copy.search_embeddings(queries, k=1)
        assert found[:, 0].tolist() == ids and np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_a_damaged_vector_file_is_reported(tmp_path):
    index, _ = ivf_filled("ivfpq")
    path = index.save(tmp_path / "d")
    seg = path / segments(path)[0]
    data = seg.read_bytes()
    seg.write_bytes(data[:-8])
    with pytest.raises(CorruptFileError, match="truncated"):
        EmbeddingIndex.load(path)
    seg.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(CorruptFileError, match="checksum"):
        EmbeddingIndex.load(path)
    seg.unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        EmbeddingIndex.load(path)


def test_a_reader_keeps_reading_after_a_writer_compacts_its_vector_files_away(tmp_path, monkeypatch):
    index, X = ivf_filled("ivfpq")
    path = index.save(tmp_path / "shared")
    before = segments(path)
    reader = EmbeddingIndex.load(path)  # as the service holds it, not yet searched
    with EmbeddingIndex.update(path) as writer:
        writer.remove(list(range(100)))
        writer.compact()
    assert not set(before) & set(segments(path))  # the file the reader was given is gone
    assert reader.search_embeddings(X[200:201], k=1)[1][0, 0] == 200  # re-ranked from the file it checked
    assert reader.search_embeddings(X[50:51], k=1)[1][0, 0] == 50  # its own view: no removal seen
    saver = EmbeddingIndex.load(path)  # a copy that writes its own vector file, then sees it compacted away
    saver.add_embeddings(battery.vectors(10, 32, seed=9))
    saver.save(path)
    with EmbeddingIndex.update(path) as writer:
        writer.remove(list(range(100, 110)))
        writer.compact()
    assert saver.search_embeddings(X[105:106], k=1)[1][0, 0] == 105
    # a save replaced between reading the manifest and reading its vector files is read again, not damage
    real, raced = EmbeddingIndex._from_save.__func__, []

    def racing(cls, folder, *rest):
        if not raced:
            raced.append(folder)
            with EmbeddingIndex.update(folder) as other:
                other.remove(list(range(100, 150)))
                other.compact()
        return real(cls, folder, *rest)

    monkeypatch.setattr(EmbeddingIndex, "_from_save", classmethod(racing))
    assert len(EmbeddingIndex.load(path)) == 160 and raced


def test_a_killed_first_save_leaves_a_folder_the_next_save_takes_over(tmp_path):
    path = tmp_path / "first"
    path.mkdir()
    (path / "index-0badc0de.faiss").write_bytes(b"half")
    index, X = ivf_filled("ivfpq")
    index.save(path)
    assert (path / "manifest.json").exists() and not (path / "index-0badc0de.faiss").exists()
    assert len(EmbeddingIndex.load(path)) == 300


def test_a_first_save_stopped_while_writing_vectors_is_no_index_and_the_next_save_takes_over(tmp_path, monkeypatch):
    from fewshot.errors import SaveNotFoundError
    from fewshot.index import rawvectors

    def killed(self, folder):  # as a kill -9 while the vector files are written
        raise KeyboardInterrupt

    index, X = ivf_filled("ivfpq")
    monkeypatch.setattr(rawvectors.RawVectors, "save_into", killed)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "big")
    monkeypatch.undo()
    with pytest.raises(SaveNotFoundError, match="first save was stopped before its vectors were written"):
        EmbeddingIndex.load(tmp_path / "big")  # not an empty index that reads as a finished one
    from fewshot.cli import main
    from fewshot.index.embedding_index import holds_index

    assert not holds_index(tmp_path / "big")
    (tmp_path / "docs.txt").write_text("rates rise\na late goal\n")
    cli_target = tmp_path / "cli"
    monkeypatch.setattr(rawvectors.RawVectors, "save_into", killed)
    with pytest.raises(KeyboardInterrupt):
        index.save(cli_target)
    monkeypatch.undo()
    assert main(["index", "build", str(cli_target), str(tmp_path / "docs.txt")]) == 0  # no --overwrite needed
    assert len(EmbeddingIndex.load(cli_target)) == 2
    other, _ = ivf_filled("ivfpq")
    other.save(tmp_path / "big")  # another index object takes it over: nothing there to lose
    assert len(EmbeddingIndex.load(tmp_path / "big")) == 300
    monkeypatch.setattr(rawvectors.RawVectors, "save_into", killed)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "again")
    monkeypatch.undo()
    with EmbeddingIndex.update(tmp_path / "again", create=True, dim=32, kind="ivfpq", ivfpq=SMALL) as fresh:
        assert len(fresh) == 0  # a new index, not the placeholder loaded
        fresh.add_embeddings(X[:10])
    assert len(EmbeddingIndex.load(tmp_path / "again")) == 10


def test_durable_ivfpq_index_journals_and_replays(tmp_path):
    path = tmp_path / "wal"
    X, _ = clustered(700, 1, dim=32)
    with EmbeddingIndex.open(path, create=True, dim=32, kind="ivfpq", ivfpq=SMALL) as index:
        index.add_embeddings(X[:300])
        index.checkpoint()
        index.add_embeddings(X[300:], labels=["late"] * 400)
        index.remove([5])
        reader = EmbeddingIndex.load(path)  # the save plus the journal
        assert len(reader) == 699 and reader.structure == "ivfpq"
        assert reader.search_embeddings(X[600], k=1)[1][0, 0] == 600
    again = EmbeddingIndex.load(path)
    assert len(again) == 699 and again.get([650])[0].label == "late" and again.get([5]) == [None]


def test_pickle_and_retrain_keep_the_answers():
    index, X = ivf_filled("ivfpq")
    again = pickle.loads(pickle.dumps(index))
    assert (again.search_embeddings(X[:30], k=5)[1] == index.search_embeddings(X[:30], k=5)[1]).all()
    again.retrain()
    assert (again.search_embeddings(X[:30], k=1)[1][:, 0] == np.arange(30)).all()
    with pytest.raises(InputError, match="retrain"):
        EmbeddingIndex(dim=4, kind="flat").retrain()


def test_without_re_ranking_no_vectors_are_kept(tmp_path):
    X, Q = clustered(2_000, 10, dim=32)
    index = EmbeddingIndex(dim=32, kind="ivfpq", ivfpq={**SMALL, "train_size": 1_000, "refine": 0})
    index.add_embeddings(X)
    assert index.info()["ivfpq"]["vectors_on_disk"] == 0
    path = index.save(tmp_path / "codes")
    assert segments(path) == [] and "positions.npy" not in json.loads((path / "manifest.json").read_text())["files"]
    D, I = EmbeddingIndex.load(path).search_embeddings(Q, k=3)
    assert (I >= 0).all() and (D <= 1.01).all()
    with pytest.raises(InputError, match="keeps no vectors"):
        index.retrain()


def test_encoder_is_checked_on_load(tmp_path):
    enc = FakeEncoder(dim=32, seed=0)
    index = EmbeddingIndex(encoder=enc, kind="ivfpq", ivfpq={**SMALL, "train_size": 300})
    words = [f"w{i} w{i % 7} w{i % 11}" for i in range(400)]
    index.add(words)
    assert index.structure == "ivfpq" and index.search("w3 w3 w3", k=1)[0].item == "w3 w3 w3"
    index.save(tmp_path / "t")
    with pytest.raises(EncoderMismatchError):
        EmbeddingIndex.load(tmp_path / "t", encoder=FakeEncoder(dim=32, seed=1))
    assert EmbeddingIndex.load(tmp_path / "t", encoder=FakeEncoder(dim=32, seed=0)).search("w5 w5 w5", k=1)[0].id == 5
