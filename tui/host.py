"""The one place through which every effect on the system goes.

A :class:`Host` knows the *target root*: ``/`` for the running system, or any
directory that holds a system (a mounted disk being prepared, a chroot, a test
fixture).  Every path the engine handles is a path *as seen from the target*
(``/etc/grub.d/42_tmpfs-root``); the host maps it under the root, following
symbolic links inside the root the way a chroot would.

It can *record instead of act* (dry-run): writes, removals and commands are
appended to :attr:`Host.actions` and nothing touches the disk, so the list of
files and commands shown by ``tmpfs-root plan`` comes from the very code that
``apply`` runs.  In a dry run, files "written" earlier are visible to later
reads, so later steps see what earlier steps would have produced.

Files are written atomically (temporary file in the same directory, fsync,
rename, fsync of the directory) and whatever they replace is first copied to
a backup area, so a failed transaction can be rolled back with
:meth:`Host.rollback`.  Commands run without a shell, inside the target with
chroot when the target is not ``/``, and their output is streamed line by line
to a callback; a command in a target that is not ``/`` runs in a private mount
namespace with /proc, /sys and /dev bound into the target, gone when it exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

LineCallback = Callable[[str], None]

#: Where backups of replaced files live, as a path in the target.
BACKUP_DIR = "/var/lib/tmpfs-root/backup"
#: Journal of the backups of the current transaction, so a killed apply can be undone.
JOURNAL = BACKUP_DIR + "/journal.json"


class HostError(Exception):
    """An effect on the target failed; the message is one line for the user."""


class CommandError(HostError):
    """A command exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, tail: list[str]):
        self.argv = argv
        self.returncode = returncode
        self.tail = tail
        last = tail[-1].strip() if tail else "no output"
        super().__init__(f"{argv[0]} exited with status {returncode}: {last}")


@dataclass
class Action:
    """One effect, done or (in a dry run) only recorded."""

    kind: str  # "write", "remove", "mkdir", "run"
    path: str = ""  # path in the target, for files
    argv: list[str] = field(default_factory=list)  # for commands
    mode: int | None = None
    content: bytes | None = None  # for writes, so a review can show it

    def describe(self) -> str:
        if self.kind == "run":
            return " ".join(_shell_quote(a) for a in self.argv)
        if self.kind == "write":
            size = f"{len(self.content)} bytes" if self.content is not None else "built"
            mode = f", mode {self.mode:04o}" if self.mode is not None else ""
            return f"write {self.path} ({size}{mode})"
        return f"{self.kind} {self.path}"

    def to_json(self) -> dict:
        if self.kind == "run":
            return {"kind": "run", "argv": list(self.argv)}
        data: dict = {"kind": self.kind, "path": self.path}
        if self.mode is not None:
            data["mode"] = f"{self.mode:04o}"
        return data


@dataclass
class RunResult:
    argv: list[str]
    returncode: int
    lines: list[str]

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _shell_quote(arg: str) -> str:
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_")
    if arg and all(c in safe for c in arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


class Host:
    """The target system, and every effect on it."""

    def __init__(self, root: str | os.PathLike = "/", *, dry_run: bool = False,
                 env: dict[str, str] | None = None):
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.dry_run = dry_run
        self.actions: list[Action] = []
        self._overlay: dict[str, bytes | None] = {}  # dry-run view: path -> content (None: removed)
        self._journal: list[dict] = []  # backups of this transaction, oldest first
        self._env = env
        self._proc: subprocess.Popen | None = None

    # ----------------------------------------------------------------- paths
    @property
    def is_live(self) -> bool:
        """True when the target is the running system."""
        return self.root == Path("/")

    def path(self, target_path: str) -> Path:
        """The real path of *target_path*, resolving symlinks inside the root."""
        pure = PurePosixPath(target_path)
        if not pure.is_absolute():
            raise ValueError(f"target paths are absolute: {target_path!r}")
        if self.is_live:
            return Path(pure)
        resolved = PurePosixPath("/")
        parts = list(pure.parts[1:])
        hops = 0
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                resolved = resolved.parent
                continue
            candidate = resolved / part
            real = self.root / str(candidate).lstrip("/")
            if real.is_symlink() and hops < 40:
                hops += 1
                link = PurePosixPath(os.readlink(real))
                if link.is_absolute():
                    resolved = PurePosixPath("/")
                    parts = list(link.parts[1:]) + parts
                else:
                    parts = list(link.parts) + parts
                continue
            resolved = candidate
        return self.root / str(resolved).lstrip("/")

    def exists(self, target_path: str) -> bool:
        if target_path in self._overlay:
            return self._overlay[target_path] is not None
        return self.path(target_path).exists()

    def is_dir(self, target_path: str) -> bool:
        return self.path(target_path).is_dir()

    def read_bytes(self, target_path: str) -> bytes:
        if target_path in self._overlay:
            data = self._overlay[target_path]
            if data is None:
                raise FileNotFoundError(target_path)
            return data
        return self.path(target_path).read_bytes()

    def read_text(self, target_path: str) -> str:
        return self.read_bytes(target_path).decode("utf-8", "replace")

    def listdir(self, target_path: str) -> list[str]:
        real = self.path(target_path)
        names = set(os.listdir(real)) if real.is_dir() else set()
        prefix = target_path.rstrip("/") + "/"
        for p, data in self._overlay.items():
            if p.startswith(prefix) and "/" not in p[len(prefix):]:
                (names.add if data is not None else names.discard)(p[len(prefix):])
        return sorted(names)

    def which(self, program: str) -> str | None:
        """The target path of *program* in the target's standard PATH, or None."""
        for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
            candidate = f"{d}/{program}"
            real = self.path(candidate)
            if real.is_file() and os.access(real, os.X_OK):
                return candidate
        return None

    # ---------------------------------------------------------------- writes
    def write_file(self, target_path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write atomically, backing up what is replaced; identical content is left alone."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self._unchanged(target_path, data, mode):
            return
        self.actions.append(Action("write", path=target_path, mode=mode, content=data))
        if self.dry_run:
            self._overlay[target_path] = data
            return
        real = self.path(target_path)
        self._ensure_dir(real.parent)
        self._backup(target_path)
        atomic_write(real, data, mode)

    def _unchanged(self, target_path: str, data: bytes, mode: int) -> bool:
        """True when *target_path* already holds *data* with *mode* (so writing changes nothing)."""
        try:
            if self.read_bytes(target_path) != data:
                return False
        except OSError:
            return False
        if target_path in self._overlay:
            return True
        return (self.path(target_path).stat().st_mode & 0o7777) == mode

    def remove(self, target_path: str) -> None:
        """Remove a file (after backing it up); a missing file is not an error."""
        if not self.exists(target_path):
            return
        self.actions.append(Action("remove", path=target_path))
        if self.dry_run:
            self._overlay[target_path] = None
            return
        self._backup(target_path)
        real = self.path(target_path)
        real.unlink()
        _fsync_dir(real.parent)

    def rename(self, src: str, dst: str) -> None:
        """Atomically move *src* over *dst* (both in the target), backing up *dst*."""
        self.actions.append(Action("write", path=dst, mode=None,
                                   content=self._overlay.get(src)))
        if self.dry_run:
            self._overlay[dst] = self._overlay.pop(src, b"")
            return
        self._backup(dst)
        real_dst = self.path(dst)
        os.rename(self.path(src), real_dst)
        _fsync_dir(real_dst.parent)

    def discard(self, target_path: str) -> None:
        """Delete a temporary file of our own (no backup, not an effect worth recording)."""
        if not self.dry_run:
            _unlink_quietly(self.path(target_path))
        self._overlay.pop(target_path, None)

    def preserve(self, target_path: str) -> None:
        """Back up a file that a command is about to change (grub.cfg, grubenv)."""
        if not self.dry_run:
            self._backup(target_path)

    def remove_tree(self, target_path: str, backup: bool = True) -> None:
        """Remove a directory the tool owns (module directory, state), file by file with backups
        (without, for the backup area itself)."""
        if not self.exists(target_path):
            return
        real = self.path(target_path)
        if not backup:
            self.actions.append(Action("remove", path=target_path))
            if not self.dry_run:
                shutil.rmtree(real)
            return
        if self.dry_run or not real.is_dir():
            self.remove(target_path)
            return
        for dirpath, dirnames, filenames in os.walk(real, topdown=False):
            for name in filenames:
                self.remove(self._to_target(Path(dirpath) / name))
            for name in dirnames:
                os.rmdir(Path(dirpath) / name)
        os.rmdir(real)
        _fsync_dir(real.parent)

    def _ensure_dir(self, real_dir: Path) -> None:
        missing = []
        d = real_dir
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=0o755)
            except FileExistsError:  # made meanwhile by someone else: not ours to remove
                continue
            self._journal_add({"path": self._to_target(d), "dir": True})

    def _to_target(self, real: Path) -> str:
        return "/" + str(real.relative_to(self.root)) if not self.is_live else str(real)

    # -------------------------------------------------------------- backups
    def _backup(self, target_path: str) -> None:
        """Copy *target_path* to the backup area once per transaction."""
        if any(e["path"] == target_path for e in self._journal):
            return
        real = self.path(target_path)
        entry: dict = {"path": target_path, "existed": real.exists()}
        if real.exists():
            backup = self.path(BACKUP_DIR) / target_path.lstrip("/")
            backup.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real, backup)
            with open(backup, "rb+") as f:
                os.fsync(f.fileno())
            entry["backup"] = str(PurePosixPath(BACKUP_DIR) / target_path.lstrip("/"))
        self._journal_add(entry)

    def _journal_add(self, entry: dict) -> None:
        journal = self.path(JOURNAL)
        if not journal.parent.is_dir():  # make the backup area, remembering what it took
            missing = []
            d = journal.parent
            while not d.exists():
                missing.append(d)
                d = d.parent
            journal.parent.mkdir(parents=True, exist_ok=True)
            self._journal.extend({"path": self._to_target(d), "dir": True, "area": True}
                                 for d in reversed(missing))
        self._journal.append(entry)
        atomic_write(journal, json.dumps(self._journal, indent=1).encode(), 0o600)

    def pending_journal(self) -> list[dict]:
        """Backups left by an earlier transaction that did not finish (killed)."""
        real = self.path(JOURNAL)
        if not real.exists():
            return []
        try:
            return json.loads(real.read_text())
        except (OSError, ValueError):
            return []

    def rollback(self, journal: list[dict] | None = None) -> list[str]:
        """Restore every backed-up file, newest first; returns the paths restored."""
        entries = self._journal if journal is None else journal
        restored = []
        for entry in reversed(entries):
            real = self.path(entry["path"])
            if entry.get("dir"):
                if entry.get("area"):
                    continue
                try:
                    real.rmdir()
                except OSError:
                    pass
                continue
            if entry.get("existed"):
                backup = self.path(entry["backup"])
                real.parent.mkdir(parents=True, exist_ok=True)
                tmp = real.with_name(f".{real.name}.restore")
                shutil.copy2(backup, tmp)
                os.rename(tmp, real)
            elif real.exists() or real.is_symlink():
                if real.is_dir():
                    shutil.rmtree(real)
                else:
                    real.unlink()
            restored.append(entry["path"])
        for entry in entries:  # restored: their backups are no longer needed
            if entry.get("backup"):
                _unlink_quietly(self.path(entry["backup"]))
        self.commit()
        self._prune_backup_area()
        for entry in reversed(entries):  # directories made for the backup area itself
            if entry.get("area"):
                try:
                    self.path(entry["path"]).rmdir()
                except OSError:
                    pass
        return restored

    def _prune_backup_area(self) -> None:
        """Remove empty directories of the backup area (and the area itself when empty)."""
        area = self.path(BACKUP_DIR)
        if not area.is_dir():
            return
        for dirpath, _dirs, _files in os.walk(area, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
        try:
            area.parent.rmdir()
        except OSError:
            pass

    def commit(self) -> None:
        """The transaction succeeded (or was rolled back): drop its journal."""
        self._journal = []
        if not self.dry_run:
            _unlink_quietly(self.path(JOURNAL))

    # ------------------------------------------------------------- commands
    def command_argv(self, argv: list[str]) -> list[str]:
        """The argv actually executed: inside the target via chroot when needed."""
        if self.is_live:
            return list(argv)
        return ["chroot", str(self.root), *argv]

    def run(self, argv: list[str], *, on_line: LineCallback | None = None,
            check: bool = True, query: bool = False, timeout: float | None = None,
            env: dict[str, str] | None = None) -> RunResult:
        """Run *argv* (no shell) in the target, streaming output lines to *on_line*.

        A *query* only reads the system: it runs even in a dry run and is not
        recorded as an effect.
        """
        if not query:
            self.actions.append(Action("run", argv=list(argv)))
            if self.dry_run:
                return RunResult(list(argv), 0, [])
        full_env = dict(os.environ if self._env is None else self._env)
        full_env.update({"LC_ALL": "C.UTF-8", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
        if env:
            full_env.update(env)
        lines: list[str] = []
        setup = _die_with_parent if self.is_live else _ChrootSetup(self.root)
        try:
            proc = subprocess.Popen(self.command_argv(argv), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=full_env, start_new_session=True, preexec_fn=setup)
        except FileNotFoundError:
            raise HostError(f"{argv[0]}: command not found in {self.root}") from None
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
                    raise HostError(f"{argv[0]} did not finish within {timeout:.0f} s")
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

    # --------------------------------------------------------------- reports
    def written_files(self) -> list[Action]:
        return [a for a in self.actions if a.kind in ("write", "remove")]

    def commands(self) -> list[Action]:
        return [a for a in self.actions if a.kind == "run"]


def atomic_write(real: Path, data: bytes, mode: int = 0o644) -> None:
    """Write *real* so that it holds either its old content or *data*, never a mix."""
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, real)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(real.parent)


class _ChrootSetup:
    """In the child, before it chroots into a target that is not ``/``: a private mount
    namespace with /proc, /sys, /dev bound and a fresh /run, so dracut and grub-probe see
    the machine's devices. The mounts live and die with the command: a tmpfs-root killed
    by SIGKILL leaves none behind in the target."""

    CLONE_NEWNS, MS_BIND, MS_REC, MS_SLAVE = 0x20000, 0x1000, 0x4000, 0x80000

    def __init__(self, root: Path):
        self.root = root
        # computed here, in the parent: the child must not do more than system calls
        self.binds = [(f"/{n}".encode(), str(root / n).encode()) for n in ("proc", "sys", "dev")
                      if (root / n).is_dir()]
        self.run = str(root / "run").encode() if (root / "run").is_dir() else None

    def __call__(self) -> None:
        import ctypes

        _die_with_parent()
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


def _die_with_parent() -> None:
    """In the child: get SIGINT if tmpfs-root dies (even by SIGKILL), so no dracut outlives it.
    SIGINT rather than SIGTERM: dracut traps it and removes its temporary directory."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _unlink_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
