"""Adding the vectors of a batch ``embed`` job (:mod:`fewshot.batch`) to an index, without encoding again.

The output's shards are checked before anything is added: each must be an ``embed`` shard, all of them by
one encoder, and that encoder must be the index's (an index of raw vectors with no encoder takes any whose
dimension matches). For ``kind="auto"`` the index picks the structure its final size calls for before the
first vector goes in, and an IVF-PQ structure is trained on a seeded sample drawn from the whole output, not
only from its first rows. Rows are then added in bounded batches, shard by shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fewshot.encoders import same_encoder
from fewshot.encoders.identity import describe
from fewshot.errors import EncoderMismatchError, InputError, warn_user
from fewshot.index.metadata import BUILT_IN_FIELDS

if TYPE_CHECKING:
    from fewshot.index.embedding_index import EmbeddingIndex


def describe_output(path: str | Path) -> tuple[list[Path], dict[str, Any], int]:
    """The shards of an ``embed`` output, their common description, and their total rows."""
    from fewshot.batch.runner import require_pyarrow

    require_pyarrow()
    import pyarrow.parquet as pq

    from fewshot.batch.output import output_shards, read_run_manifest, shard_description

    shards = output_shards(path)
    manifest = read_run_manifest(path)
    if manifest is not None and not manifest.get("complete"):
        raise InputError(
            f"the batch job writing {path} has not finished ({len(shards)} of {manifest.get('shards')} shards); "
            "run it again to complete it first"
        )
    if not shards:
        raise InputError(f"{path} holds no batch output shards (part-*.parquet)")
    first = None
    rows = 0
    for p in shards:
        d = shard_description(p)
        if d.get("task") != "embed":
            raise InputError(f"{p} is not the output of an embed job (its task is {d.get('task')!r})")
        if first is None:
            first = d
        elif not same_encoder(first["encoder"], d["encoder"]):
            raise EncoderMismatchError(f"{p} was embedded by another encoder than {shards[0]}")
        rows += pq.read_metadata(p).num_rows
    return shards, first, rows


def text_column(path: str | Path, names: list[str]) -> str | None:
    """The column of an embed output (``names``) that holds the texts (or image paths) the job read: the job's
    own text column when it kept it (``keep_cols``), else one called ``text``; None when neither was kept."""
    from fewshot.batch.output import read_run_manifest

    recorded = (((read_run_manifest(path) or {}).get("job") or {}).get("columns") or {}).get("text")
    return next((c for c in (recorded, "text") if c and c in names), None)


def check_encoder(index: EmbeddingIndex, identity: dict[str, Any], where: str) -> None:
    """Refuse vectors made by another encoder than the index's."""
    if index.encoder is None:
        if int(identity.get("dim", -1)) != index.dim:
            raise EncoderMismatchError(f"{where} holds {identity.get('dim')}-d vectors; this index takes {index.dim}")
        return
    mine = index._saved_identity or index.encoder.identity
    if not same_encoder(mine, identity):
        raise EncoderMismatchError(
            f"{where} was embedded with {describe(identity)}, but this index uses {describe(mine)}; "
            "embeddings from different encoders are not comparable"
        )


def _sample(shards: list[Path], total: int, size: int, seed: int) -> np.ndarray:
    """``size`` rows of the embeddings, chosen uniformly from all ``total`` with ``seed``, read shard by shard."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(total, size=min(size, total), replace=False))
    out, start = [], 0
    for p in shards:
        pf = pq.ParquetFile(p)
        n = pf.metadata.num_rows
        a, b = np.searchsorted(take, [start, start + n])
        if b > a:
            local = take[a:b] - start
            offset = 0
            for batch in pf.iter_batches(batch_size=65_536, columns=["embedding"]):
                lo, hi = np.searchsorted(local, [offset, offset + batch.num_rows])
                if hi > lo:
                    E = _matrix(batch.column(0))
                    out.append(E[local[lo:hi] - offset])
                offset += batch.num_rows
        start += n
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)


def _matrix(column: Any) -> np.ndarray:
    """A fixed-size list column of float32 as an (n, dim) array."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    dim = column.type.list_size
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)


def add_batch_output(
    index: EmbeddingIndex,
    path: str | Path,
    *,
    id_col: str | None = "auto",
    label_col: str | None = None,
    meta_cols: list[str] | tuple[str, ...] = (),
    item_col: str | None = "auto",
    batch_rows: int = 50_000,
) -> int:
    """See :meth:`fewshot.index.EmbeddingIndex.add_batch_output`."""
    import pyarrow.parquet as pq

    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InputError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    if "label" in meta_cols:
        raise InputError("'label' cannot be a metadata field (every item has a label): give it as the label column")
    shards, desc, total = describe_output(path)
    check_encoder(index, desc["encoder"], str(path))
    names = pq.read_schema(shards[0]).names
    if item_col == "auto":
        item_col = text_column(path, names)
    wanted = [c for c in (label_col, item_col, *meta_cols) if c]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise InputError(
            f"{path} has no column(s) {', '.join(missing)} (columns: {', '.join(names)}); keep them "
            "in the batch job with --keep-cols"
        )
    own_ids = desc["id_column"]
    use_ids = None
    if id_col == "auto":  # row numbers are ids only in an empty index: else they would clash with its own
        use_ids = None if desc.get("row_numbers") and len(index) else own_ids
    elif id_col is not None:
        if id_col not in names:
            raise InputError(f"{path} has no column {id_col!r} (columns: {', '.join(names)})")
        use_ids = id_col
    import pyarrow as pa

    if use_ids is not None and not pa.types.is_integer(pq.read_schema(shards[0]).field(use_ids).type):
        if id_col != "auto":
            raise InputError(
                f"id_col {id_col!r} holds {pq.read_schema(shards[0]).field(use_ids).type} values, and index ids are "
                "integers; leave id_col out to number the items, and list the column in meta_cols to keep it"
            )
        meta_cols = (*meta_cols, use_ids) if use_ids not in meta_cols else tuple(meta_cols)
        use_ids = None  # the job's own text ids are kept as metadata; the index numbers the items itself
    if use_ids:  # before training or moving the index to another structure
        _check_ids(index, shards, use_ids, str(path))
    # a column called "id" is kept as "source_id": "id" is the item's own id in where-filters
    keys = {c: f"source_{c}" if c in BUILT_IN_FIELDS else c for c in meta_cols}
    index._plan_for(total)
    if index._vectors is not None and index._vectors.structure != "ivfpq" and index._wants_ivfpq(total):
        sample = _sample(shards, total, index.ivfpq.training_rows(len(index) + total), index.ivfpq.seed)
        index._train_for(sample, len(index) + total)
    columns = list(dict.fromkeys(["embedding", *([use_ids] if use_ids else []), *wanted, *meta_cols]))
    added: list[np.ndarray] = []
    try:
        for p in shards:
            for batch in pq.ParquetFile(p).iter_batches(batch_size=batch_rows, columns=columns):
                E = _matrix(batch.column("embedding"))
                ids = batch.column(use_ids).to_numpy() if use_ids else None
                labels = batch.column(label_col).to_pylist() if label_col else None
                items = batch.column(item_col).to_pylist() if item_col else None
                metadata = None
                if meta_cols:
                    cols = {c: batch.column(c).to_pylist() for c in meta_cols}
                    metadata = [{keys[c]: cols[c][i] for c in meta_cols} for i in range(batch.num_rows)]
                added.append(index.add_embeddings(E, ids=ids, labels=labels, metadata=metadata, items=items))
    except BaseException:
        if added:  # all or nothing: the rows of the batches already added go again, and their vectors with
            try:  # them (an HNSW graph keeps removed ids until compacted, refusing them if added again)
                index.remove(np.concatenate(added))
                index.compact()
            except Exception as undo:  # the first error is the one to see; say the second beside it
                warn_user(f"the rows added before the error could not all be removed again ({undo})")
        raise
    return int(sum(len(a) for a in added))


def _check_ids(index: EmbeddingIndex, shards: list[Path], column: str, where: str) -> None:
    """Refuse, before anything is added, ids that repeat within the output or are in the index already."""
    import pyarrow.parquet as pq

    ids = np.concatenate([pq.read_table(p, columns=[column]).column(column).to_numpy() for p in shards])
    values, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        repeated = int(values[counts > 1][0])
        rows = np.flatnonzero(ids == repeated)[:2] + 1
        raise InputError(
            f"{where}: id {repeated} is in column {column!r} more than once (rows {rows[0]} and {rows[1]}); "
            "ids must be unique: nothing was added"
        )
    present = sorted(index._table.existing(values.tolist()))
    if present:
        raise InputError(f"{where}: ids already in the index: {present[:5]}; nothing was added")
