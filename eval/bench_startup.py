"""What a user waits for: the parts of a ``fewshot fit`` and a ``fewshot index search`` on the command line.

    python -m eval.bench_startup            # about 3 minutes on 2 cores; writes eval/results/bench_startup.{json,md}

Each command runs in a fresh process, as a user runs it, three times (the median is reported); the parts are
timed in-process on the same data: importing fewshot, loading the bundled MiniLM, encoding the support
set, fitting each head. The support set is Banking77 at 8 examples a class (616 texts, 77 classes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from eval.datasets import load, sample_per_class
from eval.run_text import RESULTS, machine

REPEATS = 3


def timed_command(argv: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t


def in_process_parts(texts: list[str], labels: list[str]) -> dict[str, float]:
    """Seconds for each part, measured in a fresh interpreter so that nothing is warm."""
    script = f"""
import json, sys, time
t = time.perf_counter(); import fewshot; t_import = time.perf_counter() - t
from fewshot import FewShotClassifier, TextEncoder
texts, labels = json.load(open({json.dumps(str(Path(tempfile.gettempdir()) / "bench_startup.json"))}))
enc = TextEncoder()
t = time.perf_counter(); enc.model; t_load = time.perf_counter() - t
t = time.perf_counter(); enc.identity; t_hash = time.perf_counter() - t
t = time.perf_counter(); E = enc.encode(texts); t_encode = time.perf_counter() - t
out = {{"import fewshot": t_import, "load MiniLM": t_load, "hash its weights (identity)": t_hash,
       "encode the 616 examples": t_encode}}
from fewshot.heads import make_head
for name in ("prototype", "knn", "linear", "cache", "auto"):
    t = time.perf_counter(); make_head(name).fit(E, labels); out["fit head " + name] = time.perf_counter() - t
clf = FewShotClassifier(enc, lexical=False)
t = time.perf_counter(); clf.fit(texts, labels)
out["FewShotClassifier.fit (prototype alone, calibrated; model warm)"] = time.perf_counter() - t
clf = FewShotClassifier(enc)
t = time.perf_counter(); clf.fit(texts, labels)
out["FewShotClassifier.fit (the default: prototype + lexical channel, calibrated; model warm)"] = (
    time.perf_counter() - t)
print(json.dumps(out))
"""
    Path(tempfile.gettempdir(), "bench_startup.json").write_text(json.dumps([texts, labels]))
    runs = []
    for _ in range(REPEATS):
        proc = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    load_at_start = round(os.getloadavg()[0], 2)
    ds = load("banking77")
    support = sample_per_class(ds.train_labels, 8, 0)
    texts = [ds.train_texts[i] for i in support]
    labels = [ds.label_names[c] for c in ds.train_labels[support]]
    parts = in_process_parts(texts, labels)
    cli = [sys.executable, "-m", "fewshot.cli"]
    commands: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with open(tmp / "train.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(zip(texts, labels))
        (tmp / "queries.txt").write_text("\n".join(ds.test_texts[:100]) + "\n")
        for r in range(REPEATS):
            runs = [
                ("python -c 'import fewshot'", [sys.executable, "-c", "import fewshot"]),
                ("fewshot fit train.csv (616 examples, prototype)", cli + ["fit", "train.csv", "-o", f"m{r}"]),
                (
                    "fewshot predict model queries.txt (100 texts)",
                    cli + ["predict", f"m{r}", "queries.txt", "-o", "p.jsonl"],
                ),
                (
                    "fewshot index build (616 texts)",
                    cli + ["index", "build", f"./ix{r}", "train.csv", "--label-col", "label"],
                ),
                ("fewshot index search (one query)", cli + ["index", "search", f"./ix{r}", "card declined abroad"]),
            ]
            for name, argv in runs:
                commands.setdefault(name, []).append(timed_command(argv, tmp))
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "load_average": {"start": load_at_start, "end": round(os.getloadavg()[0], 2)},
        "command": "python -m eval.bench_startup",
        "repeats": REPEATS,
        "parts_s": {k: round(v, 3) for k, v in parts.items()},
        "commands_s": {k: round(statistics.median(v), 2) for k, v in commands.items()},
    }
    (RESULTS / "bench_startup.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# What a user waits for (CLI and library)",
        "",
        f"{result['date']}, {result['machine']}; `{result['command']}`; median of {REPEATS} runs, each in a fresh "
        f"process; load average {load_at_start:.2f} when it started (other work already running shows here) and "
        f"{result['load_average']['end']:.2f} at its end (which counts its own work).",
        "",
        "| command, end to end | seconds |",
        "|---|---|",
        *[f"| `{k}` | {v:.2f} |" for k, v in result["commands_s"].items()],
        "",
        "| part (Banking77, 616 examples, 77 classes) | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in result["parts_s"].items()],
        "",
    ]
    (RESULTS / "bench_startup.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
