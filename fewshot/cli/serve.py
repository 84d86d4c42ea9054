"""``fewshot serve``: the HTTP service (FastAPI on uvicorn, from the ``serve`` extra).

Without ``--api-keys`` the server listens on a loopback address only, and answers requests whose ``Host`` is a
loopback name (or one ``--allowed-host`` adds); another ``--host`` is refused unless ``--insecure-open`` says that
an open server is wanted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fewshot.errors import InputError


def add_arguments(sp: argparse.ArgumentParser) -> None:
    """The options of ``fewshot serve`` (also those of ``python -m fewshot.serve``)."""
    from fewshot.serve.settings import ServeSettings

    d = ServeSettings(root=".")
    sp.add_argument("--root", required=True, help="folder holding models/<name>/ and indexes/<name>/ (made if missing)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sp.add_argument("--api-keys", metavar="FILE", help="file of 'KEY read|write' lines; clients must send a key")
    sp.add_argument(
        "--insecure-open",
        action="store_true",
        help="allow a non-loopback --host without --api-keys (anyone who reaches it may read and write)",
    )
    sp.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name the server answers besides loopback ones (repeat for more). Without --api-keys only "
        "those are answered, so that web pages cannot reach the server through DNS rebinding; with keys, giving "
        "it limits the server to them",
    )
    sp.add_argument(
        "--encoder",
        action="append",
        default=[],
        metavar="SPEC",
        help="another encoder clients may name (e.g. clip:ViT-B-32:/path/model.pt); text, image and conse always",
    )
    sp.add_argument("--max-batch-size", type=int, default=d.max_batch_size, help="items per model call (default 32)")
    sp.add_argument(
        "--max-wait-ms", type=float, default=d.max_wait_ms, help="longest wait for requests to batch with (default 10)"
    )
    sp.add_argument(
        "--batch-gap-ms", type=float, default=d.batch_gap_ms, help="stop waiting after this quiet gap (default 2)"
    )
    sp.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="request body limit (default 2 MB)")
    sp.add_argument(
        "--body-timeout", type=float, default=d.body_timeout_s, help="seconds to send a request body (default 30)"
    )
    sp.add_argument("--max-inputs", type=int, default=d.max_inputs, help="inputs per request (default 256)")
    sp.add_argument("--max-queue", type=int, default=d.max_queue, help="requests in progress before 429 (default 256)")
    sp.add_argument("--max-labels", type=int, default=d.max_labels, help="labels per zero-shot request (default 100)")
    sp.add_argument(
        "--request-timeout", type=float, default=d.request_timeout_s, help="seconds before 503 (default 30)"
    )
    sp.add_argument("--threads", type=int, default=d.threads, help="worker threads (default 64)")
    sp.add_argument(
        "--lock-timeout",
        type=float,
        default=d.lock_timeout_s,
        help="seconds a write waits for a held index or model folder (default 2)",
    )
    sp.add_argument(
        "--release-after",
        type=float,
        default=d.release_after_s,
        help="seconds with no write after which the server lets go of an index's lock, so that other "
        "processes may write to it (default 30)",
    )
    sp.add_argument(
        "--no-preload",
        action="store_true",
        help="load the text model (and embed its vocabulary for zero-shot labels) on first use, not at start-up",
    )
    sp.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level on stderr (default info: one line a request, with its method, path, status and "
        "milliseconds; warning: only what goes wrong)",
    )


def settings_from_args(a: argparse.Namespace) -> Any:
    from fewshot.cli.common import check_encoder_spec
    from fewshot.serve.auth import read_key_file
    from fewshot.serve.settings import DEFAULT_ENCODERS, ServeSettings, binds_loopback

    keys = read_key_file(a.api_keys) if a.api_keys else {}
    open_host = not binds_loopback(a.host)
    if not keys and open_host and not a.insecure_open:
        raise InputError(
            f"refusing to listen on {a.host} without --api-keys: anyone who can reach it could read and change "
            "every model and index. Give --api-keys FILE, listen on 127.0.0.1, or pass --insecure-open"
        )
    if not 0 < a.port < 65536:
        raise InputError(f"--port must be between 1 and 65535, got {a.port}")
    for spec in a.encoder:  # at start-up, not in a client's answer
        check_encoder_spec(spec)
    return ServeSettings(
        root=a.root,
        max_batch_size=a.max_batch_size,
        max_wait_ms=a.max_wait_ms,
        batch_gap_ms=a.batch_gap_ms,
        max_body_bytes=a.max_body_bytes,
        body_timeout_s=a.body_timeout,
        max_inputs=a.max_inputs,
        max_queue=a.max_queue,
        max_labels=a.max_labels,
        request_timeout_s=a.request_timeout,
        threads=a.threads,
        lock_timeout_s=a.lock_timeout,
        release_after_s=a.release_after,
        encoders=tuple(dict.fromkeys([*DEFAULT_ENCODERS, *a.encoder])),
        api_keys=keys,
        preload=not a.no_preload,
        # an open server answers any Host; one on a loopback address keeps refusing others (DNS rebinding)
        allowed_hosts=("*",) if a.insecure_open and open_host and not keys else tuple(a.allowed_host) or None,
    )


def cmd_serve(a: argparse.Namespace) -> int:
    from fewshot.serve import run
    from fewshot.serve.settings import binds_loopback

    settings = settings_from_args(a)
    if not settings.api_keys and not binds_loopback(a.host):
        print(f"fewshot: warning: serving {a.host} with no API keys (--insecure-open)", file=sys.stderr)
    run(settings, host=a.host, port=a.port, log_level=a.log_level)
    return 0


def register(subparsers: Any) -> None:
    sp = subparsers.add_parser("serve", help="serve models and indexes over HTTP (pip install 'fewshot[serve]')")
    add_arguments(sp)
    sp.set_defaults(func=cmd_serve)
