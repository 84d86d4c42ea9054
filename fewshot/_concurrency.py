"""A readers-writer lock: many readers at once, or one writer, never both.

Writers are preferred (a waiting writer blocks new readers), so a stream of searches cannot starve an add.
Both sides are reentrant within a thread (a reader may call another reading method, a writer may read), so
public methods can take the lock without deadlocking on each other. The lock pickles and deep-copies as a
fresh, free lock: it guards one object in one process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None  # thread id of the writer
        self._waiting_writers = 0
        self._local = threading.local()

    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    @contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._writer == me or self._depth():  # already inside this lock on this thread
            self._local.depth = self._depth() + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._cond:
            while self._writer is not None or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._writer == me:
            yield
            return
        if self._depth():
            raise RuntimeError("a thread holding a read lock cannot take the write lock (it would deadlock)")
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = me
        try:
            yield
        finally:
            with self._cond:
                self._writer = None
                self._cond.notify_all()

    def __reduce__(self):
        return (RWLock, ())

    def __deepcopy__(self, memo: dict) -> RWLock:
        return RWLock()
