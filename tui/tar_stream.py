"""The tar pipe of image create: tar into a compressor into the output, counted as it
passes, with progress that keeps ticking while the compressor holds back, and stopped on
cancel. Shared by the one-stream image (image_create) and the sharded one (image_shards),
which both import it and neither of which it imports."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tui.cancel import CancelToken
from tui.errors import Cancelled, Failure, shown
from tui.runner import die_with_parent

Progress = Callable[[int, int, int, int], None]  # bytes done, bytes total, files done, files total


class CreateFailed(Failure):
    """Packing failed while it ran (tar, the compressor, the disk); nothing is left behind."""


class CreateCancelled(Cancelled):
    """Packing was stopped on request; nothing is left behind."""


#: Seconds between progress reports while nothing moves (a compressor busy with what it holds:
#: xz takes in a whole block, then compresses it for seconds without reading).
TICK = 0.5


def scan_totals(entries) -> tuple[int, int]:
    total_bytes = total_files = 0
    for e in entries:
        if e.name == ".":
            continue
        total_files += 1
        if not e.is_dir:
            total_bytes += e.weight
    return total_bytes, total_files


@dataclass
class Streamed:
    bytes: int  # uncompressed: the tar stream's length
    files: int  # members tar named
    warnings: list[str]


def counting(progress: Progress | None, total_bytes: int, total_files: int, base: list[int] | None = None):
    """A stream progress callback (bytes, files of this stream) that reports totals over
    the streams before it (*base*: bytes and files done so far)."""
    base = base if base is not None else [0, 0]

    def report(done: int, files: int) -> None:
        if progress:
            b, f = base[0] + done, base[1] + files
            progress(b, max(total_bytes, b), f, max(total_files, f))

    return report


def stream(
    plan,
    tar_argv: list[str],
    compressor: list[str] | None,
    out,
    cancel: CancelToken | None,
    report: Callable[[int, int], None],
) -> Streamed:
    """Run tar into the compressor into *out* (at its end); raise CreateFailed or
    CreateCancelled. tar's stream passes through here, to count it."""
    # Both die with tmpfs-root, even when it is killed outright: no compressor runs on alone.
    tar = subprocess.Popen(tar_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=die_with_parent)
    comp = (
        subprocess.Popen(
            compressor, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE, preexec_fn=die_with_parent
        )
        if compressor
        else None
    )
    files = [0]
    messages: list[str] = []

    def listing() -> None:  # tar --verbose names each member on stderr; its complaints start with "tar: "
        for raw in tar.stderr or []:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("tar: "):
                messages.append(line[5:])
            else:
                files[0] += 1

    assert tar.stdout is not None
    tar_out = tar.stdout
    reader = threading.Thread(target=listing, daemon=True)
    reader.start()
    done = 0
    sink = comp.stdin if comp and comp.stdin else out
    # Reports go on while a write waits for the compressor, and while it finishes what it
    # holds: the time passes for whoever shows a rate and a time left.
    ended = threading.Event()

    def tick() -> None:
        while not ended.wait(TICK):
            report(done, files[0])

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        if cancel:
            cancel.on_cancel(lambda: _kill(tar, comp))
        for chunk in iter(lambda: tar_out.read(1 << 20), b""):
            sink.write(chunk)
            done += len(chunk)
            report(done, files[0])
        if comp and comp.stdin:
            comp.stdin.close()
    except BaseException as e:
        tar.kill()
        if comp:
            comp.kill()
        if cancel and cancel.cancelled:
            raise CreateCancelled("image create was cancelled; nothing was written") from None
        if isinstance(e, OSError):
            raise CreateFailed(f"--output {shown(str(plan.output))}: writing failed ({e.strerror})") from None
        raise
    finally:
        rc_tar = tar.wait()
        reader.join()
        rc_comp = comp.wait() if comp else 0
        ended.set()
        ticker.join()
    if cancel and cancel.cancelled:
        raise CreateCancelled("image create was cancelled; nothing was written")
    if comp and compressor and rc_comp != 0:
        err = comp.stderr.read().decode(errors="replace").strip().splitlines() if comp.stderr else []
        raise CreateFailed(
            f"--output {shown(str(plan.output))}: {compressor[0]} failed ({shown(err[-1] if err else rc_comp, 120)})"
        )
    # tar exits 1 when files changed while being read (a live root): a warning, not a failure.
    if rc_tar not in (0, 1):
        raise CreateFailed(
            f"--from {shown(str(plan.source))}: tar failed ({shown(messages[-1] if messages else rc_tar, 120)})"
        )
    return Streamed(done, files[0], [m for m in messages if not re.search(r"socket ignored$", m)])


def _kill(*procs: subprocess.Popen | None) -> None:
    for p in procs:
        if p is not None and p.poll() is None:
            p.kill()
