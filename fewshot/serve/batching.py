"""Coalescing: many requests, one model call.

:class:`CoalescingEncoder` wraps an encoder. Each caller's ``encode`` puts its items in a queue and blocks;
one worker thread per kind of call (``encode``, ``encode_text``) takes up to ``max_batch_size`` items, runs the
wrapped encoder once and hands each caller its rows. After the first call arrives it keeps collecting while
more arrive, each within ``gap_ms`` (2 ms by default) of the last (a burst of requests from many clients), but
never holds the first longer than ``max_wait_ms``; calls that arrive while the model runs make up the next
batch at once.

It is itself an :class:`~fewshot.encoders.Encoder` with the wrapped encoder's identity, so the library's
classifiers and indexes load and run with it unchanged: concurrent ``predict`` and ``search`` calls from a
thread pool share model calls without knowing it.

:class:`GroupCommit` does the same for durable writes: concurrent item additions to one index become one
``add_embeddings`` call, hence one journal write and one ``fsync``.

A request's deadline (:func:`deadline`) travels with its thread: a caller whose time runs out stops waiting
(:class:`~fewshot.serve.errors.DeadlineExceeded`) and its items are dropped from the next model call. Past
:func:`begin_write` it is no longer dropped: its write is waited for.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fewshot.encoders import Encoder
from fewshot.errors import InputError, collected_warnings, warn_user
from fewshot.serve.errors import DeadlineExceeded

_local = threading.local()
GAP_MS = 2.0  # a batch keeps collecting while calls arrive less than this apart (up to max_wait_ms in all)


class Deadline:
    """A request's time, and its point of no return.

    Before the request's first write its thread calls :func:`begin_write`. Until then the service may drop
    it at its timeout (:meth:`abandon`; the write is then refused); from then on the service waits for the
    outcome and answers with it, past the timeout if need be. A 503 therefore always means nothing was
    written, and a write that was made is never reported as dropped."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds
        self.state = "running"  # then "writing" (answered with its outcome) or "abandoned" (answered 503)
        self._lock = threading.Lock()

    def remaining(self) -> float | None:
        """Seconds left (None: no limit, or a write under way, which is waited for)."""
        if self.end is None or self.state == "writing":
            return None
        return self.end - time.monotonic()

    def expired(self) -> bool:
        """Answered 503 already, or out of time, before it began to write."""
        if self.state == "running":
            return self.end is not None and time.monotonic() >= self.end
        return self.state == "abandoned"

    def begin_write(self) -> None:
        with self._lock:
            if self.expired():
                self.state = "abandoned"
                raise DeadlineExceeded("the request ran out of time; nothing was written")
            self.state = "writing"

    def abandon(self) -> bool:
        """At the timeout: True when the request is dropped (nothing of it will be written), False when a
        write of it is under way."""
        with self._lock:
            if self.state == "writing":
                return False
            self.state = "abandoned"
            return True


@contextlib.contextmanager
def deadline(limit: Deadline | float | None) -> Iterator[Deadline]:
    """Give the work of this thread a :class:`Deadline` (or ``limit`` seconds; None: no limit)."""
    ticket = limit if isinstance(limit, Deadline) else Deadline(limit)
    previous = getattr(_local, "deadline", None)
    _local.deadline = ticket
    try:
        yield ticket
    finally:
        _local.deadline = previous


def remaining() -> float | None:
    """Seconds left to this thread's request, or None without a deadline."""
    ticket = getattr(_local, "deadline", None)
    return None if ticket is None else ticket.remaining()


def out_of_time() -> bool:
    """Whether this thread's request has run out of time, or been answered, before it began to write."""
    ticket = getattr(_local, "deadline", None)
    return ticket is not None and ticket.expired()


def begin_write() -> None:
    """Just before this thread's request writes: raise :class:`DeadlineExceeded` when its time is up (or the
    service has answered it), else mark it as writing, so that the service waits for its outcome."""
    ticket = getattr(_local, "deadline", None)
    if ticket is not None:
        ticket.begin_write()


@dataclass(eq=False)
class _Job:
    items: list[Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None
    cancelled: bool = False
    expires: float | None = None  # monotonic time after which nobody waits for it
    warnings: list[str] = field(default_factory=list)  # what the model call said, for this caller to say
    counted: bool = True  # still in its lane's pending count (a worker took it, or its caller gave up: not)


class _Lane:
    """One queue and its worker thread: the calls of one kind (encode or encode_text) of one encoder."""

    def __init__(self, owner: CoalescingEncoder, run: Callable[[list[Any]], np.ndarray], name: str) -> None:
        self.owner, self.run, self.name = owner, run, name
        self.queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.pending = 0  # items queued and not yet taken by the worker
        self._count_lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name=f"fewshot-batcher-{name}", daemon=True)
        self.thread.start()

    def submit(self, job: _Job) -> None:
        with self._count_lock:
            self.pending += len(job.items)
        self.queue.put(job)

    def uncount(self, job: _Job) -> None:
        """Take ``job`` out of the pending count, once (the worker took it, or its caller stopped waiting)."""
        with self._count_lock:
            if job.counted:
                job.counted = False
                self.pending -= len(job.items)

    def _loop(self) -> None:
        owner = self.owner
        while True:
            job = self.queue.get()
            if job is None:
                return
            self.uncount(job)
            batch, n = [job], len(job.items)
            last = time.monotonic()
            until = last + owner.max_wait_ms / 1000.0
            gap = min(owner.gap_ms, owner.max_wait_ms) / 1000.0
            stop = False
            while n < owner.max_batch_size:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    wait = min(until, last + gap) - time.monotonic()
                    if wait <= 0:
                        break
                    try:
                        nxt = self.queue.get(timeout=wait)
                    except queue.Empty:
                        break
                last = time.monotonic()
                if nxt is None:
                    stop = True
                    break
                self.uncount(nxt)
                batch.append(nxt)
                n += len(nxt.items)
            now = time.monotonic()
            live = [j for j in batch if not j.cancelled and (j.expires is None or j.expires > now)]
            for j in batch:
                if j not in live:
                    j.cancelled = True
                    j.done.set()
            if live:
                self._execute(live)
            if stop:
                return

    def _execute(self, jobs: list[_Job]) -> None:
        items = [x for j in jobs for x in j.items]
        observer = self.owner.observer
        if observer is not None:
            observer(self.owner, len(items), self.pending)
        try:
            # the warnings of a call are handed to each request in it (they reach the answers), but for the one
            # about a static model's unreadable texts, which names texts of every request: each request is told
            # of its own instead (CoalescingEncoder._said)
            with collected_warnings(issue=False) as said:
                E = self.run(items)
            unreadable = getattr(self.owner.wrapped, "unreadable", None)
            mine = unreadable(items, E) if callable(unreadable) else None
            for j in jobs:
                j.warnings = [m for m in said if m != mine]
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            if len(jobs) == 1:
                jobs[0].error = exc
                jobs[0].done.set()
            else:  # one bad input must not fail its neighbours, and its error must name its own position
                for j in jobs:
                    self._execute([j])
            return
        start = 0
        for j in jobs:
            j.result = np.ascontiguousarray(E[start : start + len(j.items)])
            start += len(j.items)
            j.done.set()

    def close(self) -> None:
        self.queue.put(None)


class CoalescingEncoder(Encoder):
    """An encoder that merges the concurrent calls of many threads into batched calls of ``encoder``.

    Parameters
    ----------
    encoder : the encoder doing the work; ``identity``, ``dim``, ``modality``, ``validate`` and every other
        attribute are its own, so a save made through the wrapper records the wrapped encoder.
    max_batch_size : most items per model call (a single caller with more items is not split).
    max_wait_ms : the longest the first queued call waits for others to join it.
    gap_ms : others join while they keep arriving less than this apart (default :data:`GAP_MS`).
    observer : called as ``observer(encoder, batch_items, still_queued)`` before each model call (metrics).

    Copies (``copy.deepcopy``, hence ``sklearn.clone``) share this wrapper; a pickle carries the wrapped
    encoder and the settings, and the other side starts its own workers.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 10.0,
        gap_ms: float = GAP_MS,
        observer: Callable[[CoalescingEncoder, int, int], None] | None = None,
    ) -> None:
        if not isinstance(encoder, Encoder):
            raise InputError(f"encoder must be a fewshot Encoder, got {type(encoder).__name__}")
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise InputError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
        for param, value in (("max_wait_ms", max_wait_ms), ("gap_ms", gap_ms)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InputError(f"{param} must be a non-negative number, got {value!r}")
        super().__init__(normalize=encoder.normalize, batch_size=encoder.batch_size)
        self.wrapped = encoder
        self.modality = encoder.modality
        self.max_batch_size = max_batch_size
        self.max_wait_ms = float(max_wait_ms)
        self.gap_ms = float(gap_ms)
        self.observer = observer
        self._lanes: dict[str, _Lane] = {}
        self._lanes_lock = threading.Lock()

    # -- what the wrapped encoder decides -----------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.wrapped.dim

    @property
    def identity(self) -> dict[str, Any]:
        return self.wrapped.identity

    @property
    def supports_text(self) -> bool:
        return self.wrapped.supports_text

    @property
    def contextual(self) -> bool:
        return self.wrapped.contextual

    def validate(self, inputs: Any) -> list[Any]:
        return self.wrapped.validate(inputs)

    def vocabulary(self) -> dict[str, int] | None:
        return self.wrapped.vocabulary()

    def describe_source(self) -> str:
        return self.wrapped.describe_source()

    def unshared(self) -> Encoder:
        """The wrapped encoder, for one-time bulk work (a vocabulary) that should run on its own, outside the
        shared calls and any request's deadline."""
        return self.wrapped

    def __getattr__(self, name: str) -> Any:
        # only for attributes this object lacks: the wrapped encoder's model, tuned_from, categories, ...
        if name.startswith("__") or name in ("wrapped", "_lanes", "_lanes_lock"):
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return f"CoalescingEncoder({self.wrapped!r}, max_batch_size={self.max_batch_size})"

    # -- coalesced calls ----------------------------------------------------------------------------------
    def encode(self, inputs: Any, batch_size: int | None = None, show_progress: bool = False) -> np.ndarray:
        """Embed ``inputs`` in a model call shared with other threads; array of shape (n, dim)."""
        items = self.wrapped.validate(inputs)
        return self._said(items, self._submit("encode", items))

    def _said(self, items: list[Any], E: np.ndarray) -> np.ndarray:
        """Warn this caller of what the wrapped encoder says of its own rows (a static model's unreadable
        texts), which the shared call kept to itself."""
        unreadable = getattr(self.wrapped, "unreadable", None)
        message = unreadable(items, E) if callable(unreadable) else None
        if message is not None:
            warn_user(message)
        return E

    def encode_text(self, texts: Any, batch_size: int | None = None, show_progress: bool = False) -> np.ndarray:
        """Embed text into the encoder's space (text encoders, CLIP, ConSE) in a shared model call."""
        if self.modality == "text":
            return self.encode(texts)
        plain = isinstance(texts, list) and texts and all(isinstance(t, str) and t.strip() for t in texts)
        if not plain or not self.wrapped.supports_text:
            return self.wrapped.encode_text(texts)  # its own error, or its own checks
        return self._said(list(texts), self._submit("encode_text", list(texts)))

    def _encode(self, items: list[Any], batch_size: int, show_progress: bool) -> np.ndarray:
        return self._said(items, self._submit("encode", items))

    def _cache_bytes(self, item: Any) -> bytes:  # pragma: no cover - the wrapper keeps no cache of its own
        raise NotImplementedError("a CoalescingEncoder has no cache; give cache_dir to the wrapped encoder")

    def _lane(self, kind: str) -> _Lane:
        lane = self._lanes.get(kind)
        if lane is None:
            with self._lanes_lock:
                lane = self._lanes.get(kind)
                if lane is None:
                    run = self.wrapped.encode if kind == "encode" else self.wrapped.encode_text
                    lane = self._lanes[kind] = _Lane(self, run, f"{kind}")
        return lane

    def _submit(self, kind: str, items: list[Any]) -> np.ndarray:
        left = remaining()
        if left is not None and left <= 0:
            raise DeadlineExceeded("the request ran out of time before its inputs were encoded")
        job = _Job(items, expires=None if left is None else time.monotonic() + left)
        lane = self._lane(kind)
        lane.submit(job)
        if not job.done.wait(left):
            job.cancelled = True
            lane.uncount(job)  # no longer waiting: the queue depth drops it now, not when a worker reaches it
            # items: what this call encodes (a zero-shot request's label prompts, say), not the request's inputs
            raise DeadlineExceeded(f"the request ran out of time waiting for the model to encode {len(items)} items")
        if job.error is not None:
            raise job.error
        if job.cancelled:
            raise DeadlineExceeded("the request ran out of time before its inputs were encoded")
        for message in job.warnings:
            warn_user(message)
        return job.result

    @property
    def queued(self) -> int:
        """Items waiting for a model call now, over every lane."""
        return sum(lane.pending for lane in list(self._lanes.values()))

    def close(self) -> None:
        """Stop the worker threads (queued calls are still answered first)."""
        with self._lanes_lock:
            for lane in self._lanes.values():
                lane.close()
            self._lanes = {}

    # -- copies and pickles -------------------------------------------------------------------------------
    def __deepcopy__(self, memo: dict[int, Any]) -> CoalescingEncoder:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.wrapped, self.max_batch_size, self.max_wait_ms, self.gap_ms))


def _rebuild(encoder: Encoder, max_batch_size: int, max_wait_ms: float, gap_ms: float) -> CoalescingEncoder:
    return CoalescingEncoder(encoder, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, gap_ms=gap_ms)


@dataclass(eq=False)
class _Write:
    args: dict[str, Any]
    explicit_ids: bool
    result: Any = None
    error: BaseException | None = None
    done: bool = False


class GroupCommit:
    """Concurrent writes to one target merged into one call (one journal write, one ``fsync``).

    The first caller to arrive while no write is running becomes the leader: it takes every write queued
    so far and applies them with ``apply_many``; the others wait and get their own share of the result.
    When the merged call fails, the writes are applied one by one, so each caller gets its own error.

    Parameters
    ----------
    apply_one : ``apply_one(**args) -> result`` for one write.
    apply_many : ``apply_many(list_of_args) -> list_of_results`` for several compatible writes.
    compatible : ``compatible(args) -> key``: writes with the same key may be merged.
    """

    def __init__(
        self,
        apply_one: Callable[..., Any],
        apply_many: Callable[[list[dict[str, Any]]], list[Any]],
        compatible: Callable[[dict[str, Any]], Any],
    ) -> None:
        self.apply_one, self.apply_many, self.compatible = apply_one, apply_many, compatible
        self._cond = threading.Condition()
        self._pending: list[_Write] = []
        self._leading = False
        self.merged_calls = 0  # calls that carried more than one write (for tests and metrics)

    def submit(self, **args: Any) -> Any:
        write = _Write(args, explicit_ids=False)
        with self._cond:
            self._pending.append(write)
            while not write.done and self._leading:
                self._cond.wait()
            if write.done:
                return self._result(write)
            self._leading = True
            batch, self._pending = self._pending, []
        try:
            self._run(batch)
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()
        return self._result(write)

    @staticmethod
    def _result(write: _Write) -> Any:
        if write.error is not None:
            raise write.error
        return write.result

    def _run(self, batch: list[_Write]) -> None:
        groups: dict[Any, list[_Write]] = {}
        for w in batch:
            groups.setdefault(self.compatible(w.args), []).append(w)
        for writes in groups.values():
            if len(writes) > 1:
                try:
                    results = self.apply_many([w.args for w in writes])
                    self.merged_calls += 1
                except BaseException:  # noqa: BLE001 - retried one by one below, each with its own error
                    results = None
                if results is not None:
                    for w, r in zip(writes, results):
                        w.result, w.done = r, True
                    continue
            for w in writes:
                try:
                    w.result = self.apply_one(**w.args)
                except BaseException as exc:  # noqa: BLE001 - handed to its caller
                    w.error = exc
                w.done = True
