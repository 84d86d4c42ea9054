"""fewshot: few-shot and zero-shot classification and semantic search on frozen pretrained encoders."""

from __future__ import annotations

__version__ = "0.1.0"

from fewshot.classifier import FewShotClassifier, ZeroShotClassifier  # noqa: E402
from fewshot.encoders import ClipEncoder, ConSEEncoder, Encoder, ImageEncoder, TextEncoder  # noqa: E402
from fewshot.errors import (  # noqa: E402
    CorruptFileError,
    DimensionError,
    EncoderMismatchError,
    FewShotError,
    InputError,
    ModelLoadError,
    NotFittedError,
)
from fewshot.heads import KNNHead, LinearHead, PrototypeHead, ZeroShotHead  # noqa: E402
from fewshot.index import EmbeddingIndex, Hit  # noqa: E402

__all__ = [
    "ClipEncoder",
    "ConSEEncoder",
    "ImageEncoder",
    "CorruptFileError",
    "DimensionError",
    "EmbeddingIndex",
    "Encoder",
    "EncoderMismatchError",
    "FewShotClassifier",
    "FewShotError",
    "Hit",
    "InputError",
    "KNNHead",
    "LinearHead",
    "ModelLoadError",
    "NotFittedError",
    "PrototypeHead",
    "TextEncoder",
    "ZeroShotClassifier",
    "ZeroShotHead",
]
