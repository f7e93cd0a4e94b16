"""Files handled as a careful root program must: never a FIFO or a device where a file
is expected, never an unbounded read, never a predictable temporary name.

* :func:`read_regular` opens without blocking (a FIFO would hang an ordinary open),
  checks that what it opened is a regular file, and reads at most a limit;
* :func:`write_atomic` writes a new file under a random name created exclusively
  (``O_EXCL``: a planted file or symlink is never followed), then renames it over the
  final name in one step, so readers see the old content or the new, never a mix;
* :func:`check_output` refuses an output path that exists and is not a regular file
  (a directory, a device node, a FIFO, a symlink);
* :func:`open_private_dir` opens a directory of this machine's own (the locks', the log's)
  from ``/`` one component at a time, never through a symbolic link, and refuses it unless
  this user owns it and group and others have none of the given permission bits;
  :func:`open_private_append` opens a file in it for appending, refused unless it is a
  regular file of this user's with one link (never a FIFO that would block, never a
  hard link that would write elsewhere).

Every function takes an optional directory fd, so the target resolver can do the same
relative to a directory it resolved safely. Refusals raise :class:`FileRefused`, an
``OSError`` whose ``strerror`` is the reason in words.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable
from typing import BinaryIO

from tui.errors import escape

#: The most a plan, a state file or a journal may hold.
SMALL_LIMIT = 1 << 20


class FileRefused(OSError):
    """A file that is not what it must be (not regular, too big); strerror says why."""

    def __init__(self, reason: str, code: int = errno.EINVAL):
        super().__init__(code, reason)


def kind_of(mode: int) -> str:
    """What a file is, in words: "a directory", "a FIFO", "a character device", …"""
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike, *, dir_fd: int | None = None, follow: bool = True) -> int:
    """An fd open for reading on *path*, which must be a regular file (never blocks)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise FileRefused("is a symbolic link; accepted: a regular file", errno.ELOOP) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileRefused(f"is {kind_of(st.st_mode)}; accepted: a regular file")
    os.set_blocking(fd, True)
    return fd


def read_fd(fd: int, limit: int) -> bytes:
    """At most *limit* bytes from *fd*; more is refused, not cut."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, min(1 << 20, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise FileRefused(f"is larger than {limit} bytes; accepted: at most that", errno.EFBIG)


def read_regular(
    path: str | os.PathLike, limit: int = SMALL_LIMIT, *, dir_fd: int | None = None, follow: bool = True
) -> bytes:
    """The content of a regular file of at most *limit* bytes."""
    fd = open_regular(path, dir_fd=dir_fd, follow=follow)
    try:
        return read_fd(fd, limit)
    finally:
        os.close(fd)


def decode_text(data: bytes) -> str:
    """UTF-8 text, refused (not garbled) when it is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileRefused(f"is not UTF-8 text (byte {e.start})") from None


def check_output(path: str | os.PathLike, *, dir_fd: int | None = None) -> bool:
    """Whether *path* exists; refused when it exists and is not a regular file."""
    try:
        st = os.lstat(path, dir_fd=dir_fd) if dir_fd is not None else os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"is {kind_of(st.st_mode)}; accepted: a regular file or a new name")
    return True


def temp_name(name: str, suffix: str = ".tmp") -> str:
    """A hidden, unpredictable name beside *name*."""
    return f".{name[:180]}.{secrets.token_hex(6)}{suffix}"


def create_exclusive(
    name: str, *, dir_fd: int | None = None, mode: int = 0o600, suffix: str = ".tmp"
) -> tuple[int, str]:
    """A new file beside *name* (in *dir_fd*), created with O_EXCL; returns (fd, its name)."""
    for _ in range(100):
        tmp = temp_name(name, suffix)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {name}")


def write_atomic(name: str | os.PathLike, data: bytes, mode: int = 0o644, *, dir_fd: int | None = None) -> None:
    """Replace *name* (in *dir_fd*, or a path) by *data* in one rename, fsynced."""
    replace_atomic(name, lambda f: f.write(data), mode, dir_fd=dir_fd)


def replace_atomic(
    name: str | os.PathLike, fill: Callable[[BinaryIO], object], mode: int, *, dir_fd: int | None = None
) -> None:
    """Replace *name* by what *fill* writes into a new file: created exclusively beside it,
    fsynced, given *mode*, renamed over *name*, the directory fsynced."""
    if dir_fd is None:
        parent, base = os.path.split(os.path.abspath(os.fspath(name)))
        dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return replace_atomic(base, fill, mode, dir_fd=dfd)
        finally:
            os.close(dfd)
    name = os.fspath(name)
    fd, tmp = create_exclusive(name, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            set_owner_and_mode(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        unlink_quietly(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def set_owner_and_mode(fd: int, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Give the open file *fd* the permission bits *mode* (and *owner*, uid and gid), changing
    only what differs: a FAT ESP has one owner and mode for every file, and refuses (or,
    through FUSE, does not implement) even setting them to what they already are."""
    now = os.fstat(fd)
    if owner is not None and (now.st_uid, now.st_gid) != owner:
        os.fchown(fd, *owner)
    if now.st_mode & 0o7777 != mode & 0o7777:
        os.fchmod(fd, mode & 0o7777)


def _describe(path: str, st: os.stat_result, private: int) -> str | None:
    """Why *st* (of *path*) is not this user's alone (its mode has bits of *private*), or None."""
    if st.st_uid != os.geteuid():
        return f"{escape(path)} is owned by uid {st.st_uid}, not {os.geteuid()}"
    if st.st_mode & private:
        how = "writable" if st.st_mode & 0o022 else "readable"
        return f"{escape(path)} is {how} by group or others (mode {st.st_mode & 0o7777:04o})"
    return None


def open_private_dir(path: str | os.PathLike, private: int = 0o077) -> int:
    """An fd of the directory *path*, reached from ``/`` one component at a time with
    O_NOFOLLOW and made where missing (the last one 0700); refused (:class:`FileRefused`,
    its strerror naming the component at fault) when a component is a symbolic link or not a
    directory, or when *path* is not this user's or its mode has bits of *private* (0o077:
    root's alone; 0o022: nobody else may write in it)."""
    parts = [p for p in os.path.abspath(os.fspath(path)).split("/") if p]
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    reached = ""
    try:
        for i, part in enumerate(parts):
            reached += "/" + part
            sub = _subdir(fd, part, reached, 0o700 if i == len(parts) - 1 else 0o755)
            os.close(fd)
            fd = sub
        why = _describe(reached or "/", os.fstat(fd), private)
        if why:
            raise FileRefused(why, errno.EPERM)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _subdir(dir_fd: int, name: str, shown_as: str, mode: int) -> int:
    """An fd of the directory *name* in *dir_fd*, made with *mode* when missing, never
    through a symbolic link."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(2):
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            try:
                os.mkdir(name, mode, dir_fd=dir_fd)
            except FileExistsError:
                pass  # made meanwhile: opened (and checked) as any other
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            kind = kind_of(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
            raise FileRefused(f"{escape(shown_as)} is {kind}, not a directory", e.errno) from None
    return os.open(name, flags, dir_fd=dir_fd)


def open_private_append(name: str, dir_fd: int, shown_as: str, private: int = 0o077) -> int:
    """An fd appending to *name* in *dir_fd* (made 0600 if missing), which must be a regular
    file of this user's with one link and no bits of *private* in its mode. Opened with
    O_NOFOLLOW and O_NONBLOCK: a link or a FIFO is refused, never followed or waited on.
    *shown_as* is its path as refusals name it."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        _check_own_file(shown_as, before, private)  # before open: a device is never even opened
    except FileNotFoundError:
        pass
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO):  # a link; a FIFO nobody reads
            kind = "a symbolic link" if e.errno == errno.ELOOP else "a FIFO"
            raise FileRefused(f"{escape(shown_as)} is {kind}, not a regular file", e.errno) from None
        raise
    try:
        _check_own_file(shown_as, os.fstat(fd), private)
    except BaseException:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return fd


def _check_own_file(path: str, st: os.stat_result, private: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"{escape(path)} is {kind_of(st.st_mode)}, not a regular file")
    if st.st_nlink != 1:
        raise FileRefused(f"{escape(path)} has {st.st_nlink} hard links; accepted: a file of its own (one link)")
    why = _describe(path, st, private)
    if why:
        raise FileRefused(why, errno.EPERM)


def unlink_quietly(name: str | os.PathLike, *, dir_fd: int | None = None) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
