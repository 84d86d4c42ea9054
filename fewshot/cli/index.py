"""``fewshot index build|add|remove|search|info``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fewshot.cli.common import (
    check_image_records,
    check_images_readable,
    image_rows,
    is_image_input,
    make_encoder,
    progress,
)
from fewshot.cli.records import column, label_column, read_records, text_column
from fewshot.errors import InputError


def _id(value: Any, i: int, a: argparse.Namespace) -> int:
    """An id cell as an integer: a whole number, or text that reads as one (CSV cells are text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise InputError(f"{a.data}: record {i + 1} has id {value!r} in column {a.id_col!r}; ids must be integers")


def _index_rows(a: argparse.Namespace, encoder: Any, whose: str):
    """(items, ids, labels, metadata) of a record file or an image folder (labels from subfolders)."""
    if is_image_input(a.data):
        _, files, _ = image_rows(a.data, labelled=False)
        root = Path(a.data)
        labels = None
        if root.is_dir():
            parts = [Path(f).relative_to(root).parts for f in files]
            labels = [p[0] if len(p) > 1 else None for p in parts]
            labels = labels if any(lab is not None for lab in labels) else None
        return files, None, labels, None
    rows = read_records(a.data, a.format, a.encoding)
    texts = text_column(rows, a.text_col, a.data)
    check_image_records(a.data, texts, encoder, whose)
    labels = label_column(rows, a.label_col, a.data) if a.label_col else None
    ids = None
    if a.id_col:
        ids = [_id(v, i, a) for i, v in enumerate(column(rows, a.id_col, a.data))]
    meta_cols = [c for c in (a.meta_cols or "").split(",") if c]
    for c in meta_cols:  # a record may lack a field; a column no record has is a typo
        if not any(c in r for r in rows):
            have = ", ".join(sorted({str(k) for r in rows for k in r})) or "none"
            raise InputError(f"{a.data}: no record has the metadata column {c!r} (columns: {have})")
    metadata = [{c: r.get(c) for c in meta_cols} for r in rows] if meta_cols else None
    return texts, ids, labels, metadata


def cmd_index_build(a: argparse.Namespace) -> int:
    from fewshot.errors import SaveExistsError
    from fewshot.index import EmbeddingIndex, resolve_index_path
    from fewshot.index.embedding_index import FILES, holds_index
    from fewshot.storage import check_target

    target = resolve_index_path(a.name)
    check_target(target, "index", FILES)  # before any encoding; names whatever else the folder holds
    if target.exists() and holds_index(target) and not a.overwrite:  # a killed first save's placeholder: ours
        raise InputError(f"an index already exists at {target}; use 'fewshot index add' or --overwrite")
    if getattr(a, "from_embeddings", None):
        return _build_from_embeddings(a, target)
    if getattr(a, "data", None) is None:
        raise InputError("index build takes a data file (or --from-embeddings OUTPUT, a batch embed job's folder)")
    encoder = make_encoder(a.encoder, is_image_input(a.data))
    check_images_readable(a.data, encoder, f"--encoder {a.encoder}")
    items, ids, labels, metadata = _index_rows(a, encoder, f"--encoder {a.encoder}")
    index = EmbeddingIndex(encoder, kind=a.kind, name=target.name)
    index.add(items, ids=ids, labels=labels, metadata=metadata, show_progress=progress(items))
    try:
        index.save(target, overwrite=a.overwrite)  # checked again under the lock: another build may have finished
    except SaveExistsError as exc:  # in the CLI's words, not the library's
        raise InputError(
            f"an index was saved at {target} while this build ran; use 'fewshot index add' or --overwrite"
        ) from exc
    print(f"indexed {len(index)} items ({index.structure}) -> {target}", file=sys.stderr)
    return 0


def _build_from_embeddings(a: argparse.Namespace, target: Path) -> int:
    """``index build NAME --from-embeddings OUTPUT``: the vectors of a batch embed job, not encoded again."""
    from fewshot.index import EmbeddingIndex

    options = _embedding_options(a)
    if a.encoder:  # an encoder given as well: the vectors must have come from it (checked when adding)
        index = EmbeddingIndex(make_encoder(a.encoder, False), kind=a.kind, name=target.name)
        index.add_batch_output(a.from_embeddings, **options)
    else:  # the encoder the batch job recorded
        index = EmbeddingIndex.from_batch_output(a.from_embeddings, kind=a.kind, name=target.name, **options)
    added = len(index)
    index.save(target, overwrite=a.overwrite)
    print(f"indexed {added} vectors from {a.from_embeddings} ({index.structure}) -> {target}", file=sys.stderr)
    return 0


def _embedding_options(a: argparse.Namespace) -> dict[str, Any]:
    """:meth:`~fewshot.index.EmbeddingIndex.add_batch_output`'s options from ``--from-embeddings``' command."""
    if getattr(a, "data", None) not in (None, "-"):
        raise InputError("give either a data file or --from-embeddings, not both")
    text_col = getattr(a, "text_col", None)
    columns = _output_columns(a.from_embeddings)
    if text_col not in columns and text_col != "text":  # the default is kept only when the job kept it
        raise InputError(
            f"--text-col {text_col}: {a.from_embeddings} has no such column (columns: {', '.join(columns)}); keep "
            "it in the embed job with --keep-cols"
        )
    return dict(
        id_col=a.id_col or "auto",
        label_col=a.label_col,
        meta_cols=[c for c in (a.meta_cols or "").split(",") if c],
        item_col="auto" if text_col == "text" else text_col,  # the default: the column the job read, if kept
    )


def _output_columns(path: str) -> list[str]:
    import pyarrow.parquet as pq

    from fewshot.batch import output_shards

    shards = output_shards(path)
    return pq.read_schema(shards[0]).names if shards else []


def cmd_index_add(a: argparse.Namespace) -> int:
    from fewshot.index import EmbeddingIndex, resolve_index_path
    from fewshot.index.embedding_index import FILES, OWNED, check_readable
    from fewshot.storage import check_target

    target = resolve_index_path(a.name)
    encoder = EmbeddingIndex.load(target).encoder  # the index's own encoder, checked against its weights
    check_target(target, "index", FILES + OWNED)  # a folder the add cannot be saved in: before any encoding
    if a.from_embeddings:
        options = _embedding_options(a)
        with EmbeddingIndex.update(target, encoder=encoder) as index:  # waits for any other writer
            added = index.add_batch_output(a.from_embeddings, **options)
            count = len(index)
        print(f"added {added} vectors from {a.from_embeddings}; {count} in {target}", file=sys.stderr)
        return 0
    if a.data is None:
        raise InputError("index add takes a data file (or --from-embeddings OUTPUT, a batch embed job's folder)")
    if encoder is None:
        raise InputError(f"the index at {target} holds raw vectors with no encoder; records cannot be added")
    check_images_readable(a.data, encoder, f"the index at {target}")
    items, ids, labels, metadata = _index_rows(a, encoder, f"the index at {target}")
    E = encoder.encode(items, show_progress=progress(items))  # the slow part, outside the writer lock
    check_readable(E, items, "items", encoder)
    with EmbeddingIndex.update(target, encoder=encoder) as index:  # waits for any other writer
        stored = [x if isinstance(x, str) else None for x in items]
        try:
            index.add_embeddings(E, ids=ids, labels=labels, metadata=metadata, items=stored)
        except InputError as exc:  # the library's remedy in the CLI's words
            if "call compact()" not in str(exc):
                raise
            remedy = f"run 'fewshot index remove {a.name} --compact'"
            raise InputError(str(exc).replace("call compact()", remedy)) from None
        count = len(index)
    print(f"added {len(items)} items; {count} in {target}", file=sys.stderr)
    return 0


def _parse_ids(raw: list[str]) -> list[int]:
    """``--ids 3,7 9``: integers, separated by commas or given as several words."""
    out = []
    for word in raw:
        for part in word.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(int(part))
            except ValueError:
                raise InputError(f"--ids takes integers separated by commas, got {part!r}") from None
    if not out:
        raise InputError("--ids was given no id")
    return out


def cmd_index_remove(a: argparse.Namespace) -> int:
    from fewshot.index import EmbeddingIndex, resolve_index_path

    if not a.ids and not a.where and not a.compact:
        raise InputError("index remove takes --ids, --where, or both (the ids that match the filter); or --compact")
    target = resolve_index_path(a.name)
    ids = _parse_ids(a.ids) if a.ids else None
    with EmbeddingIndex.update(target) as index:  # waits for any other writer; saved when the block ends
        removed, unknown = None, []
        if ids is not None or a.where:
            kinds = index.filter_kinds()
            where = parse_where(a.where, kinds)
            unknown = sorted(k for k in where or {} if k not in kinds and k != "id")  # a typo, or removed before
            removed = index.remove(ids, where=where)
        if a.compact:
            index.compact()
        count = len(index)
    if removed is None:
        print(f"compacted; {count} item{'' if count == 1 else 's'} in {target}", file=sys.stderr)
        return 0
    asked = f" (of {len(set(ids))} ids given)" if ids is not None else ""
    print(f"removed {removed} item{'' if removed == 1 else 's'}{asked}; {count} left in {target}", file=sys.stderr)
    if unknown:
        print(f"fewshot: no item has the field {', '.join(map(repr, unknown))}", file=sys.stderr)
    return 0


def parse_where(pairs: list[str] | None, kinds: dict[str, set[str]]) -> dict[str, Any] | None:
    """``--where FIELD=VALUE`` pairs as a filter. A value is read as the type the field holds in the index:
    ``label=3`` is the string "3" where labels are strings, the number 3 where they are numbers."""
    if not pairs:
        return None
    from fewshot.index.filters import json_kind

    where: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--where takes FIELD=VALUE, got {pair!r}")
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = raw
        held = {"number"} if key == "id" else kinds.get(key, set())
        if isinstance(parsed, (list, dict)):
            value: Any = raw
        elif json_kind(parsed) in held or (parsed is None and raw == "null"):
            value = parsed
        else:
            value = raw if "string" in held or not held else parsed
        where.setdefault(key, []).append(value)
    return where


def cmd_index_search(a: argparse.Namespace) -> int:
    from fewshot.index import EmbeddingIndex

    index = EmbeddingIndex.load(a.name)
    modality = getattr(index.encoder, "modality", None)  # None: raw vectors, which the library explains
    if a.image and modality == "text":
        raise InputError(f"the index {a.name} holds text: search it with a text query, without --image")
    if not a.image and modality == "image" and not index.encoder.supports_text:
        raise InputError(
            f"the index {a.name} holds images and its encoder reads no text: give an image file with --image"
        )
    query: Any = Path(a.query) if a.image else a.query
    if a.image and not Path(a.query).is_file():
        raise InputError(f"--image: no such image file: {a.query}")
    hits = index.search(query, k=a.k, where=parse_where(a.where, index.filter_kinds()))
    for h in hits:
        if a.json:
            record = {"id": h.id, "score": round(h.score, 6), "item": h.item, "label": h.label, "metadata": h.metadata}
            print(json.dumps(record, ensure_ascii=False))
        else:
            label = f" [{h.label}]" if h.label is not None else ""
            print(f"{h.score:.4f}  {h.id}{label}  {h.item}")
    if not hits:  # said on stderr, so that stdout stays a list of hits (empty) for a script
        matched = "matches the --where filter" if a.where else "is in the index"
        print(f"fewshot: no hits: no item {matched}", file=sys.stderr)
    return 0


def cmd_index_info(a: argparse.Namespace) -> int:
    from fewshot.index import EmbeddingIndex

    print(json.dumps(EmbeddingIndex.load(a.name).info(), indent=2))
    return 0
