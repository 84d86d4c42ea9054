"""The service's settings: every limit is a named setting with a documented default."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from fewshot.errors import InputError

# names of models and indexes in URLs: letters, digits, "_", "." and "-", at most 64, not starting with
# "." or "-" (so no "..", no hidden folders, no option-like names, and never a path separator)
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
NAME_RE = re.compile(NAME_PATTERN)

# files in the package or made from them (ONNX exports, the distilled static model), so any client may name them
DEFAULT_ENCODERS = ("text", "text:onnx", "text:onnx-int8", "static", "image", "image:onnx", "conse", "conse:onnx")


def _host_key(host: str) -> str:
    """A host name as compared: lower case, without a final dot or IPv6 brackets."""
    return host.strip().lower().rstrip(".").strip("[]")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address (bracketed or not), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def binds_loopback(host: str) -> bool:
    """Whether listening on ``host`` can only be reached from this machine: a loopback address, or
    ``localhost`` (other names, ``*.localhost`` among them, resolve as the system's resolver says)."""
    ip = _ip(host)
    return host == "localhost" or (ip is not None and ip.is_loopback)


def is_loopback_name(host: str) -> bool:
    """Whether ``host`` named in a request (an address, bracketed or not, or a name) can only mean this
    machine: ``*.localhost`` too (RFC 6761: always the loopback address)."""
    host = host.lower().rstrip(".")
    return host.endswith(".localhost") or binds_loopback(host)


@dataclass
class ServeSettings:
    """What ``fewshot serve`` is configured with.

    Parameters
    ----------
    root : the folder holding ``models/<name>/`` (saved classifiers) and ``indexes/<name>/`` (saved indexes).
    max_batch_size : most items one coalesced model call takes (default 32).
    max_wait_ms : the longest a request waits for others to join its model call (default 10 ms); requests
        that arrive while the model runs join the next call without waiting.
    batch_gap_ms : the batcher stops waiting sooner when no request arrived for this long (default 2 ms), so
        a lone request waits 2 ms and a burst from many clients is collected whole.
    max_body_bytes : largest request body; a larger one is answered 413 (default 2 MB).
    body_timeout_s : the time a client has to send the whole request body, from its first byte to its last;
        a slower one is answered 408 and its connection closed (default 30 s), so that clients that declare a
        body and send it slowly, or not at all, cannot hold connections open.
    max_inputs : most inputs, items, queries or ids in one request; more is answered 413 (default 256).
    max_queue : most requests doing model or index work at once (running or waiting); past it the answer
        is 429 with ``Retry-After`` (default 256).
    retry_after_s : the ``Retry-After`` a 429 carries, in seconds (default 1).
    request_timeout_s : a request still working after this many seconds is answered 503 and its model
        work is dropped, nothing of it written; a write already under way is waited for and answered as it
        ends instead (default 30).
    threads : worker threads that run library calls off the event loop (default 64; each waiting request
        holds one while its batch is encoded).
    lock_timeout_s : how long a write waits for an index or model folder that another process holds
        (default 2 s; then 409).
    release_after_s : an index this server has written to is held (its writer lock taken) until it has had no
        write for this many seconds; then the CLI and other processes may write to it (default 30).
    refresh_s : how often a read-only copy of an index held by another process checks the folder for
        changes (default 1 s).
    zeroshot_cache : zero-shot label sets kept ready (label vectors computed once; default 64).
    max_labels : most labels in one zero-shot request (default 100).
    max_image_pixels : largest decoded image, width x height (default 40 million).
    encoders : encoder specs a client may name when it fits a model or creates an index (by default the
        bundled models on each backend: ``text``, ``text:onnx``, ``text:onnx-int8``, ``static``, ``image``,
        ``image:onnx``, ``conse``, ``conse:onnx``; CLIP checkpoints and local model2vec folders only when the
        operator lists them, since such a spec names files on the server).
    api_keys : SHA-256 hex digest of each accepted key -> its scope (``read`` or ``write``); empty means
        no authentication (the CLI then allows loopback addresses only).
    preload : load the default text encoder and its zero-shot vocabulary at start-up (``/ready`` answers 503
        until they are loaded).
    allowed_hosts : the names a request's ``Host`` header may give. None (default): with no ``api_keys``,
        loopback names only (``localhost``, ``*.localhost``, ``127.0.0.1`` and the rest of 127/8, ``[::1]``),
        so that a web page the user visits cannot reach a keyless server by pointing its own domain at
        127.0.0.1 (DNS rebinding); with keys, any. A tuple adds those names to the loopback ones; ``"*"``
        allows any (what ``--insecure-open`` sets). A refused request is answered 400 ``untrusted_host``.
    """

    root: Path
    max_batch_size: int = 32
    max_wait_ms: float = 10.0
    batch_gap_ms: float = 2.0
    max_body_bytes: int = 2 * 1024 * 1024
    body_timeout_s: float = 30.0
    max_inputs: int = 256
    max_queue: int = 256
    retry_after_s: int = 1
    request_timeout_s: float = 30.0
    threads: int = 64
    lock_timeout_s: float = 2.0
    release_after_s: float = 30.0
    refresh_s: float = 1.0
    zeroshot_cache: int = 64
    max_labels: int = 100
    max_image_pixels: int = 40_000_000
    encoders: tuple[str, ...] = DEFAULT_ENCODERS
    api_keys: dict[str, str] = field(default_factory=dict)
    preload: bool = True
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        counts = (
            "max_batch_size",
            "max_body_bytes",
            "max_inputs",
            "max_queue",
            "threads",
            "zeroshot_cache",
            "max_labels",
        )
        for name in counts:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        timings = (
            "max_wait_ms",
            "batch_gap_ms",
            "request_timeout_s",
            "lock_timeout_s",
            "release_after_s",
            "refresh_s",
            "body_timeout_s",
        )
        for name in timings:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InputError(f"{name} must be a non-negative number, got {value!r}")
        if self.body_timeout_s == 0:
            raise InputError("body_timeout_s must be positive: no body arrives in no time")
        if self.allowed_hosts is not None:
            if isinstance(self.allowed_hosts, str) or not all(isinstance(h, str) and h for h in self.allowed_hosts):
                raise InputError(f"allowed_hosts must be a tuple of host names, got {self.allowed_hosts!r}")
            self.allowed_hosts = tuple(_host_key(h) for h in self.allowed_hosts)
            ported = [h for h in self.allowed_hosts if ":" in h and _ip(h) is None]
            if ported:
                raise InputError(f"allowed_hosts takes host names without a port, got {ported[0]!r}")
        for scope in self.api_keys.values():
            if scope not in ("read", "write"):
                raise InputError(f"an API key's scope must be read or write, got {scope!r}")

    def host_allowed(self, host: str) -> bool:
        """Whether a request whose ``Host`` header names ``host`` (port left off) may be answered."""
        if self.allowed_hosts is None and self.api_keys:
            return True
        allowed = self.allowed_hosts or ()
        return "*" in allowed or _host_key(host) in allowed or is_loopback_name(host)

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def indexes_dir(self) -> Path:
        return self.root / "indexes"
