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


@pytest.mark.parametrize("editor", ["ours", "chunk20"])
async def test_a_bounded_run_reports_its_cut_off_replies(agent_url, editor):
    # 55 mock deltas 2 ms apart cannot finish in 50 ms: every reply is cut, and the row says so.
    row = await child(Spec("slack", "one", 2, editor, 50.0, agent_url, max_run=0.05))
    assert row["finished"] == 0 and row["misses"]["cut_off"] == 2, row
    assert row["exact_pct"] == 0.0 and "cut at 0.05 s: 0/2 finished" in row["wall_s"], row


async def test_store_bench_runs_every_reply_to_its_end(tmp_path):
    """The store benchmark's simulated replies go through every store call a reply makes."""
    from bench.store_bench import run

    row = await run(f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}", replies=5, busy_ms=1.0, every_ms=5.0)
    assert row["failed"] == 0 and row["replies"] == 5 and row["tx_per_s"] > 0
