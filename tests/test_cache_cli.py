"""The cache of derived models: when each was last used, and ``fewshot cache info|prune``.

The folders here are laid out as the ONNX export and the static distillation lay theirs out (a manifest with
the hash of each file, built through :func:`fewshot.encoders.derived.cached_build`), with small files in place
of the models: what is tested is the bookkeeping, not the models (tests/test_fast_encoders.py covers real
exports).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from fewshot.cli import main
from fewshot.encoders.derived import (
    TEMPORARY_AGE,
    cache_entries,
    cached_build,
    mark_used,
    prune,
    remove_entry,
    write_manifest,
)
from fewshot.storage.lock import FolderLock

DAY = 86400.0


def h(word: str) -> str:
    """A cache folder's name starts with the SHA-256 of the weights it was made from."""
    return hashlib.sha256(word.encode()).hexdigest()


def build_into(payload: bytes, manifest: dict):
    def build(tmp):
        (tmp / "model.onnx").write_bytes(payload)
        write_manifest(tmp, manifest, ["model.onnx"])

    return build


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path))
    return tmp_path


def add(home, kind: str, name: str, size: int, days_unused: float, manifest: dict | None = None):
    folder = home / kind / name
    cached_build(folder, build_into(b"x" * size, manifest or {"weights_sha256": name[:8], "quantization": None}))
    past = time.time() - days_unused * DAY
    os.utime(folder, (past, past))
    return folder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_opening_a_cached_model_marks_it_used(home):
    folder = add(home, "onnx", f"{h('a')}-fp32-v1", 10, days_unused=40)
    before = folder.stat().st_mtime
    built = []
    cached_build(folder, lambda tmp: built.append(tmp))  # found whole: not built again, but marked used
    assert built == [] and folder.stat().st_mtime > before + 39 * DAY
    # built in a mkdtemp folder (0700), it is handed over with the modes any new folder and file get here
    from fewshot.storage.bundle import new_file_mode

    assert folder.stat().st_mode & 0o777 == new_file_mode(folder=True)
    assert (folder / "manifest.json").stat().st_mode & 0o777 == new_file_mode()


def test_info_lists_each_model_with_its_size_and_last_use(home, capsys):
    add(
        home,
        "onnx",
        f"{h('aaaa')}-int8-v1.2",
        300,
        days_unused=2,
        manifest={"weights_sha256": "aaaa", "quantization": "int8"},
    )
    add(
        home,
        "static",
        f"{h('bbbb')}-pca256-v1",
        500,
        days_unused=50,
        manifest={"distilled_from": {"weights_sha256": "bbbb"}},
    )
    code, out, _ = run(capsys, "cache", "info")
    info = json.loads(out)
    assert code == 0 and info["home"] == str(home)
    first, second = info["entries"]  # least recently used first
    assert first["kind"] == "static" and first["distilled_from"] == {"weights_sha256": "bbbb"}
    assert second["kind"] == "onnx" and second["quantization"] == "int8" and second["weights_sha256"] == "aaaa"
    # the manifest counts in the size: each entry holds its payload and a little more
    assert 500 < first["size_bytes"] < 5000 and 300 < second["size_bytes"] < 5000
    assert info["total_bytes"] == first["size_bytes"] + second["size_bytes"]


def test_prune_removes_what_was_not_used_for_the_given_days(home, capsys):
    old = add(home, "onnx", f"{h('old')}-int8-v1.2", 100, days_unused=45)
    recent = add(home, "onnx", f"{h('new')}-int8-v1.2", 100, days_unused=3)
    stale_static = add(home, "static", f"{h('stale')}-pca256-v1", 100, days_unused=31)
    code, out, _ = run(capsys, "cache", "prune", "--dry-run")  # default: 30 days
    assert code == 0 and "would remove 2 item(s)" in out and old.exists() and stale_static.exists()
    code, out, _ = run(capsys, "cache", "prune")
    assert code == 0 and "removed 2 item(s)" in out
    assert not old.exists() and not stale_static.exists() and recent.exists()
    assert [e.path for e in cache_entries()] == [recent]  # nothing set aside is left behind
    code, out, _ = run(capsys, "cache", "prune", "--older-than", "0")
    assert code == 0 and not recent.exists()


def test_folders_the_cache_did_not_make_are_neither_listed_nor_pruned(home, capsys):
    mine = home / "static" / "my-model2vec"  # a model kept here by hand and used as static:FOLDER
    mine.mkdir(parents=True)
    (mine / "model.safetensors").write_bytes(b"weights")
    notes = home / "onnx" / "notes"
    notes.mkdir(parents=True)
    past = time.time() - 90 * DAY
    for folder in (mine, notes):
        os.utime(folder, (past, past))
    ours = add(home, "onnx", f"{h('old')}-int8-v1.2", 10, days_unused=90)
    assert [e.path for e in cache_entries()] == [ours]
    code, out, _ = run(capsys, "cache", "prune", "--older-than", "0")
    assert code == 0 and "removed 1 item(s)" in out and not ours.exists()
    assert (mine / "model.safetensors").read_bytes() == b"weights" and notes.is_dir()


def test_prune_clears_killed_builds_but_not_one_in_progress(home):
    killed = home / "onnx" / f".{h('dead')}-int8-v1.2.building-abc123"
    killed.mkdir(parents=True)
    (killed / "raw.onnx").write_bytes(b"half")
    past = time.time() - 2 * TEMPORARY_AGE
    os.utime(killed, (past, past))
    fresh = home / "onnx" / f".{h('busy')}-fp32-v1.building-def456"  # written to a minute ago: maybe a live build
    fresh.mkdir()
    locked = add(home, "onnx", f"{h('locked')}-fp32-v1", 10, days_unused=90)
    rebuilding = home / "onnx" / f".{h('locked')}-fp32-v1.building-ghi789"  # old, but its build holds the lock now
    rebuilding.mkdir()
    os.utime(rebuilding, (past, past))
    with FolderLock(home / "onnx" / ".locks" / f"{h('locked')}-fp32-v1", timeout=0):  # another process builds it now
        assert [e.path for e in prune(30, dry_run=True)] == [killed]  # a dry run sees the locks too
        removed = prune(30)
    assert (
        [e.path for e in removed] == [killed] and removed[0].temporary and removed[0].target == f"{h('dead')}-int8-v1.2"
    )
    assert not killed.exists() and fresh.exists() and locked.exists() and rebuilding.exists()
    assert {e.path for e in prune(30)} == {locked, rebuilding}  # its build over, the old model goes


def test_a_model_opened_after_the_listing_is_kept(home):
    folder = add(home, "onnx", f"{h('busy')}-int8-v1.2", 10, days_unused=60)
    (entry,) = cache_entries()
    cutoff = time.time() - 30 * DAY
    assert mark_used(folder)  # a process opens it between the listing and the removal
    assert not remove_entry(entry, cutoff) and folder.exists()
    past = time.time() - 60 * DAY
    os.utime(folder, (past, past))
    assert remove_entry(entry, cutoff) and not folder.exists()
    assert not mark_used(folder)  # gone: whoever opens it next builds it again
    built = []
    cached_build(folder, lambda tmp: (built.append(tmp), build_into(b"y", {"weights_sha256": "busy"})(tmp)))
    assert built and folder.exists()


def test_bad_days_are_refused_with_the_setting_named(home, capsys):
    with pytest.raises(SystemExit):
        main(["cache", "prune", "--older-than", "soon"])
    assert "--older-than takes a number of days" in capsys.readouterr().err
    with pytest.raises(Exception, match="older_than_days must be a number of days"):
        prune(-1)
    code, out, _ = run(capsys, "cache", "info")  # an empty cache is described, not an error
    assert code == 0 and json.loads(out)["entries"] == []


def test_a_cache_root_that_is_a_file_is_named(tmp_path, monkeypatch, capsys):
    from fewshot.errors import AccessError

    (tmp_path / "home").write_text("not a folder")
    monkeypatch.setenv("FEWSHOT_HOME", str(tmp_path / "home"))
    with pytest.raises(AccessError, match="cache folder .*home/onnx \\(not a directory\\).*FEWSHOT_HOME"):
        cached_build(tmp_path / "home" / "onnx" / f"{h('x')}-fp32-v1", build_into(b"x", {}))
    code, _, err = run(capsys, "cache", "info")
    assert code == 1 and "(FEWSHOT_HOME) is a file, not a folder" in err


@pytest.mark.parametrize("refusal", [PermissionError(13, "Permission denied"), OSError(30, "Read-only file system")])
def test_a_cache_this_process_may_not_write_is_named_when_a_build_is_needed(home, monkeypatch, refusal):
    """A cache whose folders exist but refuse writes (a read-only mount, another user's cache): as root the
    permission bits are not enforced, so the refusal is raised where the file system would raise it."""
    import tempfile

    from fewshot.encoders.derived import write_text_atomic
    from fewshot.errors import AccessError

    built = add(home, "onnx", f"{h('kept')}-fp32-v1", 10, 0)  # a complete entry is still read
    real_acquire = FolderLock.acquire

    def refuse(*args, **kwargs):
        raise refusal

    monkeypatch.setattr(FolderLock, "acquire", refuse)
    assert cached_build(built, build_into(b"y", {}))["files"]["model.onnx"]["size"] == 10
    with pytest.raises(
        AccessError, match=f"model cache \\({refusal.strerror.lower()}\\).*FEWSHOT_HOME \\(now {home}\\)"
    ):
        cached_build(home / "onnx" / f"{h('new')}-int8-v1", build_into(b"x", {}))
    monkeypatch.setattr(FolderLock, "acquire", real_acquire)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(AccessError, match="FEWSHOT_HOME"):
        cached_build(home / "onnx" / f"{h('new')}-int8-v1", build_into(b"x", {}))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(AccessError, match="sources.json in the model cache"):
        write_text_atomic(home / "sources" / "sources.json", "{}")
    monkeypatch.undo()
    monkeypatch.setattr(Path, "mkdir", refuse)  # a cache folder not made yet, on a mount that refuses it
    with pytest.raises(AccessError, match=f"cannot make the model cache folder .*static \\({refusal.strerror.lower()}"):
        cached_build(home / "static" / f"{h('new')}-fp32-v1", build_into(b"x", {}))
    monkeypatch.undo()
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError, match="No space left"):  # not a refusal to write: left as it is
        write_text_atomic(home / "sources" / "sources.json", "{}")


def test_a_pruned_cache_folder_given_as_a_static_model_says_what_happened(home):
    from fewshot import StaticEncoder
    from fewshot.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="model cache is gone.*StaticEncoder\\(\\)"):
        StaticEncoder(home / "static" / f"{h('gone')}-pca256-v1")
    with pytest.raises(ModelLoadError, match="no such model2vec folder"):
        StaticEncoder(home / "elsewhere")


def test_a_cache_record_edited_by_hand_is_not_trusted(home):
    """A manifest's settings (such as the maximum sequence length) shape the vectors and a source record names
    the weights: edited by hand, each is taken for damaged (the folder is built again, the hash computed again)
    rather than believed."""
    from fewshot.encoders.derived import known_weights_sha, read_manifest, remember_weights_sha

    folder = add(home, "onnx", h("a") + "-fp32-v1", 10, 0, {"weights_sha256": h("a"), "max_seq_length": 256})
    assert read_manifest(folder)["max_seq_length"] == 256
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "max_seq_length": 8}))
    assert read_manifest(folder) is None
    builds = []
    with pytest.warns(UserWarning, match="manifest.json was changed since it was written"):
        again = cached_build(folder, lambda tmp: builds.append(1) or build_into(b"y" * 10, manifest)(tmp))
    assert builds == [1] and again["max_seq_length"] == 256 and read_manifest(folder) is not None
    # one an earlier fewshot wrote (no digest): built again once, and said so in those words
    old = {k: v for k, v in json.loads((folder / "manifest.json").read_text()).items() if k != "record_sha256"}
    (folder / "manifest.json").write_text(json.dumps(old))
    with pytest.warns(UserWarning, match="written by an earlier fewshot"):
        cached_build(folder, build_into(b"y" * 10, manifest))
    assert read_manifest(folder) is not None

    weights = home / "weights.bin"
    weights.write_bytes(b"w" * 100)
    remember_weights_sha(weights, h("w"))
    assert known_weights_sha(weights) == h("w")
    record = next((home / "sources").glob("*.json"))
    record.write_text(record.read_text().replace(h("w"), h("other")))
    assert known_weights_sha(weights) is None
