"""The headline: thirty replies started at once in one channel all complete, with zero 429s
from a fake Slack that enforces the documented limits.

The fake's window is shortened tenfold (Tier 3 `chat.update`: 50 per 6 s instead of per
minute; `chat.postMessage`: 10 per second per channel) and the adapter is run with
SLACK_RATE_SCALE=10, which scales its declared rates by the same factor, so the test
exercises exactly the production ratio of demand to budget in a tenth of the time.
"""

from __future__ import annotations

import asyncio

from adapters.slack.mrkdwn import to_mrkdwn
from bridge.events import TextDelta
from bridge.keys import ThreadKey
from bridge.mock_agent import running_mock_agent
from tests.slack_client import running_slack, settled
from tests.slack_fake import running_fake_slack

SCALE = 10
REPLIES = 30


async def test_thirty_concurrent_replies_in_one_channel_complete_without_a_429(bridge_factory):
    async with (
        running_mock_agent(first_token_delay=0.05, delta_delay=0.01) as agent_url,
        bridge_factory(agent_api_url=agent_url) as bridge,
        running_fake_slack(time_scale=SCALE) as fake,
        running_slack(bridge, fake, slack_rate_scale=SCALE) as slack,
    ):
        questions = [f"question number {i}" for i in range(REPLIES)]
        # Thirty different people, so the relay's per-user message limit is not what is tested.
        threads = await asyncio.gather(*(slack.mention(q, user=f"U{i:04d}") for i, q in enumerate(questions)))
        await settled(slack, timeout=90)

        agent_id = bridge.settings.agent_default_id
        for question, (_, thread_ts) in zip(questions, threads, strict=True):
            expected = "".join(
                [e.text async for e in bridge.agent.stream(agent_id, question) if isinstance(e, TextDelta)]
            )
            (reply,) = fake.thread_messages("C0001", thread_ts)
            assert reply.text == to_mrkdwn(expected)
            assert not any("blocks" in a for a in reply.attachments)  # no Stop button left
            (record,) = await bridge.store.recent_replies(ThreadKey("slack", "T0001", "C0001", thread_ts))
            assert record.status == "done"

        assert fake.count("chat.postMessage") == REPLIES
        assert fake.rate_limited == 0, [c.method for c in fake.calls if c.status == 429]
