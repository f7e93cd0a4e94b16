"""Commands the tool tells its user to run: one renderer for every printer, so that the CLI's
next steps, status's fixes and the TUI's hints all name the target they were given.

A hint for a target that is not ``/`` carries ``--root DIR`` (right after the command), and
a file of the target it names is given as this machine sees it (``DIR/etc/…``), since the
command reads it here. Every word is shell-quoted as it would be typed, and anything a
terminal would interpret is escaped (so the hint is shown literally, on one line).
"""

from __future__ import annotations

import os
import shlex

from tui.errors import escape

#: Commands that work on paths of this machine and refuse --root (tui/cli.py _merge_globals).
NO_ROOT = ("image",)


def _word(text: str) -> str:
    """The word as it is typed: quoted for the shell; one with characters a terminal would
    interpret is given in bash's $'…' form, whose escapes name the very same characters."""
    if all(ch.isprintable() for ch in text):
        return shlex.quote(text)
    return "$'" + escape(text).replace("'", "\\'") + "'"


def command(root: str | os.PathLike, *words: str) -> str:
    """``tmpfs-root WORDS…`` for the target *root*: ``--root DIR`` after the command when the
    target is not ``/``, e.g. ``tmpfs-root apply --root /mnt/target --plan FILE``."""
    root = os.fspath(root)
    first, rest = (words[0], list(words[1:])) if words else ("", [])
    if root != "/" and first not in NO_ROOT:
        rest = ["--root", root, *rest]
    return " ".join(_word(w) for w in ["tmpfs-root", *([first] if first else []), *rest])


def target_file(root: str | os.PathLike, path: str) -> str:
    """A file of the target (*path*, as the target sees it) as this machine names it."""
    root = os.fspath(root)
    return path if root == "/" else root.rstrip("/") + path
