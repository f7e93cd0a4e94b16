"""An http(s) source in the engine: what `plan` accepts, the command line and the dracut
modules it gives, and how it asks the server (a real one on loopback) before the boot does:
by the boot's rules (no redirect followed, the size of 1-15 digits from Content-Range or
Content-Length, a URL curl could fetch), within one time bound for the whole probe."""

import contextlib
import json
import threading
import time

import pytest

from tests.http_server import closed_port, http_server, make_ca
from tests.infra import run_cli
from tui.dracut import dracut_options
from tui.http_source import TIMEOUT, URL_FORMS, Unreachable, _parse_url, probe
from tui.image_create import create, make_plan
from tui.plan import Plan, kernel_cmdline, parse_source


@pytest.mark.parametrize(
    "text",
    ["http://10.0.0.11/images", "https://images.example.org:8443/a/b", "http://[fd00::1]:8080/", "tmpfs:http://h/"],
)
def test_http_sources_parse(text):
    source = parse_source(text)
    assert source.kind == "http" and source.is_network and source.value == text.removeprefix("tmpfs:")


@pytest.mark.parametrize(
    "text,says",
    [
        ("http://user:secret@h/images", "carries credentials"),
        ("http://h/images?x=1", "no query"),
        ("http://h:99999/", "not a URL"),
        ("ftp://h/images", "not a source"),
        ("http://", "not a URL"),
    ],
)
def test_http_sources_refused(text, says):
    with pytest.raises(ValueError, match=says):
        parse_source(text)


def test_the_command_line_brings_the_network_up_and_dracut_adds_url_lib():
    plan = Plan(source="http://10.0.0.11:8080/img", image="images/r.tar.zst", sha256="a" * 64, boot="menu")
    args = kernel_cmdline(plan)
    assert args[:2] == ["root=tmpfs:http://10.0.0.11:8080/img", "rd.tmpfs.imgfile=images/r.tar.zst"]
    assert "ip=dhcp" in args and "rd.neednet=1" in args
    assert dracut_options(plan)[:2] == ["--add", "tmpfs-root url-lib"]


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("www")
    tree = tmp / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("node\n")
    (tree / "usr").mkdir()
    (tree / "usr/blob").write_bytes(bytes(range(256)) * 4096)
    (tmp / "www/images").mkdir(parents=True)
    made = create(make_plan(str(tree), str(tmp / "www/images/r.tar.zst"), "zst", shards=2))
    (tmp / "www/images/notes.txt").write_text("not an archive\n")
    return tmp / "www", made.pin


def plan_cli(fake_target, source: str, image: str, *extra):
    return run_cli("plan", f"--root={fake_target}", f"--source={source}", f"--image={image}", "--json", *extra)


def test_plan_asks_the_server_and_takes_the_size_from_the_index(fake_target, www):
    (fake_target / "usr/bin/curl").write_text("")
    root, sha = www
    with http_server(root) as server:
        url = f"http://127.0.0.1:{server.port}/"
        ok = plan_cli(fake_target, url, "images/r.tar.zst", f"--sha256={sha}")
        small = plan_cli(fake_target, url, "images/r.tar.zst", f"--sha256={sha}", "--size=64k")
        missing = plan_cli(fake_target, url, "images/absent.tar.zst", f"--sha256={sha}")
        junk = plan_cli(fake_target, url, "images/notes.txt", f"--sha256={sha}")
        norange = plan_cli(fake_target, url + "norange", "images/r.tar.zst", f"--sha256={sha}")
    assert ok.returncode == 0, ok.stderr
    assert "rd.neednet=1" in json.loads(ok.stdout)["cmdline"]
    assert any(rng == "bytes=0-65535" for _, _, rng in server.requests)
    assert (
        small.returncode == 2
        and "--size '64k'" in small.stderr
        and "is below the image's uncompressed size" in small.stderr
    ), small.stderr
    assert missing.returncode == 2 and "the server answered HTTP 404" in missing.stderr
    assert junk.returncode == 2 and "is not an archive" in junk.stderr
    assert norange.returncode == 2 and "does not answer range requests" in norange.stderr


def test_plain_http_needs_the_image_pinned(fake_target, www):
    (fake_target / "usr/bin/curl").write_text("")
    root, _ = www
    with http_server(root) as server:
        url = f"http://127.0.0.1:{server.port}/"
        unpinned = plan_cli(fake_target, url, "images/r.tar.zst")
        insecure = plan_cli(fake_target, url, "images/r.tar.zst", "--append=rd.tmpfs.insecure=1")
    assert unpinned.returncode == 2
    assert "--sha256: is required over plain http" in unpinned.stderr
    assert insecure.returncode == 0, insecure.stderr


def test_an_unreachable_server_is_a_warning_and_curl_is_asked_for(fake_target):
    r = plan_cli(fake_target, f"http://127.0.0.1:{closed_port()}/", "images/r.tar.zst", "--sha256=" + "b" * 64)
    assert r.returncode == 0, r.stderr
    assert "cannot be reached from here" in r.stderr and "the boot will try" in r.stderr
    assert "needs curl in the target" in r.stderr


def test_a_hostile_reason_phrase_is_shown_literally(fake_target, www):
    (fake_target / "usr/bin/curl").write_text("")
    root, sha = www
    with http_server(root) as server:
        r = plan_cli(fake_target, f"http://127.0.0.1:{server.port}/hostile", "images/r.tar.zst", f"--sha256={sha}")
    assert r.returncode == 2 and "the server answered HTTP 404" in r.stderr, r.stderr
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr  # no escape reaches the terminal
    assert "pwned" in r.stderr  # shown, as text


# What `plan` asks is what the boot asks (tr_http_probe): the same request, the same rules.


def test_a_redirect_is_a_problem_and_is_not_followed(www):
    root, _ = www
    with http_server(root) as server:
        found = probe(f"http://127.0.0.1:{server.port}/redirect/images/r.tar.zst")
    assert found.status == 302 and found.problem is not None
    assert found.problem.startswith("the server redirects to '/images/r.tar.zst' (HTTP 302); the boot does not")
    assert [path for _, path, _ in server.requests] == ["/redirect/images/r.tar.zst"]  # asked once, not followed


@pytest.mark.parametrize(
    "mode,says",
    [
        ("garbled", "the server did not say the image's size"),  # bytes 0-65535/12x4
        ("size16", "the server did not say the image's size"),  # 16 digits: more than the boot takes
        ("size15", "truncated or extended: 999999999999999 bytes"),  # the most it takes: the index is checked
    ],
)
def test_the_size_is_read_as_the_boot_reads_it(www, mode, says):
    root, _ = www
    with http_server(root) as server:
        found = probe(f"http://127.0.0.1:{server.port}/{mode}/images/r.tar.zst")
    assert found.format == "sharded" and found.problem is not None and says in found.problem, found


def test_the_size_is_taken_from_the_range_answer(www):
    root, _ = www
    with http_server(root) as server:
        found = probe(f"http://127.0.0.1:{server.port}/images/r.tar.zst")
        plain = probe(f"http://127.0.0.1:{server.port}/norange/images/notes.txt")
    size = (root / "images/r.tar.zst").stat().st_size
    assert (found.status, found.size, found.ranges, found.problem) == (206, size, True, None)
    assert found.uncompressed and found.uncompressed > 256 * 4096
    assert (plain.status, plain.size, plain.ranges, plain.problem) == (
        200,
        15,
        False,
        "is not an archive (by its first bytes)",
    )


@pytest.mark.parametrize(
    "url,says",
    [
        ("http://[12]/images/r.tar.zst", "the host '[12]' is not an IPv6 address"),
        ("http://[fe80::1%25eth0]/r.tar.zst", "is not an IPv6 address"),
        ("http://[::1/r.tar.zst", "it is not http(s)://host"),
        ("http://127.0.0.1:0/r.tar.zst", "the port '0' is not 1-65535"),
        ("http://127.0.0.1:65536/r.tar.zst", "the port '65536' is not 1-65535"),
        ("http://127.0.0.1:8o/r.tar.zst", "the port '8o' is not 1-65535"),
        ("http://127.0.0.300/r.tar.zst", "the host '127.0.0.300' is not an IPv4 address"),
        ("http://127.0.0.1/a b.tar.zst", "its path has spaces"),
    ],
)
def test_a_url_the_boot_cannot_fetch_is_one_line_saying_what_is_accepted(url, says):
    found = probe(url)  # refused before anything is asked of the network
    assert found.problem and found.problem.startswith("not a URL the boot can fetch: ") and says in found.problem
    assert found.problem.endswith("accepted: " + URL_FORMS) and "\n" not in found.problem


def test_host_names_are_dns_names():
    assert _parse_url("https://images.example.org:8443/a/b") == ("https", "images.example.org", 8443, "/a/b")
    assert _parse_url("http://[fd00::1]") == ("http", "[fd00::1]", 80, "/")
    for host in ("-bad", "bad-", "a..b", "a_b", "x" * 64, ".".join(["a"] * 130)):
        with pytest.raises(ValueError, match="is not a DNS name"):
            _parse_url(f"http://{host}/")


def test_plan_refuses_a_bad_ipv6_literal_in_one_line(fake_target):
    (fake_target / "usr/bin/curl").write_text("")
    r = plan_cli(fake_target, "http://[12]/", "images/r.tar.zst", "--sha256=" + "b" * 64)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "at http://[12]/images/r.tar.zst: not a URL the boot can fetch: the host '[12]'" in r.stderr


def test_a_server_that_trickles_cannot_hold_the_probe_longer_than_its_bound(www):
    """One byte every 2 s: every read gets something, so only a deadline for the whole probe
    ends it; the probe gives up within TIMEOUT and says so (a warning in the plan)."""
    root, _ = www
    outcome: list = []

    def ask():
        try:
            outcome.append(probe(f"http://127.0.0.1:{server.port}/trickle/images/r.tar.zst"))
        except Unreachable as e:
            outcome.append(e)

    with http_server(root) as server:
        started = time.monotonic()
        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        asking.join(TIMEOUT + 5)
        took = time.monotonic() - started
    assert not asking.is_alive() and took < TIMEOUT + 3, f"the probe still runs after {took:.0f} s"
    assert isinstance(outcome[0], Unreachable) and f"within {TIMEOUT:g} s" in str(outcome[0])


def test_https_is_checked_against_the_ca_given(www, tmp_path):
    root, _ = www
    ca, cert, key = make_ca(tmp_path / "ca")
    with http_server(root, tls=(cert, key)) as server:
        url = f"https://127.0.0.1:{server.port}/images/r.tar.zst"
        found = probe(url, cafile=str(ca))
        with pytest.raises(Unreachable, match="cannot be reached from here .*CERTIFICATE_VERIFY_FAILED"):
            probe(url)
    assert (found.status, found.format, found.problem) == (206, "sharded", None)


def test_an_index_longer_than_the_first_64k_is_read_whole(tmp_path):
    """An image of over ~500 shards has an index longer than the 64 KiB of the first request:
    the probe asks for the whole index, as the boot does, instead of reading a cut one as
    damaged."""
    from tests.test_hostile_images import member, sharded, tar_of
    from tui import image_index

    parts = [tar_of([member(f"f{n}", data=b"x")], tmp_path) for n in range(560)]
    parts.append(tar_of([member(".", "dir")], tmp_path))
    www = tmp_path / "www"
    www.mkdir()
    sharded(www / "many.tar.zst", parts)
    frame = int.from_bytes((www / "many.tar.zst").read_bytes()[4:8], "little") + 8
    assert frame > 1 << 16
    with http_server(www) as server:
        found = probe(f"http://127.0.0.1:{server.port}/many.tar.zst")
    assert found.problem is None, found.problem
    assert found.format == "sharded" and found.uncompressed == sum(len(p) for p in parts)
    assert image_index.MAX_INDEX + 8 >= frame


@contextlib.contextmanager
def raw_server(head: bytes, body: bytes):
    """A server on 127.0.0.1 that answers every request with *head* (status line and headers,
    as given, byte for byte) and *body*."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()

    def serve():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(head + b"\r\n" + body)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        sock.close()


#: Header spellings: the boot's tr_http_probe and plan's probe must read the same size from each.
HEADERS = {
    "upper-case-name": (b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 700\r\n", 700),
    "no-blank-after-colon": (b"HTTP/1.1 200 OK\r\nContent-Length:700\r\n", 700),
    "blanks-around": (b"HTTP/1.1 200 OK\r\nContent-Length: \t 700 \t\r\n", 700),
    "two-lengths-the-last-wins": (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nContent-Length: 700\r\n", 700),
    "a-range-on-a-200-is-not-the-size": (
        b"HTTP/1.1 200 OK\r\nContent-Range: bytes 0-1/99\r\nContent-Length: 700\r\n",
        700,
    ),
    "lower-case-range": (b"HTTP/1.1 206 Partial\r\ncontent-range: bytes 0-699/700\r\nContent-Length: 700\r\n", 700),
    "garbled-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 7x0\r\n", None),
}


@pytest.mark.needs("curl")
@pytest.mark.parametrize("case", list(HEADERS), ids=list(HEADERS))
def test_the_boot_and_plan_read_the_size_from_the_same_headers(tmp_path, case):
    from tests.test_module_shell import run_sh

    head, size = HEADERS[case]
    body = b"\0" * 257 + b"ustar" + b"\0" * 438  # a tar's first bytes: 700 in all
    with raw_server(head, body) as port:
        url = f"http://127.0.0.1:{port}/root.tar"
        found = probe(url)
        r = run_sh(
            ["dash"],
            f'tr_http_probe "{url}"; echo "rc=$?"; cat "{tmp_path}/http.size" 2> /dev/null',
            {"TR_RUN": str(tmp_path), "TR_HTTP_RETRIES": "0", "TR_HTTP_CONNECT_TIMEOUT": "2"},
        )
    boot = int(r.stdout.split("rc=0\n", 1)[1]) if "rc=0" in r.stdout else None
    assert found.size == boot == size, (found, r.stdout, r.stderr)
