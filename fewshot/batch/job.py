"""What a batch job computes: the task, the model or labels, the encoder, the columns, and its settings.

A :class:`BatchJob` is plain data (it travels to Ray actors as a dict) and :meth:`BatchJob.fingerprint` is
what a run records in its output folder, so that a rerun with other arguments is told apart from a resume.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fewshot._validate import finite_number
from fewshot.batch.sources import Columns
from fewshot.classifiers.expansion import EXPAND_METHODS
from fewshot.errors import InputError
from fewshot.prompts import FRAME_RULE, POOLS, is_frame

TASKS = ("predict", "tag", "embed")
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class BatchJob:
    """One batch job.

    Parameters
    ----------
    task : ``"predict"`` (a saved classifier's labels, scores and probabilities, or zero-shot labels),
        ``"tag"`` (zero-shot multi-label tags) or ``"embed"`` (the encoder's vectors).
    model : folder of a saved :class:`~fewshot.FewShotClassifier` or :class:`~fewshot.ZeroShotClassifier`
        (``predict``).
    labels : zero-shot labels, a list or a dict name -> description (``tag``; ``predict`` without a model).
    encoder : an ``--encoder`` spec (:func:`fewshot.cli.common.make_encoder`): ``text``, ``image``, ``conse``,
        ``clip:MODEL:CHECKPOINT``; None is the bundled text model (a saved model uses its own).
    templates : zero-shot template set or template.
    expand : zero-shot label expansion, ``"auto"`` or ``"none"`` (:class:`~fewshot.ZeroShotClassifier`).
    frame, pool : how zero-shot inputs are read (``"auto"``, ``"none"`` or a template with one ``{}``) and how
        each label's prompts are pooled (``"soft"`` or ``"mean"``), as :class:`~fewshot.ZeroShotClassifier`
        takes them.
    threshold, top_k, margin : ``tag`` settings (:meth:`~fewshot.ZeroShotClassifier.tag`); ``threshold``
        and ``margin`` exclude each other.
    probabilities : ``predict`` writes every class's probability as a list column.
    columns : the input columns (:class:`~fewshot.batch.sources.Columns`).
    model_save_id : the saved model's ``save_id`` (set by the planner: a re-saved model is another job).
    identity : the encoder identity every worker must have (set by the planner).
    """

    task: str
    model: str | None = None
    labels: Any = None
    encoder: str | None = None
    templates: Any = None
    expand: str = "auto"
    frame: str = "auto"
    pool: str = "soft"
    threshold: float | None = None
    top_k: int | None = None
    margin: float | None = None
    probabilities: bool = True
    columns: Columns = field(default_factory=Columns)
    model_save_id: str | None = None
    identity: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InputError(f"unknown batch task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.task == "predict" and (self.model is None) == (self.labels is None):
            given = "both were given" if self.model is not None else "neither was given"
            raise InputError(
                f"predict needs a saved model (--model DIR) or zero-shot labels (--labels), one of them; {given}"
            )
        if self.task == "tag" and self.labels is None:
            raise InputError("tag needs labels (--labels 'a,b,c' or --labels-file FILE)")
        if self.task != "predict" and self.model is not None:
            raise InputError(f"{self.task} takes no --model; it uses the encoder (--encoder) and labels")
        if self.task == "embed" and self.labels is not None:
            raise InputError("embed takes no labels")
        if self.expand not in EXPAND_METHODS:
            raise InputError(f"expand must be one of {', '.join(EXPAND_METHODS)}, got {self.expand!r}")
        if not is_frame(self.frame):
            raise InputError(f"frame must be {FRAME_RULE}, got {self.frame!r}")
        if self.pool not in POOLS:
            raise InputError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if self.reads_images and self.frame not in ("auto", "none"):  # refused before any model loads
            raise InputError(
                f"frame={self.frame!r} sets text inputs in a template; --encoder {self.encoder} reads images"
            )
        for name, default in (("expand", "auto"), ("frame", "auto"), ("pool", "soft")):
            if self.labels is None and getattr(self, name) != default:
                raise InputError(
                    f"{name} is a zero-shot setting, for labels (--labels); a saved model keeps the one it was saved "
                    "with, and embed has no labels"
                )
        if self.threshold is not None and not finite_number(self.threshold):
            raise InputError(f"threshold must be a number, got {self.threshold!r}")
        if self.margin is not None and (not finite_number(self.margin) or self.margin < 0):
            raise InputError(f"margin must be a non-negative number, got {self.margin!r}")
        if self.threshold is not None and self.margin is not None:
            raise InputError("give threshold (a fixed cosine) or margin (relative to the best label), not both")
        if self.top_k is not None and (
            isinstance(self.top_k, (bool, np.bool_)) or not isinstance(self.top_k, (int, np.integer)) or self.top_k < 1
        ):
            raise InputError(f"top_k must be a positive integer, got {self.top_k!r}")
        # numpy numbers as plain ones: the job travels as JSON (to Ray workers, into its manifest)
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))
        if self.top_k is not None:
            object.__setattr__(self, "top_k", int(self.top_k))
        if self.margin is not None:
            object.__setattr__(self, "margin", float(self.margin))
        for name in ("labels", "templates"):  # a tuple, a numpy array or numpy names as the JSON they are saved as
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, _as_json(value, name))
        if self.model is not None and not Path(self.model).is_dir():
            what = "a file, not a folder" if Path(self.model).exists() else "no such folder"
            raise InputError(f"--model {self.model}: {what} (give a folder written by 'fewshot fit')")
        for name in (self.columns.text, self.columns.id, *self.columns.keep):
            if name is not None and (not isinstance(name, str) or not name or name.startswith("__")):
                raise InputError(f"column name {name!r} is not usable (empty, or starting with '__')")

    @property
    def reads_images(self) -> bool:
        """Whether the job's encoder reads images (its text column holds image paths)."""
        return self.encoder is not None and self.encoder.split(":")[0] in ("image", "conse", "clip")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["columns"]["keep"] = list(self.columns.keep)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BatchJob:
        cols = dict(d["columns"])
        cols["keep"] = tuple(cols.get("keep", ()))
        return cls(**{**d, "columns": Columns(**cols)})

    def with_(self, **changes: Any) -> BatchJob:
        return replace(self, **changes)

    def fingerprint(self) -> dict[str, Any]:
        """What makes two runs the same job (the engine, batch size and actors do not change the output), as
        its manifest holds it (JSON: the keys of a labels dict are text there)."""
        d = self.to_dict()
        d["model"] = None if self.model is None else str(Path(self.model).resolve())
        if d["margin"] is None:  # the default: the same job as one recorded before the setting existed
            del d["margin"]
        for name, default in (("frame", "auto"), ("pool", "soft")):
            if d[name] == default:  # the defaults: the same job as one recorded before the settings existed
                del d[name]
        if self.labels is None:  # the expansion shapes zero-shot label vectors only: a model's or embed job is
            del d["expand"]  # the same job as one recorded before the setting existed
        if isinstance(self.labels, dict):  # [name, description] pairs: JSON keeps their order and names' types
            d["labels"] = [[k, v] for k, v in self.labels.items()]
        return json.loads(json.dumps(d))

    @staticmethod
    def recorded_as_now(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """``old``, a fingerprint from a run's manifest, in the form of ``new``: before labels dicts were
        recorded as pairs they were a JSON object (names as text, order lost), which stands for the same
        labels when it holds the same text names and descriptions."""
        labels, now = old.get("labels"), new.get("labels")
        if isinstance(labels, dict) and isinstance(now, list) and all(isinstance(p, list) and len(p) == 2 for p in now):
            if all(isinstance(k, str) for k, _ in now) and labels == dict(now):
                return {**old, "labels": now}
        return old


def _as_json(value: Any, name: str) -> Any:
    """``value`` (labels or templates) as plain JSON values: sequences as lists, numpy scalars as Python ones;
    what JSON cannot hold, or a set (no order), is refused naming ``name``."""
    if isinstance(value, dict):
        return {_as_json(k, name): _as_json(v, name) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)) or type(value).__name__ == "Series":
        return [_as_json(v, name) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise InputError(
        f"{name} must be a list, or a dict name -> description, of plain names; got {type(value).__name__}"
    )
