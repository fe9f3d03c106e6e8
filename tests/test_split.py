"""Splitting reply text into message parts: exact, bounded, fence-balanced and prefix-stable."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.split import (
    FENCE_RESERVE,
    MIN_LIMIT,
    StableSplitter,
    close_open_fence,
    split_text,
    unsplit,
)

FENCE_LINE = re.compile(r" {0,3}```")


def fence_lines(text: str) -> int:
    """Independent count of fence lines, the last (unterminated) line included."""
    return sum(1 for line in text.split("\n") if FENCE_LINE.match(line))


def max_fence_line(text: str) -> int:
    return max((len(line) for line in text.split("\n") if FENCE_LINE.match(line)), default=0)


TOKENS = [
    "lorem", "ipsum", "dolor", "x", "é", "🙂", "a" * 37, "",
    " ", " ", " ", "  ", "\n", "\n", "\n\n", "\r\n", "\r", "\t",
    "```", "```py\n", "```python\n", "\n```\n", "```\n", "   ```js\n", "    ```", "`", "``",
    "`code`", "*bold*", "> quote\n", "- item\n",
]

markdownish = st.lists(st.sampled_from(TOKENS), max_size=200).map("".join)
any_text = st.one_of(markdownish, st.text(max_size=400), st.text(alphabet="`\n\r ab", max_size=400))
limits = st.integers(min_value=MIN_LIMIT, max_value=160)
fills = st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0])


def check_parts(text: str, parts: list[str], limit: int) -> None:
    assert unsplit(parts) == text
    assert all(len(p) <= limit for p in parts)
    if text:
        assert all(parts), parts
    else:
        assert parts == [""]
    for i in range(len(parts) - 1):
        # No part ends in the middle of a CRLF.
        assert not (parts[i].endswith("\r") and parts[i + 1].startswith("\n"))
    if max_fence_line(text) < limit - 30:
        assert all(fence_lines(p) % 2 == 0 for p in parts[:-1]), parts
        assert fence_lines(parts[-1]) % 2 == fence_lines(text) % 2


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text, limit=limits, min_fill=fills)
def test_split_properties(text: str, limit: int, min_fill: float) -> None:
    check_parts(text, split_text(text, limit, min_fill=min_fill), limit)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text, limit=limits)
def test_balanced_text_gives_balanced_parts(text: str, limit: int) -> None:
    if fence_lines(text) % 2:
        text += "\n```"
    parts = split_text(text, limit)
    if max_fence_line(text) < limit - 30:
        assert all(fence_lines(p) % 2 == 0 for p in parts)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text, limit=limits, data=st.data())
def test_split_is_prefix_stable(text: str, limit: int, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(text)))
    before, after = split_text(text[:cut], limit), split_text(text, limit)
    assert after[: len(before) - 1] == before[:-1]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text, limit=limits, min_fill=fills, data=st.data())
def test_stable_splitter_never_changes_frozen_parts(
    text: str, limit: int, min_fill: float, data: st.DataObject
) -> None:
    splitter = StableSplitter(limit, min_fill=min_fill)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12)))
    seen_frozen: tuple[str, ...] = ()
    for cut in [*cuts, len(text)]:
        parts = splitter.update(text[:cut])
        assert parts == split_text(text[:cut], limit, min_fill=min_fill)
        assert splitter.frozen[: len(seen_frozen)] == seen_frozen
        assert list(splitter.frozen) == parts[:-1]
        seen_frozen = splitter.frozen
    check_parts(text, parts, limit)


@settings(max_examples=300)
@given(text=any_text)
@example(text="`0`0``\n`")  # closing an inline span must not turn the last line into a fence
def test_close_open_fence_balances_and_stays_within_reserve(text: str) -> None:
    closed = close_open_fence(text)
    assert closed.startswith(text)
    assert len(closed) - len(text) <= min(4, FENCE_RESERVE)
    assert fence_lines(closed) % 2 == 0


# --- examples -------------------------------------------------------------------------------


def test_empty_and_short_text() -> None:
    assert split_text("", 100) == [""]
    assert split_text("hello", 100) == ["hello"]
    assert unsplit([""]) == "" and unsplit([]) == ""


def test_limit_too_small_is_refused() -> None:
    with pytest.raises(ValueError):
        split_text("x", MIN_LIMIT - 1)
    with pytest.raises(ValueError):
        StableSplitter(100, min_fill=1.5)


def test_prefers_paragraph_then_line_then_space() -> None:
    para = "First paragraph, long enough.\nStill first.\n\nSecond paragraph, a bit longer."
    assert split_text(para, 60) == ["First paragraph, long enough.\nStill first.\n\n", "Second paragraph, a bit longer."]
    lines = "line one is quite long\nline two is long too\nthree"
    assert split_text(lines, 50)[0] == "line one is quite long\nline two is long too\n"
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    parts = split_text(words, 45)
    assert parts[0] == "alpha beta gamma delta epsilon zeta eta "
    assert "".join(parts) == words


def test_min_fill_prefers_a_hard_break_to_a_tiny_part() -> None:
    text = "Hi\n" + "x" * 200
    parts = split_text(text, 60)
    assert parts[0] == text[:55]  # not "Hi\n"
    assert split_text(text, 60, min_fill=0.0)[0] == "Hi\n"


def test_long_line_is_hard_broken_exactly() -> None:
    text = "y" * 250
    parts = split_text(text, 100)
    assert [len(p) for p in parts] == [95, 95, 60]
    assert "".join(parts) == text


def test_long_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print({i})  # step {i}" for i in range(40))
    text = f"Here is the script:\n\n```python\n{code}\n```\n\nThat's all."
    parts = split_text(text, 200)
    assert len(parts) > 3
    assert parts[0] == "Here is the script:\n\n"  # the block starts a part of its own
    for middle in parts[1:-1]:
        assert middle.startswith("```python\n") and middle.endswith("\n```")
        assert fence_lines(middle) == 2
    assert all(len(p) <= 200 for p in parts)
    assert unsplit(parts) == text


def test_code_line_longer_than_a_part_is_cut_mid_line_and_still_balanced() -> None:
    text = "```json\n" + '{"k": "' + "v" * 300 + '"}\n```'
    parts = split_text(text, 100)
    assert all(fence_lines(p) % 2 == 0 for p in parts)
    assert parts[0].endswith("\n``` ") and parts[1].startswith("```json\n")
    assert unsplit(parts) == text


def test_crlf_is_never_split() -> None:
    text = "ab\r\n" * 40
    for limit in range(MIN_LIMIT, 90):
        parts = split_text(text, limit)
        assert all(p.endswith("\r\n") for p in parts[:-1])
        assert unsplit(parts) == text
    long_crlf = "z" * 54 + "\r\n" + "z" * 100
    parts = split_text(long_crlf, 60)
    assert not parts[0].endswith("\r")


def test_stable_splitter_rejects_rewritten_text() -> None:
    splitter = StableSplitter(50)
    splitter.update("word " * 30)
    assert splitter.frozen
    with pytest.raises(ValueError):
        splitter.update("different " * 30)


def test_streaming_freezes_parts_as_text_grows() -> None:
    splitter = StableSplitter(60)
    text = ""
    posted: list[str] = []
    for i in range(50):
        text += f"token{i} "
        parts = splitter.update(text)
        for index, part in enumerate(parts[:-1]):
            if index < len(posted):
                assert posted[index] == part
            else:
                posted.append(part)
    assert "".join(splitter.update(text)) == text
    assert len(posted) >= 4


@pytest.mark.parametrize(
    ("text", "closed"),
    [
        ("", ""),
        ("plain", "plain"),
        ("```py", "```py\n```"),
        ("```py\nx = 1", "```py\nx = 1\n```"),
        ("```py\nx = 1\n", "```py\nx = 1\n```"),
        ("```py\nx = 1\n```", "```py\nx = 1\n```"),
        ("use `foo", "use `foo`"),
        ("use `foo` now", "use `foo` now"),
        ("a ``b", "a ``b``"),
        ("a `", "a `"),
        ("`x\n\nnext", "`x\n\nnext"),
    ],
)
def test_close_open_fence_examples(text: str, closed: str) -> None:
    assert close_open_fence(text) == closed
