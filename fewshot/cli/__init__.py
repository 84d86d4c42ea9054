"""The ``fewshot`` command line: fit, predict, zeroshot, index build|add|search|info, batch, serve, cache, demo.

A bad input or path prints one line (``fewshot: error: ...``) on stderr and exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import os
import sqlite3
import sys
import warnings
from typing import Any

from fewshot.cli.classify import cmd_fit, cmd_predict, cmd_zeroshot
from fewshot.cli.common import ENCODER_HELP, positive_int, quiet_libraries, zeroshot_label_args
from fewshot.cli.index import cmd_index_add, cmd_index_build, cmd_index_info, cmd_index_remove, cmd_index_search
from fewshot.errors import FewShotError, FewShotWarning

# modules that each define ``register(subparsers)``; they import heavy optional packages only when run
COMMAND_MODULES: tuple[str, ...] = ("fewshot.cli.serve", "fewshot.cli.batch", "fewshot.cli.cache")


def cmd_demo(a: argparse.Namespace) -> int:
    from fewshot.demo import run_demo

    run_demo(sys.stdout)
    return 0


def _steps_or_auto(v: str) -> int | str:
    if v == "auto":
        return v
    try:
        steps = int(v)
    except ValueError:
        steps = 0
    if steps < 1:
        raise argparse.ArgumentTypeError(f"--tune takes a positive number of steps or nothing, got {v!r}")
    return steps


def build_parser() -> argparse.ArgumentParser:
    from fewshot.classifiers.adaptation import ADAPT_METHODS
    from fewshot.heads import FEW_SHOT_HEADS
    from fewshot.index import KINDS

    p = argparse.ArgumentParser(
        prog="fewshot", description="Few-shot and zero-shot classification and semantic search."
    )
    sub = p.add_subparsers(required=True)

    def data_args(sp, data_optional=False, label=True, data_needed=True):
        if data_optional:
            sp.add_argument(
                "data", nargs="?", default="-", help="CSV/JSONL/TXT file, an image file or folder, or - for stdin"
            )
        elif not data_needed:
            sp.add_argument("data", nargs="?", help="CSV, JSONL or TXT file, or an image folder")
        else:
            sp.add_argument("data", help="CSV, JSONL or TXT file, or an image folder (one subfolder per class)")
        sp.add_argument("--text-col", default="text", help="column holding the text (default: text)")
        if label:
            sp.add_argument("--label-col", default="label", help="column holding the label (default: label)")
        sp.add_argument("--format", choices=["csv", "jsonl", "txt"], help="input format when the name does not tell")
        sp.add_argument("--encoding", default="utf-8", help="text encoding of the input (default: utf-8)")

    sp = sub.add_parser("fit", help="fit a few-shot classifier on labelled examples and save it")
    data_args(sp)
    sp.add_argument("-o", "--output", required=True, help="folder to save the model in")
    sp.add_argument("--overwrite", action="store_true", help="replace a model already saved in that folder")
    sp.add_argument(
        "--head",
        default="prototype",
        choices=FEW_SHOT_HEADS,
        help="the classifier on the embeddings (default prototype: class means; auto picks by cross-validation)",
    )
    sp.add_argument("--head-params", help="JSON keyword arguments for the head, e.g. '{\"k\": 5}'")
    sp.add_argument("--encoder", help=ENCODER_HELP)
    sp.add_argument(
        "--tune",
        nargs="?",
        const="auto",
        type=_steps_or_auto,
        metavar="STEPS",
        help="contrastively tune the text model first: for as long as the examples call for (no value), or for "
        "STEPS optimiser steps",
    )
    sp.add_argument("--seed", type=int, help="seed of the tuning, with --tune (default 0)")
    sp.add_argument(
        "--lexical",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="text: pool the head with TF-IDF features of the words, at a weight chosen on held-out examples "
        "(0 when the words do not help there; on by default, --no-lexical for the head alone)",
    )
    sp.add_argument(
        "--abstain",
        help="'none of these': auto (threshold from held-out scores of the examples) or a score threshold; "
        "predict then writes an empty label for inputs below it",
    )
    sp.set_defaults(func=cmd_fit)

    prediction_help = (
        "name of the output column with the prediction (default: prediction; never replaces an input column)"
    )
    sp = sub.add_parser("predict", help="classify records with a saved model")
    sp.add_argument("model", help="folder written by 'fewshot fit'")
    data_args(sp, data_optional=True, label=False)
    sp.add_argument("--prediction-col", default="prediction", help=prediction_help)
    sp.add_argument("-o", "--output", help="output file (.csv, or .jsonl; .txt gets JSON lines); default: stdout")
    sp.add_argument("--abstain", help="override the saved abstention threshold: off or a number")
    sp.set_defaults(func=cmd_predict)

    sp = sub.add_parser("zeroshot", help="classify or tag records from label names alone")
    data_args(sp, data_optional=True, label=False)
    sp.add_argument("--labels", help="comma-separated label names")
    sp.add_argument(
        "--labels-file", help="labels: .txt (one per line, 'name: attr, attr' allowed) or .json (list or dict)"
    )
    zeroshot_label_args(sp)
    sp.add_argument(
        "--multi-label",
        action="store_true",
        help="tag each record: its best label and any within --margin of it, or none of them (see the README)",
    )
    sp.add_argument("--margin", type=float, help="--multi-label: more tags within this cosine of the best (default 0)")
    sp.add_argument("--threshold", type=float, help="--multi-label: a fixed cosine threshold instead")
    sp.add_argument(
        "--corpus",
        help="unlabelled records of the task (file or image folder) to adapt the labels to (self-training, from "
        "10 distinct records a label: fewshot.classifiers.adaptation.SELF_TRAIN_MIN_PER_LABEL)",
    )
    sp.add_argument("--adapt-to-input", action="store_true", help="use the records being classified as that corpus")
    sp.add_argument(
        "--adapt",
        default="auto",
        choices=ADAPT_METHODS,
        help="how the labels adapt to the corpus: selftrain, center (less the corpus mean), none, or auto "
        "(self-training when the corpus is large enough, default)",
    )
    sp.add_argument(
        "--abstain", help="'none of these' (empty label): a cosine threshold, or auto (needs --corpus/--adapt-to-input)"
    )
    sp.add_argument("--top-k", type=positive_int, help="at most this many tags per record")
    sp.add_argument("--encoder", help=ENCODER_HELP)
    sp.add_argument(
        "--prediction-col",
        help="name of the output column with the prediction (default: prediction); with --multi-label the tags' "
        "column (default: tags, their scores in tag_scores; another name N puts them in N_scores); never replaces "
        "an input column",
    )
    sp.add_argument("-o", "--output", help="output file (.csv, or .jsonl; .txt gets JSON lines); default: stdout")
    sp.set_defaults(func=cmd_zeroshot)

    ip = sub.add_parser("index", help="build, extend, prune, search and describe a saved index")
    isub = ip.add_subparsers(required=True)
    for name, func, helptext in [
        ("build", cmd_index_build, "build a new index from a file"),
        ("add", cmd_index_add, "add records to an index (waits for any other writer)"),
    ]:
        sp = isub.add_parser(name, help=helptext)
        sp.add_argument("name", help="index name (saved under indexes/NAME) or a folder path")
        data_args(sp, label=False, data_needed=False)
        sp.add_argument(  # in place of the data file: a batch job's vectors
            "--from-embeddings",
            metavar="OUTPUT",
            help="the output folder of 'fewshot batch embed': index its vectors without encoding again (the "
            "encoder recorded there must be "
            + ("--encoder's when both are given)" if name == "build" else "the index's)"),
        )
        sp.add_argument("--label-col", help="column holding a label to store and filter on")
        sp.add_argument("--id-col", help="column holding integer ids (default: numbered automatically)")
        sp.add_argument("--meta-cols", help="comma-separated columns to keep as metadata")
        if name == "build":
            sp.add_argument("--kind", default="auto", choices=KINDS)
            sp.add_argument("--overwrite", action="store_true", help="replace an existing index")
            sp.add_argument("--encoder", help=ENCODER_HELP)
        sp.set_defaults(func=func)
    sp = isub.add_parser("remove", help="remove items by id or by filter (waits for any other writer)")
    sp.add_argument("name", help="index name or folder")
    sp.add_argument("--ids", nargs="+", metavar="ID", help="ids to remove (separated by commas or spaces)")
    sp.add_argument(
        "--where",
        action="append",
        metavar="FIELD=VALUE",
        help="remove the items matching this filter (as search's --where: repeat it; one field given twice "
        "matches either value; FIELD=null matches items where the field is null or missing); with --ids, only "
        "those ids that match",
    )
    sp.add_argument(
        "--compact",
        action="store_true",
        help="free removed items' vectors (an HNSW graph keeps them, and their ids, until compacted); alone, "
        "compacts the removals made before",
    )
    sp.set_defaults(func=cmd_index_remove)
    sp = isub.add_parser("search", help="search an index by meaning")
    sp.add_argument("name", help="index name or folder")
    sp.add_argument("query", help="a text query, or with --image the path of a query image")
    sp.add_argument("--image", action="store_true", help="QUERY is an image file (image indexes)")
    sp.add_argument("-k", type=positive_int, default=5, help="hits to show (default 5)")
    sp.add_argument(
        "--where",
        action="append",
        metavar="FIELD=VALUE",
        help="filter on label, id or a metadata field (the value is read as the field's type, commas and all); "
        "repeat it: one field given twice matches either value, two fields must both match",
    )
    sp.add_argument("--json", action="store_true", help="one JSON object per hit")
    sp.set_defaults(func=cmd_index_search)
    sp = isub.add_parser("info", help="describe a saved index")
    sp.add_argument("name", help="index name or folder")
    sp.set_defaults(func=cmd_index_info)

    sp = sub.add_parser("demo", help="few-shot, zero-shot and search on bundled examples")
    sp.set_defaults(func=cmd_demo)
    for name in COMMAND_MODULES:  # commands in modules of their own add their parsers here
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    shown = warnings.showwarning
    said: set[str] = set()

    def show(message: Any, category: type[Warning], *rest: Any, **kw: Any) -> None:
        if issubclass(category, FewShotWarning):  # one line, as errors are, not a source file and line
            if str(message) not in said:  # once, though several steps of a command met it
                said.add(str(message))
                print(f"fewshot: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *rest, **kw)

    warnings.showwarning = show
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader stopped early (| head): stop quietly, as other Unix tools do
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141  # 128 + SIGPIPE, the shell's status for a writer whose reader went away
    except (FewShotError, ValueError, OSError, csv.Error, sqlite3.Error) as exc:
        print(f"fewshot: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        print("fewshot: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
