"""Limits that keep one caller from starving the others.

- the caller of a request with a body is authenticated before a byte of it is read (401), and
  a client address whose authentications keep failing is refused outright for a while (429),
- multipart bodies only on the upload routes (415), uploads up to REGULUS_MAX_UPLOAD_MB and any
  other body up to REGULUS_MAX_REQUEST_MB (413: at once by Content-Length, else once past it),
- a token bucket per principal on the /v1 routes (429 with Retry-After),
- a cap on questions answered at once (beyond it a request waits briefly, then gets 503),
- a deadline for the response to start (504).

All rejections are cheap and carry the usual `{"error": {"code", "message"}}` body. Refusals are
audited with repeats coalesced (`AuthGuard`), so a flood cannot grow the audit log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Annotated, Any, NoReturn

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import CurrentPrincipal, authenticate, bearer_credential
from api.errors import ApiError
from api.schemas import ErrorResponse
from core.audit import AuditEvent, AuditLog
from core.injection import PromptInjectionError
from core.models import Principal
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

    def wait_time(self, key: str) -> float:
        """Seconds until `key` may take a token (0.0: now); takes none."""
        if not self.enabled:
            return 0.0
        rate = self.per_minute / 60.0
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            tokens = min(self.burst, bucket.tokens + (self.clock() - bucket.updated) * rate)
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate

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


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass
class _Repeats:
    """Refusals of one kind to one client since the audit row that opened its window."""

    opened: float
    first_time: dt.datetime
    count: int = 0
    targets: Counter[str] = field(default_factory=Counter)


_MAX_TRACKED = 10_000  # open windows kept; beyond, the oldest is closed (and written) early


class AuthGuard:
    """Failed authentications limited per client address, and refusals audited in bounded number.

    The first refusal of a kind (client address, actor, status, code) writes its audit row as
    before; later ones within `window_s` are only counted, and one row with their number
    (`repeated`) is written when the window is over (at the next refusal after it, or at
    shutdown): at most two rows per kind and window, however hard a client floods.
    """

    def __init__(
        self,
        audit: AuditLog,
        failures_per_minute: float,
        failure_burst: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self._audit = audit
        self._failures = TokenBucketLimiter(failures_per_minute, failure_burst, clock=clock)
        self._window_s = window_s
        self._clock = clock
        self._windows: OrderedDict[tuple[str, str, int, str], _Repeats] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, request: Request) -> None:
        """429 when this client address used up its failed authentications."""
        wait = self._failures.wait_time(client_address(request))
        if wait > 0:
            self.refuse(
                request,
                429,
                "too_many_failures",
                f"too many failed authentications from this address: retry in {math.ceil(wait)} s "
                "(REGULUS_AUTH_FAILURES_PER_MINUTE)",
                headers=_retry_after(wait),
            )

    def refuse(
        self,
        request: Request,
        status: int,
        code: str,
        message: str,
        principal: Principal | None = None,
        headers: dict[str, str] | None = None,
    ) -> NoReturn:
        address = client_address(request)
        if status == 401:
            self._failures.acquire(address)
        actor = principal.subject if principal else "unauthenticated"
        key = (address, actor, status, code)
        target = f"{request.method} {request.url.path}"
        now = self._clock()
        with self._lock:
            closed = self._close_windows(now)
            repeats = self._windows.get(key)
            opens = repeats is None or now - repeats.opened >= self._window_s
            if opens:
                if repeats is not None:
                    closed.append((key, self._windows.pop(key)))
                self._windows[key] = _Repeats(opened=now, first_time=dt.datetime.now(dt.UTC))
            else:
                assert repeats is not None
                repeats.count += 1
                repeats.targets[target] += 1
        for closed_key, closed_repeats in closed:
            self._write_repeats(closed_key, closed_repeats)
        if opens:
            self._audit.append(
                AuditEvent.DENIED,
                actor,
                role=principal.role.value if principal else None,
                target=target,
                detail={"status": status, "code": code, "message": message, "client": address},
            )
        raise ApiError(status, code, message, headers=headers)

    def _close_windows(self, now: float) -> list[tuple[tuple[str, str, int, str], _Repeats]]:
        """Take out the windows that are over (the oldest come first) or too many."""
        closed = []
        while self._windows:
            key, repeats = next(iter(self._windows.items()))
            if now - repeats.opened < self._window_s and len(self._windows) < _MAX_TRACKED:
                break
            closed.append((key, self._windows.pop(key)))
        return closed

    def _write_repeats(self, key: tuple[str, str, int, str], repeats: _Repeats) -> None:
        if not repeats.count:
            return
        address, actor, status, code = key
        self._audit.append(
            AuditEvent.DENIED,
            actor,
            target=repeats.targets.most_common(1)[0][0],
            detail={
                "status": status,
                "code": code,
                "client": address,
                "repeated": repeats.count,
                "since": repeats.first_time.isoformat(),
                "targets": dict(repeats.targets.most_common(5)),
            },
        )

    def flush(self) -> None:
        """Write the counts of every open window (at shutdown)."""
        with self._lock:
            closed = list(self._windows.items())
            self._windows.clear()
        for key, repeats in closed:
            self._write_repeats(key, repeats)


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


async def _send_error(
    send: Send, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


def _upload_paths(schema: dict[str, Any]) -> list[re.Pattern[str]]:
    """The paths whose operations take multipart bodies, from the app's OpenAPI schema."""
    return [
        re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
        for path, item in schema["paths"].items()
        if any(
            "multipart/form-data" in operation.get("requestBody", {}).get("content", {})
            for operation in item.values()
            if isinstance(operation, dict)
        )
    ]


class RequestGate:
    """Decides about a request before anything reads its body (see the module doc): the caller
    is authenticated first, then its content type and size are held to the route's limits.

    An upload streams on to the route (which spools it to disk), counted as it goes; any other
    body is small by then, so it is read whole and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_request_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_upload_bytes = max_upload_bytes
        self._uploads: list[re.Pattern[str]] | None = None

    def _is_upload(self, scope: Scope) -> bool:
        if self._uploads is None:  # the schema is complete once the app serves
            self._uploads = _upload_paths(scope["app"].openapi())
        return any(pattern.match(scope["path"]) for pattern in self._uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["path"].startswith("/v1/"):
            try:
                authenticate(
                    Request(scope),
                    scope["app"].state.services,
                    bearer_credential(headers.get("authorization")),
                )
            except ApiError as error:
                await _send_error(send, error.status_code, error.code, error.detail, error.headers)
                return
        upload = self._is_upload(scope)
        if headers.get("content-type", "").startswith("multipart/form-data") and not upload:
            await _send_error(
                send, 415, "unsupported_media_type", "multipart bodies go to the upload routes only"
            )
            return
        limit = self.max_upload_bytes if upload else self.max_request_bytes
        setting = "REGULUS_MAX_UPLOAD_MB" if upload else "REGULUS_MAX_REQUEST_MB"
        too_large = f"the request body is over {limit} bytes ({setting})"
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_error(send, 400, "invalid_request", "invalid Content-Length")
                return
            if int(declared) > limit:
                await _send_error(send, 413, "too_large", too_large)
                return
        if upload:
            await self.app(scope, _counted(receive, limit, too_large), send)
            return
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > limit:
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


def _counted(receive: Receive, limit: int, too_large: str) -> Receive:
    """`receive` that fails the request (413, before any response) once past `limit` bytes."""
    size = 0

    async def counting() -> Message:
        nonlocal size
        message = await receive()
        size += len(message.get("body", b""))
        if size > limit:
            raise ApiError(413, "too_large", too_large)
        return message

    return counting


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
    app.add_middleware(
        RequestGate,
        max_request_bytes=int(settings.max_request_mb * 2**20),
        max_upload_bytes=int(settings.max_upload_mb * 2**20),
    )
    app.add_middleware(ResponseTimeout, timeout_s=settings.request_timeout_s)

    @app.exception_handler(PromptInjectionError)
    async def prompt_injection(request: Request, error: PromptInjectionError) -> JSONResponse:
        await _audit_rejection(request, error)
        body = {"error": {"code": "prompt_injection", "message": str(error)}}
        return JSONResponse(status_code=400, content=body)


async def _audit_rejection(request: Request, error: PromptInjectionError) -> None:
    """The refused question and who asked it (the route had read the body: it is cached)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    try:
        question = (await request.json()).get("question")
    except (ValueError, AttributeError):
        question = None
    audit: AuditLog = request.app.state.services.audit
    audit.record_rejection(
        principal,
        question if isinstance(question, str) else None,
        target=f"{request.method} {request.url.path}",
        detail={
            "code": "prompt_injection",
            "reasons": error.screening.reasons,
            "client": client_address(request),
        },
    )
