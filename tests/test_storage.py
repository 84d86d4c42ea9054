"""Atomic saves and the writer lock, on their own: what a save may overwrite, delete and refuse."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from fewshot.errors import AccessError, ConcurrentWriteError, CorruptFileError, InputError, LockTimeoutError
from fewshot.storage import FolderLock, check_target, read_bundle, write_bundle
from fewshot.storage.bundle import manifest_checksum


def save(path, text: str, **kw):
    return write_bundle(path, "note", {"text": text}, {"data.txt": lambda p: p.write_text(text)}, **kw)


def test_round_trip_and_checked_bytes(tmp_path):
    manifest = save(tmp_path / "b", "hello")
    read, files = read_bundle(tmp_path / "b", "note")
    assert files["data.txt"] == b"hello" and read["text"] == "hello" and read["save_id"] == manifest["save_id"]
    assert read["checksum"] == manifest_checksum(read) and read["generation"] == 1
    assert save(tmp_path / "b", "again")["generation"] == 2
    with pytest.raises(CorruptFileError, match="holds a saved note, not an index"):
        read_bundle(tmp_path / "b", "index")


def test_numpy_values_are_stored_as_json_and_what_json_cannot_hold_writes_nothing(tmp_path):
    import numpy as np

    files = {"data.txt": lambda p: p.write_text("x")}
    meta = {"k": np.int64(3), "t": np.float32(0.5), "on": np.bool_(True), "v": np.arange(2)}
    write_bundle(tmp_path / "b", "note", meta, files)
    read, _ = read_bundle(tmp_path / "b", "note")
    assert (read["k"], read["t"], read["on"], read["v"]) == (3, 0.5, True, [0, 1])
    before = sorted(p.name for p in (tmp_path / "b").iterdir())
    for bad in ({"t": float("nan")}, {"f": open}):
        with pytest.raises(InputError, match="JSON cannot store"):
            write_bundle(tmp_path / "b", "note", bad, files)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == before  # no stray file, the save intact
    assert read_bundle(tmp_path / "b", "note")[0]["k"] == 3


def test_only_files_fewshot_wrote_are_deleted(tmp_path):
    path = tmp_path / "b"
    save(path, "one")
    (path / "notes.txt").write_text("mine")
    (path / "data-zzzz.txt").write_text("not our pattern")  # not 8 hex digits: not ours
    (path / "data-0123abcd.txt").write_text("a leftover of a killed save")
    save(path, "two")
    names = {p.name for p in path.iterdir()}
    assert "notes.txt" in names and "data-zzzz.txt" in names and "data-0123abcd.txt" not in names
    assert read_bundle(path, "note")[1]["data.txt"] == b"two"


def test_a_new_folder_must_be_empty_or_hold_only_leftovers(tmp_path):
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(InputError, match="did not write"):
        check_target(tmp_path / "user", "note", ["data.txt"])
    (tmp_path / "left").mkdir()
    (tmp_path / "left" / "data-deadbeef.txt").write_text("half")
    check_target(tmp_path / "left", "note", ["data.txt"])  # a killed first save: taken over
    save(tmp_path / "left", "whole")
    assert not (tmp_path / "left" / "data-deadbeef.txt").exists()
    with pytest.raises(InputError, match="it is a file"):
        check_target(tmp_path / "user" / "photo.jpg", "note")
    with pytest.raises(InputError, match="holds a saved note"):
        write_bundle(tmp_path / "left", "index", {}, {"x.bin": lambda p: p.write_bytes(b"")})


def test_a_folder_that_cannot_take_a_save_is_named_and_the_save_there_kept(tmp_path, monkeypatch):

    import fewshot.storage.bundle as bundle

    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(InputError, match="afile is a file, not a folder"):
        check_target(tmp_path / "afile" / "sub" / "model", "note")
    save(tmp_path / "kept", "first")
    real_access = os.access
    # as a user without write permission there sees it (root's access() ignores the mode bits)
    monkeypatch.setattr(bundle.os, "access", lambda p, mode: Path(p).name != "kept" and real_access(p, mode))
    with pytest.raises(AccessError, match="kept is not writable"):
        save(tmp_path / "kept", "second")
    with pytest.raises(AccessError, match="kept is not writable"):
        check_target(tmp_path / "kept" / "new", "note")  # a new folder below it is the same
    monkeypatch.undo()
    assert read_bundle(tmp_path / "kept", "note")[1]["data.txt"] == b"first"

    # where access() says yes but no folder can be made (root in /proc or /sys, a read-only mount)
    def refuse(**kw):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(bundle.tempfile, "mkdtemp", refuse)
    with pytest.raises(AccessError, match=r"cannot save to .*deep/model: no folder can be made in .* \(Read-only"):
        save(tmp_path / "deep" / "model", "first")
    monkeypatch.undo()
    assert not (tmp_path / "deep").exists()
    if Path("/proc/self").is_dir() and os.geteuid() == 0:  # root on Linux, whom access() lets write in /proc
        with pytest.raises(AccessError, match="no folder can be made in /proc"):
            check_target("/proc/no-such-folder/model", "note")
    # a manifest that is a folder is damage, not an OS error
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "manifest.json").mkdir()
    with pytest.raises(CorruptFileError, match="is a folder, not a manifest"):
        read_bundle(tmp_path / "odd", "note")


def test_expected_save_id_refuses_a_lost_update(tmp_path):
    first = save(tmp_path / "b", "one")
    save(tmp_path / "b", "two", expect_save_id=first["save_id"])
    with pytest.raises(ConcurrentWriteError):
        save(tmp_path / "b", "three", expect_save_id=first["save_id"])
    assert read_bundle(tmp_path / "b", "note")[1]["data.txt"] == b"two"


def test_an_edited_manifest_is_caught(tmp_path):
    save(tmp_path / "b", "one")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    m["text"] = "two"
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CorruptFileError, match="edited or damaged"):
        read_bundle(tmp_path / "b", "note")


def test_the_lock_excludes_a_second_writer_until_released(tmp_path):
    order = []
    with FolderLock(tmp_path / "f"):

        def second():
            with FolderLock(tmp_path / "f", timeout=10):
                order.append("second")

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first done")
    t.join()
    assert order == ["first done", "second"]
    with FolderLock(tmp_path / "f"), pytest.raises(LockTimeoutError, match="being written") as refused:
        FolderLock(tmp_path / "f", timeout=0.2).acquire()
    assert f"held for over 0.2 s, by process {os.getpid()} (" in str(refused.value)  # who holds it, named


def test_saved_files_get_the_umask_mode_however_their_writer_made_them(tmp_path):
    import stat
    import tempfile

    from fewshot.storage.bundle import new_file_mode

    def private_writer(p):  # as a writer that goes through a temporary file does (safetensors' save_file)
        fd, tmp = tempfile.mkstemp(dir=p.parent)
        os.write(fd, b"weights")
        os.close(fd)
        os.replace(tmp, p)

    old = os.umask(0o022)
    try:
        write_bundle(tmp_path / "m", "note", {}, {"body.bin": private_writer})
    finally:
        os.umask(old)
    (body,) = (tmp_path / "m").glob("body-*.bin")
    assert stat.S_IMODE(body.stat().st_mode) == 0o644 == stat.S_IMODE((tmp_path / "m" / "manifest.json").stat().st_mode)
    assert new_file_mode(folder=True) == 0o777 & ~old
