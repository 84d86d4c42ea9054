"""Errors the service answers with: every one a JSON body ``{"error": {"code", "message", "field"}}``.

A client mistake is a 4xx that names the problem; 503 means busy or too slow (try again); a 500 is a bug
(or a damaged save on the server's disk, code ``corrupt_save``, or a folder it may not read or write,
``storage_access``), never an answer to input.
"""

from __future__ import annotations

from typing import Any

from fewshot.errors import (
    AccessError,
    ConcurrentWriteError,
    CorruptFileError,
    DimensionError,
    EncoderMismatchError,
    FewShotError,
    InputError,
    LockTimeoutError,
    MissingDependencyError,
    ModelLoadError,
    NotFittedError,
)


class ApiError(FewShotError):
    """An error with its HTTP status, a stable machine-readable ``code`` and the request ``field`` at fault."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class DeadlineExceeded(FewShotError, TimeoutError):
    """A request's time ran out before it wrote anything (while its work waited for the model, or just
    before its first write); the work is dropped."""


def from_library(exc: FewShotError, field: str | None = None) -> ApiError:
    """The answer for an error the library raised while serving a request whose input was ``field``."""
    message = str(exc)
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DeadlineExceeded):
        return ApiError(503, "timeout", message, None, {"Retry-After": "1"})
    if isinstance(exc, LockTimeoutError):
        return ApiError(409, "locked", message, None, {"Retry-After": "1"})
    if isinstance(exc, ConcurrentWriteError):  # the library's advice (load it again) is the server's to follow
        message = (
            "another writer (another server on this root, or a program using the library) saved it while this "
            "request ran, each time the server tried; nothing of this request was saved: send it again"
        )
        return ApiError(409, "conflict", message, None, {"Retry-After": "1"})
    if isinstance(exc, EncoderMismatchError):
        return ApiError(409, "encoder_mismatch", message, field)
    if isinstance(exc, CorruptFileError):
        return ApiError(500, "corrupt_save", message, None)
    if isinstance(exc, AccessError):  # the server's own folders: not the client's doing
        return ApiError(500, "storage_access", message, None)
    if isinstance(exc, (MissingDependencyError, ModelLoadError)):
        return ApiError(503, "unavailable", message, None)
    if isinstance(exc, DimensionError):
        return ApiError(400, "bad_dimension", message, field)
    if isinstance(exc, NotFittedError):
        return ApiError(409, "not_fitted", message, None)
    if isinstance(exc, InputError):
        return ApiError(400, "bad_input", message, field)
    return ApiError(400, "bad_request", message, field)


def not_found(kind: str, name: str) -> ApiError:
    return ApiError(404, "not_found", f"no {kind} named {name!r}", "name")
