"""``fewshot batch predict|tag|embed INPUT OUTPUT``: a batch job over a corpus, locally or on Ray Data."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fewshot.cli.common import ENCODER_KINDS, parse_labels, positive_int, zeroshot_label_args


def register(subparsers: Any) -> None:
    """Add ``fewshot batch`` and its three tasks to the command line."""
    bp = subparsers.add_parser(
        "batch",
        help="classify, tag or embed a corpus of Parquet/JSONL/CSV shards into Parquet shards (local or Ray)",
        description="Run a batch job over a file or a folder of Parquet, JSONL or CSV shards; OUTPUT is a folder "
        "of Parquet shards. A run stopped midway and started again with the same arguments keeps the shards "
        "already written.",
    )
    bsub = bp.add_subparsers(required=True)
    for task, helptext in [
        ("predict", "labels, scores and class probabilities from a saved model (or zero-shot labels)"),
        ("tag", "zero-shot multi-label tags"),
        ("embed", "the encoder's vectors (for 'fewshot index build NAME --from-embeddings OUTPUT')"),
    ]:
        sp = bsub.add_parser(task, help=helptext)
        sp.add_argument("input", help="a Parquet, JSONL or CSV file, or a folder of them (read recursively)")
        sp.add_argument("output", help="folder of Parquet shards to write (or to resume)")
        sp.add_argument("--text-col", default="text", help="column holding the text, or image paths (default: text)")
        sp.add_argument("--id-col", help="column holding the records' ids (default: the row number, column 'row')")
        sp.add_argument("--keep-cols", help="comma-separated input columns to copy into the output")
        sp.add_argument(
            "--format",
            choices=["parquet", "jsonl", "csv"],
            help="format of input files whose names do not tell (a .parquet, .jsonl or .csv name is read as such)",
        )
        sp.add_argument("--encoding", default="utf-8", help="text encoding of CSV/JSONL input (default: utf-8)")
        if task == "predict":
            sp.add_argument("--model", help="folder written by 'fewshot fit' (or a saved zero-shot classifier)")
            sp.add_argument("--no-probabilities", action="store_true", help="leave out every class's probability")
        if task in ("predict", "tag"):
            sp.add_argument("--labels", help="comma-separated zero-shot label names")
            sp.add_argument("--labels-file", help="labels: .txt (one per line) or .json (list or dict)")
            zeroshot_label_args(sp)
        if task == "tag":
            sp.add_argument("--margin", type=float, help="more tags within this cosine of the best label (default 0)")
            sp.add_argument(
                "--threshold",
                type=float,
                help="a fixed cosine threshold instead (default: the best label, or no "
                "tag where it fits no better than ordinary text does; see the README)",
            )
            sp.add_argument("--top-k", type=positive_int, help="at most this many tags per record")
        sp.add_argument(
            "--encoder",
            help=ENCODER_KINDS + "; default: the saved model's, else text. An image encoder reads --text-col as "
            "image paths (relative ones against their shard's folder)",
        )
        sp.add_argument("--engine", choices=["local", "ray"], default="local", help="local (default) or ray")
        sp.add_argument(
            "--address",
            help="Ray cluster to join (e.g. auto, or HOST:6379); default: $RAY_ADDRESS when set, else start one here",
        )
        sp.add_argument("--actors", type=int, default=1, help="Ray: model actors (each loads the model once)")
        sp.add_argument("--cpus-per-actor", type=int, help="Ray: CPUs (torch threads) per actor")
        sp.add_argument("--batch-size", type=int, default=256, help="rows per model call (default 256)")
        sp.add_argument("--shard-rows", type=int, default=50_000, help="rows per output shard (default 50000)")
        sp.add_argument("--overwrite", action="store_true", help="replace another job's output in OUTPUT")
        sp.add_argument("--quiet", action="store_true", help="no progress lines")
        sp.set_defaults(func=cmd_batch, task=task)


def cmd_batch(a: argparse.Namespace) -> int:
    from fewshot import batch

    labels = None
    if getattr(a, "labels", None) or getattr(a, "labels_file", None):
        labels = parse_labels(a.labels, a.labels_file, a.encoding)
    keep = [c.strip() for c in (a.keep_cols or "").split(",") if c.strip()]
    result = batch.run(
        a.task,
        a.input,
        a.output,
        model=getattr(a, "model", None),
        labels=labels,
        encoder=a.encoder,
        templates=getattr(a, "templates", None),
        expand=getattr(a, "expand", "auto"),
        frame=getattr(a, "frame", "auto"),
        pool=getattr(a, "pool", "soft"),
        threshold=getattr(a, "threshold", None),
        top_k=getattr(a, "top_k", None),
        margin=getattr(a, "margin", None),
        probabilities=not getattr(a, "no_probabilities", False),
        text_col=a.text_col,
        id_col=a.id_col,
        keep_cols=keep,
        format=a.format,
        encoding=a.encoding,
        engine=a.engine,
        batch_size=a.batch_size,
        shard_rows=a.shard_rows,
        actors=a.actors,
        cpus_per_actor=a.cpus_per_actor,
        address=a.address,
        overwrite=a.overwrite,
        progress=None if a.quiet else sys.stderr,
    )
    skipped = f", {result.shards_skipped} kept from an earlier run" if result.shards_skipped else ""
    print(
        f"{a.task}: {result.rows:,} rows in {result.shards} shards{skipped} -> {result.output} "
        f"({result.computed:,} computed in {result.seconds:.1f} s on {result.engine})",
        file=sys.stderr,
    )
    return 0
