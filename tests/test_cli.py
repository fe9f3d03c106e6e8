"""The `agent-bridge` command end to end: real processes, the real mock agent, real SQLite files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import httpx
import pytest

AGENT = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
from tests.secret_guard import CLI_KEY as KEY

EXE = shutil.which("agent-bridge", path=str(Path(sys.executable).parent)) or "agent-bridge"


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "BRIDGE_", "SLACK_", "DISCORD_"))}
    env.update(
        {
            "BRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
            "AGENT_API_KEY": KEY,
            "COLUMNS": "100",
        }
    )
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        EXE, *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_demo_message_runs_one_exchange_without_tokens(tmp_path):
    code, out, err = await run_cli("demo", "--message", "use a tool and cite sources", env=base_env(tmp_path), cwd=tmp_path)
    assert code == 0, err
    assert "get_order" in out and "Sources" in out and "message #1" in out
    assert "Traceback" not in err


async def test_demo_speaks_the_thinnest_dialect_too(tmp_path):
    code, out, err = await run_cli(
        "demo", "--dialect", "thinnest", "--message", "use a tool", env=base_env(tmp_path), cwd=tmp_path
    )
    assert code == 0, err
    assert "get_order" in out


async def test_chat_json_and_thread_continuation(tmp_path, mock_agent_url):
    env = base_env(tmp_path, AGENT_API_URL=mock_agent_url)
    code, out, err = await run_cli("chat", "--agent", AGENT, "--thread", "support", "--json", "hello", env=env, cwd=tmp_path)
    assert code == 0, err
    first = json.loads(out)
    assert first["status"] == "done" and first["error"] is None
    assert first["conversation_id"] and first["trace_id"]  # this generation reports no usage
    assert "message #1" in first["text"]
    assert set(first) >= {"text", "tool_calls", "sources", "error", "conversation_id", "trace_id", "usage", "status"}

    code, out, err = await run_cli("chat", "--thread", "support", "--json", "and again", env=env, cwd=tmp_path)
    assert code == 0, err
    second = json.loads(out)
    assert second["conversation_id"] == first["conversation_id"]
    assert "message #2" in second["text"]
    assert second["agent_id"] == AGENT  # the thread kept its agent without --agent


async def test_chat_prints_the_reply_as_text(tmp_path, mock_agent_url):
    env = base_env(tmp_path, AGENT_API_URL=mock_agent_url, AGENT_DEFAULT_ID=AGENT)
    code, out, err = await run_cli("chat", "markdown please", env=env, cwd=tmp_path)
    assert code == 0, err
    assert "You said" in out


async def test_chat_failure_is_json_with_error_and_nonzero_exit(tmp_path, mock_agent_url):
    env = base_env(tmp_path, AGENT_API_URL=mock_agent_url)
    code, out, err = await run_cli("chat", "--agent", AGENT, "--json", "fail:402 please", env=env, cwd=tmp_path)
    assert code == 1
    reply = json.loads(out)
    assert reply["status"] == "failed"
    assert reply["error"]["kind"] == "insufficient_balance" and reply["error"]["http_status"] == 402
    assert "error:" in err and "hint:" in err
    assert KEY not in out + err


async def test_wrong_key_echoed_back_never_leaks(tmp_path):
    from bridge.mock_agent import running_mock_agent

    async with running_mock_agent(expected_key="sk-so-the-right-key") as url:
        env = base_env(tmp_path, AGENT_API_URL=url)
        code, out, err = await run_cli("chat", "--agent", AGENT, "--json", "hello", env=env, cwd=tmp_path)
    assert code == 1
    assert json.loads(out)["error"]["kind"] == "invalid_api_key"
    assert KEY not in out + err


async def test_mid_stream_error_keeps_text_and_fails(tmp_path, mock_agent_url):
    env = base_env(tmp_path, AGENT_API_URL=mock_agent_url)
    code, out, _ = await run_cli("chat", "--agent", AGENT, "--json", "error please", env=env, cwd=tmp_path)
    reply = json.loads(out)
    assert code == 1 and reply["status"] == "failed" and reply["text"] and reply["error"]["trace_id"]


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("AGENT_API_DIALECT", "klingon", "AGENT_API_DIALECT"),
        ("AGENT_API_URL", "not a url", "AGENT_API_URL"),
        ("BRIDGE_DATABASE_URL", "mysql://x/y", "BRIDGE_DATABASE_URL"),
        ("AGENT_IDLE_TIMEOUT", "-3", "AGENT_IDLE_TIMEOUT"),
    ],
)
async def test_bad_setting_fails_with_one_clear_line(tmp_path, variable, value, expected):
    env = base_env(tmp_path, **{variable: value})
    code, out, err = await run_cli("chat", "--agent", AGENT, "hello", env=env, cwd=tmp_path)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0]
    assert "Traceback" not in err and KEY not in err


async def test_missing_api_key_is_named_before_anything_starts(tmp_path):
    env = base_env(tmp_path)
    del env["AGENT_API_KEY"]
    code, _, err = await run_cli("chat", "--agent", AGENT, "hello", env=env, cwd=tmp_path)
    assert code == 2 and "AGENT_API_KEY: not set" in err and len(err.strip().splitlines()) == 1


async def test_settings_come_from_a_dotenv_file(tmp_path, mock_agent_url):
    (tmp_path / ".env").write_text(f"AGENT_API_URL={mock_agent_url}\nAGENT_DEFAULT_ID={AGENT}\n")
    code, out, err = await run_cli("chat", "--json", "hello", env=base_env(tmp_path), cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out)["status"] == "done"


async def test_unreachable_database_is_one_line(tmp_path):
    env = base_env(tmp_path, BRIDGE_DATABASE_URL="postgresql+asyncpg://bridge:hunter2@127.0.0.1:1/nope")
    code, _, err = await run_cli("db", "upgrade", env=env, cwd=tmp_path)
    assert code == 2 and "BRIDGE_DATABASE_URL" in err and "hunter2" not in err and "Traceback" not in err


async def test_db_upgrade_bind_list_unbind_audit(tmp_path):
    env = base_env(tmp_path)
    assert (await run_cli("db", "upgrade", env=env, cwd=tmp_path))[0] == 0
    code, out, err = await run_cli(
        "bind", AGENT, "--platform", "slack", "--workspace", "T1", "--channel", "C1", env=env, cwd=tmp_path
    )
    assert code == 0, err
    code, out, _ = await run_cli("bindings", env=env, cwd=tmp_path)
    assert "T1/C1" in out and AGENT in out
    code, _, err = await run_cli(
        "bind", "not-an-agent", "--platform", "slack", "--workspace", "T1", "--channel", "C2", env=env, cwd=tmp_path
    )
    assert code == 2 and "AGENT_ID" in err
    assert (await run_cli("unbind", "--platform", "slack", "--workspace", "T1", "--channel", "C1", env=env, cwd=tmp_path))[0] == 0
    code, _, err = await run_cli("unbind", "--platform", "slack", "--workspace", "T1", "--channel", "C1", env=env, cwd=tmp_path)
    assert code == 1 and "was not bound" in err
    code, out, _ = await run_cli("audit", env=env, cwd=tmp_path)
    assert "binding.set" in out and "binding.removed" in out


async def test_mock_agent_command_serves_both_dialects(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        EXE, "mock-agent", "--port", str(port), env=base_env(tmp_path), cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                try:
                    resp = await http.post("/v1/chat", json={"message": "hi"}, headers={"X-Api-Key": "k", "X-Agent-Id": AGENT})
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.1)
            assert resp.status_code == 200 and resp.json()["conversation_id"]
            resp = await http.post(
                "/chat/stream", json={"agent_id": "ag_x", "message": "hi"}, headers={"Authorization": "Bearer k"}
            )
            assert resp.status_code == 200 and '"type": "text"' in resp.text.replace('"type":"text"', '"type": "text"')
    finally:
        proc.terminate()
        await proc.wait()


async def test_run_without_platforms_says_which_variables_to_set(tmp_path):
    env = base_env(tmp_path)
    code, _, err = await run_cli("run", env=env, cwd=tmp_path)
    assert code == 2 and "SLACK_BOT_TOKEN" in err and "DISCORD_BOT_TOKEN" in err and "agent-bridge demo" in err
    code, _, err = await run_cli("run", "--platform", "discord", env=env, cwd=tmp_path)
    assert code == 2 and "DISCORD_BOT_TOKEN is not set" in err
    code, _, err = await run_cli("run", "--platform", "irc", env=env, cwd=tmp_path)
    assert code == 2 and "unknown platform irc" in err


async def test_run_with_half_a_slack_configuration_names_the_missing_variable(tmp_path):
    env = base_env(tmp_path, SLACK_BOT_TOKEN="xoxb-1111-2222-fakefakefakefake")
    code, _, err = await run_cli("run", env=env, cwd=tmp_path)
    assert code == 2 and "SLACK_SIGNING_SECRET" in err and "xoxb-1111" not in err


async def test_discord_subcommands_are_reachable(tmp_path):
    code, out, err = await run_cli("discord", "invite-url", env=base_env(tmp_path), cwd=tmp_path)
    assert code == 2 and "DISCORD_BOT_TOKEN" in out + err


async def test_json_logs_carry_the_reply_context(tmp_path, mock_agent_url):
    env = base_env(tmp_path, AGENT_API_URL=mock_agent_url, BRIDGE_LOG_FORMAT="json")
    code, _, err = await run_cli("chat", "--agent", AGENT, "--thread", "logs", "error please", env=env, cwd=tmp_path)
    assert code == 1
    entries = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    failure = next(e for e in entries if e["logger"] == "bridge.agent")
    assert failure["level"] == "WARNING" and failure["thread"] == "logs" and failure["platform"] == "terminal"
    assert failure["reply_id"] and failure["trace_id"]
    assert KEY not in err
