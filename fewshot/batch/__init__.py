"""Batch jobs over a corpus: classify, tag or embed a file or folder of Parquet, JSONL or CSV shards into a
folder of Parquet shards, on this process (``engine="local"``) or on a Ray cluster (``engine="ray"``).

>>> from fewshot import batch
>>> batch.predict("tickets/", "out/predicted", model="models/intents")             # doctest: +SKIP
>>> batch.tag("docs.jsonl", "out/tags", labels=["billing", "shipping"], top_k=2)  # doctest: +SKIP
>>> batch.embed("docs/", "out/vectors", engine="ray", actors=4)                     # doctest: +SKIP

Each output row holds the input's id column (or ``row``, the row number in the whole input), any kept
columns, then the prediction and its scores, the tags, or the embedding; every shard's Parquet metadata
(key ``fewshot``) records the task, the encoder identity and the model. A run killed midway and started
again with the same arguments keeps the shards already written and ends with the same output as an
unbroken run. :func:`iter_output` streams an output back; ``EmbeddingIndex.add_batch_output`` indexes an
``embed`` output without encoding again.

- :mod:`.sources`: input shards, the scan that checks and chunks them, and the chunk readers;
- :mod:`.worker`: :class:`BatchWorker`, the callable class both engines run;
- :mod:`.output`: output shards, the run manifest, resuming;
- :mod:`.ray_engine`: the Ray Data engine (needs ``pip install 'fewshot[scale]'``);
- :mod:`.runner`: planning and the local engine.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from fewshot.batch.job import ENGINES, TASKS, BatchJob
from fewshot.batch.output import iter_output, output_shards, read_run_manifest, shard_description
from fewshot.batch.runner import DEFAULT_BATCH_SIZE, DEFAULT_SHARD_ROWS, BatchResult, run_job
from fewshot.batch.sources import Columns
from fewshot.batch.worker import BatchWorker

__all__ = [
    "ENGINES",
    "TASKS",
    "BatchJob",
    "BatchResult",
    "BatchWorker",
    "Columns",
    "embed",
    "iter_output",
    "output_shards",
    "predict",
    "read_run_manifest",
    "run",
    "shard_description",
    "tag",
]


def run(
    task: str,
    source: str | Path,
    output: str | Path,
    *,
    model: str | Path | None = None,
    labels: Any = None,
    encoder: str | None = None,
    templates: Any = None,
    expand: str = "auto",
    frame: str = "auto",
    pool: str = "soft",
    threshold: float | None = None,
    top_k: int | None = None,
    margin: float | None = None,
    probabilities: bool = True,
    text_col: str = "text",
    id_col: str | None = None,
    keep_cols: list[str] | tuple[str, ...] | str = (),
    format: str | None = None,
    encoding: str = "utf-8",
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
    """Run a batch job.

    Parameters
    ----------
    task : ``"predict"``, ``"tag"`` or ``"embed"``.
    source : a Parquet, JSONL or CSV file, or a folder of them (read recursively, in path order).
    output : the folder of Parquet shards to write (new, empty, or a previous run of the same job to resume);
        not inside ``source``, whose listing would read its shards as input.
    model : a folder saved by ``FewShotClassifier.save`` / ``fewshot fit`` (or a saved zero-shot classifier),
        for ``predict``.
    labels : zero-shot labels (a list, or a dict name -> description) for ``tag``, or for ``predict``
        without a model.
    encoder : an encoder spec as ``--encoder`` takes it (``text``, ``text:onnx-int8``, ``static``, ``image``,
        ``conse``, ``clip:MODEL:CKPT``, ...);
        None is the bundled MiniLM (a saved model brings its own). An image encoder reads the text column
        as image paths, relative ones against their shard's folder.
    expand : zero-shot label expansion, ``"auto"`` or ``"none"`` (:class:`~fewshot.ZeroShotClassifier`).
    frame, pool : how zero-shot inputs are read (``"auto"``: each text also in ``"Sentence: {}"``, for
        transformer text models; ``"none"``: as it is, half the encoding time; or a template with one ``{}``)
        and how each label's prompts are pooled (``"soft"`` or ``"mean"``), as
        :class:`~fewshot.ZeroShotClassifier` takes them (a saved model keeps its own).
    templates, threshold, top_k, margin : zero-shot templates, and the ``tag`` settings
        (:meth:`~fewshot.ZeroShotClassifier.tag`): a fixed cosine threshold, the tag limit, and how close to
        the best label another must score to be a tag too (threshold or margin, not both).
    probabilities : ``predict`` also writes every class's probability (a list column).
    text_col, id_col, keep_cols : the input's text (or image path) column, its id column (default: row
        numbers; ids are copied as given, not checked for uniqueness), and columns to copy into the output
        (a list, or one string of names separated by commas as ``--keep-cols`` takes them).
    format, encoding : the input format when file names do not tell it; the text encoding of CSV/JSONL.
    engine : ``"local"`` (this process, bounded memory) or ``"ray"`` (Ray Data).
    batch_size : rows per model call (and per Ray batch).
    shard_rows : rows per output shard: what a killed run redoes at most, per shard in flight.
    actors, cpus_per_actor, address : Ray: the actor pool's size, torch threads (and Ray CPUs) per actor
        (default: this machine's cores shared out on a local instance, 1 on a cluster), and the cluster to
        join (None: ``$RAY_ADDRESS`` when set, else a Ray instance started on this machine for the job).
    overwrite : start again when ``output`` holds another job's output.
    progress : where progress lines go (items done, items/s, time left); None for silence.

    Returns
    -------
    BatchResult
    """
    if isinstance(keep_cols, str):  # "a,b" is two columns, not the characters of a string
        keep_cols = [c.strip() for c in keep_cols.split(",") if c.strip()]
    job = BatchJob(
        task=task,
        model=None if model is None else str(model),
        labels=labels,
        encoder=encoder,
        templates=templates,
        expand=expand,
        frame=frame,
        pool=pool,
        threshold=threshold,
        top_k=top_k,
        margin=margin,
        probabilities=probabilities,
        columns=Columns(text=text_col, id=id_col, keep=tuple(keep_cols), encoding=encoding, format=format),
    )
    return run_job(
        job,
        source,
        output,
        engine=engine,
        batch_size=batch_size,
        shard_rows=shard_rows,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        address=address,
        overwrite=overwrite,
        progress=progress,
        progress_every=progress_every,
    )


def predict(source: str | Path, output: str | Path, **kwargs: Any) -> BatchResult:
    """:func:`run` with ``task="predict"``: ``model=`` a saved classifier, or ``labels=`` for zero-shot."""
    return run("predict", source, output, **kwargs)


def tag(source: str | Path, output: str | Path, **kwargs: Any) -> BatchResult:
    """:func:`run` with ``task="tag"``: zero-shot tags from ``labels=``."""
    return run("tag", source, output, **kwargs)


def embed(source: str | Path, output: str | Path, **kwargs: Any) -> BatchResult:
    """:func:`run` with ``task="embed"``: the encoder's vectors, for ``EmbeddingIndex.add_batch_output``."""
    return run("embed", source, output, **kwargs)
