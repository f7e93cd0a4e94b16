"""Packing a tree as a sharded image (the layout is in image_index): N tar streams balanced by
bytes, each compressed on its own and led by the directories its files are in, then one
stream of every directory and symbolic link, behind an index.

The boot unpacks the shards in parallel, one worker per core; the last part comes after
them: it makes the symbolic links and sets the directories' owners, modes, times and
xattrs once every file is in.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tui import image_index
from tui.cancel import CancelToken
from tui.tar_stream import counting, scan_totals, stream

#: `--shards auto`: one shard per this many bytes of the tree, within AUTO_RANGE. Small enough
#: that the boot's workers finish together (the last shard bounds the time), big enough that
#: compression loses little (see the README's benchmark).
AUTO_SHARD_BYTES = 32 << 20
AUTO_RANGE = (2, 64)
#: What `--shards N` accepts (the index holds up to 1023 shards and the directory part).
#: 32 KiB records the boot reads them in (a third of the reads of tar's default 10 KiB, ~7%
#: off the unpack) and of the 10 KiB that modules made before read, so that both count
#: exactly what the index says (GNU tar's --totals counts whole records; the shards are read
#: to their end). The padding is zeros: a few bytes of zstd each. The directory part keeps
#: tar's 10 KiB: read alone, up to its end-of-archive, by the modules made before.
SHARD_RECORD = 163840
MAX_SHARDS = image_index.MAX_PARTS - 1
#: A hard link or an empty file still costs a header and an inode at boot.
MEMBER_COST = 512


def auto_shards(total_bytes: int) -> int:
    low, high = AUTO_RANGE
    return max(low, min(high, -(-total_bytes // AUTO_SHARD_BYTES)))


def partition(entries, count: int):
    """Split *entries* (image_create.Entry, in walk order) into at most *count* shards of
    files and nodes, contiguous in walk order and balanced by weight, plus the last part:
    every directory and symbolic link. Every name of a hard-link group goes into the shard
    of its first name, so that tar stores the data once and the others as links to it.

    No shard holds a symbolic link: while the shards are unpacked side by side, every
    directory on a path is a real one, so no tar can be led out of the new root through a
    link another tar made (GNU tar guards against that within one archive only). The last
    part makes the links, after every file is in."""
    files = [e for e in entries if not e.is_dir and not e.symlink]
    # Depth first, as tar itself walks: GNU tar makes a link whose target has ".." or is
    # absolute only at the end of its run, and keeps the times of the directories it is in
    # for after that only while they are still open (the link follows them directly).
    dirs = sorted((e for e in entries if e.is_dir or e.symlink), key=lambda e: e.name.split("/"))
    total = sum(e.weight for e in files) or 1
    shards: list[list] = [[] for _ in range(count)]
    home: dict[tuple[int, int], int] = {}
    done = 0
    i = 0
    for e in files:
        if e.link in home:
            shards[home[e.link]].append(e)
            done += MEMBER_COST
            continue
        # The next shard once this entry would end more than half of it past the share.
        while i < count - 1 and done + e.weight / 2 > total * (i + 1) / count:
            i += 1
        shards[i].append(e)
        done += e.weight
        if e.link:
            home[e.link] = i
    return [s for s in shards if s] or [[]], dirs


def with_parents(shard: list, by_name: dict, also: tuple[str, ...] = ()) -> list:
    """*shard* behind the directories on the paths of its members (and of the names in
    *also*), parents first (*by_name*: the tree's directories by name). Each shard makes its
    own parents, so no tar finds one missing while it unpacks beside the others: GNU tar
    creates a missing parent and tries the member again only if it made a directory itself,
    so when another tar made the same directory in between, the member was lost and the boot
    failed at random. A directory that exists already is fine to tar; the last part still
    has the final word on its metadata."""
    parents: set[str] = set()
    for name in [e.name for e in shard] + list(also):
        while True:
            name = name.rpartition("/")[0]
            if name in ("", ".") or name in parents:
                break
            parents.add(name)
    ordered = sorted((by_name[n] for n in parents if n in by_name), key=lambda e: e.name.split("/"))
    return ordered + shard


def pack(plan, staging: Path, out, entries, count: int, progress, cancel: CancelToken | None):
    """Write the sharded image of *entries* to *out* (a new, empty file); returns
    (members packed, tar's warnings, the index's sha256)."""
    total_bytes, total_files = scan_totals(entries)
    shards, dirs = partition(entries, count)
    fd = out.fileno()
    frame = image_index.reserved_frame(len(shards))
    out.write(b"\n" * frame)
    out.flush()
    base = [0, 0]
    parts = []
    warnings: list[str] = []
    by_name = {e.name: e for e in dirs if e.is_dir}
    for n, shard in enumerate([*shards, dirs]):
        # The files the image holds in place of the tree's (the rewritten fstab, --generic's
        # empty machine ID) go into the first shard, with the directories they are in.
        staged = [f"./{name}" for name, _, _ in plan.staged()] if n == 0 else []
        members = shard if n == len(shards) else with_parents(shard, by_name, tuple(staged))
        listing = staging / f"part-{n}.list"
        listing.write_bytes(b"".join(os.fsencode(e.name) + b"\0" for e in members))
        offset = os.lseek(fd, 0, os.SEEK_END)
        streamed = stream(
            plan,
            plan.part_tar_argv(listing, staging if staged else None, SHARD_RECORD if n < len(shards) else 10240),
            plan.compressor_argv(),
            out,
            cancel,
            counting(progress, total_bytes, total_files, base),
        )
        end = os.lseek(fd, 0, os.SEEK_END)
        base[0] += streamed.bytes
        base[1] += streamed.files - (len(members) - len(shard))  # a shard's parents are counted once, in the last part
        warnings += streamed.warnings
        kind = "dirs" if n == len(shards) else "files"
        parts.append(
            image_index.Part(
                kind, offset, end - offset, streamed.bytes, len(members) + len(staged), _range_sha256(fd, offset, end)
            )
        )
    index = image_index.render(frame, end, parts)
    os.pwrite(fd, index, 0)
    return base[1], warnings, hashlib.sha256(index).hexdigest()


def _range_sha256(fd: int, start: int, end: int) -> str:
    """sha256 of bytes [start, end) of the file open (write-only) on *fd*, read back from the
    page cache through a second descriptor of the same file."""
    digest = hashlib.sha256()
    rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        while start < end:
            chunk = os.pread(rfd, min(1 << 20, end - start), start)
            if not chunk:
                break
            digest.update(chunk)
            start += len(chunk)
    finally:
        os.close(rfd)
    return digest.hexdigest()
