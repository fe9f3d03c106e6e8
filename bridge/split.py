"""Splitting a reply's text into message-sized parts, stably while it streams.

The relay posts part 0, edits it while text arrives and, once the text no longer fits,
freezes part 0 and posts part 1. Two promises make that safe:

* **Exact.** ``unsplit(split_text(t, n)) == t`` for every string ``t``. Parts are plain slices
  of the text, except where a break had to fall inside a ``` code fence: the part is then
  closed with a fence line and the next part reopens the fence (``"```lang\\n"``), so every
  message renders on its own. ``unsplit`` removes exactly those added markers.
* **Prefix-stable.** Whether and where part *k* ends depends only on the text up to one
  character past the end of its window, so appending text never changes a part that already
  has a successor: ``split_text(t + more, n)[:-1]`` starts with ``split_text(t, n)[:-1]``.
  `StableSplitter` is the incremental form the relay uses.

Fence model (the common denominator of Slack, Discord and CommonMark): a *fence line* is a
line starting with up to three spaces and then ``` ; each fence line toggles "inside a code
block". A line toggles once it is complete (ends with ``"\\n"``), so the state at a break
never depends on text that has not arrived yet.

Break preference inside the window ``[min_fill * window, window]``: a paragraph boundary
(after a blank line), then a line boundary, then after a space, all outside fences first;
then the same boundaries inside a fence (closing and reopening it); else a hard break near
the end of the window. A break that would fall inside a fence is replaced by the latest
boundary outside fences anywhere in the window, even below the fill threshold, so a code
block is only cut when it does not fit in a part of its own. A break never falls inside
``"\\r\\n"``, inside a (possible) fence line, or just before a space or backtick, unless a
single line fills the whole window.

Balance: every part but the last has an even number of fence lines; the last has an even
number when the whole text does. (The one exception: a fence line longer than a part's
window must itself be cut; text stays exact, but that block is not repaired.)

Length budget: every part is ``<= limit``. The part's own text is kept to ``limit -
FENCE_RESERVE`` (minus the reopening marker), which leaves room both for the closing marker
added at a fenced break and for `close_open_fence` when a renderer shows a streaming part.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

FENCE_RESERVE = 5
"""Characters every part leaves free: the largest closer (``"\\n``` "``) or `close_open_fence` addition."""

MIN_LIMIT = 40
"""Smallest supported limit: room for the longest reopening marker, the reserve and some text."""

MAX_LANG = 20
"""A fence's language tag is carried into the reopening marker only up to this length."""

_FENCE_LINE = re.compile(r" {0,3}```")
_MAYBE_FENCE_PARTIAL = re.compile(r" {0,3}(?:```.*|`{0,2})", re.DOTALL)
_LANG = re.compile(rf"[\w+#.\-]{{1,{MAX_LANG}}}")

_LINE_CLOSER = "```"
"""Added after a part whose text ends at a line boundary inside a fence."""
_MID_CLOSER = "\n``` "
"""Added after a part whose text ends mid-line inside a fence. The trailing space (allowed
after a closing fence everywhere) is what tells `unsplit` the two closers apart."""


# --- fence state ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FenceState:
    """The fence state at a position: inside a block or not, and the block's reopening marker."""

    inside: bool = False
    opener: str = ""

    def advance(self, text: str, start: int, end: int) -> _FenceState:
        """The state at `end`, given this state at `start`: complete lines ending in between count.

        Lines are lines of the whole `text`, so a part that begins mid-line sees the same
        line as the text it came from.
        """
        inside, opener = self.inside, self.opener
        line_start = text.rfind("\n", 0, start) + 1
        while (nl := text.find("\n", start, end)) != -1:
            line = text[line_start:nl]
            if _FENCE_LINE.match(line):
                inside = not inside
                opener = _opener_for(line) if inside else ""
            start = line_start = nl + 1
        return _FenceState(inside, opener)


def _opener_for(fence_line: str) -> str:
    """The marker that reopens the block `fence_line` opened: ``"```lang\\n"``."""
    info = fence_line.strip().lstrip("`").split(maxsplit=1)
    lang = info[0] if info and _LANG.fullmatch(info[0]) else ""
    return f"```{lang}\n"


def _in_fence_line(text: str, p: int) -> bool:
    """Whether `p` falls after the start of a line that is, or may still become, a fence line."""
    partial = text[text.rfind("\n", 0, p) + 1 : p]
    return bool(partial) and _MAYBE_FENCE_PARTIAL.fullmatch(partial) is not None


def _fenced(state_at_p: _FenceState, text: str, p: int) -> bool:
    """Whether a break at `p` must close and reopen a fence."""
    return state_at_p.inside and not _in_fence_line(text, p)


# --- splitting ------------------------------------------------------------------------------


def _check(limit: int, min_fill: float) -> None:
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT}, got {limit}")
    if not 0.0 <= min_fill <= 1.0:
        raise ValueError(f"min_fill must be within [0, 1], got {min_fill}")


def _maybe_fence_partial(text: str, line_start: int, p: int) -> bool:
    """`_in_fence_line` for a known line start, in constant time."""
    if p - line_start <= 5:
        return p > line_start and _MAYBE_FENCE_PARTIAL.fullmatch(text, line_start, p) is not None
    return _FENCE_LINE.match(text, line_start) is not None


def _choose_break(text: str, start: int, state: _FenceState, window: int, min_fill: float) -> int:
    """Where the part whose text starts at `start` ends; requires ``len(text) - start > window``.

    Only `text[:start + window + 1]` is read, which is what makes splitting prefix-stable.
    One forward pass (linear in the window) finds, for each kind of boundary outside and
    inside fences, its latest position; and the latest position fit for a hard break.
    """
    end = start + window
    low = max(start + 1, start + math.ceil(window * min_fill))
    best: dict[tuple[bool, int], int] = {}  # (inside a fence, rank) -> latest position
    early: int | None = None  # latest boundary outside fences, below the fill threshold
    hard: int | None = None
    hard_inside = False
    inside = state.inside
    line_start = text.rfind("\n", 0, start) + 1
    for p in range(start + 1, end + 1):
        before, after = text[p - 1], text[p]
        rank: int | None = None
        if before == "\n":
            line = text[line_start : p - 1]
            if _FENCE_LINE.match(line):
                inside = not inside
            rank = 0 if not line.strip() else 1
            line_start = p
            hard, hard_inside = p, inside
        elif not _maybe_fence_partial(text, line_start, p) and after not in " `":
            if before == " ":
                rank = 2
            if not (before == "\r" and after == "\n"):
                hard, hard_inside = p, inside
        if rank is not None:
            if p >= low:
                best[(inside, rank)] = p
            elif not inside:
                early = p
    if best:
        key = min(best)
        chosen, chosen_inside = best[key], key[0]
    elif hard is not None:
        chosen, chosen_inside = hard, hard_inside
    else:
        chosen = end - 1 if text[end - 1] == "\r" and text[end] == "\n" else end
        chosen_inside = inside
    # Rather a short part than a code block cut when the block could start the next part.
    return early if chosen_inside and early is not None else chosen


def _split_from(
    text: str, start: int, state: _FenceState, opener: str, limit: int, min_fill: float
) -> tuple[list[tuple[str, int, _FenceState, str]], str]:
    """Cut complete parts off `text[start:]`: each (part, end, state at end, next opener), and the tail part."""
    done: list[tuple[str, int, _FenceState, str]] = []
    while True:
        window = limit - len(opener) - FENCE_RESERVE
        if len(text) - start <= window:
            return done, opener + text[start:]
        p = _choose_break(text, start, state, window, min_fill)
        state_at_p = state.advance(text, start, p)
        body = text[start:p]
        if _fenced(state_at_p, text, p):
            closer = _LINE_CLOSER if body.endswith("\n") else _MID_CLOSER
            next_opener = state_at_p.opener
        else:
            closer = next_opener = ""
        done.append((opener + body + closer, p, state_at_p, next_opener))
        start, state, opener = p, state_at_p, next_opener


def split_text(text: str, limit: int, *, min_fill: float = 0.5) -> list[str]:
    """Split `text` into parts of at most `limit` characters (see the module docstring).

    Returns ``[""]`` for empty text (a reply always has one message, even before its first
    word); otherwise every part is non-empty. `min_fill` is the share of a part's window
    below which a boundary is not used (a hard break is preferred to a tiny part).
    """
    _check(limit, min_fill)
    done, tail = _split_from(text, 0, _FenceState(), "", limit, min_fill)
    return [part for part, *_ in done] + [tail]


def unsplit(parts: Sequence[str]) -> str:
    """The original text of `split_text`'s parts: their concatenation minus the added fence markers.

    A part ends with an added closer exactly when removing it leaves a break that
    `split_text` would have fenced; the split's rules guarantee that test is unambiguous.
    """
    source = ""
    state = _FenceState()
    opener = ""
    for i, part in enumerate(parts):
        if opener:
            if not part.startswith(opener):
                raise ValueError(f"part {i} does not reopen its code fence with {opener!r}")
            part = part[len(opener) :]
        body, opener = part, ""
        if i < len(parts) - 1:
            for closer, at_line_start in ((_LINE_CLOSER, True), (_MID_CLOSER, False)):
                candidate = part[: -len(closer)]
                if not part.endswith(closer) or candidate.endswith("\n") != at_line_start:
                    continue
                whole = source + candidate
                at = state.advance(whole, len(source), len(whole))
                if _fenced(at, whole, len(whole)):
                    body, opener = candidate, at.opener
                    break
        new_source = source + body
        state = state.advance(new_source, len(source), len(new_source))
        source = new_source
    return source


class StableSplitter:
    """The incremental `split_text` for a streaming reply.

    Contract: feed `update` the reply's whole text each time; each text must extend the
    previous one (append-only, else `ValueError`). `update` returns the same list as
    ``split_text(text, limit)``; the parts before the last are *frozen*: they are kept in
    `frozen` and never change on later updates, so the relay can finalize and stop editing
    them. Only the last part keeps changing. Work per update is proportional to the text
    after the last frozen break.
    """

    def __init__(self, limit: int, *, min_fill: float = 0.5) -> None:
        _check(limit, min_fill)
        self.limit = limit
        self.min_fill = min_fill
        self._frozen: list[str] = []
        self._source = ""  # the text up to the last frozen break
        self._state = _FenceState()
        self._opener = ""

    @property
    def frozen(self) -> tuple[str, ...]:
        """The parts that will never change again."""
        return tuple(self._frozen)

    def update(self, text: str) -> list[str]:
        """Split the reply's current full `text`; frozen parts are returned unchanged."""
        if not text.startswith(self._source):
            raise ValueError("StableSplitter.update needs append-only text")
        done, tail = _split_from(
            text, len(self._source), self._state, self._opener, self.limit, self.min_fill
        )
        for part, end, state, opener in done:
            self._frozen.append(part)
            self._source = text[:end]
            self._state, self._opener = state, opener
        return [*self._frozen, tail]

    split = update
    """Alias: the relay passes ``splitter.split`` where a ``text -> parts`` function is expected."""


# --- rendering partial text ------------------------------------------------------------------

_BACKTICK_RUN = re.compile(r"`+")


def close_open_fence(text: str) -> str:
    """Close what a streaming prefix left open, so a platform renders it as it will end up.

    An unclosed ``` block gets a closing fence line (the last line counts even without a
    newline: a just-arrived ``"```py"`` opens a block, a just-arrived ``"```"`` closes one).
    Outside fences, an inline code span opened by one or two backticks in the last paragraph,
    with text after it, gets its closing run. Adds at most 4 characters (within
    `FENCE_RESERVE`); balanced text is returned unchanged.
    """
    state = _FenceState().advance(text, 0, len(text))
    last = text[text.rfind("\n") + 1 :]
    if state.inside != bool(_FENCE_LINE.match(last)):
        return text + ("```" if text.endswith("\n") else "\n```")
    paragraph: list[str] = []
    for line in reversed(text.split("\n")):
        if _FENCE_LINE.match(line) or (not line.strip() and paragraph):
            break
        paragraph.append(line)
    tail = "\n".join(reversed(paragraph))
    open_run, opened_at = "", 0
    for run in _BACKTICK_RUN.finditer(tail):
        if not open_run:
            open_run, opened_at = run.group(), run.end()
        elif run.group() == open_run:
            open_run = ""
    if open_run and len(open_run) <= 2 and tail[opened_at:].strip():
        closed = text + open_run
        if not _FENCE_LINE.match(closed[closed.rfind("\n") + 1 :]):  # closing must not forge a fence
            return closed
    return text
