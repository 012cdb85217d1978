"""evaluation layer (see ARCHITECTURE.md)."""
