#!/usr/bin/env python3
"""Generate the man page tmpfs-root(8) from the argument parser (tui.cli.build_parser) with
argparse-manpage (the test extra installs it):

    python3 man/generate.py            # write man/tmpfs-root.8
    python3 man/generate.py --check    # exit 1 when man/tmpfs-root.8 is not what it would write

The page is committed and installed with the package (pyproject.toml's data-files, into
share/man/man8); tests/test_docs.py regenerates it and compares, so it cannot drift from
the options. Its date is the newest release's in CHANGELOG.md, so the same code always makes
the same page.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "man/tmpfs-root.8"

SEE_ALSO = (
    "dracut(8), grub-mkconfig(8), grub-reboot(8), tmpfs(5), bootparam(7). The kernel "
    "command line (rd.tmpfs.*), image formats, fleets, the threat model and every console "
    "line of the boot are described in the docs/ folder "
    "of the tmpfs-root source tree: docs/cmdline.md, docs/images.md, "
    "docs/fleets.md, docs/threat-model.md, docs/troubleshooting.md."
)
FILES = (
    "/etc/tmpfs-root/ (plan.toml, state.json, grub.env): the installed plan and state. "
    "/boot/initrd-tmpfs-root-KVER.img: the initramfs tmpfs-root builds, beside the "
    "distribution's. /etc/grub.d/42_tmpfs-root, or /boot/loader/entries/tmpfs-root-KVER.conf "
    "on BLS systems: the boot entry. /usr/lib/dracut/modules.d/90tmpfs-root: the dracut "
    "module. /var/lib/tmpfs-root/backup: what apply replaced, with its journal. "
    "/var/log/tmpfs-root/tmpfs-root.log: the log of every apply and remove."
)
EXIT_STATUS = (
    "0: success. 1: a failure (a step failed and was rolled back; status found something "
    "that needs attention). 2: bad input (an option or plan refused; no terminal for the "
    "TUI). 130: cancelled."
)


def release_date() -> str:
    """The date of the newest release in CHANGELOG.md (its first `## … (YYYY-MM-DD)` heading)."""
    m = re.search(r"^## .*?(\d{4}-\d{2}-\d{2})", (REPO / "CHANGELOG.md").read_text(), re.M)
    if not m:
        raise SystemExit("man/generate.py: no dated release heading in CHANGELOG.md")
    return m.group(1)


def render() -> str:
    """The man page, as text."""
    os.environ["COLUMNS"] = "80"  # argparse wraps usage lines to the terminal: the same everywhere
    sys.path.insert(0, str(REPO))
    from argparse_manpage.manpage import Manpage

    from tui import __version__
    from tui.cli import build_parser

    page = Manpage(
        build_parser(),
        {
            "project_name": "tmpfs-root",
            "version": __version__,
            "date": release_date(),
            "manual_section": "8",
            "manual_title": "System Administration",
            "description": "boot a Linux host with its root filesystem in RAM (tmpfs)",
        },
    )
    page.add_section("exit status", "=", EXIT_STATUS)
    page.add_section("files", "=", FILES)
    page.add_section("see also", "=", SEE_ALSO)
    return str(page)


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if PAGE.read_text() != text:
            print(f"{PAGE} is out of date: run python3 man/generate.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
