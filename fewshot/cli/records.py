"""Reading and writing the record files the CLI takes: CSV/TSV, JSON lines, or plain text (one item a line).

Every failure to read is an :class:`~fewshot.errors.InputError` that names the file (and the line where it
helps): a wrong encoding suggests ``--encoding``, a UTF-8 byte-order mark is dropped, and CSV fields of any
size are read.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from fewshot._validate import has_visible
from fewshot.errors import InputError

FORMATS = ("csv", "jsonl", "txt")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long document is one field; the default is 128 KB


def guess_format(path: str | None, fmt: str | None) -> str:
    """The record format: ``fmt`` if given, else from the file name (standard input: JSON lines)."""
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    if path in (None, "-"):
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".txt":
        return "txt"
    if not Path(path).exists():  # a mistyped path, not a format to name
        raise InputError(f"{path}: no such file or folder")
    raise InputError(f"cannot tell the format of {path}; name it .csv, .jsonl or .txt, or pass --format")


def decode(data: bytes, where: str, encoding: str = "utf-8") -> str:
    """``data`` as text; a UTF-8 byte-order mark is dropped; a wrong encoding names the byte and the fix."""
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{where} is not valid {encoding} (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); pass "
            "--encoding with the file's encoding, e.g. --encoding latin-1"
        ) from None


def lines(text: str) -> list[str]:
    """``text`` split at line ends: LF, CRLF or CR, and nothing else. ``str.splitlines`` also splits at form
    feeds, U+0085 and U+2028, which a text may hold (JSON writes U+2028 raw inside strings, and latin-1 reads
    a cp1252 ellipsis as U+0085): one record would become two, or a valid JSON line an invalid one."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def json_record(line: str, where: str, hint: str = "") -> dict[str, Any]:
    """One JSON-lines record: a JSON object, or an :class:`InputError` naming ``where`` (file and line),
    ``hint`` appended to it when the line is not JSON."""
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{where}: not valid JSON ({getattr(exc, 'msg', exc)}){hint}") from exc
    if not isinstance(rec, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    return rec


def parse_records(text: str, fmt: str, where: str, delimiter: str = ",", hint: str = "") -> list[dict[str, Any]]:
    """Rows of ``text`` in ``fmt`` as dicts; a .txt line becomes ``{"text": line}``. ``hint`` ends the
    message of a JSON line that does not parse."""
    if "\x00" in text:
        raise InputError(f"{where} holds NUL bytes: it is not a text file")
    if fmt == "txt":
        rows: list[dict[str, Any]] = [{"text": line} for line in lines(text) if line.strip()]
    elif fmt == "csv":
        source = io.StringIO(text, newline="").readlines()
        read = 0  # lines the reader has taken

        def feed() -> Iterator[str]:
            nonlocal read
            for line in source:
                read += 1
                yield line

        try:
            reader = csv.DictReader(feed(), delimiter=delimiter)
            reader.fieldnames  # noqa: B018 - reads the header
            rows, start, last = [], read, read  # the line the next (last) record starts on, 0-based
            for n, row in enumerate(reader, 2):
                if None in row:  # more cells than the header names
                    raise InputError(f"{where} line {n}: more fields than the header has columns")
                rows.append({k: ("" if v is None else v) for k, v in row.items()})
                last, start = start, read
        except csv.Error as exc:
            raise InputError(f"{where}: bad CSV ({exc})") from exc
        if rows and quote_left_open("".join(source[last:]), delimiter):
            raise open_quote_error(where, last + 1)
        if reader.fieldnames is not None:
            names = [f for f in reader.fieldnames]
            if len(set(names)) != len(names):
                raise InputError(f"{where}: the header repeats a column name ({', '.join(names)})")
    else:
        rows = []
        for n, line in enumerate(lines(text), 1):
            if not line.strip():
                continue
            rows.append(json_record(line, f"{where} line {n}", hint))
    if not rows:
        raise InputError(f"{where} holds no records")
    return rows


def quote_left_open(text: str, delimiter: str) -> bool:
    """Whether ``text`` (a file's last CSV record) ends inside a quoted field: the lenient reader hands the rest
    of the file back as one field of one record, which is wrong output with no error. Only the end of data is
    judged: other quoting the lenient reader takes stays taken."""
    try:
        for _ in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error as exc:
        return "end of data" in str(exc)  # CPython's message for a quoted field open at the end of the input
    return False


def open_quote_error(where: str, line: int) -> InputError:
    """The error for a file whose last record, starting on ``line``, leaves a quote open (:func:`quote_left_open`)."""
    return InputError(
        f"{where}: the record starting on line {line} opens a quote that is never closed, so it runs to the end "
        'of the file; close the quote or double a quote that is part of the text ("")'
    )


def read_input_file(path: str | Path) -> bytes:
    """The bytes of an input file. Anything readable that is not a folder will do: a pipe (``<(cmd)``) or a
    device is read as a stream; a missing path and a folder are named as such."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: a folder, not a file")
    try:
        return p.read_bytes()
    except PermissionError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from exc


def read_records(path: str | None, fmt: str | None = None, encoding: str = "utf-8") -> list[dict[str, Any]]:
    """Rows of ``path`` (``-`` or None: standard input) as dicts; a .txt line becomes ``{"text": line}``."""
    hint = ""
    if path in (None, "-") and not fmt:
        hint = "; standard input is read as JSON lines: pass --format txt for one text a line, or --format csv"
    fmt = guess_format(path, fmt)
    if path in (None, "-"):
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        where = "standard input"
    else:
        data = read_input_file(path)
        where = str(path)
    delimiter = "\t" if str(path).lower().endswith(".tsv") else ","
    return parse_records(decode(data, where, encoding), fmt, where, delimiter, hint)


def column(rows: list[dict[str, Any]], name: str, where: str) -> list[Any]:
    """The values of column ``name``; a clear error names the columns that exist when it is missing."""
    missing = [i for i, r in enumerate(rows) if name not in r]
    if missing:
        have = ", ".join(sorted(map(str, rows[missing[0]].keys()))) or "none"
        raise InputError(f"{where}: record {missing[0] + 1} has no column {name!r} (columns: {have})")
    return [r[name] for r in rows]


def text_column(rows: list[dict[str, Any]], name: str, where: str) -> list[str]:
    """Column ``name`` as non-empty texts; the first empty or non-text value is named."""
    values = column(rows, name, where)
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            raise InputError(f"{where}: record {i + 1} has an empty or non-text {name!r}")
        if not has_visible(v):  # zero-width spaces only: the encoder refuses it
            raise InputError(f"{where}: record {i + 1} has no visible character in {name!r} ({v!r})")
    return values


def label_column(rows: list[dict[str, Any]], name: str, where: str) -> list[Any]:
    """Column ``name`` as labels: every record needs one (an empty cell is an error, not a class ``""``),
    and JSON records may not mix numbers and strings."""
    values = column(rows, name, where)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()):
            raise InputError(f"{where}: record {i + 1} has an empty {name!r}; every example needs a label")
        if isinstance(v, (list, dict)):
            raise InputError(f"{where}: record {i + 1} has a {type(v).__name__} as {name!r}; give one label")
    kinds = {type(v).__name__ for v in values}
    if len(kinds) > 1 and not kinds <= {"int", "float"}:
        raise InputError(f"{where}: the {name!r} column mixes {' and '.join(sorted(kinds))} labels; use one type")
    return values


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... so that an output column never overwrites an input one."""
    if name not in taken:
        return name
    i = 2
    while f"{name}_{i}" in taken:
        i += 1
    return f"{name}_{i}"


def write_records(rows: list[dict[str, Any]], out: TextIO, fmt: str) -> None:
    if fmt == "csv":
        fields: list[str] = []
        seen: set[str] = set()
        for r in rows:
            for k in r:
                if k not in seen:
                    seen.add(k)
                    fields.append(k)
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    else:
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
