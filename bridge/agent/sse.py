"""Server-Sent Events decoding, one received chunk at a time.

Why here: httpx-sse reads from an httpx response, and the client now reads the stream with
aiohttp (see `client`). Framing a whole chunk per call also avoids httpx-sse's generator hop
and method call per *line*: this takes whatever bytes arrived and returns every event they
complete. It follows the WHATWG event-stream interpretation: CRLF, CR or LF line ends (also
when CR and LF arrive in different chunks), a leading BOM skipped, `:` comment lines ignored,
`data:` lines joined with LF, one optional space after the colon removed, a field without a
colon is a field with an empty value, `id` (ignored when it contains NUL) and `retry` (ASCII
digits only) remembered, unknown fields ignored, and an event that the stream's end interrupts
never dispatched. `tests/test_sse_decoder.py` checks it against httpx-sse's decoder.
"""

from __future__ import annotations

import codecs


class SseDecoder:
    """Bytes in, `(event type, data)` pairs out; one instance per stream."""

    __slots__ = ("_utf8", "_pending", "_after_cr", "_started", "_event", "_data", "last_event_id", "retry")

    def __init__(self) -> None:
        # SSE is UTF-8 by definition; undecodable bytes become U+FFFD, as the spec says.
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""  # the start of a line whose end has not arrived yet
        self._after_cr = False  # the last chunk ended with CR: a leading LF is part of that line end
        self._started = False  # a leading BOM is only skipped at the very start of the stream
        self._event = ""
        self._data: list[str] = []
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """Every event completed by `chunk`, in order; `(event type or "message", data)`."""
        text = self._utf8.decode(chunk)
        if self._after_cr:
            self._after_cr = False
            if text[:1] == "\n":
                text = text[1:]
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if "\r" in text:
            self._after_cr = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        if len(lines) == 1:  # no line end in this chunk
            self._pending += text
            return []
        if self._pending:
            lines[0] = self._pending + lines[0]
        self._pending = lines.pop()  # "" when the chunk ended with a line end
        return self._interpret(lines)

    def _interpret(self, lines: list[str]) -> list[tuple[str, str]]:
        events: list[tuple[str, str]] = []
        data = self._data
        for line in lines:
            if not line:  # a blank line dispatches the event, if it has data
                if data:
                    events.append((self._event or "message", "\n".join(data)))
                    data = self._data = []
                self._event = ""
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                if "\0" not in value:
                    self.last_event_id = value
            elif name == "retry":
                if value.isascii() and value.isdigit():
                    self.retry = int(value)
        return events
