"""Typed agent failures, each with a sentence for the chat user and a hint for the admin.

A failure never carries a secret: texts are redacted before they are stored here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureCode(StrEnum):
    INVALID_API_KEY = "invalid_api_key"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    AGENT_NOT_FOUND = "agent_not_found"
    CONVERSATION_NOT_FOUND = "conversation_not_found"
    BAD_REQUEST = "bad_request"
    PLAN_UPGRADE_REQUIRED = "plan_upgrade_required"
    RATE_LIMITED = "rate_limited"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UNREACHABLE = "unreachable"
    STREAM_ERROR = "stream_error"
    CONNECTION_DROPPED = "connection_dropped"
    IDLE_TIMEOUT = "idle_timeout"
    PROTOCOL_ERROR = "protocol_error"
    INTERNAL = "internal_error"


_TEXTS: dict[FailureCode, tuple[str, str]] = {
    FailureCode.INVALID_API_KEY: (
        "I can't reach my agent right now: the bridge's API key was refused.",
        "AGENT_API_KEY is missing or invalid (HTTP 401). Set a valid key and restart the bridge.",
    ),
    FailureCode.INSUFFICIENT_BALANCE: (
        "I can't answer right now: the agent account is out of credit.",
        "The agent API answered 402 (insufficient balance). Top up the account.",
    ),
    FailureCode.AGENT_NOT_FOUND: (
        "The agent this channel is bound to doesn't exist (any more).",
        "The agent API answered 404 for this agent id. Re-bind the channel to a valid agent.",
    ),
    FailureCode.CONVERSATION_NOT_FOUND: (
        "I lost track of this conversation upstream; please ask again to start a new one.",
        "The agent API answered 404 for the stored conversation id; it was cleared.",
    ),
    FailureCode.BAD_REQUEST: (
        "The agent couldn't accept that message.",
        "The agent API answered 400 (bad request); see the detail and the trace id.",
    ),
    FailureCode.PLAN_UPGRADE_REQUIRED: (
        "Streaming isn't available on this agent plan.",
        "The stream endpoint answered 403 plan_upgrade_required and the fallback failed too.",
    ),
    FailureCode.RATE_LIMITED: (
        "The agent is busy right now; please try again in a minute.",
        "The agent API kept answering 429 after the bridge's retries.",
    ),
    FailureCode.UPSTREAM_UNAVAILABLE: (
        "The agent service is having trouble right now; please try again shortly.",
        "The agent API kept answering 5xx after the bridge's retries.",
    ),
    FailureCode.UNREACHABLE: (
        "I can't reach the agent service right now; please try again shortly.",
        "The agent API could not be reached (connection failed). Check AGENT_API_URL and the network.",
    ),
    FailureCode.STREAM_ERROR: (
        "The agent ran into an error while answering.",
        "The agent API sent an error event mid-stream; see the code and the trace id.",
    ),
    FailureCode.CONNECTION_DROPPED: (
        "The connection to the agent dropped before the answer was complete.",
        "The agent API closed the stream before its done event.",
    ),
    FailureCode.IDLE_TIMEOUT: (
        "The agent stopped responding before the answer was complete.",
        "No bytes arrived from the agent API within AGENT_IDLE_TIMEOUT seconds.",
    ),
    FailureCode.PROTOCOL_ERROR: (
        "The agent service sent a reply I couldn't read.",
        "The agent API answered with something that is not a valid response for this dialect.",
    ),
    FailureCode.INTERNAL: (
        "Something went wrong in the bridge while answering; the text so far is kept.",
        "An unexpected error occurred inside the bridge; its log has the traceback.",
    ),
}


@dataclass(frozen=True, slots=True)
class AgentFailure:
    """What went wrong upstream, for the user (`user_message`) and the admin (`admin_hint`)."""

    code: FailureCode
    user_message: str
    admin_hint: str
    upstream_code: str | None = None
    detail: str | None = None
    http_status: int | None = None
    trace_id: str | None = None

    @classmethod
    def of(
        cls,
        code: FailureCode,
        *,
        upstream_code: str | None = None,
        detail: str | None = None,
        http_status: int | None = None,
        trace_id: str | None = None,
    ) -> AgentFailure:
        user, admin = _TEXTS[code]
        return cls(code, user, admin, upstream_code, detail, http_status, trace_id)

    @property
    def display_code(self) -> str:
        """The most specific code to show: the upstream's own when it sent one."""
        return self.upstream_code or self.code.value


class AgentError(Exception):
    """Raised inside the client; converted into a `Failed` event at the stream's edge."""

    def __init__(self, failure: AgentFailure, retry_after: float | None = None) -> None:
        super().__init__(f"{failure.display_code}: {failure.admin_hint}")
        self.failure = failure
        self.retry_after = retry_after
