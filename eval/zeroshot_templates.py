"""How far label text alone (templates, the shipped background sentences, the encoder's own vocabulary) can
take zero-shot text classification with no corpus.

    python -m eval.zeroshot_templates        # about 8 minutes cold (each input in five frames), a minute warm

On the eleven zero-shot datasets of ``eval.run_text --protocol zeroshot`` (label names only, test splits
capped at 2,000 rows, Matthews correlation for amazon_counterfactual, accuracy elsewhere), with the bundled
MiniLM, each row scores one way of building the label vectors from :data:`POOL`, thirty templates (the
shipped ``plain`` and ``ensemble`` sets among them):

- the shipped ``plain`` and ``ensemble`` sets with the label text alone (``expand="none"``), all thirty
  pooled, and the ensemble with the vocabulary expansion of :mod:`fewshot.classifiers.expansion` where it
  applies (``pool="mean"``, ``frame="none"``: the base of the directions below);
- the library's own path: that with each label's templates pooled by a soft maximum (``pool="soft"``), and
  the default, which also reads each input beside itself in ``"Sentence: {}"`` (``frame="auto"``), the
  setting chosen on the development group among the frames and pooling temperatures below;
- a label-free choice: the ten templates under which the label vectors are least alike (mean pairwise
  cosine), which needs nothing but the label names;
- two oracles no user has, chosen on each test set itself: the best single template, and a greedy ensemble
  (templates added one at a time while the test score rises, at most six).

The oracles bound what any template choice can reach on these label sets. More directions that need no
labelled data, on the shipped ensemble's label vectors:

- scores judged against ordinary text: each label's score less its mean over the shipped background
  sentences (:mod:`fewshot.classifiers.background`), or that difference over their spread (a z-score);
- label names expanded from the encoder's neighbourhood on every label set (the default's expansion without
  its rule for when to leave it out, over a grid of its settings): the ``k`` words of the tokenizer's vocabulary
  (whole words of three letters or more) whose embedding is closest to the label's name less ``lam`` times
  its closeness to the nearest other label (so "positive" is not added to "negative"), their mean vector
  given weight ``w`` beside the label vector;
- each label's best template instead of their mean: a label's score is its highest cosine over the
  ensemble's templates;
- hubness: a label close to much ordinary text wins too often, so its score is lowered by half its mean
  cosine to its ``k`` nearest background sentences (CSLS, Conneau et al. 2018);
- the directions all sentences share removed ("all-but-the-top", Mu and Viswanath 2018): texts and label
  vectors alike less the background sentences' mean and their top ``D`` principal directions;
- what sets each label apart within its own label set: label vectors less ``a`` times the label set's mean,
  back on the unit sphere (which weighs up labels close to the others' centre);
- templates voting with probabilities rather than vectors: each template's softmax over the labels at the
  library's zero-shot temperature, averaged over the ensemble's templates;
- the label vectors kept one per template (each template's vector widened as the default widens
  the mean) and a label's score its best template's, measured against the ensemble + expansion itself;
- the inputs widened as the default widens the labels: each text moved by weight ``b`` towards the mean of
  the ``k`` vocabulary words nearest it, scored against the ensemble + expansion label vectors.
- the inputs framed as the labels are: each text's vector the mean of its own and those of the text inside
  one or two frames of :data:`FRAMES` (``"This sentence: {}"``), scored against the ensemble + expansion label vectors
  (each frame is one more encoding of every input);
- each label's templates pooled by a soft maximum instead of their mean vector: ``tau * log(mean(exp(cos /
  tau)))`` over the templates, for five temperatures ``tau``; and with it the inputs read in a frame of
  :data:`FRAMES`, either alone or beside the input as above (the default's setting is one of these cells);
- the words of the text itself: each label's score plus ``a`` times the mean cosine between the label's
  vector and the ``k`` words of the text closest to it (the text's whole words of the encoder's vocabulary,
  less a short list of function words), against the ensemble + expansion label vectors.

Each setting is chosen on :data:`DEV` (the zero-shot development group of ``eval.run_zeroshot``) and
reported on the other datasets.

Written to ``eval/results/text_zeroshot_templates.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import itertools
import re
import time

import numpy as np

from eval.datasets import load
from eval.run_text import run_per_dataset, scores
from eval.sampling import capped_subsample
from fewshot import TextEncoder, ZeroShotClassifier
from fewshot.classifiers import ZEROSHOT_TEMPERATURE
from fewshot.classifiers import expansion as xp
from fewshot.classifiers.background import background_embeddings
from fewshot.prompts import resolve_templates

NAMES = [
    "sst2",
    "sst5",
    "cr",
    "mr",
    "subj",
    "emotion",
    "ag_news",
    "amazon_counterfactual",
    "banking77",
    "clinc150",
    "enron_spam",
]
DEV = ["sst5", "cr", "mr", "subj", "clinc150", "amazon_counterfactual"]  # eval.run_zeroshot's development group
TEST_CAP = 2000
EXPANSION_GRID = {"k": (5, 10, 20), "w": (0.3, 0.5), "lam": (0.5, 1.0)}
CSLS_K = (5, 20)
TOP_DIRECTIONS = (0, 1, 3)
LABEL_SET_CENTRING = (0.5, 1.0)
INPUT_WIDENING = {"k": (10, 30), "b": (0.2, 0.4)}
FRAMES = ("This sentence: {}", "Sentence: {}", "Text: {}", "In this text: {}", "This text is about: {}")
POOL_TEMPERATURES = (0.01, 0.02, 0.03, 0.05, 0.1)
TEXT_WORDS = {"k": (1, 2, 3), "a": (0.1, 0.25, 0.5)}
FUNCTION_WORDS = frozenset(
    "the and for are but not you all any can had her was one our out has him his how its may new now old see two "
    "way who did get let put say she too use that with have this will your from they been than them then were what "
    "when which their there would about could other these into just only very also some more most such here many "
    "much where while those".split()
)
SHIP_GAIN = 1.0  # points over the ensemble on the development group that a direction must gain to ship
LABEL_FREE_K = 10
GREEDY_MAX = 6
POOL = list(
    dict.fromkeys(
        resolve_templates("plain")
        + resolve_templates("ensemble")
        + [
            "This is {}.",
            "This message is {}.",
            "The category is {}.",
            "This is an example of {}.",
            "It was {}.",
            "A {} text.",
            "This review is {}.",
            "The label is {}.",
            "This is a {} sentence.",
            "Something {}.",
            "This document is about {}.",
            "The sentiment is {}.",
            "This post is about {}.",
            "The subject is {}.",
            "This expresses {}.",
            "The intent is {}.",
            "This request is about {}.",
            "This email is {}.",
            "Category: {}.",
            "Topic: {}.",
            "In short: {}.",
            "All about {}.",
            "The writer feels {}.",
            "A question about {}.",
        ]
    )
)


def _score(name: str, y: np.ndarray, S: np.ndarray) -> float:
    s = scores(y, S.argmax(axis=1), S.shape[1])
    return 100 * (s["mcc"] if name == "amazon_counterfactual" else s["accuracy"])


def _label_vectors(P: np.ndarray, chosen: list[int]) -> np.ndarray:
    """Unit label vectors pooled over the templates ``chosen`` of ``P`` (templates, labels, dim), each
    template's vectors first put on the unit sphere (as the classifier pools its prompts)."""
    Q = P[chosen] / np.linalg.norm(P[chosen], axis=-1, keepdims=True)
    V = Q.mean(axis=0)
    return V / np.linalg.norm(V, axis=-1, keepdims=True)


def vocabulary(encoder: TextEncoder) -> tuple[list[str], np.ndarray]:
    """The whole words (three letters or more) of the encoder's tokenizer and their unit embeddings."""
    words = sorted(w for w in encoder.model.tokenizer.get_vocab() if re.fullmatch(r"[a-z]{3,}", w))
    W = encoder.encode(words)
    return words, W / np.linalg.norm(W, axis=1, keepdims=True)


def expanded(V: np.ndarray, names: np.ndarray, W: np.ndarray, k: int, w: float, lam: float) -> np.ndarray:
    """Label vectors ``V`` (labels, dim; unit rows) moved by weight ``w`` towards the mean of each label's
    ``k`` vocabulary words (rows of ``W``) nearest its name (``names``: the names' unit embeddings) less
    ``lam`` times their closeness to the nearest other label."""
    S = names @ W.T
    other = np.stack([np.delete(S, i, axis=0).max(axis=0) for i in range(len(S))])
    top = np.argsort(-(S - lam * other), axis=1)[:, :k]
    N = W[top].mean(axis=1)
    return (1 - w) * V + w * N / np.linalg.norm(N, axis=1, keepdims=True)


def _unit(A: np.ndarray) -> np.ndarray:
    return A / np.linalg.norm(A, axis=-1, keepdims=True)


def all_but_the_top(reference: np.ndarray, D: int):
    """A map that takes rows less the mean of ``reference`` and their components along its top ``D``
    principal directions, back onto the unit sphere."""
    mean = reference.mean(axis=0)
    top = np.linalg.svd(reference - mean, full_matrices=False)[2][:D]

    def project(A: np.ndarray) -> np.ndarray:
        A = A - mean
        return _unit(A - (A @ top.T) @ top)

    return project


def evaluate(name: str, encoder: TextEncoder) -> dict:
    ds = load(name)
    idx = capped_subsample(ds.test_labels, TEST_CAP)
    E, y = encoder.encode([ds.test_texts[i] for i in idx]), ds.test_labels[idx]
    labels = list(ds.label_names)
    k = len(labels)
    P = encoder.encode([t.replace("{}", str(lab)) for t in POOL for lab in labels]).reshape(len(POOL), k, -1)
    single = [_score(name, y, E @ _label_vectors(P, [j]).T) for j in range(len(POOL))]
    alike = []
    for j in range(len(POOL)):
        V = _label_vectors(P, [j])
        alike.append(float(((V @ V.T).sum() - k) / (k * (k - 1))))
    greedy: list[int] = []
    best = -np.inf
    while len(greedy) < GREEDY_MAX:
        rest = [j for j in range(len(POOL)) if j not in greedy]
        trials = {j: _score(name, y, E @ _label_vectors(P, greedy + [j]).T) for j in rest}
        j, s = max(trials.items(), key=lambda kv: kv[1])
        if s <= best:
            break
        greedy, best = greedy + [j], s

    def shipped(templates: str | None, expand: str) -> float:  # the library's own path, as a user runs it
        zs = ZeroShotClassifier(labels, encoder=encoder, templates=templates, expand=expand, pool="mean", frame="none")
        return _score(name, y, zs.fit().head_.class_scores(E))

    texts = [ds.test_texts[i] for i in idx]

    def library(**kw: str) -> float:  # the library's own path, inputs read as it reads them
        zs = ZeroShotClassifier(labels, encoder=encoder, **kw).fit()
        return _score(name, y, zs.label_scores(zs.embed(texts)))

    default = ZeroShotClassifier(labels, encoder=encoder, frame="none", pool="mean").fit()  # ensemble + expansion
    zs = ZeroShotClassifier(labels, encoder=encoder, templates="ensemble", expand="none", pool="mean").fit()
    S, SB = zs.head_.class_scores(E), zs.head_.class_scores(background_embeddings(encoder))
    mu, sd = SB.mean(axis=0), SB.std(axis=0)
    V = _label_vectors(P, [POOL.index(t) for t in resolve_templates("ensemble")])
    if not np.allclose(E @ V.T, S, atol=1e-4):
        raise AssertionError("the ensemble's label vectors here are not the classifier's")
    names = encoder.encode(labels)
    names /= np.linalg.norm(names, axis=1, keepdims=True)
    _, W = vocabulary(encoder)
    expansion = {
        f"k={k} w={w} lam={lam}": _score(name, y, E @ expanded(V, names, W, k, w, lam).T)
        for k, w, lam in itertools.product(*EXPANSION_GRID.values())
    }
    B = _unit(background_embeddings(encoder))
    Q = _unit(P[[POOL.index(t) for t in resolve_templates("ensemble")]])
    csls = {f"k={k}": _score(name, y, S - np.sort(V @ B.T, axis=1)[:, -k:].mean(axis=1) / 2) for k in CSLS_K}
    top = {f"D={D}": _score(name, y, (f := all_but_the_top(B, D))(E) @ f(V).T) for D in TOP_DIRECTIONS}
    centred = {f"a={a}": _score(name, y, E @ _unit(V - a * V.mean(axis=0)).T) for a in LABEL_SET_CENTRING}
    Vd = _unit(np.asarray(default.head_.centroids_, dtype=np.float32))
    SD = default.head_.class_scores(E)
    if not np.allclose(E @ Vd.T, SD, atol=1e-4):
        raise AssertionError("the ensemble + expansion label vectors here are not the classifier's")
    # the library's own word vectors (float16, as the default uses them), not the grid's float32 W above
    vocab_words, Wv = xp.word_vectors(encoder)
    Wv = Wv.astype(np.float32)
    Qd = Q
    if default.expansion_["method"] != "none":  # each template's vectors widened as the default widens the mean
        near = xp.nearest_words(encoder.encode([str(lab) for lab in labels]), Wv)
        Qd = np.stack([xp.expand(q, Wv, near) for q in Q])
    SW = E @ Wv.T
    widened = {}
    for kw, b in itertools.product(*INPUT_WIDENING.values()):
        N = _unit(Wv[np.argpartition(-SW, kw, axis=1)[:, :kw]].mean(axis=1))
        widened[f"k={kw} b={b}"] = _score(name, y, _unit((1 - b) * _unit(E) + b * N) @ Vd.T)
    F = {f: _unit(encoder.encode([f.format(t) for t in texts])) for f in FRAMES}
    framed = {
        " + ".join(c): _score(name, y, _unit(_unit(E) + sum(F[f] for f in c)) @ Vd.T)
        for n in (1, 2)
        for c in itertools.combinations(FRAMES, n)
    }
    Sp = np.einsum("nd,tkd->tnk", E, Qd)  # each template's cosines
    framed_pooled = {}
    for f, mode, tau in itertools.product(FRAMES, ("alone", "beside"), POOL_TEMPERATURES):
        X = F[f] if mode == "alone" else _unit(_unit(E) + F[f])
        St = np.einsum("nd,tkd->tnk", X, Qd)
        peak = St.max(axis=0)
        framed_pooled[f"{f} {mode} pool={tau}"] = _score(
            name, y, peak + tau * np.log(np.exp((St - peak) / tau).mean(0))
        )
    pooled_only = {}
    for tau in POOL_TEMPERATURES:
        peak = Sp.max(axis=0)
        pooled_only[f"pool={tau}"] = _score(name, y, peak + tau * np.log(np.exp((Sp - peak) / tau).mean(0)))
    at = {w: i for i, w in enumerate(vocab_words)}
    stop = {at[w] for w in FUNCTION_WORDS if w in at}
    own = [sorted({at[w] for w in re.findall(r"[a-z]+", t.lower()) if w in at} - stop) for t in texts]
    WV = Wv @ Vd.T  # each vocabulary word's cosine to each label
    text_words = {}
    for kt, a in itertools.product(*TEXT_WORDS.values()):
        M = np.stack([-np.sort(-WV[r], axis=0)[:kt].mean(axis=0) if r else np.zeros(k) for r in own])
        text_words[f"k={kt} a={a}"] = _score(name, y, SD + a * M)
    T = np.einsum("nd,tkd->tnk", E, Q) / ZEROSHOT_TEMPERATURE
    T = np.exp(T - T.max(axis=2, keepdims=True))
    return {
        "dataset": name,
        "test_size": len(idx),
        "labels": k,
        "plain": shipped("plain", "none"),
        "ensemble": shipped("ensemble", "none"),
        "expanded_mean": _score(name, y, SD),
        "pooled": library(frame="none"),
        "default": library(),
        "default_expansion": default.expansion_,
        "pool": _score(name, y, E @ _label_vectors(P, list(range(len(POOL)))).T),
        "label_free": _score(name, y, E @ _label_vectors(P, list(np.argsort(alike)[:LABEL_FREE_K])).T),
        "oracle_single": max(single),
        "oracle_single_template": POOL[int(np.argmax(single))],
        "oracle_greedy": best,
        "oracle_greedy_templates": [POOL[j] for j in greedy],
        "background_centred": _score(name, y, S - mu),
        "background_z": _score(name, y, (S - mu) / sd),
        "expansion": expansion,
        "max_template": _score(name, y, np.einsum("nd,tkd->tnk", E, Q).max(axis=0)),
        "csls": csls,
        "all_but_the_top": top,
        "label_set_centred": centred,
        "template_vote": _score(name, y, (T / T.sum(axis=2, keepdims=True)).mean(axis=0)),
        "default_max_template": _score(name, y, np.einsum("nd,tkd->tnk", E, Qd).max(axis=0)),
        "input_widening": widened,
        "inputs_framed": framed,
        "text_words": text_words,
        "pool_only": pooled_only,
        "frame_pool": framed_pooled,
        "per_template": dict(zip(POOL, single, strict=True)),
    }


ROWS = {
    "plain": "plain template (the baseline)",
    "ensemble": "template ensemble, label text alone (`expand='none'`)",
    "expanded_mean": "ensemble + vocabulary expansion where it applies (`expand='auto'`, `pool='mean'`, "
    "`frame='none'`)",
    "pooled": "ensemble + expansion, each label's templates pooled by a soft maximum (`pool='soft'`, `frame='none'`)",
    "default": 'the default: ensemble + expansion, soft pooling, each input read beside "Sentence: {}" '
    "(`frame='auto'`)",
    "pool": f"all {len(POOL)} templates pooled",
    "label_free": f"the {LABEL_FREE_K} templates whose label vectors are least alike (label-free choice)",
    "background_centred": "ensemble, each label's score less its mean on the background sentences",
    "background_z": "ensemble, each label's score as a z-score on the background sentences",
    "expanded": "ensemble, label names expanded from the vocabulary on every label set (setting chosen on development)",
    "max_template": "ensemble, each label's best template (max, not mean)",
    "csls": "ensemble, hub labels lowered by their closeness to background sentences (CSLS; k chosen on development)",
    "all_but_the_top": "ensemble, the background's mean and top directions removed (D chosen on development)",
    "label_set_centred": "ensemble, label vectors less the label set's mean (a chosen on development)",
    "template_vote": "ensemble, templates' probabilities averaged instead of their vectors",
    "default_max_template": "ensemble + expansion, each label's best template (max, not mean)",
    "input_widening": "ensemble + expansion, inputs moved towards their nearest vocabulary words (k, b chosen on "
    "development)",
    "inputs_framed": "ensemble + expansion, each input pooled with itself in one or two frames (frames chosen on "
    "development)",
    "text_words": "ensemble + expansion plus each label's closest words of the text (k, a chosen on development)",
    "pool_only": "ensemble + expansion, templates pooled by a soft maximum (temperature chosen on development)",
    "frame_pool": "ensemble + expansion, inputs in a frame (alone or beside themselves) and templates pooled "
    "softly (frame, mode and temperature chosen on development)",
    "oracle_single": "oracle: best single template, chosen on the test set",
    "oracle_greedy": f"oracle: greedy ensemble of at most {GREEDY_MAX}, chosen on the test set",
}


# the label-free directions measured beside the ensemble, in the tables' order
DIRECTIONS = (
    "background_centred",
    "background_z",
    "expanded",
    "max_template",
    "csls",
    "all_but_the_top",
    "label_set_centred",
    "template_vote",
    "default_max_template",
    "input_widening",
    "inputs_framed",
    "text_words",
    "pool_only",
    "frame_pool",
)
GRIDS = {  # row: its settings
    "expanded": "expansion",
    "csls": "csls",
    "all_but_the_top": "all_but_the_top",
    "label_set_centred": "label_set_centred",
    "input_widening": "input_widening",
    "inputs_framed": "inputs_framed",
    "text_words": "text_words",
    "pool_only": "pool_only",
    "frame_pool": "frame_pool",
}


def chosen(rows: list[dict], grid: str) -> str:
    """The setting of ``grid`` (a key of each row holding a score per setting) with the best mean gain over
    the plain template on the development datasets (on all the datasets run when none of them is one)."""
    dev = [r for r in rows if r["dataset"] in DEV] or rows
    return max(dev[0][grid], key=lambda key: np.mean([r[grid][key] - r["plain"] for r in dev]))


def markdown(out: dict) -> str:
    settings = {row: chosen(out["rows"], grid) for row, grid in GRIDS.items()}
    setting = settings["expanded"]
    rows = [{**r, **{row: r[grid][settings[row]] for row, grid in GRIDS.items()}} for r in out["rows"]]
    head = "| method | " + " | ".join(r["dataset"] for r in rows) + " | mean | vs plain | worst vs plain |"
    lines = [
        "# Zero-shot: how far templates go without a corpus",
        "",
        f"{out['date']}, {out['machine']}; `{out['command']}`. Accuracy (Matthews correlation for "
        f"amazon_counterfactual), MiniLM, label names only, test splits capped at {TEST_CAP:,} rows.",
        "",
        head,
        "|---" * (len(rows) + 4) + "|",
    ]
    for key, title in ROWS.items():
        vals = [r[key] for r in rows]
        diffs = [r[key] - r["plain"] for r in rows]
        cells = " | ".join(f"{v:.1f}" for v in vals)
        lines.append(f"| {title} | {cells} | {np.mean(vals):.1f} | {np.mean(diffs):+.1f} | {min(diffs):+.1f} |")
    gain = {key: np.mean([r[key] - r["plain"] for r in rows]) for key in ("oracle_single", "oracle_greedy")}
    lines += [
        "",
        f"Chosen on each test set, the best single template adds {gain['oracle_single']:+.1f} points to the "
        f"plain template's mean and a greedy ensemble {gain['oracle_greedy']:+.1f}: a template choice made "
        "without labelled data can do no better than these here.",
        "",
        "By group, with the settings of the vocabulary expansion chosen on the development group "
        f"({', '.join(DEV)}) and reported on the other datasets: {setting} ({len(EXPANSION_GRID['k'])} word "
        f"counts k, {len(EXPANSION_GRID['w'])} weights w, {len(EXPANSION_GRID['lam'])} penalties lam for "
        f"closeness to another label; the best mean gain over the plain template), CSLS {settings['csls']} "
        f"(of {', '.join(map(str, CSLS_K))}), all-but-the-top {settings['all_but_the_top']} (of "
        f"{', '.join(map(str, TOP_DIRECTIONS))}) and the label set's centring {settings['label_set_centred']} (of "
        f"{', '.join(map(str, LABEL_SET_CENTRING))}), the inputs' widening {settings['input_widening']} (of "
        f"k in {', '.join(map(str, INPUT_WIDENING['k']))}, b in {', '.join(map(str, INPUT_WIDENING['b']))}), "
        f"the inputs' frames {settings['inputs_framed']} (one or two of {len(FRAMES)}) and the text's words "
        f"{settings['text_words']} (of k in {', '.join(map(str, TEXT_WORDS['k']))}, a in "
        f"{', '.join(map(str, TEXT_WORDS['a']))}), the soft pooling's temperature {settings['pool_only']} and, with "
        f"a frame, {settings['frame_pool']} (each of {len(FRAMES)} frames alone or beside the input, and "
        f"temperatures {', '.join(map(str, POOL_TEMPERATURES))}).",
        "",
        "| method | development: mean | vs plain | worst | report: mean | vs plain | worst |",
        "|---|---|---|---|---|---|---|",
    ]
    groups = [[r for r in rows if r["dataset"] in DEV], [r for r in rows if r["dataset"] not in DEV]]
    for key in ("ensemble", "expanded_mean", "pooled", "default", *DIRECTIONS):
        cells = []
        for group in groups:
            diffs = [r[key] - r["plain"] for r in group]
            if not group:  # a run of some datasets only
                cells += ["", "", ""]
                continue
            cells += [f"{np.mean([r[key] for r in group]):.1f}", f"{np.mean(diffs):+.1f}", f"{min(diffs):+.1f}"]
        lines.append(f"| {ROWS[key]} | " + " | ".join(cells) + " |")
    worst = min(rows, key=lambda r: r["expanded"] - r["plain"])
    names = {
        "background_centred": "less the background mean",
        "background_z": "background z-score",
        "expanded": "vocabulary expansion",
        "max_template": "best template",
        "csls": "CSLS",
        "all_but_the_top": "all-but-the-top",
        "label_set_centred": "label-set centring",
        "template_vote": "template vote",
        "default_max_template": "best template (expanded)",
        "input_widening": "inputs widened",
        "inputs_framed": "inputs framed",
        "text_words": "the text's words",
        "pool_only": "soft pooling",
        "frame_pool": "framed inputs and soft pooling",
    }

    def against_ensemble(group: list[dict]) -> str:
        keys = ("expanded_mean", "pooled", "default", *DIRECTIONS)
        gains = {key: round(float(np.mean([r[key] - r["ensemble"] for r in group])), 1) + 0.0 for key in keys}
        return ", ".join(f"{names[key]} {gain:+.1f}" for key, gain in gains.items())  # + 0.0: no "-0.0"

    names["expanded_mean"] = "guarded expansion"
    names["pooled"] = "expansion and soft pooling"
    names["default"] = "the default (expansion, soft pooling, framed inputs)"
    lines += ["", "Mean gain of each direction over the ensemble alone (the label text, `expand='none'`):"]
    for title, group in zip(("development", "report"), groups, strict=True):
        if group:
            lines.append(f"- {title} group: {against_ensemble(group)}.")
    on_default = ("default_max_template", "input_widening", "inputs_framed", "text_words", "pool_only", "frame_pool")
    lines += ["", "Of those built on the ensemble + expansion, their mean gain over it:"]
    for title, group in zip(("development", "report"), groups, strict=True):
        if group:
            gains = [round(float(np.mean([r[key] - r["expanded_mean"] for r in group])), 1) + 0.0 for key in on_default]
            cells = ", ".join(f"{names[k]} {g:+.1f}" for k, g in zip(on_default, gains, strict=True))
            lines.append(f"- {title} group: {cells}.")
    dev = groups[0] or rows
    base = {key: "expanded_mean" if key in on_default else "ensemble" for key in ("expanded_mean", *DIRECTIONS)}
    kept = [key for key, b in base.items() if np.mean([r[key] - r[b] for r in dev]) >= SHIP_GAIN]
    skipped = {r["dataset"]: r["default_expansion"].get("reason") for r in rows}
    skipped = {d: why for d, why in skipped.items() if why is not None}
    lines += [
        "",
        f"A direction ships if it gains {SHIP_GAIN:.0f} point or more over the ensemble (over the ensemble + "
        "expansion, for those built on it) on the development group, holds on the report group and leaves no "
        "dataset more than 2 points under the plain template "
        "that the ensemble itself does not. "
        + (f"Past the first mark: {', '.join(names[key] for key in kept)}. " if kept else "None passes the first. ")
        + f"Expanding every label set loses {worst['expanded'] - worst['plain']:+.1f} against the plain template on "
        f"{worst['dataset']}; the default leaves the expansion out where one label's name holds another's, a label "
        "has a description or a label's name has no word the tokenizer knows whole ("
        + (", ".join(f"{d}: {why}" for d, why in skipped.items()) or "none of these sets")
        + f"). The expansion embeds {out['vocabulary']['words']:,} vocabulary words once for each encoder "
        f"({out['vocabulary']['seconds_uncached']:.0f} s with MiniLM here), kept on disk after that.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=NAMES)
    a = ap.parse_args()
    t = time.perf_counter()
    words = len(vocabulary(TextEncoder())[0])  # uncached: what a user's first fit would pay
    seconds = round(time.perf_counter() - t, 1)
    run_per_dataset(
        a.datasets,
        evaluate,
        "eval.zeroshot_templates",
        "text_zeroshot_templates",
        markdown,
        pool=POOL,
        expansion_grid=EXPANSION_GRID,
        vocabulary={"words": words, "seconds_uncached": seconds},
    )


if __name__ == "__main__":
    main()
