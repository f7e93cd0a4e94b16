#!/usr/bin/env python3
"""Benchmark: how long until the TUI's first screen is on the terminal, beside a bare
Textual app (a Header, one line of text, a Footer) started the same way.

Each program runs RUNS times in rotation on a pseudo-terminal of 80×24; the clock runs
from the fork to the moment the screen's text arrives on the terminal: for tmpfs-root the
Overview's title, and then its verdict (the preflight checks done: "Ready." or "Cannot
convert"). Best and median are reported, as a table and as JSON.

    python3 bench/startup.py [--root DIR] [--runs 15] [--json FILE]

--root is the target the TUI opens (default: a small fake target made in a temporary
directory, so the figure does not depend on this machine's /boot); the TUI runs with
--dry-run.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BARE = """
from textual.app import App
from textual.widgets import Footer, Header, Static

class Bare(App):
    def compose(self):
        yield Header()
        yield Static("bare textual app ready")
        yield Footer()

Bare().run()
"""


def first_appearance(argv: list[str], marks: list[bytes], timeout: float = 30.0) -> list[float]:
    """Seconds from the fork until each of *marks* has appeared in the program's output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: an 80×24 terminal
        os.environ.update(TERM="xterm-256color", COLUMNS="80", LINES="24")
        os.execvp(argv[0], argv)
    start = time.monotonic()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    seen = b""
    found: list[float] = []
    try:
        while len(found) < len(marks) and time.monotonic() - start < timeout:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
                while len(found) < len(marks) and marks[len(found)] in seen:
                    found.append(time.monotonic() - start)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    if len(found) < len(marks):
        raise SystemExit(f"{argv}: {marks[len(found)]!r} never appeared")
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", help="the target the TUI opens (default: a small fake target)")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="tmpfs-root-bench-") as tmp:
        root = args.root
        if root is None:
            sys.path.insert(0, str(REPO))
            from tests.infra import make_fake_target

            root = str(make_fake_target(Path(tmp) / "target"))
        bare = Path(tmp) / "bare.py"
        bare.write_text(BARE)
        programs = {
            "bare Textual app": ([sys.executable, str(bare)], [b"bare textual app ready"]),
            "tmpfs-root TUI": (
                [sys.executable, "-m", "tui", "--root", root, "--dry-run"],
                [b"Step 1 of 7", b"Next: pick the volume"],
            ),
        }
        # Warm the page cache and Python's bytecode cache first: the figures are start-up
        # work, not disk reads.
        for argv, marks in programs.values():
            first_appearance(argv, marks)
        times: dict[str, list[list[float]]] = {name: [] for name in programs}
        for _ in range(args.runs):
            for name, (argv, marks) in programs.items():
                times[name].append(first_appearance(argv, marks))

    rows = []
    for name, (_, marks) in programs.items():
        for i, mark in enumerate(marks):
            series = [t[i] for t in times[name]]
            rows.append(
                {
                    "program": name,
                    "until": mark.decode(),
                    "best_s": round(min(series), 3),
                    "median_s": round(statistics.median(series), 3),
                    "runs": len(series),
                }
            )
    base = next(r["median_s"] for r in rows if r["program"] == "bare Textual app")
    print(f"{'program':<18} {'until on screen':<24} {'best':>7} {'median':>7} {'× bare':>7}")
    for r in rows:
        print(
            f"{r['program']:<18} {r['until']:<24} {r['best_s']:>6.3f}s {r['median_s']:>6.3f}s "
            f"{r['median_s'] / base:>6.2f}×"
        )
        r["vs_bare"] = round(r["median_s"] / base, 2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"python": sys.version.split()[0], "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
