"""The user-facing classifiers: an encoder (the body) joined to a head, fitted on raw inputs.

- :mod:`.few_shot`: :class:`FewShotClassifier`, from labelled examples;
- :mod:`.zero_shot`: :class:`ZeroShotClassifier`, from label text (classification and tagging);
- :mod:`.adaptation`: zero-shot label vectors adapted to an unlabelled corpus;
- :mod:`.base`: calibrated probabilities, abstention and scoring, shared by both;
- :mod:`.persistence`: their pickle-free save format.
"""

from fewshot.classifiers.base import CalibratedClassifier
from fewshot.classifiers.few_shot import FewShotClassifier
from fewshot.classifiers.zero_shot import ZEROSHOT_TEMPERATURE, ZeroShotClassifier

__all__ = ["CalibratedClassifier", "FewShotClassifier", "ZEROSHOT_TEMPERATURE", "ZeroShotClassifier"]
