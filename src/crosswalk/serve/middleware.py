"""Server plumbing as small pure-ASGI pieces (in the manner of Starlette's ``TrustedHostMiddleware``).

Pure ASGI rather than ``BaseHTTPMiddleware``: the handlers listen on ``receive`` for the client's
disconnect while a request is queued, which ``BaseHTTPMiddleware`` would hide, and each piece costs a
function call per message instead of a task per request.

Order (outermost first): ``RequestIdMiddleware``, ``MetricsMiddleware``, ``ApiKeyMiddleware``,
``BodyLimitMiddleware``; so a 401 or 413 is still counted and still carries its request id.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crosswalk.serve.metrics import ServeMetrics

OPEN_PATHS = ("/v2/health/", "/metrics", "/openapi.json")


async def send_json_error(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Echo the client's ``X-Request-Id`` (if short and printable) or make one; store it in ``request.state``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = value.decode("latin-1")
                break
        if not (0 < len(rid) <= 128 and rid.isprintable()):
            rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class MetricsMiddleware:
    """Requests by route template and status, request latency, and requests in flight."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # if the app raises before answering, the server error handler will send a 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = scope.get("route")
                self.metrics.request_latency.labels(getattr(route, "path", "unmatched")).observe(
                    time.perf_counter() - start
                )
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            self.metrics.requests.labels(getattr(route, "path", "unmatched"), str(status)).inc()


class ApiKeyMiddleware:
    """With a key configured, every path except health, metrics and the OpenAPI document needs it.

    Accepted as ``X-API-Key: KEY`` (LitServe's header) or ``Authorization: Bearer KEY``; compared in
    constant time. Health stays open so orchestrators can probe without the secret.
    """

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or _is_open(scope["path"]):
            return await self.app(scope, receive, send)
        given = b""
        for key, value in scope["headers"]:
            if key == b"x-api-key":
                given = value
            elif key == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
        if not hmac.compare_digest(given, self.key):
            return await send_json_error(
                send, 401, "missing or wrong API key: send X-API-Key", {"WWW-Authenticate": "Bearer"}
            )
        await self.app(scope, receive, send)


def _is_open(path: str) -> bool:
    return path.startswith(OPEN_PATHS[0]) or path in OPEN_PATHS[1:]


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``: at once from Content-Length, else while it streams in.

    A declared length over the limit is refused before a byte is read. A chunked body is counted as it
    arrives; crossing the limit raises ``HTTPException(413)`` inside the handler's read, which the app's
    error handler answers.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await send_json_error(send, 400, "Content-Length is not an integer")
                if declared > self.max_bytes:
                    return await send_json_error(send, 413, self._message(declared))
                break
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._message(received))
            return message

        await self.app(scope, counting_receive, send)

    def _message(self, size: int) -> str:
        return f"body of {size} bytes is over the limit of {self.max_bytes} bytes"
