"""How many padded tokens an ONNX batch should hold: long-text throughput at several caps.

    python -m eval.bench_batch_tokens          # about 4 minutes on 2 cores; nothing else should run

128 enron_spam test e-mails (the long texts of ``eval.bench_encoders``, the same seeded draw), encoded with
``batch_size=32`` by ONNX int8 and fp32 at one and two threads, with :data:`fewshot.encoders.onnx.BATCH_TOKENS`
set to each cap in turn (``none``: batches of 32 texts whatever their length). Four interleaved rounds of
at least 3 s each; the median texts/s and its ratio to ``none`` are printed.
"""

from __future__ import annotations

import statistics

import numpy as np

import fewshot.encoders.onnx as onnx
from eval.bench_encoders import timed_rate
from eval.datasets import load
from fewshot import TextEncoder

CAPS = {"none": 10**9, "1024": 1024, "2048": 2048, "4096": 4096}


def main() -> None:
    rng = np.random.default_rng(0)
    bank, enron = load("banking77"), load("enron_spam")
    rng.choice(len(bank.test_texts), 1024, replace=False)  # the short draw comes first in bench_encoders
    long = [enron.test_texts[i] for i in rng.choice(len(enron.test_texts), 128, replace=False)]
    keep = onnx.BATCH_TOKENS
    try:
        for quantize in ("int8", None):
            for threads in (2, 1):
                enc = TextEncoder(backend="onnx", quantize=quantize, threads=threads)
                enc.encode(long[:8])
                rates: dict[str, list[float]] = {name: [] for name in CAPS}
                names = list(CAPS)
                for r in range(4):
                    for name in names[r:] + names[:r]:
                        onnx.BATCH_TOKENS = CAPS[name]
                        rates[name].append(timed_rate(lambda e=enc: e.encode(long, batch_size=32), len(long), 3.0))
                base = statistics.median(rates["none"])
                cells = ", ".join(
                    f"{n} {statistics.median(v):.1f}/s ({statistics.median(v) / base:.2f}x)" for n, v in rates.items()
                )
                print(f"{quantize or 'fp32'}, {threads} thread(s): {cells}", flush=True)
    finally:
        onnx.BATCH_TOKENS = keep


if __name__ == "__main__":
    main()
