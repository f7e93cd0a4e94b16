"""Paths of a target system, resolved inside it as if chrooted: never out of it.

A target root (``/``, a mounted disk, a chroot) may hold anything: a disk from
another machine can carry symbolic links that point anywhere. Every file the
engine reads or writes in a target is reached through :class:`TargetRoot`:

* symbolic links are followed *within* the root (an absolute link is taken
  relative to the root, ``..`` stops at the root), as the kernel does for a
  chrooted process; the kernel does it itself with ``openat2(RESOLVE_IN_ROOT)``
  where it has it (Linux 5.6+), else a walk opens one component at a time with
  ``O_NOFOLLOW`` relative to the directory already reached;
* in tmpfs-root's *own* directories (its state, its backup area, its dracut
  module) no symbolic link is followed at all: a link there is refused, so a
  planted link can never redirect a backup, a journal or a removal;
* writes, renames and removals work on a directory fd and a final name, so the
  final component is never followed (a rename replaces a link, it does not write
  through it);
* a file that must be regular is checked after it is opened, without blocking.

Every refusal is an :class:`UnsafePath` naming the path and why.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import stat
from pathlib import Path

from tui.errors import Failure
from tui.safefile import FileRefused, kind_of, open_regular, read_fd

_O_PATH = getattr(os, "O_PATH", 0o10000000)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_SYS_OPENAT2 = 437  # x86_64, aarch64 and every architecture since 5.6
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH, _RESOLVE_IN_ROOT = 0x02, 0x04, 0x08, 0x10
_MAX_HOPS = 40


class UnsafePath(Failure):
    """A path in the target that the engine will not use; one line for the user."""

    def __init__(self, path: str, why: str):
        self.path, self.why = path, why
        super().__init__(f"{path}: {why}")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_openat2_works: bool | None = None  # decided on first use


def _openat2(dir_fd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve | _RESOLVE_NO_MAGICLINKS)
    for _ in range(20):  # EAGAIN: a rename raced with the resolution; the kernel asks to retry
        fd = _libc.syscall(_SYS_OPENAT2, dir_fd, path.encode(), ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def openat2_available() -> bool:
    global _openat2_works
    if _openat2_works is None:
        try:
            os.close(_openat2(-100, "/", _O_PATH, 0))  # AT_FDCWD
            _openat2_works = True
        except OSError:
            _openat2_works = False
    return _openat2_works


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


class TargetRoot:
    """Resolution of target paths (``/etc/x`` as the target sees it) to open files."""

    def __init__(self, root: str | os.PathLike, strict: tuple[str, ...] = (), use_openat2: bool | None = None):
        self.root = Path(os.path.realpath(os.fspath(root)))
        #: tmpfs-root's own directories: no symbolic link at or below them is followed
        self.strict = tuple(strict)
        self.use_openat2 = openat2_available() if use_openat2 is None else use_openat2

    @property
    def is_live(self) -> bool:
        return self.root == Path("/")

    # -------------------------------------------------------------- resolving
    def _check(self, path: str) -> str:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise ValueError(f"target paths are absolute: {path!r}")
        return path

    def _strict_area(self, path: str) -> str | None:
        for area in self.strict:
            if path == area or path.startswith(area + "/"):
                return area
        return None

    def _root_fd(self) -> int:
        return os.open(self.root, _DIR_FLAGS)

    def open(self, path: str, flags: int = _O_PATH, *, follow: bool = True, mode: int = 0) -> int:
        """An fd for *path* in the target, opened with *flags*; symbolic links followed inside
        the root (the final one only when *follow*), none at all in tmpfs-root's own areas."""
        path = self._check(path)
        area = self._strict_area(path)
        if area is not None:
            base_fd = self.open(posixpath.dirname(area) or "/", _DIR_FLAGS)
            try:
                rest = posixpath.relpath(path, posixpath.dirname(area))
                return self._open_strict(base_fd, rest, flags, path, mode)
            finally:
                os.close(base_fd)
        root_fd = self._root_fd()
        try:
            if not follow:
                flags |= os.O_NOFOLLOW
            if self.use_openat2:
                return _openat2(root_fd, "/".join(_parts(path)) or ".", flags, _RESOLVE_IN_ROOT, mode)
            return self._walk(root_fd, _parts(path), flags, follow, mode)
        finally:
            os.close(root_fd)

    def _open_strict(self, base_fd: int, rest: str, flags: int, whole: str, mode: int) -> int:
        if ".." in rest.split("/"):
            raise UnsafePath(whole, "'..' in a path of tmpfs-root's own")
        try:
            if self.use_openat2:
                return _openat2(base_fd, rest, flags | os.O_NOFOLLOW, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS, mode)
            fd = os.dup(base_fd)
            parts = _parts(rest)
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                try:
                    nxt = os.open(
                        part, (flags | os.O_NOFOLLOW) if last else (_DIR_FLAGS | os.O_NOFOLLOW), mode, dir_fd=fd
                    )
                finally:
                    os.close(fd)
                fd = nxt
            return fd
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EXDEV) or (e.errno == errno.ENOTDIR and self._has_link(whole)):
                raise UnsafePath(
                    whole,
                    f"a symbolic link in tmpfs-root's own directory "
                    f"{self._strict_area(whole)}; remove it (tmpfs-root follows none "
                    "there)",
                ) from None
            raise

    def _has_link(self, path: str) -> bool:
        """Whether a component of *path* (within the root, lexically) is a symbolic link."""
        real = self.root
        for part in _parts(path):
            real = real / part
            if real.is_symlink():
                return True
        return False

    def _walk(self, root_fd: int, parts: list[str], flags: int, follow: bool, mode: int) -> int:
        """Resolve without openat2: one component at a time, O_NOFOLLOW, links read and
        resolved by hand within the root, '..' kept at the root."""
        stack = [os.dup(root_fd)]
        queue = list(parts)
        hops = 0
        try:
            while queue:
                part = queue.pop(0)
                if part in ("", "."):
                    continue
                if part == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                    continue
                last = not queue
                cur = stack[-1]
                try:
                    st = os.stat(part, dir_fd=cur, follow_symlinks=False)
                except FileNotFoundError:
                    if last and flags & os.O_CREAT:
                        return os.open(part, flags | os.O_NOFOLLOW, mode, dir_fd=cur)
                    raise
                if stat.S_ISLNK(st.st_mode) and (follow or not last):
                    hops += 1
                    if hops > _MAX_HOPS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), part)
                    target = os.readlink(part, dir_fd=cur)
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                    queue = target.split("/") + queue
                    continue
                if last:
                    return os.open(part, flags | os.O_NOFOLLOW, mode, dir_fd=cur)
                stack.append(os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=cur))
            return os.open(".", flags & ~os.O_NOFOLLOW, dir_fd=stack[-1])
        finally:
            for fd in stack:
                os.close(fd)

    # ------------------------------------------------------------- directories
    def open_dir(self, path: str, *, create: bool = False, made: list[str] | None = None) -> int:
        """A directory fd for *path*; with *create*, missing directories are made (mode 0755)
        and their target paths appended to *made*, parents first."""
        try:
            return self.open(path, _DIR_FLAGS)
        except FileNotFoundError:
            if not create or path == "/":
                raise
        parent = posixpath.dirname(path)
        name = posixpath.basename(path)
        pfd = self.open_dir(parent, create=True, made=made)
        try:
            try:
                os.mkdir(name, 0o755, dir_fd=pfd)
                if made is not None:
                    made.append(path)
            except FileExistsError:
                pass  # made meanwhile (not ours), or a dangling link: the open below decides
            try:
                return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=pfd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                    raise UnsafePath(
                        path, f"is {kind_of(st.st_mode)} that leads nowhere in {self.root}; accepted: a directory"
                    ) from None
                raise
        finally:
            os.close(pfd)

    def split(self, path: str, *, create: bool = False, made: list[str] | None = None) -> tuple[int, str]:
        """(fd of the parent directory, final name): the final name is never followed."""
        path = self._check(path)
        name = posixpath.basename(path)
        if name in ("", ".", ".."):
            raise ValueError(f"not a file path: {path!r}")
        return self.open_dir(posixpath.dirname(path), create=create, made=made), name

    # ------------------------------------------------------------------ queries
    def lstat(self, path: str) -> os.stat_result:
        dfd, name = self.split(path)
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(dfd)

    def stat(self, path: str) -> os.stat_result:
        fd = self.open(path)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        """Whether something is at *path* (a link refused in tmpfs-root's own directories
        counts: something is there, and reading it says what)."""
        try:
            self.stat(path)
            return True
        except UnsafePath:
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as e:
            if e.errno == errno.ELOOP:
                return False
            raise

    def is_dir(self, path: str) -> bool:
        try:
            return stat.S_ISDIR(self.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def listdir(self, path: str) -> list[str]:
        fd = self.open_dir(path)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def real(self, path: str) -> Path:
        """The path on this machine that *path* resolves to (for statvfs, mount checks, and
        messages); always the root or below it."""
        fd = self.open(path)
        try:
            real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        finally:
            os.close(fd)
        if real != self.root and self.root not in real.parents:
            raise UnsafePath(path, f"resolves outside {self.root}")  # cannot happen: checked anyway
        return real

    def is_mountpoint(self, path: str) -> bool:
        """Whether *path* (resolved in the root) is a mount point, e.g. a separate /boot."""
        try:
            here = self.stat(path)
            parent = self.stat(posixpath.dirname(path.rstrip("/")) or "/")
        except OSError:
            return False
        return here.st_dev != parent.st_dev or here.st_ino == parent.st_ino

    # ------------------------------------------------------------------- reading
    def open_regular(self, path: str) -> int:
        """An fd for reading *path*, which must be a regular file; never blocks."""
        fd = self.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                refused = FileRefused(f"is {kind_of(st.st_mode)}; accepted: a regular file")
                refused.filename = path
                raise refused
            os.set_blocking(fd, True)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def read_bytes(self, path: str, limit: int) -> bytes:
        fd = self.open_regular(path)
        try:
            return read_fd(fd, limit)
        finally:
            os.close(fd)


__all__ = ["TargetRoot", "UnsafePath", "openat2_available", "open_regular"]
