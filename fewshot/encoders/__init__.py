"""Encoders: turn inputs (text, images) into L2-normalised float32 vectors."""

from __future__ import annotations

from typing import Any

from fewshot.encoders.base import Encoder, describe, same_encoder
from fewshot.encoders.cache import EmbeddingCache
from fewshot.encoders.clip import ClipEncoder
from fewshot.encoders.conse import ConSEEncoder
from fewshot.encoders.image import BUNDLED_IMAGE, ImageEncoder
from fewshot.encoders.text import BUNDLED, TextEncoder
from fewshot.errors import EncoderMismatchError

__all__ = [
    "BUNDLED",
    "BUNDLED_IMAGE",
    "ClipEncoder",
    "ConSEEncoder",
    "EmbeddingCache",
    "Encoder",
    "ImageEncoder",
    "TextEncoder",
    "encoder_from_identity",
    "check_same_encoder",
]


def encoder_from_identity(identity: dict[str, Any]) -> Encoder:
    """Recreate the encoder a save was built with, from the identity recorded in its manifest."""
    kind = identity.get("kind")
    if kind == "sentence-transformers":
        return TextEncoder(identity.get("model"), normalize=bool(identity.get("normalize", True)))
    if kind == "torchvision" and identity.get("model") != "custom":
        model = identity.get("model")
        return ImageEncoder(
            None if model == BUNDLED_IMAGE else model,
            weights=identity.get("weights"),
            image_size=int(identity.get("image_size", 224)),
            normalize=bool(identity.get("normalize", True)),
        )
    if kind == "open_clip":
        return ClipEncoder(
            identity.get("model"), identity.get("pretrained"), normalize=bool(identity.get("normalize", True))
        )
    if kind == "conse":
        image, text = encoder_from_identity(identity["image"]), encoder_from_identity(identity["text"])
        return ConSEEncoder(
            image,  # type: ignore[arg-type]
            text,  # type: ignore[arg-type]
            space=identity.get("space", "classes"),
            top_t=identity.get("top_t"),
            tau=float(identity.get("tau", 0.02)),
            templates=identity.get("templates"),
            center=bool(identity.get("center", False)),
            normalize=bool(identity.get("normalize", True)),
        )
    raise EncoderMismatchError(
        f"cannot recreate an encoder of kind {kind!r} from a save; pass encoder=... when loading"
    )


def check_same_encoder(saved: dict[str, Any], encoder: Encoder, what: str) -> None:
    """Raise :class:`EncoderMismatchError` unless ``encoder`` is the one ``saved`` describes."""
    current = encoder.identity
    if not same_encoder(saved, current):
        raise EncoderMismatchError(
            f"{what} was built with {describe(saved)}, but the encoder given is {describe(current)}; "
            "embeddings from different encoders are not comparable: use the original encoder or rebuild"
        )
