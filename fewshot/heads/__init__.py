"""Classifier heads: scikit-learn estimators on embeddings, one method per module."""

from __future__ import annotations

from typing import Any

import numpy as np

from fewshot.errors import CorruptFileError, InputError
from fewshot.heads.auto import AutoHead
from fewshot.heads.base import BaseHead
from fewshot.heads.cache import CacheAdapterHead
from fewshot.heads.knn import KNNHead
from fewshot.heads.linear import LinearHead
from fewshot.heads.prototype import PrototypeHead
from fewshot.heads.zeroshot import ZeroShotHead

HEADS: dict[str, type[BaseHead]] = {
    h.name: h for h in (PrototypeHead, KNNHead, LinearHead, CacheAdapterHead, AutoHead, ZeroShotHead)
}

__all__ = [
    "AutoHead",
    "HEADS",
    "BaseHead",
    "CacheAdapterHead",
    "KNNHead",
    "LinearHead",
    "PrototypeHead",
    "ZeroShotHead",
    "make_head",
    "head_from_state",
]


def make_head(head: str | BaseHead, **params: Any) -> BaseHead:
    """A head from its name (``"prototype"``, ``"knn"``, ``"linear"``, ``"cache"``, ``"auto"``,
    ``"zeroshot"``) or an instance."""
    if isinstance(head, BaseHead):
        return head.set_params(**params) if params else head
    if head not in HEADS:
        raise InputError(f"unknown head {head!r}; choose one of {', '.join(sorted(HEADS))}")
    return HEADS[head](**params)


def head_from_state(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> BaseHead:
    """Recreate a fitted head saved with ``BaseHead.get_state``."""
    name = config.get("head")
    if name not in HEADS:
        raise CorruptFileError(f"the save names an unknown head {name!r}")
    return HEADS[name].from_state(config, arrays)
