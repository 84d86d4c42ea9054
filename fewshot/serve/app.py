"""The FastAPI application: routes map to one library call each, run off the event loop.

Every route that touches a model or an index runs its library call in a worker thread
(:meth:`Service.work`), under a bound on requests in flight (429 past it) and a timeout (503 past it, the
request's model work dropped and nothing of it written; a write under way is waited for instead). The event
loop only parses, validates and answers, so ``/health`` answers while the model runs. Concurrent requests
share model calls through the registry's coalescing encoders.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import os
import re
import time
import urllib.parse
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from fewshot import __version__
from fewshot.errors import FewShotError, InputError, collected_warnings
from fewshot.prompts import FRAME_RULE, is_frame
from fewshot.serve import auth
from fewshot.serve import schemas as s
from fewshot.serve.batching import CoalescingEncoder, Deadline, begin_write, deadline
from fewshot.serve.errors import ApiError, from_library
from fewshot.serve.inputs import decode_images, field_of, item_field, refuse_images, try_image
from fewshot.serve.metrics import Metrics
from fewshot.serve.registry import Registry, check_name
from fewshot.serve.settings import NAME_PATTERN, ServeSettings
from fewshot.storage.lock import lock_wait

log = logging.getLogger("fewshot.serve")
requests_log = logging.getLogger("fewshot.serve.requests")  # one line a request (the path, never the query)
STATIC = Path(__file__).parent / "static"
ERRORS = {
    400: {"model": s.ErrorResponse, "description": "Bad input: the error names the field."},
    401: {"model": s.ErrorResponse, "description": "Missing or wrong API key."},
    403: {"model": s.ErrorResponse, "description": "A read key on a write route."},
    404: {"model": s.ErrorResponse, "description": "No such model or index."},
    408: {"model": s.ErrorResponse, "description": "The body did not arrive within the body timeout."},
    409: {"model": s.ErrorResponse, "description": "Conflict: the folder is held by another process, or exists."},
    413: {"model": s.ErrorResponse, "description": "Body over the size limit, or too many inputs."},
    422: {"model": s.ErrorResponse, "description": "A field has the wrong type or shape."},
    429: {"model": s.ErrorResponse, "description": "Too much work queued: retry after Retry-After seconds."},
    500: {
        "model": s.ErrorResponse,
        "description": "A saved model or index under the root is damaged (corrupt_save), or cannot be read or "
        "written (storage_access).",
    },
    503: {
        "model": s.ErrorResponse,
        "description": "The request ran past its timeout and was stopped before it changed anything (a write "
        "under way is waited for instead).",
    },
}
READ_ERRORS = {code: v for code, v in ERRORS.items() if code != 408}  # a GET's body is never read: no 408


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _prepare(inputs: list[str], encoder: Any, field: str, max_pixels: int, what: str = "this model") -> list[Any]:
    """Texts as they are; for an image encoder, base64 strings decoded to images."""
    if encoder is not None and encoder.modality == "image":
        return decode_images(inputs, field, max_pixels)
    return refuse_images(inputs, field, what)


class Service:
    """The state behind the routes: settings, registry, worker threads, metrics and the in-flight count."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = Metrics(
            queue_source=self._queue_depths,
            inflight_source=lambda: self.inflight,
            group_commit_source=lambda: self.registry.merged_writes(),
        )
        self.registry = Registry(settings, observer=self._observe_batch)
        self.executor = concurrent.futures.ThreadPoolExecutor(settings.threads, thread_name_prefix="fewshot-serve")
        self.inflight = 0  # only touched on the event loop
        self.preload: concurrent.futures.Future | None = None

    def _observe_batch(self, encoder: CoalescingEncoder, items: int, queued: int) -> None:
        self.metrics.batch.observe(items, encoder.describe_source())

    def _queue_depths(self) -> dict[tuple[str, ...], float]:
        return {(e.describe_source(),): float(e.queued) for e in self.registry.encoders().values()}

    def _call(self, ticket: Deadline, fn: Callable[..., Any], args: tuple) -> Any:
        # the request's time, counted from its arrival; any folder lock the library takes waits the server's
        # lock timeout (a model's save too); the library's warnings go to the client, and not to the server's
        # stderr (they quote the client's texts), but for the debug log
        with deadline(ticket), lock_wait(self.settings.lock_timeout_s), collected_warnings(issue=False) as said:
            out = fn(*args)
        for message in said:
            log.debug("warned the client: %s", message)
        return {**out, "warnings": said} if isinstance(out, dict) else out  # an answer without them drops them

    async def work(self, fn: Callable[..., Any], *args: Any, field: str | None = None) -> Any:
        """Run ``fn(*args)`` in a worker thread: 429 past ``max_queue`` requests in flight, 503 past the timeout,
        and a library error as a 4xx naming ``field``."""
        if self.inflight >= self.settings.max_queue:
            self.metrics.rejected.inc("overload")
            raise ApiError(
                429,
                "overloaded",
                f"the server has {self.inflight} requests in progress (its limit); retry shortly",
                None,
                {"Retry-After": str(self.settings.retry_after_s)},
            )
        self.inflight += 1
        try:
            ticket = Deadline(self.settings.request_timeout_s)
            future = asyncio.get_running_loop().run_in_executor(self.executor, self._call, ticket, fn, args)
            try:
                done, _ = await asyncio.wait({future}, timeout=self.settings.request_timeout_s)
                if not done and ticket.abandon():
                    future.cancel()  # its thread finds the ticket abandoned before any write, and stops there
                    raise ApiError(
                        503,
                        "timeout",
                        f"the request took longer than {self.settings.request_timeout_s:g} s; it was stopped "
                        "before it changed anything",
                        None,
                        {"Retry-After": str(self.settings.retry_after_s)},
                    )
                return await future  # done, or writing: a write under way is waited for and answered as it ends
            except ApiError:
                raise
            except FewShotError as exc:
                where, message = field_of(str(exc), field or "body")
                if field == "items":  # an add-items request: the library's columns are fields of its items
                    where = item_field(where)
                err = from_library(exc, where)
                if err.status < 500 and err.message == str(exc):  # not one the service words itself
                    err.message = message
                raise err from None
        finally:
            self.inflight -= 1

    def limit(self, n: int, field: str) -> None:
        if n > self.settings.max_inputs:
            raise ApiError(
                413,
                "too_many_inputs",
                f"{field} has {n} entries; this server takes at most {self.settings.max_inputs} per request",
                field,
            )

    # -- the library calls behind the routes ---------------------------------------------------------------
    def predict(self, name: str, inputs: list[str]) -> dict[str, Any]:
        clf = self.registry.model(name).model
        X = _prepare(inputs, clf.encoder_, "inputs", self.settings.max_image_pixels)
        labels, best, proba = clf.predict_with_scores(X)
        return {"predictions": self._predictions(clf, labels, best, proba)}

    @staticmethod
    def _predictions(clf: Any, labels: np.ndarray, best: np.ndarray, proba: np.ndarray) -> list[dict[str, Any]]:
        # score keys as the label is written in JSON (true, not Python's True), so a client can match them
        classes = [c if isinstance(c, str) else json.dumps(_plain(c)) for c in clf.classes_.tolist()]
        threshold = getattr(clf, "threshold_", None)
        out = []
        for i in range(len(labels)):
            row = proba[i]
            abstained = threshold is not None and best[i] < threshold
            out.append(
                {
                    "label": None if abstained else _plain(labels[i]),
                    "score": float(best[i]),
                    "probability": float(row.max()),
                    "probabilities": dict(zip(classes, map(float, row))),
                }
            )
        return out

    def model_info(self, name: str) -> dict[str, Any]:
        entry = self.registry.model(name)
        clf = entry.model
        return {
            "name": name,
            "type": entry.kind,
            "classes": [_plain(c) for c in clf.classes_.tolist()],
            "head": clf.head_.name,
            "encoder": clf.encoder_.identity,
            "threshold": getattr(clf, "threshold_", None),
        }

    def fit(self, name: str, req: s.FitRequest) -> dict[str, Any]:
        encoder = self.registry.encoder_for_spec(req.encoder)
        X = _prepare(req.inputs, encoder, "inputs", self.settings.max_image_pixels)
        try:
            entry = self.registry.fit_model(
                name,
                X,
                list(req.labels),
                req.encoder,
                head=req.head,
                head_params=req.head_params,
                abstain=req.abstain,
                calibrate=req.calibrate,
                lexical="auto" if req.lexical else False,
            )
        except (TypeError, ValueError) as exc:  # head_params the head does not take
            if isinstance(exc, FewShotError) or not req.head_params:
                raise
            raise ApiError(400, "bad_input", f"the head refused its parameters: {exc}", "head_params") from None
        return {"name": name, "classes": [_plain(c) for c in entry.model.classes_.tolist()], "examples": len(X)}

    def add_examples(self, name: str, req: s.ExamplesRequest) -> dict[str, Any]:
        entry = self.registry.model(name)
        X = _prepare(req.inputs, entry.model.encoder_, "inputs", self.settings.max_image_pixels)
        entry = self.registry.add_examples(name, X, list(req.labels))
        return {"name": name, "classes": [_plain(c) for c in entry.model.classes_.tolist()], "examples": len(X)}

    def zeroshot(self, req: s.ZeroShotRequest) -> dict[str, Any]:
        # options of the other mode are refused, not ignored
        if req.multi_label and req.abstain is not None:
            raise ApiError(
                400,
                "bad_input",
                "abstain is for single-label predictions; multi_label tags give none where nothing fits",
                "abstain",
            )
        if req.abstain == "auto":
            raise ApiError(
                400,
                "bad_input",
                "abstain 'auto' sets its threshold from unlabelled texts of the task, which a zero-shot request does "
                "not carry: give a cosine threshold (such as 0.3), or fit a model, whose 'auto' uses its examples",
                "abstain",
            )
        if req.abstain is not None and not math.isfinite(req.abstain):
            raise ApiError(
                400, "bad_input", f"abstain is a cosine threshold, a finite number; got {req.abstain}", "abstain"
            )
        for name in ("threshold", "top_k", "margin"):
            if not req.multi_label and getattr(req, name) is not None:
                raise ApiError(400, "bad_input", f"{name} shapes multi_label tags; set multi_label or drop it", name)
        if req.threshold is not None and req.margin is not None:
            raise ApiError(
                400,
                "bad_input",
                "give threshold (a fixed cosine) or margin (relative to the best label), not both",
                "margin",
            )
        if not is_frame(req.frame):
            raise ApiError(400, "bad_input", f"frame must be {FRAME_RULE}, got {req.frame!r}", "frame")
        labels = req.labels if isinstance(req.labels, dict) else list(req.labels)
        zs = self.registry.zeroshot(labels, req.encoder, req.abstain, req.expand, req.frame, req.pool)
        X = _prepare(req.inputs, zs.encoder_, "inputs", self.settings.max_image_pixels)
        if req.multi_label:
            tags = zs.tag(X, threshold=req.threshold, top_k=req.top_k, margin=req.margin)
            return {"predictions": [{"tags": [{"label": str(t), "score": sc} for t, sc in row]} for row in tags]}
        labels_out, best, proba = zs.predict_with_scores(X)
        return {"predictions": self._predictions(zs, labels_out, best, proba)}

    def create_index(self, name: str, req: s.IndexCreateRequest) -> dict[str, Any]:
        self.registry.create_index(name, req.encoder, req.kind)
        return self.index_info(name)

    def index_info(self, name: str) -> dict[str, Any]:
        with self.registry.index(name) as entry:
            info = entry.index.info()
            info["name"] = name
            info["writable"] = entry.writable
            return info

    def add_items(self, name: str, req: s.AddItemsRequest) -> dict[str, Any]:
        items = req.items
        given = [it.id is not None for it in items]
        if any(given) and not all(given):
            raise ApiError(400, "bad_input", "give an id for every item or for none (they are then numbered)", "items")
        with self.registry.index(name, write=True) as entry:
            encoder = entry.index.encoder
            texts = [it.text for it in items]
            image = encoder is not None and encoder.modality == "image"
            if image:
                X = decode_images(texts, "items", self.settings.max_image_pixels, ".text")
            else:
                X = refuse_images(texts, "items", "this index", ".text")
            try:
                ids = self.registry.add_items(
                    entry,
                    X,
                    ids=[it.id for it in items] if all(given) else None,
                    labels=[it.label for it in items],
                    metadata=[it.metadata or {} for it in items],
                    items=[None] * len(items) if image else texts,
                )
            except InputError as exc:
                if "call compact()" not in str(exc):
                    raise
                # the library's remedy in this API's words
                raise InputError(str(exc).replace("call compact()", f"POST /v1/indexes/{name}/compact")) from exc
        return {"ids": [int(i) for i in ids]}

    def compact_index(self, name: str) -> dict[str, Any]:
        with self.registry.index(name, write=True) as entry:
            begin_write()
            entry.index.compact()
        return self.index_info(name)

    def remove_items(self, name: str, req: s.RemoveItemsRequest) -> dict[str, Any]:
        if req.ids is None and req.where is None:
            raise ApiError(400, "bad_input", "give ids, a where filter, or both (the ids that match it)", "ids")
        if req.where == {}:  # the library's own message speaks of remove()
            raise ApiError(
                400, "bad_input", "where names no field to match; give ids, or a field and its value(s)", "where"
            )
        ids = list(req.ids) if req.ids is not None else None
        with self.registry.index(name, write=True) as entry:
            begin_write()
            return {"removed": int(entry.index.remove(ids, where=req.where))}

    def search(self, name: str, req: s.SearchRequest) -> dict[str, Any]:
        with self.registry.index(name) as entry:
            encoder = entry.index.encoder
            image_index = encoder is not None and encoder.modality == "image"
            pixels = self.settings.max_image_pixels
            if req.query_type == "image" or (req.query_type == "auto" and image_index and not encoder.supports_text):
                if not image_index:
                    raise ApiError(
                        400, "bad_input", "this index embeds text; image queries need an image index", "query_type"
                    )
                queries: list[Any] = decode_images(req.queries, "queries", pixels)
            elif req.query_type == "auto" and image_index:
                queries = [img if (img := try_image(q, pixels)) is not None else q for q in req.queries]
            else:
                queries = refuse_images(req.queries, "queries", "this index") if not image_index else list(req.queries)
            results = entry.index.batch_search(queries, k=req.k, where=req.where)
        return {
            "results": [
                [{"id": h.id, "score": h.score, "text": h.item, "label": h.label, "metadata": h.metadata} for h in hits]
                for hits in results
            ]
        }

    def ready(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        root = self.settings.root
        checks["root"] = "ok" if root.is_dir() and os.access(root, os.W_OK) else f"{root} is not a writable folder"
        if self.preload is not None:
            if not self.preload.done():
                checks["text_encoder"] = "loading"
            elif self.preload.exception() is not None:
                checks["text_encoder"] = f"failed: {self.preload.exception()}"
            else:
                checks["text_encoder"] = "ok"
        return all(v == "ok" for v in checks.values()), checks

    def warm_up(self) -> None:
        from fewshot.classifiers.expansion import word_vectors

        encoder = self.registry.encoder_for_spec("text")
        encoder.encode(["warm up"])
        word_vectors(encoder)  # the zero-shot label expansion's vocabulary, embedded or read before any request


def _route_template(scope: dict) -> str:
    """The template of the route that answered (``/v1/models/{name}``), or of the one the path names when the
    request was refused before routing (a body too large or too slow, a host not trusted), or "unmatched"."""
    route = scope.get("route")
    if route is None and "app" in scope:
        route = next((r for r in scope["app"].router.routes if r.matches(scope)[0] == Match.FULL), None)
    return getattr(route, "path", None) or "unmatched"


class BodyLimitAndMetrics:
    """ASGI middleware: refuse bodies over ``max_body_bytes`` (413) before the app reads them, and count every
    answer by route template and status, with its latency."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}
        limit = self.service.settings.max_body_bytes

        recorded = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            template = _route_template(scope)
            m = self.service.metrics
            seconds = time.perf_counter() - start
            m.requests.inc(template, scope["method"], str(status["code"]))
            m.latency.observe(seconds, template)
            # the path as sent (percent-encoded: a %0A cannot forge a log line), without the query string
            path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "backslashreplace")
            path = path.decode("ascii", "backslashreplace")
            path = path if len(path) <= 200 else path[:200] + "…"  # a name past the limit is refused, not logged
            level = logging.WARNING if status["code"] >= 500 else logging.INFO
            requests_log.log(level, "%s %s %d %.0f ms", scope["method"], path, status["code"], seconds * 1000)

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record()  # before the last bytes go: a client holding its answer finds it counted and logged
            await send(message)

        try:
            host = _host_name(scope)
            if not self.service.settings.host_allowed(host):
                await self._refuse(send_wrapper, _untrusted_host(host))
                return
            declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
            too_big = False
            if declared is not None:
                try:
                    too_big = int(declared) > limit
                except ValueError:
                    too_big = False
            if too_big:
                await self._too_large(send_wrapper, limit)
                return
            if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
                chunks, size, more = [], 0, True
                deadline = time.monotonic() + self.service.settings.body_timeout_s
                while more:
                    try:
                        message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
                    except TimeoutError:
                        await self._too_slow(send_wrapper)
                        return
                    if message["type"] == "http.disconnect":
                        status["code"] = 499  # the client went away (nginx's code): not a server error
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await self._too_large(send_wrapper, limit)
                        return
                    chunks.append(chunk)
                    more = message.get("more_body", False)
                body = b"".join(chunks)
                sent = False

                async def replay() -> dict:
                    nonlocal sent
                    if not sent:
                        sent = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            record()  # an answer never finished (a client gone, an error before any byte) is counted here

    async def _too_slow(self, send: Callable) -> None:
        """408 and ``Connection: close`` for a body that did not arrive in time (the server then drops the
        connection, since the rest of the body is never read)."""
        timeout = self.service.settings.body_timeout_s
        err = ApiError(408, "body_timeout", f"the request body did not arrive within {timeout:g} s", None)
        await self._refuse(send, err, close=True)

    async def _too_large(self, send: Callable, limit: int) -> None:
        err = ApiError(413, "body_too_large", f"the request body is over this server's limit of {limit} bytes", None)
        await self._refuse(send, err)

    async def _refuse(self, send: Callable, err: ApiError, close: bool = False) -> None:
        """Answer ``err`` before the app sees the request, counted as rejected by its code."""
        self.service.metrics.rejected.inc(err.code)
        body = json.dumps(err.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _host_name(scope: dict) -> str:
    """The host a request was sent to, from its ``Host`` header without the port (the server's own address
    when a client sent none, as HTTP/1.0 clients may)."""
    value = next((v for k, v in scope["headers"] if k == b"host"), None)
    if value is None:
        server = scope.get("server")
        return str(server[0]) if server else ""
    host = value.decode("latin-1").strip()
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]@/\s]*)(:\d{1,5})?", host)  # a name or [IPv6], then a port
    return m.group(1) if m else host  # anything else stays whole, and no allowed name is like it


def _untrusted_host(host: str) -> ApiError:
    return ApiError(
        400,
        "untrusted_host",
        f"this server does not answer requests for host {host!r}: without API keys it answers loopback names only "
        "(localhost, 127.0.0.1, [::1]), so that a web page cannot reach it by pointing its own domain at this "
        "machine; reach it as http://127.0.0.1:PORT, or start it with --allowed-host NAME",
        "Host",
    )


def _field(loc: Any) -> str:
    """A validation error's place as the request names it ("labels[1]", "labels.sport"), without pydantic's
    names of union members."""
    field = ""
    for part in loc:
        if part in ("body", "path", "query"):
            continue
        if isinstance(part, int):
            field += f"[{part}]"
        elif part in ("str", "int", "float", "bool") or "[" in str(part):
            continue  # the name of a union member, not a field
        else:
            field += ("." if field else "") + str(part)
    return field


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors() or [{"loc": (), "msg": "invalid request", "type": "invalid"}]
    first = errors[0]
    loc = [p for p in first.get("loc", ()) if p not in ("body", "path", "query")]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "invalid JSON")
        return ApiError(400, "malformed_json", f"the body is not valid JSON ({detail} at byte {loc[0] if loc else 0})")
    if not loc and isinstance(first.get("input"), (bytes, bytearray)):
        return ApiError(400, "not_json", "the body must be a JSON object sent with Content-Type: application/json")
    # a value that fits no member of a union fails once for each; the member it went deepest into says most
    # ({"sport": 5} for labels is a dict whose description is not text, not "not a list")
    fields = [_field(e.get("loc", ())) for e in errors]
    field = max(fields, key=len)
    here = [e for e, f in zip(errors, fields, strict=True) if f == field]
    first = here[0]
    message = "; or ".join(dict.fromkeys(e.get("msg", "invalid value") for e in here))
    if first.get("type") == "missing":
        message = "this field is required"
    elsewhere = len({f for f in fields if f != field and not field.startswith(f)})
    more = f" (and {elsewhere} more problem{'s' * (elsewhere != 1)})" if elsewhere else ""
    code = "missing_field" if first.get("type") == "missing" else "invalid_field"
    if first.get("type") == "extra_forbidden":
        code, message = "unknown_field", "this field is not part of the request"
    return ApiError(422, code, f"{field or 'body'}: {message}{more}", field or None)


def _swagger_ui_folder() -> Path | None:
    """Swagger UI 5's files as the ``fastapi-offline`` package ships them (in the ``serve`` extra; only its
    files are used), if it is installed."""
    from importlib.util import find_spec

    spec = find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def create_app(settings: ServeSettings) -> FastAPI:
    """The service for ``settings`` (see :class:`~fewshot.serve.settings.ServeSettings`)."""
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.root.mkdir(parents=True, exist_ok=True)
        if settings.preload and "text" in settings.encoders:
            service.preload = service.executor.submit(service.warm_up)
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(service.executor, service.registry.close)
            service.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="fewshot",
        version=__version__,
        description="Few-shot and zero-shot classification and semantic search on frozen encoders. Names of "
        f"models and indexes match `{NAME_PATTERN}`. Images travel as base64 strings.",
        lifespan=lifespan,
        docs_url=None,  # served below from the package's own copy of Swagger UI, so /docs works offline
    )
    app.state.service = service
    app.add_middleware(BodyLimitAndMetrics, service=service)

    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (or use Bearer).")
    bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token.")

    key_security, bearer_security = Security(key_header), Security(bearer)

    def scope_dependency(needed: str) -> Callable:
        async def check_key(
            x_api_key: str | None = key_security, token: HTTPAuthorizationCredentials | None = bearer_security
        ) -> None:
            auth.check(settings.api_keys, x_api_key or (token.credentials if token else None), needed)

        return check_key

    read = [Depends(scope_dependency("read"))]
    write = [Depends(scope_dependency("write"))]

    # -- errors --------------------------------------------------------------------------------------------
    roots = sorted({str(settings.root), str(settings.root.resolve())}, key=len, reverse=True)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        for root in roots:  # a message names files by their place under the root, never by the server's paths
            exc.message = exc.message.replace(root, "<root>")
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await api_error(request, _validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            # "a%2Fb" is decoded to "a/b" before routing, so it matches no route: name the name, not the path
            named = re.match(r"/v1/(models|indexes)/([^/]*%2[fF][^/]*)", request.scope.get("raw_path", b"").decode())
            if named:
                kind = "model" if named.group(1) == "models" else "index"
                try:
                    check_name(urllib.parse.unquote(named.group(2)), kind)
                except ApiError as err:
                    return await api_error(request, err)
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's parse failed with something other than a JSON syntax error: bytes that are not UTF-8,
            # or JSON nested deeper than the parser recurses
            message = "the body is not JSON text in UTF-8"
            with contextlib.suppress(Exception):  # the body was read already; this only tells the two apart
                (await request.body()).decode("utf-8")
                message = "the body's JSON is nested too deeply to be read (arrays or objects within each other)"
            return await api_error(request, ApiError(400, "malformed_json", message))
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "body_too_large"}
        err = ApiError(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), None)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(FewShotError)
    async def library_error(request: Request, exc: FewShotError) -> JSONResponse:
        return await api_error(request, from_library(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        err = ApiError(500, "internal", f"an unexpected error ({type(exc).__name__}); this is a bug in the server")
        return JSONResponse(err.body(), status_code=500)

    # -- page and probes -----------------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    swagger = _swagger_ui_folder()
    if swagger is not None:
        app.mount("/docs-assets", StaticFiles(directory=swagger), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        from fastapi.openapi.docs import get_swagger_ui_html

        if swagger is None:  # without fastapi-offline the browser fetches FastAPI's default copy from a CDN
            return get_swagger_ui_html(openapi_url=app.openapi_url, title="fewshot - API")
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="fewshot - API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/health", response_model=s.Health, tags=["probes"], summary="The process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        response_model=s.Ready,
        tags=["probes"],
        summary="The server can serve",
        responses={503: {"model": s.Ready, "description": "Not ready yet (or broken): see checks."}},
    )
    async def ready() -> JSONResponse:
        ok, checks = service.ready()
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    # the probes answer HEAD too (load balancers and uptime checkers send it): the same handlers, out of the
    # schema, which would otherwise hold two operations of one id
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/ready", ready, methods=["HEAD"], include_in_schema=False)

    @app.get(
        "/metrics", tags=["probes"], summary="Prometheus metrics", dependencies=read, response_class=PlainTextResponse
    )
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- models --------------------------------------------------------------------------------------------
    @app.get(
        "/v1/models",
        response_model=s.ModelList,
        tags=["models"],
        dependencies=read,
        responses=READ_ERRORS,
        summary="List saved models",
    )
    async def list_models() -> dict[str, Any]:
        return {"models": await service.work(service.registry.list_models)}

    @app.get(
        "/v1/models/{name}",
        response_model=s.ModelInfo,
        tags=["models"],
        dependencies=read,
        responses=READ_ERRORS,
        summary="Describe a model",
    )
    async def model_info(name: str) -> dict[str, Any]:
        return await service.work(service.model_info, check_name(name, "model"))

    @app.post(
        "/v1/models/{name}",
        response_model=s.FitResponse,
        tags=["models"],
        dependencies=write,
        responses=ERRORS,
        summary="Fit a few-shot classifier and save it (replaces one of that name)",
    )
    async def fit_model(name: str, req: s.FitRequest) -> dict[str, Any]:
        check_name(name, "model")
        service.limit(len(req.inputs), "inputs")
        return await service.work(service.fit, name, req, field="inputs")

    @app.post(
        "/v1/models/{name}/examples",
        response_model=s.FitResponse,
        tags=["models"],
        dependencies=write,
        responses=ERRORS,
        summary="Add labelled examples (a new label adds a class) and save",
    )
    async def add_examples(name: str, req: s.ExamplesRequest) -> dict[str, Any]:
        check_name(name, "model")
        service.limit(len(req.inputs), "inputs")
        return await service.work(service.add_examples, name, req, field="inputs")

    @app.delete(
        "/v1/models/{name}",
        response_model=s.DeleteResponse,
        tags=["models"],
        dependencies=write,
        responses=ERRORS,
        summary="Delete a saved model",
    )
    async def delete_model(name: str) -> dict[str, Any]:
        await service.work(service.registry.delete_model, check_name(name, "model"))
        return {"name": name, "deleted": True}

    @app.post(
        "/v1/models/{name}/predict",
        response_model=s.PredictResponse,
        tags=["models"],
        dependencies=read,
        responses=ERRORS,
        summary="Classify inputs",
    )
    async def predict(name: str, req: s.PredictRequest) -> dict[str, Any]:
        check_name(name, "model")
        service.limit(len(req.inputs), "inputs")
        return await service.work(service.predict, name, req.inputs, field="inputs")

    # -- zero-shot -----------------------------------------------------------------------------------------
    @app.post(
        "/v1/zeroshot",
        response_model=s.ZeroShotResponse,
        response_model_exclude_unset=True,
        tags=["zero-shot"],
        dependencies=read,
        responses=ERRORS,
        summary="Classify or tag inputs against label names alone",
    )
    async def zeroshot(req: s.ZeroShotRequest) -> dict[str, Any]:
        service.limit(len(req.inputs), "inputs")
        return await service.work(service.zeroshot, req, field="inputs")

    # -- indexes -------------------------------------------------------------------------------------------
    @app.get(
        "/v1/indexes",
        response_model=s.IndexList,
        tags=["indexes"],
        dependencies=read,
        responses=READ_ERRORS,
        summary="List saved indexes",
    )
    async def list_indexes() -> dict[str, Any]:
        return {"indexes": await service.work(service.registry.list_indexes)}

    @app.post(
        "/v1/indexes/{name}",
        response_model=s.IndexInfo,
        tags=["indexes"],
        dependencies=write,
        responses=ERRORS,
        summary="Create an empty index",
        status_code=201,
    )
    async def create_index(name: str, req: s.IndexCreateRequest | None = None) -> dict[str, Any]:
        check_name(name, "index")
        return await service.work(service.create_index, name, req or s.IndexCreateRequest(), field="encoder")

    @app.get(
        "/v1/indexes/{name}",
        response_model=s.IndexInfo,
        tags=["indexes"],
        dependencies=read,
        responses=READ_ERRORS,
        summary="Describe an index",
    )
    async def index_info(name: str) -> dict[str, Any]:
        return await service.work(service.index_info, check_name(name, "index"))

    @app.delete(
        "/v1/indexes/{name}",
        response_model=s.DeleteResponse,
        tags=["indexes"],
        dependencies=write,
        responses=ERRORS,
        summary="Delete an index",
    )
    async def delete_index(name: str) -> dict[str, Any]:
        await service.work(service.registry.delete_index, check_name(name, "index"))
        return {"name": name, "deleted": True}

    @app.post(
        "/v1/indexes/{name}/items",
        response_model=s.AddItemsResponse,
        tags=["indexes"],
        dependencies=write,
        responses=ERRORS,
        summary="Add items (durable before the answer)",
    )
    async def add_items(name: str, req: s.AddItemsRequest) -> dict[str, Any]:
        check_name(name, "index")
        service.limit(len(req.items), "items")
        return await service.work(service.add_items, name, req, field="items")

    @app.delete(
        "/v1/indexes/{name}/items",
        response_model=s.RemoveItemsResponse,
        tags=["indexes"],
        dependencies=write,
        responses=ERRORS,
        summary="Remove items by id, by filter or both (durable before the answer)",
    )
    async def remove_items(name: str, req: s.RemoveItemsRequest) -> dict[str, Any]:
        check_name(name, "index")
        service.limit(len(req.ids or ()), "ids")
        return await service.work(service.remove_items, name, req, field="ids" if req.ids is not None else "where")

    @app.post(
        "/v1/indexes/{name}/compact",
        response_model=s.IndexInfo,
        tags=["indexes"],
        dependencies=write,
        responses=ERRORS,
        summary="Free the vectors of removed items (an HNSW graph keeps them; their ids can then be added again)",
    )
    async def compact_index(name: str) -> dict[str, Any]:
        return await service.work(service.compact_index, check_name(name, "index"))

    @app.post(
        "/v1/indexes/{name}/search",
        response_model=s.SearchResponse,
        tags=["indexes"],
        dependencies=read,
        responses=ERRORS,
        summary="Search by meaning: one list of hits per query",
    )
    async def search(name: str, req: s.SearchRequest) -> dict[str, Any]:
        check_name(name, "index")
        service.limit(len(req.queries), "queries")
        return await service.work(service.search, name, req, field="queries")

    return app
