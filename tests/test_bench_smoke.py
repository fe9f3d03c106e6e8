"""The platform benchmark's harness runs end to end at a tiny load: ours and both baselines, on
the Slack and Discord fakes, every reply's final text on the platform exact. Not timed: the
figures themselves belong to `bench/platform_bench.py` and docs/PERFORMANCE.md."""

from __future__ import annotations

import pytest

from bench.platform_bench import EDITORS, Spec, child, start_agent, stop_process


@pytest.fixture(scope="module")
def agent_url():
    proc, url = start_agent(first_token_delay=0.01, delta_delay=0.002)
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.mark.parametrize("platform", ["slack", "discord"])
async def test_harness_and_both_baselines_deliver_the_exact_text(agent_url, platform):
    for editor in EDITORS:
        row = await child(Spec(platform, "one", 2, editor, 50.0, agent_url))
        assert row["exact_pct"] == 100.0, (editor, row)
        assert row["deltas_per_reply"] > 20, row  # the reply really streamed in many deltas
        assert row["calls_per_reply"] >= 2, row  # at least the placeholder and the final text
