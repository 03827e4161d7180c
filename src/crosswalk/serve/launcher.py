"""``running_server(...)``: a real ``crosswalk serve`` in a subprocess, for tests, benchmarks and the demo.

It runs the same command a user types (``python -m crosswalk serve``), so whatever measures it measures the
product: the supervisor, the replicas and the HTTP stack included. The URL comes from the line the server
prints once its port is bound (port 0 = any free port, so parallel runs never collide), and the context
manager yields only when ``/v2/health/ready`` says every replica is ready. On exit it sends SIGTERM (the
server drains) and waits; a server that does not stop in time is killed.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from crosswalk.serve.config import API_KEY_ENV, ServeConfig

URL_LINE = re.compile(r"crosswalk serve: (http://\S+)")


def config_argv(cfg: ServeConfig) -> list[str]:
    """``ServeConfig`` -> the ``crosswalk serve`` flags that reproduce it (the API key goes by environment)."""
    default = ServeConfig()
    argv = []
    for f in fields(ServeConfig):
        value = getattr(cfg, f.name)
        if f.name == "api_key" or value == getattr(default, f.name):
            continue
        argv += [f"--{f.name.replace('_', '-')}", str(value)]
    return argv


class ServerProcess:
    """A started server: its URL, its process, and the last lines it printed (for error messages)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.url: str | None = None
        self._url_seen = threading.Event()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )
        self._reader = threading.Thread(target=self._read, name="crosswalk-serve-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            match = URL_LINE.search(line)
            if match and self.url is None:
                self.url = match.group(1)
                self._url_seen.set()
        self._url_seen.set()  # the process ended; wake whoever waits for the URL

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout_s: float, replicas: int) -> str:
        import httpx

        deadline = time.monotonic() + timeout_s
        if not self._url_seen.wait(timeout_s) or self.url is None:
            raise RuntimeError(f"crosswalk serve did not start:\n{self.output()}")
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"crosswalk serve exited with {self.proc.returncode}:\n{self.output()}"
                    )
                try:
                    r = client.get(f"{self.url}/v2/health/ready")
                    if r.status_code == 200 and r.json()["replicas_ready"] >= max(1, replicas):
                        return self.url
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"crosswalk serve not ready after {timeout_s:.0f} s:\n{self.output()}")

    def stop(self, timeout_s: float) -> int:
        """SIGTERM (drain), then SIGKILL to the whole process group if it takes longer than ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(5)
        return self.proc.returncode


@contextmanager
def running_server(
    model: str | Path | None = None,
    port: int = 0,
    *,
    ready_timeout_s: float = 120.0,
    env: dict[str, str] | None = None,
    process: list[ServerProcess] | None = None,
    **settings,
) -> Iterator[str]:
    """``with running_server(model=None, port=0, replicas=2, latency_target_ms=200) as url: ...``

    ``settings`` are ``ServeConfig`` fields (an unknown one fails at once). Yields the base URL
    (``http://127.0.0.1:PORT``) once every replica is ready. Pass a list as ``process`` to receive the
    ``ServerProcess`` (its pid, its output, or to signal it yourself).
    """
    cfg = ServeConfig.from_kwargs(port=port, **settings)
    argv = [sys.executable, "-m", "crosswalk", "serve"]
    if model is not None:
        argv.append(str(model))
    argv += config_argv(cfg)
    child_env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    if cfg.api_key:
        child_env[API_KEY_ENV] = cfg.api_key
    server = ServerProcess(argv, child_env)
    if process is not None:
        process.append(server)
    try:
        yield server.wait_ready(ready_timeout_s, cfg.replicas)
    finally:
        server.stop(cfg.drain_timeout_s + 15.0)
