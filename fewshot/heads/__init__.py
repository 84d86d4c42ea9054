"""Classifier heads: scikit-learn estimators on embeddings, one method per module."""

from __future__ import annotations

from fewshot.heads.auto import AutoHead
from fewshot.heads.base import BaseHead, describe_head
from fewshot.heads.knn import KNNHead
from fewshot.heads.linear import LinearHead
from fewshot.heads.prototype import PrototypeHead
from fewshot.heads.registry import FEW_SHOT_HEADS, HEADS, head_from_state, make_head
from fewshot.heads.tip_adapter import CacheAdapterHead
from fewshot.heads.zeroshot import ZeroShotHead

__all__ = [
    "AutoHead",
    "BaseHead",
    "CacheAdapterHead",
    "FEW_SHOT_HEADS",
    "HEADS",
    "KNNHead",
    "LinearHead",
    "PrototypeHead",
    "ZeroShotHead",
    "describe_head",
    "head_from_state",
    "make_head",
]
