"""tmpfs-root: boot a Linux host with its root filesystem unpacked into RAM.

The engine (every module in this package except ``app``) knows nothing of
Textual: it is usable from the CLI, from tests and from the TUI alike.
"""

__version__ = "0.1.0"
