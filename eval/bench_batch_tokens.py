"""How the ONNX encoder batches: lanes on short texts, and the padded-token cap on long ones.

    python -m eval.bench_batch_tokens --note "..."   # about 5 minutes on 2 cores; nothing else should run

Two measurements, each of ONNX int8 and fp32, written to ``results/bench_batch_tokens.{json,md}``:

- lanes: 1,024 banking77 test queries (the short texts of ``eval.bench_encoders``, the same seeded draw) at
  ``batch_size=32`` on two threads, batches run side by side on one-thread lanes (the shipped mode) against
  one after another on the two-thread session;
- caps: 128 enron_spam test e-mails (the long texts of ``eval.bench_encoders``) at ``batch_size=32``, at one
  and two threads, with :data:`fewshot.encoders.onnx.BATCH_TOKENS` set to each cap in turn (``none``:
  batches of 32 texts whatever their length).

Arms are interleaved over ``--rounds`` rounds (default 4) of at least ``--min-time`` seconds each (default
3); each cell is the median texts/s and its ratio to the reference arm (no lanes; no cap).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import fewshot.encoders.onnx as onnx
from eval.bench_encoders import timed_rate
from eval.datasets import load
from eval.run_text import RESULTS, machine
from fewshot import TextEncoder

CAPS = {"none": 10**9, "1024": 1024, "2048": 2048, "4096": 4096}


def texts() -> tuple[list[str], list[str]]:
    """The short and long texts of ``eval.bench_encoders`` (its seeded draws, in its order)."""
    rng = np.random.default_rng(0)
    bank, enron = load("banking77"), load("enron_spam")
    short = [bank.test_texts[i] for i in rng.choice(len(bank.test_texts), 1024, replace=False)]
    long = [enron.test_texts[i] for i in rng.choice(len(enron.test_texts), 128, replace=False)]
    return short, long


def interleaved(arms: dict[str, Callable[[], None]], items: int, rounds: int, min_time: float) -> dict[str, Any]:
    """Median texts/s of each arm over ``rounds`` rounds, the arms' order rotated every round, and each
    median's ratio to the first arm's."""
    names = list(arms)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(timed_rate(arms[name], items, min_time))
    base = statistics.median(rates[names[0]])
    return {
        name: {"texts_per_s": round(statistics.median(v), 1), "ratio": round(statistics.median(v) / base, 3)}
        for name, v in rates.items()
    }


def lanes(short: list[str], rounds: int, min_time: float) -> list[dict[str, Any]]:
    rows = []
    for quantize in ("int8", None):
        enc = TextEncoder(backend="onnx", quantize=quantize, threads=2)
        runtime = enc.onnx_runtime
        enc.encode(short[:64])  # loads the session and makes the lanes
        shipped = runtime._lane_pool

        def run(with_lanes: bool, enc: Any = enc, runtime: Any = runtime, shipped: Any = shipped) -> None:
            runtime._lane_pool = shipped if with_lanes else lambda: None
            try:
                enc.encode(short, batch_size=32)
            finally:
                runtime._lane_pool = shipped

        arms = {"one session": lambda: run(False), "lanes": lambda: run(True)}
        cells = interleaved(arms, len(short), rounds, min_time)
        rows.append({"model": quantize or "fp32", "threads": 2, "arms": cells})
        print(f"lanes, {quantize or 'fp32'}: {cells}", flush=True)
    return rows


def caps(long: list[str], rounds: int, min_time: float) -> list[dict[str, Any]]:
    rows = []
    keep = onnx.BATCH_TOKENS
    try:
        for quantize in ("int8", None):
            for threads in (2, 1):
                enc = TextEncoder(backend="onnx", quantize=quantize, threads=threads)
                enc.encode(long[:8])

                def run(cap: int, enc: Any = enc) -> None:
                    onnx.BATCH_TOKENS = cap
                    enc.encode(long, batch_size=32)

                arms = {name: (lambda c=cap: run(c)) for name, cap in CAPS.items()}
                cells = interleaved(arms, len(long), rounds, min_time)
                rows.append({"model": quantize or "fp32", "threads": threads, "arms": cells})
                print(f"caps, {quantize or 'fp32'}, {threads} thread(s): {cells}", flush=True)
    finally:
        onnx.BATCH_TOKENS = keep
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# ONNX batching: lanes and the padded-token cap",
        "",
        f"Measured {result['date']} on {result['machine']}. Command: `{result['command']}`.",
        f"Median texts/s over {result['rounds']} interleaved rounds of at least {result['min_time']} s each; "
        "the ratio is to the first arm of its row.",
    ]
    if result.get("note"):
        lines += ["", f"Conditions: {result['note']}"]
    for part, title, what in (
        ("lanes", "Lanes: 1,024 banking77 queries, batch 32, two threads", "one session / lanes"),
        ("caps", "Padded-token cap: 128 enron_spam e-mails, batch 32", "none / 1024 / 2048 / 4096 tokens"),
    ):
        rows = result[part]
        names = list(rows[0]["arms"])
        lines += ["", f"## {title}", "", f"Arms: {what}.", ""]
        lines += ["| model | threads | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for row in rows:
            cells = [f"{c['texts_per_s']:.1f}/s ({c['ratio']:.2f}x)" for c in row["arms"].values()]
            lines.append(f"| {row['model']} | {row['threads']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds an arm runs each round, at least")
    ap.add_argument("--note", help="the conditions of this run (other work on the machine), kept with the results")
    ap.add_argument("--out", default=str(RESULTS / "bench_batch_tokens"), help="results path without extension")
    a = ap.parse_args()
    started = time.perf_counter()
    short, long = texts()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "command": " ".join(["python -m eval.bench_batch_tokens", *map(shlex.quote, sys.argv[1:])]),
        "rounds": a.rounds,
        "min_time": a.min_time,
        "note": a.note,
        "lanes": lanes(short, a.rounds, a.min_time),
        "caps": caps(long, a.rounds, a.min_time),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
