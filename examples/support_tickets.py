"""Route support tickets with five examples a class, then add a new class on the fly.

python examples/support_tickets.py
"""

from fewshot import FewShotClassifier
from fewshot.demo import demo_examples

rows = demo_examples()
clf = FewShotClassifier(head="prototype").fit([r["text"] for r in rows], [r["label"] for r in rows])
print(clf.predict(["I was billed for a plan I never ordered", "the parcel is stuck in customs"]))

# a new class arrives: two examples are enough, and nothing already learnt is refitted
clf.add_examples(["Do you offer a discount for students?", "What does the premium plan cost?"], ["pricing"] * 2)
print(clf.classes_, clf.predict(["is there a cheaper plan for schools?"]))
