"""Benchmark of the HTTP service (``fewshot serve``) against in-process calls, plus crash and bad-input runs.

Three parts, each on a real uvicorn process on 127.0.0.1 (nothing else is ever contacted), each bounded in
count and time:

- ``throughput``: AG News test texts, one text per request, from 1, 8 and 32 concurrent clients (an asyncio
  load generator on keep-alive connections) to ``POST /v1/models/{name}/predict`` of a prototype classifier,
  interleaved round by round with the in-process arms in this process: ``TextEncoder.encode`` of the same
  texts in batches of 32 (the yardstick: service throughput at 32 clients should be at least 0.7 of it) and
  ``FewShotClassifier.predict`` in batches of 32. Reports texts/s, the service/in-process ratio per round
  (median over rounds) and p50/p99 latency per concurrency. The single-client arm sends a quarter of the
  texts (it is the slow one).
- ``crash``: clients add items (and remove some) while the server is killed with SIGKILL at random moments
  (seeded), then restarted; after every restart the index on disk is read back with the library: every
  acknowledged item present with its text, every acknowledged removal absent. ``lost`` must be 0.
- ``badinput``: seeded malformed and random requests (broken JSON, wrong types, empty and oversized inputs,
  unknown models, indexes and labels, bad names, bad base64 images, bad ``where``, random JSON); the count
  of 5xx answers must be 0, and every error must carry ``{"error": {"code", "message", "field"}}``.

Run: ``python -m eval.bench_service`` (all parts; about 10 minutes on 2 cores), or ``--part throughput``
etc. Results go to ``eval/results/bench_service.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "eval" / "results"


# -- a server process ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m fewshot.serve`` on 127.0.0.1 and a free port, with start (waits for ``/ready``), kill
    (SIGKILL) and stop (SIGTERM, a clean shutdown)."""

    def __init__(self, root: Path, args: tuple[str, ...] = (), port: int | None = None, log: Path | None = None):
        self.root, self.args = Path(root), tuple(args)
        self.port = port or free_port()
        self.log = log or self.root / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> float:
        """Start the server and wait until ``/ready`` answers 200; return the seconds that took."""
        t0 = time.monotonic()
        env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        cmd = [sys.executable, "-m", "fewshot.serve", "--root", str(self.root), "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "--log-level", "warning", *self.args], stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env
            )
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server was not ready after {timeout} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def request(url: str, method: str, path: str, body: Any = None, headers: dict | None = None) -> tuple[int, Any]:
    """One blocking JSON request (urllib); returns (status, decoded JSON or text)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


# -- an asyncio HTTP/1.1 client (keep-alive), light enough not to steal the server's CPU --------------------------
class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1; requests go one at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        )
        try:
            self.writer.write(head.encode("latin-1") + body)
            await self.writer.drain()
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("the server closed the connection")
            status = int(status_line.split()[1])
            length, close = 0, False
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
                elif name.strip().lower() == "connection" and value.strip().lower() == "close":
                    close = True
            payload = await self.reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            await self.close()
            raise ConnectionError(str(exc)) from exc
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


def batch_stats(url: str) -> tuple[float, float]:
    """(items, model calls) coalesced so far, summed over encoders, from the server's /metrics."""
    _, text = request(url, "GET", "/metrics")
    lines = str(text).splitlines()
    items = sum(float(ln.split()[-1]) for ln in lines if ln.startswith("fewshot_batch_size_sum"))
    calls = sum(float(ln.split()[-1]) for ln in lines if ln.startswith("fewshot_batch_size_count"))
    return items, calls


# -- throughput ---------------------------------------------------------------------------------------------
async def _load(port: int, path: str, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """Send every body once, ``clients`` at a time; return the wall time and each request's latency."""
    latencies: list[float] = []
    queue = list(reversed(bodies))

    async def client() -> None:
        conn = Connection(port)
        try:
            while queue:
                body = queue.pop()
                t = time.perf_counter()
                status, payload = await conn.send("POST", path, body)
                latencies.append(time.perf_counter() - t)
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}: {payload[:300]!r}")
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - t0, latencies


def throughput(work: Path, n_texts: int, rounds: int, concurrency: list[int]) -> dict[str, Any]:
    from eval.datasets import load, sample_per_class
    from fewshot import FewShotClassifier, TextEncoder

    ds = load("ag_news")
    support = sample_per_class(ds.train_labels, 8, seed=0)
    names = ds.label_names
    encoder = TextEncoder()
    clf = FewShotClassifier(encoder=encoder, lexical=False).fit(
        [ds.train_texts[i] for i in support], [names[ds.train_labels[i]] for i in support]
    )
    root = work / "throughput"
    clf.save(root / "models" / "agnews")
    texts = ds.test_texts[:n_texts]
    bodies = [json.dumps({"inputs": [t]}).encode() for t in texts]
    server = ServerProcess(root)
    startup = server.start()
    path = "/v1/models/agnews/predict"
    try:
        encoder.encode(texts[:64])  # warm both sides
        clf.predict(texts[:64])
        asyncio.run(_load(server.port, path, bodies[:64], 8))
        per_round: list[dict[str, Any]] = []
        latencies: dict[int, list[float]] = {c: [] for c in concurrency}
        for r in range(rounds):
            row: dict[str, Any] = {"round": r}
            t = time.perf_counter()
            for i in range(0, len(texts), 32):
                encoder.encode(texts[i : i + 32])
            row["inprocess_encode"] = len(texts) / (time.perf_counter() - t)
            t = time.perf_counter()
            for i in range(0, len(texts), 32):
                clf.predict(texts[i : i + 32])
            row["inprocess_predict"] = len(texts) / (time.perf_counter() - t)
            for c in concurrency:
                n = len(bodies) if c >= 8 else max(32, len(bodies) // 4)  # one client at a time: fewer requests
                before = batch_stats(server.url)
                wall, lat = asyncio.run(_load(server.port, path, bodies[:n], c))
                after = batch_stats(server.url)
                row[f"service_c{c}"] = n / wall
                row[f"batch_c{c}"] = (after[0] - before[0]) / max(after[1] - before[1], 1)  # mean texts per call
                latencies[c] += lat
            per_round.append(row)
            print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    finally:
        server.stop()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in per_round)

    out: dict[str, Any] = {
        "texts": len(texts),
        "rounds": rounds,
        "server_startup_s": startup,
        "inprocess_encode_texts_per_s": med("inprocess_encode"),
        "inprocess_predict_texts_per_s": med("inprocess_predict"),
        "per_round": per_round,
        "service": {},
    }
    for c in concurrency:
        lat = np.asarray(latencies[c]) * 1000
        out["service"][str(c)] = {
            "texts_per_s": med(f"service_c{c}"),
            "ratio_to_inprocess_encode": statistics.median(
                r[f"service_c{c}"] / r["inprocess_encode"] for r in per_round
            ),
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "mean_model_batch": med(f"batch_c{c}"),
        }
    return out


# -- crash --------------------------------------------------------------------------------------------------
async def _writers(port: int, clients: int, stop_after: float, seed: int, round_no: int, log: dict) -> None:
    """Clients add 1-3 items a request (and now and then remove one they added), recording what was
    acknowledged, until the connection fails (the kill) or ``stop_after`` seconds pass."""
    deadline = time.monotonic() + stop_after

    async def client(cid: int) -> None:
        rng = random.Random(seed * 1000 + round_no * 10 + cid)
        conn = Connection(port)
        seq = 0
        while time.monotonic() < deadline:
            try:
                if log["acked"] and rng.random() < 0.1:
                    victim = rng.choice(sorted(log["acked"]))
                    log["acked"].pop(victim)  # until acknowledged, its removal may or may not have happened
                    status, _ = await conn.send(
                        "DELETE", "/v1/indexes/crash/items", json.dumps({"ids": [victim]}).encode()
                    )
                    if status == 200:
                        log["removed"].add(victim)
                    else:
                        log["errors"].append(status)
                    continue
                n = rng.randint(1, 3)
                texts = [f"round {round_no} client {cid} item {seq + i} {rng.random():.6f}" for i in range(n)]
                seq += n
                body = json.dumps({"items": [{"text": t, "label": f"c{cid}"} for t in texts]}).encode()
                status, payload = await conn.send("POST", "/v1/indexes/crash/items", body)
                if status == 200:
                    for i, t in zip(json.loads(payload)["ids"], texts):
                        log["acked"][int(i)] = t
                else:
                    log["errors"].append(status)
            except ConnectionError:
                break  # the server was killed: whatever was in flight is unacknowledged
        await conn.close()

    await asyncio.gather(*(client(c) for c in range(clients)))


def crash_round(server: ServerProcess, clients: int, seed: int, round_no: int, log: dict, delay: float) -> float:
    """Start writers, wait for the round's first acknowledged write, then SIGKILL the server ``delay`` seconds
    later (so every kill lands among writes in flight); return the seconds from the first write to the kill."""

    async def run() -> None:
        before = len(log["acked"]) + len(log["removed"])
        task = asyncio.ensure_future(_writers(server.port, clients, 120.0, seed, round_no, log))
        t = time.monotonic()
        while len(log["acked"]) + len(log["removed"]) == before and time.monotonic() - t < 60 and not task.done():
            await asyncio.sleep(0.01)
        await asyncio.sleep(delay)
        server.kill()
        await task

    asyncio.run(run())
    return delay


def check_index(folder: Path, log: dict) -> dict[str, int]:
    """Read the index on disk with the library (no lock needed) and compare with what was acknowledged."""
    from fewshot import EmbeddingIndex

    index = EmbeddingIndex.load(folder)
    ids = sorted(log["acked"])
    hits = index.get(ids) if ids else []
    lost = sum(1 for i, h in zip(ids, hits) if h is None or h.item != log["acked"][i])
    removed = sorted(log["removed"])
    resurrected = sum(1 for h in (index.get(removed) if removed else []) if h is not None)
    return {
        "acknowledged": len(ids),
        "lost": lost,
        "removed": len(removed),
        "resurrected": resurrected,
        "count_on_disk": len(index),
    }


def crash(work: Path, kills: int, clients: int, seed: int) -> dict[str, Any]:
    root = work / "crash"
    root.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(root)
    rng = random.Random(seed)
    log: dict[str, Any] = {"acked": {}, "removed": set(), "errors": []}
    rounds = []
    startup = [server.start()]
    status, _ = request(server.url, "POST", "/v1/indexes/crash", {"encoder": "text", "kind": "auto"})
    assert status == 201, status
    try:
        for k in range(kills):
            when = crash_round(server, clients, seed, k, log, rng.uniform(0.0, 1.5))
            result = check_index(root / "indexes" / "crash", log)
            startup.append(server.start())
            result.update({"kill": k, "killed_after_s": round(when, 3)})
            rounds.append(result)
            print(json.dumps(result), flush=True)
            if result["lost"] or result["resurrected"]:
                break
        final = check_index(root / "indexes" / "crash", log)
    finally:
        server.stop()
    after_stop = check_index(root / "indexes" / "crash", log)
    return {
        "kills": len(rounds),
        "clients": clients,
        "acknowledged": final["acknowledged"],
        "acknowledged_removals": final["removed"],
        "lost": max(r["lost"] for r in [*rounds, final, after_stop]),
        "resurrected": max(r["resurrected"] for r in [*rounds, final, after_stop]),
        "non_200_answers": len(log["errors"]),
        "restart_s_median": statistics.median(startup),
        "rounds": rounds,
    }


# -- bad input ----------------------------------------------------------------------------------------------
def _png(size: tuple[int, int] = (8, 8)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**70), rng.randint(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-300, float(rng.random())])
    if kind == 4:
        return rng.choice(["", " ", "x", "ü" * 3, "\x00", "../../etc/passwd", "a" * 300, "🙂", "null"])
    if kind == 5:
        return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 20)))
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["inputs", "labels", "items", "queries", "k", "where", "ids", "text", "head", "multi_label", "x"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def bad_requests(rng: random.Random, n: int, max_body: int) -> list[tuple[str, str, bytes, dict]]:
    """``n`` seeded requests, nearly all of them mistakes a client could make, some random JSON."""
    png = _png()
    names = ["m", "idx", "img", "nope", "..", ".hidden", "a" * 65, "x%2Fy", "%2e%2e", "-rf", "ünï", "a b", "a;b"]
    reqs = []
    for _ in range(n):
        name = rng.choice(names)
        choice = rng.randrange(22)
        if choice == 0:
            reqs.append(("POST", "/v1/models/m/predict", b'{"inputs": ["unterminated', {}))
        elif choice == 1:
            reqs.append(("POST", "/v1/models/m/predict", json.dumps({"inputs": random_json(rng)}).encode(), {}))
        elif choice == 2:
            reqs.append(("POST", "/v1/models/m/predict", json.dumps({"inputs": []}).encode(), {}))
        elif choice == 3:
            reqs.append(("POST", f"/v1/models/{name}/predict", json.dumps({"inputs": ["hello"]}).encode(), {}))
        elif choice == 4:
            reqs.append(
                ("POST", "/v1/models/m/predict", json.dumps({"inputs": ["x"] * rng.choice([257, 1000])}).encode(), {})
            )
        elif choice == 5:
            reqs.append(("POST", "/v1/models/m/predict", b"[" + b'"x",' * (max_body // 4) + b'"x"]', {}))
        elif choice == 6:
            labels = rng.choice([["a"], [1, "a"], [None], [], ["a", "b", "c"], [True]])
            reqs.append(
                ("POST", "/v1/models/m/examples", json.dumps({"inputs": ["x", "y"], "labels": labels}).encode(), {})
            )
        elif choice == 7:
            reqs.append(
                (
                    "POST",
                    "/v1/indexes/img/search",
                    json.dumps(
                        {"queries": [rng.choice(["%%%", png[:20], "aGVsbG8="])], "query_type": "image"}
                    ).encode(),
                    {},
                )
            )
        elif choice == 8:
            reqs.append(
                (
                    "POST",
                    "/v1/indexes/img/items",
                    json.dumps({"items": [{"text": rng.choice(["not base64!", "aGVsbG8=", ""])}]}).encode(),
                    {},
                )
            )
        elif choice == 9:
            where = rng.choice(
                [
                    {"nofield": 1},
                    {"label": 3},
                    {"label": []},
                    {"id": "x"},
                    {"": 1},
                    {"label": {"a": 1}},
                    {"lang": float("nan")},
                    [],
                    "label",
                    {"label": [None]},
                ]
            )
            body = json.dumps({"queries": ["rates"], "where": where}).encode()
            reqs.append(("POST", "/v1/indexes/idx/search", body, {}))
        elif choice == 10:
            reqs.append(
                (
                    "POST",
                    "/v1/indexes/idx/search",
                    json.dumps({"queries": ["x"], "k": rng.choice([0, -1, 10**9, "5", 2.5, None])}).encode(),
                    {},
                )
            )
        elif choice == 11:
            path = rng.choice(
                [
                    "/v1/models/m/predict",
                    "/v1/zeroshot",
                    "/v1/indexes/idx/search",
                    "/v1/indexes/idx/items",
                    "/v1/models/m",
                    "/v1/models/m/examples",
                    "/v1/indexes/x1",
                ]
            )
            reqs.append(
                (
                    rng.choice(["POST", "DELETE"]) if path.endswith("items") else "POST",
                    path,
                    json.dumps(random_json(rng)).encode(),
                    {},
                )
            )
        elif choice == 12:
            labels = rng.choice([[], [""], ["a"] * 3, {"a": 1}, "a,b", [1, 2], {"": ""}, ["x"] * 101])
            reqs.append(("POST", "/v1/zeroshot", json.dumps({"inputs": ["hi"], "labels": labels}).encode(), {}))
        elif choice == 13:
            reqs.append(
                (
                    "POST",
                    "/v1/zeroshot",
                    json.dumps(
                        {
                            "inputs": ["hi"],
                            "labels": ["a", "b"],
                            "multi_label": True,
                            "threshold": rng.choice(["x", None, 2, -5]),
                            "top_k": rng.choice([0, -1, 1, "2"]),
                        }
                    ).encode(),
                    {},
                )
            )
        elif choice == 14:
            reqs.append(
                (
                    "DELETE",
                    "/v1/indexes/idx/items",
                    json.dumps({"ids": rng.choice([[], [-1], ["a"], [2**70], None])}).encode(),
                    {},
                )
            )
        elif choice == 15:
            items = rng.choice(
                [
                    [{"text": "a", "id": 0}],
                    [{"text": "a", "id": 5}, {"text": "b"}],
                    [{"text": "a", "metadata": {"v": float("inf")}}],
                    [{"text": "a", "label": ""}],
                    [{"text": "a", "id": -3}],
                    [{}],
                    [{"text": "a", "metadata": []}],
                ]
            )
            reqs.append(("POST", "/v1/indexes/idx/items", json.dumps({"items": items}).encode(), {}))
        elif choice == 16:
            body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
            reqs.append(("POST", rng.choice(["/v1/models/m/predict", "/v1/zeroshot"]), body, {}))
        elif choice == 17:
            reqs.append(("POST", "/v1/models/m/predict", b'{"inputs": ["a"]}', {"Content-Type": "text/plain"}))
        elif choice == 18:
            reqs.append(
                (rng.choice(["PUT", "PATCH", "GET"]), rng.choice(["/v1/models/m/predict", "/v1/zeroshot"]), b"", {})
            )
        elif choice == 19:
            reqs.append(
                (
                    "GET",
                    rng.choice([f"/v1/models/{name}", f"/v1/indexes/{name}", "/nope", "/v1/../etc/passwd"]),
                    b"",
                    {},
                )
            )
        elif choice == 20:
            body = json.dumps(
                {
                    "inputs": ["a", "b"],
                    "labels": ["x", "y"],
                    "head": rng.choice(["knn", "bogus", 3]),
                    "head_params": rng.choice([{"k": "x"}, {"nope": 1}, {"k": -1}, None]),
                }
            ).encode()
            reqs.append(("POST", "/v1/models/fit-target", body, {}))
        else:
            reqs.append(
                ("POST", "/v1/indexes/idx/search", json.dumps({"queries": ["x"], "query_type": "image"}).encode(), {})
            )
    # paths percent-encoded as an HTTP client sends them ("a b" -> "a%20b"; an encoded "%2F" stays encoded)
    return [(m, urllib.parse.quote(path, safe="/%"), body, headers) for m, path, body, headers in reqs]


def badinput(work: Path, n: int, seed: int) -> dict[str, Any]:
    root = work / "badinput"
    root.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(root)
    server.start()
    try:
        setup = [
            (
                "POST",
                "/v1/models/m",
                {
                    "inputs": ["my parcel is late", "where is my order", "charged twice", "refund please"],
                    "labels": ["shipping", "shipping", "billing", "billing"],
                },
            ),
            ("POST", "/v1/indexes/idx", {"encoder": "text"}),
            (
                "POST",
                "/v1/indexes/idx/items",
                {
                    "items": [
                        {"text": "rates rise", "label": "economy", "metadata": {"lang": "en"}},
                        {"text": "the match ended 2-1", "label": "sport"},
                    ]
                },
            ),
            ("POST", "/v1/indexes/img", {"encoder": "image"}),
            ("POST", "/v1/indexes/img/items", {"items": [{"text": _png(), "label": "red"}]}),
        ]
        for method, path, body in setup:
            status, payload = request(server.url, method, path, body)
            assert status in (200, 201), (path, status, payload)
        rng = random.Random(seed)
        reqs = bad_requests(rng, n, 2 * 1024 * 1024)
        statuses: dict[str, int] = {}
        bad_bodies, five = [], []

        async def send_all() -> None:
            conn = Connection(server.port)
            for method, path, body, headers in reqs:
                try:
                    status, payload = await conn.send(method, path, body, headers)
                except ConnectionError as exc:
                    statuses["connection_error"] = statuses.get("connection_error", 0) + 1
                    five.append((method, path, str(exc)))
                    continue
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status >= 500:
                    five.append((method, path, payload[:300].decode("utf-8", "replace")))
                if status >= 400:
                    try:
                        err = json.loads(payload)["error"]
                        assert set(err) == {"code", "message", "field"} and err["message"]
                    except (ValueError, KeyError, AssertionError, TypeError):
                        bad_bodies.append((method, path, status, payload[:200].decode("utf-8", "replace")))
            await conn.close()

        t = time.perf_counter()
        asyncio.run(send_all())
        wall = time.perf_counter() - t
        alive, _ = request(server.url, "GET", "/health")
    finally:
        server.stop()
    return {
        "requests": len(reqs),
        "seed": seed,
        "statuses": dict(sorted(statuses.items())),
        "count_5xx": len(five),
        "examples_5xx": five[:5],
        "errors_without_the_error_body": len(bad_bodies),
        "examples_without_body": bad_bodies[:5],
        "seconds": wall,
        "health_after": alive,
    }


# -- report -------------------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# HTTP service benchmark",
        "",
        "Measured on this project's 2-core machine; each part says how busy the machine was (the one-minute load "
        "average when it started: under 2 means nothing else ran). The ratios compare arms measured in the same "
        "run, interleaved. One uvicorn process on 127.0.0.1, the load generator in the benchmark process. "
        "`python -m eval.bench_service` runs every part; `--part NAME` reruns one and keeps the others.",
        "",
    ]

    def command(part: dict[str, Any]) -> str:
        load = part.get("load_average_at_start")
        busy = (
            f" (load average {load:.1f} at the start)"
            if load is not None
            else " (other work shared the cores: load average 7-15)"
        )
        return f"Command: `{(part.get('command') or result.get('command') or '').strip()}`{busy}"

    tp = result.get("throughput")
    if tp:
        lines += [
            "## Throughput (one AG News text per request, prototype classifier, bundled MiniLM)",
            "",
            command(tp),
            "",
            f"{tp['texts']} texts per arm, {tp['rounds']} interleaved rounds (medians). In-process: "
            f"`TextEncoder.encode` in batches of 32: **{tp['inprocess_encode_texts_per_s']:.0f} texts/s**; "
            f"`FewShotClassifier.predict` in batches of 32: {tp['inprocess_predict_texts_per_s']:.0f} texts/s. "
            "Model batch: the mean number of texts per coalesced model call in the server. On a CPU a batch costs "
            "about its longest text times its size (the shorter ones are padded), so the server's smaller "
            "coalesced batches can beat the in-process batches of 32 (a ratio above 1).",
            "",
            "| clients | texts/s | / in-process encode | p50 ms | p99 ms | model batch |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for c, row in tp["service"].items():
            lines.append(
                f"| {c} | {row['texts_per_s']:.0f} | {row['ratio_to_inprocess_encode']:.2f} | "
                f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row.get('mean_model_batch', float('nan')):.1f} |"
            )
        lines.append("")
    cr = result.get("crash")
    if cr:
        lines += [
            "## Crash (SIGKILL while clients add and remove items, then restart)",
            "",
            command(cr),
            "",
            f"{cr['kills']} kills, {cr['clients']} clients: {cr['acknowledged']} acknowledged items, "
            f"{cr['acknowledged_removals']} acknowledged removals; **lost: {cr['lost']}**, removed items back: "
            f"{cr['resurrected']}. Median restart to ready: {cr['restart_s_median']:.1f} s.",
            "",
        ]
    bi = result.get("badinput")
    if bi:
        lines += [
            "## Bad input",
            "",
            command(bi),
            "",
            f"{bi['requests']} seeded requests (seed {bi['seed']}) in {bi['seconds']:.1f} s: "
            f"**5xx: {bi['count_5xx']}**; errors without the JSON error body: "
            f"{bi['errors_without_the_error_body']}. Statuses: "
            + ", ".join(f"{k}: {v}" for k, v in bi["statuses"].items())
            + ".",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["all", "throughput", "crash", "badinput"], default="all")
    p.add_argument("--texts", type=int, default=320, help="texts per throughput arm (default 320)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds (default 3)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs in the crash run (default 20)")
    p.add_argument("--clients", type=int, default=4, help="writing clients in the crash run (default 4)")
    p.add_argument("--bad", type=int, default=1200, help="requests in the bad-input run (default 1200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "bench_service"), help="output stem (.json and .md)")
    a = p.parse_args(argv)
    cmd = " ".join(["python -m eval.bench_service", *(argv if argv is not None else sys.argv[1:])])
    out = Path(a.out)
    result: dict[str, Any] = {}
    if a.part != "all" and out.with_suffix(".json").exists():  # rerun one part, keep the others
        result = json.loads(out.with_suffix(".json").read_text())
    older = result.pop("command", None)  # a file written before each part carried its own command
    for part in ("throughput", "crash", "badinput"):
        if part in result and older:
            result[part].setdefault("command", older)
    with tempfile.TemporaryDirectory(prefix="fewshot-bench-service-") as tmp:
        work = Path(tmp)
        if a.part in ("all", "throughput"):
            result["throughput"] = {
                "command": cmd,
                "load_average_at_start": os.getloadavg()[0],
                **throughput(work, a.texts, a.rounds, a.concurrency),
            }
        if a.part in ("all", "crash"):
            result["crash"] = {
                "command": cmd,
                "load_average_at_start": os.getloadavg()[0],
                **crash(work, a.kills, a.clients, a.seed),
            }
        if a.part in ("all", "badinput"):
            result["badinput"] = {
                "command": cmd,
                "load_average_at_start": os.getloadavg()[0],
                **badinput(work, a.bad, a.seed),
            }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))
    ok = True
    if "crash" in result:
        ok &= result["crash"]["lost"] == 0 and result["crash"]["resurrected"] == 0
    if "badinput" in result:
        ok &= result["badinput"]["count_5xx"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
