"""Root images: recognising an archive by its magic bytes, and what it costs to unpack.

The format is decided by the first bytes of the file, never by its name; the
initramfs module makes the same decision with the same table
(``tmpfs-root-lib.sh``).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

# (format, offset, magic)
MAGICS: list[tuple[str, int, bytes]] = [
    ("gzip", 0, b"\x1f\x8b"),
    ("xz", 0, b"\xfd7zXZ\x00"),
    ("zstd", 0, b"\x28\xb5\x2f\xfd"),
    ("bzip2", 0, b"BZh"),
    ("lz4", 0, b"\x04\x22\x4d\x18"),
    ("tar", 257, b"ustar"),
]
FORMATS = [m[0] for m in MAGICS]
#: Decompressor each format needs at boot (besides tar itself).
DECOMPRESSORS = {"gzip": "gzip", "xz": "xz", "zstd": "zstd", "bzip2": "bzip2", "lz4": "lz4", "tar": None}


def detect_format(path: str | os.PathLike) -> str | None:
    """The archive format of *path* from its magic bytes, or None if it is not one."""
    with open(path, "rb") as f:
        head = f.read(512)
    return detect_format_bytes(head)


def detect_format_bytes(head: bytes) -> str | None:
    for name, offset, magic in MAGICS:
        if head[offset:offset + len(magic)] == magic:
            return name
    return None


@dataclass
class SizeInfo:
    compressed: int
    uncompressed: int | None  # None when it cannot be known without reading it all
    exact: bool  # True when *uncompressed* is exact, not an estimate


def cheap_uncompressed_size(path: str | os.PathLike, fmt: str | None = None) -> SizeInfo:
    """The uncompressed size when the format records it (no pass over the data)."""
    compressed = os.path.getsize(path)
    fmt = fmt or detect_format(path)
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


def _xz_list_size(path) -> int | None:
    try:
        out = subprocess.run(["xz", "--robot", "--list", "--", os.fspath(path)], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split("\t")
        if fields[0] == "totals" and len(fields) > 4:
            return int(fields[4])
    return None


def _zstd_list_size(path) -> int | None:
    try:
        out = subprocess.run(["zstd", "-lv", "--", os.fspath(path)], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.strip().startswith("Decompressed Size:"):
            # "Decompressed Size: 1.00 MiB (1048576 B)"
            inner = line.rsplit("(", 1)[-1].split()[0]
            if inner.isdigit():
                return int(inner)
    return None
