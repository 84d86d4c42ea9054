"""Zero-shot class vectors from label text (the open_clip recipe for text-only classes).

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021, sec.
3.1.4: each class vector is the mean of the normalised embeddings of several prompts (templates filled with
the class name, and here also with descriptions and attributes), re-normalised.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fewshot.heads.prototype import PrototypeHead
from fewshot.params import POSITIVE


class ZeroShotHead(PrototypeHead):
    """Class vectors pooled from embeddings of label prompts; cosine scores against them.

    ``fit(E, y, sample_weight)`` takes the embeddings of the prompts (one row per prompt), the class each
    prompt describes, and optionally a weight per prompt (so that, say, a class name and its description
    count equally however many templates each fills). Building the prompts from label text is the job of
    :func:`fewshot.prompts.label_prompts`; this head only sees embeddings, like every head.

    Parameters
    ----------
    temperature : softmax temperature on the cosine scores for ``predict_proba``.
    """

    name = "zeroshot"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"temperature": [POSITIVE]}

    center = False  # label vectors are compared as they are

    def __init__(self, temperature: float = 0.05) -> None:
        self.temperature = temperature

    def _allows_one_class(self) -> bool:
        # a single tag is meaningful for multi-label tagging with a threshold
        return True
