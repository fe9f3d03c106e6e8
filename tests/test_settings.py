"""Settings: defaults, validation messages that name the variable, no secret in any error."""

from __future__ import annotations

import pytest

from bridge.config import ConfigError, Dialect, load_settings

SECRET = "sk-so-do-not-print-me"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("AGENT_API_URL", "AGENT_API_KEY", "AGENT_API_DIALECT", "AGENT_DEFAULT_ID", "BRIDGE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    s = load_settings()
    assert str(s.agent_api_url).startswith("https://api.sentientone.ai")
    assert s.agent_api_dialect is Dialect.SENTIENTONE
    assert s.bridge_database_url == "sqlite+aiosqlite:///./agent-bridge.db"
    assert s.agent_default_id is None and s.api_key == ""


def test_blank_values_count_as_unset(monkeypatch):
    monkeypatch.setenv("AGENT_DEFAULT_ID", "  ")
    monkeypatch.setenv("AGENT_API_KEY", "")
    s = load_settings()
    assert s.agent_default_id is None and s.secrets() == []


def test_errors_name_every_bad_variable_and_never_the_secret(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", SECRET)
    monkeypatch.setenv("AGENT_API_DIALECT", "klingon")
    monkeypatch.setenv("AGENT_MAX_RETRIES", "many")
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert "AGENT_API_DIALECT" in text and "AGENT_MAX_RETRIES" in text
    assert SECRET not in text and "\n" not in text


def test_secret_is_hidden_in_repr(monkeypatch):
    monkeypatch.setenv("AGENT_API_KEY", SECRET)
    s = load_settings()
    assert SECRET not in repr(s) and s.secrets() == [SECRET]


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("AGENT_API_DIALECT=thinnest\nAGENT_DEFAULT_ID=ag_support\n")
    s = load_settings()
    assert s.agent_api_dialect is Dialect.THINNEST and s.agent_default_id == "ag_support"
