"""An HTTP service for classify, tag and search: ``fewshot serve --root DIR`` (the ``serve`` extra).

:func:`create_app` builds the FastAPI application for :class:`ServeSettings`; :func:`run` serves it with
uvicorn. The routes are thin: each maps to one library call on a model or index loaded from the root on first
use, run in a worker thread, with concurrent requests sharing model calls
(:class:`~fewshot.serve.batching.CoalescingEncoder`).
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Any

from fewshot.errors import InputError
from fewshot.serve.settings import NAME_PATTERN, ServeSettings

__all__ = ["NAME_PATTERN", "ServeSettings", "check_port", "check_root", "create_app", "run"]


def _require() -> None:
    from fewshot.errors import MissingDependencyError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"the HTTP service needs {exc.name}: pip install 'fewshot[serve]'") from exc


def check_root(root: Path) -> None:
    """Raise unless ``root`` is a folder, or a folder can be made there (the service makes it on start-up):
    uvicorn would report the failure as a traceback and "Application startup failed"."""
    from fewshot.storage.bundle import check_folder_place

    if root.exists() and not root.is_dir():
        raise InputError(f"the service root {root} is a file, not a folder")
    if not root.exists():
        check_folder_place(root, f"cannot make the service root {root}")


def check_port(host: str, port: int) -> None:
    """Raise unless ``host``:``port`` can be listened on now (uvicorn would log the failure among its start-up
    lines and exit with status 3)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn binds it
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(
                    f"port {port} on {host} is already in use (another server?); give another --port"
                ) from None
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def create_app(settings: ServeSettings) -> Any:
    """The FastAPI application serving ``settings.root``."""
    _require()
    from fewshot.serve.app import create_app as _create_app

    return _create_app(settings)


def run(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``settings`` with uvicorn on ``host``:``port`` until interrupted."""
    _require()
    import uvicorn

    check_root(settings.root)
    check_port(host, port)

    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, log_config=log_config(log_level))


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging set-up, with fewshot's loggers on its stderr handler at ``level``: the service's
    warnings, and one line a request at info (``fewshot.serve.requests``: method, path, status, milliseconds;
    no query string, headers or body). uvicorn's own access log is off, since it prints the query string."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["fewshot"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config
