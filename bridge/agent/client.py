"""HTTP + SSE to the agent API: one call in, one finite stream of `AgentEvent`s out.

`AgentClient.stream` never raises for upstream trouble: every way a request can go wrong
(HTTP status, connection, idle stream, malformed reply) ends the stream with exactly one
`Failed`, and a normal reply ends with exactly one `Completed`. Requests are retried only
while no event has been yielded, so a message is never sent twice once the agent started
answering. Dialect details live in `dialects`, SSE framing in `sse`, wait times in `retry`.

The HTTP client is aiohttp: its C HTTP parser and asyncio-native transport cost about a third of
the CPU per streamed event that httpx (h11 + anyio) did, and that CPU is the bridge's event loop
at a thousand concurrent replies (figures in docs/perf-notes-agent-client.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from itertools import count
from types import TracebackType

import aiohttp
import httpx
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from bridge.agent import dialects
from bridge.agent.dialects import StreamParser, UpstreamRequest
from bridge.agent.retry import parse_retry_after, retry_delay
from bridge.agent.sse import SseDecoder
from bridge.config import Dialect, Settings
from bridge.events import AgentEvent, Completed, Failed
from bridge.failures import AgentError, AgentFailure, FailureCode

log = logging.getLogger("bridge.agent")

ERROR_BODY_LIMIT = 64 * 1024
MAX_CONNECTIONS = 200
_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class _Call:
    """What one `stream` call knows while it runs; failures pick up its trace id."""

    agent_id: str
    conversation_sent: bool
    parser: StreamParser

    def fail(self, code: FailureCode, *, retry_after: float | None = None, **fields: object) -> AgentError:
        fields.setdefault("trace_id", self.parser.trace_id)
        return AgentError(AgentFailure.of(code, **fields), retry_after)  # type: ignore[arg-type]


class AgentClient:
    """Streams one agent reply per `stream` call; share one instance across the process."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        session_ids: Callable[[], str] = new_session_id,
    ) -> None:
        self._settings = settings
        self._dialect = settings.agent_api_dialect
        self._base = str(settings.agent_api_url).rstrip("/")
        self._secrets = tuple(settings.secrets())
        self._sleep = sleep
        self._session_ids = session_ids
        self._owns_http = http is None
        self._http = http  # made on first use: an aiohttp session belongs to a running loop
        self._proxy, self._proxy_auth = _env_proxy(self._base)
        # The trust store httpx used (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), loaded here at
        # start-up rather than on the loop during the first reply; plain HTTP needs none.
        self._ssl = httpx.create_ssl_context() if self._base.lower().startswith("https:") else True
        # sock_read is the idle timeout: it restarts with every chunk (keep-alives included), so a
        # long but lively reply is never cut off. No total or pool timeout: a burst beyond the
        # pool waits for a connection instead of failing.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,
            sock_connect=settings.agent_connect_timeout,
            sock_read=settings.agent_idle_timeout,
        )

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            # Not trust_env=True: that would also read ~/.netrc on every request, in a thread, and
            # refuse requests that carry their own Authorization header when it has an entry.
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ssl=self._ssl))
        return self._http

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def validate_agent_id(self, agent_id: str) -> str | None:
        """A sentence for the admin when `agent_id` can't be valid for the configured dialect."""
        return dialects.validate_agent_id(self._dialect, agent_id)

    async def stream(
        self, agent_id: str, message: str, conversation_id: str | None = None
    ) -> AsyncIterator[AgentEvent]:
        """The reply as events, ending with exactly one `Completed` or `Failed`.

        Consume it with `contextlib.aclosing` (or to the end): closing or cancelling it closes
        the upstream HTTP stream at once.
        """
        call = _Call(agent_id, conversation_id is not None, StreamParser(self._secrets))
        try:
            async with aclosing(self._events(call, message, conversation_id)) as events:
                async for event in events:
                    if isinstance(event, Failed):
                        self._log_failure(call, event.failure)
                    yield event
                    if isinstance(event, (Completed, Failed)):
                        return  # closing `events` closes the HTTP stream: nothing after the end
            raise call.fail(FailureCode.PROTOCOL_ERROR, detail="the reply ended without a final event")
        except AgentError as exc:
            self._log_failure(call, exc.failure)
            yield Failed(exc.failure)
        except _TRANSPORT_ERRORS as exc:  # a safety net: known cases are mapped in _send/_read_sse
            failure = call.fail(FailureCode.CONNECTION_DROPPED, detail=type(exc).__name__).failure
            self._log_failure(call, failure)
            yield Failed(failure)

    async def _events(
        self, call: _Call, message: str, conversation_id: str | None
    ) -> AsyncIterator[AgentEvent]:
        """Raw event flow; raises `AgentError`, and ends after a terminal event or raises."""
        key = self._settings.api_key
        thinnest = self._dialect is Dialect.THINNEST
        # thinnest never names the session: the client picks it and announces it first.
        session = conversation_id or (self._session_ids() if thinnest else None)
        request = dialects.stream_request(
            self._dialect, api_key=key, agent_id=call.agent_id, message=message, session_id=session
        )
        try:
            response = await self._send(request, call)
        except AgentError as exc:
            if thinnest or exc.failure.code is not FailureCode.PLAN_UPGRADE_REQUIRED:
                raise
            log.info("agent stream refused (plan_upgrade_required): falling back to POST /v1/chat")
            fallback = dialects.chat_request(
                api_key=key, agent_id=call.agent_id, message=message, conversation_id=conversation_id
            )
            for event in await self._chat(fallback, call):
                yield event
            return
        try:
            self._check_event_stream(response, call)
            if thinnest and session:
                yield call.parser.announce(session)
            # Inlined rather than a nested generator: every event would pay one more hop.
            decoder = SseDecoder()
            feed = call.parser.feed
            try:
                async for chunk in response.content.iter_any():
                    # everything that arrived together is framed and parsed together
                    for name, data in decoder.feed(chunk):
                        for event in feed(name, data):
                            yield event
            except _TRANSPORT_ERRORS as exc:
                raise self._transport_error(exc, call) from None
            raise call.fail(FailureCode.CONNECTION_DROPPED, detail="the stream ended before its done event")
        finally:
            # back to the pool only when the body was read to its end; otherwise closed
            response.release()

    async def _send(self, request: UpstreamRequest, call: _Call) -> aiohttp.ClientResponse:
        """Sends with retries; returns a 2xx response whose body is still unread."""
        session = self._session()
        url = self._base + request.path
        headers = dict(request.headers)
        if request.streaming:
            headers.update({"Accept": "text/event-stream", "Cache-Control": "no-store"})
        body = json.dumps(request.body, ensure_ascii=False, separators=(",", ":")).encode()
        max_retries = self._settings.agent_max_retries
        for attempt in count(1):
            try:
                response = await session.post(
                    url,
                    data=body,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                    proxy=self._proxy,
                    proxy_auth=self._proxy_auth,
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                self._log_request(request, call, type(exc).__name__, attempt)
                error = call.fail(FailureCode.UNREACHABLE, detail=f"{type(exc).__name__} to {request.path}")
                retryable = True
            except _TRANSPORT_ERRORS as exc:
                self._log_request(request, call, type(exc).__name__, attempt)
                raise self._transport_error(exc, call) from None
            else:
                call.parser.trace_id = response.headers.get("x-trace-id") or call.parser.trace_id
                self._log_request(request, call, response.status, attempt)
                if 200 <= response.status < 300:
                    return response
                error, retryable = await self._http_error(response, call)
            if not retryable or attempt > max_retries:
                raise error
            delay = retry_delay(attempt - 1, error.retry_after, self._settings.agent_retry_after_cap)
            log.info(
                "agent request %s will be retried in %.2fs (%s, attempt %d of %d)",
                request.path,
                delay,
                error.failure.code.value,
                attempt,
                max_retries + 1,
            )
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - count() never ends

    async def _http_error(self, response: aiohttp.ClientResponse, call: _Call) -> tuple[AgentError, bool]:
        """Maps a non-2xx answer to a failure, and says whether a retry may help."""
        try:
            text = await _read_limited(response)
        finally:
            response.release()
        body = dialects.read_error_body(text)
        call.parser.trace_id = call.parser.trace_id or body.trace_id
        status = response.status
        upstream_code = dialects.clean_detail(body.code, self._secrets)
        said = f"{body.code or ''} {body.message or ''} {text}".lower()
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if status == 429:
            code, retryable = FailureCode.RATE_LIMITED, True
        elif status >= 500:
            code, retryable = FailureCode.UPSTREAM_UNAVAILABLE, True
        else:
            retryable = False
            if status == 401:
                code = FailureCode.INVALID_API_KEY
            elif status == 402:
                code = FailureCode.INSUFFICIENT_BALANCE
            elif status == 403:
                plan = "plan_upgrade_required" in said
                code = FailureCode.PLAN_UPGRADE_REQUIRED if plan else FailureCode.INVALID_API_KEY
            elif status == 404:
                conversation = (body.code or "").lower() == "conversation_not_found" or (
                    call.conversation_sent and "conversation" in said
                )
                code = FailureCode.CONVERSATION_NOT_FOUND if conversation else FailureCode.AGENT_NOT_FOUND
            elif 400 <= status < 500:
                code = FailureCode.BAD_REQUEST
            else:  # 1xx/3xx: nothing this client can follow
                code = FailureCode.PROTOCOL_ERROR
        error = call.fail(
            code,
            retry_after=retry_after,
            http_status=status,
            upstream_code=upstream_code,
            detail=dialects.clean_detail(body.message, self._secrets),
        )
        return error, retryable

    @staticmethod
    def _check_event_stream(response: aiohttp.ClientResponse, call: _Call) -> None:
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type.partition(";")[0].lower():
            raise call.fail(
                FailureCode.PROTOCOL_ERROR,
                http_status=response.status,
                detail=f"expected text/event-stream, got {content_type or 'no content type'}",
            )

    async def _chat(self, request: UpstreamRequest, call: _Call) -> list[AgentEvent]:
        """The non-streaming fallback: one JSON reply, replayed as the stream's events."""
        response = await self._send(request, call)
        try:
            body = await response.read()
        except _TRANSPORT_ERRORS as exc:
            raise self._transport_error(exc, call) from None
        finally:
            response.release()
        try:
            payload = json.loads(body)
        except ValueError:
            raise call.fail(
                FailureCode.PROTOCOL_ERROR,
                http_status=response.status,
                detail="/v1/chat reply is not JSON",
            ) from None
        return dialects.parse_chat_reply(payload, call.parser)

    @staticmethod
    def _transport_error(exc: BaseException, call: _Call) -> AgentError:
        """Only the exception's type name goes into the failure: its text may quote the request."""
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return call.fail(
                FailureCode.IDLE_TIMEOUT, detail="no bytes from the agent API within the idle timeout"
            )
        if isinstance(exc, asyncio.TimeoutError):
            return call.fail(FailureCode.UNREACHABLE, detail=type(exc).__name__)
        if isinstance(exc, aiohttp.ClientPayloadError) and "content-encoding" in str(exc).lower():
            return call.fail(FailureCode.PROTOCOL_ERROR, detail=type(exc).__name__)  # bad gzip/deflate
        return call.fail(FailureCode.CONNECTION_DROPPED, detail=type(exc).__name__)

    def _log_request(self, request: UpstreamRequest, call: _Call, status: object, attempt: int) -> None:
        log.info(
            "agent request POST %s status=%s dialect=%s agent=%s trace=%s attempt=%d",
            request.path,
            status,
            self._dialect.value,
            call.agent_id,
            call.parser.trace_id or "-",
            attempt,
        )

    @staticmethod
    def _log_failure(call: _Call, failure: AgentFailure) -> None:
        log.warning(
            "agent reply failed code=%s upstream_code=%s status=%s agent=%s trace=%s detail=%s",
            failure.code.value,
            failure.upstream_code or "-",
            failure.http_status or "-",
            call.agent_id,
            failure.trace_id or "-",
            failure.detail or "-",
        )


def _env_proxy(base_url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy that HTTP(S)_PROXY / NO_PROXY name for the agent API, as httpx honoured them."""
    try:
        return get_env_proxy_for_url(URL(base_url))
    except (LookupError, ValueError):
        return None, None


async def _read_limited(response: aiohttp.ClientResponse) -> str:
    """At most `ERROR_BODY_LIMIT` bytes of an error body; a body that fails to arrive reads as ''."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.content.iter_any():
            chunks.append(chunk)
            size += len(chunk)
            if size >= ERROR_BODY_LIMIT:
                break
    except _TRANSPORT_ERRORS:
        pass
    return b"".join(chunks)[:ERROR_BODY_LIMIT].decode("utf-8", "replace")
