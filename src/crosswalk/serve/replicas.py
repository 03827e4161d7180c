"""``serve(model, ServeConfig)``: N replica processes on one listening socket, under a supervisor.

The parent binds the socket and passes it to each worker (as uvicorn's and gunicorn's multi-worker modes
do); the kernel spreads connections over the workers' ``accept`` calls, so no proxy sits on the request
path (Ray Serve's Python proxy is its bottleneck: serving.md sec. 4, item 7). Each worker owns its runtime
and batcher. Workers start from a ``forkserver`` that has imported the serving stack but run nothing: a
fork of a process whose thread pools have run can hang in the child (DEVELOPERS.md), and a plain ``spawn``
would pay the imports again for every replacement.

The supervisor:

- restarts a worker that dies (SIGKILL, OOM, a crash in native code). The OS resets the dead worker's
  connections, so its clients get an error at once, never a hang; connections still in the listen backlog
  go to the other workers. A worker that dies before ever becoming ready three times in a row stops the
  server (a model that cannot load must not crash-loop forever).
- on SIGTERM or SIGINT forwards SIGTERM to every worker; each stops accepting, reports not-ready, finishes
  its in-flight requests (up to ``drain_timeout_s``) and exits; then the supervisor exits 0.
- shares one readiness flag per worker (shared memory), so ``/v2/health/ready`` on any worker reports how
  many replicas are ready, and the Prometheus multiprocess directory, so ``/metrics`` sums all workers.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from crosswalk.serve.config import ServeConfig

log = logging.getLogger("crosswalk.serve")
CRASHES_BEFORE_GIVING_UP = 3
# Imported once by the fork server, so a replacement replica only loads the model: it is ready in about a
# second instead of several on a busy 2-core machine. Imports only: no runtime session and no OpenCV thread
# pool has run in the fork server, so forking it is safe (a fork of a process whose pools ran is not).
PRELOAD = ["crosswalk.serve.app", "onnxruntime", "uvicorn", "uvloop", "httptools"]


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(model: str | Path | None, cfg: ServeConfig) -> int:
    """Serve ``model`` until SIGTERM/SIGINT; returns the exit code. Prints the URL once the port is bound."""
    sock = bind_socket(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    mode = f"{cfg.replicas} replica(s)" if cfg.replicas else "in process, no supervisor"
    print(f"crosswalk serve: http://{shown}:{port} ({mode}, model {model or 'reference'})", flush=True)
    if cfg.replicas == 0:
        run_worker(model, cfg, sock)
        return 0
    return Supervisor(model, cfg, sock).run()


# ---- one worker -------------------------------------------------------------------------------------------


def run_worker(model, cfg: ServeConfig, sock: socket.socket, flags=None, index: int = 0) -> None:
    """Load the model, then serve on ``sock`` until SIGTERM (in this process)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import uvicorn

    from crosswalk.infer import Predictor
    from crosswalk.serve.app import Readiness, create_app

    predictor = Predictor(
        model, backend=cfg.backend, threads=cfg.runtime_threads(), max_pixels=cfg.max_pixels, warmup=True
    )
    readiness = Readiness(flags, index)
    app = create_app(predictor, cfg, readiness=readiness)
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=cfg.drain_timeout_s,
        server_header=False,
    )

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            readiness.set(False)  # before anything else: readiness must fall the moment a drain starts
            super().handle_exit(sig, frame)

    DrainingServer(config).run(sockets=[sock])


def _worker_main(model, cfg: ServeConfig, sock: socket.socket, flags, index: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
    threading.Thread(target=_drain_if_orphaned, args=(os.getppid(),), daemon=True).start()
    run_worker(model, cfg, sock, flags, index)


def _drain_if_orphaned(parent_pid: int) -> None:
    """A supervisor killed with SIGKILL cannot stop its workers: they notice and drain themselves."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


# ---- the supervisor ---------------------------------------------------------------------------------------


class Supervisor:
    def __init__(self, model, cfg: ServeConfig, sock: socket.socket) -> None:
        self.model = None if model is None else str(model)
        self.cfg = cfg
        self.sock = sock
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(PRELOAD)
        self.flags = self.ctx.Array("b", cfg.replicas, lock=False)
        self.procs: list[mp.process.BaseProcess | None] = [None] * cfg.replicas
        self.started_s = [0.0] * cfg.replicas
        self.was_ready = [False] * cfg.replicas
        self.crash_streak = 0
        self.stopping = False

    def run(self) -> int:
        metrics_dir = tempfile.mkdtemp(prefix="crosswalk-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before any worker starts or imports prometheus
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        code = 0
        try:
            for i in range(self.cfg.replicas):
                self._start(i)
            code = self._watch()
        finally:
            self._stop_all()
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return code

    def _on_signal(self, sig: int, frame) -> None:
        self.stopping = True

    def _start(self, i: int) -> None:
        self.flags[i] = 0
        proc = self.ctx.Process(
            target=_worker_main,
            args=(self.model, self.cfg, self.sock, self.flags, i),
            name=f"crosswalk-replica-{i}",
            daemon=False,
        )
        proc.start()
        print(f"crosswalk serve: replica {i} started (pid {proc.pid})", flush=True)
        self.procs[i] = proc
        self.started_s[i] = time.monotonic()
        self.was_ready[i] = False

    def _watch(self) -> int:
        from prometheus_client import multiprocess

        while not self.stopping:
            sentinels = [p.sentinel for p in self.procs if p is not None]
            mp.connection.wait(sentinels, timeout=0.2)
            for i, proc in enumerate(self.procs):
                self.was_ready[i] = self.was_ready[i] or bool(self.flags[i])
                if proc is None or proc.is_alive() or self.stopping:
                    continue
                self.flags[i] = 0
                multiprocess.mark_process_dead(proc.pid)
                print(
                    f"crosswalk serve: replica {i} (pid {proc.pid}) exited with {proc.exitcode}; restarting",
                    file=sys.stderr,
                    flush=True,
                )
                self.crash_streak = 0 if self.was_ready[i] else self.crash_streak + 1
                if self.crash_streak >= CRASHES_BEFORE_GIVING_UP:
                    print(
                        f"error: replicas died {self.crash_streak} times before becoming ready; giving up",
                        file=sys.stderr,
                    )
                    return 1
                self._start(i)
        return 0

    def _stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.is_alive():
                proc.terminate()  # SIGTERM: the worker drains, then exits
        deadline = time.monotonic() + self.cfg.drain_timeout_s + 10.0
        for proc in self.procs:
            if proc is None:
                continue
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                print(
                    f"crosswalk serve: replica pid {proc.pid} did not drain in time; killing", file=sys.stderr
                )
                proc.kill()
                proc.join(5.0)
