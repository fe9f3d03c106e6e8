"""Keep secrets out of log lines, exception texts and failure details.

Upstream services sometimes echo the caller's key back in an error body; everything the
bridge logs or stores from upstream passes through `redact` first, and the logging filter
is a second net for anything that slips through.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

REDACTED = "[redacted]"

_KEY_LIKE = re.compile(r"sk-so-[A-Za-z0-9_\-]+")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret, and anything shaped like a key or bearer token."""
    # Longest first, so a secret that contains another is removed whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _KEY_LIKE.sub(REDACTED, text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Formats each record's message, then redacts it (and its exception text) in place."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not drop the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message, self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def install_redaction(secrets: Iterable[str]) -> RedactingFilter:
    """Attach one `RedactingFilter` to the root logger and each of its current handlers.

    Handler filters see records propagated from every named logger, the root logger's own
    filter only its direct records; handlers added later need `handler.addFilter(...)`.
    Calling it again replaces the previous filter (e.g. after the key was rotated).
    """
    new = RedactingFilter(secrets)
    root = logging.getLogger()
    for target in (root, *root.handlers):
        for old in [f for f in target.filters if isinstance(f, RedactingFilter)]:
            target.removeFilter(old)
        target.addFilter(new)
    return new
