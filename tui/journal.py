"""Backups of what a transaction replaces, and the on-disk journal that undoes it.

Before a file in the target is written or removed, its old content (or the fact
that it did not exist, or the link it was) is recorded in the journal,
``/var/lib/tmpfs-root/backup/journal.json``, and a copy kept under the backup
area at the same path. A failed or interrupted transaction is undone from it
(:meth:`Journal.rollback`); one killed outright leaves the journal on disk for
the next run to undo first.

The journal is read back from the target, so it is not trusted: it is read only
when it is a regular file of at most 1 MiB, its entries must have the expected
shape, and each may name only what :mod:`tui.owned` says tmpfs-root may touch.
A journal that fails any of this is *damaged*: nothing in it is acted on, and the
error says how to recover. Backups are found by computing their path, never by
reading one from the journal.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import stat

from tui import owned
from tui.errors import Failure, shown
from tui.resolver import TargetRoot, UnsafePath
from tui.safefile import SMALL_LIMIT, decode_text, replace_atomic, temp_name, unlink_quietly, write_atomic


class DamagedJournal(Failure):
    """The journal of an interrupted run cannot be trusted; one line saying how to recover."""

    def __init__(self, why: str):
        super().__init__(
            f"the journal {owned.JOURNAL} of an interrupted run is damaged ({why}); "
            f"nothing in it was undone: restore what you need from {owned.BACKUP_DIR}, "
            f"then delete the journal and run the command again"
        )


_KEYS = {"path": str, "existed": bool, "dir": bool, "area": bool, "link": str}


def _checked(entries: object) -> list[dict]:
    """The journal's entries, each checked; raises DamagedJournal."""
    if not isinstance(entries, list):
        raise DamagedJournal("not a list of entries")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise DamagedJournal(f"entry {i} is not an object with a path")
        for key, value in entry.items():
            if key not in _KEYS or not isinstance(value, _KEYS[key]):
                raise DamagedJournal(f"entry {i} has {shown(key)} of the wrong kind")
        path = entry["path"]
        if entry.get("area"):
            ok = (
                path in (owned.VAR_DIR, owned.BACKUP_DIR)
                or owned.may_make_dir(path)
                and owned.VAR_DIR.startswith(path + "/")
            )
        elif entry.get("dir"):
            ok = owned.may_make_dir(path)
        else:
            ok = owned.may_touch(path)
        if not ok:
            raise DamagedJournal(f"entry {i} names {shown(path)}, which is not tmpfs-root's")
    return entries


class Journal:
    """The backups and journal of one transaction on one target."""

    def __init__(self, fs: TargetRoot):
        self.fs = fs
        self.entries: list[dict] = []
        self.made: list[str] = []  # every directory this transaction made (the backup area's too)

    # ----------------------------------------------------------------- recording
    def covers(self, path: str) -> bool:
        return any(e["path"] == path for e in self.entries)

    def prepare(self) -> None:
        """Make sure the journal can be written (its directory exists and is safe) before the
        transaction changes anything: what is made afterwards can always be recorded."""
        made: list[str] = []
        dfd, _ = self.fs.split(owned.JOURNAL, create=True, made=made)
        os.close(dfd)
        if made:
            self.entries.extend({"path": d, "dir": True, "area": True} for d in made)
            self.made.extend(made)
            self._write()

    def made_dirs(self, dirs: list[str]) -> None:
        """Directories just made for a write: removed again (when empty) on rollback."""
        for d in dirs:
            self._add({"path": d, "dir": True})
            self.made.append(d)

    def back_up(self, path: str) -> None:
        """Record *path* as it is now (content, link, or absence), once per transaction."""
        if self.covers(path):
            return
        if not owned.may_touch(path):
            raise ValueError(f"not a path tmpfs-root may touch: {path}")  # a bug, not input
        self.prepare()
        try:
            st = self.fs.lstat(path)
        except FileNotFoundError:
            self._add({"path": path, "existed": False})
            return
        if stat.S_ISLNK(st.st_mode):
            dfd, name = self.fs.split(path)
            try:
                link = os.readlink(name, dir_fd=dfd)
            finally:
                os.close(dfd)
            self._add({"path": path, "existed": True, "link": link})
            return
        if not stat.S_ISREG(st.st_mode):
            raise Failure(
                f"{path} in {self.fs.root} is not a regular file; tmpfs-root only replaces files; move it aside first"
            )
        self._copy(path, owned.backup_path(path))
        self._add({"path": path, "existed": True})

    def _copy(self, src: str, dst: str) -> None:
        """Replace *dst* by a copy of *src* (content and mode), both in the target, fsynced."""
        src_fd = self.fs.open_regular(src)
        try:
            dfd, name = self.fs.split(dst, create=True)
            try:

                def copy(out) -> None:
                    while chunk := os.read(src_fd, 1 << 20):
                        out.write(chunk)

                replace_atomic(name, copy, os.fstat(src_fd).st_mode & 0o7777, dir_fd=dfd)
            finally:
                os.close(dfd)
        finally:
            os.close(src_fd)

    def _add(self, entry: dict) -> None:
        self.prepare()
        self.entries.append(entry)
        self._write()

    def _write(self) -> None:
        dfd, name = self.fs.split(owned.JOURNAL)
        try:
            write_atomic(name, json.dumps(self.entries, indent=1).encode(), 0o600, dir_fd=dfd)
        finally:
            os.close(dfd)

    # ------------------------------------------------------------------- reading
    def pending(self) -> list[dict]:
        """The entries left by a transaction that did not finish; raises DamagedJournal."""
        try:
            data = self.fs.read_bytes(owned.JOURNAL, SMALL_LIMIT)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise DamagedJournal(e.strerror or str(e)) from None
        except UnsafePath as e:
            raise DamagedJournal(e.why) from None
        try:
            return _checked(json.loads(decode_text(data)))
        except (ValueError, OSError) as e:
            raise DamagedJournal(f"not a JSON journal: {shown(str(e), 60)}") from None

    # ------------------------------------------------------------------ undoing
    def rollback(self, entries: list[dict] | None = None) -> list[str]:
        """Restore every recorded file, newest first; returns the paths restored."""
        entries = self.entries if entries is None else _checked(entries)
        restored = []
        for entry in reversed(entries):
            if entry.get("area"):
                continue
            if entry.get("dir"):
                self._rmdir(entry["path"])
            elif entry.get("existed"):
                self._restore(entry)
                restored.append(entry["path"])
            else:
                self._unlink(entry["path"])
                restored.append(entry["path"])
        for entry in entries:  # restored: their backups are no longer needed
            if not entry.get("dir") and entry.get("existed") and "link" not in entry:
                self._unlink(owned.backup_path(entry["path"]))
        self._unlink(owned.JOURNAL)
        self._prune(owned.BACKUP_DIR)
        for entry in reversed(entries):  # directories made for the backup area itself
            if entry.get("area"):
                self._rmdir(entry["path"])
        self.entries, self.made = [], []
        return restored

    def _restore(self, entry: dict) -> None:
        """Put back a recorded file (from its backup) or link (from the journal)."""
        path = entry["path"]
        if "link" not in entry:
            try:
                self._copy(owned.backup_path(path), path)
            except FileNotFoundError:
                raise Failure(
                    f"the backup of {path} is missing from {owned.BACKUP_DIR}; it cannot be restored"
                ) from None
            return
        dfd, name = self.fs.split(path, create=True)
        try:
            tmp = temp_name(name, ".restore")
            os.symlink(entry["link"], tmp, dir_fd=dfd)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _unlink(self, path: str) -> None:
        self._remove(path, directory=False)

    def _rmdir(self, path: str) -> None:
        self._remove(path, directory=True)

    def _remove(self, path: str, directory: bool) -> None:
        """Remove a file or link (never a tree), or an empty directory; quietly when absent."""
        try:
            dfd, name = self.fs.split(path)
        except (FileNotFoundError, NotADirectoryError, UnsafePath):
            return  # nothing of ours can be there
        try:
            if directory:
                os.rmdir(name, dir_fd=dfd)
            elif not stat.S_ISDIR(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=dfd)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.ENOTDIR, errno.EEXIST):
                raise
        finally:
            os.close(dfd)

    def commit(self) -> None:
        """The transaction succeeded: drop its journal (the backups stay until ``remove``)."""
        self._unlink(owned.JOURNAL)
        self.entries = []

    def clear_area(self) -> None:
        """Remove the whole backup area (after a complete removal of tmpfs-root)."""
        self._sweep(owned.BACKUP_DIR, files=True)

    def _prune(self, top: str) -> None:
        """Remove the empty directories of the backup area, depth first."""
        self._sweep(top, files=False)

    def _sweep(self, top: str, files: bool) -> None:
        """Remove the directories below *top* that are (or, with *files*, are made) empty, then
        *top*; the backup area's parent goes too when it is left empty."""
        try:
            names = self.fs.listdir(top)
        except (FileNotFoundError, NotADirectoryError, UnsafePath):
            return
        for name in names:
            sub = posixpath.join(top, name)
            try:
                is_dir = stat.S_ISDIR(self.fs.lstat(sub).st_mode)
            except FileNotFoundError:
                continue
            if is_dir:
                self._sweep(sub, files)
            elif files:
                self._unlink(sub)
        self._rmdir(top)
        if top == owned.BACKUP_DIR:
            self._rmdir(owned.VAR_DIR)


__all__ = ["DamagedJournal", "Journal", "unlink_quietly"]
