"""Root images: recognising an archive by its magic bytes, and what it costs to unpack.

The format is decided by the first bytes of the file, never by its name; the
initramfs module makes the same decision with the same table
(``tmpfs-root-img-lib.sh``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
from dataclasses import dataclass, field

from tui import image_index
from tui.errors import BadInput, shown
from tui.runner import die_with_parent
from tui.safefile import open_regular

# (format, offset, magic)
MAGICS: list[tuple[str, int, bytes]] = [
    ("gzip", 0, b"\x1f\x8b"),
    ("xz", 0, b"\xfd7zXZ\x00"),
    ("zstd", 0, b"\x28\xb5\x2f\xfd"),
    ("bzip2", 0, b"BZh"),
    ("lz4", 0, b"\x04\x22\x4d\x18"),
    ("tar", 257, b"ustar"),
]
#: "sharded": `image create`'s default, zstd shards behind an index (tui/image_index.py).
FORMATS = ["sharded"] + [m[0] for m in MAGICS]
#: Decompressor each format needs at boot (besides tar itself).
DECOMPRESSORS = {
    "sharded": "zstd",
    "gzip": "gzip",
    "xz": "xz",
    "zstd": "zstd",
    "bzip2": "bzip2",
    "lz4": "lz4",
    "tar": None,
}


def detect_format(path: str | os.PathLike) -> str | None:
    """The archive format of *path* from its magic bytes, or None if it is not one. *path*
    must be a regular file (a FIFO or a device is refused, never read)."""
    fd = open_regular(path)
    try:
        head = os.pread(fd, 512, 0)
    finally:
        os.close(fd)
    return detect_format_bytes(head)


def detect_format_bytes(head: bytes) -> str | None:
    if image_index.is_sharded(head):
        return "sharded"
    for name, offset, magic in MAGICS:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


@dataclass
class SizeInfo:
    compressed: int
    uncompressed: int | None  # None when it cannot be known without reading it all
    exact: bool  # True when *uncompressed* is exact, not an estimate


def recorded_size(path: str | os.PathLike) -> int | None:
    """The uncompressed size ``image create`` records at the end of a gzip, zstd or lz4 image
    (see image_create.size_trailer), or None."""
    import re

    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 64))
        tail = f.read(64)
    found = re.findall(rb"tmpfs-root-size=([0-9]{1,18})(?![0-9])", tail)
    return int(found[-1]) if found else None


def cheap_uncompressed_size(path: str | os.PathLike, fmt: str | None = None) -> SizeInfo:
    """The uncompressed size when the image or its format records it (no pass over the data)."""
    compressed = os.path.getsize(path)
    fmt = fmt or detect_format(path)
    if fmt == "sharded":
        index = read_index(path)
        return SizeInfo(compressed, index.total, True)
    recorded = recorded_size(path) if fmt in ("gzip", "zstd", "lz4") else None
    if recorded is not None:
        return SizeInfo(compressed, recorded, True)
    if fmt == "tar":
        return SizeInfo(compressed, compressed, True)
    if fmt == "xz":
        size = _xz_list_size(path)
        return SizeInfo(compressed, size, size is not None)
    if fmt == "zstd":
        size = _zstd_list_size(path)
        return SizeInfo(compressed, size, size is not None)
    if fmt == "gzip" and compressed >= 18:
        # ISIZE is the size modulo 2**32 of the last member: only a hint.
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
        return SizeInfo(compressed, isize, False)
    return SizeInfo(compressed, None, False)


def read_index(path: str | os.PathLike) -> image_index.Index:
    """The checked index of a sharded image; ImageError (one line) when it is damaged."""
    fd = open_regular(path)
    try:
        return image_index.read(fd)
    except image_index.DamagedIndex as e:
        raise ImageError(f"{shown(os.fspath(path))}: {e}") from None
    finally:
        os.close(fd)


def _xz_list_size(path) -> int | None:
    try:
        out = subprocess.run(
            ["xz", "--robot", "--list", "--", os.fspath(path)], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split("\t")
        if fields[0] == "totals" and len(fields) > 4:
            return int(fields[4])
    return None


def _zstd_list_size(path) -> int | None:
    try:
        out = subprocess.run(
            ["zstd", "-lv", "--", os.fspath(path)], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.strip().startswith("Decompressed Size:"):
            # "Decompressed Size: 1.00 MiB (1048576 B)"
            inner = line.rsplit("(", 1)[-1].split()[0]
            if inner.isdigit():
                return int(inner)
    return None


# ------------------------------------------------------------------ inspect
class ImageError(BadInput):
    """An image that cannot be used; the message is one line for the user."""


@dataclass
class ImageInfo:
    path: str
    format: str
    compressed: int
    uncompressed: int
    files: int  # archive members (files, directories, links, nodes)
    sha256: str | None  # of the whole file, as sha256sum prints it (with_sha256)
    recommended_size: str  # for rd.tmpfs.size / --size
    warnings: list[str] = field(default_factory=list)  # members the boot's tar changes
    shards: list[dict] | None = None  # sharded images: every part, as the index records it
    #: what the boot pins (rd.tmpfs.sha256, plan --sha256; with_sha256): a sharded image's
    #: index's sha256, which lists every shard's; else the same as sha256
    pin: str | None = None

    def to_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


#: The decompressor `inspect` streams through (the module picks the fastest at boot).
_STREAM = {
    "gzip": ["gzip", "-dc"],
    "xz": ["xz", "-dc"],
    "zstd": ["zstd", "-dcq"],
    "sharded": ["zstd", "-dcq"],
    "bzip2": ["bzip2", "-dc"],
    "lz4": ["lz4", "-dcq"],
    "tar": ["cat"],
}
MiB = 1 << 20


def recommended_size(uncompressed: int, ram: int) -> int:
    """The tmpfs size the module chooses without rd.tmpfs.size (tr_choose_size): the image
    plus half again, at least 256 MiB more, at most 90% of RAM."""
    want = uncompressed + max(uncompressed // 2, 256 * MiB)
    return min(want, ram * 9 // 10) if ram else want


def size_arg(n: int) -> str:
    """Bytes as a tmpfs size argument, rounded up to whole MiB (e.g. 1536M)."""
    return f"{-(-n // MiB)}M"


def inspect(path: str | os.PathLike, *, with_sha256: bool = False, ram: int = 0, progress=None) -> ImageInfo:
    """Format, sizes and file count of an image in one streaming pass (no temporary files).

    *progress*, if given, is called with (compressed bytes read, compressed total). A sharded
    image is checked as the boot checks it: its index, then every part against the sha256
    and the size the index records. With *with_sha256*: the whole file's sha256 (sha256sum's)
    and the pin the boot checks (a sharded image's: its index's sha256).
    """

    path = os.fspath(path)
    try:
        fmt = detect_format(path)
        src_fd = open_regular(path)
    except OSError as e:
        raise ImageError(f"{shown(path)}: cannot be read ({e.strerror})") from None
    if fmt is None:
        os.close(src_fd)
        raise ImageError(
            f"{shown(path)}: not an archive (by its first bytes); accepted: tar, or tar "
            "compressed with gzip, xz, zstd, bzip2 or lz4"
        )
    members = MemberCheck()
    with open(src_fd, "rb") as f:
        compressed = os.fstat(f.fileno()).st_size
        digest = hashlib.sha256() if with_sha256 else None
        if fmt == "sharded":
            uncompressed, files, pin, shards = _inspect_sharded(path, f, members, progress, digest)
        else:
            size = cheap_uncompressed_size(path, fmt)
            limit = size.uncompressed if size.exact else None  # the boot's tar reads no further
            uncompressed, files = _tar_through(
                path,
                fmt,
                _chunks(f, 0, compressed, digest, progress),
                members,
                limit,
                f"holds more than the {limit} bytes of tar it records (a damaged or changed archive)",
            )
            pin, shards = None, None
    if files == 0:
        raise ImageError(f"{shown(path)}: the archive holds no files")
    if members.refused:
        name, why = members.refused[0]
        raise ImageError(
            f"{shown(path)}: {members.refused_count} member(s) the boot's tar refuses, "
            f"e.g. {shown(name)} ({why}); accepted: an archive of a root tree, as "
            "`tmpfs-root image create` makes"
        )
    return ImageInfo(
        path=path,
        format=fmt,
        compressed=compressed,
        uncompressed=uncompressed,
        files=files,
        sha256=digest.hexdigest() if digest else None,
        pin=(pin or digest.hexdigest()) if digest else None,
        recommended_size=size_arg(recommended_size(uncompressed, ram)),
        warnings=members.warnings(),
        shards=shards,
    )


def _inspect_sharded(path: str, f, members: MemberCheck, progress, file_digest=None):
    """Every part of a sharded image through zstd and tar: (uncompressed, members, the
    index's sha256, the parts as dicts); ImageError naming the part at fault. *file_digest*, when
    given, is fed every byte of the file (the parts follow the index without gaps)."""
    try:
        index = image_index.read(f.fileno())
    except image_index.DamagedIndex as e:
        raise ImageError(f"{shown(path)}: {e}") from None
    if file_digest:
        file_digest.update(os.pread(f.fileno(), index.frame, 0))
    total_files = 0
    shards = []
    reported = [index.frame]

    def report(done, _total):
        if progress:
            progress(reported[0] + done, index.size)

    for n, part in enumerate(index.parts, 1):
        name = image_index.part_name(n, len(index.parts))
        digest = _Tee(hashlib.sha256(), file_digest)
        members.in_shard = part.kind == "files"
        changed = f"{shown(path)}: {name}: its sha256 is not the one in the index (the image was changed)"
        try:
            count, files = _tar_through(
                path,
                "zstd",
                _chunks(f, part.offset, part.length, digest, report),
                members,
                part.uncompressed,
                f"more than the {part.uncompressed} bytes of tar its index says (a damaged index, or a changed shard)",
                ignore_zeros=True,
            )
        except ImageError as e:  # the hash says why first: zstd stopped before the end
            whole = hashlib.sha256()
            for _ in _chunks(f, part.offset, part.length, whole, None):
                pass
            if whole.hexdigest() != part.sha256:
                raise ImageError(changed) from None
            raise ImageError(str(e).replace(f"{shown(path)}: ", f"{shown(path)}: {name}: ", 1)) from None
        reported[0] += part.length
        if digest.hexdigest() != part.sha256:
            raise ImageError(changed)
        if count != part.uncompressed:
            raise ImageError(
                f"{shown(path)}: {name} holds {count} bytes of tar, "
                f"its index says {part.uncompressed} (a damaged index)"
            )
        total_files += files
        shards.append(
            {
                "kind": part.kind,
                "offset": part.offset,
                "compressed": part.length,
                "uncompressed": part.uncompressed,
                "entries": part.entries,
                "sha256": part.sha256,
            }
        )
    return index.total, total_files - members.shard_parents, index.digest, shards


class _Tee:
    """Hashes fed to two digests at once (the second may be None)."""

    def __init__(self, first, second) -> None:
        self.first, self.second = first, second

    def update(self, data: bytes) -> None:
        self.first.update(data)
        if self.second:
            self.second.update(data)

    def hexdigest(self) -> str:
        return self.first.hexdigest()


def _chunks(f, start: int, length: int, digest, progress):
    """Bytes [start, start + length) of open file *f* in 1 MiB chunks, hashed into *digest*
    and reported to *progress* (bytes of this range done, *length*) on the way."""
    done = 0
    while done < length:
        chunk = os.pread(f.fileno(), min(1 << 20, length - done), start + done)
        if not chunk:
            break
        if digest:
            digest.update(chunk)
        done += len(chunk)
        if progress:
            progress(done, length)
        yield chunk


#: What may follow a tar's end-of-archive blocks in its stream (padding); the boot drains as
#: much, and a decompressor that has more to give is stopped.
TRAILING = 1 << 20


def _tar_through(
    path: str,
    fmt: str,
    chunks,
    members: MemberCheck,
    limit: int | None = None,
    over: str = "",
    *,
    ignore_zeros: bool = False,
) -> tuple[int, int]:
    """Stream *chunks* through *fmt*'s decompressor and read the tar in it: (uncompressed
    bytes, members). ImageError when the decompressor or tar fails, when the stream goes on
    past *limit* bytes (what the image records; the error is then *over*), or past TRAILING
    bytes after the tar's end: a few KB of zstd can hold terabytes, which are not read.
    *ignore_zeros*: every member up to the end of the stream, past end-of-archive blocks, as
    the boot's GNU tar reads a sharded image's parts (--ignore-zeros); otherwise up to the
    first end-of-archive, as it reads a single stream. Memory stays bounded whatever the
    stream holds: no member is kept, and a long-name or pax header over MAX_HEADER is refused."""
    import threading

    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            _STREAM[fmt], stdin=read_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=die_with_parent
        )
    except FileNotFoundError:
        for fd in (read_fd, write_fd):
            os.close(fd)
        raise ImageError(f"{shown(path)}: {_STREAM[fmt][0]} is not installed, needed to read a {fmt} image") from None
    os.close(read_fd)

    def feed():  # read the file once: to the decompressor, and to the hash
        with os.fdopen(write_fd, "wb") as out:
            for chunk in chunks:
                try:
                    out.write(chunk)
                except BrokenPipeError:
                    return

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    assert proc.stdout is not None and proc.stderr is not None
    counter = _CountingReader(proc.stdout, limit)
    files = 0
    tar_error = too_long = None
    try:
        stream = tarfile.open(  # type: ignore[call-overload]
            fileobj=counter, mode="r|", ignore_zeros=ignore_zeros, tarinfo=_BoundedTarInfo
        )
        with stream as tar:
            for member in tar:
                files += 1
                members.add(member)
                tar.members.clear()  # a stream's members are not needed again
        end = counter.count + TRAILING
        counter.limit = end if limit is None else min(limit, end)
        while counter.read(1 << 20):  # the end-of-archive blocks and padding count too
            pass
    except (tarfile.TarError, EOFError) as e:
        tar_error = str(e)
        proc.kill()
    except _HeaderTooBig as e:
        proc.kill()
        too_long = str(e)
    except _TooLong:
        proc.kill()
        too_long = (
            over
            if limit is not None and counter.count > limit
            else f"more than {TRAILING >> 20} MiB after the end of the tar archive"
        )
    finally:
        feeder.join()
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        rc = proc.wait()
    if too_long:
        raise ImageError(f"{shown(path)}: {too_long}")
    if (rc != 0 and rc != -9) or tar_error:
        # The decompressor's own words say most (when it was not we who stopped it).
        why = err.splitlines()[-1] if err and rc not in (0, -9) else tar_error or f"exit status {rc}"
        raise ImageError(f"{shown(path)}: truncated or corrupt {fmt} archive ({shown(why, 120)})")
    return counter.count, files


class MemberCheck:
    """What the boot's GNU tar would do with each member: refuse names with '..' and
    members reached through a symbolic link member; strip a leading '/' (a warning). A
    sharded image's shards may hold no symbolic link at all (the boot's tars of shards make
    none). What it keeps is bounded: the first example of each finding and a count, and the
    names of at most MAX_LINKS links."""

    #: More symbolic links than any root tree holds (a Debian desktop has some 50,000).
    MAX_LINKS = 1_000_000

    def __init__(self):
        self.links: set[bytes] = set()
        self.refused: list[tuple[str, str]] = []  # the first one
        self.refused_count = 0
        self.absolute: list[str] = []  # the first one
        self.absolute_count = 0
        #: a shard of a sharded image, unpacked beside others: a link there could lead
        #: another shard's tar out of the new root (image create puts links in the last part)
        self.in_shard = False
        #: directories a shard holds as the parents of its files (the last part holds them too)
        self.shard_parents = 0

    def _refuse(self, name: str, why: str) -> None:
        self.refused_count += 1
        if not self.refused:
            self.refused.append((name, why))

    @staticmethod
    def _key(parts: list[str]) -> bytes:
        """What the set of links holds for a name: a 16-byte digest, not the name (a name may
        be 4 KiB, and a few KB of zstd can hold a million of them)."""
        return hashlib.blake2b(os.fsencode("/".join(parts)), digest_size=16).digest()

    def add(self, member) -> None:
        name = member.name
        if self.in_shard and member.isdir():
            self.shard_parents += 1
        parts = [p for p in name.split("/") if p not in ("", ".")]
        # What the kernel takes, as the boot's tar meets it (it fails on a longer one)
        if len(os.fsencode(name)) > 4095 or any(len(os.fsencode(p)) > 255 for p in parts):
            self._refuse(name, "a name longer than the kernel takes (a part over 255 bytes or the whole over 4095)")
            return
        if len(os.fsencode(member.linkname)) > 4095:
            self._refuse(name, "a link to a name longer than 4095 bytes, which the kernel refuses")
            return
        if name.startswith("/"):
            self.absolute_count += 1
            if not self.absolute:
                self.absolute.append(name)
        if ".." in parts:
            self._refuse(name, "contains '..'")
            return
        if self.in_shard and member.issym():
            self._refuse(name, "a symbolic link in a shard, which other shards are unpacked beside")
            return
        for i in range(1, len(parts)):
            if self._key(parts[:i]) in self.links:
                self._refuse(name, f"written through the symbolic link member {shown('/'.join(parts[:i]))}")
                return
        if member.islnk():  # a hard link: its target is a name in the tree, read as a member's
            target = [p for p in member.linkname.split("/") if p not in ("", ".")]
            if ".." in target:
                self._refuse(name, f"a hard link to {shown(member.linkname)}, a name with '..'")
                return
            for i in range(1, len(target) + 1):
                if self._key(target[:i]) in self.links:
                    self._refuse(name, f"a hard link through the symbolic link member {shown('/'.join(target[:i]))}")
                    return
        if member.issym():
            if len(self.links) >= self.MAX_LINKS:
                self._refuse(name, f"more than {self.MAX_LINKS} symbolic links, more than any root tree holds")
                return
            self.links.add(self._key(parts))

    def warnings(self) -> list[str]:
        if not self.absolute:
            return []
        return [
            f"{self.absolute_count} member(s) with an absolute name, e.g. {shown(self.absolute[0])}: "
            "the boot's tar strips the leading /"
        ]


class _TooLong(Exception):
    """The stream went on past what it may hold."""


#: The longest long-name (GNU) or pax extended header `inspect` reads: a name is at most
#: PATH_MAX (4 KiB), a file's extended attributes at most a filesystem block or two; a bigger
#: one (a few KB of zstd can hold hundreds of MB of it) is refused, never held in memory.
MAX_HEADER = 1 << 20


class _HeaderTooBig(Exception):
    """A long-name or pax header over MAX_HEADER; the message says so in one line."""


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's member, refusing before reading them the extended headers it would hold whole."""

    def _bound(self) -> None:
        if self.size > MAX_HEADER:
            kind = "long-name" if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) else "pax"
            raise _HeaderTooBig(
                f"a {kind} header of {self.size} bytes, more than the {MAX_HEADER >> 20} MiB "
                "any root tree needs (a damaged or hostile archive)"
            )

    def _proc_gnulong(self, tarfile):
        self._bound()
        return super()._proc_gnulong(tarfile)  # type: ignore[misc]

    def _proc_pax(self, tarfile):
        self._bound()
        return super()._proc_pax(tarfile)  # type: ignore[misc]


class _CountingReader:
    def __init__(self, raw, limit: int | None = None):
        self.raw = raw
        self.count = 0
        self.limit = limit

    def read(self, n=-1):
        data = self.raw.read(n)
        self.count += len(data)
        if self.limit is not None and self.count > self.limit:
            raise _TooLong
        return data


def find_archives(top: str | os.PathLike, max_depth: int = 3, limit: int = 200) -> list[tuple[str, str, int]]:
    """Archives under *top* (recognised by their first bytes, not their names), as
    (path relative to *top*, format, size), sorted; hidden directories and lost+found skipped."""
    found = []
    top = os.fspath(top)
    for dirpath, dirnames, filenames in os.walk(top):
        depth = dirpath[len(top) :].count(os.sep)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "lost+found" and depth < max_depth)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
                fmt = detect_format(path)
                if fmt:
                    found.append((os.path.relpath(path, top), fmt, os.path.getsize(path)))
            except OSError:
                continue
            if len(found) >= limit:
                return sorted(found)
    return sorted(found)
