"""An image served over HTTP(S), as `plan` checks it before the boot fetches it.

One request, as the boot's first one (tr_http_probe in the dracut module, curl without -L):
the image's first 64 KiB by a range request (and, as the boot, a second one for the whole
index of a sharded image whose index is longer, over ~500 shards). It tells whether the image is there, its
format (by its first bytes), its size, whether the server answers range requests (a
sharded image needs them), and for a sharded image its uncompressed size from the index.
Nothing is downloaded whole.

The boot's rules are the probe's: a redirect is not followed (it is a problem, as for the
boot); the size is Content-Range's ``*/N`` of a 206 or Content-Length of a 200, of 1 to 15
decimal digits, or the image is refused ("the server did not say the image's size"). A URL
the boot cannot fetch (a bad host, port or IPv6 literal) is a problem too, in one line.
What cannot be asked from here (a name, a connection, TLS, time) raises Unreachable. The
whole probe, name lookup included, ends within its *timeout*: a deadline checked before
every read, the socket closed when it passes, so a server that trickles cannot hang `plan`.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tui import image_index
from tui.errors import shown
from tui.images import detect_format_bytes

PROBE_BYTES = 1 << 16
#: The whole probe's time: name lookup, connection, TLS and the answer.
TIMEOUT = 10.0
#: The boot's curl --connect-timeout.
CONNECT_TIMEOUT = 10.0

#: The sizes the boot takes: digits only, at most 15 (shell arithmetic; no image is a petabyte).
_SIZE = re.compile(r"[0-9]{1,15}")
_URL = re.compile(r"(?P<scheme>https?)://(?P<host>\[[^\]/]*\]|[^:/\[\]]*)(?::(?P<port>[^/]*))?(?P<path>/.*)?", re.S)
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PATH = re.compile(r"/[!\"$-~]*")  # printable ASCII, no space, no fragment
URL_FORMS = (
    "http(s)://host[:port]/path, the host a DNS name, an IPv4 address or an IPv6 address in brackets, the port 1-65535"
)


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
    """Ask the server for the first bytes of *url*, within *timeout* seconds in all; raises
    Unreachable with one line."""
    try:
        scheme, host, port, path = _parse_url(url)
    except ValueError as e:
        return Probed(url, 0, None, False, None, None, f"not a URL the boot can fetch: {e}; accepted: {URL_FORMS}")
    deadline = time.monotonic() + timeout

    late = f"no whole answer within {timeout:g} s"

    def left() -> float:
        rest = deadline - time.monotonic()
        if rest <= 0:
            raise TimeoutError(late)
        return rest

    try:
        status, location, reason, head, size = _get(scheme, host, port, path, cafile, left, PROBE_BYTES)
        if status == 206 and image_index.is_sharded(head) and size is not None:
            # an index longer than the first bytes (an image of over ~500 shards): the boot
            # fetches it whole, and so does the probe
            frame = 8 + int.from_bytes(head[4:8], "little")
            if len(head) < frame <= min(size, 8 + image_index.MAX_INDEX):
                status, location, reason, head, size = _get(scheme, host, port, path, cafile, left, frame)
    except (OSError, ValueError) as e:  # name, connection, TLS, time
        # a read the deadline cut short says only "timed out"
        why = late if isinstance(e, TimeoutError) and time.monotonic() >= deadline else str(e)
        raise Unreachable(f"{url} cannot be reached from here ({shown(why, 120)})") from None
    except http.client.HTTPException as e:
        what = f"{type(e).__name__} {shown(str(e), 60)}".strip()
        return Probed(url, 0, None, False, None, None, f"the server's answer is not HTTP the boot reads ({what})")
    if 300 <= status < 400:
        return Probed(
            url,
            status,
            None,
            False,
            None,
            None,
            f"the server redirects to {shown(location or 'nowhere', 120)} (HTTP {status}); the boot does not follow "
            "redirects; accepted: the URL the image is served at",
        )
    if status >= 400:
        # the reason phrase is the server's text: shown literally, bounded
        return Probed(url, status, None, False, None, None, f"the server answered HTTP {status} ({shown(reason, 60)})")
    fmt = detect_format_bytes(head)
    found = Probed(url, status, size, status == 206, fmt, None)
    if size is None:
        found.problem = "the server did not say the image's size (Content-Range */N or Content-Length, 1-15 digits)"
    elif fmt is None:
        found.problem = "is not an archive (by its first bytes)"
    elif fmt == "sharded":
        if not found.ranges:
            found.problem = "is sharded, and the server does not answer range requests (make it with --shards 1)"
        else:
            found.uncompressed, found.problem = _sharded_total(head, size)
    elif fmt == "tar":
        found.uncompressed = size
    return found


def _get(scheme: str, host: str, port: int, path: str, cafile: str | None, left: Callable[[], float], want: int):
    """One GET of bytes [0, *want*) of *path*, as the boot's curl asks: (status, Location,
    reason, the body's first *want* bytes, the image's size as the boot reads it). The body
    is read only for a 2xx answer. Raises OSError (TimeoutError past the deadline *left*
    keeps), ValueError or http.client.HTTPException."""
    sock = None
    try:
        sock = _connect(host, port, left)
        if scheme == "https":
            context = ssl.create_default_context(cafile=cafile)
            sock = context.wrap_socket(sock, server_hostname=host.strip("[]"), do_handshake_on_connect=False)
            sock.settimeout(left())  # the handshake's whole time, not each read's
            sock.do_handshake()
        default = 443 if scheme == "https" else 80
        authority = host if port == default else f"{host}:{port}"
        sock.settimeout(left())
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nRange: bytes=0-{want - 1}\r\n"
            "User-Agent: tmpfs-root\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode("ascii")
        )
        reply = http.client.HTTPResponse(_DeadlineSocket(sock, left), method="GET")  # type: ignore[arg-type]
        reply.begin()
        if not 200 <= reply.status < 300:
            return reply.status, reply.getheader("Location"), reply.reason, b"", None
        return reply.status, None, reply.reason, _read_head(reply, want), _size(reply, reply.status)
    finally:
        if sock is not None:
            sock.close()


def _parse_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host as written, port, path) of an http(s) URL; ValueError saying what is wrong."""
    m = _URL.fullmatch(url)
    if not m:
        raise ValueError("it is not http(s)://host…")
    host, port_text, path = m["host"], m["port"], m["path"] or "/"
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1].replace("%", "/"))  # no zone (%eth0): "/" is refused
        except ValueError:
            raise ValueError(f"the host {shown(host, 60)} is not an IPv6 address") from None
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"the host {shown(host, 60)} is not an IPv4 address") from None
    elif len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.removesuffix(".").split(".")):
        raise ValueError(f"the host {shown(host, 60)} is not a DNS name")
    if port_text is None:
        port = 443 if m["scheme"] == "https" else 80
    elif re.fullmatch(r"[0-9]{1,5}", port_text) and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise ValueError(f"the port {shown(port_text, 20)} is not 1-65535")
    if not _PATH.fullmatch(path):
        raise ValueError("its path has spaces, a fragment or characters that are not printable ASCII")
    return m["scheme"], host, port, path


def _connect(host: str, port: int, left: Callable[[], float]) -> socket.socket:
    """A connection to *host*, each address tried for at most CONNECT_TIMEOUT, the name
    looked up in a thread of its own so that a slow resolver too ends at the deadline."""
    found: list = []

    def look_up() -> None:
        try:
            found.append(socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM))
        except OSError as e:
            found.append(e)

    looking = threading.Thread(target=look_up, daemon=True)
    looking.start()
    looking.join(left())
    if not found:
        raise TimeoutError(f"no address for {host} within the time")
    if isinstance(found[0], OSError):
        raise found[0]
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in found[0]:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(min(CONNECT_TIMEOUT, left()))
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error


class _DeadlineSocket:
    """What HTTPResponse reads the answer from: the socket's reads, each waiting no longer
    than what is left of the probe's time (TimeoutError once it has passed)."""

    def __init__(self, sock: socket.socket, left: Callable[[], float]):
        self.sock, self.left = sock, left

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self.sock, self.left))


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, left: Callable[[], float]):
        self.sock, self.left = sock, left

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.sock.settimeout(self.left())
        return self.sock.recv_into(buffer)


def _read_head(reply: http.client.HTTPResponse, want: int = PROBE_BYTES) -> bytes:
    """Up to *want* bytes of the answer's body; what came before the server stopped, when it did
    (the boot, too, goes on with the bytes it got)."""
    head = b""
    while len(head) < want:
        try:
            chunk = reply.read(want - len(head))
        except http.client.IncompleteRead as e:
            return head + e.partial[: want - len(head)]
        if not chunk:
            break
        head += chunk
    return head


def _size(reply: http.client.HTTPResponse, status: int) -> int | None:
    """The image's size as the boot reads it: Content-Range's */N of a 206, Content-Length of a
    200, 1-15 digits; None otherwise."""

    def last(name: str) -> str:  # as the boot reads headers: the last one of a name wins
        return (reply.headers.get_all(name) or [""])[-1].strip(" \t")

    if status == 206:
        text = last("Content-Range").rpartition("/")[2]
    elif status == 200:
        text = last("Content-Length")
    else:
        text = ""
    return int(text) if _SIZE.fullmatch(text) else None


def _sharded_total(head: bytes, size: int) -> tuple[int | None, str | None]:
    """The index's total from the first bytes of a sharded image of *size* bytes."""
    # image_index.read works on a file: the first bytes, then a hole up to the real size (in
    # memory, where a hole of up to 15 digits fits: a file system may refuse one that large)
    fd = os.memfd_create("tmpfs-root-probe")
    try:
        os.write(fd, head)
        os.ftruncate(fd, size)
        return image_index.read(fd).total, None
    except image_index.DamagedIndex as e:
        return None, str(e)
    finally:
        os.close(fd)
