"""The ``fewshot`` command line: fit, predict, zeroshot, index build|add|search|info, demo."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from fewshot.errors import FewShotError, InputError


def _quiet_libraries() -> None:
    """Keep library chatter (weight-loading bars, hub warnings) off a tool's stderr."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - older or missing transformers
        pass


def _texts(rows: list[dict[str, Any]], col: str, where: str) -> list[str]:
    from fewshot.io import column

    values = column(rows, col, where)
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            raise InputError(f"{where}: record {i + 1} has an empty or non-text {col!r}")
    return values


def _out(path: str | None):
    """A context manager for the output: standard output (left open) or a new file."""
    if path in (None, "-"):
        return contextlib.nullcontext(sys.stdout)
    return open(path, "w", encoding="utf-8", newline="")


def _parse_labels(inline: str | None, path: str | None) -> Any:
    if bool(inline) == bool(path):
        raise InputError("give the labels with --labels 'a,b,c' or --labels-file FILE (one of them)")
    if inline:
        return [s.strip() for s in inline.split(",") if s.strip()]
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    if p.suffix.lower() == ".json":
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc.msg})") from exc
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def _is_image_input(path: str | None) -> bool:
    """Whether the data argument names an image folder or an image file rather than a record file."""
    from fewshot.encoders.images import IMAGE_SUFFIXES

    if path in (None, "-"):
        return False
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES


def _make_encoder(spec: str | None, images: bool) -> Any:
    """An encoder from ``--encoder``: text, image, conse, or clip:MODEL:CHECKPOINT / clip:local-dir:FOLDER.

    Without ``--encoder`` the data decides: the bundled text model for records, the bundled image model
    for image folders and files.
    """
    from fewshot.encoders import ClipEncoder, ConSEEncoder, ImageEncoder, TextEncoder

    spec = spec or ("image" if images else "text")
    if spec == "text":
        return TextEncoder()
    if spec == "image":
        return ImageEncoder()
    if spec == "conse":
        return ConSEEncoder()
    if spec.startswith("clip:"):
        rest = spec[len("clip:") :]
        if rest.startswith("local-dir:"):
            return ClipEncoder(rest)
        model, sep, checkpoint = rest.partition(":")
        if not sep or not model or not checkpoint:
            raise InputError("--encoder clip takes clip:MODEL:CHECKPOINT (e.g. clip:ViT-B-32:/path/model.pt)")
        return ClipEncoder(model, checkpoint)
    raise InputError(f"unknown --encoder {spec!r}; use text, image, conse, clip:MODEL:CHECKPOINT or clip:local-dir:DIR")


def _image_rows(path: str, labelled: bool) -> tuple[list[dict[str, Any]], list[str], list[str] | None]:
    """Records for an image folder or file: one ``{"path": ...}`` row per image, and its class folder."""
    from fewshot.encoders.images import image_folder, images_in

    if labelled:
        if not Path(path).is_dir():
            raise InputError(f"{path}: fitting on images needs a folder with one subfolder of images per class")
        files, labels = image_folder(path)
        return [{"path": f, "label": lab} for f, lab in zip(files, labels)], files, labels
    files = images_in(path)
    return [{"path": f} for f in files], files, None


# -- commands ---------------------------------------------------------------------------------------
def cmd_fit(a: argparse.Namespace) -> int:
    from fewshot.classifier import FewShotClassifier
    from fewshot.io import column, read_records

    images = _is_image_input(a.data)
    if images:
        _, texts, labels = _image_rows(a.data, labelled=True)
    else:
        rows = read_records(a.data, a.format)
        texts, labels = _texts(rows, a.text_col, a.data), column(rows, a.label_col, a.data)
    head_params = json.loads(a.head_params) if a.head_params else None
    encoder = _make_encoder(a.encoder, images)
    tune = {"steps": a.tune, "seed": a.seed} if a.tune else False
    clf = FewShotClassifier(encoder, head=a.head, head_params=head_params, tune=tune, abstain=_abstain(a.abstain))
    clf.fit(texts, labels, show_progress=True)
    clf.save(a.output)
    picked = f" (picked {clf.head_.choice_}: {clf.head_.selection_['why']})" if a.head == "auto" else ""
    tuned = f", body tuned for {a.tune} steps" if a.tune else ""
    print(
        f"fitted a {a.head} classifier{picked} on {len(texts)} examples, {len(clf.classes_)} classes{tuned} "
        f"-> {a.output}",
        file=sys.stderr,
    )
    return 0


def _abstain(value: str | None) -> float | str | None:
    """``--abstain``: auto, off, or a number."""
    if value is None or value == "off":
        return None
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise InputError(f"--abstain takes auto, off or a number (a score threshold), got {value!r}") from None


def _prediction_rows(rows, labels, classes, proba, fmt, label_name="label") -> list[dict[str, Any]]:
    """One output record per input: the label ("" for "none of these"), its probability, all of them."""
    out = []
    for r, lab, p in zip(rows, labels, proba):
        best = int(p.argmax())
        rec = dict(r)
        rec[label_name] = "" if lab is None else lab
        rec["score"] = round(float(p[best]), 6)
        if fmt == "csv":
            rec.update({f"p_{c}": round(float(v), 6) for c, v in zip(classes, p)})
        else:
            rec["probabilities"] = {str(c): round(float(v), 6) for c, v in zip(classes, p)}
        out.append(rec)
    return out


def _output_format(a: argparse.Namespace) -> str:
    """The output format: the output file's, else the input's; plain text and images write JSON lines."""
    from fewshot.io import guess_format

    if a.output not in (None, "-"):
        fmt = guess_format(a.output, a.format)
    elif _is_image_input(a.data):
        fmt = a.format or "jsonl"
    else:
        fmt = guess_format(a.data, a.format)
    return "jsonl" if fmt == "txt" else fmt


def cmd_predict(a: argparse.Namespace) -> int:
    from fewshot.classifier import FewShotClassifier
    from fewshot.io import read_records, write_records

    clf = FewShotClassifier.load(a.model)
    if a.abstain is not None:
        threshold = _abstain(a.abstain)
        if threshold == "auto":
            raise InputError("predict --abstain takes off or a number; 'auto' is set when fitting (fit --abstain auto)")
        clf.threshold_ = threshold
    if _is_image_input(a.data):
        rows, texts, _ = _image_rows(a.data, labelled=False)
    else:
        rows = read_records(a.data, a.format)
        texts = _texts(rows, a.text_col, a.data or "stdin")
    labels, proba = clf.predict_with_proba(texts, show_progress=True)
    fmt = _output_format(a)
    fmt = "jsonl" if fmt == "txt" else fmt
    with _out(a.output) as f:
        write_records(_prediction_rows(rows, labels, clf.classes_.tolist(), proba, fmt, a.label_col), f, fmt)
    return 0


def cmd_zeroshot(a: argparse.Namespace) -> int:
    from fewshot.classifier import ZeroShotClassifier
    from fewshot.io import read_records, write_records

    labels = _parse_labels(a.labels, a.labels_file)
    images = _is_image_input(a.data)
    zs = ZeroShotClassifier(
        labels,
        encoder=_make_encoder(a.encoder, images),
        templates=a.templates,
        adapt=a.adapt,
        abstain=_abstain(a.abstain),
    )
    if images:
        rows, texts, _ = _image_rows(a.data, labelled=False)
    else:
        rows = read_records(a.data, a.format)
        texts = _texts(rows, a.text_col, a.data or "stdin")
    corpus = None
    if a.corpus:
        if _is_image_input(a.corpus):
            corpus = _image_rows(a.corpus, labelled=False)[1]
        else:
            corpus = _texts(read_records(a.corpus, None), a.text_col, a.corpus)
    elif a.adapt_to_input:
        corpus = texts
    zs.fit(corpus, show_progress=True)
    fmt = _output_format(a)
    if a.multi_label:
        tags = zs.tag(texts, threshold=a.threshold, top_k=a.top_k, show_progress=True)
        out_rows = []
        for r, t in zip(rows, tags):
            rec = dict(r)
            if fmt == "csv":
                rec["tags"] = ";".join(str(lab) for lab, _ in t)
                rec["scores"] = ";".join(f"{s:.4f}" for _, s in t)
            else:
                rec["tags"] = [{"label": lab, "score": round(s, 6)} for lab, s in t]
            out_rows.append(rec)
    else:
        labels_out, proba = zs.predict_with_proba(texts, show_progress=True)
        out_rows = _prediction_rows(rows, labels_out, zs.classes_.tolist(), proba, fmt)
    with _out(a.output) as f:
        write_records(out_rows, f, fmt)
    return 0


def _index_rows(a: argparse.Namespace):
    from fewshot.io import column, read_records

    if _is_image_input(a.data):
        rows, files, _ = _image_rows(a.data, labelled=False)
        root = Path(a.data)
        # an image inside a subfolder is labelled with that subfolder's name (the class-folder layout)
        labels = None
        if root.is_dir():
            parts = [Path(f).relative_to(root).parts for f in files]
            labels = [p[0] if len(p) > 1 else None for p in parts]
            labels = labels if any(lab is not None for lab in labels) else None
        return files, None, labels, None
    rows = read_records(a.data, a.format)
    texts = _texts(rows, a.text_col, a.data)
    labels = column(rows, a.label_col, a.data) if a.label_col else None
    ids = None
    if a.id_col:
        try:
            ids = [int(v) for v in column(rows, a.id_col, a.data)]
        except (TypeError, ValueError) as exc:
            raise InputError(f"{a.data}: ids in column {a.id_col!r} must be integers") from exc
    meta_cols = [c for c in (a.meta_cols or "").split(",") if c]
    metadata = [{c: r.get(c) for c in meta_cols} for r in rows] if meta_cols else None
    return texts, ids, labels, metadata


def cmd_index_build(a: argparse.Namespace) -> int:
    from fewshot.index import EmbeddingIndex, resolve_index_path

    target = resolve_index_path(a.name)
    if (target / "manifest.json").exists() and not a.overwrite:
        raise InputError(f"an index already exists at {target}; use 'fewshot index add' or --overwrite")
    texts, ids, labels, metadata = _index_rows(a)
    index = EmbeddingIndex(_make_encoder(a.encoder, _is_image_input(a.data)), kind=a.kind, name=target.name)
    index.add(texts, ids=ids, labels=labels, metadata=metadata, show_progress=True)
    index.save(target)
    print(f"indexed {len(index)} items ({index.structure}) -> {target}", file=sys.stderr)
    return 0


def cmd_index_add(a: argparse.Namespace) -> int:
    from fewshot.index import EmbeddingIndex, resolve_index_path

    target = resolve_index_path(a.name)
    index = EmbeddingIndex.load(target)
    texts, ids, labels, metadata = _index_rows(a)
    index.add(texts, ids=ids, labels=labels, metadata=metadata, show_progress=True)
    index.save(target)
    print(f"added {len(texts)} items; {len(index)} in {target}", file=sys.stderr)
    return 0


def _parse_where(pairs: list[str] | None) -> dict[str, Any] | None:
    if not pairs:
        return None
    where: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--where takes FIELD=VALUE, got {pair!r}")
        try:
            parsed = json.loads(value)  # numbers and booleans keep their type; plain words stay text
        except json.JSONDecodeError:
            parsed = value
        where.setdefault(key, []).append(parsed)
    return where


def cmd_index_search(a: argparse.Namespace) -> int:
    from fewshot.index import EmbeddingIndex

    index = EmbeddingIndex.load(a.name)
    hits = index.search(a.query, k=a.k, where=_parse_where(a.where))
    for h in hits:
        if a.json:
            print(
                json.dumps(
                    {"id": h.id, "score": round(h.score, 6), "item": h.item, "label": h.label, "metadata": h.metadata},
                    ensure_ascii=False,
                )
            )
        else:
            label = f" [{h.label}]" if h.label is not None else ""
            print(f"{h.score:.4f}  {h.id}{label}  {h.item}")
    return 0


def cmd_index_info(a: argparse.Namespace) -> int:
    from fewshot.index import EmbeddingIndex

    print(json.dumps(EmbeddingIndex.load(a.name).info(), indent=2))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from fewshot.demo import run_demo

    run_demo(sys.stdout)
    return 0


# -- parser -----------------------------------------------------------------------------------------
ENCODER_HELP = (
    "text (bundled MiniLM), image (bundled MobileNetV2), conse (MobileNetV2 in MiniLM's text space), "
    "clip:MODEL:CHECKPOINT or clip:local-dir:FOLDER; default: text for records, image for image folders"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fewshot", description="Few-shot and zero-shot classification and semantic search."
    )
    sub = p.add_subparsers(dest="command", required=True)

    def data_args(sp, data_optional=False, label=True):
        if data_optional:
            sp.add_argument(
                "data", nargs="?", default="-", help="CSV/JSONL/TXT file, an image file or folder, or - for stdin"
            )
        else:
            sp.add_argument("data", help="CSV, JSONL or TXT file, or an image folder (one subfolder per class)")
        sp.add_argument("--text-col", default="text", help="column holding the text (default: text)")
        if label:
            sp.add_argument("--label-col", default="label", help="column holding the label (default: label)")
        sp.add_argument("--format", choices=["csv", "jsonl", "txt"], help="input format when the name does not tell")

    sp = sub.add_parser("fit", help="fit a few-shot classifier on labelled examples and save it")
    data_args(sp)
    sp.add_argument("-o", "--output", required=True, help="folder to save the model in")
    sp.add_argument("--head", default="prototype", choices=["prototype", "knn", "linear", "cache", "auto"])
    sp.add_argument("--head-params", help="JSON keyword arguments for the head, e.g. '{\"k\": 5}'")
    sp.add_argument("--encoder", help=ENCODER_HELP)
    sp.add_argument(
        "--tune", type=int, metavar="STEPS", help="contrastively tune the text model for STEPS steps first (e.g. 10)"
    )
    sp.add_argument("--seed", type=int, default=0, help="seed of the tuning (default 0)")
    sp.add_argument(
        "--abstain",
        help="'none of these': auto (threshold from held-out scores of the examples) or a score threshold; "
        "predict then writes an empty label for inputs below it",
    )
    sp.set_defaults(func=cmd_fit)

    sp = sub.add_parser("predict", help="classify records with a saved model")
    sp.add_argument("model", help="folder written by 'fewshot fit'")
    data_args(sp, data_optional=True, label=False)
    sp.add_argument("--label-col", default="label", help="name of the output label column (default: label)")
    sp.add_argument("-o", "--output", help="output file (.csv or .jsonl); default: stdout")
    sp.add_argument("--abstain", help="override the saved abstention threshold: off or a number")
    sp.set_defaults(func=cmd_predict)

    sp = sub.add_parser("zeroshot", help="classify or tag records from label names alone")
    data_args(sp, data_optional=True, label=False)
    sp.add_argument("--labels", help="comma-separated label names")
    sp.add_argument(
        "--labels-file", help="labels: .txt (one per line, 'name: attr, attr' allowed) or .json (list or dict)"
    )
    sp.add_argument("--templates", help="template set name (plain, ensemble) or one template with {}")
    sp.add_argument("--multi-label", action="store_true", help="tag each record with every label above --threshold")
    sp.add_argument("--threshold", type=float, help="cosine threshold for --multi-label (default 0.2)")
    sp.add_argument(
        "--corpus", help="unlabelled records of the task (file or image folder) to adapt the labels to (self-training)"
    )
    sp.add_argument("--adapt-to-input", action="store_true", help="use the records being classified as that corpus")
    sp.add_argument("--adapt", default="auto", choices=["auto", "selftrain", "center", "none"])
    sp.add_argument(
        "--abstain", help="'none of these' (empty label): a cosine threshold, or auto (needs --corpus/--adapt-to-input)"
    )
    sp.add_argument("--top-k", type=int, help="at most this many tags per record")
    sp.add_argument("--encoder", help=ENCODER_HELP)
    sp.add_argument("-o", "--output", help="output file (.csv or .jsonl); default: stdout")
    sp.set_defaults(func=cmd_zeroshot)

    ip = sub.add_parser("index", help="build, extend, search and describe a saved index")
    isub = ip.add_subparsers(dest="index_command", required=True)
    for name, func, helptext in [
        ("build", cmd_index_build, "build a new index from a file"),
        ("add", cmd_index_add, "add records to an index"),
    ]:
        sp = isub.add_parser(name, help=helptext)
        sp.add_argument("name", help="index name (saved under indexes/NAME) or a folder path")
        data_args(sp, label=False)
        sp.add_argument("--label-col", help="column holding a label to store and filter on")
        sp.add_argument("--id-col", help="column holding integer ids (default: numbered automatically)")
        sp.add_argument("--meta-cols", help="comma-separated columns to keep as metadata")
        if name == "build":
            sp.add_argument("--kind", default="auto", choices=["auto", "flat", "hnsw"])
            sp.add_argument("--overwrite", action="store_true", help="replace an existing index")
            sp.add_argument("--encoder", help=ENCODER_HELP)
        sp.set_defaults(func=func)
    sp = isub.add_parser("search", help="search an index by meaning")
    sp.add_argument("name", help="index name or folder")
    sp.add_argument("query", help="text, or an image file (image indexes; text needs a CLIP or ConSE index)")
    sp.add_argument("-k", type=int, default=5, help="hits to show (default 5)")
    sp.add_argument(
        "--where", action="append", metavar="FIELD=VALUE", help="filter on label, id or a metadata field; repeatable"
    )
    sp.add_argument("--json", action="store_true", help="one JSON object per hit")
    sp.set_defaults(func=cmd_index_search)
    sp = isub.add_parser("info", help="describe a saved index")
    sp.add_argument("name", help="index name or folder")
    sp.set_defaults(func=cmd_index_info)

    sp = sub.add_parser("demo", help="few-shot, zero-shot and search on bundled examples")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except (FewShotError, ValueError, OSError, csv.Error, sqlite3.Error) as exc:
        print(f"fewshot: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        print("fewshot: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
