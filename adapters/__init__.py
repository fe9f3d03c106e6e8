"""Per-platform adapters: thin translation layers over the core's Surface protocol."""
