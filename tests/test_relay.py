"""The relay end to end: real mock agent over SSE, real SQLite store, a recording adapter."""

from __future__ import annotations

import asyncio

import pytest

from bridge.keys import ThreadKey
from bridge.relay import (
    INTERRUPTED_NOTICE,
    NEW_CONVERSATION_NOTICE,
    STOPPED_NOTICE,
    Inbound,
)
from bridge.reply import ReplyStatus, ToolStatus
from bridge.surface import Rate, RateLimited, Scope, SurfaceError
from tests.conftest import upstream_text
from tests.recording import Enforcer, RecordingSurface, StreamingSurface


def thread(name: str = "t1", channel: str = "C1") -> ThreadKey:
    return ThreadKey("recording", "W1", channel, name)



async def test_final_text_equals_concatenated_deltas(bridge):
    surface = RecordingSurface()
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "hello there", "ev1"), surface)
    assert outcome.ok
    expected = await upstream_text(bridge, "hello there")
    assert expected and outcome.reply.text == expected
    (message_id,) = [m.id for m in outcome.messages]
    final = surface.messages[message_id]
    assert final.text == expected and final.is_last and not final.working
    assert surface.ops("post")[0].payload.text == ""  # placeholder first
    assert surface.ops("post")[0].payload.working
    record = await bridge.store.get_reply(outcome.reply_id)
    assert record.status == "done" and record.message_ids == (message_id,)
    assert (await bridge.store.get_conversation(thread())).conversation_id == outcome.reply.conversation_id


async def test_tool_calls_and_sources_reach_the_surface(bridge):
    surface = RecordingSurface()
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "use a tool and cite sources", None), surface)
    assert outcome.ok
    final = surface.messages[outcome.messages[-1].id]
    assert final.reply.tool_calls and all(c.status is ToolStatus.DONE for c in final.reply.tool_calls)
    assert final.reply.tool_calls[0].output is not None
    assert final.reply.sources


async def test_error_event_keeps_the_text_so_far(bridge):
    surface = RecordingSurface()
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "please error out", None), surface)
    assert outcome.reply.status is ReplyStatus.FAILED
    assert outcome.reply.text  # text before the error event stays
    final = surface.messages[outcome.messages[-1].id]
    assert final.reply.error is not None and final.text == outcome.reply.text
    record = await bridge.store.get_reply(outcome.reply_id)
    assert record.status == "failed" and record.error_code


async def test_edits_respect_a_shared_budget(bridge):
    """Five replies in one workspace share one edit budget: never more than it allows."""
    rate = Rate(per_second=10, burst=3, scope=Scope.WORKSPACE)
    surface = RecordingSurface(edit=rate)
    inbounds = [Inbound(thread(f"t{i}"), "U1", "tell me a story", None) for i in range(5)]
    outcomes = await asyncio.gather(*(bridge.relay.handle(i, surface) for i in inbounds))
    assert all(o.ok for o in outcomes)
    edits = sorted(c.at for c in surface.ops("edit"))
    assert edits
    # Token bucket: in any window of length w at most burst + w * rate edits.
    for i, start in enumerate(edits):
        for j in range(i, len(edits)):
            window = edits[j] - start
            assert j - i + 1 <= rate.burst + window * rate.per_second + 1e-6
    for o in outcomes:
        assert surface.messages[o.messages[-1].id].text == o.reply.text


async def test_platform_429_is_honoured_without_losing_text(bridge):
    surface = RecordingSurface(enforce_edits=Enforcer(limit=2, window=0.3))
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "tell me a story", None), surface)
    assert outcome.ok
    assert surface.enforce_edits.refused >= 1
    assert surface.messages[outcome.messages[-1].id].text == outcome.reply.text


async def test_transient_platform_errors_are_retried(bridge):
    surface = RecordingSurface()
    surface.fail_next_edits = [SurfaceError("502 bad gateway"), RateLimited(0.05, "edit")]
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "hello", None), surface)
    assert outcome.ok
    assert surface.messages[outcome.messages[-1].id].text == outcome.reply.text


async def test_a_run_of_429s_is_waited_out_not_counted_as_failures(bridge):
    surface = RecordingSurface()
    surface.fail_next_posts = [RateLimited(0.01, "post") for _ in range(6)]
    surface.fail_next_edits = [RateLimited(0.01, "edit") for _ in range(6)]
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "hello", None), surface)
    assert outcome.ok
    assert surface.messages[outcome.messages[-1].id].text == outcome.reply.text


async def test_a_reply_that_cannot_be_posted_is_recorded_as_failed(bridge):
    surface = RecordingSurface()
    surface.fail_next_posts = [SurfaceError("500 internal error") for _ in range(4)]
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "hello", None), surface)
    assert outcome.reply.status is ReplyStatus.FAILED and not outcome.messages
    record = await bridge.store.get_reply(outcome.reply_id)
    assert record.status == "failed" and record.error_code == "delivery_failed"


async def test_bridge_messages_are_paced_by_the_budget(bridge_factory):
    async with bridge_factory(bridge_max_message_chars=5) as bridge:
        surface = RecordingSurface(post=Rate(per_second=20, burst=2, scope=Scope.CHANNEL))
        inbounds = [Inbound(thread(f"t{i}"), "U1", "far too long", None) for i in range(6)]
        outcomes = await asyncio.gather(*(bridge.relay.handle(i, surface) for i in inbounds))
        assert all(len(o.messages) == 1 for o in outcomes)
        posts = sorted(c.at for c in surface.ops("post"))
        assert posts[-1] - posts[0] >= (6 - 2) / 20 - 0.01  # the burst, then 20 per second


async def test_long_reply_continues_in_further_messages(bridge):
    surface = RecordingSurface(max_text=900)
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "write something long", None), surface)
    assert outcome.ok and len(outcome.reply.text) > 900
    assert len(outcome.messages) >= 2
    parts = [surface.messages[m.id] for m in outcome.messages]
    assert all(len(p.text) <= 900 for p in parts)
    assert [p.is_last for p in parts] == [False] * (len(parts) - 1) + [True]
    from bridge.split import unsplit

    assert unsplit([p.text for p in parts]) == outcome.reply.text
    record = await bridge.store.get_reply(outcome.reply_id)
    assert record.message_ids == tuple(m.id for m in outcome.messages)


async def test_duplicate_delivery_is_answered_once(bridge):
    surface = RecordingSurface()
    inbound = Inbound(thread(), "U1", "hello", "Ev-dup")
    outcomes = await asyncio.gather(*(bridge.relay.handle(inbound, surface) for _ in range(3)))
    assert sum(not o.duplicate for o in outcomes) == 1
    assert len(surface.ops("post")) == 1


async def test_messages_of_one_thread_are_answered_in_order(bridge):
    surface = RecordingSurface()
    first = asyncio.create_task(bridge.relay.handle(Inbound(thread(), "U1", "slow first question", None), surface))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(bridge.relay.handle(Inbound(thread(), "U1", "second question", None), surface))
    one, two = await asyncio.gather(first, second)
    assert one.ok and two.ok
    first_done = max(c.at for c in surface.calls if c.message_id == one.messages[-1].id)
    second_post = min(c.at for c in surface.calls if c.message_id == two.messages[0].id)
    assert second_post >= first_done
    assert two.reply.conversation_id == one.reply.conversation_id


async def test_unbound_channel_gets_a_helpful_message(bridge_factory):
    async with bridge_factory(agent_default_id=None) as bridge:
        surface = RecordingSurface()
        outcome = await bridge.relay.handle(Inbound(thread(), "U1", "hello", None), surface)
        assert outcome.reply_id is None
        text = surface.messages[outcome.messages[0].id].text
        assert "not bound" in text and "bind" in text


async def test_binding_chooses_the_agent_and_a_thread_keeps_its_agent(bridge_factory, agent_ids):
    async with bridge_factory(agent_default_id=None) as bridge:
        await bridge.store.bind("recording", "W1", "C1", agent_ids[0], actor="admin")
        surface = RecordingSurface()
        first = await bridge.relay.handle(Inbound(thread(), "U1", "hello", None), surface)
        assert first.ok and first.agent_id == agent_ids[0]
        await bridge.store.bind("recording", "W1", "C1", agent_ids[1], actor="admin")
        again = await bridge.relay.handle(Inbound(thread(), "U1", "hello again", None), surface)
        assert again.agent_id == agent_ids[0]  # the thread keeps the agent it started with
        other = await bridge.relay.handle(Inbound(thread("t2"), "U1", "hello", None), surface)
        assert other.agent_id == agent_ids[1]


async def test_empty_message_gets_a_prompt_not_an_agent_call(bridge):
    surface = RecordingSurface()
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "   \n", None), surface)
    assert outcome.reply_id is None
    assert "empty" in surface.messages[outcome.messages[0].id].text


async def test_stop_cancels_the_stream_and_marks_the_reply(bridge):
    surface = RecordingSurface()
    task = asyncio.create_task(bridge.relay.handle(Inbound(thread(), "U1", "a very slow story", None), surface))
    await surface.wait_for(surface.shows_text)
    assert await bridge.relay.stop_thread(thread())
    outcome = await task
    assert outcome.reply.status is ReplyStatus.STOPPED and outcome.reply.notice == STOPPED_NOTICE
    final = surface.messages[outcome.messages[-1].id]
    assert final.reply.status is ReplyStatus.STOPPED and not final.working
    assert (await bridge.store.get_reply(outcome.reply_id)).status == "stopped"
    assert bridge.relay.in_flight == 0


async def test_deleted_message_stops_the_upstream_stream(bridge):
    surface = RecordingSurface()
    task = asyncio.create_task(bridge.relay.handle(Inbound(thread(), "U1", "a very slow story", None), surface))
    await surface.wait_for(surface.posted)
    surface.gone.add(surface.ops("post")[0].message_id)
    outcome = await asyncio.wait_for(task, 5)
    assert outcome.reply.status is ReplyStatus.STOPPED


async def test_cancelled_handler_marks_the_reply_interrupted(bridge):
    surface = RecordingSurface()
    task = asyncio.create_task(bridge.relay.handle(Inbound(thread(), "U1", "a very slow story", None), surface))
    await surface.wait_for(surface.posted)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record,) = await bridge.store.recent_replies(thread(), 5)
    assert record.status == "interrupted"
    final = surface.messages[record.message_ids[-1]]
    assert final.reply.status is ReplyStatus.INTERRUPTED and not final.working
    assert final.reply.notice == INTERRUPTED_NOTICE


async def test_vanished_conversation_starts_a_new_one_and_says_so(bridge):
    surface = RecordingSurface()
    await bridge.store.start_conversation(thread(), bridge.settings.agent_default_id)
    await bridge.store.set_conversation_id(thread(), "conv-that-does-not-exist")
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "hello", None), surface)
    assert outcome.ok
    assert outcome.reply.notice == NEW_CONVERSATION_NOTICE
    stored = await bridge.store.get_conversation(thread())
    assert stored.conversation_id and stored.conversation_id != "conv-that-does-not-exist"


async def test_native_stream_capability_is_used_and_falls_back_to_edits(bridge):
    surface = StreamingSurface(append=Rate(50, 5, Scope.WORKSPACE))
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "tell me a slow story", None), surface)
    assert outcome.ok
    assert surface.ops("start_stream") and surface.ops("append_stream") and surface.ops("stop_stream")
    assert "".join(c.payload for c in surface.ops("append_stream")) == outcome.reply.text
    assert not surface.ops("post")

    refusing = StreamingSurface(refuse_after_appends=1)
    outcome = await bridge.relay.handle(Inbound(thread("t2"), "U1", "tell me a slow story", None), refusing)
    assert outcome.ok
    assert refusing.ops("edit"), "after the stream was refused the reply continues with edits"
    assert refusing.messages[outcome.messages[-1].id].text == outcome.reply.text


async def test_expired_message_continues_in_a_new_one(bridge):
    surface = RecordingSurface()
    task = asyncio.create_task(bridge.relay.handle(Inbound(thread(), "U1", "tell me a slow story", None), surface))
    await surface.wait_for(surface.shows_text)
    first = surface.ops("post")[0].message_id
    surface.expired.add(first)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.ok
    (current,) = outcome.messages
    assert current.id != first
    assert surface.messages[current.id].text == outcome.reply.text
    record = await bridge.store.get_reply(outcome.reply_id)
    assert record.message_ids == (first, current.id)


async def test_too_long_message_is_refused_with_the_numbers(bridge_factory):
    async with bridge_factory(bridge_max_message_chars=50) as bridge:
        surface = RecordingSurface()
        outcome = await bridge.relay.handle(Inbound(thread(), "U1", "x" * 51, None), surface)
        assert outcome.reply_id is None
        text = surface.messages[outcome.messages[0].id].text
        assert "51 characters" in text and "at most 50" in text


async def test_user_and_channel_limits_answer_friendly(bridge_factory):
    async with bridge_factory(bridge_user_rate_limit="2/60", bridge_channel_rate_limit="3/60") as bridge:
        surface = RecordingSurface()
        replies = [await bridge.relay.handle(Inbound(thread(f"u{i}"), "U1", "hi", None), surface) for i in range(3)]
        assert [r.reply_id is not None for r in replies] == [True, True, False]
        refusal = surface.messages[replies[2].messages[0].id].text
        assert "You are sending messages faster" in refusal and "2 per minute" in refusal
        other_user = await bridge.relay.handle(Inbound(thread("u9"), "U2", "hi", None), surface)
        assert other_user.reply_id is not None  # a third message in the channel, by someone else
        channel_full = await bridge.relay.handle(Inbound(thread("u10"), "U3", "hi", None), surface)
        assert "This channel is sending" in surface.messages[channel_full.messages[0].id].text


async def test_drain_lets_replies_finish_within_the_grace(bridge):
    surface = RecordingSurface()
    task = asyncio.create_task(bridge.relay.handle(Inbound(thread(), "U1", "hello", None), surface))
    await surface.wait_for(surface.posted)
    await bridge.relay.drain(grace=10)
    assert (await task).ok
    late = await bridge.relay.handle(Inbound(thread("t2"), "U1", "hello", None), surface)
    assert late.reply_id is None and "restarting" in surface.messages[late.messages[0].id].text


async def test_drain_past_the_grace_interrupts_and_says_so(bridge):
    surface = RecordingSurface()
    task = asyncio.create_task(bridge.relay.handle(Inbound(thread(), "U1", "a very slow story", None), surface))
    await surface.wait_for(surface.posted)
    await bridge.relay.drain(grace=0.2)
    outcome = await task
    assert outcome.reply.status is ReplyStatus.INTERRUPTED
    final = surface.messages[outcome.messages[-1].id]
    assert final.reply.notice == INTERRUPTED_NOTICE and not final.working
    assert (await bridge.store.get_reply(outcome.reply_id)).status == "interrupted"
    assert bridge.relay.in_flight == 0


async def test_streaming_reply_is_checkpointed(bridge_factory):
    async with bridge_factory() as bridge:
        bridge.relay.checkpoint_interval = 0.05
        surface = RecordingSurface()
        task = asyncio.create_task(bridge.relay.handle(Inbound(thread(), "U1", "a slow story", None), surface))
        checkpoint = None
        for _ in range(400):
            await asyncio.sleep(0.02)
            records = await bridge.store.recent_replies(thread(), 1)
            if records and records[0].checkpoint and records[0].checkpoint["text"]:
                checkpoint = records[0].checkpoint
                break
        assert checkpoint is not None and checkpoint["status"] == "streaming"
        outcome = await task
        assert outcome.reply.text.startswith(checkpoint["text"])


async def test_recover_finalizes_what_a_crash_left_streaming(bridge_factory):
    """A reply row left `streaming` by a dead process: its message gets the saved text back, marked interrupted."""
    from bridge.reply import Reply, ToolCall, reply_to_json

    async with bridge_factory() as bridge:
        surface = RecordingSurface()
        key = thread("crashed")
        dead = await bridge.store.create_reply(key, bridge.settings.agent_default_id, owner="host:1")
        placeholder = await surface.post(key, "…")
        await bridge.store.add_reply_message(dead, placeholder.id)
        saved = Reply(text="Half an answer", tool_calls=(ToolCall("get_order", {"id": 1}),))
        await bridge.store.update_reply(dead, checkpoint=reply_to_json(saved))
        silent = await bridge.store.create_reply(thread("silent"), bridge.settings.agent_default_id, owner="host:1")
        elsewhere = await bridge.store.create_reply(
            ThreadKey("other-platform", "W1", "C1", "x"), bridge.settings.agent_default_id, owner="host:1"
        )

        assert await bridge.relay.recover(surface.platform, lambda key: surface) == 2

        final = surface.messages[placeholder.id]
        assert final.text == "Half an answer" and final.reply.status is ReplyStatus.INTERRUPTED
        assert final.reply.notice == INTERRUPTED_NOTICE and not final.working
        assert final.reply.tool_calls[0].status is ToolStatus.FAILED
        assert (await bridge.store.get_reply(dead)).status == "interrupted"
        silent_record = await bridge.store.get_reply(silent)
        assert silent_record.status == "interrupted" and len(silent_record.message_ids) == 1
        assert surface.messages[silent_record.message_ids[0]].reply.notice == INTERRUPTED_NOTICE
        assert (await bridge.store.get_reply(elsewhere)).status == "streaming"  # another platform's job
        assert await bridge.relay.recover(surface.platform, lambda key: surface) == 0


async def test_no_edit_is_spent_on_invisible_changes(bridge):
    """The conversation id (or usage) arriving changes nothing on screen: no edit for it."""
    surface = RecordingSurface()
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "hello", None), surface)
    assert outcome.ok
    edits = surface.ops("edit")
    assert edits and all(e.payload.text for e in edits), "every edit showed text"
    shown = [(e.payload.text, e.payload.reply.status) for e in edits]
    assert len(shown) == len(set(shown)), "no edit repeated what was already visible"


@pytest.mark.parametrize("failure", [RateLimited(1.0, "chat.startStream"), SurfaceError("internal_error")])
async def test_a_native_stream_that_fails_to_start_falls_back_to_a_post(bridge, failure):
    """A 429 or a platform error when opening the native stream: the reply is posted and edited
    instead, with the exact text (a 429 is also counted and charged to the stream budget)."""
    surface = StreamingSurface(fail_start=failure)
    outcome = await bridge.relay.handle(Inbound(thread(), "U1", "hello there", None), surface)
    assert outcome.ok
    assert surface.ops("post") and not surface.ops("start_stream")
    assert surface.messages[outcome.messages[-1].id].text == outcome.reply.text
