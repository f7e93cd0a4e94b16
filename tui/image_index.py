"""The sharded image format: one file of independent zstd-compressed tar streams, with an index.

Layout (all offsets in bytes from the start of the file)::

    [index]  a zstd skippable frame: magic 0x184D2A5E (little endian), payload length
             (u32, little endian), then a text payload padded with newlines:
                 tmpfs-root-index 1
                 size <length of the whole file>
                 total <uncompressed bytes of all parts>
                 part files <offset> <length> <uncompressed> <entries> <sha256>   (one per shard)
                 part dirs <offset> <length> <uncompressed> <entries> <sha256>    (last)
    [shard 1 .. N]  each a zstd frame holding a tar stream of files and nodes, led by the
             directories on their paths, parents first (so that no tar finds a parent
             missing while others unpack beside it); no symbolic link; a hard-link group
             stays in one shard; whole 160 KiB records (read 32 KiB at a time at boot,
             image_shards.SHARD_RECORD)
    [dirs]   a zstd frame holding a tar stream of every directory and symbolic link, unpacked
             last: the links appear only once no other tar runs, and the directories'
             owners, modes, times and xattrs are the final word

The parts follow each other without gaps from the end of the index to the end of the file.
Because the index is a skippable frame, standard tools read the file as one zstd stream of
concatenated tar archives: ``zstd -dc FILE | tar -x --ignore-zeros`` unpacks it.

The image's digest — what ``rd.tmpfs.sha256`` pins — is the sha256 of the index frame; the
index holds the sha256 of every part, so it covers every byte of the file. The boot's parser
is ``tr_index`` in tmpfs-root-shards-lib.sh; both refuse the same damaged indexes.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from dataclasses import dataclass

MAGIC = struct.pack("<I", 0x184D2A5E)
HEADER = b"tmpfs-root-index 1\n"
#: The first bytes of a sharded image, as the boot and detect_format recognise it.
SIGNATURE_AT = 8
#: An index never needs more (1024 parts of ~110 bytes); a bigger length is damage.
MAX_INDEX = 1 << 20
MAX_PARTS = 1024


class DamagedIndex(ValueError):
    """A damaged or inconsistent index; the message is one line for the user."""


@dataclass(frozen=True)
class Part:
    kind: str  # "files" or "dirs"
    offset: int
    length: int
    uncompressed: int
    entries: int
    sha256: str


@dataclass(frozen=True)
class Index:
    size: int  # of the whole file
    total: int  # uncompressed bytes of all parts
    parts: tuple[Part, ...]
    frame: int  # length of the index frame (header + payload)
    digest: str  # sha256 of the index frame: what rd.tmpfs.sha256 pins

    @property
    def shards(self) -> list[Part]:
        return [p for p in self.parts if p.kind == "files"]


def reserved_frame(shards: int) -> int:
    """Bytes to reserve for the index of *shards* shards (written last, padded)."""
    return 8 + len(HEADER) + 64 + (shards + 1) * 128


def is_sharded(head: bytes) -> bool:
    return head[:4] == MAGIC and head[SIGNATURE_AT : SIGNATURE_AT + len(HEADER)] == HEADER


def render(frame_length: int, size: int, parts: list[Part]) -> bytes:
    """The index frame for *parts*, padded with newlines to *frame_length* bytes."""
    lines = [HEADER.decode().rstrip("\n"), f"size {size}", f"total {sum(p.uncompressed for p in parts)}"]
    lines += [f"part {p.kind} {p.offset} {p.length} {p.uncompressed} {p.entries} {p.sha256}" for p in parts]
    text = ("\n".join(lines) + "\n").encode()
    payload = frame_length - 8
    if len(text) > payload:
        raise ValueError(f"index of {len(parts)} parts needs {len(text)} bytes, {payload} reserved")
    return MAGIC + struct.pack("<I", payload) + text + b"\n" * (payload - len(text))


#: A number in the index: decimal, no leading zero, at most 15 digits (as tr_index reads it).
_NUM = "(0|[1-9][0-9]{0,14})"
_PART = re.compile(rf"part (files|dirs) {_NUM} {_NUM} {_NUM} {_NUM} ([0-9a-f]{{64}})")


def read(fd: int) -> Index:
    """Parse and check the index of the sharded image open on *fd*: raises DamagedIndex with
    one line when it is damaged, when parts overlap, leave gaps or point past the end, or
    when the sizes it records do not add up."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, 8, 0)
    if len(head) < 8 or head[:4] != MAGIC:
        raise DamagedIndex("no index at the start of the file")
    (payload,) = struct.unpack("<I", head[4:8])
    if payload > MAX_INDEX or 8 + payload > size:
        raise DamagedIndex(f"damaged index (it claims {payload} bytes, the file has {size})")
    frame = os.pread(fd, 8 + payload, 0)
    digest = hashlib.sha256(frame).hexdigest()
    try:
        text = frame[8:].decode("ascii")
    except UnicodeDecodeError:
        raise DamagedIndex("damaged index (bytes that are not text)") from None
    # As the boot's tr_index reads it: the header on the very first line, then blank lines
    # skipped, and every other line exactly one of the forms below (single spaces, nothing
    # around them).
    header, *rest = text.split("\n")
    if header != HEADER.decode().rstrip("\n"):
        raise DamagedIndex("damaged index (no 'tmpfs-root-index 1' header)")
    fields: dict[str, int] = {}
    parts: list[Part] = []
    for line in (line for line in rest if line):
        m = _PART.fullmatch(line)
        if m:
            kind, offset, length, uncompressed, entries, sha = m.groups()
            parts.append(Part(kind, int(offset), int(length), int(uncompressed), int(entries), sha))
            continue
        m = re.fullmatch(rf"(size|total) {_NUM}", line)
        if not m or m.group(1) in fields:
            raise DamagedIndex(f"damaged index (line {line[:40]!r})")
        fields[m.group(1)] = int(m.group(2))
    if set(fields) != {"size", "total"}:
        raise DamagedIndex("damaged index (no size or total line)")
    if fields["size"] != size:
        raise DamagedIndex(f"truncated or extended: {size} bytes, the index says {fields['size']}")
    if not 2 <= len(parts) <= MAX_PARTS or parts[-1].kind != "dirs" or any(p.kind == "dirs" for p in parts[:-1]):
        raise DamagedIndex("damaged index (it must list 1 to 1023 shards, then the directory part)")
    at = 8 + payload
    for n, p in enumerate(parts, 1):
        name = part_name(n, len(parts))
        if p.offset != at:
            raise DamagedIndex(f"{name} starts at {p.offset}, expected {at} (overlapping or misplaced parts)")
        if p.length == 0 or p.offset + p.length > size:
            raise DamagedIndex(f"{name} points past the end of the file ({p.offset}+{p.length} > {size})")
        at = p.offset + p.length
    if at != size:
        raise DamagedIndex(f"the parts end at {at}, the file at {size}")
    if sum(p.uncompressed for p in parts) != fields["total"]:
        raise DamagedIndex("damaged index (the parts' sizes do not add up to its total)")
    return Index(size, fields["total"], tuple(parts), 8 + payload, digest)


def part_name(n: int, count: int) -> str:
    """How messages name part *n* (1-based) of *count*: 'shard 3 of 8' or 'the directory part'."""
    return "the directory part" if n == count else f"shard {n} of {count - 1}"
