"""Requests to a function under test: real CloudEvents over keep-alive HTTP/1.1 connections.

Bodies are encoded before the clock starts, so the figures measure the function, not the encoder.
Each worker thread owns one connection; a connection the server closed is reopened and the
request is retried once (counted in ``reconnects``).
"""

from __future__ import annotations

import http.client
import math
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._procs import HOST

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"


@dataclass(frozen=True)
class Encoded:
    headers: dict[str, str]
    body: bytes


def storage_event(
    bucket: str, name: str, generation: int, *, size: int = 4096, event_id: str = ""
) -> Encoded:
    """An Eventarc object-finalized CloudEvent in binary mode, as Eventarc delivers it."""
    from cloudevents.conversion import to_binary
    from cloudevents.http import CloudEvent

    data = {
        "bucket": bucket,
        "name": name,
        "generation": str(generation),
        "metageneration": "1",
        "size": str(size),
        "contentType": "application/x-directory" if name.endswith("/") else "text/csv",
        "timeCreated": "2026-11-27T16:00:00.000Z",
    }
    event = CloudEvent(
        {
            "type": STORAGE_FINALIZED,
            "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
            "id": event_id or f"{generation}",
            "subject": f"objects/{name}",
            "time": "2026-11-27T16:00:00.000Z",
        },
        data,
    )
    headers, body = to_binary(event)
    return Encoded(headers={str(k): str(v) for k, v in headers.items()}, body=bytes(body))


def json_request(payload: bytes) -> Encoded:
    return Encoded(headers={"Content-Type": "application/json"}, body=payload)


@dataclass
class LoadResult:
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, in completion order
    bodies: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0
    wall: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.wall if self.wall > 0 else 0.0

    def merge(self, other: LoadResult) -> None:
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.latencies.extend(other.latencies)
        self.bodies.extend(other.bodies)
        self.errors.extend(other.errors)
        self.reconnects += other.reconnects


class Client:
    """One keep-alive connection to the function."""

    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.reconnects = 0

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def post(self, request: Encoded, path: str = "/") -> tuple[int, bytes]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = self._connect()
            try:
                self.conn.request("POST", path, body=request.body, headers=request.headers)
                response = self.conn.getresponse()
                body = response.read()
                if response.will_close:
                    self.close()
                return response.status, body
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
                self.reconnects += 1
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_load(
    port: int,
    requests: Sequence[Encoded],
    *,
    concurrency: int = 1,
    keep_bodies: bool = False,
    path: str = "/",
    time_limit: float = 600.0,
) -> LoadResult:
    """Sends every request once, ``concurrency`` at a time; stops early after ``time_limit``."""
    results = [LoadResult() for _ in range(concurrency)]
    cursor = iter(range(len(requests)))
    lock = threading.Lock()
    start_gate = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker(result: LoadResult) -> None:
        client = Client(port)
        start_gate.wait()
        try:
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None or time.monotonic() > stop_at[0]:
                    return
                began = time.perf_counter()
                try:
                    status, body = client.post(requests[index], path)
                except (OSError, http.client.HTTPException) as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    client.close()
                    continue
                result.latencies.append(time.perf_counter() - began)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if keep_bodies:
                    result.bodies.append(body)
        finally:
            result.reconnects += client.reconnects
            client.close()

    threads = [
        threading.Thread(target=worker, args=(r,), name=f"load-{i}", daemon=True)
        for i, r in enumerate(results)
    ]
    for thread in threads:
        thread.start()
    stop_at[0] = time.monotonic() + time_limit
    began = time.perf_counter()
    start_gate.wait()
    for thread in threads:
        thread.join(time_limit + 60)
    total = LoadResult()
    total.wall = time.perf_counter() - began
    for result in results:
        total.merge(result)
    return total


def first_answer(port: int, request: Encoded, deadline: float) -> tuple[float, float, int, bytes]:
    """Connects as soon as the port accepts and sends ``request``.

    Returns the monotonic times of the accepted connection and of the answer, the status and
    the body. Retries refused connections every 2 ms until ``deadline`` (monotonic).
    """
    while True:
        try:
            conn = http.client.HTTPConnection(
                HOST, port, timeout=max(deadline - time.monotonic(), 1)
            )
            conn.connect()
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)
    connected = time.monotonic()
    try:
        conn.request("POST", "/", body=request.body, headers=request.headers)
        response = conn.getresponse()
        body = response.read()
        return connected, time.monotonic(), response.status, body
    finally:
        conn.close()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summary(result: LoadResult) -> dict[str, Any]:
    return {
        "count": result.count,
        "wall_s": round(result.wall, 4),
        "rate_per_s": round(result.rate, 2),
        "p50_ms": round(percentile(result.latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(result.latencies, 99) * 1000, 3),
        "max_ms": round(max(result.latencies, default=0) * 1000, 3),
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "errors": len(result.errors),
        "reconnects": result.reconnects,
    }
