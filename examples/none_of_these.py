"""Calibrated probabilities and "none of these", with examples and without.

python examples/none_of_these.py

The first zero-shot run on a machine embeds the tokenizer's vocabulary once (the label widening: about 12 s
on two quiet cores), kept under $FEWSHOT_HOME/vocab for every later run.
"""

from fewshot import FewShotClassifier, ZeroShotClassifier
from fewshot.demo import demo_examples

rows = demo_examples()
texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
queries = ["I was billed twice for one order", "my parcel is lost somewhere", "what a lovely sunset over the hills"]

# five examples a class: the temperature and the abstention threshold come from held-out examples
clf = FewShotClassifier(abstain="auto").fit(texts, labels)
print("temperature", round(clf.temperature_, 2), "threshold", round(clf.threshold_, 3))
for q, label, score, p in zip(queries, *clf.predict_with_scores(queries)):
    print(f"  {q!r}: {label} (score {score:.2f}, probability {p.max():.2f})")  # None: none of these

# no examples: label text only; a number sets the threshold (a cosine), or pass your own unlabelled
# texts to fit() and abstain="auto" takes it from them
zs = ZeroShotClassifier(["billing", "shipping", "account", "technical problem"], abstain=0.15, abstain_label="")
print([label or "(none of these)" for label in zs.predict(queries).tolist()])
print(zs.tag(["the charge on my card arrived with the delivery"], top_k=2))
