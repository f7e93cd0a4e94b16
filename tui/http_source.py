"""An image served over HTTP(S), as `plan` checks it before the boot fetches it.

One request, as the boot's first one (tr_http_probe): the image's first 64 KiB by a range
request. It tells whether the image is there, its format (by its first bytes), its size,
whether the server answers range requests (a sharded image needs them), and for a sharded
image its uncompressed size from the index. Nothing is downloaded whole.
"""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass

from tui import image_index
from tui.errors import shown
from tui.images import detect_format_bytes

PROBE_BYTES = 1 << 16
TIMEOUT = 5.0


@dataclass
class Probed:
    url: str
    status: int
    size: int | None  # of the file on the server
    ranges: bool  # answered the range request with 206
    format: str | None  # by the first bytes; None when they are not an archive's
    uncompressed: int | None  # known for a sharded image (its index) and a tar
    problem: str | None = None  # why the boot would not get the image; None when it would


class Unreachable(Exception):
    """The server could not be asked (name, connection, TLS, timeout); the boot may still reach
    it (another network), so the plan only warns."""


def probe(url: str, cafile: str | None = None, timeout: float = TIMEOUT) -> Probed:
    """Ask the server for the first bytes of *url*; raises Unreachable with one line."""
    request = urllib.request.Request(url, headers={"Range": f"bytes=0-{PROBE_BYTES - 1}"})
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
            status = reply.status
            head = reply.read(PROBE_BYTES)
            size = _size(reply.headers, status)
    except urllib.error.HTTPError as e:
        # the reason phrase is the server's text: shown literally, bounded
        return Probed(
            url, e.code, None, False, None, None, f"the server answered HTTP {e.code} ({shown(e.reason, 60)})"
        )
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise Unreachable(f"{url} cannot be reached from here ({shown(str(reason), 120)})") from None
    fmt = detect_format_bytes(head)
    found = Probed(url, status, size, status == 206, fmt, None)
    if fmt is None:
        found.problem = "is not an archive (by its first bytes)"
    elif fmt == "sharded":
        if not found.ranges:
            found.problem = "is sharded, and the server does not answer range requests (make it with --shards 1)"
        elif size is not None:
            found.uncompressed, found.problem = _sharded_total(head, size)
    elif fmt == "tar":
        found.uncompressed = size
    return found


def _size(headers, status: int) -> int | None:
    if status == 206:
        m = re.fullmatch(r"bytes \d+-\d+/(\d+)", headers.get("Content-Range", ""))
        return int(m.group(1)) if m else None
    length = headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


def _sharded_total(head: bytes, size: int) -> tuple[int | None, str | None]:
    """The index's total from the first bytes of a sharded image of *size* bytes."""
    import tempfile

    # image_index.read works on a file: the first bytes, then a hole up to the real size
    with tempfile.TemporaryFile() as f:
        f.write(head)
        f.truncate(size)
        try:
            return image_index.read(f.fileno()).total, None
        except image_index.DamagedIndex as e:
            return None, str(e)
