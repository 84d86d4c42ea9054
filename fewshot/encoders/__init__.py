"""Encoders: turn inputs (text, images) into L2-normalised float32 vectors with a recorded identity."""

from __future__ import annotations

from fewshot.encoders.backbone import BUNDLED_IMAGE, ImageEncoder
from fewshot.encoders.base import Encoder, ImageEncoderBase, shared_model, weights_sha256
from fewshot.encoders.clip import ClipEncoder
from fewshot.encoders.conse import ConSEEncoder
from fewshot.encoders.embedding_cache import EmbeddingCache
from fewshot.encoders.identity import (
    IDENTITY_KEYS,
    check_same_encoder,
    describe,
    encoder_from_identity,
    identity_fingerprint,
    numerics,
    same_encoder,
)
from fewshot.encoders.onnx_image import OnnxImageEncoder
from fewshot.encoders.static import StaticEncoder
from fewshot.encoders.text import BUNDLED, BUNDLED_MPNET, TextEncoder

__all__ = [
    "BUNDLED",
    "BUNDLED_IMAGE",
    "BUNDLED_MPNET",
    "ClipEncoder",
    "ConSEEncoder",
    "EmbeddingCache",
    "Encoder",
    "IDENTITY_KEYS",
    "ImageEncoder",
    "ImageEncoderBase",
    "OnnxImageEncoder",
    "StaticEncoder",
    "TextEncoder",
    "check_same_encoder",
    "describe",
    "encoder_from_identity",
    "identity_fingerprint",
    "numerics",
    "same_encoder",
    "shared_model",
    "weights_sha256",
]
