"""Slack HTTP mode's front door: malformed requests get 400, and rejected requests leave bounded logs.

slack-bolt's aiohttp adapter parses a body *before* it checks the signature, and trusts its shape: a body that is
not a JSON object, ``"event": null``, a form ``payload`` that is not JSON, an odd timestamp header… raise inside
bolt (500 and a traceback, for unsigned requests too). And bolt logs every bad signature at INFO with the request
body in the line, so anyone who can reach the port can write the log.

``RequestGuard`` is an aiohttp middleware in front of bolt's handler, and bolt's error handler behind it:

- It reads the body and checks what bolt relies on: headers bolt's verifier can read, a body bolt can parse into
  an object (bolt's own parser and context builder are run on it), an ``event`` that is an object, and types that
  are strings (bolt matches on them and logs them). A request that fails never reaches bolt. Only then is its
  signature checked, with the verifier bolt uses, because bolt cannot check it: a bad one gets 401, as bolt
  answers any unsigned request; a good one gets 400.
- Everything else goes to bolt unchanged, signature verification included (bolt stays the authority on that);
  its 401s are counted here and its body-carrying log line is dropped.
- An error bolt raises while dispatching a signed request (a shape the checks above let through) becomes 400
  with one line instead of 500 with a traceback. Well-formed requests that are not for us (an ``event`` without
  a ``type``) keep bolt's answer: 404.

Every rejection goes through ``RejectionLog``: no body in any line, and at most one summary a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.internals import build_normalized_headers, extract_content_type, parse_body
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier

BAD_SIGNATURE = "with a bad signature"
MALFORMED = "with a malformed body"
TOO_LARGE = "with a body over the size limit"

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
# The logger of bolt's RequestVerification middleware: its one line (a bad signature) carries the body.
BOLT_VERIFICATION_LOGGER = "slack_bolt.RequestVerification"
SUMMARY_WINDOW_SECS = 60.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RejectionLog:
    """Rejected requests, logged in bounded form.

    The first rejection after a quiet spell is one INFO line (with a short reason, never the body). Whatever
    follows within the minute is counted and summed up in one WARNING line when the minute is over ("rejected 500
    requests with a bad signature in the last minute"); a flood that goes on gets one summary a minute.
    ``clock`` is injectable for tests; ``close`` writes out what is still counted.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window: float = SUMMARY_WINDOW_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self._log = logger
        self._window = window
        self._opened: float | None = None  # when the current window began; None: quiet
        self._counts: Counter[str] = Counter()  # rejections in the current window, by reason
        self._reported = 0  # how many of them the window's INFO line already told
        self._timer: asyncio.TimerHandle | None = None

    def rejected(self, reason: str, detail: str = "") -> None:
        now = self.clock()
        if self._opened is not None and now - self._opened >= self._window:
            self.flush()  # the window is over (its timer did not get to run): summarise it first
            if self._opened is not None and now - self._opened >= self._window:
                self._opened = None  # and quiet ever since
        self._counts[reason] += 1
        if self._opened is None:
            self._opened, self._reported = now, 1
            why = f" ({detail})" if detail else ""
            self._log.info("rejected a request %s%s; more rejections are summarised once a minute", reason, why)
            return
        self._schedule(self._opened + self._window - now)

    def flush(self) -> None:
        """Write the summary of the current window, if it holds more than its INFO line told."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        total = sum(self._counts.values())
        if total > self._reported and self._opened is not None:
            self._log.warning("rejected %s in the last minute", _summary(self._counts, total))
            # the next window starts where this one ended: the next summary is a minute later at the earliest
            self._opened = min(self.clock(), self._opened + self._window)
        else:
            self._opened = None
        self._counts.clear()
        self._reported = 0

    def close(self) -> None:
        self.flush()

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a unit test): the next rejection or close() writes the summary
            return
        self._timer = loop.call_later(max(delay, 0.0), self.flush)


def _summary(counts: Counter[str], total: int) -> str:
    noun = "request" if total == 1 else "requests"
    if len(counts) == 1:
        (reason,) = counts
        return f"{total} {noun} {reason}"
    parts = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
    return f"{total} {noun} ({parts})"


class _DropBoltSignatureLine(logging.Filter):
    """Drops bolt's "Invalid request signature detected (… body: …)" line; RejectionLog counts those instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Invalid request signature")


def header_problem(request: web.Request) -> str | None:
    """Why bolt's signature verifier would raise on these headers (it calls ``int()`` on the timestamp and
    ``hmac.compare_digest`` on the signature, which takes ASCII only), or None."""
    for value in request.headers.getall(TIMESTAMP_HEADER, ()):
        try:
            int(value)
        except ValueError:
            return "the timestamp header is not a number"
    if not all(value.isascii() for value in request.headers.getall(SIGNATURE_HEADER, ())):
        return "the signature header is not ASCII"
    return None


def body_problem(text: str, request: web.Request) -> str | None:
    """Why slack-bolt cannot take this body (a short phrase, never the body itself), or None."""
    content_type = extract_content_type(build_normalized_headers(request.headers))  # type: ignore[arg-type]
    try:
        parsed: Any = parse_body(text, content_type)  # bolt's own parser: JSON, a form, or a form's JSON payload
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(parsed, dict):
        return f"JSON {type(parsed).__name__}, not an object"
    event = parsed.get("event", {})
    if not isinstance(event, dict):
        return "its event is not an object"
    # bolt matches on these and names them in its "Unhandled request" line: a string, or nothing
    if not isinstance(parsed.get("type"), str | None) or not isinstance(event.get("type"), str | None):
        return "a type that is not a string"
    try:  # exactly what bolt's aiohttp adapter builds next (it reads ids from the body into the context)
        AsyncBoltRequest(body=text, query=request.query_string, headers=request.headers)  # type: ignore[arg-type]
    except Exception as exc:
        return f"slack-bolt cannot read it ({type(exc).__name__})"
    return None


class RequestGuard:
    """The aiohttp middleware (see the module docstring) and bolt's error handler, for one adapter."""

    __middleware_version__ = 1  # a new-style aiohttp middleware: called as (request, handler)

    def __init__(
        self,
        *,
        path: str,
        signing_secret: str,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.rejections = RejectionLog(logger, clock=clock)
        self._verifier = SignatureVerifier(signing_secret) if signing_secret.strip() else None
        self._bolt_filter = _DropBoltSignatureLine()
        self._installed = False

    def install(self, web_app: web.Application) -> None:
        """Put the guard in front of bolt's handler and silence bolt's body-carrying signature line."""
        web_app.middlewares.append(self)
        if not self._installed:
            logging.getLogger(BOLT_VERIFICATION_LOGGER).addFilter(self._bolt_filter)
            self._installed = True

    def close(self) -> None:
        if self._installed:
            logging.getLogger(BOLT_VERIFICATION_LOGGER).removeFilter(self._bolt_filter)
            self._installed = False
        self.rejections.close()

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path != self.path:
            return await handler(request)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.rejections.rejected(TOO_LARGE)
            raise
        problem = header_problem(request)
        if problem is None:
            try:
                text = await request.text()
            except (UnicodeDecodeError, LookupError):
                problem = "not text in its charset"
            else:
                problem = body_problem(text, request)
        if problem is not None:
            return self._reject(request, raw, problem)
        try:
            response = await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:  # a shape the checks missed, failing before bolt's dispatch could catch it
            return self._reject(request, raw, f"slack-bolt failed on it ({type(exc).__name__})")
        if response.status == 401:
            self.rejections.rejected(BAD_SIGNATURE)
        return response

    async def bolt_error(self, error: Exception) -> BoltResponse:
        """bolt's global error handler: an error while dispatching a (verified) request is that request's fault,
        since our listeners never raise. 400 and one line, no traceback."""
        self.rejections.rejected(MALFORMED, f"slack-bolt failed on it ({type(error).__name__})")
        return BoltResponse(status=400, body={"error": "malformed request"})

    def _reject(self, request: web.Request, raw: bytes, problem: str) -> web.Response:
        if not self._signed(request, raw):
            self.rejections.rejected(BAD_SIGNATURE)
            return web.json_response({"error": "invalid request"}, status=401)
        self.rejections.rejected(MALFORMED, problem)
        return web.json_response({"error": "malformed request"}, status=400)

    def _signed(self, request: web.Request, raw: bytes) -> bool:
        """Whether the request carries a valid signature, checked with the verifier bolt uses; for requests bolt
        cannot take, so it cannot check them."""
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        signature = request.headers.get(SIGNATURE_HEADER)
        if self._verifier is None or timestamp is None or signature is None:
            return False
        try:
            return self._verifier.is_valid(raw, timestamp, signature)
        except (ValueError, TypeError):  # an unreadable timestamp, a non-ASCII signature, a body not UTF-8
            return False


__all__ = ["RejectionLog", "RequestGuard", "body_problem", "header_problem"]
