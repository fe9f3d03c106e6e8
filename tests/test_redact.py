"""Secret redaction: the function, the logging filter, and its installation."""

from __future__ import annotations

import io
import logging

from bridge.redact import REDACTED, RedactingFilter, install_redaction, redact

KEY = "sk-so-abc123DEF456"


def test_redact_known_secrets_and_key_shapes():
    text = f"key={KEY} other=hunter2 auth: Bearer eyJhbGciOi.J9x-y_z= sk-so-unknownKey99 end"
    out = redact(text, [KEY, "hunter2", ""])
    assert KEY not in out and "hunter2" not in out and "sk-so-unknownKey99" not in out
    assert "eyJhbGciOi" not in out and "Bearer [redacted]" in out
    assert out.startswith("key=[redacted] other=[redacted]") and out.endswith(" end")


def test_redact_longest_secret_first_and_leaves_clean_text_alone():
    assert redact("abcdef", ["abc", "abcdef"]) == REDACTED
    assert redact("nothing secret here", ["zzz"]) == "nothing secret here"


def test_filter_formats_then_redacts_message_args_and_exception():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([KEY]))
    logger = logging.getLogger("tests.redact.filter")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("upstream said %s (%d)", f"bad key {KEY}", 401)
        try:
            raise RuntimeError(f"exploded with {KEY}")
        except RuntimeError:
            logger.exception("failed for %s", KEY)
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert KEY not in output
    assert "upstream said bad key [redacted] (401)" in output
    assert "RuntimeError: exploded with [redacted]" in output


def test_install_redaction_covers_propagated_records_and_replaces_itself():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_redaction(["old-secret"])
        installed = install_redaction([KEY])
        assert [f for f in root.filters if isinstance(f, RedactingFilter)] == [installed]
        assert [f for f in handler.filters if isinstance(f, RedactingFilter)] == [installed]
        logging.getLogger("bridge.agent.some.child").error("key %s", KEY)
    finally:
        root.removeHandler(handler)
        for f in [f for f in root.filters if isinstance(f, RedactingFilter)]:
            root.removeFilter(f)
    assert stream.getvalue().strip() == "key [redacted]"
