"""Saving and loading classifiers: a manifest (settings, encoder identity, head config) plus one ``.npz`` of
arrays, and for a tuned body its weights as safetensors. Nothing is pickled; see :mod:`fewshot.storage`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.encoders import Encoder, TextEncoder, check_same_encoder, encoder_from_identity
from fewshot.errors import CorruptFileError, FewShotError, SaveExistsError
from fewshot.heads import BaseHead, head_from_state
from fewshot.storage import read_bundle, write_bundle

ARRAYS = "arrays.npz"
BODY = "body.safetensors"  # the weights of a tuned encoder
FILES = (ARRAYS, BODY)


def save_model(
    path: str | Path,
    bundle_type: str,
    encoder: Encoder,
    head: BaseHead,
    extra: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
    expect_save_id: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a classifier bundle; ``arrays`` are extra named arrays beside the head's. Returns the manifest.

    ``expect_save_id``: the save this classifier last saw in ``path`` (loaded from or saved there), which
    must still be there (:class:`~fewshot.errors.ConcurrentWriteError`); None, for a folder it never saw:
    a save of another model there is replaced only with ``overwrite`` (:class:`SaveExistsError`)."""
    config, head_arrays = head.get_state()
    all_arrays = {**head_arrays, **(arrays or {})}
    meta = {"encoder": encoder.identity, "head": config, **extra}

    def write_arrays(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **all_arrays)

    files = {ARRAYS: write_arrays}
    if getattr(encoder, "tuned_from", None) is not None:
        # a tuned body travels with the model: its weights as safetensors (no pickle); the rest is the
        # recorded starting model
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()}
        files[BODY] = lambda p: save_file(state, str(p))

    def refuse(old: dict[str, Any]) -> str | None:  # under the folder's lock, so two new saves cannot race
        if expect_save_id is not None or overwrite:
            return None
        classes = old.get("head", {}).get("classes") if isinstance(old.get("head"), dict) else None
        what = f"{len(classes)} classes, " if isinstance(classes, list) else ""
        raise SaveExistsError(
            f"{path} already holds a saved {bundle_type} ({what}saved {old.get('created', '?')}) that this one was "
            "neither loaded from nor saved to; load that one to change it, or save with overwrite=True to replace it"
        )

    return write_bundle(path, bundle_type, meta, files, expect_save_id=expect_save_id, still_current=refuse)


def untuned_start(encoder: Any) -> Any:
    """The encoder a tuned text encoder was tuned from, recreated from its identity, or ``encoder`` itself
    when it is not tuned or that body cannot be had again with the very weights the tune started from (an
    in-memory model, or a body that was itself tuned before)."""
    if getattr(encoder, "tuned_from", None) is None or getattr(encoder, "source", None) in (None, "custom"):
        return encoder
    identity = {k: v for k, v in encoder.identity.items() if k not in ("tuned_from", "tuning", "weights_sha256")}
    try:
        start = encoder_from_identity(identity)
        same = start.identity["weights_sha256"] == encoder.tuned_from  # loads it (shared with the tuned copy's)
    except FewShotError:
        return encoder
    return start if same else encoder


def load_tuned_body(identity: dict[str, Any], body: bytes) -> TextEncoder:
    """Rebuild a contrastively tuned text encoder: the recorded starting model plus the saved weights."""
    import copy

    from safetensors.torch import load as load_safetensors

    start = encoder_from_identity({k: v for k, v in identity.items() if k not in ("tuned_from", "tuning")})
    model = copy.deepcopy(start.model)
    model.load_state_dict(load_safetensors(body))
    tuned = TextEncoder(  # run as it was saved: an ONNX (int8) body is exported again on first use
        model,
        normalize=bool(identity.get("normalize", True)),
        backend=identity.get("backend") or "torch",
        quantize=identity.get("quantization"),
    )
    tuned.source, tuned.tuned_from, tuned.tuning = identity.get("model"), identity["tuned_from"], identity.get("tuning")
    return tuned


def load_model(
    path: str | Path, bundle_type: str, encoder: Encoder | None, reserved_prefixes: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, np.ndarray], Encoder, BaseHead]:
    """Open a classifier bundle: its manifest, all its arrays, the encoder (given, or recreated from the
    recorded identity and checked against it) and the head (from the arrays without a reserved prefix)."""
    manifest, files = read_bundle(path, bundle_type)
    try:
        with np.load(io.BytesIO(files[ARRAYS]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        own = {k: v for k, v in arrays.items() if not k.startswith(reserved_prefixes)} if reserved_prefixes else arrays
        head = head_from_state(manifest["head"], own)
        identity = manifest["encoder"]
    except CorruptFileError as exc:
        raise CorruptFileError(f"{path}: {exc}") from exc
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise CorruptFileError(f"{path}: the saved model cannot be read ({type(exc).__name__}: {exc})") from exc
    if encoder is None:
        if identity.get("tuned_from") is not None:
            if BODY not in files:
                raise CorruptFileError(f"{path}: the model was tuned, but its body weights are missing")
            encoder = load_tuned_body(identity, files[BODY])
        else:
            encoder = encoder_from_identity(identity)
    check_same_encoder(identity, encoder, f"the model at {path}")
    if encoder.dim != head.n_features_in_:
        raise CorruptFileError(
            f"{path}: the head expects dimension {head.n_features_in_}, the encoder gives {encoder.dim}"
        )
    return manifest, arrays, encoder, head


def prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose names start with ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
