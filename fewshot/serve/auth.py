"""API keys: a file of ``KEY SCOPE`` lines, kept in memory only as SHA-256 digests.

The key file has one key a line followed by its scope, ``read`` (list, predict, zero-shot, search, info) or
``write`` (everything ``read`` may, plus fitting, adding, removing and deleting). Blank lines and lines
starting with ``#`` are skipped. A client sends its key as ``Authorization: Bearer KEY`` or ``X-API-Key:
KEY``. A missing or unknown key is answered 401, a read key on a write route 403. The comparison runs
``hmac.compare_digest`` over the digest of every known key, so its time does not depend on which key (if
any) matched.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from fewshot.errors import InputError
from fewshot.serve.errors import ApiError

SCOPES = ("read", "write")
MIN_KEY_LENGTH = 16


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_key_file(path: str | Path) -> dict[str, str]:
    """The key file's keys as {SHA-256 hex digest: scope}; a bad line is an :class:`InputError` naming it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such API key file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the API key file ({exc})") from exc
    keys: dict[str, str] = {}
    lines: dict[str, int] = {}  # digest -> the line that gave it
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in SCOPES:
            raise InputError(f"{path}, line {number}: expected 'KEY read' or 'KEY write'")
        if len(parts[0]) < MIN_KEY_LENGTH:
            raise InputError(f"{path}, line {number}: a key must be at least {MIN_KEY_LENGTH} characters long")
        key = digest(parts[0])
        if key in keys and keys[key] != parts[1]:
            raise InputError(
                f"{path}, line {number}: this key is on line {lines[key]} too, as {keys[key]!r}; give a key one scope"
            )
        keys[key], lines[key] = parts[1], number
    if not keys:
        raise InputError(f"{path}: the API key file holds no key")
    return keys


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def check(keys: dict[str, str], key: str | None, needed: str) -> None:
    """Raise the 401 or 403 :class:`ApiError` unless ``key`` grants ``needed`` (no keys: all is allowed)."""
    if not keys:
        return
    if key is None:
        raise ApiError(
            401,
            "unauthorized",
            "this server needs an API key: send 'Authorization: Bearer KEY'",
            None,
            {"WWW-Authenticate": "Bearer"},
        )
    given = digest(key)
    scope = None
    for stored, stored_scope in keys.items():  # no early exit: every digest is compared
        if hmac.compare_digest(given, stored):
            scope = stored_scope
    if scope is None:
        raise ApiError(401, "unauthorized", "the API key is not valid", None, {"WWW-Authenticate": "Bearer"})
    if needed == "write" and scope != "write":
        raise ApiError(403, "forbidden", "this API key may read only; this route needs a write key", None)
