"""Inputs as they travel over HTTP: texts as they are, images as base64 strings decoded to PIL images."""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from typing import Any

from fewshot.errors import MissingDependencyError
from fewshot.serve.errors import ApiError

_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)


def decode_image(text: str, field: str, max_pixels: int) -> Any:
    """One base64 image file (PNG, JPEG, ...; a ``data:image/...;base64,`` prefix is allowed) as a PIL image.

    Anything else (not base64, not an image, too many pixels) is a 400 :class:`ApiError` naming ``field``.
    """
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow comes with the images extra
        raise MissingDependencyError("images need Pillow: pip install 'fewshot[images]'") from exc

    body = _DATA_URL.sub("", text.strip(), count=1)
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_image", f"{field} is not base64 (an image file encoded as base64)", field) from None
    if not data:
        raise ApiError(400, "bad_image", f"{field} is empty; give a base64-encoded image file", field)
    try:
        with warnings.catch_warnings():
            # past Pillow's warning size the server's own limit (below) decides, with a message that names it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ApiError(
                        400, "bad_image", f"{field} is {w}x{h} pixels; the limit is {max_pixels} pixels", field
                    )
                if w == 0 or h == 0:
                    raise ApiError(400, "bad_image", f"{field} is an image of size {w}x{h}; it has no pixels", field)
                im.load()
                return im.copy()
    except ApiError:
        raise
    except Image.DecompressionBombError:  # more than twice Pillow's limit: refused at open, before its size is read
        raise ApiError(
            400, "bad_image", f"{field} declares more pixels than the limit of {max_pixels} pixels", field
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ApiError(
            400, "bad_image", f"{field} decodes from base64 but is not a readable image ({type(exc).__name__})", field
        ) from None


def decode_images(texts: list[str], field: str, max_pixels: int, part: str = "") -> list[Any]:
    """Each base64 string of ``field`` decoded, an error naming ``field[i]`` and ``part`` (``.text``)."""
    return [decode_image(t, f"{field}[{i}]{part}", max_pixels) for i, t in enumerate(texts)]


# a file as the page reads it: an image type, or the type a browser gives a file it cannot name, with any
# parameters before the base64 marker
_IMAGE_URL = re.compile(r"^\s*data:(image/[\w.+-]+|application/octet-stream)(;[\w.+-]+=[^;,]*)*;base64,", re.I)


def refuse_images(texts: list[str], field: str, what: str, part: str = "") -> list[str]:
    """``texts`` as they are, unless one is an image as a ``data:image/...;base64,`` URL (what the page sends
    for a picked file): embedded as text it would get a confident answer about its base64 characters."""
    for i, t in enumerate(texts):
        if _IMAGE_URL.match(t):
            name = f"{field}[{i}]{part}"
            raise ApiError(400, "bad_input", f"{name} is an image (a data:image/ URL), but {what} embeds text", name)
    return list(texts)


def try_image(text: str, max_pixels: int) -> Any | None:
    """The image ``text`` encodes, or None when it is not a base64 image (then it is text)."""
    try:
        return decode_image(text, "query", max_pixels)
    except ApiError:
        return None


def item_field(where: str) -> str:
    """An add-items request's field for the library's name of it: ``labels[1]`` -> ``items[1].label``,
    ``ids[0]`` -> ``items[0].id``, ``metadata[0]`` -> ``items[0].metadata``, ``items[2]`` -> ``items[2].text``;
    a whole column (``ids``) is the items."""
    m = re.fullmatch(r"(ids|labels|metadata|items)(\[\d+\])?(.*)", where)
    if not m:
        return where
    column, index, rest = m.groups()
    if index is None:
        return "items"
    part = {"ids": ".id", "labels": ".label", "metadata": ".metadata", "items": ".text"}[column]
    return f"items{index}{part}{rest if column == 'metadata' else ''}"


def field_of(message: str, default: str) -> tuple[str, str]:
    """The request field a library error message is about (its first word names what it checked), and the
    message with the library's name for it (``texts[2]``) replaced by the request's (``inputs[2]``)."""
    if message.startswith("no item has the metadata field"):
        return "where", message
    checked = re.match(r"(\w+): (\w+)=", message)  # a parameter check: "KNNHead: k=0 is not valid; ..."
    if checked:
        owner, name = checked.groups()
        if owner.endswith("Head"):
            return f"head_params.{name}", message
        if owner.endswith("Classifier"):
            return name, message  # the request's fields carry the classifier's parameter names
    if message.startswith("head ") and " has no parameter " in message:
        return "head_params", message
    setting = re.match(r"(abstain|abstain_label|calibrate|lexical|label_prior|tune|head|frame)=", message)
    if setting:  # a classifier setting judged against the data: "abstain='auto' ... needs 2 examples"
        return setting.group(1), message
    head = message.split(" ", 1)[0].split(":", 1)[0]
    if head == "y" or head.startswith("y["):  # the library's name for the labels
        named = "labels" + head[1:]
        message = named + message[len(head) :]
        count = r"^labels has (\d+) labels for (\d+) examples"
        message = re.sub(count, r"labels has \1 entries for \2 inputs", message)
        return named, message
    for prefix, field in (
        ("where", "where"),
        ("ids", "ids"),
        ("labels", "labels"),
        ("metadata", "metadata"),
        ("k", "k"),
        ("threshold", "threshold"),
        ("top_k", "top_k"),
        ("head_params", "head_params"),
        ("items", "items"),
    ):
        if head == prefix:
            return field, message
        if head.startswith(prefix + "["):
            return field + re.sub(r"\[['\"]([^'\"]*)['\"]\]", r".\1", head[len(prefix) :]), message
    for prefix in ("texts", "images", "X", "queries"):
        if head == prefix or head.startswith(prefix + "["):
            named = default + head[len(prefix) :]
            return named, named + message[len(head) :]
    if re.search(r"\blabels?\b", message) and default in ("inputs", "body"):
        return "labels", message  # e.g. "the new labels are ... but the model's classes are ..."
    return default, message
