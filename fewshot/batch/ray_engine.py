"""The Ray Data engine: read chunks, ``map_batches`` through an actor pool that maps and stages Parquet pieces.

- Reading is a Ray :class:`~ray.data.Datasource` with one read task per pending chunk, which runs the same
  readers as the local engine (:func:`fewshot.batch.sources.read_chunk`). Ray's built-in ``read_parquet``,
  ``read_json`` and ``read_csv`` split files into blocks whose position in the file is lost, so they could
  give neither row numbers nor the shard boundaries a resumable run needs. One read task runs at a time:
  reading a chunk takes milliseconds beside the seconds the model spends on it.
- ``map_batches(StagingWorker, compute=ActorPoolStrategy(size=N))`` makes a pool of N actors; each loads the
  model once (the driver ships a saved model's files, so nodes need no copy of the folder), maps batch after
  batch, and stages each batch's output rows itself under ``OUTPUT/_staging/<shard>/`` as Parquet pieces
  (renamed when whole), handing Ray Data only a count. The driver merges a shard's pieces into
  ``OUTPUT/<shard>.parquet`` as soon as they cover every row of it (:mod:`fewshot.batch.output`). Writing in
  the actor rather than through a ``Datasink`` is measured: Ray started a new worker process for each write
  task (about 3.5 s of CPU each, importing Ray and Arrow), which on a 2-core machine took more time than the
  writes themselves.
- A fewshot error an actor meets (an image path that is not there) comes back with the count, as data, and
  the driver raises it as the local engine would: raised in the actor, Ray Data would wrap it in its own
  exception, the actor's traceback in the message and the original lost.

Without ``address`` a Ray instance is started on this machine for the job and stopped after it; with one,
the job joins that cluster (``"auto"``, or ``"ray://host:10001"`` through Ray Client is not supported: the
workers write to the output folder, which every node must see at the same path).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Iterable
from typing import Any

from fewshot.batch.job import BatchJob
from fewshot.batch.output import RunFolder, shard_metadata, write_pieces
from fewshot.batch.progress import Progress
from fewshot.batch.sources import Chunk, Columns, Plan, read_chunk
from fewshot.batch.worker import BatchWorker
from fewshot.errors import FewShotError, InputError, MissingDependencyError

try:
    import ray
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "the Ray engine needs Ray Data: pip install 'fewshot[scale]' (or pip install 'ray[data]')"
    ) from exc

FINALIZE_EVERY = 1.0  # seconds between the driver's looks at the staged pieces
NICENESS = "RAY_worker_niceness"  # the raylet setting for the priority of worker processes
CONNECT_TIMEOUT = 5.0  # seconds to wait for an answer at --address before saying nothing is there


class ChunkSource(Datasource):
    """A Ray datasource with one read task per chunk, each yielding Arrow tables of ``batch_rows`` rows."""

    def __init__(self, plan: Plan, chunks: list[Chunk], columns: Columns, batch_rows: int) -> None:
        super().__init__()
        self.plan, self.chunks, self.columns, self.batch_rows = plan, chunks, columns, batch_rows
        self._file_rows: dict[int, int] = {}
        for c in plan.chunks:
            self._file_rows[c.file] = self._file_rows.get(c.file, 0) + c.rows

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(self._bytes(c) for c in self.chunks)

    def _bytes(self, chunk: Chunk) -> int:
        """An estimate: the file's bytes per row times the chunk's rows."""
        return int(self.plan.files[chunk.file].size * chunk.rows / max(1, self._file_rows.get(chunk.file, 1)))

    def get_read_tasks(self, parallelism: int, **kwargs: Any) -> list[ReadTask]:
        tasks = []
        for chunk in self.chunks:
            f = self.plan.files[chunk.file]
            meta = BlockMetadata(
                num_rows=chunk.rows, size_bytes=self._bytes(chunk), input_files=[f.path], exec_stats=None
            )

            def read(chunk: Chunk = chunk) -> Iterable[Any]:
                return read_chunk(self.plan, chunk, self.columns, self.batch_rows)

            tasks.append(ReadTask(read, meta))
        return tasks


class StagingWorker(BatchWorker):
    """A :class:`BatchWorker` that stages its output rows under ``OUTPUT/_staging`` and returns their count.

    Parameters
    ----------
    folder : the output folder (every node sees it at this path).
    firsts, names : the pending chunks' first row numbers, in increasing order, and their names.
    job, model_files, threads : as :class:`BatchWorker`'s.
    """

    def __init__(self, folder: str, firsts: list[int], names: list[str], **worker: Any) -> None:
        super().__init__(**worker)
        self.folder, self.firsts, self.names = folder, firsts, names

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        try:
            table = super().__call__(batch)
            staged = write_pieces(self.folder, table, self.firsts, self.names) if table.num_rows else 0
            error = None
        except FewShotError as exc:  # bad input found here (an image path that is not there): sent back as data
            staged, error = 0, json.dumps([type(exc).__name__, str(exc)])
        return pa.table({"staged": pa.array([staged], type=pa.int64()), "error": pa.array([error], type=pa.string())})


def _returned_error(table: Any) -> FewShotError | None:
    """The fewshot error an actor sent back in its result, rebuilt as its own class, or None.

    Ray Data wraps an exception raised in a UDF in its own, with the actor's traceback in the message and
    the original lost in pickling; sent back as data, it reaches the caller as the one line the local engine
    gives."""
    from fewshot import errors as fewshot_errors

    for value in table.column("error").to_pylist():
        if value is not None:
            name, message = json.loads(value)
            cls = getattr(fewshot_errors, name, FewShotError)
            return cls(message) if isinstance(cls, type) and issubclass(cls, FewShotError) else FewShotError(message)
    return None


def _cause(exc: BaseException) -> BaseException:
    """The first fewshot error in an exception's chain (Ray wraps the worker's error)."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, FewShotError):
            return e
        for nxt in (getattr(e, "cause", None), e.__cause__, e.__context__):
            if isinstance(nxt, BaseException):
                stack.append(nxt)
    return exc


def _check_reachable(address: str) -> None:
    """Refuse a ``host:port`` address where nothing answers, within seconds (``ray.init`` retries for many
    minutes, printing only Ray's own warnings); "auto" and other forms are Ray's to resolve."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise InputError(
            f"nothing answers at --address {address} ({exc.strerror or exc}): start the cluster there ('ray start "
            "--head' on its head node), or leave --address out to run on a Ray instance of the job's own"
        ) from None


def _check_resources(actors: int, cpus: int, address: str | None) -> None:
    """Refuse a pool the cluster cannot hold: Ray Data would wait for its actors for ever, saying nothing."""
    total = ray.cluster_resources().get("CPU", 0.0)
    if actors * cpus > total:
        raise InputError(
            f"{actors} actor{'s' * (actors != 1)} of {cpus} CPU{'s' * (cpus != 1)} need {actors * cpus} CPUs and the "
            f"Ray cluster at {address or 'this machine'} has {total:g}: lower --actors or --cpus-per-actor (on a "
            "cluster that adds nodes as it needs them, start them first)"
        )


def connect(address: str | None, num_cpus: int) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), or else start a Ray instance of the job's own, even
    where another runs on this machine; return whether one was started."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False}
    address = address or os.environ.get("RAY_ADDRESS") or None  # as Ray does (a job submitted to a cluster)
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as exc:  # "auto" with no cluster running on this machine
            raise InputError(f"cannot join a Ray cluster at --address {address}: {exc}") from None
        return False
    # Ray runs its workers at nice 15 unless told otherwise; on a machine shared with other work that starves
    # the model actors (measured: a 4x slower encode), so an instance started for the job runs them at 0
    saved = os.environ.get(NICENESS)
    os.environ.setdefault(NICENESS, "0")
    try:
        # "local": a Ray instance of the job's own, even where one started by `ray start` runs on this machine
        # (Ray would join that one and refuse num_cpus); --address auto joins it
        ray.init(address="local", num_cpus=num_cpus, **quiet)
    finally:
        if saved is None:
            os.environ.pop(NICENESS, None)
    return True


def run_ray(
    job: BatchJob,
    folder: RunFolder,
    plan: Plan,
    pending: list[Chunk],
    base: dict[str, Any],
    progress: Progress,
    *,
    batch_size: int,
    actors: int,
    cpus_per_actor: int | None,
    address: str | None,
    model_files: dict[str, bytes] | None,
) -> None:
    """Run ``pending`` chunks on Ray Data (see the module docstring)."""
    local = address is None and not ray.is_initialized()
    cpus = cpus_per_actor or (max(1, (os.cpu_count() or 1) // actors) if local else 1)
    started = connect(address, actors * cpus)
    try:
        _check_resources(actors, cpus, address)
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)

        todo = pending  # the runner already kept the whole shards a killed run left staged
        source = ChunkSource(plan, todo, job.columns, batch_size)
        ds = ray.data.read_datasource(source, num_cpus=0, concurrency=1)  # one reader: see the module docstring
        order = sorted(todo, key=lambda c: c.first_row)
        ds = ds.map_batches(
            StagingWorker,
            fn_constructor_kwargs={
                "folder": str(folder.folder),
                "firsts": [c.first_row for c in order],
                "names": [c.name for c in order],
                "job": job.to_dict(),
                "model_files": model_files,
                "threads": cpus,
            },
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus,
        )
        stop = threading.Event()
        done: set[str] = set()
        errors: list[BaseException] = []

        def finalizer() -> None:
            while True:
                last = stop.wait(FINALIZE_EVERY)
                try:
                    staged = 0
                    for c in todo:
                        if c.name in done:
                            staged += c.rows
                            continue
                        if folder.finalize(c, shard_metadata(base, plan, c)):
                            done.add(c.name)
                            staged += c.rows
                        else:
                            staged += folder.staged_rows(c)
                    progress.set(staged)
                except BaseException as exc:  # reported by the driver after the run
                    errors.append(exc)
                    return
                if last:
                    return

        thread = threading.Thread(target=finalizer, name="fewshot-batch-finalizer", daemon=True)
        thread.start()
        try:
            for counts in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                error = _returned_error(counts)  # the actors stage the rows; what comes back is their counts
                if error is not None:
                    raise error
        except FewShotError:
            raise
        except Exception as exc:
            raise _cause(exc) from exc
        finally:
            stop.set()
            thread.join()
        if errors:
            raise errors[0]
        missing = [c.name for c in todo if c.name not in done and not folder.finished(c)]
        if missing:
            raise FewShotError(f"the Ray job ended with shards missing rows: {', '.join(missing[:5])}; run it again")
    finally:
        if started:
            ray.shutdown()
