"""Running a batch job: plan it, resume it, and hand its chunks to the local or the Ray engine."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from fewshot.batch.job import ENGINES, BatchJob
from fewshot.batch.output import FORMAT, MANIFEST, STAGING, VERSION, RunFolder, now, shard_metadata
from fewshot.batch.progress import Progress
from fewshot.batch.sources import Plan, list_inputs, read_chunk, scan
from fewshot.batch.worker import RESULT_COLUMNS, BatchWorker, id_column
from fewshot.errors import InputError, MissingDependencyError

DEFAULT_BATCH_SIZE = 256  # rows per model call; the encoder sorts them by length inside
DEFAULT_SHARD_ROWS = 50_000  # rows per output shard: the unit a killed run redoes


@dataclass(frozen=True)
class BatchResult:
    """What a run did: where, how many rows in all, how many it computed now, and how fast."""

    output: Path
    engine: str
    rows: int
    computed: int
    shards: int
    shards_skipped: int
    seconds: float

    @property
    def items_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


def require_pyarrow() -> None:
    """Batch jobs read and write Parquet through pyarrow; a missing one names the extra to install."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "batch jobs need pyarrow: pip install 'fewshot[batch]' (or 'fewshot[scale]' for the Ray engine)"
        ) from exc


def _positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


def _model_files(folder: str) -> dict[str, bytes]:
    """The files of a saved model folder (its manifest and the files it names), to ship to Ray actors."""
    from fewshot.storage import read_manifest

    manifest = read_manifest(folder)
    names = ["manifest.json"] + [e["name"] for e in (manifest or {}).get("files", {}).values()]
    return {n: Path(folder, n).read_bytes() for n in names}


def _description(job: BatchJob, worker: BatchWorker) -> dict[str, Any]:
    """What every shard's Parquet metadata and the run manifest say about the job."""
    from fewshot import __version__

    model = None
    if job.model is not None:
        from fewshot.storage import read_manifest

        m = read_manifest(job.model) or {}
        model = {"path": str(Path(job.model).resolve()), "type": m.get("type"), "save_id": m.get("save_id")}
    results = list(RESULT_COLUMNS[job.task])
    if job.task == "predict" and not job.probabilities:
        results.remove("probabilities")
    keep = [c for c in job.columns.keep if c != job.columns.id]
    return {
        "format": FORMAT,
        "version": VERSION,
        "task": job.task,
        "encoder": worker.encoder.identity,
        "model": model,
        "labels": job.labels,
        "classes": worker.classes,
        "columns": [id_column(job), *keep, *results],
        "id_column": id_column(job),
        "row_numbers": job.columns.id is None,
        "fewshot": __version__,
    }


def run_job(
    job: BatchJob,
    source: str | Path,
    output: str | Path,
    *,
    engine: str = "local",
    batch_size: int = DEFAULT_BATCH_SIZE,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    actors: int = 1,
    cpus_per_actor: int | None = None,
    address: str | None = None,
    overwrite: bool = False,
    progress: TextIO | None = sys.stderr,
    progress_every: float = 5.0,
) -> BatchResult:
    """Run ``job`` over ``source`` into the folder ``output`` (see :func:`fewshot.batch.run`)."""
    require_pyarrow()
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    _positive("batch_size", batch_size)
    _positive("shard_rows", shard_rows)
    _positive("actors", actors)
    _positive("cpus_per_actor", cpus_per_actor, allow_none=True)
    ray_only = {"address": address is not None, "actors": actors != 1, "cpus_per_actor": cpus_per_actor is not None}
    given = [name for name, set_ in ray_only.items() if set_]
    if given and engine != "ray":  # the local engine would run as if they were not there
        raise InputError(f"{', '.join(given)}: for the Ray engine (engine='ray', --engine ray)")
    clash = {id_column(job), *RESULT_COLUMNS[job.task]} & set(c for c in job.columns.keep if c != job.columns.id)
    if clash:
        raise InputError(f"kept column(s) {', '.join(sorted(clash))} would clash with the output's own columns")
    if job.columns.id in RESULT_COLUMNS[job.task]:
        raise InputError(
            f"the id column {job.columns.id!r} has the name of one of the output's own columns "
            f"({', '.join(RESULT_COLUMNS[job.task])}), which would replace the ids: rename it in the input"
        )
    if engine == "ray":
        from fewshot.batch import ray_engine  # fails early, naming the extra, when Ray is missing
    from fewshot.storage import FolderLock

    start = time.monotonic()
    folder = RunFolder(output)
    files = list_inputs(source, job.columns.format)  # a missing input is reported before the model loads
    _check_outside(Path(source), folder.folder)
    folder.check_writable(overwrite=False)
    made = not folder.folder.exists()
    with FolderLock(folder.folder, timeout=0.0), _removed_if_refused(folder.folder, made):
        old = folder.check_writable(overwrite)  # one run per output folder at a time
        worker = BatchWorker(job.to_dict())  # loads the model: its identity and classes describe the job
        base = _description(job, worker)
        job = job.with_(
            identity=base["encoder"],
            columns=replace(job.columns, images=worker.encoder.modality == "image"),
            model_save_id=(base["model"] or {}).get("save_id"),
        )
        fingerprint = {**job.fingerprint(), "shard_rows": shard_rows}
        if old is not None:
            folder.resume_check({**old, "job": BatchJob.recorded_as_now(old.get("job", {}), fingerprint)}, fingerprint)
            plan = Plan.from_dict(old["plan"])
            changed = [f.path for f, g in zip(files, plan.files) if f != g]
            if len(files) != len(plan.files) or changed:
                what = changed[0] if changed else f"{len(files)} shards now, {len(plan.files)} then"
                raise InputError(
                    f"the input changed since {folder.folder} was started ({what}); use another output folder, "
                    "or --overwrite to start again"
                )
            manifest = old
        else:
            plan = scan(files, job.columns, shard_rows)
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "job": fingerprint,
                "description": base,
                "plan": plan.to_dict(),
                "rows": plan.rows,
                "shards": len(plan.chunks),
                "complete": False,
                "created": now(),
            }
            folder.start(manifest)
        folder.sweep()
        pending = []
        for c in plan.chunks:  # finished shards, and whole ones a killed Ray run left staged, are kept
            if not folder.finished(c) and not folder.finalize(c, shard_metadata(base, plan, c)):
                folder.drop_staging([c])
                pending.append(c)
        todo_rows = sum(c.rows for c in pending)
        meter = Progress(todo_rows, plan.rows - todo_rows, progress, progress_every)
        if engine == "local":
            for chunk in pending:
                tables = (worker(t) for t in read_chunk(plan, chunk, job.columns, batch_size))
                folder.write_shard(chunk, _counted(tables, meter), shard_metadata(base, plan, chunk))
        elif pending:
            del worker  # the actors load their own
            ray_engine.run_ray(
                job,
                folder,
                plan,
                pending,
                base,
                meter,
                batch_size=batch_size,
                actors=actors,
                cpus_per_actor=cpus_per_actor,
                address=address,
                model_files=_model_files(job.model) if job.model is not None else None,
            )
        meter.finish()
        folder.complete(manifest, plan.rows)
    return BatchResult(
        output=folder.folder,
        engine=engine,
        rows=plan.rows,
        computed=meter.done,
        shards=len(plan.chunks),
        shards_skipped=len(plan.chunks) - len(pending),
        seconds=time.monotonic() - start,
    )


@contextmanager
def _removed_if_refused(folder: Path, made: bool) -> Iterator[None]:
    """Remove the output folder this run made if it stops before writing any output there (only the lock
    file and the job's manifest), so that a refused run (a model that will not load, labels it cannot read, a
    Ray cluster it cannot reach) leaves no trace. Done under the
    lock, which every other run asks for without waiting."""
    try:
        yield
    except BaseException:
        if made:
            from fewshot.storage.lock import LOCK_NAME

            with suppress(OSError):
                entries = list(folder.iterdir())

                def empty(p: Path) -> bool:  # the manifest records a plan, not output; staging may be empty
                    return p.name in (LOCK_NAME, MANIFEST) or (p.name == STAGING and not any(p.iterdir()))

                if all(empty(p) for p in entries):
                    for p in sorted(entries, key=lambda p: p.name == LOCK_NAME):  # the lock last
                        if p.is_dir():
                            p.rmdir()
                        else:
                            p.unlink()
                    folder.rmdir()
        raise


def _check_outside(source: Path, output: Path) -> None:
    """Refuse an output folder that the input folder's listing would take in: its shards would be read as
    input by the next run (and a rerun would find the input changed). Inside a folder named ``_...`` or
    ``.*``, which the listing skips, it may be."""
    if not source.is_dir():
        return
    try:
        inside = output.resolve().relative_to(source.resolve())
    except ValueError:
        return
    if not any(part.startswith((".", "_")) for part in inside.parts):
        where = "is the input folder" if not inside.parts else f"is inside the input folder {source}"
        raise InputError(
            f"the output folder {output} {where}, so its Parquet shards would be "
            "read as input; write it elsewhere (or under a name starting with '_', which the input listing skips)"
        )


def _counted(tables: Any, meter: Progress) -> Any:
    for t in tables:
        meter.add(t.num_rows)
        yield t


def default_cpus() -> int:
    return os.cpu_count() or 1
