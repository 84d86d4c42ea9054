"""The output side of a batch job: a folder of Parquet shards, a run manifest, and resuming.

``OUTPUT/`` holds ``part-FFFFF-CCCCC.parquet`` (chunk ``CCCCC`` of input shard ``FFFFF``) and
``_fewshot_batch.json``, the run manifest: the job's fingerprint, the scanned input (shards, sizes,
modification times, chunks), the encoder identity and, once every shard is written, ``"complete": true``.
Each shard carries the same description in its Parquet metadata (key ``fewshot``), with its own chunk.

A shard is written under a temporary name (``.part-...parquet.tmp-<token>``), flushed to disk and renamed
when whole, so a shard name on disk always means a finished shard; a rerun with the same arguments skips
those and redoes the rest. A rerun with other arguments, or over changed input, is refused (or, with
``overwrite``, starts again). The Ray engine's workers stage their rows under ``_staging/<shard>/`` (each
piece renamed when whole, named by its first row); the driver merges a shard's pieces, in row order, into
its final file once they cover every row of it. Only files a batch job wrote are ever deleted.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fewshot.batch.sources import ROW, Chunk, Plan
from fewshot.errors import CorruptFileError, InputError

MANIFEST = "_fewshot_batch.json"
STAGING = "_staging"
FORMAT = "fewshot-batch"
VERSION = 1
META_KEY = b"fewshot"
_OURS = re.compile(
    r"(part-\d{5}-\d{5}\.parquet|\.part-\d{5}-\d{5}\.parquet\.tmp-[0-9a-f]+|\.fewshot-batch-[0-9a-f]+\.tmp)"
)


def _fsync_dir(path: Path) -> None:
    from fewshot.storage.bundle import fsync_dir

    fsync_dir(path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.parent / f".fewshot-batch-{secrets.token_hex(4)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_run_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The run manifest of a batch output folder, or None when it has none."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{path} is not valid JSON ({exc}); the batch output is damaged") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CorruptFileError(f"{path} is not a fewshot batch manifest")
    if data.get("version", 0) > VERSION:
        raise CorruptFileError(f"{path} was written by a newer fewshot (version {data.get('version')}); upgrade")
    return data


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Each setting that differs between the recorded run ``a`` and this one ``b``, with both values."""
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
                out += _differences(a[k], b[k], f"{prefix}{k}.")
            else:
                out.append(f"{prefix}{k}: {_short(a, k)} before, {_short(b, k)} now")
    return out


def _short(settings: dict[str, Any], key: str, width: int = 60) -> str:
    if key not in settings:  # a fingerprint leaves out the settings at their defaults
        return "the default"
    text = json.dumps(settings[key], ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


class RunFolder:
    """An output folder during a run: the manifest, which shards are finished, and writing them."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    # -- starting or resuming -------------------------------------------------------------------------------
    def check_writable(self, overwrite: bool) -> dict[str, Any] | None:
        """The previous run's manifest (None for a new folder); refuses a folder of other files, and one this
        process may not write (before anything is loaded or encoded)."""
        from fewshot.storage.bundle import check_folder_place

        check_folder_place(self.folder, f"cannot write the batch output to {self.folder}")
        old = read_run_manifest(self.folder) if self.folder.is_dir() else None
        if old is None and self.folder.is_dir():
            foreign = [p.name for p in self.folder.iterdir() if not self._ours(p.name)]
            if foreign:
                raise InputError(
                    f"cannot write the batch output to {self.folder}: the folder holds files a batch job did not "
                    f"write ({', '.join(sorted(foreign)[:3])}); choose an empty or new folder"
                )
        if old is not None and overwrite:
            self.clear()
            return None
        return old

    def _ours(self, name: str) -> bool:
        from fewshot.storage.lock import LOCK_NAME

        return bool(_OURS.fullmatch(name)) or name in (MANIFEST, STAGING, LOCK_NAME)

    def clear(self) -> None:
        """Delete what a batch job wrote here (and nothing else)."""
        for p in self.folder.iterdir():
            if p.name == STAGING:
                shutil.rmtree(p, ignore_errors=True)
            elif self._ours(p.name) and p.name != ".fewshot.lock":
                p.unlink(missing_ok=True)

    def resume_check(self, old: dict[str, Any], fingerprint: dict[str, Any]) -> None:
        """Refuse to resume a run whose arguments differ from this one's."""
        diff = _differences(old.get("job", {}), fingerprint)
        if diff:
            raise InputError(
                f"{self.folder} holds the output of a batch job with other arguments ({'; '.join(diff[:4])}); "
                "use another output folder, or --overwrite to start again"
            )

    def sweep(self) -> None:
        """Remove the temporary files of a killed run (never a finished shard)."""
        for p in self.folder.iterdir():
            if p.name.startswith(".") and self._ours(p.name) and p.name != ".fewshot.lock":
                p.unlink(missing_ok=True)

    def start(self, manifest: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json(self.folder / MANIFEST, manifest)

    # -- shards ---------------------------------------------------------------------------------------------
    def shard_path(self, chunk: Chunk) -> Path:
        return self.folder / f"{chunk.name}.parquet"

    def finished(self, chunk: Chunk) -> bool:
        """Whether the shard of ``chunk`` is on disk whole (its name exists only after its rename)."""
        import pyarrow.parquet as pq

        path = self.shard_path(chunk)
        if not path.exists():
            return False
        try:
            rows = pq.read_metadata(path).num_rows
        except Exception as exc:  # a shard named but unreadable was not written by this code: report it
            raise CorruptFileError(f"{path} is not a readable Parquet file ({exc}); delete it to redo it") from exc
        if rows != chunk.rows:
            raise CorruptFileError(f"{path} holds {rows} rows, the plan says {chunk.rows}; delete it to redo it")
        return True

    def write_shard(self, chunk: Chunk, tables: Iterable[Any], metadata: dict[str, Any]) -> int:
        """Write ``tables`` (output rows of ``chunk``, in order) as its shard; return the rows written."""
        import pyarrow.parquet as pq

        tmp = self.folder / f".{chunk.name}.parquet.tmp-{secrets.token_hex(4)}"
        writer = None
        rows = 0
        try:
            for t in tables:
                t = strip_internal(t)
                if writer is None:
                    schema = t.schema.with_metadata({META_KEY: json.dumps(metadata, sort_keys=True).encode("utf-8")})
                    writer = pq.ParquetWriter(str(tmp), schema)
                writer.write_table(t.replace_schema_metadata(schema.metadata))
                rows += t.num_rows
            if writer is None:
                raise InputError(f"chunk {chunk.name} produced no rows")
            writer.close()
            writer = None
            if rows != chunk.rows:
                raise CorruptFileError(f"chunk {chunk.name}: {rows} rows written, {chunk.rows} expected")
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.shard_path(chunk))
            _fsync_dir(self.folder)
        finally:
            if writer is not None:
                writer.close()
            tmp.unlink(missing_ok=True)
        return rows

    def complete(self, manifest: dict[str, Any], rows: int) -> None:
        """Record that every shard is written (and drop the empty staging folder)."""
        staging = self.folder / STAGING
        if staging.is_dir() and not any(staging.iterdir()):
            staging.rmdir()
        _write_json(self.folder / MANIFEST, {**manifest, "complete": True, "rows": rows})

    # -- staging (Ray workers write pieces; the driver merges them) ----------------------------------------------
    def staged_rows(self, chunk: Chunk) -> int:
        """Rows of ``chunk`` in whole staged pieces (from their names: ``<first row>-<rows>.parquet``)."""
        d = self.folder / STAGING / chunk.name
        try:
            names = [p.name for p in d.iterdir()]
        except FileNotFoundError:
            return 0
        total = 0
        for n in names:
            m = re.fullmatch(r"(\d+)-(\d+)\.parquet", n)
            if m:
                total += int(m.group(2))
        return total

    def finalize(self, chunk: Chunk, metadata: dict[str, Any]) -> bool:
        """Merge a chunk's staged pieces into its shard once they hold all its rows; return whether done."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        d = self.folder / STAGING / chunk.name
        if self.staged_rows(chunk) < chunk.rows:
            return False
        pieces = sorted(
            (int(m.group(1)), d / m.group(0))
            for m in (re.fullmatch(r"(\d+)-(\d+)\.parquet", p.name) for p in d.iterdir())
            if m
        )
        tables = [pq.read_table(p) for _, p in pieces]
        rows = np.concatenate([t.column(ROW).to_numpy() for t in tables])
        expected = np.arange(chunk.first_row, chunk.first_row + chunk.rows)
        if not (len(rows) == chunk.rows and np.array_equal(rows, expected)):
            # pieces out of order, or a row staged twice by a retried task: sort and keep one of each
            table = pa.concat_tables(tables)
            order = np.argsort(rows, kind="stable")
            keep = order[np.concatenate([[True], np.diff(rows[order]) != 0])]
            if not np.array_equal(rows[keep], expected):
                return False  # rows still missing: more pieces are on their way
            tables = [table.take(pa.array(keep))]
        self.write_shard(chunk, tables, metadata)
        shutil.rmtree(d, ignore_errors=True)
        return True

    def drop_staging(self, chunks: Iterable[Chunk]) -> None:
        for c in chunks:
            shutil.rmtree(self.folder / STAGING / c.name, ignore_errors=True)


def write_pieces(folder: str | Path, table: Any, firsts: list[int], names: list[str]) -> int:
    """Stage the rows of ``table`` (output rows of any chunks) as one piece per chunk they belong to.

    ``firsts`` are the chunks' first row numbers in increasing order and ``names`` their names. Each piece
    is written under a temporary name and renamed when whole; return the rows staged.
    """
    import numpy as np
    import pyarrow.parquet as pq

    staging = Path(folder) / STAGING
    rows = table.column(ROW).to_numpy()
    which = np.searchsorted(np.asarray(firsts), rows, side="right") - 1
    written = 0
    for w in np.unique(which):
        idx = np.flatnonzero(which == w)
        part = table.take(idx)
        d = staging / names[int(w)]
        d.mkdir(parents=True, exist_ok=True)
        first = int(rows[idx].min())
        tmp = d / f".{first}-{len(idx)}.{secrets.token_hex(4)}.tmp"
        pq.write_table(part, str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, d / f"{first}-{len(idx)}.parquet")
        written += len(idx)
    return written


def strip_internal(table: Any) -> Any:
    return table.drop_columns([ROW]) if ROW in table.column_names else table


def shard_metadata(base: dict[str, Any], plan: Plan, chunk: Chunk) -> dict[str, Any]:
    """The Parquet metadata of one shard: the run's description plus where its rows came from."""
    f = plan.files[chunk.file]
    return {**base, "chunk": {"input": f.path, "start": chunk.start, "stop": chunk.stop, "first_row": chunk.first_row}}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- reading an output back ------------------------------------------------------------------------------------
def output_shards(folder: str | Path) -> list[Path]:
    """The finished shards of a batch output folder, in input order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such batch output folder")
    return sorted(p for p in folder.iterdir() if re.fullmatch(r"part-\d{5}-\d{5}\.parquet", p.name))


def shard_description(path: str | Path) -> dict[str, Any]:
    """The ``fewshot`` description in a shard's Parquet metadata."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as exc:
        raise CorruptFileError(f"{path} is not a readable Parquet file ({exc})") from exc
    if META_KEY not in meta:
        raise InputError(f"{path} is not the output of a fewshot batch job (no 'fewshot' Parquet metadata)")
    try:
        return json.loads(meta[META_KEY].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{path}: its 'fewshot' metadata is not valid JSON ({exc})") from exc


def iter_output(folder: str | Path, columns: list[str] | None = None, batch_rows: int = 65_536) -> Iterator[Any]:
    """Stream a batch output's rows as Arrow record batches of at most ``batch_rows`` rows, shard by shard."""
    import pyarrow.parquet as pq

    for path in output_shards(folder):
        pf = pq.ParquetFile(path)
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
