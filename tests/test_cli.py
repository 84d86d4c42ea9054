"""The command line, end to end with the real model, run in-process through ``main``."""

from __future__ import annotations

import csv
import io
import json

import pytest

from fewshot.cli import main

SUPPORT = [
    ("I was charged twice for my order", "billing"),
    ("Please refund my payment", "billing"),
    ("My invoice amount is wrong", "billing"),
    ("The app crashes when I open it", "technical"),
    ("Login page shows an error", "technical"),
    ("The website will not load", "technical"),
]


@pytest.fixture
def train_csv(tmp_path):
    p = tmp_path / "train.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["message", "intent"])
        w.writerows(SUPPORT)
    return p


def run(capsys, *argv, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_then_predict_csv_and_jsonl_stdin(tmp_path, train_csv, capsys, monkeypatch):
    model = tmp_path / "model"
    code, _, err = run(capsys, "fit", train_csv, "--text-col", "message", "--label-col", "intent", "-o", model)
    assert code == 0 and "2 classes" in err
    queries = tmp_path / "q.csv"
    queries.write_text("message\nmoney was taken twice from my card\nthe program freezes on start\n")
    code, out, _ = run(capsys, "predict", model, queries, "--text-col", "message")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["label"] for r in rows] == ["billing", "technical"]
    assert abs(float(rows[0]["p_billing"]) + float(rows[0]["p_technical"]) - 1) < 1e-4
    stdin = json.dumps({"text": "refund please", "id": 7}) + "\n"
    code, out, _ = run(capsys, "predict", model, "-", stdin=stdin, monkeypatch=monkeypatch)
    rec = json.loads(out)
    assert (
        code == 0
        and rec["label"] == "billing"
        and rec["id"] == 7
        and set(rec["probabilities"]) == {"billing", "technical"}
    )


def test_zeroshot_single_and_multi_label(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"text": "The parcel came late and the invoice charged me for express shipping."}\n'
        '{"text": "I baked bread this morning."}\n'
    )
    code, out, _ = run(capsys, "zeroshot", data, "--labels", "money and payments,delivery,sport")
    assert code == 0 and json.loads(out.splitlines()[0])["label"] == "delivery"
    code, out, _ = run(
        capsys,
        "zeroshot",
        data,
        "--labels",
        "money and payments,delivery,sport",
        "--multi-label",
        "-o",
        tmp_path / "tags.csv",
    )
    rows = list(csv.DictReader(open(tmp_path / "tags.csv")))
    assert set(rows[0]["tags"].split(";")) == {"money and payments", "delivery"}
    assert rows[1]["tags"] == ""  # none of these: an empty label
    labels = tmp_path / "labels.txt"
    labels.write_text("bird: has feathers, has a beak\nfish: has fins, lives in water\n")
    data.write_text('{"text": "a small animal with a beak and feathers"}\n')
    code, out, _ = run(capsys, "zeroshot", data, "--labels-file", labels)
    assert code == 0 and json.loads(out)["label"] == "bird"


def test_index_build_add_search_info(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FEWSHOT_INDEX_DIR", str(tmp_path / "idx"))
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "\n".join(
            json.dumps(d)
            for d in [
                {"doc": 10, "body": "The striker scored a late goal", "topic": "sport", "lang": "en"},
                {"doc": 11, "body": "Central bank raises interest rates", "topic": "economy", "lang": "en"},
                {"doc": 12, "body": "Le gardien a arrêté le penalty", "topic": "sport", "lang": "fr"},
            ]
        )
        + "\n"
    )
    code, _, err = run(
        capsys,
        "index",
        "build",
        "news",
        docs,
        "--text-col",
        "body",
        "--id-col",
        "doc",
        "--label-col",
        "topic",
        "--meta-cols",
        "lang",
    )
    assert code == 0 and "indexed 3 items" in err and (tmp_path / "idx" / "news" / "manifest.json").exists()
    code, out, _ = run(capsys, "index", "search", "news", "football match", "-k", "1", "--json")
    assert json.loads(out)["id"] == 10
    code, out, _ = run(capsys, "index", "search", "news", "football match", "--where", "lang=fr", "--json")
    assert [json.loads(x)["id"] for x in out.splitlines()] == [12]
    more = tmp_path / "more.txt"
    more.write_text("Inflation slows in the euro area\n")
    code, _, _ = run(capsys, "index", "add", "news", more)
    assert code == 0
    code, out, _ = run(capsys, "index", "info", "news")
    info = json.loads(out)
    assert info["count"] == 4 and info["dim"] == 384 and info["encoder"]["kind"] == "sentence-transformers"
    code, _, err = run(capsys, "index", "build", "news", docs, "--text-col", "body")
    assert code == 1 and "already exists" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "no/such/model", "x.csv"], "no saved classifier"),
        (["fit", "missing.csv", "-o", "m"], "missing.csv: no such file"),
        (["index", "search", "nothing-here", "query"], "no saved index"),
        (["zeroshot", "x.jsonl"], "--labels"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert err.startswith("fewshot: error:") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_fit_reports_a_missing_column(train_csv, tmp_path, capsys):
    code, _, err = run(capsys, "fit", train_csv, "-o", tmp_path / "m")
    assert code == 1 and "no column 'text'" in err and "message" in err


def test_demo_runs_every_part(capsys):
    code, out, _ = run(capsys, "demo")
    assert code == 0
    lines = out.splitlines()
    assert any(line.strip().startswith("billing") and "two times" in line for line in lines)
    assert any(line.strip().startswith("shipping") and "package" in line for line in lines)
    assert "none of these" in out
    assert "same top hit after reload: True" in out


def test_fit_with_tuning_and_auto_head(tmp_path, train_csv, capsys):
    model = tmp_path / "tuned"
    code, _, err = run(
        capsys, "fit", train_csv, "--text-col", "message", "--label-col", "intent", "--head", "auto",
        "--tune", 2, "-o", model,
    )  # fmt: skip
    assert code == 0 and "picked" in err and "tuned for 2 steps" in err
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["encoder"]["tuned_from"] and manifest["tune"] == {"steps": 2, "seed": 0}
    queries = tmp_path / "q.txt"
    queries.write_text("money was taken twice from my card\nthe program freezes on start\n")
    code, out, _ = run(capsys, "predict", model, queries)
    assert code == 0 and [json.loads(line)["label"] for line in out.splitlines()] == ["billing", "technical"]
