"""The HTTP service: every route through FastAPI's test client with the real bundled MiniLM and real data,
its limits, errors, keys and coalescing, and a real uvicorn process for durability under SIGKILL and for two
servers on one root."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from eval.bench_service import ServerProcess, check_index, request  # noqa: E402
from eval.datasets import load, sample_per_class  # noqa: E402
from fewshot import EmbeddingIndex, FewShotClassifier, TextEncoder, ZeroShotClassifier  # noqa: E402
from fewshot.errors import InputError  # noqa: E402
from fewshot.serve import ServeSettings, create_app  # noqa: E402
from fewshot.serve.auth import digest, read_key_file  # noqa: E402
from fewshot.serve.batching import CoalescingEncoder, GroupCommit  # noqa: E402


def wait_ready(client: TestClient, timeout: float = 180.0) -> None:
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("the service never became ready")


@pytest.fixture
def serve(tmp_path):
    """A running app (lifespan and all) for ``ServeSettings(root=tmp_path / 'root', **overrides)``."""
    clients = []

    def make(**overrides) -> TestClient:
        root = overrides.pop("root", tmp_path / "root")
        client = TestClient(create_app(ServeSettings(root=root, **overrides)), base_url="http://localhost")
        client.__enter__()
        clients.append(client)
        wait_ready(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def agnews(data_root):
    ds = load("ag_news")
    tr = sample_per_class(ds.train_labels, 6, seed=0)
    te = sample_per_class(ds.test_labels, 10, seed=1)
    names = ds.label_names
    return (
        [ds.train_texts[i] for i in tr],
        [names[ds.train_labels[i]] for i in tr],
        [ds.test_texts[i] for i in te],
        [names[ds.test_labels[i]] for i in te],
    )


def error(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["message"]
    return body["error"]


# -- models ---------------------------------------------------------------------------------------------------
def test_fit_predict_add_examples_and_delete_match_the_library(serve, agnews, tmp_path):
    client = serve()
    Xtr, ytr, Xte, yte = agnews
    r = client.post("/v1/models/news", json={"inputs": Xtr, "labels": ytr})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["classes"]) == sorted(set(ytr)) and r.json()["examples"] == len(Xtr)

    r = client.post("/v1/models/news/predict", json={"inputs": Xte})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    accuracy = np.mean([p["label"] == t for p, t in zip(preds, yte)])
    assert accuracy >= 0.6, accuracy  # 4 classes: chance is 0.25
    # the same answers as the library on the saved model, read from disk (the fit was durable)
    clf = FewShotClassifier.load(tmp_path / "root" / "models" / "news")
    labels, best, proba = clf.predict_with_scores(Xte)
    assert [p["label"] for p in preds] == labels.tolist()
    for p, row, b in zip(preds, proba, best):
        assert list(p["probabilities"]) == [str(c) for c in clf.classes_]
        np.testing.assert_allclose(list(p["probabilities"].values()), row, atol=1e-5)
        assert p["probability"] == pytest.approx(row.max(), abs=1e-5) and p["score"] == pytest.approx(b, abs=1e-5)

    new = ["is there a student discount on the plan?", "how much does the premium tier cost per month?"]
    r = client.post("/v1/models/news/examples", json={"inputs": new, "labels": ["pricing", "pricing"]})
    assert r.status_code == 200 and "pricing" in r.json()["classes"]
    assert "pricing" in FewShotClassifier.load(tmp_path / "root" / "models" / "news").classes_.tolist()
    r = client.post("/v1/models/news/predict", json={"inputs": ["what is the price of the premium plan"]})
    assert r.json()["predictions"][0]["label"] == "pricing"

    info = client.get("/v1/models/news").json()
    assert info["type"] == "classifier" and info["head"] == "prototype" and "pricing" in info["classes"]
    assert info["encoder"]["family"] == "sentence-transformers"
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == ["news"]

    assert client.delete("/v1/models/news").json() == {"name": "news", "deleted": True}
    assert not (tmp_path / "root" / "models" / "news").exists()
    assert not list((tmp_path / "root" / "models").iterdir())
    assert error(client.post("/v1/models/news/predict", json={"inputs": ["x"]}))["code"] == "not_found"


def test_abstention_is_a_null_label_and_a_changed_save_is_reloaded(serve, agnews, tmp_path):
    client = serve()
    Xtr, ytr, Xte, _ = agnews
    r = client.post("/v1/models/strict", json={"inputs": Xtr, "labels": ytr, "abstain": 0.99, "head": "knn"})
    assert r.status_code == 200, r.text
    preds = client.post("/v1/models/strict/predict", json={"inputs": Xte[:5]}).json()["predictions"]
    assert all(p["label"] is None for p in preds)  # no cosine reaches 0.99
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in preds)
    # another writer (the library, the CLI) replaces the model on disk: the server serves the new one
    FewShotClassifier().fit(Xtr, ytr).save(tmp_path / "root" / "models" / "strict", overwrite=True)
    preds = client.post("/v1/models/strict/predict", json={"inputs": Xte[:5]}).json()["predictions"]
    assert all(p["label"] is not None for p in preds)


def test_a_damaged_save_is_cleared_by_a_fit_or_a_delete(serve, agnews, tmp_path):
    client = serve()
    Xtr, ytr, Xte, _ = agnews
    models, indexes = tmp_path / "root" / "models", tmp_path / "root" / "indexes"
    for name in ("hurt", "gone"):
        assert client.post(f"/v1/models/{name}", json={"inputs": Xtr, "labels": ytr}).status_code == 200
        (models / name / "manifest.json").write_text("{ truncated")  # damaged on the server's disk
    damaged = error(client.post("/v1/models/hurt/predict", json={"inputs": Xte[:2]}))
    assert damaged["code"] == "corrupt_save" and str(tmp_path) not in damaged["message"]
    assert "<root>/models/hurt/manifest.json" in damaged["message"]  # where, without the server's own paths
    # a fit replaces the model of its name, damaged or not; a delete removes it
    r = client.post("/v1/models/hurt", json={"inputs": Xtr, "labels": ytr})
    assert r.status_code == 200, r.text
    assert client.post("/v1/models/hurt/predict", json={"inputs": Xte[:2]}).status_code == 200
    assert FewShotClassifier.load(models / "hurt").classes_.tolist() == sorted(set(ytr))
    assert client.delete("/v1/models/gone").json() == {"name": "gone", "deleted": True}
    assert not (models / "gone").exists()
    assert error(client.delete("/v1/models/gone"))["code"] == "not_found"
    assert client.post("/v1/indexes/shelf", json={}).status_code == 201
    assert client.post("/v1/indexes/shelf/items", json={"items": [{"text": "a book"}]}).status_code == 200
    # an index whose folder is removed by hand while the server holds it is gone, not silently written to
    assert client.post("/v1/indexes/box", json={}).status_code == 201
    assert client.post("/v1/indexes/box/items", json={"items": [{"text": "a lamp"}]}).status_code == 200
    import shutil

    shutil.rmtree(indexes / "box")
    assert error(client.post("/v1/indexes/box/items", json={"items": [{"text": "lost"}]}))["code"] == "not_found"
    assert client.get("/v1/indexes/box").status_code == 404
    assert client.post("/v1/indexes/box", json={}).status_code == 201  # and its name can be used again
    (indexes / "shelf" / "manifest.json").write_text("{ truncated")
    listed = {i["name"]: i for i in client.get("/v1/indexes").json()["indexes"]}
    assert listed["shelf"] == {"name": "shelf", "loaded": False, "count": None, "unreadable": True}
    assert listed["box"]["unreadable"] is False
    assert client.delete("/v1/indexes/shelf").json() == {"name": "shelf", "deleted": True}
    assert not (indexes / "shelf").exists()
    # a save of another kind under a name: every route of this kind names it, and none deletes or replaces it
    import shutil as sh

    sh.copytree(models / "hurt", indexes / "wrong")
    sh.copytree(indexes / "box", models / "wrong")
    for r in (
        client.post("/v1/indexes/wrong/search", json={"queries": ["x"]}),
        client.post("/v1/indexes/wrong", json={}),
        client.delete("/v1/indexes/wrong"),
        client.post("/v1/models/wrong/predict", json={"inputs": ["x"]}),
        client.delete("/v1/models/wrong"),
    ):
        found = error(r)
        assert r.status_code == 409 and found["code"] == "wrong_type", found
        assert "holds a saved " in found["message"] and "nothing was changed" in found["message"]
    assert FewShotClassifier.load(indexes / "wrong").classes_.tolist() == sorted(set(ytr))
    assert (models / "wrong" / "manifest.json").exists()
    # a stray file where a model's folder would be: the server's storage, named, not "a bug in the server"
    (models / "stray").write_text("hi")
    for r in (
        client.post("/v1/models/stray/predict", json={"inputs": ["x"]}),
        client.post("/v1/models/stray", json={"inputs": Xtr, "labels": ytr}),
    ):
        found = error(r)
        assert r.status_code == 500 and found["code"] == "storage_access", found
        assert "<root>/models/stray is a file, not a model's folder" in found["message"]


def test_an_infinite_zero_shot_threshold_is_refused_as_no_number(serve):
    client = serve()
    body = '{"inputs": ["a"], "labels": ["x", "y"], "abstain": Infinity}'  # Python's json reads Infinity
    r = client.post("/v1/zeroshot", content=body, headers={"Content-Type": "application/json"})
    found = error(r)
    assert r.status_code == 400 and found["field"] == "abstain" and "a finite number; got inf" in found["message"]


def test_models_with_boolean_or_number_labels_are_served(serve, agnews, tmp_path):
    """A model fitted elsewhere (the CLI on a JSONL file) may hold any JSON scalar as labels."""
    client = serve()
    Xtr, ytr, Xte, _ = agnews
    for name, labels in (
        ("flags", [y == "Sports" for y in ytr]),
        ("numbers", [1.0 if y == "World" else 2.0 for y in ytr]),
    ):
        clf = FewShotClassifier(lexical=False).fit(Xtr, labels)
        clf.save(tmp_path / "root" / "models" / name)
        info = client.get(f"/v1/models/{name}")
        assert info.status_code == 200, info.text
        assert info.json()["classes"] == clf.classes_.tolist()
        r = client.post(f"/v1/models/{name}/predict", json={"inputs": Xte[:4]})
        assert r.status_code == 200, r.text
        assert [p["label"] for p in r.json()["predictions"]] == clf.predict(Xte[:4]).tolist()
        # scores are keyed as the labels are written in JSON (true, 1.0), and examples take the model's labels
        assert set(r.json()["predictions"][0]["probabilities"]) == {json.dumps(c) for c in clf.classes_.tolist()}
        r = client.post(f"/v1/models/{name}/examples", json={"inputs": ["meh"], "labels": [labels[0]]})
        assert r.status_code == 200, r.text


def test_the_librarys_warnings_reach_the_client_and_a_lost_race_asks_for_a_retry(serve, agnews, monkeypatch):
    """A client never sees the server's stderr: what the library warns of comes back in ``warnings``."""
    from fewshot.errors import ConcurrentWriteError

    client = serve()
    Xtr, ytr, _, _ = agnews
    r = client.post("/v1/models/m", json={"inputs": Xtr, "labels": ytr, "head": "prototype"})
    assert r.status_code == 200 and r.json()["warnings"] == [], r.text
    r = client.post("/v1/models/m/examples", json={"inputs": ["a stock market rally"], "labels": ["business "]})
    assert r.status_code == 200, r.text
    assert "business " in r.json()["classes"]  # done as asked ...
    (said,) = r.json()["warnings"]  # ... and said once, though the library warns as the fit and the save run
    assert "'business ' differs from the class 'Business' only in case or spaces" in said
    r = client.post("/v1/models/m/predict", json={"inputs": ["shares fell"]})
    assert r.json()["warnings"] == []  # what one request said is not carried into the next
    r = client.post("/v1/zeroshot", json={"inputs": ["shares fell"], "labels": ["markets", "sport"]})
    assert r.json()["warnings"] == []  # every answer that can carry them has the field
    # two copies of one text under two labels: the library's other warning of labels, through the service
    r = client.post("/v1/models/m3", json={"inputs": ["a", "a", "b", "c"], "labels": ["x", "y", "x", "y"]})
    assert r.status_code == 200 and "appear with two different labels" in r.json()["warnings"][0], r.text
    r = client.post("/v1/models/m2", json={"inputs": ["a", "b", "c", "d"], "labels": ["x", "x", "X", "X"]})
    assert r.status_code == 200 and "differ only in case or spaces" in r.json()["warnings"][0], r.text

    # another writer that saves the model whenever this server tries: 409, nothing saved, and a retry asked for
    def lost(self, path, *args, **kwargs):
        raise ConcurrentWriteError(f"{path} was saved by another writer after this classifier was loaded")

    monkeypatch.setattr(FewShotClassifier, "save", lost)
    r = client.post("/v1/models/m/examples", json={"inputs": ["a new kind of thing"], "labels": ["other"]})
    body = error(r)
    assert r.status_code == 409 and body["code"] == "conflict" and r.headers["retry-after"] == "1", body
    assert "send it again" in body["message"] and "/models/m" not in body["message"]  # the server's advice
    monkeypatch.undo()
    assert "other" not in client.get("/v1/models/m").json()["classes"]
    r = client.post("/v1/models/m/examples", json={"inputs": ["a new kind of thing"], "labels": ["other"]})
    assert r.status_code == 200 and "other" in r.json()["classes"]  # the retry goes through


def test_fit_with_the_lexical_channel_matches_the_library(serve, agnews, tmp_path, monkeypatch):
    import fewshot.lexical

    monkeypatch.setattr(fewshot.lexical, "WEIGHTS", (0.5,))  # the channel on whatever the held-out scores say
    client = serve()
    Xtr, ytr, Xte, _ = agnews
    r = client.post("/v1/models/words", json={"inputs": Xtr, "labels": ytr})  # on by default
    assert r.status_code == 200, r.text
    clf = FewShotClassifier.load(tmp_path / "root" / "models" / "words")
    assert clf.lexical == "auto" and clf.lexical_channel_ is not None and clf.lexical_channel_.weight == 0.5
    r = client.post("/v1/models/alone", json={"inputs": Xtr, "labels": ytr, "lexical": False})
    assert r.status_code == 200 and FewShotClassifier.load(tmp_path / "root" / "models" / "alone").lexical is False
    preds = client.post("/v1/models/words/predict", json={"inputs": Xte[:10]}).json()["predictions"]
    assert [p["label"] for p in preds] == clf.predict(Xte[:10]).tolist()
    assert client.post("/v1/models/w2", json={"inputs": Xtr, "labels": ytr, "lexical": "yes"}).status_code == 422


def test_zeroshot_labels_and_tags_match_the_library(serve, agnews):
    client = serve()
    texts = agnews[2][:8]
    labels = {"sport": "sports, a match, a team", "business": "markets, companies, money", "world": "world politics"}
    r = client.post("/v1/zeroshot", json={"inputs": texts, "labels": labels})
    assert r.status_code == 200, r.text
    zs = ZeroShotClassifier(labels)
    got, _, proba = zs.predict_with_scores(texts)
    out = r.json()["predictions"]
    assert [p["label"] for p in out] == got.tolist()
    np.testing.assert_allclose([list(p["probabilities"].values()) for p in out], proba, atol=1e-5)

    r = client.post(
        "/v1/zeroshot",
        json={"inputs": texts, "labels": list(labels), "multi_label": True, "threshold": 0.1, "top_k": 2},
    )
    tags = ZeroShotClassifier(list(labels)).tag(texts, threshold=0.1, top_k=2)
    assert [[(t["label"], round(t["score"], 5)) for t in p["tags"]] for p in r.json()["predictions"]] == [
        [(lab, round(s, 5)) for lab, s in row] for row in tags
    ]
    r = client.post("/v1/zeroshot", json={"inputs": texts, "labels": list(labels), "multi_label": True, "margin": 0.05})
    tags = ZeroShotClassifier(list(labels)).tag(texts, margin=0.05)
    assert [[t["label"] for t in p["tags"]] for p in r.json()["predictions"]] == [
        [lab for lab, _ in row] for row in tags
    ]
    r = client.post(
        "/v1/zeroshot", json={"inputs": ["the striker scored twice"], "labels": ["sport", "politics"], "abstain": 0.99}
    )
    assert r.json()["predictions"][0]["label"] is None
    # the label text alone, when asked: as the library gives it, and other scores than the default's
    r = client.post("/v1/zeroshot", json={"inputs": texts, "labels": list(labels), "expand": "none"})
    _, _, alone = ZeroShotClassifier(list(labels), expand="none").predict_with_scores(texts)
    np.testing.assert_allclose([list(p["probabilities"].values()) for p in r.json()["predictions"]], alone, atol=1e-5)
    _, _, widened = ZeroShotClassifier(list(labels)).predict_with_scores(texts)
    assert np.abs(widened - alone).max() > 1e-3
    r = client.post("/v1/zeroshot", json={"inputs": texts, "labels": list(labels), "expand": "yes"})
    assert r.status_code == 422 and "expand" in r.text
    # each input read once and each label's prompts averaged, when asked: as the library gives it, tags too
    once = {"inputs": texts, "labels": list(labels), "frame": "none", "pool": "mean"}
    plain = ZeroShotClassifier(list(labels), frame="none", pool="mean")
    r = client.post("/v1/zeroshot", json=once)
    _, _, proba_once = plain.predict_with_scores(texts)
    got = [list(p["probabilities"].values()) for p in r.json()["predictions"]]
    np.testing.assert_allclose(got, proba_once, atol=1e-5)
    assert np.abs(widened - proba_once).max() > 1e-3  # not the default's answer from the cache
    r = client.post("/v1/zeroshot", json={**once, "multi_label": True, "margin": 0.05})
    assert [[(t["label"], round(t["score"], 5)) for t in p["tags"]] for p in r.json()["predictions"]] == [
        [(lab, round(s, 5)) for lab, s in row] for row in plain.tag(texts, margin=0.05)
    ]
    r = client.post("/v1/zeroshot", json={"inputs": texts, "labels": list(labels), "frame": "Headline: {}"})
    _, _, headline = ZeroShotClassifier(list(labels), frame="Headline: {}").predict_with_scores(texts)
    got = [list(p["probabilities"].values()) for p in r.json()["predictions"]]
    np.testing.assert_allclose(got, headline, atol=1e-5)
    r = client.post("/v1/zeroshot", json={"inputs": texts, "labels": list(labels), "frame": "Headline:"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "frame" and "one {}" in r.text, r.text
    r = client.post("/v1/zeroshot", json={"inputs": texts, "labels": list(labels), "pool": "max"})
    assert r.status_code == 422 and "pool" in r.text


# -- indexes --------------------------------------------------------------------------------------------------
def test_index_create_add_search_filter_remove_and_delete(serve, agnews, tmp_path):
    client = serve()
    _, _, Xte, yte = agnews
    r = client.post("/v1/indexes/news", json={"kind": "flat"})
    assert r.status_code == 201 and r.json()["count"] == 0 and r.json()["writable"] is True
    items = [
        {"text": t, "label": y, "metadata": {"n": i, "lang": "en" if i % 2 else "fr"}}
        for i, (t, y) in enumerate(zip(Xte, yte))
    ]
    ids = client.post("/v1/indexes/news/items", json={"items": items}).json()["ids"]
    assert ids == list(range(len(items)))
    ids2 = client.post("/v1/indexes/news/items", json={"items": [{"text": "central banks raise rates", "id": 500}]})
    assert ids2.json() == {"ids": [500], "warnings": []}

    body = {"queries": [Xte[3], "stock markets fell sharply"], "k": 5, "where": {"lang": "en"}}
    r = client.post("/v1/indexes/news/search", json=body)
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert len(hits) == 2 and all(h["metadata"]["lang"] == "en" for row in hits for h in row)
    assert hits[0][0]["id"] == 3 and hits[0][0]["text"] == Xte[3] and hits[0][0]["score"] == pytest.approx(1, abs=1e-4)
    # the same hits as the library on the folder (save plus journal: every add is on disk)
    lib = EmbeddingIndex.load(tmp_path / "root" / "indexes" / "news").batch_search(
        body["queries"], k=5, where={"lang": "en"}
    )
    assert [[h["id"] for h in row] for row in hits] == [[h.id for h in row] for row in lib]

    assert client.request("DELETE", "/v1/indexes/news/items", json={"ids": [3, 999]}).json() == {"removed": 1}
    r = client.post("/v1/indexes/news/search", json={"queries": [Xte[3]], "k": 3})
    assert 3 not in [h["id"] for h in r.json()["results"][0]]
    # by filter, and by ids within a filter (1 is "en": kept)
    both = {"ids": [0, 1, 2], "where": {"lang": "fr"}}
    assert client.request("DELETE", "/v1/indexes/news/items", json=both).json() == {"removed": 2}
    fr = sum(1 for i in range(len(items)) if i % 2 == 0 and i not in (0, 2))
    by_filter = client.request("DELETE", "/v1/indexes/news/items", json={"where": {"lang": "fr"}})
    assert by_filter.json() == {"removed": fr}
    again = client.request("DELETE", "/v1/indexes/news/items", json={"where": {"lang": "fr"}})  # a retry
    assert again.status_code == 200 and again.json() == {"removed": 0}
    again = client.request("DELETE", "/v1/indexes/news/items", json={"where": {"gone": "x"}})
    assert again.status_code == 200 and again.json() == {"removed": 0}  # a field the last removal took away
    for body, field, words in [
        ({}, "ids", "give ids, a where filter, or both"),
        ({"where": {}}, "where", "where names no field"),
    ]:
        err = error(client.request("DELETE", "/v1/indexes/news/items", json=body))
        assert err["field"] == field and words in err["message"], (body, err)
    info = client.get("/v1/indexes/news").json()
    assert info["count"] == len(items) - 2 - fr and info["fields"] == {"lang": ["string"], "n": ["number"]}
    assert client.get("/v1/indexes").json()["indexes"] == [
        {"name": "news", "loaded": True, "count": len(items) - 2 - fr, "unreadable": False}
    ]
    # an HNSW graph keeps a removed item's vector: its id comes free again through the compact route
    assert client.post("/v1/indexes/graph", json={"kind": "hnsw"}).status_code == 201
    client.post("/v1/indexes/graph/items", json={"items": [{"id": 1, "text": "alpha"}, {"id": 2, "text": "beta"}]})
    assert client.request("DELETE", "/v1/indexes/graph/items", json={"ids": [2]}).json() == {"removed": 1}
    assert client.get("/v1/indexes/graph").json()["removed_pending_compaction"] == 1
    again = {"items": [{"id": 2, "text": "beta again"}]}
    err = error(client.post("/v1/indexes/graph/items", json=again))
    assert "ids [2] were removed" in err["message"] and "POST /v1/indexes/graph/compact" in err["message"], err
    compacted = client.post("/v1/indexes/graph/compact")
    assert compacted.status_code == 200 and compacted.json()["removed_pending_compaction"] == 0
    assert client.post("/v1/indexes/graph/items", json=again).json()["ids"] == [2]
    hit = client.post("/v1/indexes/graph/search", json={"queries": ["beta again"], "k": 1}).json()["results"][0][0]
    assert hit["id"] == 2 and hit["text"] == "beta again"
    assert client.delete("/v1/indexes/graph").status_code == 200

    assert error(client.post("/v1/indexes/news", json={}))["code"] == "exists"
    assert client.delete("/v1/indexes/news").json()["deleted"] is True
    assert not (tmp_path / "root" / "indexes" / "news").exists()
    assert client.get("/v1/indexes/news").status_code == 404


def saved_index(tmp_path, texts: list[str]) -> Path:
    """An index of ``texts`` saved as ``lib`` under the server's root by the library (another writer)."""
    index = EmbeddingIndex(TextEncoder(), kind="flat")
    index.add(texts)
    return index.save(tmp_path / "root" / "indexes" / "lib")


def test_a_searched_index_stays_free_for_other_writers_until_the_server_writes_to_it(serve, agnews, tmp_path):
    from fewshot.errors import LockTimeoutError

    Xte = agnews[2]
    folder = saved_index(tmp_path, Xte[:20])
    client = serve(refresh_s=0.0)
    assert client.post("/v1/indexes/lib/search", json={"queries": [Xte[2]], "k": 1}).json()["results"][0][0]["id"] == 2
    with EmbeddingIndex.update(folder, timeout=2) as other:  # another writer (the CLI, a script): not held off
        other.add(["the orchestra tours europe next spring"], ids=[900])
    hit = client.post("/v1/indexes/lib/search", json={"queries": ["orchestra on tour"], "k": 1}).json()["results"][0][0]
    assert hit["id"] == 900  # the server read the new save
    assert client.post("/v1/indexes/lib/items", json={"items": [{"text": "a write"}]}).status_code == 200
    # the server's first write took the folder (it journals every add); a writer that waits is told who holds it
    with pytest.raises(LockTimeoutError, match=f"by process {os.getpid()} "):
        with EmbeddingIndex.update(folder, timeout=0.5):
            pass


def test_the_server_lets_go_of_an_index_it_has_not_written_to_for_a_while(serve, agnews, tmp_path):
    folder = saved_index(tmp_path, agnews[2][:20])
    client = serve(refresh_s=0.0, release_after_s=0.3)
    added = client.post("/v1/indexes/lib/items", json={"items": [{"text": "the orchestra tours europe"}]})
    assert added.status_code == 200 and client.get("/v1/indexes/lib").json()["writable"] is True
    deadline = time.monotonic() + 10
    while client.get("/v1/indexes/lib").json()["writable"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get("/v1/indexes/lib").json()["writable"] is False
    # idle: another writer takes the folder at once, and finds the server's write (left in the journal)
    with EmbeddingIndex.update(folder, timeout=1) as other:
        assert (
            len(other) == 21 and other.search("the orchestra tours europe", k=1)[0].item == "the orchestra tours europe"
        )
        other.add(["interest rates rise again"], ids=[900])
    hit = client.post("/v1/indexes/lib/search", json={"queries": ["interest rates"], "k": 1}).json()["results"][0][0]
    assert hit["id"] == 900
    # the next write opens it again, over the other writer's save, and holds it
    again = client.post("/v1/indexes/lib/items", json={"items": [{"text": "a second write"}]})
    assert again.status_code == 200, again.json()
    assert client.get("/v1/indexes/lib").json()["count"] == 23
    assert len(EmbeddingIndex.load(folder)) == 23


# -- images as base64 -----------------------------------------------------------------------------------------
def b64png(array: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_an_image_past_the_pixel_limit_is_refused_by_that_limit_whatever_pillow_thinks(monkeypatch):
    from PIL import Image

    from fewshot.serve.errors import ApiError
    from fewshot.serve.inputs import decode_image

    eight = b64png(np.zeros((8, 8, 3), dtype=np.uint8))  # 64 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # 64 is past Pillow's warning size, under its hard limit
    assert decode_image(eight, "inputs[0]", max_pixels=100).size == (8, 8)  # the server's limit decides
    with pytest.raises(ApiError, match=r"inputs\[0\] is 8x8 pixels; the limit is 50 pixels"):
        decode_image(eight, "inputs[0]", max_pixels=50)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # past twice Pillow's limit: refused before it is read
    with pytest.raises(ApiError, match=r"inputs\[0\] declares more pixels than the limit of 50 pixels"):
        decode_image(eight, "inputs[0]", max_pixels=50)


def test_images_travel_as_base64_for_image_models_and_indexes(serve, data_root, tmp_path):
    from eval.datasets import load_images

    ds = load_images("eurosat", data_root)
    keep = [0, 1, 2]
    tr = [i for i in sample_per_class(ds.train_labels, 3, seed=0) if ds.train_labels[i] in keep]
    te = [i for i in sample_per_class(ds.test_labels, 2, seed=0) if ds.test_labels[i] in keep]
    client = serve()
    inputs = [b64png(ds.train_images[i]) for i in tr]
    labels = [ds.label_names[ds.train_labels[i]] for i in tr]
    r = client.post("/v1/models/land", json={"inputs": inputs, "labels": labels, "encoder": "image"})
    assert r.status_code == 200, r.text
    queries = ["data:image/png;base64," + b64png(ds.test_images[i]) for i in te]
    preds = client.post("/v1/models/land/predict", json={"inputs": queries}).json()["predictions"]
    clf = FewShotClassifier.load(tmp_path / "root" / "models" / "land")
    assert [p["label"] for p in preds] == clf.predict([ds.test_images[i] for i in te]).tolist()

    assert client.post("/v1/indexes/photos", json={"encoder": "image"}).status_code == 201
    r = client.post(
        "/v1/indexes/photos/items", json={"items": [{"text": x, "label": y} for x, y in zip(inputs, labels)]}
    )
    assert r.status_code == 200, r.text
    hits = client.post("/v1/indexes/photos/search", json={"queries": [inputs[4]], "k": 2}).json()["results"][0]
    assert hits[0]["id"] == 4 and hits[0]["text"] is None and hits[0]["label"] == labels[4]

    bad = client.post("/v1/models/land/predict", json={"inputs": [inputs[0], "not base64!"]})
    assert bad.status_code == 400 and error(bad)["field"] == "inputs[1]" and error(bad)["code"] == "bad_image"
    bad = client.post("/v1/indexes/photos/items", json={"items": [{"text": base64.b64encode(b"hello").decode()}]})
    assert (
        bad.status_code == 400
        and error(bad)["field"] == "items[0].text"
        and "not a readable image" in error(bad)["message"]
    )
    r = client.post("/v1/indexes/photos/search", json={"queries": ["a field"], "query_type": "text"})
    assert r.status_code == 400  # MobileNetV2 has no text side (CLIP and ConSE do)
    r = client.post("/v1/zeroshot", json={"inputs": queries, "labels": ["forest", "sea"], "encoder": "image"})
    assert r.status_code == 200, r.text
    r = client.post(
        "/v1/zeroshot", json={"inputs": queries, "labels": ["forest", "sea"], "encoder": "image", "frame": "Pic: {}"}
    )
    assert r.status_code == 400 and error(r)["field"] == "frame" and "this encoder reads images" in r.text, r.text


# -- bad input, limits, names ---------------------------------------------------------------------------------
BAD = [
    # (method, path, body, status, code, field)
    ("POST", "/v1/models/m/predict", b'{"inputs": [', 400, "malformed_json", None),
    ("POST", "/v1/models/m/predict", b'{"inputs": ["\xff\xfe"]}', 400, "malformed_json", None),  # not UTF-8
    ("POST", "/v1/models/m/predict", {"inputs": []}, 422, "invalid_field", "inputs"),
    ("POST", "/v1/models/m/predict", {"inputs": [""]}, 400, "bad_input", "inputs[0]"),
    ("POST", "/v1/models/m/predict", {"inputs": ["a", 3]}, 422, "invalid_field", "inputs[1]"),
    ("POST", "/v1/models/m/predict", {"input": ["a"]}, 422, "missing_field", "inputs"),
    ("POST", "/v1/models/m/predict", [1, 2], 422, "invalid_field", None),
    ("POST", "/v1/models/nope/predict", {"inputs": ["a"]}, 404, "not_found", "name"),
    ("POST", "/v1/models/m/examples", {"inputs": ["a"], "labels": [3]}, 400, "bad_input", "labels"),
    ("POST", "/v1/models/m/examples", {"inputs": ["a", "b"], "labels": ["x"]}, 400, "bad_input", "labels"),
    (
        "POST",
        "/v1/models/m2",
        {"inputs": ["a", "b"], "labels": ["x", "y"], "head": "bogus"},
        422,
        "invalid_field",
        "head",
    ),
    (
        "POST",
        "/v1/models/m2",
        {"inputs": ["a", "b"], "labels": ["x", "y"], "encoder": "clip:x:/etc/passwd"},
        400,
        "bad_encoder",
        "encoder",
    ),
    (
        "POST",
        "/v1/models/m3",
        {"inputs": ["a", "b"], "labels": ["x", "y"], "head": "knn", "head_params": {"k": 0}},
        400,
        "bad_input",
        "head_params.k",
    ),
    (
        "POST",
        "/v1/models/m3",
        {"inputs": ["a", "b"], "labels": ["x", "y"], "head_params": {"foo": 1}},
        400,
        "bad_input",
        "head_params",
    ),
    ("POST", "/v1/zeroshot", {"inputs": ["a"], "labels": []}, 400, "bad_input", "labels"),
    ("POST", "/v1/zeroshot", {"inputs": ["a"], "labels": ["x"] * 101}, 413, "too_many_labels", "labels"),
    (
        "POST",
        "/v1/zeroshot",
        {"inputs": ["a"], "labels": ["x", "y"], "multi_label": True, "top_k": 0},
        422,
        "invalid_field",
        "top_k",
    ),
    ("POST", "/v1/indexes/i/search", {"queries": ["a"], "where": {"nofield": 1}}, 400, "bad_input", "where"),
    ("POST", "/v1/indexes/i/search", {"queries": ["a"], "where": {"label": 3}}, 400, "bad_input", "where.label"),
    ("POST", "/v1/indexes/i/search", {"queries": ["a"], "where": {"label": []}}, 400, "bad_input", "where.label"),
    ("POST", "/v1/indexes/i/search", {"queries": ["a"], "k": 0}, 422, "invalid_field", "k"),
    ("POST", "/v1/indexes/i/search", {"queries": ["a"], "query_type": "image"}, 400, "bad_input", "query_type"),
    ("POST", "/v1/indexes/i/items", {"items": [{"text": "a", "id": 0}]}, 400, "bad_input", "items"),
    ("POST", "/v1/indexes/i/items", {"items": [{"text": "a", "id": 7}, {"text": "b"}]}, 400, "bad_input", "items"),
    # the request's own fields, not the library's column names (labels[1], metadata[0], items[1])
    (
        "POST",
        "/v1/indexes/i/items",
        {"items": [{"text": "a"}, {"text": "b", "label": ""}]},
        400,
        "bad_input",
        "items[1].label",
    ),
    ("POST", "/v1/indexes/i/items", {"items": [{"text": "a"}, {"text": "  "}]}, 400, "bad_input", "items[1].text"),
    (
        "POST",
        "/v1/indexes/i/items",
        {"items": [{"text": "a", "metadata": {"label": 1}}]},
        400,
        "bad_input",
        "items[0].metadata",
    ),
    ("POST", "/v1/indexes/i/search", {"queries": ["a"], "where": {"id": 10**20}}, 400, "bad_input", "where.id"),
    # an option of the other zero-shot mode is refused, not ignored
    (
        "POST",
        "/v1/zeroshot",
        {"inputs": ["a"], "labels": ["x", "y"], "multi_label": True, "abstain": 0.9},
        400,
        "bad_input",
        "abstain",
    ),
    ("POST", "/v1/zeroshot", {"inputs": ["a"], "labels": ["x", "y"], "threshold": 0.9}, 400, "bad_input", "threshold"),
    ("POST", "/v1/zeroshot", {"inputs": ["a"], "labels": ["x", "y"], "top_k": 1}, 400, "bad_input", "top_k"),
    ("POST", "/v1/zeroshot", {"inputs": ["a"], "labels": ["x", "y"], "margin": 0.1}, 400, "bad_input", "margin"),
    (
        "POST",
        "/v1/zeroshot",
        {"inputs": ["a"], "labels": ["x", "y"], "multi_label": True, "margin": 0.1, "threshold": 0.2},
        400,
        "bad_input",
        "margin",
    ),
    (
        "POST",
        "/v1/zeroshot",
        {"inputs": ["a"], "labels": ["x", "y"], "multi_label": True, "margin": -0.1},
        422,
        "invalid_field",
        "margin",
    ),
    # "auto" needs a corpus, which a zero-shot request does not carry: refused with that reason, not as a type
    ("POST", "/v1/zeroshot", {"inputs": ["a"], "labels": ["x", "y"], "abstain": "auto"}, 400, "bad_input", "abstain"),
    # a setting judged against the data names the setting, not the inputs
    (
        "POST",
        "/v1/models/m4",
        {"inputs": ["a", "b", "c"], "labels": ["x", "y", "y"], "abstain": "auto"},
        400,
        "bad_input",
        "abstain",
    ),
    ("DELETE", "/v1/indexes/i/items", {"ids": ["a"]}, 422, "invalid_field", "ids[0]"),
    # an image (as the page sends a picked file) for a model or index that embeds text is not read as text
    (
        "POST",
        "/v1/models/m/predict",
        {"inputs": ["a", "data:image/png;base64,iVBORw0KGgo="]},
        400,
        "bad_input",
        "inputs[1]",
    ),
    (
        "POST",
        "/v1/zeroshot",
        {"inputs": [" data:image/jpeg;base64,/9j/4AAQ"], "labels": ["x", "y"]},
        400,
        "bad_input",
        "inputs[0]",
    ),
    (
        "POST",
        "/v1/indexes/i/search",
        {"queries": ["data:image/png;base64,iVBORw0KGgo="]},
        400,
        "bad_input",
        "queries[0]",
    ),
    (
        "POST",
        "/v1/indexes/i/items",
        {"items": [{"text": "data:image/png;base64,iVBORw0KGgo="}]},
        400,
        "bad_input",
        "items[0].text",
    ),
    ("POST", "/v1/indexes/nope/search", {"queries": ["a"]}, 404, "not_found", "name"),
    ("POST", "/v1/indexes/.hidden/search", {"queries": ["a"]}, 400, "bad_name", "name"),
    ("POST", "/v1/models/-rf/predict", {"inputs": ["a"]}, 400, "bad_name", "name"),
    ("POST", "/v1/models/a%2Fb/predict", {"inputs": ["a"]}, 400, "bad_name", "name"),
    ("GET", "/v1/indexes/..%2F..%2Fetc", None, 400, "bad_name", "name"),
    ("POST", "/v1/models/" + "a" * 65 + "/predict", {"inputs": ["a"]}, 400, "bad_name", "name"),
    ("GET", "/v1/nothing", None, 404, "not_found", None),
    ("PUT", "/v1/models/m/predict", None, 405, "method_not_allowed", None),
]


@pytest.fixture(scope="module")
def populated(tmp_path_factory, agnews):
    """One service with a model ``m`` and an index ``i``, shared by the bad-input tests (none changes them)."""
    client = TestClient(
        create_app(ServeSettings(root=tmp_path_factory.mktemp("bad") / "root")), base_url="http://localhost"
    )
    client.__enter__()
    wait_ready(client)
    Xtr, ytr, _, _ = agnews
    assert client.post("/v1/models/m", json={"inputs": Xtr, "labels": ytr}).status_code == 200
    assert client.post("/v1/indexes/i", json={}).status_code == 201
    items = [
        {"text": "rates rise", "label": "economy", "metadata": {"lang": "en"}},
        {"text": "a goal", "label": "sport"},
    ]
    assert client.post("/v1/indexes/i/items", json={"items": items}).status_code == 200
    yield client
    client.__exit__(None, None, None)


@pytest.mark.parametrize("method,path,body,status,code,field", BAD, ids=[f"{b[0]} {b[1][:40]} {b[4]}" for b in BAD])
def test_client_mistakes_are_4xx_naming_the_field(populated, method, path, body, status, code, field):
    kw = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    r = populated.request(method, path, **kw)
    err = error(r)
    assert (r.status_code, err["code"], err["field"]) == (status, code, field), err


def test_a_body_the_json_parser_cannot_take_says_why(populated):
    deep = b'{"inputs": ["a"], "where": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    for body, why in ((b'{"inputs": ["\xff\xfe"]}', "not JSON text in UTF-8"), (deep, "nested too deeply")):
        r = populated.post("/v1/indexes/news/search", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and error(r)["code"] == "malformed_json" and why in error(r)["message"], r.text


def test_messages_use_the_requests_names_not_the_librarys(populated):
    r = populated.post("/v1/models/m/examples", json={"inputs": ["a", "b"], "labels": ["x"]})
    assert error(r) == {"code": "bad_input", "field": "labels", "message": "labels has 1 entries for 2 inputs"}
    r = populated.post("/v1/models/m/examples", json={"inputs": ["a", "b"], "labels": ["World", " "]})
    assert error(r)["field"] == "labels[1]" and error(r)["message"].startswith("labels[1] is an empty label")


def test_a_value_that_fits_no_member_of_a_union_is_named_where_it_went_wrong(populated):
    r = populated.post("/v1/zeroshot", json={"inputs": ["a"], "labels": {"sport": 5}})
    assert error(r) == {
        "code": "invalid_field",
        "field": "labels.sport",  # a dict whose description is not text, not "Input should be a valid list"
        "message": "labels.sport: Input should be a valid string",
    }
    r = populated.post("/v1/zeroshot", json={"inputs": ["a"], "labels": "sport,politics"})
    assert error(r)["message"] == "labels: Input should be a valid list; or Input should be a valid dictionary"
    r = populated.post("/v1/zeroshot", json={"inputs": [""], "labels": ["a", 3]})
    assert error(r)["field"] == "labels[1]" and "more problem" not in error(r)["message"]
    # a label without a description, beside one with, as the library takes it
    r = populated.post("/v1/zeroshot", json={"inputs": ["a goal"], "labels": {"sport": None, "politics": "elections"}})
    assert r.status_code == 200 and set(r.json()["predictions"][0]["probabilities"]) == {"sport", "politics"}


def test_body_size_input_count_and_content_type_limits(serve):
    client = serve(max_body_bytes=10_000, max_inputs=5)
    r = client.post("/v1/zeroshot", content=b"x" * 10_001, headers={"content-type": "application/json"})
    assert r.status_code == 413 and error(r)["code"] == "body_too_large"

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(20):
            yield b"x" * 1000

    r = client.post("/v1/zeroshot", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and error(r)["code"] == "body_too_large"
    r = client.post("/v1/zeroshot", json={"inputs": ["a"] * 6, "labels": ["x", "y"]})
    assert r.status_code == 413 and error(r) == {
        "code": "too_many_inputs",
        "field": "inputs",
        "message": "inputs has 6 entries; this server takes at most 5 per request",
    }
    r = client.post(
        "/v1/zeroshot", content=b'{"inputs": ["a"], "labels": ["x"]}', headers={"content-type": "text/plain"}
    )
    assert r.status_code == 400 and error(r)["code"] == "not_json"
    # refused before routing, yet counted under the route its path names (the two bodies too large above)
    counted = client.get("/metrics").text
    assert 'fewshot_requests_total{route="/v1/zeroshot",method="POST",status="413"} 3' in counted, counted


def test_names_never_reach_outside_the_root(serve, tmp_path):
    client = serve()
    outside = tmp_path / "outside"
    for name in ["..", "../outside", "..%2Foutside", "%2e%2e", ".x", "a/b", "a\\b", "a b", "ü", "x" * 65, "-x"]:
        for method, path, body in [
            ("POST", f"/v1/models/{name}", {"inputs": ["a", "b"], "labels": ["x", "y"]}),
            ("POST", f"/v1/indexes/{name}", {}),
            ("DELETE", f"/v1/models/{name}", None),
        ]:
            r = client.request(method, path, json=body)
            assert r.status_code in (400, 404, 405), (name, r.status_code)
            error(r)
    assert not outside.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(
        [
            "/v1/models/m/predict",
            "/v1/zeroshot",
            "/v1/indexes/i/search",
            "/v1/indexes/i/items",
            "/v1/models/m/examples",
            "/v1/models/fit-me",
        ]
    ),
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "inputs",
                        "labels",
                        "items",
                        "queries",
                        "k",
                        "where",
                        "ids",
                        "text",
                        "head",
                        "multi_label",
                        "threshold",
                        "id",
                    ]
                )
                | st.text(max_size=5),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    ),
)
def test_random_json_never_gets_a_5xx(populated, path, body):
    # Python's JSON writes NaN and Infinity, and the server's parser reads them: they must be refused as input
    r = populated.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code < 500, (path, body, r.text)
    if r.status_code >= 400:
        error(r)


# -- keys -----------------------------------------------------------------------------------------------------
def test_api_keys_read_write_401_403_and_only_hashes_kept(serve, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# comment\nreader-key-0123456789 read\n\nwriter-key-0123456789 write\n")
    hashed = read_key_file(keys)
    assert hashed == {digest("reader-key-0123456789"): "read", digest("writer-key-0123456789"): "write"}
    client = serve(api_keys=hashed)
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
    assert client.head("/health").status_code == 200 and client.head("/ready").status_code == 200  # no key either
    body = {"inputs": ["a"], "labels": ["x", "y"]}
    assert error(client.post("/v1/zeroshot", json=body))["code"] == "unauthorized"
    r = client.post("/v1/zeroshot", json=body, headers={"Authorization": "Bearer wrong-key-0123456789"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/zeroshot", json=body, headers={"X-API-Key": "reader-key-0123456789"}).status_code == 200
    read = {"Authorization": "Bearer reader-key-0123456789"}
    r = client.post("/v1/indexes/k", json={}, headers=read)
    assert r.status_code == 403 and error(r)["code"] == "forbidden"
    assert (
        client.post("/v1/indexes/k", json={}, headers={"Authorization": "Bearer writer-key-0123456789"}).status_code
        == 201
    )
    assert client.get("/metrics").status_code == 401 and client.get("/metrics", headers=read).status_code == 200
    for bad in ["short read\n", "key-0123456789abcdef admin\n", "\n# nothing\n"]:
        keys.write_text(bad)
        with pytest.raises(InputError):
            read_key_file(keys)
    keys.write_text("key-0123456789abcdef read\nkey-0123456789abcdef read\nkey-0123456789abcdef write\n")
    with pytest.raises(InputError, match="line 3: this key is on line 2 too, as 'read'"):  # which one was meant?
        read_key_file(keys)


def test_cli_refuses_an_open_host_without_keys(tmp_path):
    import argparse

    from fewshot.cli.serve import add_arguments, settings_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    root = str(tmp_path / "r")
    with pytest.raises(InputError, match="--insecure-open"):
        settings_from_args(p.parse_args(["--root", root, "--host", "0.0.0.0"]))
    assert settings_from_args(p.parse_args(["--root", root, "--host", "0.0.0.0", "--insecure-open"])).api_keys == {}
    for loopback in ["127.0.0.1", "localhost", "::1", "127.0.0.5"]:
        settings_from_args(p.parse_args(["--root", root, "--host", loopback]))
    keys = tmp_path / "k"
    keys.write_text("writer-key-0123456789 write\n")
    s = settings_from_args(
        p.parse_args(["--root", root, "--host", "0.0.0.0", "--api-keys", str(keys), "--max-inputs", "9"])
    )
    assert s.max_inputs == 9 and "writer-key-0123456789" not in json.dumps(s.api_keys)
    with pytest.raises(InputError, match="unknown --encoder 'bogus:spec'"):  # at start-up, not in an answer
        settings_from_args(p.parse_args(["--root", root, "--encoder", "bogus:spec"]))


def test_a_keyless_server_answers_loopback_host_names_only_so_dns_rebinding_cannot_reach_it(serve, tmp_path):
    import argparse

    from fewshot.cli.serve import add_arguments, settings_from_args

    client = serve()
    body = {"inputs": ["a b", "c d"], "labels": ["x", "y"], "head": "prototype"}
    r = client.post("/v1/models/rebound", json=body, headers={"Host": "attacker.example:8000"})
    assert r.status_code == 400 and error(r)["code"] == "untrusted_host" and "attacker.example" in error(r)["message"]
    assert not (tmp_path / "root" / "models" / "rebound").exists()  # refused before the app saw it
    assert client.get("/v1/models", headers={"Host": "attacker.example"}).status_code == 400
    for host in ["localhost:8000", "127.0.0.1", "127.0.0.1:8000", "[::1]:8000", "app.localhost", "LOCALHOST."]:
        assert client.get("/health", headers={"Host": host}).status_code == 200, host
    for host in ["localhost:80@evil.example", "[::1]evil.example", "localhost:http", "127.0.0.1.evil.example"]:
        assert client.get("/health", headers={"Host": host}).status_code == 400, host
    assert 'fewshot_rejected_total{reason="untrusted_host"} 6\n' in client.get("/metrics").text
    named = serve(root=tmp_path / "r2", allowed_hosts=("FewShot.Internal.",))
    assert named.get("/health", headers={"Host": "fewshot.internal:80"}).status_code == 200
    assert named.get("/health", headers={"Host": "other.internal"}).status_code == 400
    keyed = serve(root=tmp_path / "r3", api_keys={digest("reader-key-0123456789"): "read"})
    assert keyed.get("/health", headers={"Host": "models.example.com"}).status_code == 200  # keys guard it
    p = argparse.ArgumentParser()
    add_arguments(p)
    root = str(tmp_path / "r")
    assert settings_from_args(p.parse_args(["--root", root])).allowed_hosts is None
    assert settings_from_args(p.parse_args(["--root", root, "--allowed-host", "a.lan"])).allowed_hosts == ("a.lan",)
    opened = settings_from_args(p.parse_args(["--root", root, "--host", "0.0.0.0", "--insecure-open"]))
    assert opened.host_allowed("198.51.100.7") and not ServeSettings(root=root).host_allowed("198.51.100.7")
    local = settings_from_args(p.parse_args(["--root", root, "--insecure-open"]))  # on 127.0.0.1: still guarded
    assert not local.host_allowed("attacker.example")
    with pytest.raises(InputError, match="--insecure-open"):  # a name the resolver may send anywhere
        settings_from_args(p.parse_args(["--root", root, "--host", "app.localhost"]))
    with pytest.raises(InputError, match="without a port, got 'proxy:8080'"):
        ServeSettings(root=root, allowed_hosts=("proxy:8080",))
    with pytest.raises(InputError, match="allowed_hosts must be a tuple of host names"):
        ServeSettings(root=root, allowed_hosts="a.lan")


def test_a_root_that_cannot_be_a_folder_or_a_taken_port_is_one_error_line_before_uvicorn_starts(tmp_path, capsys):
    from fewshot.cli import main

    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for root, message in ((afile, "is a file, not a folder"), (afile / "sub", "afile is a file, not a folder")):
        assert main(["serve", "--root", str(root), "--port", "1"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("fewshot: error:") and message in err and "Traceback" not in err, err
    assert afile.read_text() == "not a folder"
    # a port another process listens on is one line too (uvicorn would log its start-up and exit with 3)
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--root", str(tmp_path / "r"), "--port", str(port), "--no-preload"]) == 1
    err = capsys.readouterr().err
    assert err == f"fewshot: error: port {port} on 127.0.0.1 is already in use (another server?); give another --port\n"


# -- concurrency: coalescing, group commit, overload, timeouts, a free event loop ------------------------------
def test_coalescing_encoder_merges_threads_and_keeps_each_callers_rows(text_encoder, agnews, tmp_path):
    calls = []
    enc = CoalescingEncoder(
        text_encoder, max_batch_size=64, max_wait_ms=200, gap_ms=200, observer=lambda e, n, q: calls.append(n)
    )
    assert enc.identity == text_encoder.identity and enc.dim == 384 and enc.modality == "text"
    texts = agnews[2][:24]
    with ThreadPoolExecutor(24) as pool:
        rows = list(pool.map(lambda t: enc.encode([t]), texts))
    np.testing.assert_allclose(np.vstack(rows), text_encoder.encode(texts), atol=1e-5)
    assert sum(calls) == 24 and len(calls) < 24  # fewer model calls than callers
    # a saved model or index records the wrapped encoder, and loads with or without the wrapper
    clf = FewShotClassifier(encoder=enc).fit(agnews[0], agnews[1])
    saved = clf.save(tmp_path / "m")
    assert FewShotClassifier.load(saved).encoder_.identity == text_encoder.identity
    assert (
        FewShotClassifier.load(saved, encoder=enc).predict(agnews[2][:3]).tolist()
        == clf.predict(agnews[2][:3]).tolist()
    )
    enc.close()


def test_coalescing_encoder_hands_each_caller_the_warnings_of_its_call():
    """What the wrapped encoder warns of in a shared call reaches every caller in it (the service answers with
    it), but for a static model's unreadable texts, of which each caller is told of its own only."""
    from fewshot.encoders.static import StaticEncoder
    from fewshot.errors import collected_warnings, warn_user
    from tests.conftest import FakeEncoder

    class Talkative(FakeEncoder):
        unreadable = staticmethod(StaticEncoder.unreadable)

        def _encode(self, items, batch_size, show_progress):
            warn_user("the cached model was damaged; built again")
            E = super()._encode(items, batch_size, show_progress)
            E[[i for i, t in enumerate(items) if t.startswith("?")]] = 0  # as a static model's unknown tokens
            warn_user(self.unreadable(items, E) or "")
            return E

    calls: list[int] = []
    enc = CoalescingEncoder(
        Talkative(), max_batch_size=64, max_wait_ms=300, gap_ms=300, observer=lambda e, n, q: calls.append(n)
    )
    said: dict[str, list[str]] = {}

    def call(text):
        with collected_warnings(issue=False) as got:
            enc.encode([text])
        said[text] = got

    threads = [threading.Thread(target=call, args=(t,)) for t in ("plain", "?secret", "other")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(calls) == 3 and len(calls) < 3  # a shared call
    assert all("the cached model was damaged; built again" in got for got in said.values()), said
    assert [m for m in said["?secret"] if "no token" in m] and "?secret" in " ".join(said["?secret"])
    assert not any("no token" in m or "secret" in m for t in ("plain", "other") for m in said[t]), said
    enc.close()


def test_a_caller_that_stops_waiting_leaves_the_queue_depth_at_once():
    from fewshot.serve.batching import DeadlineExceeded, deadline
    from tests.conftest import FakeEncoder

    gate = threading.Event()

    class Slow(FakeEncoder):
        def _encode(self, items, batch_size, show_progress):
            gate.wait(10)
            return super()._encode(items, batch_size, show_progress)

    enc = CoalescingEncoder(Slow(), max_batch_size=1, max_wait_ms=0, gap_ms=0)
    first = threading.Thread(target=enc.encode, args=(["holds the worker"],))
    first.start()
    time.sleep(0.2)
    with deadline(0.2), pytest.raises(DeadlineExceeded):
        enc.encode(["a", "b", "c"])  # queued behind the first, given up
    assert enc.queued == 0  # not counted until the worker reaches it
    gate.set()
    first.join(10)
    assert enc.encode(["after"]).shape == (1, 16) and enc.queued == 0
    enc.close()


def test_group_commit_merges_concurrent_writes_and_isolates_a_bad_one():
    seen = []
    gate = threading.Event()

    def one(value):
        seen.append([value])
        if value == "bad":
            raise InputError("bad value")
        gate.wait(5)
        return value.upper()

    def many(batch):
        seen.append([b["value"] for b in batch])
        if any(b["value"] == "bad" for b in batch):
            raise InputError("bad value in a merged write")
        return [b["value"].upper() for b in batch]

    commit = GroupCommit(one, many, lambda args: True)
    values = ["first"] + [f"v{i}" for i in range(8)] + ["bad"]
    results = {}

    def submit(v):
        try:
            results[v] = commit.submit(value=v)
        except InputError as exc:
            results[v] = exc

    first = threading.Thread(target=submit, args=("first",))
    first.start()
    time.sleep(0.2)  # the first write is running (held by the gate): the others queue behind it
    others = [threading.Thread(target=submit, args=(v,)) for v in values[1:]]
    for t in others:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in [first, *others]:
        t.join(10)
    assert results["first"] == "FIRST" and all(results[f"v{i}"] == f"V{i}" for i in range(8))
    assert isinstance(results["bad"], InputError)
    merged = [s for s in seen if len(s) > 1]
    assert merged and len(seen) < 2 * len(values)  # one merged try, then one by one only because of "bad"


def test_concurrent_adds_to_one_index_are_all_durable_with_unique_ids(serve, tmp_path):
    client = serve()
    assert client.post("/v1/indexes/log", json={}).status_code == 201

    def add(i):
        r = client.post(
            "/v1/indexes/log/items", json={"items": [{"text": f"note {i} {j}", "label": f"b{i}"} for j in range(3)]}
        )
        assert r.status_code == 200, r.text
        return r.json()["ids"]

    def search(i):  # a search never sees part of a batch: all three items of "b{i}", or none
        r = client.post("/v1/indexes/log/search", json={"queries": [f"note {i}"], "k": 10, "where": {"label": f"b{i}"}})
        return len(r.json()["results"][0]) if r.status_code == 200 else r.status_code

    with ThreadPoolExecutor(12) as pool:
        added = pool.map(add, range(24))
        seen = list(pool.map(search, list(range(24)) * 3))
        ids = [i for batch in added for i in batch]
    assert sorted(ids) == list(range(72)) and set(seen) <= {0, 3}, seen
    disk = EmbeddingIndex.load(tmp_path / "root" / "indexes" / "log")
    assert len(disk) == 72 and {h.item for h in disk.get(ids)} == {f"note {i} {j}" for i in range(24) for j in range(3)}


def test_concurrent_predictions_share_model_calls(serve, agnews):
    client = serve(max_wait_ms=200, batch_gap_ms=200)
    Xtr, ytr, Xte, _ = agnews
    client.post("/v1/models/m", json={"inputs": Xtr, "labels": ytr})
    expected = client.post("/v1/models/m/predict", json={"inputs": Xte[:20]}).json()["predictions"]
    before = _metric(client, "fewshot_batch_size_count")
    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(lambda t: client.post("/v1/models/m/predict", json={"inputs": [t]}).json(), Xte[:20]))
    calls = _metric(client, "fewshot_batch_size_count") - before
    assert [g["predictions"][0]["label"] for g in got] == [e["label"] for e in expected]
    assert calls < 20, calls


def _metric(client: TestClient, name: str) -> float:
    text = client.get("/metrics").text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_overload_is_429_with_retry_after(serve):
    client = serve(max_queue=1, max_wait_ms=1500, batch_gap_ms=1500)
    body = {"inputs": ["a slow one"], "labels": ["x", "y"]}
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.post, "/v1/zeroshot", json=body)
        time.sleep(0.4)
        r = client.post("/v1/zeroshot", json=body)
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and error(r)["code"] == "overloaded"
        assert slow.result().status_code == 200
    assert _metric(client, "fewshot_rejected_total") >= 1


def test_a_request_past_its_timeout_is_answered_and_its_work_dropped(serve, tmp_path, text_encoder):
    folder = tmp_path / "root" / "indexes" / "notes"
    with EmbeddingIndex.update(folder, text_encoder, create=True):
        pass
    client = serve(request_timeout_s=0.3, max_wait_ms=1500, batch_gap_ms=1500)
    batches = _metric(client, "fewshot_batch_size_count")
    t = time.monotonic()
    r = client.post("/v1/zeroshot", json={"inputs": ["too late"], "labels": ["x", "y"]})
    assert r.status_code == 503 and error(r)["code"] == "timeout" and time.monotonic() - t < 1.4
    r = client.post("/v1/indexes/notes/items", json={"items": [{"text": "never acknowledged"}]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    time.sleep(2.0)  # the batcher's wait is over: the expired requests were dropped, not encoded, not written
    assert _metric(client, "fewshot_batch_size_count") == batches
    assert len(EmbeddingIndex.load(folder)) == 0
    # the folder lock it took for that write is let go seconds later, not held for --release-after (30 s)
    from fewshot.serve.registry import RELEASE_CHECK_S, UNUSED_LOCK_GRACE_S
    from fewshot.storage.lock import FolderLock

    FolderLock(folder, timeout=UNUSED_LOCK_GRACE_S + RELEASE_CHECK_S + 2).acquire().release()
    assert client.get("/v1/indexes/notes").json()["writable"] is False


def test_a_503_never_hides_a_write_and_a_write_under_way_is_waited_for(serve, tmp_path, text_encoder):
    from fewshot.storage.lock import FolderLock

    folder = tmp_path / "root" / "indexes" / "notes"
    with EmbeddingIndex.update(folder, text_encoder, create=True) as index:
        index.add(["a note", "another note"])
    client = serve(request_timeout_s=0.3, lock_timeout_s=5)
    # another writer holds the folder for a second: a removal waits for it to open the index, and its time
    # runs out before it writes, so it is answered 503 and never removes anything, even once the lock is free
    lock = FolderLock(folder).acquire()
    threading.Timer(1.0, lock.release).start()
    t = time.monotonic()
    r = client.request("DELETE", "/v1/indexes/notes/items", json={"ids": [0]})
    assert r.status_code == 503 and error(r)["code"] == "timeout" and time.monotonic() - t < 0.9, r.text
    assert "before it changed anything" in error(r)["message"]
    time.sleep(1.5)
    FolderLock(folder, timeout=5).acquire().release()  # the lock it got too late was let go at once
    info = client.get("/v1/indexes/notes").json()
    assert info["count"] == 2 and info["writable"] is False
    # a refit whose save meets another writer's lock has begun to write: it is waited for and answered as it
    # ends, past the request's 3 s, rather than told 503 while the model is saved anyway
    fit = {"inputs": ["good film", "great plot", "dull film", "boring plot"], "labels": ["pos", "pos", "neg", "neg"]}
    slow = serve(root=tmp_path / "root2", request_timeout_s=3, lock_timeout_s=5)
    assert slow.post("/v1/models/m", json=fit).status_code == 200
    lock = FolderLock(tmp_path / "root2" / "models" / "m").acquire()
    threading.Timer(4.0, lock.release).start()
    t = time.monotonic()
    r = slow.post("/v1/models/m", json={**fit, "labels": ["good", "good", "bad", "bad"]})
    assert r.status_code == 200 and time.monotonic() - t > 3.5, r.text
    assert sorted(slow.get("/v1/models/m").json()["classes"]) == ["bad", "good"]
    # and the save waits the server's lock timeout for a folder held longer, not the library's minute
    with FolderLock(tmp_path / "root2" / "models" / "m"):
        t = time.monotonic()
        r = slow.post("/v1/models/m", json=fit)
        assert r.status_code == 409 and error(r)["code"] == "locked" and time.monotonic() - t < 15, r.text
    assert sorted(slow.get("/v1/models/m").json()["classes"]) == ["bad", "good"]


def test_health_answers_while_the_model_runs(serve, agnews):
    client = serve(request_timeout_s=300)
    texts = [" ".join(agnews[2])[:1000] + f" {i}" for i in range(96)]
    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        big = pool.submit(client.post, "/v1/zeroshot", json={"inputs": texts, "labels": ["a", "b"]})
        time.sleep(0.3)
        waits = []
        while not big.done() and len(waits) < 20:
            t = time.monotonic()
            assert client.get("/health").json() == {"status": "ok"}
            waits.append(time.monotonic() - t)
            time.sleep(0.05)
        took = time.monotonic() - t0
        assert big.result().status_code == 200
    # a blocked event loop would hold the first /health until the model finished: one answer, as slow as the
    # model; here several come back while it runs, each a small fraction of its time (no absolute bound: the
    # machine may be busy)
    assert len(waits) >= 3 and sorted(waits)[len(waits) // 2] < took / 10, (waits, took)


# -- probes, OpenAPI, metrics, page ---------------------------------------------------------------------------
def test_openapi_documents_every_field_and_metrics_speak_prometheus(serve):
    client = serve()
    spec = client.get("/openapi.json").json()
    assert client.get("/docs").status_code == 200
    paths = spec["paths"]
    for path in ["/v1/models/{name}/predict", "/v1/zeroshot", "/v1/indexes/{name}/search", "/v1/indexes/{name}/items"]:
        assert path in paths
    undocumented = [
        f"{name}.{field}"
        for name, schema in spec["components"]["schemas"].items()
        if name not in ("HTTPValidationError", "ValidationError") and not name.startswith("ValidationError")
        for field, prop in schema.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert not undocumented, undocumented
    client.post("/v1/zeroshot", json={"inputs": ["a"], "labels": ["x", "y"]})
    client.post("/v1/zeroshot", json={"inputs": []})
    text = client.get("/metrics").text
    assert 'fewshot_requests_total{route="/v1/zeroshot",method="POST",status="200"} 1' in text
    assert 'fewshot_requests_total{route="/v1/zeroshot",method="POST",status="422"} 1' in text
    assert re.search(r'fewshot_request_duration_seconds_bucket\{route="/v1/zeroshot",le="\+Inf"\} 2', text)
    assert "# TYPE fewshot_batch_size histogram" in text and "fewshot_queue_depth{encoder=" in text
    assert "fewshot_inflight_requests 0" in text
    ids = [op["operationId"] for path in paths.values() for op in path.values()]
    assert len(ids) == len(set(ids)) and set(paths["/health"]) == {"get"}  # HEAD is answered, not in the schema
    declared = paths["/v1/models/{name}/predict"]["post"]["responses"]
    assert {"400", "404", "408", "413", "422", "429", "500", "503"} <= set(declared), sorted(declared)
    assert "408" not in paths["/v1/indexes/{name}"]["get"]["responses"]  # a GET's body is never read


def test_the_page_is_served_with_nothing_from_the_internet(serve):
    client = serve()
    page = client.get("/")
    assert page.status_code == 200 and 'id="zs-go"' in page.text and 'id="search-go"' in page.text
    for asset in ["/static/app.js", "/static/style.css"]:
        r = client.get(asset)
        assert r.status_code == 200 and len(r.text) > 100
        assert not re.search(r"https?://", r.text), asset
    assert not re.search(r"(src|href)=\"https?://", page.text)


# -- a real uvicorn process: SIGKILL, restart, and a second server on the same root ---------------------------
def test_sigkill_loses_no_acknowledged_write_and_a_second_server_cannot_write(tmp_path):
    import random

    from eval.bench_service import crash_round

    root = tmp_path / "root"
    root.mkdir()
    a = ServerProcess(root)
    a.start()
    assert request(a.url, "POST", "/v1/indexes/crash", {})[0] == 201
    log = {"acked": {}, "removed": set(), "errors": []}
    rng = random.Random(3)
    try:
        for k in range(3):
            crash_round(a, 4, 3, k, log, rng.uniform(0.2, 1.5))
            result = check_index(root / "indexes" / "crash", log)
            assert result["lost"] == 0 and result["resurrected"] == 0, result
            a.start()
        assert len(log["acked"]) >= 3 and not log["errors"]
        # the list counts what the journal holds before the index is loaded, as loading it does
        (listed,) = request(a.url, "GET", "/v1/indexes")[1]["indexes"]
        assert listed["loaded"] is False and listed["count"] == request(a.url, "GET", "/v1/indexes/crash")[1]["count"]
        # the restarted server serves every acknowledged item
        some = sorted(log["acked"])[:10]
        status, body = request(
            a.url,
            "POST",
            "/v1/indexes/crash/search",
            {"queries": [log["acked"][some[0]]], "k": 1, "where": {"id": some}},
        )
        assert status == 200 and body["results"][0][0]["id"] == some[0]

        # a server that has only searched an index leaves its folder to other writers; its first write takes it
        status, body = request(a.url, "POST", "/v1/indexes/crash/items", {"items": [{"text": "a holds it now"}]})
        assert status == 200, body
        # a second server on the same root: reads yes, writes refused (409) while the first holds the folder
        b = ServerProcess(root, args=("--lock-timeout", "0.2", "--log-level", "info"))
        b.start()
        try:
            status, body = request(b.url, "POST", "/v1/indexes/crash/items", {"items": [{"text": "from b"}]})
            assert status == 409 and body["error"]["code"] == "locked", body
            forged = "/x%0AINFO:%20%20%20%20%20POST%20/v1/indexes/forged/items%20200%201%20ms"  # a newline in a path
            assert request(b.url, "GET", forged)[0] == 404
            damaged = root / "models" / "damaged"
            damaged.mkdir(parents=True)
            (damaged / "manifest.json").write_text("{not json")
            assert request(b.url, "POST", "/v1/models/damaged/predict", {"inputs": ["a"]})[0] == 500
            logged = b.log.read_text()  # one line a request at info: method, path, status, milliseconds
            assert re.search(r"INFO: +POST /v1/indexes/crash/items 409 \d+ ms", logged), logged[-2000:]
            assert re.search(r"INFO: +GET /ready 200 \d+ ms", logged) and "from b" not in logged
            assert "GET /x%0AINFO:" in logged and not re.search(r"^INFO: +POST /v1/indexes/forged", logged, re.M)
            assert re.search(r"WARNING: +POST /v1/models/damaged/predict 500 \d+ ms", logged)  # seen at warning too
            status, body = request(b.url, "DELETE", "/v1/indexes/crash")
            assert status == 409 and body["error"]["code"] == "locked", body
            # the folder is named by its place under the root, never by the server's own paths
            assert "<root>/indexes/crash" in body["error"]["message"] and str(root) not in body["error"]["message"]
            assert request(b.url, "GET", "/v1/indexes/crash")[1]["writable"] is False
            status, body = request(a.url, "POST", "/v1/indexes/crash/items", {"items": [{"text": "late news from a"}]})
            assert status == 200
            time.sleep(1.2)  # b notices the folder changed and reloads
            status, body = request(b.url, "POST", "/v1/indexes/crash/search", {"queries": ["late news from a"], "k": 1})
            assert body["results"][0][0]["text"] == "late news from a"
            a.kill()  # the lock goes with the process: b may write now
            status, body = request(b.url, "POST", "/v1/indexes/crash/items", {"items": [{"text": "from b"}]})
            assert status == 200, body
        finally:
            b.stop()
    finally:
        a.kill()
    final = check_index(root / "indexes" / "crash", log)
    assert final["lost"] == 0 and final["resurrected"] == 0


def test_a_body_sent_too_slowly_is_answered_408_and_its_connection_closed(tmp_path):
    """A client that declares a body and sends part of it cannot hold a connection: uvicorn itself has no
    body-read timeout."""
    import socket

    server = ServerProcess(tmp_path, args=("--body-timeout", "1", "--no-preload"))
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            head = "POST /v1/zeroshot HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            sock.sendall((head + "Content-Length: 100\r\n\r\n" + '{"inp').encode())
            t0 = time.monotonic()
            answer = b""
            while chunk := sock.recv(4096):  # read until the server closes the connection
                answer += chunk
            waited = time.monotonic() - t0
        assert answer.startswith(b"HTTP/1.1 408 ") and b'"code":"body_timeout"' in answer.replace(b" ", b"")
        assert 0.9 < waited < 15
        assert request(server.url, "POST", "/v1/zeroshot", {"inputs": ["a goal"], "labels": ["sport", "art"]})[0] == 200
        metrics = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()
        assert 'fewshot_rejected_total{reason="body_timeout"} 1' in metrics.splitlines()
    finally:
        server.kill()


def test_text_queries_over_a_clip_image_index_work_as_in_the_library(serve, tmp_path):
    pytest.importorskip("open_clip")
    from tests.test_images import tiny_clip_folder

    spec = "clip:local-dir:" + str(tiny_clip_folder(tmp_path / "clip", seed=0))
    client = serve(encoders=("text", spec))
    rng = np.random.default_rng(0)
    images = [b64png(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    assert client.post("/v1/indexes/pics", json={"encoder": spec}).status_code == 201
    assert client.post("/v1/indexes/pics/items", json={"items": [{"text": x} for x in images]}).json()["ids"] == [
        0,
        1,
        2,
        3,
    ]
    r = client.post("/v1/indexes/pics/search", json={"queries": ["a red car", images[2]], "k": 4})
    assert r.status_code == 200, r.text
    text_hits, image_hits = r.json()["results"]
    assert image_hits[0]["id"] == 2 and image_hits[0]["score"] == pytest.approx(1, abs=1e-4)
    lib = EmbeddingIndex.load(tmp_path / "root" / "indexes" / "pics").search("a red car", k=4)
    assert [(h["id"], round(h["score"], 4)) for h in text_hits] == [(h.id, round(h.score, 4)) for h in lib]
    assert (
        error(client.post("/v1/indexes/other", json={"encoder": "clip:ViT-B-32:/etc/passwd"}))["code"] == "bad_encoder"
    )


def test_a_contrastively_tuned_model_is_served_with_its_own_body(serve, agnews, tmp_path):
    Xtr, ytr, Xte, _ = agnews
    clf = FewShotClassifier(tune={"steps": 2, "seed": 0}).fit(Xtr[:8], ytr[:8])
    clf.save(tmp_path / "root" / "models" / "tuned")
    client = serve()
    r = client.post("/v1/models/tuned/predict", json={"inputs": Xte[:6]})
    assert r.status_code == 200, r.text
    _, _, proba = clf.predict_with_scores(Xte[:6])
    np.testing.assert_allclose([list(p["probabilities"].values()) for p in r.json()["predictions"]], proba, atol=1e-5)
    assert client.get("/v1/models/tuned").json()["encoder"]["tuned_from"] == clf.encoder_.identity["tuned_from"]
    # examples added to a tuned model are saved with its tuned body
    r = client.post("/v1/models/tuned/examples", json={"inputs": ["a brand new topic"], "labels": ["new"]})
    assert r.status_code == 200, r.text
    again = FewShotClassifier.load(tmp_path / "root" / "models" / "tuned")
    assert "new" in again.classes_.tolist() and again.encoder_.identity == clf.encoder_.identity


def test_the_serve_command_registers_its_options():
    import argparse

    from fewshot.cli.serve import cmd_serve, register, settings_from_args

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    a = p.parse_args(["serve", "--root", "r", "--port", "9000", "--max-wait-ms", "5", "--encoder", "clip:m:/w.pt"])
    assert a.func is cmd_serve and a.port == 9000 and a.max_wait_ms == 5 and a.encoder == ["clip:m:/w.pt"]
    assert a.host == "127.0.0.1" and a.insecure_open is False and a.api_keys is None
    assert settings_from_args(p.parse_args(["serve", "--root", "r", "--max-labels", "300"])).max_labels == 300
