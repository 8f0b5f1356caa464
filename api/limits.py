"""Who asks comes before what they send: the caller first, then a body within a limit.

A pure ASGI middleware (not BaseHTTPMiddleware: nothing is buffered, the live stream least of
all). A request that carries a body (POST, PUT, PATCH, DELETE, or any request declaring one):

- under `/api`, is answered 401 without a byte of its body read unless its bearer token or
  session cookie is valid, and 403 if it comes with a session but without the session's CSRF
  token (as `api.deps.identify` checks them; the database away: 503, as the app answers it).
  The login itself (POST /api/v1/session) is the one exception: it is how a session begins;
  its body is limited like any other;
- with a `Content-Length` over its route's limit, is answered 413 at once, nothing read;
- without one (chunked), is counted as it streams in and cut off with 413 as soon as it
  passes the limit.

The limit of an evidence upload (`POST /api/v1/tickets/{id}/attachments`) is the largest file
accepted plus room for the multipart framing and the note; the store checks the file itself.
Any other body (JSON) may be `[api] max_body_kib`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import CALLER, CSRF_HEADER, LOGIN_PATH, ApiContext, RefusedError, identify
from core.settings import ApiSettings, TicketSettings

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Boundaries, part headers, a file name and a note of 5,000 characters fit in this.
MULTIPART_OVERHEAD = 64 << 10
_UPLOAD = re.compile(r"/api/v1/tickets/[^/]+/attachments/?")
_DIGITS = re.compile(r"[0-9]{1,19}")

AwayHandler = Callable[[Request, Exception], Awaitable[Response]]


@dataclass(frozen=True)
class BodyLimits:
    """The largest request bodies, in bytes."""

    body_bytes: int  # any body but an upload
    attachment_bytes: int  # the largest evidence file

    @classmethod
    def of(cls, api: ApiSettings, tickets: TicketSettings) -> BodyLimits:
        """The limits the settings give."""
        return cls(api.max_body_kib << 10, int(tickets.attachment_max_mb * 2**20))

    def for_request(self, method: str, path: str) -> tuple[int, str]:
        """The limit of a request's body and the reason given when it is over it."""
        if method == "POST" and _UPLOAD.fullmatch(path):
            limit = self.attachment_bytes + MULTIPART_OVERHEAD
            return limit, (
                f"the upload is larger than {limit:,} bytes: an evidence file may be "
                f"{self.attachment_bytes:,} bytes at most"
            )
        limit = self.body_bytes
        return limit, f"the request body is larger than {limit:,} bytes, the most it may be"


DEFAULT_LIMITS = BodyLimits.of(ApiSettings(), TicketSettings())


class BodyTooLargeError(HTTPException):
    """Raised into the app when a streamed body passes its limit (an HTTPException, so that
    FastAPI's body parsing lets it through instead of making it a 400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(413, reason)


class BodyGate:
    """The caller is known before the body is read, and the body is never over its limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        context: ApiContext,
        limits: BodyLimits,
        away: tuple[type[Exception], ...],
        on_away: AwayHandler,
    ) -> None:
        """`away`: the exceptions that mean the database is not answering; `on_away` answers
        them (the app's 503)."""
        self.app = app
        self.context = context
        self.limits = limits
        self.away = away
        self.on_away = on_away

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method: str = scope["method"]
        declared = headers.get("content-length")
        if not (
            method in BODY_METHODS
            or (declared is not None and declared != "0")
            or "transfer-encoding" in headers
        ):
            await self.app(scope, receive, send)  # no body: untouched (the live stream)
            return
        path: str = scope["path"]
        if (path == "/api" or path.startswith("/api/")) and (method, path) != ("POST", LOGIN_PATH):
            refusal = await self._refusal(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        limit, reason = self.limits.for_request(method, path)
        if declared is not None:
            if not _DIGITS.fullmatch(declared):
                bad = _answer(400, "the Content-Length header is not a number of bytes")
                await bad(scope, receive, send)
                return
            if int(declared) > limit:
                await _answer(413, reason)(scope, receive, send)
                return
        cap = _Cap(scope, receive, send, limit, reason)
        try:
            await self.app(scope, cap.receive, cap.send)
        except BodyTooLargeError:
            if not cap.answered:  # the app had begun its answer: only cutting it off is left
                raise

    async def _refusal(self, scope: Scope, headers: Headers) -> Response | None:
        """None if the request's caller is let in (left in the scope's state for the app's
        dependencies), else the answer to give."""
        try:
            caller = await asyncio.to_thread(
                identify,
                self.context,
                method=scope["method"],
                authorization=headers.get("authorization"),
                cookies=cookie_parser(headers.get("cookie", "")),
                csrf=headers.get(CSRF_HEADER),
                https=scope.get("scheme") == "https",
            )
        except RefusedError as refused:
            return JSONResponse(
                {"detail": refused.detail}, status_code=refused.code, headers=refused.headers
            )
        except self.away as exc:
            return await self.on_away(Request(scope), exc)
        scope.setdefault("state", {})[CALLER] = caller
        return None


class _Cap:
    """Counts the body as the app reads it; past the limit, answers 413 and stops the app."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, limit: int, reason: str):
        self._scope = scope
        self._receive = receive
        self._send = send
        self._limit = limit
        self._reason = reason
        self.received = 0
        self.started = False  # the app has begun its answer
        self.answered = False  # the 413 is sent: whatever the app answers is dropped

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self._limit:
                if not self.started and not self.answered:
                    self.answered = True
                    await _answer(413, self._reason)(self._scope, self._receive, self._send)
                raise BodyTooLargeError(self._reason)
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def _answer(status_code: int, reason: str) -> JSONResponse:
    return JSONResponse({"detail": reason}, status_code=status_code)
