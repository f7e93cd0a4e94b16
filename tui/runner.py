"""Commands in the target: no shell, output streamed line by line, stoppable.

In a target that is not ``/`` a command runs with chroot, in a private mount
namespace where /proc, /sys and /dev are bound into the target and /run is a
fresh tmpfs: dracut and grub-probe see the machine's devices, and the mounts die
with the command, so a tmpfs-root killed by SIGKILL leaves none behind. Children
get SIGINT when tmpfs-root dies (dracut traps it and cleans up after itself).

Running a target's own tools (its dracut, its grub-mkconfig) as root is trusting
them: a chroot confines paths, not a hostile root program. The README's threat
model says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tui.errors import Failure

LineCallback = Callable[[str], None]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CommandError(Failure):
    """A command exited non-zero; the message ends with its last output line."""

    def __init__(self, argv: list[str], returncode: int, tail: list[str]):
        self.argv = argv
        self.returncode = returncode
        self.tail = tail
        last = tail[-1].strip() if tail else "no output"
        super().__init__(f"{argv[0]} exited with status {returncode}: {last[:300]}")


@dataclass
class RunResult:
    argv: list[str]
    returncode: int
    lines: list[str]

    @property
    def output(self) -> str:
        return "".join(self.lines)


class Runner:
    """Runs commands in one target, one at a time."""

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        self.root = root
        self._env = env
        self._proc: subprocess.Popen | None = None

    @property
    def is_live(self) -> bool:
        return self.root == Path("/")

    def argv(self, argv: list[str]) -> list[str]:
        """The argv actually executed: inside the target via chroot when needed."""
        return list(argv) if self.is_live else ["chroot", str(self.root), *argv]

    def run(
        self,
        argv: list[str],
        *,
        on_line: LineCallback | None = None,
        check: bool = True,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> RunResult:
        full_env = dict(os.environ if self._env is None else self._env)
        full_env.update({"LC_ALL": "C.UTF-8", "PATH": PATH})
        if env:
            full_env.update(env)
        lines: list[str] = []
        setup = die_with_parent if self.is_live else ChrootSetup(self.root)
        try:
            proc = subprocess.Popen(
                self.argv(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                start_new_session=True,
                preexec_fn=setup,
            )
        except FileNotFoundError:
            raise Failure(f"{argv[0]}: command not found in {self.root}") from None
        self._proc = proc
        deadline = time.monotonic() + timeout if timeout else None
        try:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace")
                lines.append(line)
                if on_line:
                    on_line(line.rstrip("\n"))
                if deadline and time.monotonic() > deadline:
                    self.terminate()
                    raise Failure(f"{argv[0]} did not finish within {timeout:.0f} s")
            rc = proc.wait()
        finally:
            self._proc = None
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if check and rc != 0:
            raise CommandError(list(argv), rc, lines[-20:])
        return RunResult(list(argv), rc, lines)

    def terminate(self) -> None:
        """Stop the running command (and its children), if any."""
        proc = self._proc
        if proc and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


class ChrootSetup:
    """In the child, before it chroots into a target that is not ``/``: a private mount
    namespace with /proc, /sys, /dev bound and a fresh /run. A mount point that is a
    symbolic link in the target is left out (a mount there would land wherever the link
    points on this machine)."""

    CLONE_NEWNS, MS_BIND, MS_REC, MS_SLAVE = 0x20000, 0x1000, 0x4000, 0x80000

    def __init__(self, root: Path):
        # computed here, in the parent: the child must not do more than system calls
        real = [n for n in ("proc", "sys", "dev", "run") if (root / n).is_dir() and not (root / n).is_symlink()]
        self.binds = [(f"/{n}".encode(), str(root / n).encode()) for n in real if n != "run"]
        self.run = str(root / "run").encode() if "run" in real else None

    def __call__(self) -> None:
        import ctypes

        die_with_parent()
        libc = ctypes.CDLL(None, use_errno=True)

        def check(rc: int, what: str) -> None:
            if rc != 0:
                raise OSError(ctypes.get_errno(), f"{what} for the chroot failed")

        check(libc.unshare(self.CLONE_NEWNS), "unshare")
        check(libc.mount(b"none", b"/", None, self.MS_REC | self.MS_SLAVE, None), "making / a slave")
        for src, dst in self.binds:
            check(libc.mount(src, dst, None, self.MS_BIND | self.MS_REC, None), f"binding {src.decode()}")
        if self.run:
            check(libc.mount(b"tmpfs", self.run, b"tmpfs", 0, b"mode=0755"), "mounting /run")


def die_with_parent() -> None:
    """In the child: get SIGINT if tmpfs-root dies (even by SIGKILL), so no dracut outlives it.
    SIGINT rather than SIGTERM: dracut traps it and removes its temporary directory."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
