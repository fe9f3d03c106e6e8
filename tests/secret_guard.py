"""Every secret value the test suite hands the bridge, and a check that none of them leaked.

The autouse fixture in conftest applies `leaks()` to every log record of every test; the fake
platforms apply it to every API request body they received and every message they show.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.agent_fakes import API_KEY as AGENT_FAKES_KEY
from tests.discord_fake import BOT_TOKEN as DISCORD_TOKEN
from tests.slack_fake import APP_TOKEN as SLACK_APP_TOKEN
from tests.slack_fake import BOT_TOKEN as SLACK_BOT_TOKEN
from tests.slack_fake import SIGNING_SECRET as SLACK_SIGNING_SECRET

CONFTEST_KEY = "sk-so-test-key-0123456789"
CLI_KEY = "sk-so-cli-secret-key-424242"
LIFECYCLE_KEY = "sk-so-lifecycle-key"

KNOWN_SECRETS: tuple[str, ...] = (
    CONFTEST_KEY,
    CLI_KEY,
    LIFECYCLE_KEY,
    AGENT_FAKES_KEY,
    SLACK_BOT_TOKEN,
    SLACK_APP_TOKEN,
    SLACK_SIGNING_SECRET,
    DISCORD_TOKEN,
)


def leaks(texts: Iterable[str]) -> list[str]:
    """The known secrets found in any of `texts` (empty when clean)."""
    found = []
    for text in texts:
        found.extend(secret for secret in KNOWN_SECRETS if secret in text)
    return sorted(set(found))
