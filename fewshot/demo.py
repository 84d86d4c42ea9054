"""``fewshot demo``: a few-shot classifier, zero-shot tags and a search, on a handful of bundled examples."""

from __future__ import annotations

import json
import tempfile
import time
from importlib import resources
from typing import TextIO

from fewshot.classifiers import FewShotClassifier, ZeroShotClassifier
from fewshot.encoders import TextEncoder
from fewshot.index import EmbeddingIndex

NEW_MESSAGES = [
    "I paid but the money was taken from my account two times",
    "The package still hasn't shown up and it's been two weeks",
    "Every time I press save the program freezes",
    "How do I change my username?",
]
TAG_TEXTS = [
    "The parcel came late and the invoice charged me for express shipping.",
    "Our team lost the final after a penalty shoot-out.",
    "I baked bread this morning.",
]
TAGS = ["money and payments", "delivery", "sport", "software bug"]


def demo_examples() -> list[dict[str, str]]:
    text = resources.files("fewshot.data").joinpath("demo.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_demo(out: TextIO) -> None:
    """Run the demo, printing to ``out``; every model call is real (the bundled MiniLM, on the CPU)."""
    rows = demo_examples()
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    encoder = TextEncoder()  # one encoder shared by every step: the model loads once

    print(
        f"1. Few-shot: fit a prototype classifier on {len(rows)} support-desk messages "
        f"({len(set(labels))} classes, {len(rows) // len(set(labels))} each)",
        file=out,
    )
    t = time.perf_counter()
    clf = FewShotClassifier(encoder=encoder).fit(texts, labels)
    print(f"   fitted in {time.perf_counter() - t:.2f} s (model load included)", file=out)
    proba = clf.predict_proba(NEW_MESSAGES)
    for text, p in zip(NEW_MESSAGES, proba):
        best = p.argmax()
        print(f"   {clf.classes_[best]:<10} {p[best]:.2f}  {text}", file=out)

    print("\n2. Zero-shot tags (no examples, labels only; the defaults of tag()):", file=out)
    zs = ZeroShotClassifier(TAGS, encoder=encoder)
    for text, tags in zip(TAG_TEXTS, zs.tag(TAG_TEXTS)):
        shown = ", ".join(f"{label} ({score:.2f})" for label, score in tags) or "none of these"
        print(f"   {text}\n     -> {shown}", file=out)

    print("\n3. Search: index the support messages, then query by meaning", file=out)
    index = EmbeddingIndex(encoder=encoder, name="demo")
    index.add(texts, labels=labels, metadata=[{"n": i} for i in range(len(texts))])
    for query, where in [("my delivery is late", None), ("money back", {"label": "billing"})]:
        note = f" where {where}" if where else ""
        print(f"   query: {query!r}{note}", file=out)
        for hit in index.search(query, k=3, where=where):
            print(f"     {hit.score:.3f}  [{hit.label}] {hit.item}", file=out)
    with tempfile.TemporaryDirectory() as tmp:
        index.save(f"{tmp}/demo")
        again = EmbeddingIndex.load(f"{tmp}/demo", encoder=encoder)
        same = again.search("my delivery is late", k=1)[0].id == index.search("my delivery is late", k=1)[0].id
        print(f"   saved and reloaded the index ({len(again)} items); same top hit after reload: {same}", file=out)
