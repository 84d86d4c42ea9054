"""Exceptions raised by fewshot.

Every error a user can cause derives from :class:`FewShotError`, so a caller (and the CLI) can catch one
type. The subclasses also derive from the built-in type a Python user would expect (``ValueError`` for bad
input), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError


class FewShotError(Exception):
    """Base class of every error fewshot raises on purpose."""


class InputError(FewShotError, ValueError):
    """The input is unusable: empty, of the wrong type or shape, or with an unknown label."""


class DimensionError(InputError):
    """Embeddings have a different dimension from the one the model or index was built with."""


class NotFittedError(FewShotError, _SklearnNotFittedError):
    """A model was used before ``fit``."""


class EncoderMismatchError(FewShotError):
    """A saved model or index was built with a different encoder than the one it is used with."""


class CorruptFileError(FewShotError):
    """A saved file is missing, truncated, altered, or not a fewshot save at all."""


class SaveNotFoundError(FewShotError, FileNotFoundError):
    """Nothing is saved at the path given (no such folder, or a file where a save's folder should be)."""


class AccessError(FewShotError, PermissionError):
    """A save, or the folder to save it in, that this process may not read or write."""


class ModelLoadError(FewShotError, OSError):
    """A model could not be loaded (a wrong path, or a hub name while offline)."""


class MissingDependencyError(FewShotError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class LockTimeoutError(FewShotError, TimeoutError):
    """Another writer held a save folder's lock for longer than the caller would wait."""


class ConcurrentWriteError(FewShotError):
    """A save would replace one made by another writer since this object was loaded (a lost update)."""


class SaveExistsError(ConcurrentWriteError, FileExistsError):
    """A save would replace another save in a folder this object was neither loaded from nor saved to."""


class FewShotWarning(UserWarning):
    """Input that fewshot accepts but that is probably not what the user meant (it says why)."""


class InputTypeError(InputError, TypeError):
    """Input of a type that cannot be used at all (a dict where numbers belong); also a ``TypeError``."""


_COLLECTING: ContextVar[tuple[list[str], bool, Any] | None] = ContextVar("fewshot_warnings_said", default=None)


@contextmanager
def collected_warnings(issue: bool = True) -> Iterator[list[str]]:
    """A list that receives the message of every :class:`FewShotWarning` issued through :func:`warn_user` in
    this thread (or task) while the block runs. They are issued as usual too (each message once per block),
    and reach any block around this one, unless ``issue`` is False (a caller that decides afterwards what to
    say: nothing goes further). The service answers with them, since its clients never see the server's
    warnings, and unlike ``warnings.catch_warnings`` this is safe beside other threads."""
    said: list[str] = []
    token = _COLLECTING.set((said, issue, _COLLECTING.get()))
    try:
        yield said
    finally:
        _COLLECTING.reset(token)


def warns_once(method: Any) -> Any:
    """Decorate a public method so that each distinct warning it leads to is issued once per call."""
    import functools

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with collected_warnings():
            return method(*args, **kwargs)

    return wrapper


def warn_user(message: str) -> None:
    """Issue a :class:`FewShotWarning` attributed to the first caller outside this package (whatever path
    led there: a head's method reached through a classifier, or called directly)."""
    import os
    import sys
    import warnings

    collecting = _COLLECTING.get()
    if collecting is not None and message in collecting[0]:
        return  # said already in this block (one fit reaching the same check by several paths): once is enough
    while collecting is not None:
        said, issue, outer = collecting
        if message not in said:
            said.append(message)
        if not issue:
            return
        collecting = outer

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is the frame that called this function
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, FewShotWarning, stacklevel=level)
