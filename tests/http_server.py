"""A real HTTP(S) server for the tests, on loopback: files from a directory, with range
requests (what sharded images are fetched with), and the failures a boot must survive.

Paths choose the behaviour, so one server serves every case:

* ``/<path>``            the file, whole or by ``Range: bytes=a-b`` / ``bytes=-n`` (206)
* ``/norange/<path>``    the file, ignoring Range (200), as some servers do
* ``/die/<path>``        announces the whole length, sends half, then drops the connection
* ``/hugesize/<path>``    claims a 20-digit total size in Content-Range
* ``/size16/<path>``, ``/size15/<path>``, ``/garbled/<path>``  claim a total size of 16 digits,
  of 15 digits (the most the boot takes), or one that is not a number, in Content-Range
* ``/redirect/<path>``    302 to ``/<path>`` (which the boot does not follow)
* ``/trickle/<path>``     answers one byte every 2 s, status line and headers included
* ``/hostile/<path>``     404 with terminal escapes in its reason phrase
* ``/slow/<path>``       sends 256 bytes a second (a server that has stalled)
* ``/more/<path>``       answers a range with 206 and no Content-Length, then sends the file
  from the range's start to its end and 64 KiB more before it closes (more than asked)

Every request is logged as (method, path, Range header) in ``server.requests``. HTTPS uses a
test CA made with openssl (``make_ca``): the server's certificate names 127.0.0.1 and
10.0.2.2 (the host as QEMU's user network shows it to a guest).
"""

from __future__ import annotations

import contextlib
import http.server
import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

#: The total size in Content-Range of the modes that claim one.
_CLAIMED = {
    "hugesize": "9" * 20,  # a size no shell arithmetic holds
    "size16": "1" + "0" * 15,
    "size15": "9" * 15,
    "garbled": "12x4",
}


class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    requests: list

    def log_message(self, format, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        self.requests.append((self.command, self.path, self.headers.get("Range")))
        if self.path.startswith("/hostile/"):  # a reason phrase with terminal escapes
            self.send_response(404, "\x1b]0;pwned\x07\x1b[2J gone")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        mode, _, rest = self.path.lstrip("/").partition("/")
        if mode not in ("norange", "die", "slow", "redirect", "trickle", "more", *_CLAIMED):
            mode, rest = "", self.path.lstrip("/")
        if mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "/" + rest)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "trickle":
            answer = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/10\r\nContent-Length: 10\r\n\r\n"
            for byte in answer + bytes(10):
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(2)
            return
        path = (self.root / rest).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        wanted = self.headers.get("Range")
        if wanted and mode != "norange":
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted)
            if m and m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            elif m and m.group(2):
                start = max(0, size - int(m.group(2)))
            if start > end:
                self.send_error(416)
                return
            status = 206
        if mode == "more" and status == 206:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError), open(path, "rb") as f:
                f.seek(start)
                self.wfile.write(f.read() + bytes(64 << 10))
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Accept-Ranges", "none" if mode == "norange" else "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            total = _CLAIMED.get(mode, size)
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.end_headers()
        if head:
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start + 1
            if mode == "die":
                left //= 2
            try:
                while left > 0:
                    chunk = f.read(min(256 if mode == "slow" else 1 << 16, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
                    if mode == "slow":
                        time.sleep(1)
            except (BrokenPipeError, ConnectionResetError):
                return
        if mode == "die":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def http_server(root: Path, *, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None):
    """Serve *root* on a free port of *host*; yields the server (``.port``, ``.requests``).
    *tls*: (certificate, key) for HTTPS."""
    handler = type("Handler", (_Handler,), {"root": root.resolve(), "requests": []})
    server = _Server((host, 0), handler)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.port = server.server_address[1]  # type: ignore[attr-defined]
    server.requests = handler.requests  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def make_ca(where: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate it signed for 127.0.0.1, 10.0.2.2 and localhost:
    returns (ca.pem, server.pem, server.key)."""
    where.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (where / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))

    def openssl(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        ca_key,
        "-out",
        ca,
        "-days",
        "2",
        "-subj",
        "/CN=tmpfs-root test CA",
    )
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=tmpfs-root test")
    ext = where / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,IP:10.0.2.2,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        "2",
        "-extfile",
        ext,
    )
    return ca, cert, key


def closed_port() -> int:
    """A loopback port nothing listens on (a server that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
