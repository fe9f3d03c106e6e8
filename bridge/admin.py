"""Channel administration from chat, shared by every platform: bind, unbind, status, reset, help.

Adapters parse their platform's command payload into `AdminRequest` (and decide who is an
admin, since that is platform knowledge); everything else — validation, authorisation
checks, the store, the audit log and the wording of answers — lives here once.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridge.keys import ThreadKey

BINDING_OPTIONS: Mapping[str, str] = {
    "require_mention": "answer follow-ups in a thread only when the bot is mentioned again",
    "allow_bots": "also answer messages written by other bots",
    "new_thread": "answer a mention in a new thread named after the question (Discord)",
}
"""Per-binding switches, set as `bind <agent-id> name=yes|no`; all default to no."""

_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}
STATUS_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """One admin command as typed by a user (`text` is what follows the command name)."""

    thread: ThreadKey
    actor: str
    is_admin: bool
    text: str


@dataclass(frozen=True, slots=True)
class AdminAnswer:
    """What to tell the user (privately where the platform can) and whether the command took effect."""

    text: str
    ok: bool = True


def binding_flag(options: Mapping[str, object] | None, name: str) -> bool:
    """Read a per-binding switch; unknown or missing means off."""
    return bool(options and options.get(name) is True)


class AdminCommands:
    """Runs admin commands against the store. `command` is how users type it (e.g. `/agent`)."""

    def __init__(
        self,
        store,  # bridge.store.Store
        validate_agent_id: Callable[[str], str | None],
        *,
        command: str = "/agent",
    ) -> None:
        self.store = store
        self.validate_agent_id = validate_agent_id
        self.command = command

    async def run(self, request: AdminRequest) -> AdminAnswer:
        try:
            words = shlex.split(request.text)
        except ValueError:
            words = request.text.split()
        sub, args = (words[0].lower(), words[1:]) if words else ("help", [])
        match sub:
            case "bind":
                return await self._bind(request, args)
            case "unbind":
                return await self._unbind(request)
            case "status":
                return await self._status(request)
            case "reset":
                return await self._reset(request)
            case "help":
                return AdminAnswer(self.help())
            case _:
                return AdminAnswer(f"I don't know `{sub}`.\n\n{self.help()}", ok=False)

    def help(self) -> str:
        c = self.command
        options = "\n".join(f"• `{name}=yes|no` — {meaning}" for name, meaning in BINDING_OPTIONS.items())
        return (
            f"`{c} bind <agent-id> [option=yes|no …]` — answer this channel with that agent (admins)\n"
            f"`{c} unbind` — stop answering in this channel (admins)\n"
            f"`{c} status` — binding, agent, this thread's conversation, recent usage and errors\n"
            f"`{c} reset` — the next message in this thread starts a new conversation\n"
            f"`{c} help` — this text\n"
            f"Options:\n{options}"
        )

    async def _refuse(self, request: AdminRequest, action: str) -> AdminAnswer:
        t = request.thread
        await self.store.audit(t.platform, t.workspace, t.channel, request.actor, f"refused.{action}", {"command": action})
        return AdminAnswer(
            f"Sorry, only workspace admins can {action} this channel. Ask an admin to run `{self.command} {action}`.",
            ok=False,
        )

    async def _bind(self, request: AdminRequest, args: list[str]) -> AdminAnswer:
        if not request.is_admin:
            return await self._refuse(request, "bind")
        if not args:
            return AdminAnswer(f"Which agent? Use `{self.command} bind <agent-id>`.", ok=False)
        agent_id, settings = args[0], args[1:]
        problem = self.validate_agent_id(agent_id)
        if problem:
            return AdminAnswer(f"`{agent_id}` is not a valid agent id: {problem}", ok=False)
        options: dict[str, bool] = {}
        for setting in settings:
            name, _, value = setting.partition("=")
            if name not in BINDING_OPTIONS or value.lower() not in _TRUE | _FALSE:
                known = ", ".join(f"`{n}=yes|no`" for n in BINDING_OPTIONS)
                return AdminAnswer(f"I don't understand `{setting}`. Options are {known}.", ok=False)
            options[name] = value.lower() in _TRUE
        t = request.thread
        await self.store.bind(t.platform, t.workspace, t.channel, agent_id, request.actor, options=options)
        on = ", ".join(name for name, value in options.items() if value)
        return AdminAnswer(f"This channel is now answered by agent `{agent_id}`" + (f" ({on})." if on else "."))

    async def _unbind(self, request: AdminRequest) -> AdminAnswer:
        if not request.is_admin:
            return await self._refuse(request, "unbind")
        t = request.thread
        if await self.store.unbind(t.platform, t.workspace, t.channel, request.actor):
            return AdminAnswer("This channel is no longer bound to an agent.")
        return AdminAnswer("This channel was not bound to an agent.", ok=False)

    async def _reset(self, request: AdminRequest) -> AdminAnswer:
        if await self.store.reset_conversation(request.thread, request.actor):
            return AdminAnswer("Done: the next message here starts a new conversation.")
        return AdminAnswer("There was no conversation here yet; the next message starts one.")

    async def _status(self, request: AdminRequest) -> AdminAnswer:
        t = request.thread
        binding = await self.store.get_binding(t.platform, t.workspace, t.channel)
        conversation = await self.store.get_conversation(t)
        summary = await self.store.usage_summary(
            t.platform, t.workspace, t.channel, since=datetime.now(UTC) - STATUS_WINDOW
        )
        lines = []
        if binding is None:
            lines.append(f"Channel: not bound (an admin can run `{self.command} bind <agent-id>`).")
        else:
            on = [name for name in BINDING_OPTIONS if binding_flag(binding.options, name)]
            lines.append(
                f"Channel: bound to agent `{binding.agent_id}` by {binding.bound_by} on "
                f"{binding.bound_at:%Y-%m-%d %H:%M} UTC" + (f"; options: {', '.join(on)}" if on else "")
            )
        if conversation is None:
            lines.append("This thread: no conversation yet.")
        else:
            lines.append(
                f"This thread: agent `{conversation.agent_id}`, conversation "
                f"`{conversation.conversation_id or 'not started'}`"
            )
        by_status = ", ".join(f"{count} {status}" for status, count in summary.by_status.items()) or "none"
        lines.append(f"Last 24 h in this channel: {summary.replies} replies ({by_status}); {summary.total_tokens or 0} tokens")
        if summary.last_error_codes:
            lines.append("Recent errors: " + ", ".join(f"`{code}`" for code in summary.last_error_codes))
        return AdminAnswer("\n".join(lines))
