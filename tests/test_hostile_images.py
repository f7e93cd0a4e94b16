"""Hostile images, one table run through both readers: the boot's (tr_unpack in
the module's libraries, under dash with GNU tar and under busybox sh with busybox's tar) and
`image inspect`. The rule: nothing from an image acts before it is verified, and no member of
any part creates or writes anything outside the new root, whatever links other parts or other
workers made. Every case asserts what each reader says, and that a canary directory beside the
new root (the target of every link the images plant) is untouched.

The images are built here by hand, as an attacker would: correct indexes whose parts hold what
`image create` never writes (a link in a shard, a member hidden after an end-of-archive, a
directory part writing through a link), pinned with the very sha256 `image inspect` gives,
and images changed after they were pinned."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_image_shards import unpack
from tests.test_module_shell import LIB, SHELLS, run_sh
from tui import image_index
from tui.images import ImageError, inspect

OUT = "{OUT}"  # in a link's target: the canary directory outside the new root


# ------------------------------------------------------------------ building images
@dataclass
class M:
    """One member of a hand-made part."""

    name: str
    kind: str = "file"  # file, dir, sym, hard
    data: bytes = b""
    link: str = ""


def member(name: str, kind: str = "file", data: bytes = b"", link: str = "") -> M:
    return M(name, kind, data, link)


def tar_of(members: list[M], out: Path) -> bytes:
    """One tar stream (10 KiB records, as image create's directory part) of *members*; OUT in a
    name or a link's target is the canary directory *out*."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, errors="surrogateescape") as t:
        for m in members:  # a name "\udcff" is the byte 0xff, which is no UTF-8
            info = tarfile.TarInfo(m.name.replace(OUT, str(out).lstrip("/")))
            info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE}.get(
                m.kind, tarfile.LNKTYPE
            )
            info.mode = 0o755 if m.kind == "dir" else 0o644
            info.linkname = m.link.replace(OUT, str(out))
            info.size = len(m.data)
            info.mtime = 1_000_000_000
            t.addfile(info, io.BytesIO(m.data) if m.data else None)
    return buf.getvalue()


def sharded(path: Path, parts: list[bytes]) -> str:
    """A sharded image of tar streams *parts* (the shards, then the directory part) with a
    correct index; returns its sha256, as `image inspect` gives it and rd.tmpfs.sha256 pins it."""
    blobs = [subprocess.run(["zstd", "-q", "-c"], input=p, capture_output=True, check=True).stdout for p in parts]
    frame = image_index.reserved_frame(len(parts) - 1)
    at, index = frame, []
    for n, (plain, blob) in enumerate(zip(parts, blobs, strict=True), 1):
        kind = "dirs" if n == len(parts) else "files"
        index.append(image_index.Part(kind, at, len(blob), len(plain), 1, hashlib.sha256(blob).hexdigest()))
        at += len(blob)
    head = image_index.render(frame, at, index)
    path.write_bytes(head + b"".join(blobs))
    return hashlib.sha256(head).hexdigest()


ROOT = [member(".", "dir"), member("etc", "dir"), member("etc/os-release", data=b"ID=test\n")]


@dataclass
class Hostile:
    id: str
    #: the parts' members (shards, then the directory part); a part given as a list of lists
    #: is several tar streams back to back (a member hidden after an end-of-archive)
    parts: list
    boot: str  # what the boot's line says ("" = it unpacks)
    inspect: str  # what inspect's says ("" = it accepts)
    busybox: str | None = None  # busybox's tar, where it differs (None: as boot)
    change: Callable[[bytearray, image_index.Index], None] | None = None  # after the pin
    tar_in_order: bool = False  # each tar waits for the one before it (the race made deterministic)


def _flip_in(n: int):
    def change(data: bytearray, index: image_index.Index) -> None:
        part = index.parts[n - 1]
        data[part.offset + part.length // 2] ^= 0x01

    return change


TABLE = [
    Hostile(
        "link-in-shard-then-directory-part-writes-through-it",
        [[member("a", data=b"a"), member("esc", "sym", link=OUT)], [*ROOT, member("esc/pwned", data=b"x")]],
        boot="shard 1 of 1 holds a symbolic link (esc)",
        inspect="a symbolic link in a shard",
    ),
    Hostile(
        # two shards, two runs: whichever tar ends first leaves its link for the other
        "each-shard-writes-through-the-other-shards-link",
        [
            [member("a", "sym", link=OUT), member("b/x1", data=b"1")],
            [member("b", "sym", link=OUT), member("a/x2", data=b"2")],
            ROOT,
        ],
        boot="holds a symbolic link",
        inspect="a symbolic link in a shard",
        tar_in_order=True,
    ),
    Hostile(
        "link-hidden-after-an-end-of-archive",
        [[[member("a", data=b"a")], [member("esc", "sym", link=OUT)]], [*ROOT, member("esc/pwned", data=b"x")]],
        boot="shard 1 of 1 holds a symbolic link (esc)",
        inspect="a symbolic link in a shard",
        # busybox's tar stops at the first end-of-archive: the link is never made, esc/ is a
        # directory of the new root
        busybox="",
    ),
    Hostile(
        # Under a UTF-8 locale '.' matches no invalid byte: a transform of '.*' would leave
        # "\xff/../../outside" of the target (found by review; the boot's tars run in LC_ALL=C)
        "link-target-with-a-byte-that-is-no-utf-8",
        [
            [member("a", data=b"a"), member("\udcff", "dir"), member("esc", "sym", link="\udcff/../../outside")],
            [*ROOT, member("esc/pwned", data=b"x")],
        ],
        boot="shard 1 of 1 holds a symbolic link (esc)",
        inspect="a symbolic link in a shard",
    ),
    Hostile(
        "directory-part-writes-through-its-own-link",
        [[member("a", data=b"a")], [*ROOT, member("esc", "sym", link=OUT), member("esc/pwned", data=b"x")]],
        boot="the directory part: tar failed",
        inspect="written through the symbolic link member",
    ),
    Hostile(
        "dot-dot-member",
        [[member("a", data=b"a"), member("../pwned", data=b"x")], ROOT],
        boot="shard 1 of 1: tar failed",
        inspect="contains '..'",
        busybox="",  # busybox's tar strips the leading ../: inside the new root
    ),
    Hostile(
        "hard-link-out-of-the-new-root",
        [[member("a", data=b"a"), member("hl", "hard", link="../outside/keep")], ROOT],
        boot="shard 1 of 1: tar failed",  # GNU tar strips the ../ and finds no outside/keep inside
        inspect="a hard link to '../outside/keep', a name with '..'",
        # busybox's tar links the name as given: here, on one filesystem, it can; in a boot
        # the new root is a tmpfs of its own and link(2) across filesystems fails. Nothing is
        # written through it (the canary is checked): busybox removes a name before writing it.
        busybox="",
    ),
    Hostile(
        "absolute-member-lands-inside",
        [[member("a", data=b"a"), member(f"{OUT}/abs", data=b"x")], ROOT],
        boot="",
        inspect="",
    ),
    Hostile(
        "tampered-shard-with-a-link-pinned",
        [[member("a", data=b"a"), member("b", data=b"b" * 5000)], [*ROOT, member("esc/pwned", data=b"x")]],
        boot="shard 1 of 1: its sha256 is not the one in the image's index (the image was changed); "
        "nothing of it was unpacked",
        inspect="shard 1 of 1: its sha256 is not the one in the index",
        change=_flip_in(1),
    ),
]


def build(case: Hostile, where: Path, out: Path) -> tuple[Path, str]:
    parts = []
    for p in case.parts:
        if p and isinstance(p[0], list):
            parts.append(b"".join(tar_of(stream, out) for stream in p))
        else:
            parts.append(tar_of(p, out))
    image = where / "hostile.tar.zst"
    pin = sharded(image, parts)
    if case.change:
        fd = os.open(image, os.O_RDONLY)
        try:
            index = image_index.read(fd)
        finally:
            os.close(fd)
        data = bytearray(image.read_bytes())
        case.change(data, index)
        image.write_bytes(bytes(data))
    return image, pin


def serialising_tar(where: Path) -> dict:
    """A PATH whose `tar` makes every tar of the unpack wait for the first one to end: the race
    between two runs, made deterministic (dash runs it; busybox sh runs its own tar)."""
    where.mkdir()
    real = subprocess.run(["sh", "-c", "command -v tar"], capture_output=True, text=True, check=True).stdout.strip()
    (where / "tar").write_text(
        "#!/bin/sh\n"
        f'case "$1" in --help) exec {real} "$@" ;; esac\n'
        f'if mkdir "{where}/first" 2> /dev/null; then {real} "$@"; rc=$?; : > "{where}/first-done"; exit $rc; fi\n'
        f'i=0; while [ ! -e "{where}/first-done" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done\n'
        f'exec {real} "$@"\n'
    )
    (where / "tar").chmod(0o755)
    return {"PATH": f"{where}:/usr/sbin:/usr/bin:/sbin:/bin"}


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize("pinned", [False, True], ids=["unpinned", "pinned"])
@pytest.mark.parametrize("case", TABLE, ids=[c.id for c in TABLE])
def test_hostile_image(tmp_path, case, pinned, shell):
    out = tmp_path / "outside"
    out.mkdir()
    (out / "keep").write_text("canary")
    image, pin = build(case, tmp_path, out)
    env = {"TR_JOBS": "2", "LC_ALL": "C.UTF-8"}  # an initramfs may have a UTF-8 locale
    if case.tar_in_order and shell[0] == "dash":
        env.update(serialising_tar(tmp_path / "bin"))
    r = unpack(shell, image, tmp_path / "dest", tmp_path / "run", pin if pinned else "", env)
    # nothing outside the new root, whatever the reader said
    assert sorted(p.name for p in out.iterdir()) == ["keep"], r.stdout + r.stderr
    assert (out / "keep").read_text() == "canary"
    says = case.boot if shell[0] == "dash" or case.busybox is None else case.busybox
    if case.change and not pinned:  # unpinned, nothing checks the parts' hashes: zstd's own check
        says = "is damaged (zstd failed)"
    if says:
        assert "rc=0" not in r.stdout, r.stdout + r.stderr
        assert says in r.stdout, r.stdout + r.stderr
    else:
        assert "rc=0" in r.stdout, r.stdout + r.stderr
    if case.change and pinned:  # verified before it acts: nothing of the changed shard is there
        assert not [p for p in (tmp_path / "dest").rglob("*")], r.stdout
    # and inspect, the other reader, on the same bytes
    if case.inspect:
        with pytest.raises(ImageError, match=re.escape(case.inspect)):
            inspect(image, with_sha256=True)
    else:
        assert inspect(image, with_sha256=True).pin == pin


def test_the_table_covers_every_hole():
    """Each hole of the review is a row: a link in a shard used by the directory part, by
    another run, hidden after an end-of-archive, and a changed shard under a pin."""
    assert len(TABLE) >= 7 and {c.tar_in_order for c in TABLE} == {True, False}
    assert any(c.change for c in TABLE)


# ------------------------------------------------------------------ one index grammar
GOOD = "tmpfs-root-index 1\nsize {size}\ntotal {total}\n{parts}\n"


def index_variants() -> dict[str, Callable[[str], str]]:
    return {
        "as-written": lambda t: t,
        "a-tab-between-fields": lambda t: t.replace("size ", "size\t", 1),
        "two-spaces": lambda t: t.replace("total ", "total  ", 1),
        "a-space-at-the-end": lambda t: t.replace("\n", " \n", 2),
        "a-space-at-the-start": lambda t: t.replace("\nsize", "\n size", 1),
        "a-blank-line-first": lambda t: "\n" + t,
        "blank-lines-between": lambda t: t.replace("\n", "\n\n"),
        "a-carriage-return": lambda t: t.replace("\n", "\r\n", 2),
        "a-nul-in-a-line": lambda t: t.replace("\ntotal", "\ntot\0al", 1),
        "a-nul-after-a-value": lambda t: t.replace("\ntotal ", "\nsize 1\0\ntotal ", 1),
        "nul-lines": lambda t: t + "\0\0\n",
        "an-escape-sequence": lambda t: t.replace("\ntotal", "\n\x1b[2Jtotal", 1),
        "not-ascii": lambda t: t.replace("\ntotal", "\ntotal\u00e9", 1),
        "upper-case-hash": lambda t: t[: t.rindex(" ") + 1] + t[t.rindex(" ") + 1 :].upper(),
        "leading-zeros": lambda t: t.replace("\nsize ", "\nsize 000", 1),
        "sixteen-digits": lambda t: t.replace("\ntotal ", "\ntotal 1000000000000", 1),
        "size-twice": lambda t: t.replace("\ntotal", "\nsize 1\ntotal", 1),
    }


@pytest.mark.parametrize("variant", list(index_variants()), ids=list(index_variants()))
def test_the_boot_and_inspect_read_an_index_alike(tmp_path, variant):
    """The boot's tr_index and image_index.read accept and refuse the same index payloads;
    what the boot shows of a damaged line holds no control character."""
    good = tmp_path / "good.tar.zst"
    sharded(good, [tar_of([member("a", data=b"a")], tmp_path), tar_of(ROOT, tmp_path)])
    data = good.read_bytes()
    (payload_len,) = __import__("struct").unpack("<I", data[4:8])
    text = data[8 : 8 + payload_len].decode().rstrip("\n") + "\n"
    changed = index_variants()[variant](text).encode()
    frame = 8 + payload_len
    if len(changed) > payload_len:
        pytest.fail(f"the variant does not fit the frame: {len(changed)} > {payload_len}")
    changed += b"\n" * (payload_len - len(changed))
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(data[:8] + changed + data[frame:])
    fd = os.open(bad, os.O_RDONLY)
    try:
        image_index.read(fd)
        python = None
    except image_index.DamagedIndex as e:
        python = str(e)
    finally:
        os.close(fd)
    for shell in SHELLS:
        r = run_sh(shell, f'tr_index "{bad}"; echo "rc=$?"')
        boot_refuses = "rc=0" not in r.stdout
        assert boot_refuses == (python is not None), (shell, r.stdout, python)
        assert not any(ord(c) < 32 and c != "\n" for c in r.stdout), repr(r.stdout)
    assert (python is None) == (variant in ("as-written", "blank-lines-between")), python


def test_the_console_shows_no_control_character(tmp_path):
    """What the boot says comes from the image (a damaged line, a member's name) or a server:
    tr_say and tr_fail show every control character as '?'."""
    for shell in SHELLS:
        r = run_sh(shell, "tr_say \"$(printf 'a\\033[2Jb\\007c\\302\\2332Jd\\303\\251')\"", {"TR_RUN": str(tmp_path)})
        # C0, and C1 as UTF-8 writes it (U+009B: CSI); a label's UTF-8 (é) stays
        assert r.stderr.encode("utf-8", "surrogateescape") == "tmpfs-root: a?[2Jb?c?2Jdé\n".encode(), r.stderr
    assert LIB.exists()


# ------------------------------------------------------------------ inspect's memory
def _header_bomb(path: Path, kind: bytes, size: int) -> None:
    """A zstd single stream whose tar starts with a long-name ('L') or pax ('x') header of
    *size* bytes: a few KB of zstd."""
    header = tarfile.TarInfo("././@LongLink" if kind == b"L" else "pax")
    header.type = kind
    header.size = size
    block = header.tobuf(format=tarfile.USTAR_FORMAT if kind == b"x" else tarfile.GNU_FORMAT)[:512]
    with open(path, "wb") as out:
        z = subprocess.Popen(["zstd", "-q", "-c"], stdin=subprocess.PIPE, stdout=out)
        assert z.stdin is not None
        z.stdin.write(block)
        chunk = b"a" * (1 << 20)
        for _ in range(size >> 20):
            z.stdin.write(chunk)
        z.stdin.close()
        assert z.wait() == 0


@pytest.mark.parametrize("kind", [b"L", b"x"], ids=["long-name", "pax"])
def test_inspect_holds_no_huge_header_in_memory(tmp_path, kind):
    """A 300 MiB header in a few KB of zstd: refused in one line, and inspect's memory stays
    small (it used to hold the whole header: 282 MiB for a 4 KiB image)."""
    bomb = tmp_path / "bomb.tar.zst"
    _header_bomb(bomb, kind, 300 << 20)
    assert bomb.stat().st_size < 64 << 10
    said, peak_kb = inspect_in_a_process(bomb)
    assert "header of 314572800 bytes, more than the 1 MiB any root tree needs" in said, said
    assert peak_kb < 120 * 1024, f"inspect peaked at {peak_kb >> 10} MiB"


def inspect_in_a_process(image: Path) -> tuple[str, int]:
    """`inspect(image)` in a Python of its own: what it raised, and that program's peak
    resident memory in KiB (VmHWM: ru_maxrss would carry the forking test's own over exec)."""
    probe = (
        "from tui.images import ImageError, inspect\n"
        "try:\n"
        f"    inspect({str(image)!r})\n"
        "except ImageError as e:\n"
        "    print(e)\n"
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
    )
    r = subprocess.run(
        ["python3", "-c", probe], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent
    )
    said, peak_kb = r.stdout.splitlines()
    return said, int(peak_kb)


# ------------------------------------------------------------------ found by review
def test_the_index_is_parsed_and_hashed_from_one_read(tmp_path):
    """A source that answers a second read differently (an NFS server) cannot have the boot
    parse a hostile index and hash the pinned one: the index is read once, into RAM. (A grep
    shim stands for the server: it puts the pinned index back between the parse and the hash.)"""
    good, evil = tmp_path / "good", tmp_path / "evil"
    pin = sharded(good, [tar_of([member("etc/motd", data=b"pinned\n")], tmp_path), tar_of(ROOT, tmp_path)])
    hostile = [member("etc/motd", data=b"EVIL\n"), member("x", data=b"y" * 300)]
    sharded(evil, [tar_of(hostile, tmp_path), tar_of(ROOT, tmp_path)])
    frame = 8 + int.from_bytes(good.read_bytes()[4:8], "little")
    (tmp_path / "frame").write_bytes(good.read_bytes()[:frame])
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "grep").write_text(
        "#!/bin/sh\n"
        f'case "$*" in *"^files "*) [ -e {tmp_path}/swapped ] || {{ : > {tmp_path}/swapped; '
        f"dd if={tmp_path}/frame of={evil} conv=notrunc status=none; }} ;; esac\n"
        'exec /usr/bin/grep "$@"\n'
    )
    (shim / "grep").chmod(0o755)
    env = {"PATH": f"{shim}:/usr/sbin:/usr/bin:/sbin:/bin", "TR_REMOTE_SOURCE": "yes"}
    r = unpack(["dash"], evil, tmp_path / "dest", tmp_path / "run", pin, env)
    assert (tmp_path / "swapped").exists()  # the second read did answer otherwise
    assert "rc=3" in r.stdout and "sha256 of the image (its index)" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "dest/etc/motd").exists()


def test_busybox_finds_a_link_deeper_than_path_max_from_the_root(tmp_path):
    """busybox's find, searching from /, misses a name over PATH_MAX that tar made relative to
    the new root: the boot searches from inside it, and an error of the search refuses."""
    out = tmp_path / "outside"
    out.mkdir()
    dest = tmp_path / "dest"
    length = 4094 - len(str(dest)) + 2  # from /: over 4095; from inside: within it
    comps, rest = [], length - 3
    while rest > 1:
        n = min(200, rest - 1)
        comps.append("d" * n)
        rest -= n + 1
    link = "/".join([*comps, "esc" + "e" * rest])
    parents = [member("/".join(comps[:i]), "dir") for i in range(1, len(comps) + 1)]
    image = tmp_path / "deep.tar.zst"
    pin = sharded(
        image,
        [
            tar_of([member("a", data=b"a"), *parents, member(link, "sym", link=str(out))], out),
            tar_of([member("b", data=b"b"), member(link + "/p", data=b"pwned")], out),
            tar_of(ROOT, out),
        ],
    )
    r = unpack(["busybox", "sh"], image, dest, tmp_path / "run", pin, {"TR_JOBS": "2"})
    assert not list(out.iterdir()), r.stdout + r.stderr
    assert "rc=1" in r.stdout and "shard 1 of 2 holds a symbolic link (ddd" in r.stdout, r.stdout


def test_a_server_that_sends_more_than_a_part_is_not_kept(tmp_path):
    """Pinned over HTTP a part is buffered in RAM: a server that answers a range request with
    more bytes than asked fills no more than one byte past the part, and is named."""
    from tests.http_server import http_server
    from tests.test_module_http import fill

    www = tmp_path / "www"
    www.mkdir()
    pin = sharded(www / "img.tar.zst", [tar_of([member("a", data=b"a" * 5000)], tmp_path), tar_of(ROOT, tmp_path)])
    with http_server(www) as server:  # /more/ sends past every range it is asked
        r = fill(
            tmp_path,
            f"root=tmpfs:http://127.0.0.1:{server.port}/more/ rd.tmpfs.imgfile=img.tar.zst rd.tmpfs.sha256={pin}",
        )
    assert "shard 1 of 1): the server sent more than the" in r.stderr and "EMERGENCY" in r.stdout, r.stdout + r.stderr
    assert not list((tmp_path / "newroot").iterdir())


def test_inspect_holds_no_pile_of_long_names_in_memory(tmp_path):
    """300 links with names of 1 MiB less a block in a directory part of some 30 KB (found by
    review: inspect kept every name, 315 MiB): a name the kernel would refuse is refused, and
    inspect's memory stays small."""
    long = "n" * ((1 << 20) - 600)
    links = [member(f"{long}{i:03}", "sym", link="x") for i in range(300)]
    image = tmp_path / "names.tar.zst"
    sharded(image, [tar_of([member("a", data=b"a")], tmp_path), tar_of([*ROOT, *links], tmp_path)])
    assert image.stat().st_size < 1 << 20
    said, peak_kb = inspect_in_a_process(image)
    assert "300 member(s) the boot's tar refuses" in said and "a name longer than the kernel takes" in said, said
    assert peak_kb < 120 * 1024, f"inspect peaked at {peak_kb >> 10} MiB"
