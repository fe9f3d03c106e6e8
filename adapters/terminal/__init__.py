"""The terminal adapter: watch a reply stream in your terminal, edited in place."""

from adapters.terminal.render import render_part
from adapters.terminal.surface import TerminalSurface

__all__ = ["TerminalSurface", "render_part"]
