"""Bring a results file of ``eval.run_tuning`` up to date after a change that alters a fit's choices but not
the work it does: every field of every row from a re-run, the timing fields from the quiet run before it.

    python -m eval.refresh_accuracy eval/results/text_tuning_minilm.json RERUN.json [--why "..."]

A re-run made beside other work gives the right accuracies (the runs are deterministic: rows the change does
not touch come out equal to the last digit) but not comparable times, and timing a 73-minute run again on a
quiet machine is not always possible. The rows must match one to one (method, dataset, N, seed); the file
keeps both commands, and the re-run's rows whose results changed are listed in ``refreshed``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TIMING = ("fit_s", "tune_s", "encode_s_estimated", "predict_items_per_s", "threads", "load_average_at_start")
RESULTS = ("accuracy", "macro_f1", "mcc")


def _key(row: dict) -> tuple:
    return row["method"], row["dataset"], row["shots"], row["seed"]


def refresh(quiet: dict, rerun: dict, why: str) -> dict:
    """``rerun`` with each row's timing fields taken from the matching row of ``quiet``."""
    timed = {_key(r): r for r in quiet["rows"]}
    keys = [_key(r) for r in rerun["rows"]]
    if len(timed) != len(quiet["rows"]) or len(set(keys)) != len(keys) or set(timed) != set(keys):
        raise SystemExit("the two runs do not hold the same rows (method, dataset, N, seed), each once")
    for r in rerun["rows"]:
        untimed = [k for k in TIMING if k in r and k not in timed[_key(r)]]
        if untimed:
            raise SystemExit(f"the quiet run's row {_key(r)} has no {', '.join(untimed)}: the re-run's would stand")
    rows, changed = [], []
    for r in rerun["rows"]:
        old = timed[_key(r)]
        rows.append({**r, **{k: old[k] for k in TIMING if k in old}})
        if any(r.get(k) != old.get(k) for k in RESULTS):
            changed.append({"row": list(_key(r)), **{k: [old.get(k), r.get(k)] for k in RESULTS}})
    return {
        **quiet,
        "rows": rows,
        "refreshed": {
            "why": why,
            "results_from": rerun.get("command", "?"),
            "results_note": rerun.get("note", ""),
            "times_from": quiet.get("command", "?"),
            "changed_rows": changed,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("quiet", help="the results file to refresh (its times are kept)")
    ap.add_argument("rerun", help="the re-run's results file (everything else comes from it)")
    ap.add_argument("--why", default="", help="the change that made the re-run necessary")
    a = ap.parse_args()
    quiet, rerun = (json.loads(Path(p).read_text()) for p in (a.quiet, a.rerun))
    out = refresh(quiet, rerun, a.why)
    Path(a.quiet).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{a.quiet}: {len(out['rows'])} rows, {len(out['refreshed']['changed_rows'])} with other results")


if __name__ == "__main__":
    main()
