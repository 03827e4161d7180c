"""The two systems under test of ``crosswalk bench infer``, as LoadGen handlers of QSL indices.

``RuntimeSUT`` calls ``crosswalk.infer.Predictor`` in this process; ``HttpSUT`` posts the same JPEGs to a
server's ``/v1/detect``. Both take lists of indices into the in-memory JPEGs and return when they are done;
``crosswalk.bench.loadgen.run_loadgen`` answers LoadGen for them.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import orjson


class RuntimeSUT:
    """The in-process runtime on QSL indices; keeps the network-only time of each batch-1 call.

    ``batch`` may be called from several worker threads: decode, letterbox and NMS of one batch then overlap
    the network of another (OpenCV and onnxruntime release the GIL), while the network itself runs one batch
    at a time with all its threads (the lock; ``Predictor.run`` is meant for one thread at a time)."""

    def __init__(self, predictor, jpegs: list[bytes]) -> None:
        self.predictor = predictor
        self.jpegs = jpegs
        self.network_ms: list[float] = []
        self._network = threading.Lock()

    def single(self, indices: list[int]) -> None:
        p = self.predictor
        for i in indices:
            prep = p.prepare(self.jpegs[i])
            t0 = time.perf_counter_ns()
            boxes, scores = p.run(prep.pixels[None])
            self.network_ms.append((time.perf_counter_ns() - t0) / 1e6)
            p.postprocess(boxes[0], scores[0], prep)

    def batch(self, indices: list[int]) -> None:
        p = self.predictor
        preps = [p.prepare(self.jpegs[i]) for i in indices]
        pixels = np.stack([prep.pixels for prep in preps])
        with self._network:
            boxes, scores = p.run(pixels)
        for k, prep in enumerate(preps):
            p.postprocess(boxes[k], scores[k], prep)


class HttpSUT:
    """``POST {url}/v1/detect`` with JPEG bytes over one keep-alive connection per calling thread.

    The client is the standard library's ``http.client``: measured here against the same loopback server, a
    reused ``httpx.Client`` took 4.0-6.4 ms a request where ``http.client`` took 0.5-1.0 ms (2 busy cores), and
    what the client spends would otherwise be charged to the server in ``overhead_ms``. Like ``httpx`` (and
    unlike ``httpx.post``), no connection or TLS set-up per request (env.md sec. 7)."""

    def __init__(self, url: str, jpegs: list[bytes], timeout_s: float = 30.0) -> None:
        # Per ``single`` call: the client's milliseconds and the server's own ``Server-Timing`` parts of it
        # (decode, queue, compute); empty parts when the server sends no such header.
        self.timings: list[tuple[float, dict[str, float]]] = []
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must look like http://host:port, got {url!r}")
        self._connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self.host, self.port = parts.hostname, parts.port
        self.path = parts.path.rstrip("/") + "/v1/detect"
        self.jpegs = jpegs
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connection_class(self.host, self.port, timeout=self.timeout_s)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def detect(self, index: int) -> dict:
        return self._detect(index)[0]

    def _detect(self, index: int) -> tuple[dict, dict[str, float]]:
        headers = {"content-type": "image/jpeg"}
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request("POST", self.path, body=self.jpegs[index], headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A keep-alive connection the server closed while idle (uvicorn does after 5 s): reconnect once.
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        if response.status != 200:
            raise RuntimeError(
                f"HTTP {response.status} from {self.path}: {data[:200].decode(errors='replace')}"
            )
        return orjson.loads(data), server_timing(response.getheader("server-timing"))

    def single(self, indices: list[int]) -> None:
        """As ``handle``, keeping each request's client time and the server's Server-Timing parts."""
        for i in indices:
            t0 = time.perf_counter_ns()
            _, parts = self._detect(i)
            self.timings.append(((time.perf_counter_ns() - t0) / 1e6, parts))

    def handle(self, indices: list[int]) -> None:
        for i in indices:
            self.detect(i)

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


def server_timing(header: str | None) -> dict[str, float]:
    """``Server-Timing: decode;dur=1.2, queue;dur=0.1`` -> {"decode": 1.2, "queue": 0.1} (milliseconds);
    entries without a ``dur`` are left out, and so is anything that does not parse."""
    parts: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, *params = (p.strip() for p in entry.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key.strip() == "dur":
                try:
                    parts[name] = float(value.strip().strip('"'))
                except ValueError:
                    pass
    return parts
