"""Admin commands against a real store: authorisation, validation, audit, status and reset."""

from __future__ import annotations

import pytest

from bridge.admin import AdminCommands, AdminRequest, binding_flag
from bridge.agent import validate_agent_id
from bridge.config import Dialect
from bridge.keys import ThreadKey
from bridge.store import Store

AGENT = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
THREAD = ThreadKey("slack", "T1", "C1", "171.1")


@pytest.fixture
async def admin(tmp_path):
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}")
    yield AdminCommands(store, lambda a: validate_agent_id(Dialect.SENTIENTONE, a))
    await store.close()


def req(text: str, *, is_admin: bool = True, actor: str = "U_ADMIN") -> AdminRequest:
    return AdminRequest(THREAD, actor, is_admin, text)


async def test_bind_status_unbind_round_trip_is_audited(admin):
    answer = await admin.run(req(f"bind {AGENT} require_mention=yes"))
    assert answer.ok and AGENT in answer.text
    binding = await admin.store.get_binding("slack", "T1", "C1")
    assert binding.agent_id == AGENT and binding_flag(binding.options, "require_mention")
    assert not binding_flag(binding.options, "allow_bots")
    status = await admin.run(req("status", is_admin=False))
    assert AGENT in status.text and "require_mention" in status.text and "0 replies" in status.text
    assert (await admin.run(req("unbind"))).ok
    assert await admin.store.get_binding("slack", "T1", "C1") is None
    actions = [e.action for e in await admin.store.recent_audit()]
    assert actions == ["binding.removed", "binding.set"]


async def test_non_admin_is_refused_politely_and_audited(admin):
    answer = await admin.run(req(f"bind {AGENT}", is_admin=False, actor="U_MEMBER"))
    assert not answer.ok and "only workspace admins" in answer.text
    assert await admin.store.get_binding("slack", "T1", "C1") is None
    (entry,) = await admin.store.recent_audit()
    assert entry.actor == "U_MEMBER" and entry.action == "refused.bind"
    assert not (await admin.run(req("unbind", is_admin=False))).ok


@pytest.mark.parametrize(
    "text, expected",
    [
        ("bind", "Which agent?"),
        ("bind not-a-uuid", "not a valid agent id"),
        (f"bind {AGENT} loud=yes", "I don't understand `loud=yes`"),
        (f"bind {AGENT} allow_bots=maybe", "I don't understand"),
        ("frobnicate", "I don't know `frobnicate`"),
    ],
)
async def test_bad_input_gets_an_actionable_answer(admin, text, expected):
    answer = await admin.run(req(text))
    assert not answer.ok and expected in answer.text
    assert await admin.store.get_binding("slack", "T1", "C1") is None


async def test_reset_starts_a_new_conversation(admin):
    await admin.store.start_conversation(THREAD, AGENT)
    await admin.store.set_conversation_id(THREAD, "conv-1")
    assert "conv-1" in (await admin.run(req("status"))).text
    assert "new conversation" in (await admin.run(req("reset", is_admin=False))).text
    assert await admin.store.get_conversation(THREAD) is None
    assert "no conversation yet" in (await admin.run(req("status"))).text


async def test_help_lists_every_subcommand(admin):
    text = (await admin.run(req(""))).text
    for sub in ("bind", "unbind", "status", "reset", "help", "require_mention"):
        assert sub in text
