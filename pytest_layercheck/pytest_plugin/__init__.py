"""pytest_plugin layer (see ARCHITECTURE.md)."""
