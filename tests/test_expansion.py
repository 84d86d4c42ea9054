"""Label names widened with the encoder's vocabulary (zero-shot with no corpus): the maths on planted word
vectors, when it is left out, its on-disk cache, and its effect with the real MiniLM on real data."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eval.datasets import load
from fewshot import ZeroShotClassifier
from fewshot.classifiers import expansion
from fewshot.classifiers.expansion import (
    EXPANSION_WEIGHT,
    EXPANSION_WORDS,
    expand,
    nearest_words,
    skip_reason,
    unknown_name,
    vocabulary_words,
)
from tests.conftest import FakeEncoder, subsample


class VocabularyEncoder(FakeEncoder):
    """The fake encoder with a tokenizer vocabulary of 1,296 four-letter words."""

    @property
    def identity(self) -> dict[str, Any]:
        return {**super().identity, "model": "fake with a vocabulary"}

    def vocabulary(self) -> dict[str, int] | None:
        words = ["".join(w) for w in itertools.product("abcdef", repeat=4)]
        return {"[PAD]": 0, "##ing": 1, **{w: i + 2 for i, w in enumerate(words)}}


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_each_label_moves_towards_its_own_nearest_words_and_not_towards_a_word_it_shares():
    rng = np.random.default_rng(0)
    names = np.eye(4, dtype=np.float32)[:2]  # two labels' names, orthogonal
    near0 = unit(names[0] + 0.3 * rng.standard_normal((30, 4)))
    near1 = unit(names[1] + 0.3 * rng.standard_normal((30, 4)))
    shared = unit(names[0] + names[1] + 0.01)  # close to both names: the penalty keeps it out
    far = unit(-names[0] - names[1] + 0.1 * rng.standard_normal((30, 4)))
    W = np.vstack([shared[None], near0, near1, far]).astype(np.float16)
    V = unit(names + np.array([[0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32))  # label vectors off their names
    top = nearest_words(names, W)
    assert 0 not in top  # the shared word is nobody's
    out = expand(V, W, top)
    Wf = W.astype(np.float32)
    for i, own in enumerate((Wf[1:31], Wf[31:61])):
        # the words kept are the label's own (less closeness to the other name), never the shared one
        score = own @ names[i] - 0.5 * (own @ names[1 - i])
        top = own[np.argsort(-score)[:EXPANSION_WORDS]]
        want = unit((1 - EXPANSION_WEIGHT) * V[i] + EXPANSION_WEIGHT * unit(top.mean(axis=0)))
        np.testing.assert_allclose(out[i], want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="two labels"):
        nearest_words(names[:1], W)


def test_the_vocabulary_is_its_whole_words_in_id_order():
    wordpiece = {"[CLS]": 0, "##ing": 1, "the": 5, "ab": 3, "hello": 2, "Hello": 6, "world": 9, "sport": 4}
    assert vocabulary_words(wordpiece) == ["hello", "sport", "the", "world"]
    # where word starts are marked, an unmarked token is a piece of a word ("ation"), not a word
    pieces = {f"\u2581w{i:03d}": i for i in range(20)} | {"\u2581hello": 30, "ation": 31, "\u2581the": 25, "the": 40}
    assert vocabulary_words(pieces) == ["the", "hello"]  # a word with two forms keeps its first id
    assert vocabulary_words(None) == [] and vocabulary_words({}) == []


def test_expansion_is_left_out_where_it_does_not_fit(fake_encoder):
    plain = {"sport": [], "politics": []}
    assert skip_reason(plain, fake_encoder) is None
    assert skip_reason({"sport": ["games and athletes"], "politics": []}, fake_encoder) == "labels have descriptions"
    assert skip_reason({"counterfactual": [], "Not counterfactual": []}, fake_encoder) == (
        "one label's name holds another's ('counterfactual' in 'Not counterfactual')"
    )
    assert "'card payment' in 'card_payment_fee'" in skip_reason(
        {"card payment": [], "card_payment_fee": []}, fake_encoder
    )
    for apart in (["art", "heart", "war"], ["approval", "disapproval"], [1, 12]):  # letters in common, not words
        assert skip_reason(dict.fromkeys(apart, []), fake_encoder) is None
    known = {"joy", "fear", "sport"}
    assert unknown_name(dict.fromkeys(["joy", "Fear!"], []), known) is None
    assert (
        unknown_name(dict.fromkeys(["joy", "Freude"], []), known)
        == "the label 'Freude' has no word the tokenizer knows whole"
    )
    assert "'2'" in unknown_name(dict.fromkeys(["joy", 2], []), known)
    assert skip_reason({"sport": []}, fake_encoder) == "one label"
    image = FakeEncoder()
    image.modality = "image"
    assert skip_reason(plain, image) == "the encoder reads images"
    # an encoder without a vocabulary, labels with descriptions, expand="none": the label text alone
    for zs, why in (
        (ZeroShotClassifier(["sport", "politics"], encoder=fake_encoder), "the encoder has no word vocabulary"),
        (ZeroShotClassifier({"sport": "games", "politics": "votes"}, encoder=VocabularyEncoder()), "descriptions"),
        (ZeroShotClassifier(["sport", "politics"], encoder=VocabularyEncoder(), expand="none"), "expand='none'"),
    ):
        zs.fit()
        assert zs.expansion_["method"] == "none" and why in zs.expansion_["reason"]
        same = ZeroShotClassifier(zs.labels, encoder=zs.encoder, expand="none").fit()
        np.testing.assert_array_equal(zs.head_.centroids_, same.head_.centroids_)
    with pytest.raises(Exception, match="expand"):
        ZeroShotClassifier(["a", "b"], encoder=fake_encoder, expand="yes").fit()


def test_word_vectors_are_computed_once_then_read_from_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(expansion, "_CACHE", {})
    enc = VocabularyEncoder()
    zs = ZeroShotClassifier(["abab", "cdcd"], encoder=enc).fit()
    assert zs.expansion_["method"] == "vocabulary" and zs.expansion_["vocabulary"] == 1296
    assert [len(w) for w in zs.expansion_["words"].values()] == [EXPANSION_WORDS] * 2
    assert zs.expansion_["words"]["abab"][0] == "abab"  # a name's nearest word is itself
    (path,) = (tmp_path / "home" / "vocab").glob("*.npz")
    words_embedded = enc.calls
    assert words_embedded >= 1296
    monkeypatch.setattr(expansion, "_CACHE", {})  # a new process: read from the file, nothing embedded again
    again = ZeroShotClassifier(["abab", "cdcd"], encoder=enc).fit()
    assert enc.calls - words_embedded == 14  # the label prompts (6 templates x 2) and the 2 names only
    np.testing.assert_allclose(again.head_.centroids_, zs.head_.centroids_, atol=1e-6)
    whole = path.read_bytes()
    middle = len(whole) // 2
    changed = whole[:middle] + bytes(b ^ 0x55 for b in whole[middle : middle + 16]) + whole[middle + 16 :]
    # damaged, empty, cut short, or the same length with bytes changed inside the vectors
    for damage in (b"not a numpy file", b"", whole[:1000], changed):
        path.write_bytes(damage)
        monkeypatch.setattr(expansion, "_CACHE", {})
        calls = enc.calls
        repaired = ZeroShotClassifier(["abab", "cdcd"], encoder=enc).fit()  # computed again and replaced
        assert enc.calls - calls > 1296
        np.testing.assert_allclose(repaired.head_.centroids_, zs.head_.centroids_, atol=1e-6)
    with np.load(path, allow_pickle=False) as saved:
        assert saved["vectors"].shape == (1296, enc.dim)
    # a cache root that cannot be written costs the embedding each time, with a warning, and fails nothing
    monkeypatch.setenv("FEWSHOT_HOME", str(path))  # a file, not a folder
    monkeypatch.setattr(expansion, "_CACHE", {})
    with pytest.warns(RuntimeWarning, match="cannot keep the zero-shot label expansion's word vectors.*FEWSHOT_HOME"):
        assert ZeroShotClassifier(["abab", "cdcd"], encoder=enc).fit().expansion_["method"] == "vocabulary"


COLD_FIT = """
import sys, time
from pathlib import Path
from tests.test_expansion import VocabularyEncoder
from fewshot import ZeroShotClassifier

go = Path(sys.argv[1])

class Slow(VocabularyEncoder):
    def _encode(self, items, batch_size, show_progress):
        if len(items) > 100:  # the vocabulary: held until the other process is about to fit, and a second more
            print("embedding", flush=True)
            while not go.exists():
                time.sleep(0.05)
            time.sleep(1.0)
        return super()._encode(items, batch_size, show_progress)

enc = Slow()
if sys.argv[2] == "second":
    go.touch()
zs = ZeroShotClassifier(["abab", "cdcd"], encoder=enc).fit()
print(enc.calls, zs.expansion_["method"])
"""


def test_the_word_vector_files_are_listed_and_pruned_with_the_cached_models(tmp_path, monkeypatch, capsys):
    from fewshot.cli import main
    from fewshot.encoders.derived import cache_entries

    home = tmp_path / "home"
    monkeypatch.setenv("FEWSHOT_HOME", str(home))
    monkeypatch.setattr(expansion, "_CACHE", {})
    enc = VocabularyEncoder()
    ZeroShotClassifier(["abab", "cdcd"], encoder=enc).fit()
    (path,) = (home / "vocab").glob("*.npz")
    killed = path.with_name(f".{path.name}.4242.1.tmp")  # a write cut off by a killed process
    killed.write_bytes(b"half")
    past = time.time() - 60 * 86400
    for p in (path, killed):
        os.utime(p, (past, past))
    assert main(["cache", "info"]) == 0
    info = json.loads(capsys.readouterr().out)
    kinds = {e["path"]: (e["kind"], e["size_bytes"], e.get("temporary", False)) for e in info["entries"]}
    assert kinds == {str(killed): ("vocab", 4, True), str(path): ("vocab", path.stat().st_size, False)}
    monkeypatch.setattr(expansion, "_CACHE", {})  # a new process reads the file: that counts as a use
    ZeroShotClassifier(["abab", "cdcd"], encoder=enc).fit()
    assert time.time() - path.stat().st_mtime < 60
    assert main(["cache", "prune"]) == 0  # unused for 30 days: only the killed write's leftover
    assert "removed 1 item(s)" in capsys.readouterr().out and path.exists() and not killed.exists()
    os.utime(path, (past, past))
    assert main(["cache", "prune"]) == 0
    assert "removed 1 item(s)" in capsys.readouterr().out and not path.exists()
    assert cache_entries() == []
    monkeypatch.setattr(expansion, "_CACHE", {})  # pruned: computed again when next used
    calls = enc.calls
    ZeroShotClassifier(["abab", "cdcd"], encoder=enc).fit()
    assert enc.calls - calls > 1296 and path.exists()


def test_two_processes_starting_cold_embed_the_vocabulary_once(tmp_path):
    env = {**os.environ, "FEWSHOT_HOME": str(tmp_path / "home"), "PYTHONPATH": str(Path(__file__).parents[1])}
    go = tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", COLD_FIT, go, "first"], env=env, stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "embedding"  # the first holds the cache's lock
    second = subprocess.Popen(
        [sys.executable, "-c", COLD_FIT, go, "second"], env=env, stdout=subprocess.PIPE, text=True
    )
    outs = [p.communicate(timeout=120)[0].split() for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0]
    assert outs[1][-1] == outs[0][-1] == "vocabulary"
    # the first embedded the 1,296 words besides what every fit embeds; the second waited and read its file
    assert int(outs[0][-2]) - int(outs[1][-2]) == 1296
    assert len(list((tmp_path / "home" / "vocab").glob("*.npz"))) == 1


def test_a_saved_expanded_classifier_loads_with_its_label_vectors(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    zs = ZeroShotClassifier(["abab", "cdcd", "efef"], encoder=VocabularyEncoder()).fit()
    zs.save(tmp_path / "z")
    again = ZeroShotClassifier.load(tmp_path / "z", encoder=VocabularyEncoder())
    assert again.expansion_ == zs.expansion_ and again.get_params()["expand"] == "auto"
    texts = ["abab cdcd", "efef"]
    np.testing.assert_allclose(again.class_scores(texts), zs.class_scores(texts), atol=1e-6)


def test_a_few_shot_classifiers_label_prior_is_not_expanded():
    from fewshot.classifiers.few_shot import _label_prior

    prior = _label_prior(["abab", "cdcd"], VocabularyEncoder())  # its scores were measured without expansion
    assert prior.expansion_ == {"method": "none", "reason": "expand='none'"}


def test_the_expansion_helps_where_label_names_are_single_words(text_encoder, data_root):
    d = load("emotion", data_root)
    names = np.asarray(d.label_names)
    X, y = subsample(d.test_texts, names[d.test_labels], 400)
    wide = ZeroShotClassifier(list(names), encoder=text_encoder).fit()
    alone = ZeroShotClassifier(list(names), encoder=text_encoder, expand="none").fit()
    assert wide.expansion_["method"] == "vocabulary" and wide.expansion_["vocabulary"] > 20_000
    # measured: 0.52 against 0.45 on these 400 comments (0.48 against 0.42 on the 2,000 of eval)
    assert (wide.predict(X) == y).mean() >= (alone.predict(X) == y).mean() + 0.03
    np.testing.assert_allclose(np.linalg.norm(wide.head_.centroids_, axis=1), 1.0, atol=1e-6)


def test_the_services_batching_wrapper_expands_as_its_encoder_does(tmp_path, monkeypatch):
    from fewshot.serve.batching import CoalescingEncoder

    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    bare = ZeroShotClassifier(["abab", "cdcd"], encoder=VocabularyEncoder()).fit()
    wrapped = ZeroShotClassifier(["abab", "cdcd"], encoder=CoalescingEncoder(VocabularyEncoder())).fit()
    assert wrapped.expansion_ == bare.expansion_ and bare.expansion_["method"] == "vocabulary"
    np.testing.assert_allclose(wrapped.head_.centroids_, bare.head_.centroids_, atol=1e-6)


def test_the_vocabulary_is_embedded_whole_even_when_the_request_that_asked_gives_up(tmp_path, monkeypatch):
    """In the service the first zero-shot request embeds the vocabulary; past its deadline that request fails,
    but the vocabulary is finished and kept for the next one, and it never queued in the shared model calls."""
    from fewshot.classifiers import expansion
    from fewshot.serve.batching import CoalescingEncoder, deadline

    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    calls: list[int] = []
    enc = CoalescingEncoder(VocabularyEncoder(), observer=lambda e, n, q: calls.append(n))
    monkeypatch.setattr(expansion, "_CACHE", {})
    with deadline(0.0):  # no time at all: every shared call would be refused
        assert expansion.word_vectors(enc) is not None
    assert calls == [] and list((tmp_path / "home" / "vocab").glob("*.npz"))
    enc.close()
