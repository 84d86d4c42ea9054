"""Reading and writing the record files the CLI takes: CSV, JSON lines, or plain text (one item a line)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from fewshot.errors import InputError

FORMATS = ("csv", "jsonl", "txt")


def guess_format(path: str | None, fmt: str | None) -> str:
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
    raise InputError(f"cannot tell the format of {path}; name it .csv, .jsonl or .txt, or pass --format")


def read_records(path: str | None, fmt: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``path`` (``-`` or None: standard input) as dicts; a .txt line becomes ``{"text": line}``."""
    fmt = guess_format(path, fmt)
    if path in (None, "-"):
        text = sys.stdin.read()
        where = "standard input"
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{path}: no such file")
        text = p.read_text(encoding="utf-8")
        where = str(path)
    if fmt == "txt":
        rows = [{"text": line} for line in text.splitlines() if line.strip()]
    elif fmt == "csv":
        delimiter = "\t" if str(path).lower().endswith(".tsv") else ","
        try:
            rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
        except csv.Error as exc:
            raise InputError(f"{where}: bad CSV ({exc})") from exc
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where} line {n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise InputError(f"{where} line {n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    if not rows:
        raise InputError(f"{where} holds no records")
    return rows


def column(rows: list[dict[str, Any]], name: str, where: str) -> list[Any]:
    """The values of column ``name``; a clear error names the columns that exist when it is missing."""
    missing = [i for i, r in enumerate(rows) if name not in r]
    if missing:
        have = ", ".join(sorted(rows[missing[0]].keys())) or "none"
        raise InputError(f"{where}: record {missing[0] + 1} has no column {name!r} (columns: {have})")
    return [r[name] for r in rows]


def write_records(rows: list[dict[str, Any]], out: TextIO, fmt: str) -> None:
    if fmt == "csv":
        fields: list[str] = []
        for r in rows:
            fields += [k for k in r if k not in fields]
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    else:
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
