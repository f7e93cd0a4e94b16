"""One error root for the whole engine, and how untrusted text is shown in messages.

Every error the engine raises for the user is a :class:`TmpfsRootError` whose
message is one line; its subclass says how it ends the program:

* :class:`BadInput` (exit status 2): what the user gave (an option, a plan file,
  an image to inspect, an output path) is not accepted; nothing was written;
* :class:`Failure` (exit status 1): the work itself failed (a command, a damaged
  target, a full disk); whatever was done is rolled back;
* :class:`Cancelled` (exit status 130): the user interrupted it; rolled back too.

Values that came from outside (options, file contents, a target's files, device
labels) reach a message only through :func:`shown`, which escapes what a terminal
would interpret and cuts what is too long, so a message stays one honest line.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: How much of a value a message shows before cutting it.
SHOWN_LIMIT = 80


class TmpfsRootError(Exception):
    """An error for the user: the message is one line."""

    exit_status = EXIT_FAILED


class BadInput(TmpfsRootError):
    """The input is not accepted; nothing was written."""

    exit_status = EXIT_USAGE


class Failure(TmpfsRootError):
    """The work failed (and was rolled back where it had begun)."""

    exit_status = EXIT_FAILED


class Cancelled(TmpfsRootError):
    """Interrupted by the user (Ctrl-C, SIGTERM, Escape in the TUI); rolled back."""

    exit_status = EXIT_INTERRUPTED


def escape(value: str) -> str:
    """*value* with every character a terminal or a log would interpret written as an escape
    (``\\n``, ``\\x1b``, ``\\u202e``), so that what is shown is what was given."""
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def shown(value: object, limit: int = SHOWN_LIMIT) -> str:
    """An untrusted value as a message shows it: quoted, escaped, at most *limit* characters
    of it (the rest counted), e.g. ``'a\\nb'`` or ``'xxxx…' (10240 characters)``."""
    text = value if isinstance(value, str) else str(value)
    cut = text[:limit]
    body = escape(cut).replace("'", "\\'")
    if len(text) > limit:
        return f"'{body}…' ({len(text)} characters)"
    return f"'{body}'"
