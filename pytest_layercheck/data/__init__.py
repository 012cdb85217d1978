"""data layer (see ARCHITECTURE.md)."""
