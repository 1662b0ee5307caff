"""Limits that keep one caller from starving the others.

- a token bucket per principal on the /v1 routes (429 with Retry-After),
- a cap on questions answered at once (beyond it a request waits briefly, then gets 503),
- a cap on request bodies other than uploads (413, before the body is parsed),
- a deadline for the response to start (504).

All rejections are cheap and carry the usual `{"error": {"code", "message"}}` body.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import CurrentPrincipal
from api.errors import ApiError
from api.schemas import ErrorResponse
from core.injection import PromptInjectionError
from core.settings import Settings

_PRUNE_AT = 10_000  # buckets kept before full ones (same as absent) are dropped


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class TokenBucketLimiter:
    """`per_minute` requests per key on average, `burst` at once; thread-safe."""

    per_minute: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.per_minute < 0 or self.burst < 1:
            raise ValueError("per_minute must be >= 0 and burst >= 1")

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def acquire(self, key: str) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is available."""
        if not self.enabled:
            return 0.0
        rate = self.per_minute / 60.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= _PRUNE_AT:
                    self._prune(now, rate)
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate

    def _prune(self, now: float, rate: float) -> None:
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]


class ConcurrencyLimit:
    """At most `capacity` holders; a newcomer waits up to `wait_s` for a slot, else is refused."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        if capacity < 1 or wait_s < 0:
            raise ValueError("capacity must be >= 1 and wait_s >= 0")
        self.capacity = capacity
        self.wait_s = wait_s
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def _semaphore(self) -> asyncio.Semaphore:
        # One per event loop: a test client may run the same app on several loops in turn.
        loop = asyncio.get_running_loop()
        if loop not in self._semaphores:
            self._semaphores = {loop: asyncio.Semaphore(self.capacity)}
        return self._semaphores[loop]

    async def acquire(self) -> bool:
        semaphore = self._semaphore()
        if self.wait_s == 0:
            if semaphore.locked():
                return False
            await semaphore.acquire()
            return True
        try:
            await asyncio.wait_for(semaphore.acquire(), self.wait_s)
        except TimeoutError:
            return False
        return True

    def release(self) -> None:
        self._semaphore().release()


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _subject_key(request: Request, subject: str, anonymous: str) -> str:
    """Anonymous callers (auth off) share a subject, so they are told apart by address."""
    if subject == anonymous and request.client is not None:
        return f"{subject}@{request.client.host}"
    return subject


async def rate_limit(request: Request, principal: CurrentPrincipal) -> None:
    limiter: TokenBucketLimiter = request.app.state.rate_limiter
    anonymous = request.app.state.services.anonymous_principal().subject
    wait = limiter.acquire(_subject_key(request, principal.subject, anonymous))
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests: retry in {math.ceil(wait)} s (REGULUS_RATE_LIMIT_PER_MINUTE)",
            headers=_retry_after(wait),
        )


async def query_slot(request: Request) -> AsyncIterator[None]:
    """Held while a question is answered (and its answer streamed)."""
    slots: ConcurrencyLimit = request.app.state.query_slots
    if not await slots.acquire():
        raise ApiError(
            503,
            "over_capacity",
            f"all {slots.capacity} answer slots are busy; retry shortly",
            headers=_retry_after(1),
        )
    try:
        yield
    finally:
        slots.release()


RateLimited = Depends(rate_limit)

# What any /v1 route may answer besides its own responses (all with the error body).
V1_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in [
        (401, "Missing or invalid credentials"),
        (403, "Not allowed for this principal"),
        (413, "Request body over REGULUS_MAX_REQUEST_MB"),
        (422, "Malformed request"),
        (429, "Rate limited: retry after Retry-After seconds"),
        (504, "No response within REGULUS_REQUEST_TIMEOUT_S"),
    ]
}
QuerySlot = Annotated[None, Depends(query_slot)]


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Refuses bodies over `max_bytes` before anything parses them; multipart uploads pass
    (the upload route streams each file to disk and stops at REGULUS_MAX_FILE_MB)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is over {self.max_bytes} bytes (REGULUS_MAX_REQUEST_MB)"
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_error(send, 400, "invalid_request", "invalid Content-Length")
                return
            if int(declared) > self.max_bytes:
                await _send_error(send, 413, "too_large", too_large)
                return
        # Read it whole (it is small by now), then replay it to the app.
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_bytes:
                await _send_error(send, 413, "too_large", too_large)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class ResponseTimeout:
    """A response must start within `timeout_s`, else 504; a started (streamed) one may run on."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()

        async def send_marking_start(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.set()
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, send_marking_start))
        waiter = asyncio.ensure_future(started.wait())
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=self.timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if not done:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await _send_error(
                send, 504, "timeout", f"no response within {self.timeout_s:g} s; try again"
            )
            return
        await task


def install_limits(app: FastAPI, settings: Settings) -> None:
    """State, middleware and the prompt-injection error body; the dependencies go on routes."""
    app.state.rate_limiter = TokenBucketLimiter(
        settings.rate_limit_per_minute, settings.rate_limit_burst
    )
    app.state.query_slots = ConcurrencyLimit(
        settings.max_concurrent_queries, settings.query_queue_s
    )
    app.add_middleware(BodySizeLimit, max_bytes=int(settings.max_request_mb * 2**20))
    app.add_middleware(ResponseTimeout, timeout_s=settings.request_timeout_s)

    @app.exception_handler(PromptInjectionError)
    async def prompt_injection(_: Request, error: PromptInjectionError) -> JSONResponse:
        body = {"error": {"code": "prompt_injection", "message": str(error)}}
        return JSONResponse(status_code=400, content=body)
