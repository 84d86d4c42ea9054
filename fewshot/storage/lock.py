"""An exclusive writer lock on a save folder: one writer at a time, across processes and threads.

The lock is an advisory ``flock`` on ``<folder>/.fewshot.lock``, held for the whole of a writer's
load-modify-save (or just its save). It is released when the holder closes it, and by the kernel when the
process dies, so a ``kill -9`` never leaves a stale lock behind. The holder writes its process id and command
line into the file, so that a writer that waits in vain can say who holds it (a server, say). Each acquisition
opens the file anew, so two threads of one process exclude each other too. Readers take no lock: a save never
changes a file a reader may be reading (see :mod:`fewshot.storage.bundle`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fewshot.errors import LockTimeoutError

LOCK_NAME = ".fewshot.lock"
DEFAULT_TIMEOUT = 60.0  # seconds a writer waits for another to finish before giving up
_wait = threading.local()


@contextlib.contextmanager
def lock_wait(seconds: float) -> Iterator[None]:
    """Within this block, this thread's folder locks that are given no timeout of their own (a model's save,
    say) wait at most ``seconds`` instead of :data:`DEFAULT_TIMEOUT` (a server's lock timeout)."""
    previous = getattr(_wait, "seconds", None)
    _wait.seconds = seconds
    try:
        yield
    finally:
        _wait.seconds = previous


try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _holder(fd: int) -> str:
    """What the lock's holder wrote into the lock file when it took it ("process 123 (its command line)")."""
    try:
        return os.pread(fd, 512, 0).decode("utf-8", errors="replace").strip()
    except OSError:
        return ""


class FolderLock:
    """The writer lock of one save folder; a context manager.

    Parameters
    ----------
    folder : the save folder (created if missing).
    timeout : seconds to wait for another writer; 0 fails at once. On expiry,
        :class:`~fewshot.errors.LockTimeoutError` names the folder. None (default): :data:`DEFAULT_TIMEOUT`,
        or the seconds of an enclosing :func:`lock_wait` of this thread.
    """

    def __init__(self, folder: str | Path, timeout: float | None = None) -> None:
        self.folder = Path(folder)
        if timeout is None:
            timeout = getattr(_wait, "seconds", None)
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                holder = _holder(fd)
                os.close(fd)
                raise LockTimeoutError(
                    f"{self.folder} is being written by another process or thread (its lock {LOCK_NAME} has been "
                    f"held for over {self.timeout:g} s{', by ' + holder if holder else ''}); try again when it is "
                    "done"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        self._fd = fd
        with contextlib.suppress(OSError):  # who holds it, for the message of a writer that waits in vain
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:200]})".encode(errors="replace"), 0)
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                _unlock(fd)
            finally:
                os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a lock object dropped without release: free the descriptor
        try:
            self.release()
        except Exception:
            pass
