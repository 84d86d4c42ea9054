"""Fast CPU encoders: the bundled MiniLM on ONNX Runtime (fp32 and int8) and a static model distilled from it.

Everything runs on the real model and real texts. The exports and the distilled model are made once per test
session in a temporary ``$FEWSHOT_HOME``, so the first test that needs one pays for it (about a minute on two
cores).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("model2vec")

from fewshot import EmbeddingIndex, FewShotClassifier, StaticEncoder, TextEncoder, ZeroShotClassifier  # noqa: E402
from fewshot.cli.common import make_encoder  # noqa: E402
from fewshot.encoders import check_same_encoder, encoder_from_identity, numerics, same_encoder  # noqa: E402
from fewshot.errors import (  # noqa: E402
    EncoderMismatchError,
    FewShotWarning,
    InputError,
    MissingDependencyError,
    ModelLoadError,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    """A fresh ``$FEWSHOT_HOME`` for this module: every export and distillation happens here once."""
    root = tmp_path_factory.mktemp("fewshot_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSHOT_HOME", str(root))
        yield root


@pytest.fixture(scope="module")
def texts(data_root: Path) -> list[str]:
    """Real texts of every length: banking queries, news, movie reviews, e-mails past the 256-token limit."""
    from eval.datasets import load

    out = load("banking77", data_root).test_texts[:120]
    out += load("ag_news", data_root).test_texts[:40]
    out += load("sst5", data_root).test_texts[:30]
    out += load("enron_spam", data_root).test_texts[:10]
    return out + ["ok", "¿Dónde está mi tarjeta? 🙂", "  spaces  around  ", "x" * 3000]


@pytest.fixture(scope="module")
def torch_vectors(texts: list[str]) -> np.ndarray:
    return TextEncoder().encode(texts)


@pytest.fixture(scope="module")
def onnx_fp32(home: Path) -> TextEncoder:
    return TextEncoder(backend="onnx")


@pytest.fixture(scope="module")
def onnx_int8(home: Path) -> TextEncoder:
    return TextEncoder(backend="onnx", quantize="int8")


@pytest.fixture(scope="module")
def static(home: Path) -> StaticEncoder:
    return StaticEncoder()


@pytest.fixture(scope="module")
def few_shot(data_root: Path):
    """8 examples of each of 5 AG News / banking-like classes and 100 test texts (AG News: 4 topics)."""
    from eval.datasets import load, sample_per_class

    ds = load("ag_news", data_root)
    support = sample_per_class(ds.train_labels, 8, seed=0)
    names = ds.label_names
    rng = np.random.default_rng(0)
    test = rng.choice(len(ds.test_texts), size=100, replace=False)
    return (
        [ds.train_texts[i] for i in support],
        [names[c] for c in ds.train_labels[support]],
        [ds.test_texts[i] for i in test],
        [names[c] for c in ds.test_labels[test]],
    )


# -- vectors --------------------------------------------------------------------------------------------
def test_onnx_fp32_matches_torch_on_every_text(onnx_fp32, texts, torch_vectors):
    E = onnx_fp32.encode(texts)
    assert E.dtype == np.float32 and E.flags.c_contiguous and E.shape == torch_vectors.shape
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    cos = (E * torch_vectors).sum(axis=1)
    assert cos.min() >= 0.999, f"lowest cosine {cos.min():.6f} on {texts[int(cos.argmin())][:80]!r}"


def test_onnx_int8_stays_close_to_torch(onnx_int8, texts, torch_vectors):
    E = onnx_int8.encode(texts)
    cos = (E * torch_vectors).sum(axis=1)
    tokens = np.array([len(e.ids) for e in onnx_int8.onnx_runtime.tokenizer.encode_batch(texts)])
    longer = cos[tokens > 10]  # a mean over few tokens averages out little rounding
    assert len(longer) > 100
    assert longer.min() >= 0.99, f"lowest cosine {longer.min():.4f} for a text of more than 10 tokens"
    assert cos.min() >= 0.98, f"lowest cosine {cos.min():.4f} on {texts[int(cos.argmin())][:80]!r}"
    assert cos.mean() >= 0.995
    assert cos.mean() < 0.99999  # it is really quantised, not the fp32 model under another name


def test_int8_vector_depends_only_slightly_on_its_batch(onnx_int8, texts):
    # activation scales are computed per batch: the same text alone and in a batch differ a little
    alone = np.vstack([onnx_int8.encode([t]) for t in texts[:20]])
    batched = onnx_int8.encode(texts[:20])
    cos = (alone * batched).sum(axis=1)
    assert cos.min() >= 0.99 and cos.mean() >= 0.995
    assert cos.min() < 0.99999  # they do differ: why int8 vectors are never mixed with anything else


def test_smoothing_keeps_the_fp32_model_and_halves_the_int8_error(onnx_fp32, onnx_int8, home, texts, tmp_path):
    import onnx

    from fewshot.encoders import onnx as fo
    from fewshot.encoders.derived import read_manifest

    source = next((home / "onnx").glob("*-fp32-v*"))
    manifest = read_manifest(source)
    rt = onnx_fp32.onnx_runtime
    fp32 = onnx_fp32.encode(texts)
    # in fp32 the smoothed model computes what the model did: a Mul before each product, its inverse in the weight
    model = onnx.load(str(source / "model.onnx"))
    inputs = sorted({node.input[0] for node in fo._smoothable(model.graph)})
    ranges = fo.activation_ranges(model, inputs, rt.tokenizer, rt.inputs, texts[:20], rt.pad_id)
    assert len(ranges) == 18 and all(r.shape == (384,) for r in ranges.values())
    assert max(r.max() / np.median(r) for r in ranges.values()) > 10  # a few channels run far larger: outliers
    smoothed = fo.smooth_activations(model, ranges, 0.5)
    assert len(smoothed) == 18  # attention, its output and the feed-forward input of six layers
    assert not set(smoothed) & set(fo._ffn_down_projections(model.graph))
    (tmp_path / "smoothed").mkdir()
    onnx.save(model, str(tmp_path / "smoothed" / "model.onnx"))
    again = fo.OnnxTextRuntime.run_once(tmp_path / "smoothed" / "model.onnx", rt.tokenizer, rt.inputs, texts[:40], 0)
    np.testing.assert_allclose(again, fp32[:40], atol=2e-5)
    # the shipped int8 model against one quantised the same way without smoothing
    plain = tmp_path / "plain"
    plain.mkdir()
    fo.quantize_int8(source, manifest, plain, smooth_alpha=None)
    without = fo.OnnxTextRuntime(plain, read_manifest(plain), threads=1).encode(texts, batch_size=32)
    err_with = 1 - (onnx_int8.encode(texts) * fp32).sum(axis=1)
    err_without = 1 - (without * fp32).sum(axis=1)
    assert err_with.mean() < 0.75 * err_without.mean(), (err_with.mean(), err_without.mean())


def test_batches_are_sorted_and_restored_in_input_order(onnx_fp32, texts):
    order = np.random.default_rng(1).permutation(len(texts))
    shuffled = onnx_fp32.encode([texts[i] for i in order], batch_size=7)
    np.testing.assert_allclose(shuffled, onnx_fp32.encode(texts)[order], atol=2e-6)


def test_batches_are_bounded_by_texts_and_by_padded_tokens():
    from fewshot.encoders.onnx import token_batches

    lengths = np.array([30, 256, 12, 256, 100, 5, 40, 300])
    order = np.argsort(-lengths, kind="stable")
    batches = token_batches(order, lengths, batch_size=4, max_tokens=512)
    np.testing.assert_array_equal(np.concatenate(batches), order)  # every text once, in order
    for b in batches:
        assert len(b) <= 4 and (len(b) == 1 or len(b) * lengths[b[0]] <= 512)
    assert [len(b) for b in batches] == [1, 2, 4, 1]  # 300 alone (over the budget), 256 twice, 100 with three
    assert [len(b) for b in token_batches(order, lengths, batch_size=3, max_tokens=10**6)] == [3, 3, 2]


def test_static_encoder_contract_and_neighbours(static, texts, torch_vectors):
    with pytest.warns(UserWarning, match="1 of .* texts have no token the static model knows"):
        E = static.encode(texts)
    assert E.dtype == np.float32 and E.flags.c_contiguous and E.shape == (len(texts), 256)
    norms = np.linalg.norm(E, axis=1)
    assert texts[-1] == "x" * 3000 and norms[-1] == 0.0  # no token it knows: the zero vector (documented)
    with pytest.warns(UserWarning, match="'🙂🙂'"):
        assert not static.encode(["🙂🙂"]).any()
    np.testing.assert_allclose(norms[:-1], 1.0, atol=1e-5)
    # a different space from MiniLM's (256-d after PCA), but the same neighbours more often than chance
    S_static, S_torch = E @ E.T, torch_vectors @ torch_vectors.T
    np.fill_diagonal(S_static, -1)
    np.fill_diagonal(S_torch, -1)
    agree = np.mean(S_static.argmax(1) == S_torch.argmax(1))
    assert agree > 0.2


def test_a_text_the_static_model_cannot_read_gets_no_class_and_no_tag(static, few_shot):
    """Its zero vector ties with everything: no head may turn that tie into a confident answer."""
    X, y, Xt, _ = few_shot
    knn = FewShotClassifier(static, head="knn", abstain="auto").fit(X, y)
    with pytest.warns(UserWarning, match="no token the static model knows"):
        P = knn.predict_proba(["🙂🙂", Xt[0]])
        labels = knn.predict(["🙂🙂"])
    np.testing.assert_allclose(P[0], 1 / len(knn.classes_))
    assert P[1].max() > 0.5 and labels[0] is None  # a readable text still gets its vote
    tagger = ZeroShotClassifier(sorted(set(y)), encoder=static)
    with pytest.warns(UserWarning, match="no token the static model knows"):
        tags = tagger.tag(["🙂🙂", Xt[0]], margin=0.05)
        fixed = tagger.tag(["🙂🙂"], threshold=-0.5)
    assert tags[0] == [] and fixed == [[]] and tags[1]


def test_a_text_the_static_model_cannot_read_is_not_given_the_largest_class_by_its_words(static, few_shot):
    """With the lexical channel, an unreadable text's words (none) would leave only the regression's class
    sizes: it gets the head's scores alone, every class alike for the prototype head."""
    from fewshot.lexical import LexicalChannel, LexicalModel

    X, y, Xt, _ = few_shot
    first = y[0]
    keep = [i for i, lab in enumerate(y) if lab == first or sum(lab == y[j] for j in range(i)) < 2]
    Xu, yu = [X[i] for i in keep], [y[i] for i in keep]  # 8 of one class, 2 of each other
    clf = FewShotClassifier(static).fit(Xu, yu)
    if clf.lexical_channel_ is None:  # the held-out choice kept the head alone: pool at a set weight
        codes = np.searchsorted(clf.head_.classes_, yu)
        model = LexicalModel().fit(Xu, codes, len(clf.classes_))
        clf.lexical_channel_ = LexicalChannel(model, 0.5, 1.0, 1.0, Xu, codes)
    assert np.ptp(clf.lexical_channel_.model.log_proba(["🙂🙂"])) > 0.05  # the words alone favour a class
    with pytest.warns(UserWarning, match="no token the static model knows"):
        P = clf.predict_proba(["🙂🙂", Xt[0]])
    np.testing.assert_allclose(P[0], 1 / len(clf.classes_))
    assert np.ptp(P[1]) > 0.01


def test_an_index_names_an_item_or_query_the_static_model_cannot_read(static):
    from fewshot import EmbeddingIndex

    index = EmbeddingIndex(static)
    with pytest.raises(InputError, match=r"items\[1\] \('🙂🙂'\) has no token .* knows: its vector is all zeros"):
        index.add(["a cat on a mat", "🙂🙂"])
    assert len(index) == 0
    index.add(["a cat on a mat"])
    with pytest.raises(InputError, match=r"the query \('🙂'\) has no token"):
        index.search("🙂")
    with pytest.raises(InputError, match=r"queries\[1\] \('🙂'\) has no token"):
        index.batch_search(["cats", "🙂"])


def test_concurrent_encodes_give_the_serial_answer(onnx_int8, texts):
    expected = onnx_int8.encode(texts[:64], batch_size=16)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(onnx_int8.encode(texts[:64], batch_size=16))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_array_equal(r, expected)


# -- the export cache -----------------------------------------------------------------------------------
def test_export_is_cached_and_reused_without_torch(onnx_fp32, onnx_int8, home, texts, monkeypatch):
    from fewshot.encoders import onnx as onnx_module

    onnx_int8.encode(texts[:2])  # both exports exist
    folders = sorted((home / "onnx").glob("*-v*"))
    assert [f.name.split("-")[1] for f in folders] == ["fp32", "int8"]
    model_files = [f / "model.onnx" for f in folders]
    before = [(p.stat().st_mtime_ns, p.stat().st_ino) for p in model_files]
    manifest = json.loads((folders[1] / "manifest.json").read_text())
    assert manifest["quantization"] == "int8" and manifest["weights_sha256"] == onnx_fp32.identity["weights_sha256"]
    assert manifest["fused_operators"].get("Attention", 0) == 6  # the optimizer fused every attention block

    # in this process: a new encoder finds the export and never calls the exporter
    def no_export(*args, **kwargs):
        raise AssertionError("exported a second time")

    monkeypatch.setattr(onnx_module, "export_fp32", no_export)
    monkeypatch.setattr(onnx_module, "quantize_int8", no_export)
    again = TextEncoder(backend="onnx", quantize="int8")
    assert again.identity == onnx_int8.identity

    # in a new process: no export and no torch at all (the weights hash comes from the sources record)
    script = (
        "import json, sys\n"
        "from fewshot import TextEncoder\n"
        "e = TextEncoder(backend='onnx', quantize='int8')\n"
        "E = e.encode(json.loads(sys.argv[1]))\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules,\n"
        "                  'identity': e.identity, 'first': E[0].tolist()}))\n"
    )
    env = {**os.environ, "FEWSHOT_HOME": str(home), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(texts[:3])], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["torch"] is False and seen["transformers"] is False
    assert seen["identity"] == onnx_int8.identity
    np.testing.assert_allclose(seen["first"], onnx_int8.encode(texts[:3])[0], atol=1e-6)
    assert [(p.stat().st_mtime_ns, p.stat().st_ino) for p in model_files] == before


def test_a_damaged_export_is_rebuilt(onnx_int8, home, texts):
    good = onnx_int8.encode(texts[:5])  # exported by now, whichever tests ran before
    folder = next((home / "onnx").glob("*-int8-v*"))
    with open(folder / "model.onnx", "r+b") as f:  # flip bytes in the middle of the file
        f.seek(1_000_000)
        f.write(b"\0" * 64)
    with pytest.warns(FewShotWarning, match=r"is damaged \(model.onnx no longer matches .*building it again"):
        again = TextEncoder(backend="onnx", quantize="int8").encode(texts[:5])
    np.testing.assert_allclose(again, good, atol=1e-6)
    from fewshot.encoders.derived import read_manifest

    assert read_manifest(folder) is not None  # rebuilt whole


def test_threads_setting(home, texts, monkeypatch):
    from fewshot.encoders.onnx import default_threads

    one = TextEncoder(backend="onnx", threads=1)
    assert one.onnx_runtime.threads == 1
    assert one.onnx_runtime.session.get_session_options().intra_op_num_threads == 1
    np.testing.assert_allclose(one.encode(texts[:8]), TextEncoder(backend="onnx").encode(texts[:8]), atol=1e-5)
    monkeypatch.setenv("FEWSHOT_ONNX_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("FEWSHOT_ONNX_THREADS", "zero")
    with pytest.raises(InputError, match="FEWSHOT_ONNX_THREADS"):
        default_threads()
    monkeypatch.delenv("FEWSHOT_ONNX_THREADS")
    assert 1 <= default_threads() <= 8


def test_batches_run_side_by_side_give_the_vectors_of_one_session(home, onnx_int8, texts):
    # several batches run in lanes (one-thread session, a thread each); a single batch runs on the main session
    two = TextEncoder(backend="onnx", quantize="int8", threads=2)
    one = TextEncoder(backend="onnx", quantize="int8", threads=1)
    lanes = two.encode(texts, batch_size=16)
    assert two.onnx_runtime._lanes is not None and one.onnx_runtime._lanes is None
    lane_session, pool, _ = two.onnx_runtime._lanes
    assert lane_session.get_session_options().intra_op_num_threads == 1 and pool._max_workers == 2
    np.testing.assert_allclose(lanes, one.encode(texts, batch_size=16), atol=1e-6)
    # (int8 activation scales are per batch: equal vectors also show that every batch kept its own texts)
    from fewshot.encoders.onnx import OnnxTextRuntime

    fresh = OnnxTextRuntime(two.onnx_runtime.folder, two.onnx_runtime.manifest, threads=2)  # runtimes are shared
    fresh.encode(texts[:16], batch_size=16)
    assert fresh._lanes is None  # one batch: the two-thread session


def test_encoders_pickle_without_weights(onnx_int8, static, texts):
    for enc in (onnx_int8, static):
        expected = enc.encode(texts[:4])
        blob = pickle.dumps(enc)
        assert len(blob) < 50_000, f"{type(enc).__name__} pickled {len(blob)} bytes"
        back = pickle.loads(blob)
        assert back.identity == enc.identity
        np.testing.assert_allclose(back.encode(texts[:4]), expected, atol=1e-6)


# -- identities and the interchangeability rule ---------------------------------------------------------
def test_identities_record_backend_and_quantization(onnx_fp32, onnx_int8, static):
    torch_id = TextEncoder().identity
    assert "backend" not in torch_id and "quantization" not in torch_id  # torch fp32, as saved before
    assert onnx_fp32.identity["backend"] == "onnx" and "quantization" not in onnx_fp32.identity
    assert onnx_int8.identity["quantization"] == "int8"
    assert static.identity["backend"] == "static" and static.identity["family"] == "model2vec"
    assert static.identity["distilled_from"]["weights_sha256"] == torch_id["weights_sha256"]
    assert [numerics(i.identity) for i in (onnx_fp32, onnx_int8, static)] == ["fp32", "onnx/int8", "static/none"]


def test_interchangeability_rule(onnx_fp32, onnx_int8, static):
    torch_id = TextEncoder().identity
    # torch fp32 and ONNX fp32 of the same weights: one encoder (the export is checked at cosine 0.999)
    assert same_encoder(torch_id, onnx_fp32.identity) and same_encoder(onnx_fp32.identity, torch_id)
    # int8 and static are never mixed with fp32, nor with each other
    for a, b in [(torch_id, onnx_int8.identity), (onnx_fp32.identity, onnx_int8.identity)]:
        assert not same_encoder(a, b) and not same_encoder(b, a)
    for other in (torch_id, onnx_fp32.identity, onnx_int8.identity):
        assert not same_encoder(static.identity, other)
    # int8 matches int8 of the same weights only
    assert same_encoder(onnx_int8.identity, dict(onnx_int8.identity))
    assert not same_encoder(onnx_int8.identity, {**onnx_int8.identity, "weights_sha256": "0" * 64})
    with pytest.raises(EncoderMismatchError, match="quantised vectors are never mixed"):
        check_same_encoder(torch_id, onnx_int8, "the index")
    # an int8 save of another recipe (the first had no recipe field) is refused too, and says why
    older = {k: v for k, v in onnx_int8.identity.items() if k != "quantization_recipe"}
    assert onnx_int8.identity["quantization_recipe"] >= 2 and not same_encoder(older, onnx_int8.identity)
    with pytest.raises(EncoderMismatchError, match="another int8 recipe"):
        check_same_encoder(older, onnx_int8, "the index")


def test_encoder_from_identity_recreates_each_backend(onnx_fp32, onnx_int8, static):
    for enc in (onnx_fp32, onnx_int8, static):
        back = encoder_from_identity(enc.identity)
        assert type(back) is type(enc)
        assert back.identity == enc.identity


# -- saves and loads ------------------------------------------------------------------------------------
def test_a_process_that_keeps_embedding_keeps_its_models_marked_used(onnx_int8, static, home, texts, monkeypatch):
    import fewshot.encoders.derived as derived

    onnx_int8.encode(texts[:2]), static.encode(texts[:2])  # opened (and marked used) before the clock is moved
    folders = [onnx_int8.onnx_runtime.folder, static._in_use.folder]
    assert all(folder.parent.parent == home for folder in folders)
    past = time.time() - 40 * 86400
    for folder in folders:
        os.utime(folder, (past, past))
    onnx_int8.encode(texts[2:4]), static.encode(texts[2:4])
    assert all(folder.stat().st_mtime == pytest.approx(past) for folder in folders)  # renewed at most hourly
    monkeypatch.setattr(derived, "USE_RENEWAL", 0.0)  # as if an hour had passed since the last mark
    onnx_int8.encode(texts[4:6]), static.encode(texts[4:6])
    assert all(folder.stat().st_mtime > time.time() - 600 for folder in folders)
    assert not {e.path for e in derived.prune(30, home)} & set(folders)


@pytest.mark.parametrize("spec", ["text:onnx", "text:onnx-int8", "static"])
def test_classifier_saves_and_loads_on_each_backend(spec, home, few_shot, tmp_path):
    X, y, X_test, y_test = few_shot
    encoder = make_encoder(spec, images=False)
    clf = FewShotClassifier(encoder, head="prototype").fit(X, y)
    pred = clf.predict(X_test)
    assert np.mean(pred == np.asarray(y_test, dtype=object)) > 0.55  # AG News, 4 classes, 8 shots
    clf.save(tmp_path / "m")
    back = FewShotClassifier.load(tmp_path / "m")  # the encoder comes back from the saved identity
    assert type(back.encoder) is type(encoder) and back.encoder.identity == encoder.identity
    np.testing.assert_array_equal(back.predict(X_test), pred)
    np.testing.assert_allclose(back.predict_proba(X_test), clf.predict_proba(X_test), atol=1e-6)
    if spec == "text:onnx":  # fp32: the torch encoder may read it, and the answers agree
        torch_clf = FewShotClassifier.load(tmp_path / "m", encoder=TextEncoder())
        assert np.mean(torch_clf.predict(X_test) == pred) >= 0.99
    else:  # int8 and static: refused with the torch encoder
        with pytest.raises(EncoderMismatchError):
            FewShotClassifier.load(tmp_path / "m", encoder=TextEncoder())


def test_torch_model_loads_with_onnx_fp32_but_not_int8(home, few_shot, tmp_path):
    X, y, X_test, _ = few_shot
    clf = FewShotClassifier(TextEncoder(), head="cache").fit(X, y)
    clf.save(tmp_path / "torch")
    fast = FewShotClassifier.load(tmp_path / "torch", encoder=TextEncoder(backend="onnx"))
    assert np.mean(fast.predict(X_test) == clf.predict(X_test)) >= 0.99
    with pytest.raises(EncoderMismatchError, match="int8"):
        FewShotClassifier.load(tmp_path / "torch", encoder=TextEncoder(backend="onnx", quantize="int8"))
    with pytest.raises(EncoderMismatchError):
        FewShotClassifier.load(tmp_path / "torch", encoder=StaticEncoder())


def test_a_tuned_onnx_encoder_keeps_its_backend_cache_and_threads(home, few_shot, tmp_path):
    from fewshot.tuning import contrastive_tune

    X, y, Xt, _ = few_shot
    int8 = TextEncoder(backend="onnx", quantize="int8", cache_dir=tmp_path / "c8", threads=1)
    tuned8 = contrastive_tune(int8, X, y, steps=1, layers=1)  # built only: no export is made here
    assert (tuned8.backend, tuned8.quantize, tuned8.threads, tuned8.cache_dir) == ("onnx", "int8", 1, tmp_path / "c8")
    assert tuned8.identity["quantization"] == "int8"
    assert tuned8.identity["tuned_from"] == int8.identity["weights_sha256"]
    # its export is made on first use; a tuned body keeps only the int8 export, not the fp32 one it came from
    assert tuned8.encode(Xt[:3]).shape == (3, 384)
    sha = tuned8.identity["weights_sha256"]
    assert [p.name.split("-")[1] for p in (home / "onnx").glob(f"{sha}-*")] == ["int8"]
    # a classifier tuned on an ONNX encoder runs its tuned body on ONNX, saved and loaded as such
    onnx = TextEncoder(backend="onnx", cache_dir=tmp_path / "c32")
    clf = FewShotClassifier(onnx, tune={"steps": 2, "layers": 1}, lexical=False).fit(X, y)
    body = clf.encoder_
    assert body.backend == "onnx" and body.cache_dir == tmp_path / "c32" and body.tuned_from is not None
    on_torch = TextEncoder(body.model)
    cos = (body.encode(Xt[:20]) * on_torch.encode(Xt[:20])).sum(axis=1)
    assert cos.min() > 0.999  # the export is of the tuned weights, not of the body it started from
    back = FewShotClassifier.load(clf.save(tmp_path / "m"))
    assert back.encoder_.backend == "onnx" and back.encoder_.identity == body.identity
    np.testing.assert_allclose(back.predict_proba(Xt[:20]), clf.predict_proba(Xt[:20]), atol=1e-5)
    # the tuned body's export stays in the cache until pruned; the saved model exports it again when next used
    from fewshot.encoders.derived import cache_entries, prune

    sha = body.identity["weights_sha256"]
    (mine,) = [e for e in cache_entries(home) if (e.manifest or {}).get("weights_sha256") == sha]
    assert mine.kind == "onnx" and mine.size > 10_000_000  # MiniLM in fp32: about 90 MB
    past = time.time() - 60 * 86400
    os.utime(mine.path, (past, past))
    assert [e.path for e in prune(30, home)] == [mine.path]  # everything else here was used today
    again = FewShotClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(Xt[20:30]), clf.predict_proba(Xt[20:30]), atol=1e-5)
    assert mine.path.exists()


@pytest.mark.parametrize("spec", ["text:onnx", "text:onnx-int8", "static"])
def test_index_saves_and_loads_on_each_backend(spec, home, texts, tmp_path):
    encoder = make_encoder(spec, images=False)
    docs = texts[:150]
    index = EmbeddingIndex(encoder, name="docs")
    index.add(docs, labels=["q"] * 120 + ["news"] * 30)
    hits = index.search("my card was declined", k=5)
    assert "card" in hits[0].item.lower() or "declin" in hits[0].item.lower()
    index.save(tmp_path / "idx")
    back = EmbeddingIndex.load(tmp_path / "idx")
    assert type(back.encoder) is type(encoder)
    again = back.search("my card was declined", k=5)
    assert [h.id for h in again] == [h.id for h in hits]
    np.testing.assert_allclose([h.score for h in again], [h.score for h in hits], atol=1e-5)
    if spec == "text:onnx":
        assert EmbeddingIndex.load(tmp_path / "idx", encoder=TextEncoder()).search("my card was declined", k=1)
    else:
        with pytest.raises(EncoderMismatchError):
            EmbeddingIndex.load(tmp_path / "idx", encoder=TextEncoder())
    with pytest.raises(EncoderMismatchError):  # and never the other fast one
        other = StaticEncoder() if spec != "static" else TextEncoder(backend="onnx", quantize="int8")
        EmbeddingIndex.load(tmp_path / "idx", encoder=other)


def test_static_encoder_from_a_local_model2vec_folder(static, texts, tmp_path):
    from fewshot.encoders.static import distilled_folder

    folder = distilled_folder(static.identity["distilled_from"]["weights_sha256"], 256)
    local = StaticEncoder(folder)
    assert local.identity["model"] == str(folder.resolve())
    assert same_encoder(local.identity, static.identity)  # the same vectors, whatever the path
    np.testing.assert_allclose(local.encode(texts[:10]), static.encode(texts[:10]), atol=1e-6)
    assert encoder_from_identity(local.identity).identity == local.identity


# -- images ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cifar_split(data_root: Path):
    pytest.importorskip("torchvision")
    from eval.datasets import load_images, sample_per_class

    ds = load_images("cifar10", data_root)
    tr, te = sample_per_class(ds.train_labels, 4, 0), sample_per_class(ds.test_labels, 3, 0)
    names = np.asarray(ds.label_names, dtype=object)
    return list(ds.train_images[tr]), names[ds.train_labels[tr]], list(ds.test_images[te]), names[ds.test_labels[te]]


def test_onnx_image_encoder_matches_torch_and_saves(home, cifar_split, tmp_path):
    from fewshot import ImageEncoder, OnnxImageEncoder, ZeroShotClassifier

    X, y, Xq, yq = cifar_split
    torch_enc, fast = ImageEncoder(), make_encoder("image:onnx", images=True)
    assert isinstance(fast, OnnxImageEncoder)
    F_torch, Z_torch = torch_enc.features_and_logits(Xq)
    F_fast, Z_fast = fast.features_and_logits(Xq)
    cos = (F_fast * F_torch).sum(1) / (np.linalg.norm(F_fast, axis=1) * np.linalg.norm(F_torch, axis=1))
    assert cos.min() >= 0.9999
    np.testing.assert_array_equal(Z_fast.argmax(1), Z_torch.argmax(1))
    assert fast.identity["backend"] == "onnx" and same_encoder(fast.identity, torch_enc.identity)
    assert type(encoder_from_identity(fast.identity)) is OnnxImageEncoder
    assert len(pickle.dumps(fast)) < 50_000
    # another size, after the default size's export: the graph is traced at one size, so each has its own
    small, small_torch = OnnxImageEncoder(image_size=160), ImageEncoder(image_size=160)
    F_small, F_small_torch = small.features_and_logits(Xq[:3])[0], small_torch.features_and_logits(Xq[:3])[0]
    cos = (F_small * F_small_torch).sum(1) / (np.linalg.norm(F_small, axis=1) * np.linalg.norm(F_small_torch, axis=1))
    assert cos.min() >= 0.9999
    clf = FewShotClassifier(fast).fit(X, y)
    clf.save(tmp_path / "img")
    back = FewShotClassifier.load(tmp_path / "img")
    assert isinstance(back.encoder, OnnxImageEncoder)
    np.testing.assert_array_equal(back.predict(Xq), clf.predict(Xq))
    # fp32 on either runtime: the torch encoder reads it too, with the same answers
    np.testing.assert_array_equal(
        FewShotClassifier.load(tmp_path / "img", encoder=torch_enc).predict(Xq), clf.predict(Xq)
    )
    # ConSE zero-shot on the ONNX backbone and the ONNX text model gives the torch pipeline's answers
    conse = make_encoder("conse:onnx", images=True)
    fast_zs = ZeroShotClassifier(list(dict.fromkeys(yq)), encoder=conse).predict(Xq)
    torch_zs = ZeroShotClassifier(list(dict.fromkeys(yq)), encoder=make_encoder("conse", images=True)).predict(Xq)
    assert np.mean(fast_zs == torch_zs) >= 0.95


# -- the command line -----------------------------------------------------------------------------------
def test_cli_fit_predict_and_index_with_fast_encoders(home, few_shot, tmp_path, capsys):
    from fewshot.cli import main

    X, y, X_test, _ = few_shot
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(X, y)))
    new = tmp_path / "new.txt"
    new.write_text("\n".join(t.replace("\n", " ") for t in X_test[:10]) + "\n")
    assert main(["fit", str(train), "--encoder", "text:onnx-int8", "-o", str(tmp_path / "m")]) == 0
    saved = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert saved["encoder"]["backend"] == "onnx" and saved["encoder"]["quantization"] == "int8"
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m"), str(new)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 10 and all(r["prediction"] in set(y) for r in rows)
    assert main(["index", "build", str(tmp_path / "idx"), str(train), "--encoder", "static"]) == 0
    capsys.readouterr()
    assert main(["index", "search", str(tmp_path / "idx"), "stock markets", "-k", "2", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["fit", str(train), "--encoder", "text:onnx-fp16", "-o", str(tmp_path / "x")]) == 1
    assert "unknown --encoder" in capsys.readouterr().err
    assert main(["fit", str(train), "--encoder", "static:", "-o", str(tmp_path / "x")]) == 1
    assert "static:FOLDER names a model2vec model's folder" in capsys.readouterr().err


def test_service_fits_and_searches_with_fast_encoders(home, few_shot, tmp_path):
    """The service offers the fast encoders by name; what it saves records them and answers like the library."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fewshot.serve import ServeSettings, create_app

    X, y, X_test, _ = few_shot
    root = tmp_path / "root"
    with TestClient(create_app(ServeSettings(root=root)), base_url="http://localhost") as client:
        r = client.post("/v1/models/fast", json={"inputs": X, "labels": y, "encoder": "text:onnx-int8"})
        assert r.status_code in (200, 201), r.text
        r = client.post("/v1/models/fast/predict", json={"inputs": X_test[:20]})
        assert r.status_code == 200, r.text
        served = [p["label"] for p in r.json()["predictions"]]
        r = client.post("/v1/indexes/quick", json={"encoder": "static"})
        assert r.status_code in (200, 201), r.text
        r = client.post("/v1/indexes/quick/items", json={"items": [{"text": t} for t in X[:12]]})
        assert r.status_code in (200, 201), r.text
        r = client.post("/v1/indexes/quick/search", json={"queries": [X[3]], "k": 1})
        assert r.status_code == 200 and r.json()["results"][0][0]["text"] == X[3], r.text
        # a text the static model has no token for: named by its field, and warned of in the answer
        r = client.post("/v1/indexes/quick/items", json={"items": [{"text": X[0]}, {"text": "🙂🙂"}]})
        err = r.json()["error"]
        assert r.status_code == 400 and err["field"] == "items[1].text" and "no token" in err["message"], r.text
        with warnings.catch_warnings(record=True) as issued:  # to the client; never the server's stderr
            warnings.simplefilter("always")
            r = client.post(
                "/v1/zeroshot", json={"inputs": ["🙂", X[0]], "labels": ["sport", "business"], "encoder": "static"}
            )
        assert not [w for w in issued if "no token" in str(w.message)]
        said = r.json()["warnings"]
        assert r.status_code == 200 and len(said) == 1 and "1 of 2 texts have no token" in said[0], r.text
    saved = json.loads((root / "models" / "fast" / "manifest.json").read_text())
    assert saved["encoder"]["backend"] == "onnx" and saved["encoder"]["quantization"] == "int8"
    library = FewShotClassifier.load(root / "models" / "fast").predict(X_test[:20])
    assert served == list(library)


# -- errors ---------------------------------------------------------------------------------------------
def test_bad_settings_are_named():
    with pytest.raises(InputError, match="backend must be"):
        TextEncoder(backend="tensorflow")
    with pytest.raises(InputError, match="backend='onnx', quantize='int8'"):
        TextEncoder(quantize="int8")
    with pytest.raises(InputError, match="quantize must be"):
        TextEncoder(backend="onnx", quantize="int4")
    with pytest.raises(InputError, match="threads"):
        TextEncoder(backend="onnx", threads=0)
    with pytest.raises(InputError, match="CPU"):
        TextEncoder(backend="onnx", device="cuda")
    with pytest.raises(InputError, match="pca_dims"):
        StaticEncoder(pca_dims=1)
    with pytest.raises(ModelLoadError, match="no such model2vec folder"):
        StaticEncoder("/nonexistent/static-model")
    with pytest.raises(InputError, match="runs on torch"):
        TextEncoder().onnx_runtime  # noqa: B018


def test_missing_packages_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"fewshot\[fast\]"):
        TextEncoder(backend="onnx").encode(["hello"])
    monkeypatch.setitem(sys.modules, "model2vec", None)
    with pytest.raises(MissingDependencyError, match=r"fewshot\[fast\]"):
        StaticEncoder("/tmp").encode(["hello"])
