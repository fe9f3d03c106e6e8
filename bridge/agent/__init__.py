"""The agent API client: HTTP + SSE in, one `AgentEvent` stream out, whatever the dialect."""

from bridge.agent.client import AgentClient, new_session_id
from bridge.agent.dialects import validate_agent_id

__all__ = ["AgentClient", "new_session_id", "validate_agent_id"]
