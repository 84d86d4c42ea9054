"""One battery for both index structures, approximate search checked against exact, filters against a
plain Python reference, and the index under threads, two writers and SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import fewshot.index.vectors as vectors_module
from fewshot import EmbeddingIndex
from fewshot.errors import (
    ConcurrentWriteError,
    CorruptFileError,
    DimensionError,
    EncoderMismatchError,
    FewShotError,
    FewShotWarning,
    InputError,
    SaveExistsError,
)
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


# -- battery: both structures -----------------------------------------------------------------------------
def test_each_vector_finds_itself_first(kind):
    index, X = filled(kind)
    D, I = index.search_embeddings(X[:50], k=5)
    assert (I[:, 0] == np.arange(50)).all()
    np.testing.assert_allclose(D[:, 0], 1.0, atol=1e-5)
    assert (np.diff(D, axis=1) <= 1e-6).all()  # best first


def test_search_takes_one_query_and_batch_search_many(kind):
    index, X = filled(kind)
    hits = index.search(X[7], k=3)
    assert [h.id for h in hits][0] == 7
    assert hits[0].item == "item 7" and hits[0].label == "odd" and hits[0].metadata == {"lang": "fr", "n": 7}
    several = index.batch_search(X[:4], k=2)
    assert len(several) == 4 and all(len(h) == 2 for h in several)
    assert [h[0].id for h in several] == [0, 1, 2, 3]
    with pytest.raises(InputError, match="one"):
        index.batch_search("a single string")
    # several queries given to search point to the call that takes them, not to "an image index"
    with pytest.raises(InputError, match="for 2 of them use batch_search"):
        index.search(["a", "b"])
    with pytest.raises(InputError, match=r"a query vector is 1-d.*search_embeddings"):
        index.search(X[:2])


def test_where_filters_on_label_metadata_and_id(kind):
    index, X = filled(kind)
    for where, ok in [
        ({"label": "even"}, lambda i: i % 2 == 0),
        ({"lang": "de"}, lambda i: i % 3 == 2),
        ({"lang": ["en", "fr"], "label": "odd"}, lambda i: i % 3 != 2 and i % 2 == 1),
        ({"id": [3, 4, 5]}, lambda i: i in (3, 4, 5)),
        ({"n": 10}, lambda i: i == 10),
        ({"n": 10.0}, lambda i: i == 10),  # numbers match numbers of equal value
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
    monkeypatch.setattr(vectors_module, "EXACT_FILTER_LIMIT", 0)  # force the IDSelector path
    assert (index.search_embeddings(X[:5], k=5, where={"label": "odd"})[1] == exact).all()


def test_remove_and_len(kind):
    index, X = filled(kind)
    assert len(index) == 300
    assert index.remove([0, 1, 999, 2**70]) == 2  # an id no item can have (past 64 bits) is just not there
    assert len(index) == 298
    assert index.get([2, 2**70])[1] is None
    with pytest.raises(InputError, match="ids must be integers, got float 1.5"):
        index.remove([3, 1.5])
    I = index.search_embeddings(X[:2], k=5)[1]
    assert 0 not in I and 1 not in I
    index.add_embeddings(X[:1], ids=[1000])  # new ids may be added after a removal
    assert index.search_embeddings(X[:1], k=1)[1][0, 0] == 1000


def test_remove_by_filter_and_by_ids_within_it(kind):
    index, X = filled(kind)
    odd = {i for i in range(300) if i % 2}
    assert index.remove([1, 2, 3], where={"label": "odd"}) == 2  # 2 is even: kept
    assert index.get([1, 2, 3])[1] is not None and index.get([1])[0] is None
    assert index.remove(where={"label": "odd"}) == len(odd) - 2
    assert index.remove(where={"label": "odd"}) == 0 and index.remove(where={"lnag": "en", "n": 3}) == 0  # run again
    assert len(index) == 300 - len(odd)
    assert index.search_embeddings(X[:3], k=10, where={"label": "even"})[1].size == 30
    assert index.search(X[1], where={"label": "odd"}) == []
    with pytest.raises(InputError, match="takes ids, a where filter, or both"):
        index.remove()
    with pytest.raises(InputError, match="names no field to match"):
        index.remove(where={})
    assert len(index) == 300 - len(odd)


def test_save_load_round_trip(kind, tmp_path):
    index, X = filled(kind)
    index.remove([5])
    index.save(tmp_path / "ix")
    again = EmbeddingIndex.load(tmp_path / "ix")
    assert len(again) == 299 and again.kind == kind
    a, b = index.batch_search(X[:10], k=5), again.batch_search(X[:10], k=5)
    assert [[h.id for h in r] for r in a] == [[h.id for h in r] for r in b]
    assert b[0][0].metadata == {"lang": "en", "n": 0}
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["count"] == 299 and manifest["dim"] == 32 and manifest["metric"] == "inner_product"
    assert manifest["kind"] == kind and "faiss" in manifest["versions"]
    # new ids continue after the largest one ever used
    assert again.add_embeddings(X[:1])[0] == 300


def test_bad_inputs_are_refused_with_their_reason(kind):
    index, X = filled(kind, n=20)
    with pytest.raises(DimensionError, match="dimension 8"):
        index.add_embeddings(np.ones((2, 8)))
    with pytest.raises(DimensionError):
        index.search_embeddings(np.ones((1, 8)))
    with pytest.raises(InputError, match="already in the index"):
        index.add_embeddings(X[:2], ids=[0, 50])
    with pytest.raises(InputError, match="duplicates \\(60 more than once\\)"):
        index.add_embeddings(X[:3], ids=[60, 61, 60])
    with pytest.raises(InputError, match="2 entries for 3"):
        index.add_embeddings(X[:3], labels=["a", "b"])
    with pytest.raises(InputError, match="k must be"):
        index.search(X[0], k=0)
    with pytest.raises(InputError, match="no encoder"):
        index.search("a text query")
    Z = X[:3].copy()
    Z[1] = 0
    with pytest.raises(InputError, match="embeddings: row 1 is all zeros"):
        index.add_embeddings(Z)
    with pytest.raises(InputError, match="queries: the vector is all zeros"):
        index.search(np.zeros(32, np.float32))
    with pytest.raises(InputError, match="queries: row 1 is all zeros"):
        index.batch_search(Z)
    assert len(index) == 20  # the refused add stored nothing


def test_a_batch_that_fails_midway_is_not_half_added(kind, monkeypatch):
    """The table is written before FAISS; if FAISS fails, the rows go again and the ids stay free."""
    index, X = filled(kind, n=20)

    def broken(self, E, ids):
        raise MemoryError("no room")

    monkeypatch.setattr(vectors_module.VectorStore, "add", broken)
    with pytest.raises(MemoryError):
        index.add_embeddings(X[:3], ids=[100, 101, 102], labels=["x"] * 3)
    assert len(index) == 20 and index.get([100]) == [None]
    monkeypatch.undo()
    assert index.add_embeddings(X[:3], ids=[100, 101, 102]).tolist() == [100, 101, 102]
    assert index.get(np.array([100], dtype=np.int32))[0].id == 100 and index.get([]) == []
    for bad in (["a"], [1.5]):
        with pytest.raises(InputError, match="ids must be integers"):
            index.get(bad)


# -- approximate against exact ------------------------------------------------------------------------------
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


def test_hnsw_finds_k_live_items_however_many_are_removed():
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((50, 32))
    X = (centres[rng.integers(0, 50, 20_000)] + 0.8 * rng.standard_normal((20_000, 32))).astype(np.float32)
    Q = X[rng.integers(0, 20_000, 50)] + 0.1
    hnsw = EmbeddingIndex(dim=32, kind="hnsw")
    hnsw.add_embeddings(X)
    order = rng.permutation(20_000)
    kept = 20_000
    for keep in (12_000, 30):  # a graph with 40% tombstones, then one that is nearly all tombstones
        hnsw.remove(order[keep:kept].tolist())
        kept = keep
        live = np.sort(order[:keep])
        flat = EmbeddingIndex(dim=32, kind="flat")
        flat.add_embeddings(X[live], ids=live)
        Df, If = flat.search_embeddings(Q, k=10)
        Dh, Ih = hnsw.search_embeddings(Q, k=10)
        assert (Ih >= 0).all()  # ten live hits for every query
        hits = [(np.isin(Ih[q], If[q]) | (Dh[q] >= Df[q, -1] - 1e-6)).sum() for q in range(len(Q))]
        assert np.mean(hits) / 10 >= 0.95, keep
    # a k far past the index's size costs the index's size, not k
    D, I = flat.search_embeddings(Q[:2], k=10**9)
    assert D.shape == I.shape == (2, 30) and (I >= 0).all()


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
    with pytest.raises(InputError, match="still in the HNSW graph; call compact"):
        again.add_embeddings(X[:1], ids=[0])
    again.compact()
    assert again.info()["removed_pending_compaction"] == 0 and again._vectors.ntotal == 298
    assert 0 not in again.search_embeddings(X[:1], k=3)[1]
    again.add_embeddings(X[:1], ids=[0])  # free again once compacted
    assert again.search_embeddings(X[:1], k=1)[1][0, 0] == 0


# -- filter semantics ---------------------------------------------------------------------------------------
def typed_index() -> EmbeddingIndex:
    index = EmbeddingIndex(dim=4)
    metadata = [
        {"flag": True, "n": 1, "lang": "en"},
        {"flag": False, "n": 1.0, "lang": "fr"},
        {"flag": 1, "n": "1", "lang": None},
        {"n": 2},
        {"flag": None, "odd key's \"q": 1},
    ]
    index.add_embeddings(np.eye(5, 4, dtype=np.float32) + 0.1, labels=["a", "b", "a", None, "c"], metadata=metadata)
    return index


def ids_of(index: EmbeddingIndex, where) -> list[int]:
    return sorted(h.id for h in index.search(np.ones(4, dtype=np.float32), k=10, where=where))


def test_filters_match_by_json_type_and_value():
    index = typed_index()
    assert ids_of(index, {"flag": True}) == [0]  # True never matches the number 1
    assert ids_of(index, {"flag": 1}) == [2]  # and 1 never matches True
    assert ids_of(index, {"n": 1}) == [0, 1]  # 1 and 1.0 are one number; "1" is a string
    assert ids_of(index, {"n": "1"}) == [2]
    assert ids_of(index, {"lang": None}) == [2, 3, 4]  # None: null or missing
    assert ids_of(index, {"label": None}) == [3]
    assert ids_of(index, {"label": ["a", "c"], "flag": [True, None]}) == [0, 4]


def test_a_field_holding_lists_matches_the_values_they_hold():
    index = EmbeddingIndex(dim=4)
    meta = [{"tags": ["sale", "new"]}, {"tags": ["old"]}, {"tags": "sale"}, {"tags": [3, True]}, {"tags": []}, {}]
    index.add_embeddings(np.eye(6, 4, dtype=np.float32) + 0.1, metadata=meta)
    assert ids_of(index, {"tags": "sale"}) == [0, 2]  # in a list, or the value itself
    assert ids_of(index, {"tags": ["new", "old"]}) == [0, 1]  # any of them
    assert ids_of(index, {"tags": 3}) == [3] and ids_of(index, {"tags": True}) == [3]  # by JSON type, as elsewhere
    assert ids_of(index, {"tags": 1}) == [] and ids_of(index, {"tags": None}) == [5]
    assert ids_of(index, {"tags": "sale", "id": [2, 5]}) == [2]


def test_a_value_of_a_kind_a_fields_lists_never_hold_is_refused(tmp_path):
    index = EmbeddingIndex(dim=4)
    meta = [{"codes": ["1", "2"], "nums": [1, 2]}, {"codes": ["3"], "nums": [3], "mixed": ["a"]}, {"mixed": 5}]
    index.add_embeddings(np.eye(3, 4, dtype=np.float32) + 0.1, metadata=meta)
    with pytest.raises(InputError, match=r"is a number, but the field 'codes' holds lists of string; did you mean '1'"):
        index.search(np.ones(4), where={"codes": 1})
    assert index.remove(where={"codes": 1}) == 0  # a removal matches nothing instead, so that it can be rerun
    with pytest.raises(InputError, match="is a string, but the field 'nums' holds lists of number"):
        index.search(np.ones(4), where={"nums": "1"})
    assert ids_of(index, {"mixed": 5}) == [2] and ids_of(index, {"mixed": "a"}) == [1]  # a scalar, or a member
    with pytest.raises(InputError, match="holds number, lists of string"):
        index.search(np.ones(4), where={"mixed": True})
    assert index.filter_kinds()["codes"] == {"string"} and index.field_kinds()["codes"] == {"array"}
    # what the remaining lists hold, after a removal and through a save
    index.remove([0, 1])
    assert "codes" not in index.filter_kinds() and index.filter_kinds()["mixed"] == {"number"}
    index.add_embeddings(np.ones((1, 4), dtype=np.float32), ids=[7], metadata=[{"codes": [4]}])
    index.save(tmp_path / "ix")
    again = EmbeddingIndex.load(tmp_path / "ix")
    assert again.filter_kinds()["codes"] == {"number"} and ids_of(again, {"codes": 4}) == [7]
    with pytest.raises(InputError, match="is a string, but the field 'codes' holds lists of number"):
        again.search(np.ones(4), where={"codes": "4"})


def test_filters_match_keys_of_any_characters():
    # the stored JSON escapes them (caf\u00e9); a filter names the key as the user wrote it
    index = EmbeddingIndex(dim=4)
    meta = [{"café": "a", "日本": 1, "x\\y": True}, {"café": "b", "日本": 2.0, "x\\y": None}, {"plain": "q"}]
    index.add_embeddings(np.eye(3, 4, dtype=np.float32) + 0.1, metadata=meta)
    assert ids_of(index, {"café": "a"}) == [0] and ids_of(index, {"日本": 2}) == [1]
    assert ids_of(index, {"x\\y": True}) == [0] and ids_of(index, {"x\\y": None}) == [1, 2]


def test_filters_that_cannot_match_are_refused_not_answered_empty():
    index = typed_index()
    with pytest.raises(InputError, match="no item has the metadata field 'colour'"):
        index.search(np.ones(4), where={"colour": "red"})
    with pytest.raises(InputError, match="did you mean '3'"):
        index.search(np.ones(4), where={"label": 3})  # labels are strings here
    with pytest.raises(InputError, match="empty list"):
        index.search(np.ones(4), where={"lang": []})
    with pytest.raises(InputError, match="NaN"):
        index.search(np.ones(4), where={"n": float("nan")})
    with pytest.raises(InputError, match="cannot filter on"):
        index.search(np.ones(4), where={"lang": [["en"]]})
    with pytest.raises(InputError, match="double quotes"):
        index.search(np.ones(4), where={'a"b': 1})
    with pytest.raises(InputError, match="integer ids"):
        index.search(np.ones(4), where={"id": "3"})


def test_a_field_whose_items_are_all_removed_is_forgotten_in_memory_as_after_a_reload(tmp_path):
    index = typed_index()
    index.remove([0, 1])  # the only items with lang "en"/"fr" (a string)
    index.remove([4])  # the only item with the odd key: removing it must not trip over its quote
    again = EmbeddingIndex.load(index.save(tmp_path / "typed"))
    for copy in (index, again):
        with pytest.raises(InputError, match="the field 'lang' holds no values"):
            copy.search(np.ones(4), where={"lang": "en"})  # only the null of item 2 is left
        assert ids_of(copy, {"flag": 1}) == [2] and ids_of(copy, {"n": 2}) == [3]
        with pytest.raises(InputError, match="bool.* but the field 'flag' holds number"):
            copy.search(np.ones(4), where={"flag": True})
    index.remove([2])
    with pytest.raises(InputError, match="no item has the metadata field 'flag'"):
        index.search(np.ones(4), where={"flag": 1})
    # keys stored escaped in JSON (non-ASCII, a backslash) and the labels' kinds are forgotten the same way
    odd = EmbeddingIndex(dim=4)
    meta = [{"café": "a"}, {"café": "b"}, {"x\\y": 1}]
    vectors = np.eye(3, 4, dtype=np.float32) + 0.1
    odd.add_embeddings(vectors[:1], labels=[3], metadata=meta[:1])
    odd.remove([0])  # the number kind of the labels goes with it: text labels may come now
    odd.add_embeddings(vectors[1:], labels=["a", "b"], metadata=meta[1:])
    odd.remove([2])
    reloaded = EmbeddingIndex.load(odd.save(tmp_path / "odd"))
    for copy in (odd, reloaded):
        assert copy.field_kinds() == {"café": {"string"}, "label": {"string"}}
        with pytest.raises(InputError, match="the labels hold string"):
            copy.search(np.ones(4), where={"label": 3})


def test_nan_and_infinite_metadata_are_refused_at_add_and_nothing_is_stored():
    index = typed_index()
    for bad in ({"score": float("nan")}, {"score": float("inf")}, {"nested": [1.0, float("-inf")]}):
        with pytest.raises(InputError, match="NaN or infinity"):
            index.add_embeddings(np.ones((1, 4)), metadata=[bad])
    assert len(index) == 5 and ids_of(index, {"n": 2}) == [3]  # filtered search still works
    # what could be stored but never filtered on, or returned by a search, is refused at add too
    deep: dict = {"n": 1}
    for _ in range(40):
        deep = {"n": deep}
    for bad, message in [
        (deep, "nested more than 32 levels deep"),
        ({"big": 2**70}, "outside the 64-bit integers"),
        ({"a": [1, {"b": -(2**64)}]}, "outside the 64-bit integers"),
    ]:
        with pytest.raises(InputError, match=message):
            index.add_embeddings(np.ones((1, 4)), metadata=[bad])
    with pytest.raises(InputError, match=r"labels\[0\] is 1180591620717411303424, outside the 64-bit"):
        index.add_embeddings(np.ones((1, 4)), labels=[2**70])  # a label filters as metadata does
    assert len(index) == 5
    index.add_embeddings(np.ones((1, 4)), metadata=[{"big": 2**62, "list": [[[1]]]}])
    assert len(index.search_embeddings(np.ones(4), k=10)[1][0]) == 6


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 1.5, -2.0]),
    st.sampled_from(["", "a", "b", "1", "é"]),
)
KEYS = st.sampled_from(["x", "y", "z w", "ünï", "x'q"])


def reference_match(meta: dict, label, where: dict) -> bool:
    """The documented semantics in plain Python."""

    def one(stored_present: bool, stored, v) -> bool:
        if v is None:
            return not stored_present or stored is None
        if not stored_present or stored is None:
            return False
        if isinstance(v, bool) or isinstance(stored, bool):
            return isinstance(v, bool) and isinstance(stored, bool) and v == stored
        if isinstance(v, (int, float)) and isinstance(stored, (int, float)):
            return float(v) == float(stored)
        return type(v) is type(stored) and v == stored

    def member(stored, v) -> bool:  # a list matches a (non-None) value it holds
        if isinstance(stored, list) and v is not None:
            return any(one(True, s, v) for s in stored)
        return one(key in meta, stored, v)

    for key, values in where.items():
        values = values if isinstance(values, list) else [values]
        if key == "label":
            ok = any(one(label is not None, label, v) for v in values)
        else:
            ok = any(member(meta.get(key), v) for v in values)
        if not ok:
            return False
    return True


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(
    metas=st.lists(
        st.dictionaries(KEYS, st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=3), min_size=1, max_size=12
    ),
    labels=st.lists(st.one_of(st.none(), st.sampled_from(["a", "b"])), min_size=12, max_size=12),
    where=st.dictionaries(
        st.one_of(KEYS, st.just("label")), st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), min_size=1, max_size=2
    ),
)
def test_where_agrees_with_a_python_reference_or_says_why_not(metas, labels, where):
    index = EmbeddingIndex(dim=3)
    n = len(metas)
    index.add_embeddings(np.ones((n, 3), dtype=np.float32), labels=labels[:n], metadata=metas)
    try:
        found = index.search_embeddings(np.ones(3), k=n, where=where)[1][0]
    except InputError as exc:  # refused: it must be a filter that could never match
        assert not any(reference_match(m, lab, where) for m, lab in zip(metas, labels[:n])), str(exc)
        return
    expected = [i for i, (m, lab) in enumerate(zip(metas, labels[:n])) if reference_match(m, lab, where)]
    assert sorted(int(i) for i in found if i >= 0) == expected


# -- encoders and files -------------------------------------------------------------------------------------
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


def test_add_checks_labels_and_metadata_before_encoding():
    enc = FakeEncoder(dim=16)
    index = EmbeddingIndex(encoder=enc)
    with pytest.raises(InputError, match="metadata\\[1\\] must be a dict"):
        index.add(["a", "b"], metadata=[{}, "not a dict"])
    assert enc.calls == 0  # nothing was encoded for a batch that could not be stored
    for key in ("id", "label"):  # where={"id": ...} means the item's own id: such a field could never be found
        with pytest.raises(InputError, match=f"the key '{key}', a field every item has"):
            index.add(["a"], metadata=[{key: "doc-1"}])
    assert enc.calls == 0
    # labels of one kind: where={"label": 5} reads 5 as the labels' kind, which must be one
    with pytest.raises(InputError, match=r"labels\[1\] is a number \(5\), but labels\[0\] is text.*give \"5\""):
        index.add(["a", "b"], labels=["x", 5])
    assert enc.calls == 0
    index.add(["a", "b"], labels=["x", None])
    with pytest.raises(InputError, match=r"labels\[0\] is a boolean \(True\), but the index's labels are text"):
        index.add(["c"], labels=[True])
    assert len(index) == 2 and index.field_kinds()["label"] == {"string", "null"}


def test_real_encoder_recorded_and_recreated(tmp_path, text_encoder):
    index = EmbeddingIndex(encoder=text_encoder)
    index.add(["The cat sat on the mat.", "Stocks fell sharply on Monday.", "The striker scored a goal."])
    index.save(tmp_path / "r")
    again = EmbeddingIndex.load(tmp_path / "r")  # encoder recreated from the manifest
    assert again.search("football match", k=1)[0].id == 2
    with pytest.raises(EncoderMismatchError):
        EmbeddingIndex.load(tmp_path / "r", encoder=FakeEncoder(dim=384))


def test_truncated_corrupt_edited_and_inconsistent_files(tmp_path):
    from tests.conftest import rewrite_manifest

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
    edited = dict(manifest, name="renamed by hand")
    (path / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(CorruptFileError, match="manifest was edited"):
        EmbeddingIndex.load(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        EmbeddingIndex.load(path)
    (path / "manifest.json").write_text(json.dumps(manifest))
    rewrite_manifest(path, lambda m: m.update(count=51))
    with pytest.raises(CorruptFileError, match="inconsistent"):
        EmbeddingIndex.load(path)
    rewrite_manifest(path, lambda m: m.pop("dim"))
    with pytest.raises(CorruptFileError, match="lacks or garbles"):
        EmbeddingIndex.load(path)
    from fewshot import FewShotClassifier, FewShotError, ZeroShotClassifier

    (tmp_path / "a-file").write_text("not a save")
    for missing in (tmp_path / "missing", tmp_path / "a-file"):
        for loader in (EmbeddingIndex.load, FewShotClassifier.load, ZeroShotClassifier.load):
            with pytest.raises(FewShotError, match="no saved") as caught:  # one type to catch, and the built-in
                loader(missing)
            assert isinstance(caught.value, FileNotFoundError)


def test_save_refuses_a_folder_with_foreign_files_and_never_deletes_them(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    index, _ = filled("flat", n=5)
    with pytest.raises(InputError, match="did not write"):
        index.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    # a note left beside a save survives every later save
    path = index.save(tmp_path / "ix")
    (path / "notes.txt").write_text("keep me")
    index.add_embeddings(vectors(2, 32, seed=9))
    index.save(path)
    index.save(path)
    assert (path / "notes.txt").read_text() == "keep me"
    assert len(EmbeddingIndex.load(path)) == 7


def test_bare_name_saves_under_index_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_INDEX_DIR", str(tmp_path / "store"))
    index, X = filled("flat", n=5)
    index.name = "news"
    assert index.save() == tmp_path / "store" / "news"
    assert len(EmbeddingIndex.load("news")) == 5
    for bad in ("../../outside", "..", "", "a/b"):  # a name never leads out of the index folder
        with pytest.raises(InputError, match="not a path"):
            EmbeddingIndex(dim=4, name=bad)
        index.name = bad
        with pytest.raises(InputError, match="not a path"):
            index.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_a_stale_copy_cannot_overwrite_a_newer_save(tmp_path):
    index, X = filled("flat", n=10)
    path = index.save(tmp_path / "s")
    a, b = EmbeddingIndex.load(path), EmbeddingIndex.load(path)
    a.add_embeddings(X[:1], ids=[100])
    a.save(path)
    b.add_embeddings(X[:1], ids=[200])
    with pytest.raises(ConcurrentWriteError, match="another writer"):
        b.save(path)
    assert EmbeddingIndex.load(path).get([100, 200])[1] is None and len(EmbeddingIndex.load(path)) == 11
    with EmbeddingIndex.update(path) as fresh:  # the way to make b's change: under the lock, on the latest
        fresh.add_embeddings(X[:1], ids=[200])
    assert len(EmbeddingIndex.load(path)) == 12


def test_a_new_index_does_not_replace_one_saved_under_its_name_unless_told(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_INDEX_DIR", str(tmp_path / "indexes"))
    first, X = filled("flat", n=10)
    first.name = "docs"
    folder = first.save()
    second = EmbeddingIndex(dim=32, name="docs")  # another process building "docs" from scratch
    second.add_embeddings(X[:3])
    with pytest.raises(SaveExistsError, match="already holds an index \\('docs', 10 items\\).*overwrite=True"):
        second.save()
    assert len(EmbeddingIndex.load(folder)) == 10  # nothing lost
    assert isinstance(SaveExistsError("x"), ConcurrentWriteError)  # the service answers it as a conflict
    assert second.save(overwrite=True) == folder and len(EmbeddingIndex.load(folder)) == 3
    first.add_embeddings(X[:1], ids=[99])  # the index it replaced is now the stale copy
    with pytest.raises(ConcurrentWriteError, match="another writer"):
        first.save()
    second.add_embeddings(X[:1])  # saving again where it saved needs no overwrite
    second.save()
    assert len(EmbeddingIndex.load(folder)) == 4
    big = EmbeddingIndex(dim=32, kind="ivfpq", name="docs", ivfpq={"train_size": 256, "nlist": 8, "m": 8, "nbits": 6})
    big.add_embeddings(vectors(300, 32))
    assert big.structure == "ivfpq"  # vectors on disk, saved under the lock: the same refusal
    with pytest.raises(SaveExistsError):
        big.save(folder)
    assert len(EmbeddingIndex.load(folder)) == 4


def test_a_journal_counts_its_net_items_from_headers_alone(tmp_path):
    """What a listing of indexes reads instead of loading each: the journal's adds less its removals."""
    from fewshot.index import journal
    from fewshot.storage import read_manifest

    index, X = filled("flat", n=10)
    path = index.save(tmp_path / "s")
    durable = EmbeddingIndex.open(path)
    durable.add_embeddings(X[:4], ids=[100, 101, 102, 103])
    durable.remove([100, 3, 999])  # 999 is absent: not journalled, not counted
    durable.close(checkpoint=False)  # as a killed server leaves it
    log = journal.journal_path(path, read_manifest(path)["save_id"])
    assert journal.count_change(log) == 2 and read_manifest(path)["count"] == 10
    assert len(EmbeddingIndex.load(path)) == 12
    with open(log, "ab") as f:  # a torn last write, never acknowledged, is not counted
        f.write(journal.add_record(np.array([7]), X[:1], [None], ["{}"], [None])[:-3])
    assert journal.count_change(log) == 2 and journal.count_change(tmp_path / "none.log") == 0


def test_a_copy_cannot_drop_writes_journalled_or_saved_since_it_was_loaded(tmp_path):
    index, X = filled("flat", n=10)
    path = index.save(tmp_path / "s")
    stale = EmbeddingIndex.load(path)
    durable = EmbeddingIndex.open(path)
    durable.add_embeddings(X[:2], ids=[100, 101])  # acknowledged: in the journal on disk
    durable.close(checkpoint=False)  # as a killed server leaves it
    stale.add_embeddings(X[:1], ids=[200])
    with pytest.raises(ConcurrentWriteError, match="added to this index"):
        stale.save(path)
    assert len(EmbeddingIndex.load(path)) == 12  # the journalled writes are still there
    # a copy that saved elsewhere in between still knows the folder it came from
    a, b = EmbeddingIndex.load(path), EmbeddingIndex.load(path)
    a.save(tmp_path / "backup")
    b.add_embeddings(X[:1], ids=[300])
    b.save(path)
    a.add_embeddings(X[:1], ids=[400])
    with pytest.raises(ConcurrentWriteError, match="another writer"):
        a.save(path)
    assert EmbeddingIndex.load(path).get([300])[0] is not None


def test_save_goes_back_where_the_index_came_from(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_INDEX_DIR", str(tmp_path / "indexes"))
    index, X = filled("flat", n=5)
    index.save()  # a new index: indexes/<name>/
    custom = EmbeddingIndex.load(index.save(tmp_path / "custom"))
    custom.add_embeddings(X[:1], ids=[50])
    assert custom.save() == tmp_path / "custom"  # not indexes/<name>/, which holds another save
    assert len(EmbeddingIndex.load(tmp_path / "indexes" / index.name)) == 5
    assert len(EmbeddingIndex.load(tmp_path / "custom")) == 6
    # saving to the folder an open() or update() index holds uses its lock instead of waiting for it
    with EmbeddingIndex.open(tmp_path / "custom", timeout=2) as durable:
        durable.add_embeddings(X[:1], ids=[51])
        assert durable.save() == tmp_path / "custom"
        assert len(EmbeddingIndex.load(tmp_path / "custom")) == 7
    with EmbeddingIndex.update(tmp_path / "custom", timeout=2) as held:
        held.add_embeddings(X[:1], ids=[52])
        held.save()
    assert len(EmbeddingIndex.load(tmp_path / "custom")) == 8


def test_update_saves_only_when_the_block_succeeds(tmp_path):
    path = tmp_path / "u"
    with EmbeddingIndex.update(path, create=True, dim=8) as index:
        index.add_embeddings(vectors(3, 8))
    with pytest.raises(RuntimeError), EmbeddingIndex.update(path) as index:
        index.add_embeddings(vectors(3, 8, seed=1))
        raise RuntimeError("changed my mind")
    assert len(EmbeddingIndex.load(path)) == 3


def test_a_killed_first_save_leaves_a_folder_the_next_save_takes_over(tmp_path):
    path = tmp_path / "first"
    path.mkdir()
    (path / "index-0badc0de.faiss").write_bytes(b"half a faiss file")  # all a killed first save leaves
    (path / ".fewshot-0badc0de.tmp").write_text("{")
    index, _ = filled("flat", n=5)
    index.save(path)
    manifest = json.loads((path / "manifest.json").read_text())
    expected = {"manifest.json", ".fewshot.lock", *(f["name"] for f in manifest["files"].values())}
    assert {p.name for p in path.iterdir()} == expected  # the leftovers are gone
    assert len(EmbeddingIndex.load(path)) == 5


# -- threads ---------------------------------------------------------------------------------------------------
def test_searches_from_a_pool_while_another_thread_adds_never_see_half_a_batch():
    dim, batches, size = 16, 60, 10
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((batches, dim)).astype(np.float32)
    index = EmbeddingIndex(dim=dim)
    index.add_embeddings(rng.standard_normal((50, dim)).astype(np.float32), labels=[-1] * 50)
    errors: list[BaseException] = []
    seen_sizes: set[int] = set()
    done = threading.Event()

    def writer():
        for b in range(batches):
            index.add_embeddings(np.repeat(centres[b : b + 1], size, axis=0), labels=[b] * size)
        done.set()

    def reader(b: int) -> None:
        while not done.is_set():
            hits = index.search(centres[b], k=size + 5, where={"label": b})
            seen_sizes.add(len(hits))
            if len(hits) not in (0, size):
                raise AssertionError(f"a search saw {len(hits)} of a batch of {size}")

    t = threading.Thread(target=writer)
    with ThreadPoolExecutor(4) as pool:
        t.start()
        futures = [pool.submit(reader, b) for b in (5, 20, 40, 59)]
        t.join()
        for f in futures:
            try:
                f.result()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
    assert not errors, errors
    assert len(index) == 50 + batches * size and seen_sizes <= {0, size}


# -- processes: two writers, and SIGKILL -----------------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    import numpy as np
    from fewshot import EmbeddingIndex
    path, start, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(start)
    for r in range(rounds):
        ids = list(range(start + 10 * r, start + 10 * r + 10))
        with EmbeddingIndex.update(path, create=True, dim=8) as index:
            index.add_embeddings(rng.standard_normal((10, 8)).astype(np.float32), ids=ids)
        print("acked", *ids, flush=True)
    """
)


def test_two_writer_processes_lose_nothing(tmp_path):
    path = tmp_path / "shared"
    script = WRITER.format(repo=str(REPO))
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), str(start), "15"], stdout=subprocess.PIPE, text=True)
        for start in (0, 100_000)
    ]
    acked = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        acked += [int(i) for line in out.splitlines() for i in line.split()[1:]]
    index = EmbeddingIndex.load(path)
    assert len(acked) == 300 and len(index) == 300
    assert all(hit is not None for hit in index.get(acked))


CRASHER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    import numpy as np
    from fewshot import EmbeddingIndex
    path = sys.argv[1]
    rng = np.random.default_rng(int(sys.argv[2]))
    print("ready", flush=True)
    while True:
        with EmbeddingIndex.update(path, create=True, dim=8) as index:
            n = len(index)
            index.add_embeddings(rng.standard_normal((5, 8)).astype(np.float32), ids=list(range(n, n + 5)))
        print("acked", n + 5, flush=True)
    """
)


def _started(script: str, path: Path, seed: int) -> subprocess.Popen:
    """A writer child that has imported everything and is about to write (it printed "ready"), so that the
    random delay before the kill falls among its writes whatever the machine's load."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), str(seed)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _acked(out: str) -> list[int]:
    """The counts a killed child acknowledged: whole "acked N" lines only, since the kill may cut the last one."""
    return [int(m.group(1)) for m in re.finditer(r"^acked (\d+)\n", out, flags=re.MULTILINE)]


def test_random_sigkills_during_saves_never_lose_an_acknowledged_batch(tmp_path):
    """20 children save in a loop (the very first save included) and are killed at random moments."""
    path = tmp_path / "crash"
    script = CRASHER.format(repo=str(REPO))
    rng = np.random.default_rng(7)
    acked = 0
    for kill in range(20):
        proc = _started(script, path, kill)
        time.sleep(float(rng.uniform(0.0, 0.4)))  # from the first save on: early kills hit the very first one
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        acked = max([acked, *_acked(out)])
        if not Path(path, "manifest.json").exists():
            assert acked == 0  # killed before its first save finished: nothing was acknowledged
            continue
        index = EmbeddingIndex.load(path)  # always loadable and consistent
        assert len(index) >= acked and len(index) % 5 == 0
        assert all(hit is not None for hit in index.get(list(range(acked))))
    assert acked > 0


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
        import fewshot.storage.bundle as bundle
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
            bundle._sha256_file = die
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
    names = sorted(p.name for p in path.iterdir() if p.name != ".fewshot.lock")
    assert len(names) == 3 and "manifest.json" in names


def test_pickled_index_searches_the_same():
    import pickle

    index, X = filled("hnsw", n=200)
    index.remove([3])
    again = pickle.loads(pickle.dumps(index))
    assert [h.id for h in again.search(X[3], k=5)] == [h.id for h in index.search(X[3], k=5)]
    assert again.info()["removed_pending_compaction"] == 1 and len(again) == 199


def test_readers_keep_loading_while_a_writer_saves(tmp_path):
    path = tmp_path / "busy"
    index, X = filled("flat", n=50)
    index.save(path)
    stop, errors, loads = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            try:
                n = len(EmbeddingIndex.load(path))
                assert n >= 50 and (n - 50) % 3 == 0
                loads[0] += 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(30):
        with EmbeddingIndex.update(path) as w:
            w.add_embeddings(vectors(3, 32, seed=100 + i))
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    assert loads[0] > 0 and len(EmbeddingIndex.load(path)) == 50 + 90


# -- a durable index: the journal ------------------------------------------------------------------------------
def test_durable_writes_are_readable_before_any_checkpoint_and_survive_a_torn_tail(tmp_path):
    from fewshot.errors import LockTimeoutError
    from fewshot.index import journal

    path = tmp_path / "durable"
    index = EmbeddingIndex.open(path, create=True, dim=8, timeout=0.5)
    index.add_embeddings(vectors(4, 8), labels=["a", "b", "a", "b"], metadata=[{"n": i} for i in range(4)])
    assert index.remove([1]) == 1
    other = EmbeddingIndex.load(path)  # save + journal, as a reader sees them
    assert len(other) == 3 and other.get([1]) == [None] and other.get([2])[0].metadata == {"n": 2}
    with pytest.raises(LockTimeoutError):  # a second writer waits, then gives up: never a lost write
        with EmbeddingIndex.update(path, timeout=0.2):
            pass
    save_id = json.loads((path / "manifest.json").read_text())["save_id"]
    log = journal.journal_path(path, save_id)
    with open(log, "ab") as f:  # a writer killed in the middle of its next frame
        f.write(journal.add_record(np.array([9]), vectors(1, 8), [None], ["{}"], [None])[:-5])
    assert len(EmbeddingIndex.load(path)) == 3  # the torn frame was never acknowledged: dropped
    index.close()
    assert not log.exists() and len(EmbeddingIndex.load(path)) == 3  # checkpointed, journal gone
    reopened = EmbeddingIndex.open(path)
    reopened.add_embeddings(vectors(1, 8, seed=3))
    reopened.close(checkpoint=False)
    assert len(EmbeddingIndex.load(path)) == 4


def test_an_id_added_again_after_a_durable_compaction_is_found_by_readers_and_the_next_writer(tmp_path, monkeypatch):
    E = vectors(10, 8)
    path = tmp_path / "durable"
    writer = EmbeddingIndex.open(path, create=True, dim=8, kind="hnsw")
    writer.add_embeddings(E, ids=np.arange(10))
    writer.remove([5])
    writer.compact()  # a new save: the journal holds no compactions to replay
    writer.add_embeddings(-E[5:6], ids=[5], metadata=[{"v": 2}])
    for index in (writer, EmbeddingIndex.load(path)):
        assert [h.id for h in index.search(-E[5], k=1)] == [5] and index.get([5])[0].metadata == {"v": 2}
    writer.close(checkpoint=False)
    again = EmbeddingIndex.open(path)  # replays the journal over the compacted save
    assert [h.id for h in again.search(-E[5], k=1)] == [5] and again.info()["removed_pending_compaction"] == 0
    again.compact()
    again.close()
    assert [h.id for h in EmbeddingIndex.load(path).search(-E[5], k=1)] == [5] and len(EmbeddingIndex.load(path)) == 10
    # a journal holding remove, then add of the same id with a compaction between (no save after it): the
    # replay compacts there as its writer had, so the id is neither lost to searches nor saved inconsistent
    monkeypatch.setattr(EmbeddingIndex, "checkpoint", lambda self: None)
    old = EmbeddingIndex.open(path)
    old.remove([7])
    old.compact()
    old.add_embeddings(-E[7:8], ids=[7])
    old.close(checkpoint=False)
    monkeypatch.undo()
    replayed = EmbeddingIndex.load(path)
    assert [h.id for h in replayed.search(-E[7], k=1)] == [7] and replayed.info()["removed_pending_compaction"] == 0
    replayed.save()
    assert [h.id for h in EmbeddingIndex.load(path).search(-E[7], k=1)] == [7]
    replayed._vectors.removed.add(99)  # a state load() would refuse is never written over a good save
    with pytest.raises(FewShotError, match="10 items and 1 removed ones, but 10 vectors; nothing was saved"):
        replayed.save()
    assert len(EmbeddingIndex.load(path)) == 10


def test_settings_that_the_saved_index_contradicts_are_refused_not_dropped(tmp_path):
    path = tmp_path / "held"
    with EmbeddingIndex.update(path, create=True, dim=8, kind="flat") as index:
        index.add_embeddings(vectors(3, 8))
    with pytest.raises(InputError, match=r"holds an index with dim=8, kind='flat'; dim=16, kind='hnsw' would make"):
        EmbeddingIndex.open(path, create=True, dim=16, kind="hnsw")
    with pytest.raises(InputError, match="kind='hnsw' would make a new one"):
        with EmbeddingIndex.update(path, kind="hnsw"):
            pass
    with pytest.raises(InputError, match="with hnsw_m=32; hnsw_m=64 would make a new one"):
        EmbeddingIndex.open(path, hnsw_m=64)
    with pytest.raises(InputError, match=r"with ivfpq=IVFPQSettings\(nlist=0.*; ivfpq=IVFPQSettings\(nlist=64"):
        EmbeddingIndex.open(path, ivfpq={"nlist": 64})
    with pytest.raises(InputError, match="unknown index setting.s. hnsw_M; the settings are dim, kind, name, hnsw_m"):
        EmbeddingIndex.open(path, hnsw_M=64)  # a typo is not dropped either
    for where, create in ((tmp_path / "empty", True), (tmp_path / "empty", False), (path, False)):
        with pytest.raises(InputError, match="unknown index setting.s. hnsw_M"):  # before the folder is looked at
            EmbeddingIndex.open(where, create=create, dim=8, hnsw_M=3)
    assert not (tmp_path / "empty").exists()
    # a value that is no setting is refused as the constructor refuses it, not called a contradiction
    for bad, message in (
        ({"kind": "bogus"}, "unknown index kind 'bogus'"),
        ({"dim": 8.0}, "dim must be a positive integer"),
        ({"hnsw_m": True}, "hnsw_m must be a positive integer"),
        ({"ivfpq": 5}, "ivfpq settings must be a dict"),
    ):
        with pytest.raises(InputError, match=message):
            EmbeddingIndex.open(path, create=True, **bad)
    assert EmbeddingIndex.load(path).info()["count"] == 3  # nothing written by the refusals
    with EmbeddingIndex.open(path, create=True, dim=8, kind="flat", hnsw_m=32, ivfpq={}) as same:  # what it holds
        assert len(same) == 3


def test_a_damaged_journal_is_reported(tmp_path):
    from fewshot.index import journal

    path = tmp_path / "d"
    index = EmbeddingIndex.open(path, create=True, dim=8)
    index.add_embeddings(vectors(2, 8))
    index.add_embeddings(vectors(2, 8, seed=1))
    log = journal.journal_path(path, index._saved_at[1])
    whole = log.read_bytes()
    data = bytearray(whole)
    data[30] ^= 0xFF  # inside the first of two frames
    log.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="journal"):
        EmbeddingIndex.load(path)
    data[30] ^= 0xFF
    data[-3] ^= 0xFF  # inside the last frame, whole: damage, not a write cut short
    log.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="fails its checksum.*moving its journal-\\*.log file aside"):
        EmbeddingIndex.load(path)
    data[-3] ^= 0xFF
    data[-40:] = bytes(40)  # whole, but its last pages never written (zeros): a crash cut it short, left out
    log.write_bytes(bytes(data))
    with pytest.warns(FewShotWarning, match="last record .* fails its checksum; it is left out"):
        assert len(EmbeddingIndex.load(path)) == 2
    log.write_bytes(whole + bytes(100))  # a write of which nothing reached the disk: zeros past the last frame
    with pytest.warns(FewShotWarning, match="the journal ends in 100 zero bytes; they are left out"):
        assert len(EmbeddingIndex.load(path)) == 4
    log.write_bytes(bytes(data))
    index.close(checkpoint=False)
    with pytest.warns(FewShotWarning) as said:  # a writer reopening it says so once, not once a reading
        EmbeddingIndex.open(path).close(checkpoint=False)
    assert sum("fails its checksum" in str(w.message) for w in said) == 1


def test_a_damaged_frame_length_is_not_taken_for_a_torn_tail(tmp_path):
    """A length field damaged to run past the end would look like a torn last write; whole frames after it
    say otherwise, so the journal is reported and a writer reopening it truncates nothing."""
    import struct

    from fewshot.index import journal

    path = tmp_path / "d"
    index = EmbeddingIndex.open(path, create=True, dim=4)
    for i in range(3):
        index.add_embeddings(np.eye(4, dtype=np.float32)[i : i + 1], labels=[f"l{i}"])
    log = journal.journal_path(path, index._saved_at[1])
    index.close(checkpoint=False)
    data = bytearray(log.read_bytes())
    struct.pack_into(">I", data, 4, struct.unpack_from(">I", data, 4)[0] + 100_000)  # the first header length
    log.write_bytes(bytes(data))
    for opener in (EmbeddingIndex.load, EmbeddingIndex.open):
        with pytest.raises(CorruptFileError, match="whole frames follow"):
            opener(path)
    assert log.read_bytes() == bytes(data)


DURABLE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    import numpy as np
    from fewshot import EmbeddingIndex
    rng = np.random.default_rng(int(sys.argv[2]))
    print("ready", flush=True)
    index = EmbeddingIndex.open(sys.argv[1], create=True, dim=8, checkpoint_bytes=3000)
    while True:
        n = len(index)
        index.add_embeddings(rng.standard_normal((5, 8)).astype(np.float32), ids=list(range(n, n + 5)))
        print("acked", n + 5, flush=True)
    """
)


def test_sigkill_of_a_durable_writer_loses_no_acknowledged_write(tmp_path):
    """A durable writer acknowledges each write after its fsync; killed at random moments (checkpoints
    included, every few writes), the folder always loads with every acknowledged item."""
    path = tmp_path / "wal"
    script = DURABLE.format(repo=str(REPO))
    rng = np.random.default_rng(11)
    acked = 0
    for kill in range(10):
        proc = _started(script, path, kill)
        time.sleep(float(rng.uniform(0.0, 0.6)))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        acked = max([acked, *_acked(out)])
        if not Path(path, "manifest.json").exists():
            assert acked == 0
            continue
        index = EmbeddingIndex.load(path)
        assert len(index) >= acked and all(h is not None for h in index.get(list(range(acked))))
    assert acked > 0


def test_a_lone_surrogate_is_refused_before_it_reaches_a_save(tmp_path):
    bad = json.loads('"x\\ud83d"')  # half an emoji, as a cut JSON escape gives it
    index = EmbeddingIndex(dim=8, name="s")
    index.add_embeddings(vectors(2, 8))
    index.save(tmp_path / "s")
    for kwargs, named in (
        ({"metadata": [{bad: 1}]}, "metadata[0] holds a lone surrogate"),
        ({"metadata": [{"k": [bad]}]}, "metadata[0] holds a lone surrogate"),
        ({"items": [bad]}, "items[0] holds a lone surrogate"),
        ({"labels": [bad]}, "labels[0] holds a lone surrogate"),
    ):
        with pytest.raises(InputError, match="^" + re.escape(named)):  # said as such, not as another fault
            index.add_embeddings(vectors(1, 8, seed=1), **kwargs)
    with pytest.raises(InputError, match="lone surrogate"):
        index.search(vectors(1, 8)[0], where={"label": bad})
    import pandas as pd

    for missing in (float("nan"), np.float32("nan"), pd.NA):  # a pandas column's missing labels: None is meant
        with pytest.raises(InputError, match=r"labels\[0\] is .* \(a missing value\); give None"):
            index.add_embeddings(vectors(1, 8, seed=1), labels=[missing])
    assert len(index) == 2
    index.save(tmp_path / "s")
    assert len(EmbeddingIndex.load(tmp_path / "s")) == 2  # the save still loads


def test_a_durable_add_that_fails_leaves_no_journal_record_behind(tmp_path, monkeypatch):
    from fewshot.index.metadata import MetadataTable

    path = tmp_path / "durable"
    index = EmbeddingIndex.open(path, create=True, dim=8)
    index.add_embeddings(vectors(3, 8), items=["a", "b", "c"])
    real = MetadataTable.insert

    def failing(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(MetadataTable, "insert", failing)
    with pytest.raises(sqlite3.OperationalError):
        index.add_embeddings(vectors(1, 8, seed=1), items=["refused"])
    monkeypatch.setattr(MetadataTable, "insert", real)
    index.add_embeddings(vectors(1, 8, seed=2), items=["e"])  # acknowledged after the refused one
    # a reader (or the writer's next start after a kill) applies the journal: every acknowledged write, nothing else
    other = EmbeddingIndex.load(path)
    assert len(other) == 4 and sorted(h.item for h in other.search(vectors(1, 8)[0], k=10)) == ["a", "b", "c", "e"]
    index.close()


def test_an_automatic_checkpoint_that_fails_is_a_warning_and_the_write_stands(tmp_path, monkeypatch):
    from fewshot.errors import FewShotWarning

    path = tmp_path / "durable"
    index = EmbeddingIndex.open(path, create=True, dim=8, checkpoint_bytes=0)  # a checkpoint after every write
    index.add_embeddings(vectors(2, 8), items=["a", "b"])
    real = EmbeddingIndex.checkpoint

    def disk_full(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(EmbeddingIndex, "checkpoint", disk_full)
    with pytest.warns(FewShotWarning, match="the write is in the journal.*No space left on device"):
        ids = index.add_embeddings(vectors(1, 8, seed=1), items=["c"])  # acknowledged, not raised (and retried)
    with pytest.warns(FewShotWarning):
        assert index.remove([0]) == 1
    assert ids.tolist() == [2] and len(index) == 2
    assert sorted(h.item for h in EmbeddingIndex.load(path).search(vectors(1, 8)[0], k=10)) == ["b", "c"]
    monkeypatch.setattr(EmbeddingIndex, "checkpoint", real)
    index.add_embeddings(vectors(1, 8, seed=2), items=["d"])  # the next checkpoint succeeds
    index.close()
    assert sorted(h.item for h in EmbeddingIndex.load(path).search(vectors(1, 8)[0], k=10)) == ["b", "c", "d"]


def test_the_largest_ids_are_taken_and_automatic_ids_past_them_are_refused_by_name():
    index = EmbeddingIndex(dim=8)
    top = 2**63 - 1
    assert index.add_embeddings(vectors(1, 8), ids=[top]).tolist() == [top]
    with pytest.raises(InputError, match="cannot number 1 more item.*pass ids="):
        index.add_embeddings(vectors(1, 8, seed=1))
    assert index.add_embeddings(vectors(1, 8, seed=2), ids=[5]).tolist() == [5]  # explicit ids still go in
    for too_big in (np.array([2**63 + 5], dtype=np.uint64), [2**64]):
        with pytest.raises(InputError, match=r"from 0 to 2\*\*63 - 1"):
            index.add_embeddings(vectors(1, 8, seed=3), ids=too_big)
    assert len(index) == 2
