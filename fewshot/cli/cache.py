"""``fewshot cache info|prune``: what the cache of derived models holds, and removing what is not used."""

from __future__ import annotations

import argparse
import json
from typing import Any

DEFAULT_DAYS = 30.0


def _days(v: str) -> float:
    try:
        days = float(v)
    except ValueError:
        days = -1.0
    if not days >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"--older-than takes a number of days, 0 or more, got {v!r}")
    return days


def register(subparsers: Any) -> None:
    """Add ``fewshot cache info`` and ``fewshot cache prune`` to the command line."""
    cp = subparsers.add_parser(
        "cache",
        help="list or prune the cached ONNX exports, static models and word vectors under $FEWSHOT_HOME",
        description="ONNX exports (a tuned body's included), distilled static models and the zero-shot label "
        "expansion's word vectors (one file an encoder) are made on first use and cached under $FEWSHOT_HOME "
        "(default ~/.cache/fewshot); nothing removes them but 'prune'. What is pruned is made again when next "
        "used.",
    )
    csub = cp.add_subparsers(required=True)
    sp = csub.add_parser("info", help="each cached model or word-vector file: kind, size, last use (JSON)")
    sp.set_defaults(func=cmd_cache_info)
    sp = csub.add_parser("prune", help="remove cached models not used for a while, and killed builds' leftovers")
    sp.add_argument(
        "--older-than",
        type=_days,
        default=DEFAULT_DAYS,
        metavar="DAYS",
        help=f"remove models not used for this many days (default {DEFAULT_DAYS:g}; 0 removes every one)",
    )
    sp.add_argument("--dry-run", action="store_true", help="list what would be removed and remove nothing")
    sp.set_defaults(func=cmd_cache_prune)


def cmd_cache_info(a: argparse.Namespace) -> int:
    from fewshot.encoders.derived import cache_entries, fewshot_home

    entries = cache_entries()
    out = {
        "home": str(fewshot_home()),
        "total_bytes": sum(e.size for e in entries),
        "entries": [e.describe() for e in entries],
    }
    print(json.dumps(out, indent=2))
    return 0


def cmd_cache_prune(a: argparse.Namespace) -> int:
    from fewshot.encoders.derived import prune

    removed = prune(a.older_than, dry_run=a.dry_run)
    verb = "would remove" if a.dry_run else "removed"
    for e in removed:
        print(f"{verb} {e.path} ({e.size / 1e6:.1f} MB{', left by a killed process' if e.temporary else ''})")
    print(f"{verb} {len(removed)} item(s), {sum(e.size for e in removed) / 1e6:.1f} MB")
    return 0
