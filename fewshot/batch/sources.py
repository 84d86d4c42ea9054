"""The input side of a batch job: a file or a folder of Parquet, JSON-lines or CSV shards, planned into chunks.

A job's input is scanned once before anything is encoded: every shard is counted, its text column checked
(a missing column, an empty or non-text value is reported with the file and record), and the types of the
id and kept columns are settled for the whole corpus, so that every output shard has the same schema. The
scan cuts each shard into chunks of at most ``shard_rows`` rows; a chunk becomes one output shard. For CSV
and JSON lines a chunk records the byte offset where it starts, so reading it never re-parses the rows before
it. Reading a chunk yields bounded Arrow tables whatever the corpus size.

Every table a reader yields has the columns ``__row__`` (the row number in the whole input, counting shards
in order), ``__input__`` (the text, or an image path made absolute against the shard's folder), then the id
column and the kept columns under their own names.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fewshot._validate import has_visible
from fewshot.cli.records import json_record, open_quote_error, quote_left_open
from fewshot.encoders.image_inputs import IMAGE_SUFFIXES
from fewshot.errors import InputError

FORMATS = ("parquet", "jsonl", "csv")
SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
}
ROW = "__row__"
INPUT = "__input__"
KINDS = ("int64", "float64", "bool", "string")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long document is one field


@dataclass(frozen=True)
class InputFile:
    """One input shard: its absolute path, format, size and modification time (which tell a changed input)."""

    path: str
    format: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, stop)`` of input shard ``file``; ``offset`` is the byte where row ``start`` begins
    (CSV and JSON lines; 0 for Parquet) and ``first_row`` its row number in the whole input."""

    file: int
    index: int
    start: int
    stop: int
    offset: int
    first_row: int

    @property
    def name(self) -> str:
        return f"part-{self.file:05d}-{self.index:05d}"

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class Plan:
    """The scanned input: shards, chunks, the CSV header of each CSV shard, and the Arrow kind of the id and
    kept columns (``int64``, ``float64``, ``bool``, ``string``, or an Arrow type string for Parquet)."""

    files: list[InputFile]
    chunks: list[Chunk]
    kinds: dict[str, str] = field(default_factory=dict)
    headers: dict[int, list[str]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [asdict(f) for f in self.files],
            "chunks": [asdict(c) for c in self.chunks],
            "kinds": self.kinds,
            "headers": {str(k): v for k, v in self.headers.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(
            [InputFile(**f) for f in d["files"]],
            [Chunk(**c) for c in d["chunks"]],
            dict(d.get("kinds", {})),
            {int(k): list(v) for k, v in d.get("headers", {}).items()},
        )


@dataclass(frozen=True)
class Columns:
    """Which input columns a job reads: the text (or image path) column, an optional id column, and columns
    copied to the output unchanged."""

    text: str = "text"
    id: str | None = None
    keep: tuple[str, ...] = ()
    images: bool = False
    encoding: str = "utf-8"
    format: str | None = None

    @property
    def wanted(self) -> list[str]:
        return [self.text] + ([self.id] if self.id else []) + [c for c in self.keep if c not in (self.text, self.id)]


# -- listing ----------------------------------------------------------------------------------------------------
def list_inputs(source: str | Path, fmt: str | None = None) -> list[InputFile]:
    """The input shards of ``source``: the file itself, or every Parquet/JSONL/CSV file under the folder
    (recursively, in path order; names starting with ``.`` or ``_`` are skipped, as Spark and Ray do)."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}; choose one of {', '.join(FORMATS)}")
    root = Path(source)
    if not root.exists():
        raise InputError(f"{source}: no such file or folder")
    if root.is_file():
        paths = [root]
    else:
        paths = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
            and (fmt is not None or p.suffix.lower() in SUFFIXES)
        )
        if not paths:
            if fmt is None and any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.rglob("*")):
                raise InputError(
                    f"{source} holds images but no Parquet, JSONL or CSV shard: a batch job reads a table, so "
                    "list the image paths in a column of one (a CSV with a header 'text', one path a line, "
                    "relative to the CSV's folder) and pass an image --encoder; or use 'fewshot predict' on the folder"
                )
            raise InputError(f"{source} holds no Parquet, JSONL or CSV files (.parquet, .jsonl, .json, .csv, .tsv)")
    out = []
    for p in paths:
        kind = SUFFIXES.get(p.suffix.lower()) or fmt  # a name that tells its format is read by it
        if kind is None:
            raise InputError(f"cannot tell the format of {p}; name it .parquet, .jsonl or .csv, or pass --format")
        st = p.stat()
        out.append(InputFile(str(p.resolve()), kind, st.st_size, st.st_mtime_ns))
    return out


# -- scanning ---------------------------------------------------------------------------------------------------
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
VISIBLE = r"[^\p{C}\p{Z}]"  # what has_visible looks for, in RE2: neither control, format, unassigned nor space
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class _KindCounter:
    """The JSON kinds seen in one column, settled into one Arrow kind for the whole corpus."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def add(self, v: Any) -> None:
        if v is None:
            return
        if isinstance(v, bool):
            self.seen.add("bool")
        elif isinstance(v, int):
            self.seen.add("int64" if _INT64_MIN <= v <= _INT64_MAX else "string")  # 20 digits: kept as text
        elif isinstance(v, float):
            self.seen.add("float64")
        else:
            self.seen.add("string")

    def add_text(self, v: str) -> None:
        """A CSV cell: empty is null, then an integer, a number, or text."""
        if v == "":
            return
        s = v.strip()
        body = s[1:] if s[:1] == "-" else s
        if s[:1] == "+" or (len(body) > 1 and body[0] == "0" and body[1].isdigit()):
            self.seen.add("string")  # "+441234567", "007", "02139", "00.5": codes whose form a number would lose
            return
        if body.isascii() and body.isdigit():
            self.seen.add("int64" if _INT64_MIN <= int(s) <= _INT64_MAX else "string")
            return
        # a plain decimal number; not "1_000" or "nan", which float() would also take
        if _DECIMAL.fullmatch(v.strip()) and math.isfinite(float(v)):
            self.seen.add("float64")
            return
        self.seen.add("string")

    def kind(self) -> str:
        if self.seen <= {"int64"}:
            return "int64"
        if self.seen <= {"int64", "float64"}:
            return "float64"
        if self.seen == {"bool"}:
            return "bool"
        return "string"


def scan(files: list[InputFile], columns: Columns, shard_rows: int) -> Plan:
    """Count, check and chunk every input shard (see the module docstring)."""
    if isinstance(shard_rows, bool) or not isinstance(shard_rows, int) or shard_rows < 1:
        raise InputError(f"shard_rows must be a positive integer, got {shard_rows!r}")
    counters = {c: _KindCounter() for c in columns.wanted[1:]}
    parquet_types: dict[str, str] = {}
    chunks: list[Chunk] = []
    headers: dict[int, list[str]] = {}
    first_row = 0
    for i, f in enumerate(files):
        if f.format == "parquet":
            starts = _scan_parquet(f, columns, parquet_types)
        elif f.format == "jsonl":
            starts = _scan_jsonl(f, columns, counters)
        else:
            header, starts = _scan_csv(f, columns, counters)
            headers[i] = header
        rows = len(starts) - 1
        for j, start in enumerate(range(0, rows, shard_rows)):
            stop = min(start + shard_rows, rows)
            chunks.append(Chunk(i, j, start, stop, starts[start] if f.format != "parquet" else 0, first_row + start))
        first_row += rows
    if not chunks:
        raise InputError(f"the input ({files[0].path}{' ...' if len(files) > 1 else ''}) holds no records")
    kinds = {}
    for c, counter in counters.items():
        if c in parquet_types and parquet_types[c] not in KINDS:  # a list, struct, date...: Parquet only
            if counter.seen:
                raise InputError(f"column {c!r} holds {parquet_types[c]} in Parquet shards; CSV/JSONL cannot match it")
            kinds[c] = parquet_types[c]
        else:
            if c in parquet_types:
                counter.seen.add(parquet_types[c])
            kinds[c] = counter.kind()
    if columns.id is not None:
        k = kinds.get(columns.id, "string")
        if k not in ("int64", "string"):
            raise InputError(f"the id column {columns.id!r} holds {k} values; ids must be integers or strings")
    return Plan(files, chunks, kinds, headers)


def _scan_parquet(f: InputFile, columns: Columns, types: dict[str, str]) -> list[int]:
    """Check a Parquet shard's columns and text; return row starts (only their count matters: rows + 1)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f.path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError subclasses
        raise InputError(f"{f.path} is not a readable Parquet file ({exc})") from exc
    schema = pf.schema_arrow
    for c in columns.wanted:
        if schema.get_field_index(c) < 0:
            have = ", ".join(schema.names) or "none"
            raise InputError(f"{f.path} has no column {c!r} (columns: {have})")
    text_type = _value_type(schema.field(columns.text).type)
    if str(text_type) not in ("string", "large_string"):
        raise InputError(f"{f.path}: column {columns.text!r} holds {text_type}, not text")
    for c in columns.wanted[1:]:
        t = _simple_kind(schema.field(c).type)
        if pa.types.is_uint64(_value_type(schema.field(c).type)) and _past_int64(pf, c):
            t = "string"  # as a JSON number past the int64 range: kept as its digits
        if types.setdefault(c, t) != t:
            raise InputError(f"column {c!r} is {types[c]} in one Parquet shard and {t} in {f.path}; use one type")
    checked = list(dict.fromkeys([columns.text] if columns.id is None else [columns.text, columns.id]))
    seen = 0
    for batch in pf.iter_batches(batch_size=65_536, columns=checked):
        col = _decoded(batch.column(0))
        bad = pc.or_kleene(pc.is_null(col), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0))
        bad = pc.fill_null(bad, True)
        if pc.any(bad).as_py():
            first = pc.index(bad, True).as_py()
            raise InputError(f"{f.path}: record {seen + first + 1} has an empty or missing {columns.text!r}")
        unseen = pc.invert(pc.match_substring_regex(col, VISIBLE))  # what str.isprintable and isspace leave
        if pc.any(unseen).as_py():
            first = pc.index(unseen, True).as_py()
            _check_text(col[first].as_py(), f.path, seen + first + 1, columns.text)
        if columns.id is not None:
            ids = _decoded(batch.column(checked.index(columns.id)))
            missing = pc.is_null(ids)
            if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
                missing = pc.or_kleene(missing, pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0))
            missing = pc.fill_null(missing, True)
            if pc.any(missing).as_py():
                first = pc.index(missing, True).as_py()
                _check_id(None, f.path, seen + first + 1, columns.id)
        seen += len(col)
    return list(range(pf.metadata.num_rows + 1))


def _past_int64(pf: Any, column: str) -> bool:
    """Whether an unsigned 64-bit Parquet column holds a value an int64 cannot."""
    import pyarrow.compute as pc

    for batch in pf.iter_batches(batch_size=65_536, columns=[column]):
        top = pc.max(_decoded(batch.column(0))).as_py()
        if top is not None and top > _INT64_MAX:
            return True
    return False


def _value_type(t: Any) -> Any:
    """The type of the values of a dictionary-encoded Arrow type (a pandas category), else ``t``."""
    import pyarrow as pa

    return t.value_type if pa.types.is_dictionary(t) else t


def _decoded(col: Any) -> Any:
    """A dictionary-encoded Arrow array as the plain array of its values; any other as it is."""
    import pyarrow as pa

    return col.dictionary_decode() if pa.types.is_dictionary(col.type) else col


def _simple_kind(t: Any) -> str:
    """An Arrow type as one of :data:`KINDS` when it is one of those in another width (or dictionary-encoded, as
    pandas writes a category), else its name."""
    import pyarrow as pa

    t = _value_type(t)
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t):
        return "float64"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    return str(t)


def _codec(encoding: str) -> str:
    import codecs

    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}") from None
    if info.name.startswith(("utf-16", "utf-32")):
        raise InputError(f"encoding {encoding!r} is not supported for batch input; convert the file to UTF-8")
    return info.name


class _Lines:
    """Lines of a file from a byte offset, decoded, with the byte offset after the last line handed out."""

    def __init__(self, path: str, offset: int, encoding: str) -> None:
        self.path = path
        self.codec = _codec(encoding)
        self._f = open(path, "rb")
        self._f.seek(offset)
        self.pos = offset
        self.line = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self._f.readline()
        if not raw:
            raise StopIteration
        codec = "utf-8-sig" if self.pos == 0 and self.codec == "utf-8" else self.codec
        self.pos += len(raw)
        self.line += 1
        try:
            return raw.decode(codec)
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{self.path} is not valid {self.codec} (a line near byte {self.pos - len(raw) + exc.start}); pass "
                "--encoding with the file's encoding, e.g. --encoding latin-1"
            ) from None

    def close(self) -> None:
        self._f.close()


def _delimiter(path: str) -> str:
    return "\t" if path.lower().endswith(".tsv") else ","


def _csv_records(path: str, offset: int, encoding: str) -> Iterator[tuple[list[str], int]]:
    """CSV records from ``offset``, each with the byte offset where the next one starts.

    Read to its end, the file's last record is checked for a quote that never closes: the lenient reader
    would hand the rest of the file back as one field of one record, which is wrong output with no error.
    """
    lines = _Lines(path, offset, encoding)
    last = None
    try:
        reader = csv.reader(lines, delimiter=_delimiter(path))
        start, first_line = offset, 1
        try:
            for rec in reader:
                yield rec, lines.pos
                last = (start, lines.pos, first_line)
                start, first_line = lines.pos, lines.line + 1
        except csv.Error as exc:
            raise InputError(f"{path}: bad CSV near line {lines.line} ({exc})") from exc
    finally:
        lines.close()
    if last is not None:
        _check_closed(path, encoding, *last)


def _check_closed(path: str, encoding: str, start: int, stop: int, line: int) -> None:
    """Refuse a record (bytes ``[start, stop)``, the last of the file) whose quoted field is still open at
    the end of the file (:func:`~fewshot.cli.records.quote_left_open`)."""
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read(stop - start)
    codec = _codec(encoding)
    text = raw.decode("utf-8-sig" if start == 0 and codec == "utf-8" else codec)
    if quote_left_open(text, _delimiter(path)):
        raise open_quote_error(path, line)


def _check_text(v: Any, path: str, n: int, name: str) -> None:
    if not isinstance(v, str) or not v.strip():
        raise InputError(f"{path}: record {n} has an empty or non-text {name!r}")
    if not has_visible(v):  # zero-width spaces only: the encoder refuses it
        raise InputError(f"{path}: record {n} has no visible character in {name!r} ({v!r})")


def _check_id(v: Any, path: str, n: int, name: str) -> None:
    """An id names its record in the output and in an index built from it: it cannot be missing."""
    if v is None or (isinstance(v, str) and not v.strip()):
        raise InputError(f"{path}: record {n} has an empty or null id {name!r}; every record needs one")


def _scan_csv(f: InputFile, columns: Columns, counters: dict[str, _KindCounter]) -> tuple[list[str], list[int]]:
    records = _csv_records(f.path, 0, columns.encoding)
    try:
        header, pos = next(records)
    except StopIteration:
        raise InputError(f"{f.path} is empty: a CSV shard needs a header") from None
    if len(set(header)) != len(header):
        raise InputError(f"{f.path}: the header repeats a column name ({', '.join(header)})")
    where = {}
    for c in columns.wanted:
        if c not in header:
            raise InputError(f"{f.path} has no column {c!r} (columns: {', '.join(header) or 'none'})")
        where[c] = header.index(c)
    starts = [pos]
    for n, (rec, pos) in enumerate(records, 1):
        if not rec:
            starts[-1] = pos  # a blank line: not a record
            continue
        if len(rec) > len(header):
            raise InputError(f"{f.path}: record {n} has more fields than the header has columns")
        rec = rec + [""] * (len(header) - len(rec))
        _check_text(rec[where[columns.text]], f.path, n, columns.text)
        if columns.id is not None:
            _check_id(rec[where[columns.id]], f.path, n, columns.id)
        for c, counter in counters.items():
            counter.add_text(rec[where[c]])
        starts.append(pos)
    return header, starts


def _jsonl_records(path: str, offset: int, encoding: str) -> Iterator[tuple[dict[str, Any], int, int]]:
    """JSON-lines records from ``offset``: (record, line number counted from the offset, next offset)."""
    lines = _Lines(path, offset, encoding)
    try:
        for line in lines:
            if not line.strip():
                continue
            yield json_record(line, f"{path} line {lines.line}"), lines.line, lines.pos
    finally:
        lines.close()


def _scan_jsonl(f: InputFile, columns: Columns, counters: dict[str, _KindCounter]) -> list[int]:
    starts = [0]  # a reader skips blank lines, so a record starts where the one before it ended
    for n, (rec, _, pos) in enumerate(_jsonl_records(f.path, 0, columns.encoding), 1):
        for c in columns.wanted:
            if c not in rec:
                have = ", ".join(sorted(map(str, rec))) or "none"
                raise InputError(f"{f.path}: record {n} has no column {c!r} (columns: {have})")
        _check_text(rec[columns.text], f.path, n, columns.text)
        if columns.id is not None:
            _check_id(rec[columns.id], f.path, n, columns.id)
        for c, counter in counters.items():
            counter.add(rec[c])
        starts.append(pos)
    return starts


# -- reading ----------------------------------------------------------------------------------------------------
def arrow_type(kind: str) -> Any:
    import pyarrow as pa

    simple = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "string": pa.string()}
    return simple.get(kind)  # None: a Parquet-only type, kept as it is


def _convert(values: list[Any], kind: str, from_text: bool) -> Any:
    """Python values of one column as an Arrow array of ``kind`` (CSV cells are text; empty is null)."""
    import pyarrow as pa

    if from_text:
        if kind == "int64":
            values = [None if v == "" else int(v) for v in values]
        elif kind == "float64":
            values = [None if v == "" else float(v) for v in values]
        else:
            values = [None if v == "" else v for v in values]
    elif kind == "string":
        values = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]
    elif kind == "float64":
        values = [None if v is None else float(v) for v in values]
    return pa.array(values, type=arrow_type(kind))


def _resolve(paths: list[str], folder: str) -> list[str]:
    return [p if os.path.isabs(p) else os.path.normpath(os.path.join(folder, p)) for p in paths]


def read_chunk(plan: Plan, chunk: Chunk, columns: Columns, batch_rows: int) -> Iterator[Any]:
    """The rows of ``chunk`` as Arrow tables of at most ``batch_rows`` rows (see the module docstring)."""
    f = plan.files[chunk.file]
    if f.format == "parquet":
        yield from _read_parquet(plan, f, chunk, columns, batch_rows)
        return
    import pyarrow as pa

    from_text = f.format == "csv"
    if from_text:
        header = plan.headers[chunk.file]
        where = {c: header.index(c) for c in columns.wanted}
        width = len(header)
        source: Iterator[Any] = (
            rec + [""] * (width - len(rec)) for rec, _ in _csv_records(f.path, chunk.offset, columns.encoding) if rec
        )
    else:
        source = (rec for rec, _, _ in _jsonl_records(f.path, chunk.offset, columns.encoding))
    folder = os.path.dirname(f.path)
    extra = columns.wanted[1:]
    row = chunk.first_row
    left = chunk.rows
    buf: list[Any] = []

    def table(recs: list[Any]) -> Any:
        texts = [r[where[columns.text]] if from_text else r[columns.text] for r in recs]
        if columns.images:
            texts = _resolve(texts, folder)
        cols = {ROW: pa.array(range(row, row + len(recs)), type=pa.int64()), INPUT: pa.array(texts, type=pa.string())}
        for c in extra:
            vals = [r[where[c]] if from_text else r.get(c) for r in recs]
            cols[c] = _convert(vals, plan.kinds[c], from_text)
        return pa.table(cols)

    for rec in source:
        buf.append(rec)
        left -= 1
        if len(buf) == batch_rows or left == 0:
            yield table(buf)
            row += len(buf)
            buf = []
        if left == 0:
            break
    if left:
        raise InputError(f"{f.path} changed while the job ran: {left} records of a planned chunk are missing")


def _read_parquet(plan: Plan, f: InputFile, chunk: Chunk, columns: Columns, batch_rows: int) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(f.path)
    groups, first, pos = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if pos + n > chunk.start and pos < chunk.stop:
            groups.append(g)
            first = pos if first is None else first
        pos += n
    skip = chunk.start - (first or 0)
    left = chunk.rows
    row = chunk.first_row
    folder = os.path.dirname(f.path)
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=columns.wanted):
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        batch = batch.slice(skip, min(batch.num_rows - skip, left))
        skip = 0
        texts = _decoded(batch.column(columns.text))
        if columns.images:
            texts = pa.array(_resolve(texts.to_pylist(), folder), type=pa.string())
        cols = {ROW: pa.array(range(row, row + batch.num_rows), type=pa.int64()), INPUT: texts.cast(pa.string())}
        for c in columns.wanted[1:]:
            col = _decoded(batch.column(c))
            target = arrow_type(plan.kinds[c])
            cols[c] = col.cast(target) if target is not None and col.type != target else col
        yield pa.table(cols)
        row += batch.num_rows
        left -= batch.num_rows
        if left == 0:
            return
    if left:
        raise InputError(f"{f.path} changed while the job ran: {left} rows of a planned chunk are missing")
