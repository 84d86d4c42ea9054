"""Image inputs: file paths, PIL images and numpy arrays, checked at the boundary and decoded to RGB.

Conversions are documented rather than refused: grayscale becomes RGB by repeating the channel, a
palette image is expanded, transparent pixels are composited onto white (``"RGBA"``, ``"LA"``,
palette transparency), and pixel values are read by their range (:func:`_to_uint8`): integers above 255
(16-bit PNG or TIFF files, uint16 arrays) are 16-bit and scaled from 0-65535, floats are [0, 1] or [0, 255].
What cannot become a picture (a missing or unreadable file, a file that is not an image, an image with
zero width or height, an array of the wrong shape, pixel values in none of those ranges) is an
:class:`InputError` that names the input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fewshot._validate import check_sequence
from fewshot.errors import InputError, MissingDependencyError, warn_user

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow comes with the images extra
        raise MissingDependencyError("images need Pillow: pip install 'fewshot[images]'") from exc
    return Image


def is_image_item(x: Any) -> bool:
    """Whether ``x`` has a type an image encoder takes (a path, a PIL image, or an array)."""
    if isinstance(x, (str, Path, np.ndarray)):
        return True
    return type(x).__module__.startswith("PIL.")


def as_image_list(X: Any, *, what: str = "images") -> list[Any]:
    """Return ``X`` (one image or a sequence of them) as a list of images, checking each one's type.

    One image (a path, a PIL image, or an array of shape (H, W) / (H, W, C)) becomes a list of one. Paths
    must name existing files; arrays must be numeric with 1, 3 or 4 channels and no zero-size side. Files
    are only opened when they are encoded.
    """
    if X is None:
        raise InputError(f"{what} is None; expected image paths, PIL images or arrays")
    check_sequence(X, what, "image paths, PIL images or arrays")
    if isinstance(X, (str, Path)) or type(X).__module__.startswith("PIL."):
        X = [X]
    elif isinstance(X, np.ndarray) and X.dtype != object and X.ndim in (2, 3):
        X = [X]
    elif hasattr(X, "tolist") and not isinstance(X, np.ndarray):  # pandas Series
        X = X.tolist()
    if not isinstance(X, Iterable):
        raise InputError(f"{what} must be a list of image paths, PIL images or arrays, got {type(X).__name__}")
    items = list(X)
    if not items:
        raise InputError(f"{what} is empty; give at least one image")
    for i, x in enumerate(items):
        if isinstance(x, Path):
            x = items[i] = str(x)
        if isinstance(x, str):
            if not x.strip():
                raise InputError(f"{what}[{i}] is an empty string, not an image path")
            if Path(x).is_dir():
                raise InputError(
                    f"{what}[{i}]: {x} is a folder, not an image file; pass the image files in it "
                    "(fit() takes a folder with one subfolder per class)"
                )
            if not Path(x).is_file():
                raise InputError(f"{what}[{i}]: no such image file: {x}")
        elif isinstance(x, np.ndarray):
            _check_array(x, f"{what}[{i}]")
        elif type(x).__module__.startswith("PIL."):
            if min(x.size) == 0:
                raise InputError(f"{what}[{i}] is an image of size {x.size[0]}x{x.size[1]}; it has no pixels")
            try:  # its pixels are read here anyway (they key the embedding cache); Pillow asserts on a closed file
                x.load()
            except (AssertionError, ValueError, OSError, SyntaxError) as exc:
                why = f"{type(exc).__name__}: {exc}" if str(exc) else "its file is closed"
                raise InputError(
                    f"{what}[{i}]: the PIL image cannot be read ({why}); an image opened in a `with` block must be "
                    "used, or .copy()'d, inside it"
                ) from exc
        else:
            raise InputError(f"{what}[{i}] is {type(x).__name__}; give an image path, a PIL image or an array")
    return items


def _check_array(a: np.ndarray, where: str) -> None:
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"{where}: an image array must be numeric, got dtype {a.dtype}")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise InputError(f"{where}: an image array must have shape (H, W) or (H, W, 1|3|4), got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{where}: an image array of shape {a.shape} has no pixels")


def to_rgb(x: Any, where: str = "image") -> Any:
    """Decode one checked image to a PIL image in RGB mode (the conversions are in the module docstring)."""
    Image = _pil()
    if isinstance(x, str):
        try:
            with Image.open(x) as im:
                im.load()
                img = im.copy()
        except FileNotFoundError as exc:
            raise InputError(f"{where}: no such image file: {x}") from exc
        except Image.DecompressionBombError as exc:  # not an OSError: a header claiming billions of pixels
            raise InputError(
                f"{where}: {x} declares more pixels than Pillow opens by default ({exc}); if the file is "
                "trusted, raise PIL.Image.MAX_IMAGE_PIXELS"
            ) from exc
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise InputError(f"{where}: {x} cannot be read as an image ({type(exc).__name__}: {exc})") from exc
    elif isinstance(x, np.ndarray):
        img = Image.fromarray(_to_uint8(x, where))
    else:
        img = x
    if min(img.size) == 0:
        raise InputError(f"{where} has size {img.size[0]}x{img.size[1]}; it has no pixels")
    if img.mode.startswith("I") or img.mode == "F":
        # 16- and 32-bit grayscale (16-bit PNG and TIFF files open as "I;16" or "I"): PIL's own
        # conversion clips at 255, which turns a 16-bit picture white, so rescale its range here
        img = Image.fromarray(_to_uint8(np.asarray(img), where))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def _to_uint8(a: np.ndarray, where: str) -> np.ndarray:
    """Pixel values as 8-bit. uint8 is taken as it is and booleans as black and white. Other integers: up to 1
    a 0/1 mask, up to 255 8-bit values, up to 65535 16-bit values (scaled down); floats: [0, 1] or [0, 255],
    with half a level of rounding error allowed. Anything else is refused rather than clipped into a
    different picture. The range is read from the values, not the dtype's width or byte order, so a picture
    gives the same pixels however it was stored.
    """
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        return np.where(a, 255, 0).astype(np.uint8)
    f = np.asarray(a, dtype=np.float64)
    if not np.isfinite(f).all():
        raise InputError(f"{where}: the image array holds NaN or infinite values")
    lo, hi = float(f.min()), float(f.max())
    if np.issubdtype(a.dtype, np.floating):
        slack = 0.5 / 255
        if lo >= -slack and hi <= 1 + slack:
            scale = 255.0
        elif lo >= -0.5 and 1 + slack < hi <= 255.5:  # values below 0 and none above 1: normalised, not 0-255
            scale = 1.0
        else:
            raise InputError(
                f"{where}: float pixel values run from {lo:g} to {hi:g}; give them in [0, 1] or [0, 255] "
                "(undo any normalisation first)"
            )
    elif lo < 0 or hi > 65535:
        raise InputError(
            f"{where}: integer pixel values run from {lo:g} to {hi:g}; give 8-bit (0-255) or 16-bit (0-65535) pixels"
        )
    else:
        scale = 255.0 if hi <= 1 else 1.0 if hi <= 255 else 255.0 / 65535.0
    return np.clip(np.rint(f * scale), 0, 255).astype(np.uint8)


def image_cache_bytes(x: Any) -> bytes:
    """Bytes that identify an image's content (a file's bytes, not its name: a changed file is re-encoded)."""
    h = hashlib.sha256()
    if isinstance(x, str):
        with open(x, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    elif isinstance(x, np.ndarray):
        h.update(f"array{x.shape}{x.dtype}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    else:
        h.update(f"pil{x.mode}{x.size}".encode())
        h.update(x.tobytes())
    return h.digest()


def _image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (sorted), leaving out hidden files and folders: a ``.thumbnails``
    folder's pictures or macOS's ``._photo.jpg`` companions are no one's examples."""
    return [
        f
        for f in sorted(folder.rglob("*"))
        if f.is_file()
        and f.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in f.relative_to(folder).parts)
    ]


def image_folder(path: str | Path) -> tuple[list[str], list[str]]:
    """Image files under ``path`` and their labels, one subfolder per class (the torchvision ImageFolder
    layout): ``path/cat/1.jpg`` is labelled ``"cat"``. Files are sorted, so the order is stable.

    As in torchvision, images in folders nested inside a class folder belong to that class. A class folder
    with no image anywhere in it is refused (a class with no example), and one whose images are all in
    nested folders gets a warning: that is what a folder one level too high looks like (``photos/`` holding
    ``train/cat``, ``train/dog``, ``test/...`` would otherwise fit the classes "train" and "test").
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{path}: not a folder")
    files, labels, nested = [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = _image_files(sub)
        if not found:
            raise InputError(
                f"{path}: the class folder {sub.name!r} holds no image files "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); a class needs at least one example"
            )
        if all(f.parent != sub for f in found):
            nested.append(sub.name)
        files += [str(f) for f in found]
        labels += [sub.name] * len(found)
    if not files:
        raise InputError(
            f"{path}: no images found; expected one subfolder per class holding image files "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    if nested:
        warn_user(
            f"{path}: the class folder(s) {', '.join(map(repr, nested))} hold images only in nested folders, "
            f"which are labelled with the class folder's name; if the nested folders are the classes, pass "
            f"{Path(path) / nested[0]} instead"
        )
    return files, labels


def images_in(path: str | Path) -> list[str]:
    """Image files directly or recursively under a folder (sorted), or the file itself."""
    p = Path(path)
    if p.is_file():
        return [str(p)]
    if not p.is_dir():
        raise InputError(f"{path}: no such file or folder")
    files = [str(f) for f in _image_files(p)]
    if not files:
        raise InputError(f"{path}: no image files in this folder")
    return files
