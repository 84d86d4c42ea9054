"""What the CLI's commands share: encoders from ``--encoder``, label files, image inputs, outputs."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from fewshot.cli.records import decode, lines, read_input_file
from fewshot.errors import InputError

ENCODER_KINDS = (
    "text (bundled MiniLM on torch; also text:torch), text:onnx (the same on ONNX Runtime), text:onnx-int8 "
    "(ONNX, int8: faster, slightly different vectors), static (a static model distilled from MiniLM: far "
    "faster, less accurate) or static:FOLDER (a local model2vec model), image (bundled MobileNetV2; image:onnx "
    "on ONNX Runtime), conse (MobileNetV2 in MiniLM's text space; conse:onnx), clip:MODEL:CHECKPOINT or "
    "clip:local-dir:FOLDER"
)
ENCODER_HELP = ENCODER_KINDS + "; default: text for records, image for image folders"


PROGRESS_MIN_INPUTS = 1000  # fewer inputs encode in seconds: a progress bar would only clutter stderr


def zeroshot_label_args(sp: argparse.ArgumentParser) -> None:
    """The flags that shape zero-shot labels and how inputs meet them (``fewshot zeroshot``, ``fewshot batch``)."""
    from fewshot.classifiers.expansion import EXPAND_METHODS
    from fewshot.prompts import POOLS

    sp.add_argument("--templates", help="zero-shot template set name (plain, ensemble) or one template with {}")
    sp.add_argument(
        "--expand",
        default="auto",
        choices=EXPAND_METHODS,
        help="widen each label name with the encoder's nearest vocabulary words (auto, default; left out for "
        "images, labels with descriptions and names that hold one another) or not (none)",
    )
    sp.add_argument(
        "--frame",
        default="auto",
        help="read each text also inside this template with one {} and sum the two embeddings (auto, default: "
        "'Sentence: {}' for transformer text models), or as it is (none: half the encoding time)",
    )
    sp.add_argument(
        "--pool",
        default="soft",
        choices=POOLS,
        help="score a label by a soft maximum over its prompts (soft, default) or against their mean (mean)",
    )


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def progress(inputs: Any) -> bool:
    """Whether encoding ``inputs`` shows a progress bar."""
    return inputs is not None and len(inputs) >= PROGRESS_MIN_INPUTS


def quiet_libraries() -> None:
    """Keep library chatter (weight-loading bars, hub warnings) off a tool's stderr."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - older or missing transformers
        pass


def check_output(path: str | None) -> None:
    """Refuse an output path that cannot be written, before any model is loaded or record encoded."""
    if path in (None, "-"):
        return
    p = Path(path)
    if p.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; name a file")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {path}: no such folder {parent}")
    direct = p.exists() and not p.is_file()  # a pipe or a device, written in place (see output)
    if not os.access(p if direct else parent, os.W_OK):  # else a new file is made beside it, then renamed
        raise InputError(f"cannot write {path}: permission denied")


@contextlib.contextmanager
def output(path: str | None):
    """The output: standard output (left open), or a file written whole or not at all (a temporary file
    beside it, renamed over it at the end; a failure midway leaves any earlier file as it was). A path that
    is not a regular file (a pipe, ``/dev/stdout``) is written directly."""
    if path in (None, "-"):
        yield sys.stdout
        return
    p = Path(path)
    direct = p.exists() and not p.is_file()
    target = p if direct else p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        f = open(target, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with f:
            yield f
        if not direct:
            os.replace(target, p)
    except BaseException:
        if not direct:
            with contextlib.suppress(OSError):
                os.unlink(target)
        raise


def parse_labels(inline: str | None, path: str | None, encoding: str = "utf-8") -> Any:
    """Labels from ``--labels a,b,c`` or ``--labels-file`` (.txt one a line, or .json: a list or a dict)."""
    if bool(inline) == bool(path):
        raise InputError("give the labels with --labels 'a,b,c' or --labels-file FILE (one of them)")
    if inline:
        labels = [s.strip() for s in inline.split(",")]
        if not any(labels):
            raise InputError("--labels holds no label names")
        if not all(labels):  # "a,,b" or "a,b,": refused, as the library refuses an empty label name
            raise InputError(f"--labels {inline!r} has an empty label name (two commas together, or one at an end)")
        return labels
    p = Path(path)
    text = decode(read_input_file(p), str(path), encoding)
    if p.suffix.lower() == ".json":
        try:
            labels = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg})") from exc
        if not isinstance(labels, (list, dict)):
            raise InputError(
                f"{path}: the JSON must be a list of label names or an object name -> description, "
                f"not a {type(labels).__name__}"
            )
        return labels
    return [line.strip() for line in lines(text) if line.strip()]


def is_image_input(path: str | None) -> bool:
    """Whether the data argument names an image folder or an image file rather than a record file."""
    from fewshot.encoders.image_inputs import IMAGE_SUFFIXES

    if path in (None, "-"):
        return False
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES


def check_images_readable(path: str | None, encoder: Any, whose: str) -> None:
    """Refuse an image folder or file given to an encoder that reads text: it would embed the file paths,
    and classify or index them, as if they were text."""
    if is_image_input(path) and getattr(encoder, "modality", "text") != "image":
        what = "a folder (read as images)" if Path(path).is_dir() else "an image file"
        raise InputError(
            f"{path} is {what}, but {whose} reads text, not images: give a file of records (CSV, JSONL or plain "
            "text) with a text column"
        )


def check_image_records(path: str | None, values: list[Any], encoder: Any, whose: str) -> None:
    """Refuse records whose column names no image file when ``whose`` reads images: lines of text would
    otherwise be taken as image paths, one 'no such image file' at a time."""
    if getattr(encoder, "modality", "text") != "image" or is_image_input(path):
        return
    for i, v in enumerate(values):
        if not (isinstance(v, str) and Path(v).is_file()):
            shown = v if len(str(v)) <= 60 else f"{str(v)[:57]}..."
            where = path if path not in (None, "-") else "standard input"
            raise InputError(
                f"{whose} reads images, but record {i + 1} of {where} names no image file ({shown!r}): give an "
                "image folder or file, or records whose text column holds image paths"
            )


NAMED_ENCODERS = (
    *("text", "text:torch", "text:onnx", "text:onnx-int8", "static"),
    *("image", "image:onnx", "conse", "conse:onnx"),
)


def check_encoder_spec(spec: str) -> None:
    """Refuse an ``--encoder`` value that names no encoder, from its spelling alone (nothing is loaded)."""
    if spec in NAMED_ENCODERS:
        return
    if spec.startswith("static:"):
        if not spec[len("static:") :].strip():
            raise InputError("--encoder static:FOLDER names a model2vec model's folder; give one, or 'static' alone")
        return
    if spec.startswith("clip:"):
        rest = spec[len("clip:") :]
        model, sep, checkpoint = rest.partition(":")
        if rest.startswith("local-dir:"):
            if not rest[len("local-dir:") :].strip():
                raise InputError("--encoder clip:local-dir:DIR names an open_clip model's folder; give one")
            return
        if sep and model and checkpoint:
            return
        raise InputError("--encoder clip takes clip:MODEL:CHECKPOINT (e.g. clip:ViT-B-32:/path/model.pt)")
    raise InputError(
        f"unknown --encoder {spec!r}; use text (or text:torch), text:onnx, text:onnx-int8, static, static:FOLDER, "
        "image, image:onnx, conse, conse:onnx, clip:MODEL:CHECKPOINT or clip:local-dir:DIR"
    )


def make_encoder(spec: str | None, images: bool) -> Any:
    """An encoder from ``--encoder``: text, text:onnx, text:onnx-int8, static, static:FOLDER, image, image:onnx,
    conse, conse:onnx, or clip:MODEL:CHECKPOINT / clip:local-dir:FOLDER.

    Without ``--encoder`` the data decides: the bundled text model for records, the bundled image model
    for image folders and files.
    """
    from fewshot.encoders import (
        ClipEncoder,
        ConSEEncoder,
        ImageEncoder,
        OnnxImageEncoder,
        StaticEncoder,
        TextEncoder,
    )

    text_specs = {
        "text": {},
        "text:torch": {},
        "text:onnx": {"backend": "onnx"},
        "text:onnx-int8": {"backend": "onnx", "quantize": "int8"},
    }
    spec = spec or ("image" if images else "text")
    check_encoder_spec(spec)
    if spec in text_specs:
        return TextEncoder(**text_specs[spec])
    if spec == "static":
        return StaticEncoder()
    if spec.startswith("static:"):
        return StaticEncoder(spec[len("static:") :])
    if spec == "image":
        return ImageEncoder()
    if spec == "image:onnx":
        return OnnxImageEncoder()
    if spec == "conse":
        return ConSEEncoder()
    if spec == "conse:onnx":
        return ConSEEncoder(OnnxImageEncoder(), TextEncoder(backend="onnx"))
    if spec.startswith("clip:"):
        rest = spec[len("clip:") :]
        if rest.startswith("local-dir:"):
            return ClipEncoder(rest)
        model, _, checkpoint = rest.partition(":")
        return ClipEncoder(model, checkpoint)
    raise AssertionError(f"check_encoder_spec let {spec!r} through")  # pragma: no cover


def image_rows(path: str, labelled: bool) -> tuple[list[dict[str, Any]], list[str], list[str] | None]:
    """Records for an image folder or file: one ``{"path": ...}`` row per image, and its class folder."""
    from fewshot.encoders.image_inputs import image_folder, images_in

    if labelled:
        if not Path(path).is_dir():
            raise InputError(f"{path}: fitting on images needs a folder with one subfolder of images per class")
        files, labels = image_folder(path)
        return [{"path": f, "label": lab} for f, lab in zip(files, labels)], files, labels
    files = images_in(path)
    return [{"path": f} for f in files], files, None


def abstain_setting(value: str | None, auto: bool = True) -> float | str | None:
    """``--abstain``: auto (where ``auto`` allows it), off, or a number."""
    if value is None or value == "off":
        return None
    if value == "auto" and auto:
        return value
    try:
        return float(value)
    except ValueError:
        takes = "auto, off or a number" if auto else "off or a number"
        raise InputError(f"--abstain takes {takes} (a score threshold), got {value!r}") from None


def head_params(text: str | None) -> dict[str, Any] | None:
    """``--head-params``: a JSON object of the head's keyword arguments."""
    if not text:
        return None
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--head-params is not valid JSON ({exc.msg}): {text!r}") from exc
    if not isinstance(params, dict):
        raise InputError(f"--head-params must be a JSON object such as '{{\"k\": 5}}', got {text!r}")
    return params
