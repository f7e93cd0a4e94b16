"""Textual screens of the tmpfs-root TUI, one module per step of the conversion."""
