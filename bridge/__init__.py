"""agent-bridge: the platform-neutral core that streams an agent's reply into chat platforms."""

__version__ = "0.1.0"
