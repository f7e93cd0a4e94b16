"""An http(s) source in the engine: what `plan` accepts, the command line and the dracut
modules it gives, and how it asks the server (a real one on loopback) before the boot does."""

import json

import pytest

from tests.http_server import closed_port, http_server
from tests.infra import run_cli
from tui.dracut import dracut_options
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
    return tmp / "www", made.sha256


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
