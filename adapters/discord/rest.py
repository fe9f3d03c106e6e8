"""The few Discord REST calls the bridge makes itself, with failures surfaced, not slept on.

discord.py's HTTP client sleeps through 429s shorter than 30 s and retries; the core's
scheduler must see them to pace every reply in a channel, so message calls go through this
thin client instead. Interaction tokens sit in webhook paths: paths are never logged or put
in exception text — only the route template (`PATCH /webhooks/{app}/{token}/messages/{id}`).
"""

from __future__ import annotations

import logging
from typing import Any, Self
from urllib.parse import quote

import aiohttp

from bridge.surface import MessageExpired, MessageGone, RateLimited, SurfaceError

log = logging.getLogger("adapters.discord.rest")

GONE_CODES = {
    10003: "Unknown Channel",
    10008: "Unknown Message",
    50001: "Missing Access",
    50013: "Missing Permissions",
    50083: "the thread is archived",
    160005: "the thread is locked",
}
"""JSON error codes after which the message will never accept an edit."""

EXPIRED_CODES = {
    10015: "Unknown Webhook",
    50027: "Invalid Webhook Token",
    10062: "Unknown interaction",
}
"""JSON error codes of an interaction token that has run out (15 minutes)."""

USER_AGENT = "DiscordBot (https://github.com/agent-bridge, 0.1) agent-bridge"


class DiscordApiError(SurfaceError):
    """Discord refused a call for a reason waiting may fix (5xx) or not (4xx)."""

    def __init__(self, what: str, status: int, code: int | None, message: str) -> None:
        detail = f"{message} (code {code})" if code is not None else message
        super().__init__(f"{what} answered HTTP {status}: {detail}")
        self.status = status
        self.code = code


class DiscordRest:
    """An aiohttp session against the configured Discord API base URL."""

    def __init__(self, api_url: str, token: str, *, timeout: float = 15.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, headers={"User-Agent": USER_AGENT}
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        method: str,
        route: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        auth: bool = True,
        **path: str | int,
    ) -> Any:
        """One request; `route` is a template filled from `path` (values are URL-quoted)."""
        if self._session is None:
            raise SurfaceError("the Discord REST client is not open")
        what = f"{method} {route}"
        url = self.api_url + route.format(
            **{k: quote(str(v), safe="@") for k, v in path.items()}
        )
        headers = {"Authorization": f"Bot {self._token}"} if auth else {}
        try:
            async with self._session.request(
                method, url, json=json, params=params, headers=headers
            ) as response:
                body: Any = None
                if response.content_type == "application/json":
                    body = await response.json()
                else:
                    await response.read()
                if response.status < 300:
                    return body
                raise _failure(
                    what, response.status, response.headers, body, webhook=not auth
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The exception's own text can carry the URL (and with it an interaction token).
            raise SurfaceError(
                f"{what} could not reach Discord ({type(exc).__name__})"
            ) from None

    # -- interactions -------------------------------------------------------------------------

    async def respond(
        self,
        interaction_id: int | str,
        token: str,
        kind: int,
        data: dict[str, Any] | None = None,
    ) -> None:
        """The interaction's initial response (4 message, 5 deferred, 6 deferred update)."""
        body: dict[str, Any] = {"type": kind}
        if data is not None:
            body["data"] = data
        await self.call(
            "POST",
            "/interactions/{id}/{token}/callback",
            json=body,
            auth=False,
            id=interaction_id,
            token=token,
        )

    async def webhook(
        self,
        method: str,
        app_id: int | str,
        token: str,
        message_id: str,
        body: Any = None,
    ) -> Any:
        """GET/PATCH/DELETE an interaction's `@original` or follow-up message."""
        return await self.call(
            method,
            "/webhooks/{app}/{token}/messages/{message}",
            json=body,
            auth=False,
            app=app_id,
            token=token,
            message=message_id,
        )

    async def follow_up(
        self, app_id: int | str, token: str, body: dict[str, Any]
    ) -> Any:
        return await self.call(
            "POST",
            "/webhooks/{app}/{token}",
            json=body,
            params={"wait": "true"},
            auth=False,
            app=app_id,
            token=token,
        )

    # -- channels ----------------------------------------------------------------------------

    async def create_message(self, channel_id: str, body: dict[str, Any]) -> Any:
        return await self.call(
            "POST", "/channels/{channel}/messages", json=body, channel=channel_id
        )

    async def edit_message(
        self, channel_id: str, message_id: str, body: dict[str, Any]
    ) -> Any:
        return await self.call(
            "PATCH",
            "/channels/{channel}/messages/{message}",
            json=body,
            channel=channel_id,
            message=message_id,
        )

    async def delete_message(self, channel_id: str, message_id: str) -> None:
        await self.call(
            "DELETE",
            "/channels/{channel}/messages/{message}",
            channel=channel_id,
            message=message_id,
        )

    async def start_thread(self, channel_id: str, message_id: str, name: str) -> Any:
        """A public thread from a message (Discord gives it the message's id)."""
        return await self.call(
            "POST",
            "/channels/{channel}/messages/{message}/threads",
            json={"name": name, "auto_archive_duration": 1440},
            channel=channel_id,
            message=message_id,
        )

    async def application_id(self) -> int:
        data = await self.call("GET", "/oauth2/applications/@me")
        return int(data["id"])


def _failure(
    what: str, status: int, headers: Any, body: Any, *, webhook: bool
) -> SurfaceError:
    body = body if isinstance(body, dict) else {}
    code = body.get("code") if isinstance(body.get("code"), int) else None
    message = str(body.get("message") or "no detail")[:200]
    if status == 429:
        retry_after = _retry_after(headers, body)
        scope = "global " if body.get("global") else ""
        log.info("Discord %s429 on %s (retry after %.2fs)", scope, what, retry_after)
        return RateLimited(retry_after, what)
    if code in EXPIRED_CODES or (webhook and status == 401):
        return MessageExpired(f"{what}: the interaction token expired ({message})")
    if code in GONE_CODES:
        return MessageGone(f"{what}: {GONE_CODES[code]} ({message})")
    return DiscordApiError(what, status, code, message)


def _retry_after(headers: Any, body: dict[str, Any]) -> float:
    """The longest wait Discord names: body `retry_after`, `Retry-After`, `X-RateLimit-Reset-After`."""
    candidates = [
        body.get("retry_after"),
        headers.get("Retry-After"),
        headers.get("X-RateLimit-Reset-After"),
    ]
    waits = []
    for value in candidates:
        try:
            waits.append(float(value))
        except (TypeError, ValueError):
            continue
    return max(waits, default=1.0)
