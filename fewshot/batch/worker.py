"""The callable class both engines run: it loads the model once in ``__init__`` and maps a batch in ``__call__``.

The local engine makes one :class:`BatchWorker` in its own process; the Ray engine hands the class to
``map_batches``, so each actor of the pool loads the model once and then maps batch after batch. A batch is an
Arrow table of input rows (:mod:`fewshot.batch.sources`); the answer is an Arrow table of output rows:

- the id column (the input's, under its own name) or ``row`` (the row number in the whole input),
- the kept input columns,
- ``predict``: ``prediction`` (null for "none of these"), ``score`` (the class score the decision used),
  ``probability`` (of the predicted class) and ``probabilities`` (every class's, in the order the Parquet
  metadata's ``classes`` gives);
  ``tag``: ``tags``, a list of ``{label, score}``, best first; ``embed``: ``embedding``, a fixed-size list of
  float32,
- and ``__row__``, which the writers use to order and check rows and then drop.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

import numpy as np

from fewshot.batch.job import BatchJob
from fewshot.batch.sources import INPUT, ROW
from fewshot.errors import CorruptFileError, InputError

RESULT_COLUMNS = {
    "predict": ("prediction", "score", "probability", "probabilities"),
    "tag": ("tags",),
    "embed": ("embedding",),
}


def id_column(job: BatchJob) -> str:
    """The name of the output's first column."""
    return job.columns.id or "row"


def load_job_model(job: BatchJob, model_dir: str | None = None) -> tuple[Any, Any]:
    """The classifier (None for ``embed``) and encoder a job runs, loaded from ``model_dir`` (default: the
    job's model folder)."""
    from fewshot.classifiers import FewShotClassifier, ZeroShotClassifier
    from fewshot.cli.common import make_encoder
    from fewshot.storage import read_manifest

    images = job.reads_images
    if job.model is not None:
        folder = model_dir or job.model
        manifest = read_manifest(folder)
        if manifest is None:
            raise InputError(f"--model {job.model}: not a saved model (no manifest.json); save one with 'fewshot fit'")
        encoder = make_encoder(job.encoder, images) if job.encoder else None
        if manifest.get("type") == "classifier":
            clf: Any = FewShotClassifier.load(folder, encoder=encoder)
        elif manifest.get("type") == "zeroshot":
            clf = ZeroShotClassifier.load(folder, encoder=encoder)
        else:
            raise InputError(f"--model {job.model} holds a saved {manifest.get('type')}, not a classifier")
        return clf, clf.encoder_
    encoder = make_encoder(job.encoder, images)
    if job.task == "embed":
        return None, encoder
    zs = ZeroShotClassifier(
        job.labels, encoder=encoder, templates=job.templates, expand=job.expand, frame=job.frame, pool=job.pool
    )
    zs.fit()
    return zs, zs.encoder_


class BatchWorker:
    """Maps Arrow tables of input rows to Arrow tables of output rows with one loaded model.

    Parameters
    ----------
    job : a :class:`~fewshot.batch.job.BatchJob` as a dict (``BatchJob.to_dict()``).
    model_files : the saved model folder's files (name -> bytes), shipped by the driver so that cluster
        nodes need no copy of the folder; None reads the job's model folder directly.
    threads : torch threads for this worker (Ray gives each actor its share of a node's cores).
    """

    def __init__(self, job: dict[str, Any], model_files: dict[str, bytes] | None = None, threads: int | None = None):
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.job = BatchJob.from_dict(job)
        folder = None
        if model_files is not None:
            folder = tempfile.mkdtemp(prefix="fewshot-batch-model-")
            for name, data in model_files.items():
                if os.sep in name or name.startswith("."):
                    raise CorruptFileError(f"a shipped model file has an unsafe name: {name!r}")
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(data)
        try:
            self.model, self.encoder = load_job_model(self.job, folder)
            if self.job.identity is not None:  # every node must run the weights the job was planned with
                from fewshot.encoders import check_same_encoder

                check_same_encoder(self.job.identity, self.encoder, f"the batch job (on host {os.uname().nodename})")
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        self.classes = None if self.model is None else list(self.model.classes_.tolist())
        self._label_type = None if self.classes is None else _label_type(self.classes, self.model)

    def __call__(self, batch: Any) -> Any:
        try:
            return self._run(batch)
        except InputError as exc:  # "images[3]: ..." counts within this batch: name the record instead
            m = _POSITION.match(str(exc))
            if m is None or int(m.group(1)) >= batch.num_rows:
                raise
            i = int(m.group(1))
            if self.job.columns.id is not None:
                where = f"the record with {self.job.columns.id} {batch.column(self.job.columns.id)[i].as_py()!r}"
            else:
                where = f"the record at row {batch.column(ROW)[i].as_py()} of the input (counted from 0, as 'row' is)"
            raise type(exc)(where + str(exc)[m.end() :]) from exc

    def _run(self, batch: Any) -> Any:
        import pyarrow as pa

        texts = batch.column(INPUT).to_pylist()
        cols: dict[str, Any] = {}
        job = self.job
        cols[id_column(job)] = batch.column(job.columns.id or ROW)
        for c in job.columns.keep:
            if c != job.columns.id:
                cols[c] = batch.column(INPUT if c == job.columns.text else c)
        if job.task == "embed":
            E = self.encoder.encode(texts)
            cols["embedding"] = _fixed_list(E)
        elif job.task == "tag":
            tags = self.model.tag(texts, threshold=job.threshold, top_k=job.top_k, margin=job.margin)
            label_type = self._label_type
            struct = pa.struct([("label", label_type), ("score", pa.float32())])
            cols["tags"] = pa.array(
                [[{"label": self._label(lab), "score": float(s)} for lab, s in row] for row in tags],
                type=pa.list_(struct),
            )
        else:
            labels, scores, proba = self.model.predict_with_scores(texts)
            index = {c: i for i, c in enumerate(self.classes)}
            cols["prediction"] = pa.array([self._label(v) for v in labels], type=self._label_type)
            cols["score"] = pa.array(np.asarray(scores, dtype=np.float64))
            picked = [index.get(v, -1) if v is not None else -1 for v in labels.tolist()]
            cols["probability"] = pa.array(
                [float(proba[i, j]) if j >= 0 else None for i, j in enumerate(picked)], type=pa.float64()
            )
            if job.probabilities:
                cols["probabilities"] = _fixed_list(np.asarray(proba, dtype=np.float32))
        cols[ROW] = batch.column(ROW)
        return pa.table(cols)

    def _label(self, v: Any) -> Any:
        """A label as the output column holds it (text when the labels mix types)."""
        import pyarrow as pa

        v = _plain(v)
        return str(v) if v is not None and self._label_type == pa.string() and not isinstance(v, str) else v


_POSITION = re.compile(r"^\w+\[(\d+)\]")  # how an encoder names an item: "images[3]: no such image file"


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _label_type(classes: list[Any], model: Any) -> Any:
    """One Arrow type for the labels of every batch: the classes' type, or string when they (or the
    abstention label) mix types."""
    import pyarrow as pa

    values = [_plain(c) for c in classes]
    abstain = getattr(model, "abstain_label", None)
    if abstain is not None:
        values.append(_plain(abstain))
    try:
        t = pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.string()
    return t if not pa.types.is_null(t) else pa.string()


def _fixed_list(E: np.ndarray) -> Any:
    import pyarrow as pa

    E = np.ascontiguousarray(E, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(E.reshape(-1)), E.shape[1])
