"""The one table of named heads: what ``head="..."`` means everywhere (Python, the CLI, saved models)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fewshot.errors import CorruptFileError, InputError
from fewshot.heads.auto import AutoHead
from fewshot.heads.base import BaseHead
from fewshot.heads.knn import KNNHead
from fewshot.heads.linear import LinearHead
from fewshot.heads.prototype import PrototypeHead
from fewshot.heads.tip_adapter import CacheAdapterHead
from fewshot.heads.zeroshot import ZeroShotHead

HEADS: dict[str, type[BaseHead]] = {
    h.name: h for h in (PrototypeHead, KNNHead, LinearHead, CacheAdapterHead, AutoHead, ZeroShotHead)
}
# the heads a user fits on labelled examples (the zero-shot head is built from label text)
FEW_SHOT_HEADS = tuple(name for name in HEADS if name != "zeroshot")


def make_head(head: str | BaseHead, **params: Any) -> BaseHead:
    """A head from its name (see :data:`HEADS`) or an instance (returned with ``params`` set on it)."""
    if isinstance(head, BaseHead):
        return head.set_params(**params) if params else head
    if not isinstance(head, str) or head not in HEADS:
        raise InputError(f"unknown head {head!r}; choose one of {', '.join(FEW_SHOT_HEADS)} or pass a head instance")
    allowed = set(HEADS[head]().get_params(deep=False))
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InputError(
            f"head {head!r} has no parameter {', '.join(map(repr, unknown))}; it takes {', '.join(sorted(allowed))}"
        )
    return HEADS[head](**params)


def check_head(head: BaseHead) -> BaseHead:
    """``head`` once its settings (and for ``auto`` every candidate's) are checked: refused before any
    example is encoded or a body tuned, not after."""
    from fewshot.heads.auto import AutoHead
    from fewshot.params import validate_params

    validate_params(head)
    if isinstance(head, AutoHead):
        for candidate in head._heads():
            validate_params(candidate)
    return head


def head_from_state(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> BaseHead:
    """Recreate a fitted head saved with ``BaseHead.get_state``."""
    name = config.get("head")
    if name not in HEADS:
        raise CorruptFileError(f"the save names an unknown head {name!r}")
    return HEADS[name].from_state(config, arrays)
