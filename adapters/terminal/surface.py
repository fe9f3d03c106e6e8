"""The terminal as a chat surface: replies stream into a live region, edited in place.

One *exchange* (a user message and everything the bridge posts for it) is shown in a
`rich.live.Live` region that is redrawn on every post/edit/delete. When the console is not a
terminal (tests, ``agent-bridge chat > file``), nothing is redrawn: each message's final
state is printed once when the exchange ends, so piped output is clean.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from adapters.terminal.render import render_part
from bridge.keys import MessageRef, ThreadKey
from bridge.reply import MessagePart
from bridge.surface import MessageGone, Rate, Scope, SurfaceLimits


class TerminalSurface:
    """A `bridge.surface.Surface` that draws replies in a terminal (or prints them once when piped)."""

    platform = "terminal"

    def __init__(self, console: Console | None = None) -> None:
        self.console = console if console is not None else Console()
        # Generous limits: a terminal has no API quota, only redraw cost.
        self.limits = SurfaceLimits(
            max_text=20_000,
            post=Rate(50, 10, Scope.GLOBAL),
            edit=Rate(20, 5, Scope.MESSAGE),
        )
        self.messages: dict[str, RenderableType] = {}
        """Every live (not deleted) message's latest payload, by message id."""
        self._threads: dict[str, ThreadKey] = {}
        self._shown: list[str] = []  # ids in the current exchange, in posting order
        self._in_exchange = False
        self._live: Live | None = None
        self._next_id = 1

    # -- Surface ---------------------------------------------------------------------------

    def render(self, part: MessagePart) -> RenderableType:
        return render_part(part)

    async def post(self, thread: ThreadKey, payload: RenderableType) -> MessageRef:
        """Add a message to the current exchange (starting one if needed) and redraw."""
        if not self._in_exchange:
            self.begin_exchange()
        message_id = str(self._next_id)
        self._next_id += 1
        self.messages[message_id] = payload
        self._threads[message_id] = thread
        self._shown.append(message_id)
        self._refresh()
        return MessageRef(thread, message_id, thread.channel)

    async def edit(self, message: MessageRef, payload: RenderableType) -> None:
        """Replace a message's payload; a deleted or unknown message raises `MessageGone`."""
        if message.id not in self.messages:
            raise MessageGone(f"terminal message {message.id} does not exist")
        self.messages[message.id] = payload
        if message.id in self._shown:
            self._refresh()

    async def delete(self, message: MessageRef) -> None:
        """Remove a message from the record and from the display."""
        if self.messages.pop(message.id, None) is None:
            raise MessageGone(f"terminal message {message.id} does not exist")
        self._threads.pop(message.id, None)
        if message.id in self._shown:
            self._shown.remove(message.id)
            self._refresh()

    # -- exchanges -------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        """Whether messages are redrawn in place (a real terminal) rather than printed at the end."""
        return self.console.is_terminal and not self.console.is_dumb_terminal

    def begin_exchange(self) -> None:
        """Start showing a new exchange; a still-open one is ended first."""
        if self._in_exchange:
            self.end_exchange()
        self._in_exchange = True
        self._shown = []
        if self.live:
            self._live = Live(
                console=self.console,
                get_renderable=self._view,
                auto_refresh=False,
                transient=False,
            )
            self._live.start()

    def end_exchange(self) -> None:
        """Leave the exchange's final state on screen: stop the live region, or print it once."""
        if not self._in_exchange:
            return
        self._in_exchange = False
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()  # its last refresh draws the final state in full
        elif self._shown:
            self._print_once(self._view())
        self._shown = []

    def close(self) -> None:
        """End any open exchange (for callers that hold the surface for a whole session)."""
        self.end_exchange()

    @contextmanager
    def exchange(self) -> Iterator[TerminalSurface]:
        """``with surface.exchange(): ...`` — begin, and always end, one exchange."""
        self.begin_exchange()
        try:
            yield self
        finally:
            self.end_exchange()

    # -- helpers ---------------------------------------------------------------------------

    def plain_text(self, message_id: str, width: int | None = None) -> str:
        """A message's latest payload as the plain text a reader would see (for tests and logs)."""
        payload = self.messages[message_id]
        buffer = io.StringIO()
        Console(
            file=buffer,
            width=width or self.console.width,
            force_terminal=False,
            color_system=None,
            highlight=False,
        ).print(payload)
        return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n")

    def _print_once(self, view: RenderableType) -> None:
        """Print the final state; without colours, also drop Rich's right padding (clean files)."""
        if self.console.color_system is not None:
            self.console.print(view)
            return
        with self.console.capture() as captured:
            self.console.print(view)
        lines = [line.rstrip() for line in captured.get().splitlines()]
        self.console.out("\n".join(lines), highlight=False)

    def _view(self) -> RenderableType:
        """The current exchange's messages, a blank line apart."""
        items: list[RenderableType] = []
        for message_id in self._shown:
            if items:
                items.append(Text(""))
            items.append(self.messages[message_id])
        return Group(*items)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()
