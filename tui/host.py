"""The one place through which every effect on the system goes.

A :class:`Host` is a target system: ``/`` for the running one, or any directory
that holds a system (a mounted disk being prepared, a chroot, a test fixture).
Every path the engine handles is a path *as seen from the target*
(``/etc/grub.d/42_tmpfs-root``). The host is made of three parts, each in its own
module:

* :class:`~tui.resolver.TargetRoot` resolves those paths inside the root as if
  chrooted, never out of it, and follows no link at all in tmpfs-root's own
  directories;
* :class:`~tui.journal.Journal` keeps a backup of whatever a write or removal
  replaces and the on-disk journal that undoes a failed or killed transaction;
* :class:`~tui.runner.Runner` runs commands without a shell, inside the target,
  streaming their output.

Files are written atomically (an exclusively created temporary file in the same
directory, fsync, rename, fsync of the directory); identical content is left
alone. Every effect returns whether it changed anything.

:class:`RecordingHost` is the dry run: the same interface, but effects are only
recorded in :attr:`Host.actions` (and files "written" are seen by later reads), so
``tmpfs-root plan`` shows the files and commands of the very code ``apply`` runs.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tui import owned
from tui.errors import Failure
from tui.journal import DamagedJournal, Journal
from tui.resolver import TargetRoot, UnsafePath
from tui.runner import CommandError, LineCallback, Runner, RunResult
from tui.safefile import decode_text, set_owner_and_mode, write_atomic

BACKUP_DIR = owned.BACKUP_DIR
JOURNAL = owned.JOURNAL
#: The most the engine reads of a target file it parses (grub.cfg, os-release, …).
READ_LIMIT = 16 << 20

#: Kept for the modules that catch "an effect on the target failed".
HostError = Failure

__all__ = [
    "Action",
    "CommandError",
    "DamagedJournal",
    "Host",
    "HostError",
    "LineCallback",
    "RecordingHost",
    "RunResult",
    "UnsafePath",
    "make_host",
]


@dataclass
class Action:
    """One effect, done or (in a dry run) only recorded."""

    kind: str  # "write", "remove", "run"
    path: str = ""  # path in the target, for files
    argv: list[str] = field(default_factory=list)  # for commands
    mode: int | None = None
    content: bytes | None = None  # for writes, so a review can show it

    def describe(self) -> str:
        if self.kind == "run":
            return " ".join(shlex.quote(a) for a in self.argv)
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


class Host:
    """The target system, and every effect on it."""

    dry_run = False

    def __init__(
        self, root: str | os.PathLike = "/", *, env: dict[str, str] | None = None, use_openat2: bool | None = None
    ):
        self.fs = TargetRoot(root, strict=owned.STRICT_DIRS, use_openat2=use_openat2)
        self.root = self.fs.root
        self.actions: list[Action] = []
        self.journal = Journal(self.fs)
        self.runner = Runner(self.root, env)

    # ----------------------------------------------------------------- queries
    @property
    def is_live(self) -> bool:
        """True when the target is the running system."""
        return self.fs.is_live

    def path(self, target_path: str) -> Path:
        """The real path of *target_path* (resolved inside the root), for queries."""
        parts = [p for p in target_path.split("/") if p not in ("", ".")]
        missing: list[str] = []
        while True:
            try:
                real = self.fs.real("/" + "/".join(parts))
                break
            except (FileNotFoundError, NotADirectoryError):
                missing.insert(0, parts.pop())
        for part in missing:  # what does not exist yet: taken as written, kept in the root
            real = real.parent if part == ".." and real != self.root else real / part
        return real

    def exists(self, target_path: str) -> bool:
        return self.fs.exists(target_path)

    def is_dir(self, target_path: str) -> bool:
        return self.fs.is_dir(target_path)

    def stat(self, target_path: str) -> os.stat_result:
        return self.fs.stat(target_path)

    def is_mountpoint(self, target_path: str) -> bool:
        return self.fs.is_mountpoint(target_path)

    def read_bytes(self, target_path: str, limit: int = READ_LIMIT) -> bytes:
        """The content of a regular file of the target (at most *limit* bytes, else refused)."""
        return self.fs.read_bytes(target_path, limit)

    def read_text(self, target_path: str, limit: int = READ_LIMIT) -> str:
        return self.read_bytes(target_path, limit).decode("utf-8", "replace")

    def read_utf8(self, target_path: str, limit: int = READ_LIMIT) -> str:
        """Text that must be UTF-8 (state, plans): refused when it is not."""
        return decode_text(self.read_bytes(target_path, limit))

    def listdir(self, target_path: str) -> list[str]:
        try:
            return self.fs.listdir(target_path)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def which(self, program: str) -> str | None:
        """The target path of *program* in the target's standard PATH, or None."""
        for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
            if self.executable(f"{d}/{program}"):
                return f"{d}/{program}"
        return None

    def executable(self, target_path: str) -> bool:
        """Whether *target_path* is a file the target can execute (links followed in the target)."""
        try:
            st = self.fs.stat(target_path)
        except (OSError, UnsafePath):
            return False
        return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)

    def interpreter(self, target_path: str) -> list[str]:
        """The ``#!`` line of a script of the target, split (``["/bin/bash"]``, ``["/usr/bin/env",
        "bash"]``); empty for a binary or a file that cannot be read."""
        try:
            fd = self.fs.open_regular(target_path)
        except (OSError, UnsafePath):
            return []
        try:
            head = os.read(fd, 256)
        except OSError:
            return []
        finally:
            os.close(fd)
        if not head.startswith(b"#!"):
            return []
        return head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()

    def sha256(self, target_path: str) -> str | None:
        """sha256 of a regular file of the target, or None when there is none."""
        try:
            fd = self.fs.open_regular(target_path)
        except OSError:
            return None
        h = hashlib.sha256()
        try:
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
        finally:
            os.close(fd)
        return h.hexdigest()

    def pending_journal(self) -> list[dict]:
        """Entries left by an earlier transaction that did not finish (killed); raises
        DamagedJournal when the journal cannot be trusted."""
        return self.journal.pending()

    # ----------------------------------------------------------------- effects
    def _unchanged(self, target_path: str, data: bytes, mode: int) -> bool:
        """True when *target_path* already holds *data* with *mode* (so writing changes nothing)."""
        try:
            st = self.fs.lstat(target_path)
            if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o7777 != mode or st.st_size != len(data):
                return False
            return self.read_bytes(target_path, len(data)) == data
        except OSError:
            return False

    def write_file(self, target_path: str, data: bytes | str, mode: int = 0o644) -> bool:
        """Write atomically, backing up what is replaced; identical content is left alone.
        Returns whether anything changed."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self._unchanged(target_path, data, mode):
            return False
        self.actions.append(Action("write", path=target_path, mode=mode, content=data))
        self.journal.prepare()  # before anything is made: all of it can be undone
        made: list[str] = []
        dfd, name = self.fs.split(target_path, create=True, made=made)
        try:
            self.journal.made_dirs(made)
            self.journal.back_up(target_path)
            write_atomic(name, data, mode, dir_fd=dfd)
        finally:
            os.close(dfd)
        return True

    def remove(self, target_path: str) -> bool:
        """Remove a file or link of ours (after backing it up); a missing one is not an error."""
        try:
            st = self.fs.lstat(target_path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if stat.S_ISDIR(st.st_mode):
            raise Failure(f"{target_path} in {self.root} is a directory, where tmpfs-root has a file; move it aside")
        self.actions.append(Action("remove", path=target_path))
        self.journal.back_up(target_path)
        dfd, name = self.fs.split(target_path)
        try:
            os.unlink(name, dir_fd=dfd)
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return True

    def rename(self, src: str, dst: str) -> bool:
        """Atomically move *src* over *dst* (same directory), backing up *dst*."""
        self.actions.append(Action("write", path=dst, mode=None, content=None))
        self.journal.back_up(dst)
        sfd, sname = self.fs.split(src)
        dfd, dname = self.fs.split(dst)
        try:
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
            os.fsync(dfd)
        finally:
            os.close(sfd)
            os.close(dfd)
        return True

    def discard(self, target_path: str) -> None:
        """Delete a temporary file of our own (no backup, not an effect worth recording)."""
        try:
            dfd, name = self.fs.split(target_path)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            os.unlink(name, dir_fd=dfd)
        except (FileNotFoundError, IsADirectoryError):
            pass
        finally:
            os.close(dfd)

    def preserve(self, target_path: str) -> None:
        """Back up a file that a command is about to change (grub.cfg, grubenv)."""
        self.journal.back_up(target_path)

    def copy_mode(self, src: str, dst: str) -> None:
        """Give *dst* (a file a command made) the owner and mode of *src*, if *src* exists."""
        try:
            st = self.fs.stat(src)
        except FileNotFoundError:
            return
        fd = self.fs.open(dst, os.O_RDONLY | os.O_NONBLOCK, follow=False)
        try:
            set_owner_and_mode(fd, st.st_mode, (st.st_uid, st.st_gid))
        finally:
            os.close(fd)

    def remove_tree(self, target_path: str) -> bool:
        """Remove a directory of tmpfs-root's own (module, state), file by file with backups."""
        if target_path not in owned.STRICT_DIRS:
            raise ValueError(f"not a directory of tmpfs-root's own: {target_path}")
        try:
            names = self.fs.listdir(target_path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        for name in names:
            path = f"{target_path}/{name}"
            if not owned.owns(path):
                raise Failure(f"{path} in {self.root} is not tmpfs-root's; move it out of {target_path} first")
            self.remove(path)
        self.actions.append(Action("remove", path=target_path))
        dfd, name = self.fs.split(target_path)
        try:
            os.rmdir(name, dir_fd=dfd)
        finally:
            os.close(dfd)
        return True

    def remove_empty_dir(self, target_path: str) -> bool:
        """Remove a directory tmpfs-root made, if it is empty now (anything in it, a file of
        the distribution's or the admin's, keeps it); returns whether it was removed."""
        if not owned.may_make_dir(target_path):
            raise ValueError(f"not a directory tmpfs-root may have made: {target_path}")  # a bug, not input
        try:
            if not stat.S_ISDIR(self.fs.lstat(target_path).st_mode) or self.fs.listdir(target_path):
                return False
            dfd, name = self.fs.split(target_path)
        except OSError:
            return False
        try:
            os.rmdir(name, dir_fd=dfd)
            os.fsync(dfd)
        except OSError:
            # Filled or gone meanwhile, a mount point (EBUSY), read-only: kept. This runs
            # after the removal is complete, and an empty directory is never worth undoing it.
            return False
        finally:
            os.close(dfd)
        self.actions.append(Action("remove", path=target_path))
        return True

    def made_dirs(self) -> list[str]:
        """The directories this transaction made in the target (parents of what it wrote)."""
        return list(self.journal.made)

    def drop_backups(self) -> None:
        """Remove tmpfs-root's backup area (after a complete removal)."""
        self.journal.clear_area()

    # ------------------------------------------------------------- transaction
    def rollback(self, journal: list[dict] | None = None) -> list[str]:
        """Restore every backed-up file, newest first; returns the paths restored."""
        return self.journal.rollback(journal)

    def commit(self) -> None:
        """The transaction succeeded (or was rolled back): drop its journal."""
        self.journal.commit()

    # ---------------------------------------------------------------- commands
    def command_argv(self, argv: list[str]) -> list[str]:
        return self.runner.argv(argv)

    def run(
        self,
        argv: list[str],
        *,
        on_line: LineCallback | None = None,
        check: bool = True,
        query: bool = False,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> RunResult:
        """Run *argv* (no shell) in the target, streaming output lines to *on_line*.
        A *query* only reads the system: it runs even in a dry run and is not recorded."""
        if not query:
            self.actions.append(Action("run", argv=list(argv)))
        return self.runner.run(argv, on_line=on_line, check=check, timeout=timeout, env=env)

    def terminate(self) -> None:
        """Stop the running command (and its children), if any."""
        self.runner.terminate()

    # ----------------------------------------------------------------- reports
    def written_files(self) -> list[Action]:
        return [a for a in self.actions if a.kind in ("write", "remove")]

    def commands(self) -> list[Action]:
        return [a for a in self.actions if a.kind == "run"]


class RecordingHost(Host):
    """The dry run: reads the target, records every effect, changes nothing.

    Files "written" are kept in an overlay that later reads see, so later steps
    decide as they would after the earlier ones really ran."""

    dry_run = True

    def __init__(self, root: str | os.PathLike = "/", **kw):
        super().__init__(root, **kw)
        self._overlay: dict[str, bytes | None] = {}  # path -> content (None: removed)

    def _listed(self, prefix: str) -> dict[str, bytes | None]:
        return {
            p[len(prefix) :]: d
            for p, d in self._overlay.items()
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        }

    def exists(self, target_path: str) -> bool:
        if target_path in self._overlay:
            return self._overlay[target_path] is not None
        return super().exists(target_path)

    def read_bytes(self, target_path: str, limit: int = READ_LIMIT) -> bytes:
        if target_path in self._overlay:
            data = self._overlay[target_path]
            if data is None:
                raise FileNotFoundError(target_path)
            return data
        return super().read_bytes(target_path, limit)

    def listdir(self, target_path: str) -> list[str]:
        names = set(super().listdir(target_path))
        for name, data in self._listed(target_path.rstrip("/") + "/").items():
            (names.add if data is not None else names.discard)(name)
        return sorted(names)

    def sha256(self, target_path: str) -> str | None:
        if target_path in self._overlay:
            data = self._overlay[target_path]
            return hashlib.sha256(data).hexdigest() if data is not None else None
        return super().sha256(target_path)

    def _unchanged(self, target_path: str, data: bytes, mode: int) -> bool:
        if target_path in self._overlay:
            return self._overlay[target_path] == data
        return super()._unchanged(target_path, data, mode)

    def write_file(self, target_path: str, data: bytes | str, mode: int = 0o644) -> bool:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self._unchanged(target_path, data, mode):
            return False
        self.actions.append(Action("write", path=target_path, mode=mode, content=data))
        self._overlay[target_path] = data
        return True

    def remove(self, target_path: str) -> bool:
        if not self.exists(target_path):
            return False
        self.actions.append(Action("remove", path=target_path))
        self._overlay[target_path] = None
        return True

    def rename(self, src: str, dst: str) -> bool:
        self.actions.append(Action("write", path=dst, mode=None, content=self._overlay.get(src)))
        self._overlay[dst] = self._overlay.pop(src, b"")
        return True

    def discard(self, target_path: str) -> None:
        self._overlay.pop(target_path, None)

    def preserve(self, target_path: str) -> None:
        pass

    def copy_mode(self, src: str, dst: str) -> None:
        pass

    def remove_tree(self, target_path: str) -> bool:
        if not self.exists(target_path):
            return False
        return self.remove(target_path)

    def remove_empty_dir(self, target_path: str) -> bool:
        if not owned.may_make_dir(target_path):
            raise ValueError(f"not a directory tmpfs-root may have made: {target_path}")
        if target_path in self._overlay or not self.is_dir(target_path) or self.listdir(target_path):
            return False
        try:  # as the real one: a link named as the directory is never followed, nor removed
            if not stat.S_ISDIR(self.fs.lstat(target_path).st_mode):
                return False
        except OSError:
            return False
        self.actions.append(Action("remove", path=target_path))
        self._overlay[target_path] = None
        return True

    def made_dirs(self) -> list[str]:
        return []

    def is_dir(self, target_path: str) -> bool:
        return self._overlay.get(target_path, b"") is not None and super().is_dir(target_path)

    def drop_backups(self) -> None:
        pass

    def rollback(self, journal: list[dict] | None = None) -> list[str]:
        return []

    def commit(self) -> None:
        pass

    def run(self, argv: list[str], *, query: bool = False, **kw) -> RunResult:
        if query:  # reads the system: runs, as in a real apply
            return super().run(argv, query=True, **kw)
        self.actions.append(Action("run", argv=list(argv)))
        return RunResult(list(argv), 0, [])


def make_host(root: str | os.PathLike = "/", dry_run: bool = False, **kw) -> Host:
    """The host for *root*: the real one, or the recording one for a dry run."""
    return (RecordingHost if dry_run else Host)(root, **kw)
