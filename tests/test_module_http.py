"""Images streamed over HTTP(S): the module's shell (tr_fill_root's pre-mount hook and
tr_unpack) against a real HTTP server on loopback, with the real curl the initramfs
carries (dracut's url-lib installs the build host's). Sharded images are fetched with
range requests, one per shard, in parallel; single streams are piped straight into the
unpack. Every failure ends in one line naming the URL and the cause."""

import hashlib
from pathlib import Path

import pytest

from tests.http_server import closed_port, http_server, make_ca
from tests.test_module_shell import run_sh
from tui.dracut import MODULE_SOURCE
from tui.image_create import create, make_plan

pytestmark = pytest.mark.needs("curl", "openssl")


def tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=test\n")
    (root / "etc/marker").write_text("from the server\n")
    for n in range(30):
        (root / f"usr/lib/f{n:02}").parent.mkdir(parents=True, exist_ok=True)
        (root / f"usr/lib/f{n:02}").write_bytes(hashlib.sha256(str(n).encode()).digest() * 2000 * (n + 1))
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """images/sharded.tar.zst (4 shards), images/stream.tar.zst (one stream), a tampered
    copy of the sharded one, and their pins."""
    tmp = tmp_path_factory.mktemp("http")
    src = tree(tmp / "tree")
    www = tmp / "www"
    (www / "images").mkdir(parents=True)
    sharded = create(make_plan(str(src), str(www / "images/sharded.tar.zst"), "zst", shards=4))
    stream = create(make_plan(str(src), str(www / "images/stream.tar.zst"), "zst", shards=1))
    data = bytearray((www / "images/sharded.tar.zst").read_bytes())
    data[-len(data) // 3] ^= 0x40  # inside the third shard
    (www / "images/tampered.tar.zst").write_bytes(bytes(data))
    return {"www": www, "sharded": sharded.pin, "stream": stream.pin, "tmp": tmp}


def fill(tmp_path, cmdline: str, env=None):
    """The pre-mount hook with dracut's functions stubbed; *cmdline* is the kernel's."""
    newroot = tmp_path / "newroot"
    newroot.mkdir(parents=True, exist_ok=True)
    return run_sh(
        ["dash"],
        f". {MODULE_SOURCE / 'tmpfs-root.sh'}",
        {
            "CMDLINE": cmdline,
            "TR_RUN": str(tmp_path / "run"),
            "NEWROOT": str(newroot),
            "TR_MEMINFO": "/proc/meminfo",
            "TR_HTTP_RETRY_MAX": "4",
            "TR_HTTP_CONNECT_TIMEOUT": "2",
            **(env or {}),
        },
    )


def said(r) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("tmpfs-root: ")]


@pytest.mark.parametrize("image", ["sharded", "stream"])
def test_boots_from_http_with_the_image_pinned(served, tmp_path, image):
    with http_server(served["www"]) as server:
        r = fill(
            tmp_path,
            f"root=tmpfs:http://127.0.0.1:{server.port}/ rd.tmpfs.imgfile=images/{image}.tar.zst "
            f"rd.tmpfs.sha256={served[image]}",
        )
    assert "EMERGENCY" not in r.stdout, r.stderr
    assert (tmp_path / "newroot/etc/marker").read_text() == "from the server\n"
    assert (tmp_path / "newroot/usr/lib/f29").stat().st_size == 32 * 2000 * 30
    assert any("sha256 verified" in line for line in said(r)), r.stderr
    # the last line says what was unpacked: the RAM copy of a pinned stream is still there
    # to be measured, and nothing complains of a file already gone
    [unpacked] = [line for line in said(r) if line.startswith("tmpfs-root: unpacked ")] or [""]
    assert image == "sharded" or not unpacked.startswith("tmpfs-root: unpacked 0B"), r.stderr
    assert "can't open" not in r.stderr and "cannot open" not in r.stderr, r.stderr
    # the size is known before anything is fetched whole: from the index, or the trailer
    assert any("uncompressed +" in line for line in said(r) if "tmpfs of" in line), r.stderr
    ranges = [rng for method, path, rng in server.requests if path.endswith(f"{image}.tar.zst") and rng]
    if image == "sharded":  # the probe, the size trailer, then one range request per part
        assert len(ranges) >= 2 + 5, server.requests
    else:  # one stream: the probe, the trailer, then the whole file in one request
        assert [rng for m, p, rng in server.requests if p.endswith("stream.tar.zst")].count(None) == 1


def test_plain_http_refuses_an_unpinned_image_unless_told(served, tmp_path):
    with http_server(served["www"]) as server:
        base = f"root=tmpfs:http://127.0.0.1:{server.port} rd.tmpfs.imgfile=images/sharded.tar.zst"
        refused = fill(tmp_path, base)
        assert server.requests == []  # refused before anything was asked of the network
        allowed = fill(tmp_path / "b", base + " rd.tmpfs.insecure=1")
    assert said(refused)[-1].startswith("tmpfs-root: over plain http the image must be pinned")
    assert said(refused)[-1].endswith("(rd.tmpfs.sha256)")
    assert "EMERGENCY" in refused.stdout
    assert "EMERGENCY" not in allowed.stdout, allowed.stderr


def test_the_proxy_of_dracuts_url_lib_carries_every_request(served, tmp_path):
    """dracut's url-lib.sh reads the kernel's proxy= into $proxy (stood in for here): the boot's
    requests go to that proxy, a closed port here, so none reaches the server and curl's
    words name the proxy's port."""
    port = closed_port()
    url_lib = tmp_path / "url-lib.sh"
    url_lib.write_text("proxy=$(getarg proxy=)\n")
    with http_server(served["www"]) as server:
        r = fill(
            tmp_path,
            f"root=tmpfs:http://127.0.0.1:{server.port}/ rd.tmpfs.imgfile=images/stream.tar.zst "
            f"rd.tmpfs.sha256={served['stream']} proxy=http://127.0.0.1:{port}",
            {"TR_URL_LIB": str(url_lib), "TR_HTTP_RETRIES": "0"},
        )
    assert server.requests == []
    line = said(r)[-1]
    assert "cannot fetch" in line and f"port {port}" in line and line.endswith("(root=)"), line


def test_https_verifies_the_server_with_the_given_ca(served, tmp_path):
    ca, cert, key = make_ca(tmp_path / "ca")
    args = "rd.tmpfs.imgfile=images/sharded.tar.zst"
    with http_server(served["www"], tls=(cert, key)) as server:
        url = f"https://127.0.0.1:{server.port}/"
        good = fill(tmp_path / "good", f"root=tmpfs:{url} {args}", {"TR_CAFILE": str(ca)})
        bad = fill(tmp_path / "bad", f"root=tmpfs:{url} {args}", {"TR_CAFILE": "/nonexistent"})
    assert "EMERGENCY" not in good.stdout, good.stderr
    assert (tmp_path / "good/newroot/etc/marker").exists()
    assert "EMERGENCY" in bad.stdout
    line = said(bad)[-1]
    assert f"cannot fetch {url}images/sharded.tar.zst: " in line and "certificate" in line, line
    assert line.endswith("(root=)")
    assert not (tmp_path / "bad/newroot/etc").exists()


@pytest.mark.parametrize(
    "case,path,says",
    [
        ("404", "images/absent.tar.zst", "The requested URL returned error: 404"),
        ("died", "die/images/stream.tar.zst", "transfer closed with"),
        ("died-sharded", "die/images/sharded.tar.zst", "transfer closed with"),
        ("no-ranges", "norange/images/sharded.tar.zst", "the server does not answer range requests"),
        ("huge-size", "hugesize/images/stream.tar.zst", "the server did not say the image's size"),
    ],
)
def test_server_failures_name_the_url_and_the_cause(served, tmp_path, case, path, says):
    image = "stream" if "stream" in path else "sharded"
    with http_server(served["www"]) as server:
        url = f"http://127.0.0.1:{server.port}"
        r = fill(tmp_path, f"root=tmpfs:{url} rd.tmpfs.imgfile={path} rd.tmpfs.sha256={served[image]}")
    lines = said(r)
    assert "EMERGENCY" in r.stdout, r.stderr
    assert says in lines[-1] and f"{url}/{path}" in lines[-1], lines
    assert lines[-1].endswith("(root=)"), lines[-1]


def test_a_name_that_does_not_resolve_is_named(tmp_path):
    r = fill(tmp_path, "root=tmpfs:http://no-such-host.invalid/ rd.tmpfs.imgfile=r.tar.zst rd.tmpfs.insecure=1")
    line = said(r)[-1]
    assert "cannot fetch http://no-such-host.invalid/r.tar.zst: Could not resolve host" in line, line
    assert line.endswith("(root=)")


def test_a_server_that_is_down_is_retried_then_named(served, tmp_path):
    port = closed_port()
    r = fill(
        tmp_path, f"root=tmpfs:http://127.0.0.1:{port}/x rd.tmpfs.imgfile=images/stream.tar.zst rd.tmpfs.insecure=1"
    )
    line = said(r)[-1]
    assert f"cannot fetch http://127.0.0.1:{port}/x/images/stream.tar.zst: " in line, line
    assert "Failed to connect" in line or "Couldn't connect" in line, line
    assert line.endswith("(root=)")


def served_fill(served, tmp_path, under: str, image: str, pin: str, env=None):
    """The pre-mount hook booting images/<image>.tar.zst from the server's <under> path,
    pinned to the sha256 of the image called *pin*; returns its last line."""
    with http_server(served["www"]) as server:
        r = fill(
            tmp_path,
            f"root=tmpfs:http://127.0.0.1:{server.port}{under} rd.tmpfs.imgfile=images/{image}.tar.zst "
            f"rd.tmpfs.sha256={served[pin]}",
            env,
        )
    return said(r)[-1]


def test_a_tampered_shard_over_http_names_the_shard(served, tmp_path):
    line = served_fill(served, tmp_path, "", "tampered", "sharded")
    assert "its sha256 is not the one in the image's index" in line and line.endswith("(rd.tmpfs.sha256)"), line
    assert "shard 3 of 4" in line


def test_a_stalled_server_is_abandoned(served, tmp_path):
    line = served_fill(served, tmp_path, "/slow", "stream", "stream", {"TR_HTTP_SPEED_TIME": "2"})
    assert "cannot fetch" in line and "too slow" in line and line.endswith("(root=)"), line


@pytest.mark.parametrize(
    "url,route,ipv6_route,up",
    [
        ("http://10.0.2.2:80/", "eth0\t00000000\t0202000A", "", True),
        ("http://10.0.2.2:80/", "lo\t0000007F\t00000000", "", False),  # only loopback: not yet
        ("http://[fd00::1]/", "eth0\t00000000\t0202000A", "fe80000000000000 40 eth0", False),  # v4 only
        ("http://[fd00::1]/", "", "fd000000000000000000000000000000 40 x x x x x x x eth0", True),
    ],
)
def test_the_boot_waits_for_the_network_the_url_needs(tmp_path, url, route, ipv6_route, up):
    """With systemd in the initramfs, networkd may still be asking DHCP when the pre-mount
    hook runs: the module waits (up to rd.retry) for a route the URL's host can use."""
    net = tmp_path / "net"
    net.mkdir()
    (net / "route").write_text("Iface\tDestination\tGateway\n" + (route + "\n" if route else ""))
    fields = ipv6_route.split()
    if len(fields) == 3:  # dest, prefix, device: pad to /proc/net/ipv6_route's ten columns
        fields = [fields[0], fields[1], *["x"] * 7, fields[2]]
    (net / "ipv6_route").write_text(" ".join(fields) + "\n" if fields else "")
    r = run_sh(
        ["dash"],
        f'_tr_wait_for_network "{url}" 1; echo rc=$?',
        {"TR_PROC_NET": str(net), "TR_RUN": str(tmp_path)},
    )
    assert (f"rc={0 if up else 1}") in r.stdout, r.stdout + r.stderr
    assert ("waiting for the network" in r.stderr) == (not up)


@pytest.mark.slow  # 560 shards fetched, verified and unpacked one by one: ~40 s
def test_an_image_of_many_shards_boots_over_http(tmp_path):
    """--shards allows 1023: the index of more than ~500 shards (560 here) is longer than the 64 KiB the
    boot's first request fetches, so the boot fetches the whole index (it used to parse a cut
    one and blame the sha256). Pinned, every shard is verified before it is unpacked."""
    src = tmp_path / "tree"
    for n in range(600):
        (src / f"d{n % 7}/f{n:04}").parent.mkdir(parents=True, exist_ok=True)
        (src / f"d{n % 7}/f{n:04}").write_bytes(hashlib.sha256(str(n).encode()).digest())
    (src / "etc").mkdir()
    (src / "etc/os-release").write_text("ID=test\n")
    www = tmp_path / "www"
    www.mkdir()
    made = create(make_plan(str(src), str(www / "many.tar.zst"), "zst", shards=560))
    frame = int.from_bytes((www / "many.tar.zst").read_bytes()[4:8], "little") + 8
    assert frame > 1 << 16
    with http_server(www) as server:
        r = fill(
            tmp_path,
            f"root=tmpfs:http://127.0.0.1:{server.port}/ rd.tmpfs.imgfile=many.tar.zst rd.tmpfs.sha256={made.pin}",
            {"TR_JOBS": "2"},
        )
    assert "EMERGENCY" not in r.stdout, r.stdout + r.stderr
    assert any("sha256 verified: the index and every shard" in line for line in said(r)), r.stderr
    assert (tmp_path / "newroot/d3/f0556").read_bytes() == hashlib.sha256(b"556").digest()
