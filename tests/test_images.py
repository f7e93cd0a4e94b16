"""Root images: create from a tree with every hard case, round trip through the
module's own unpack into a real tmpfs, excludes, the fstab rewrite, interrupted
creates, inspect on every format and on broken input."""

import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.infra import REPO, make_test_rootfs, pack, run_cli
from tests.test_module_shell import run_sh
from tui.images import recommended_size

LONG = "/".join(["a-rather-long-directory-name-for-tar"] * 7)  # > 255 bytes: needs GNU/pax headers
ODD = b"caf\xe9-latin1-\xff"  # not UTF-8


@pytest.fixture
def tmpfs(tmp_path):
    """A real tmpfs, as at boot; unmounted afterwards."""
    mounted = []

    def make(name: str, size: str = "64m") -> Path:
        where = tmp_path / name
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield make
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def make_hard_tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/fstab").write_text(
        "UUID=1111 / ext4 defaults 0 1\nUUID=2222 /srv/images ext4 ro 0 2\ntmpfs /tmp tmpfs defaults 0 0\n"
    )
    (root / "bin").mkdir()
    tool = root / "bin/ping"
    tool.write_bytes(b"\x7fELF pretend")
    os.chown(tool, 0, 0)
    tool.chmod(0o755)
    subprocess.run(["setcap", "cap_net_raw+ep", str(tool)], check=True)
    data = root / "home/user/data"
    data.parent.mkdir(parents=True)
    data.write_text("owned by 1000:1000")
    os.chown(data, 1000, 1000)
    os.chown(data.parent, 1000, 1000)
    data.chmod(0o640)
    subprocess.run(["setfattr", "-n", "user.note", "-v", "kept", str(data)], check=True)
    subprocess.run(["setfacl", "-m", "u:2000:rw,g:3000:r", str(data)], check=True)
    os.link(data, root / "home/user/data.hardlink")
    sparse = root / "var/lib/sparse.img"
    sparse.parent.mkdir(parents=True)
    with open(sparse, "wb") as f:
        f.seek(64 << 20)
        f.write(b"end")
    (root / "dev").mkdir()
    os.mknod(root / "dev/console", stat.S_IFCHR | 0o600, os.makedev(5, 1))  # /dev contents: never packed
    # Device nodes elsewhere (a chroot, a container's rootfs) are the tree's own: packed.
    (root / "srv/nodes").mkdir(parents=True)
    os.mknod(root / "srv/nodes/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "srv/nodes/loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
    (root / "run").mkdir()
    (root / "srv/sock").mkdir(parents=True)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "srv/sock/control"))
    sock.close()
    (root / LONG).mkdir(parents=True)
    (root / LONG / "file").write_text("deep")
    os.makedirs(os.fsencode(root / "srv") + b"/" + ODD)
    with open(os.fsencode(root / "srv") + b"/" + ODD + b"/x", "w") as f:
        f.write("odd name")
    os.symlink("../home/user/data", root / "etc/link")
    return root


def tree_metadata(root: Path, skip=()) -> dict:
    """Everything a round trip must keep, per path (bytes paths, so odd names compare)."""
    result = {}
    inodes: dict[int, list] = {}
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, broot)
            if any(rel.startswith(os.fsencode(s)) for s in skip):
                continue
            st = os.lstat(p)
            entry = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    entry["sha"] = hashlib.sha256(f.read()).hexdigest()
                entry["sparse"] = st.st_blocks * 512 < st.st_size
                entry["links"] = st.st_nlink
                inodes.setdefault(st.st_ino, []).append(rel)
                entry["inode"] = st.st_ino
            elif stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                entry["rdev"] = st.st_rdev
            if not stat.S_ISLNK(st.st_mode):
                entry["xattrs"] = {k: os.getxattr(p, k) for k in sorted(os.listxattr(p))}
            result[rel] = entry
    for entry in result.values():  # hard links: the names sharing an inode, not inode numbers
        if "inode" in entry:
            entry["hardlinks"] = sorted(inodes[entry.pop("inode")])
    return result


def create_cli(source, output, *args, timeout=300):
    return run_cli("image", "create", f"--from={source}", f"--output={output}", *args, timeout=timeout)


@pytest.mark.parametrize(
    "shards,fmt",
    [([], "sharded"), (["--shards=1"], "zstd"), (["--shards=9"], "sharded")],
    ids=["default-sharded", "one-stream", "nine-shards"],
)
def test_round_trip_through_the_module_unpack_into_a_tmpfs_loses_nothing(tmp_path, tmpfs, shards, fmt):
    """Everything kept, in every layout: the default, one stream, and nine shards for a tree
    of a few dozen members (so that most members sit at a shard boundary, and the hard-link
    pair must be kept in one shard)."""
    tree = make_hard_tree(tmp_path / "tree")
    for n in range(24):  # enough members for nine shards
        (tree / f"usr/share/f{n:02}").parent.mkdir(parents=True, exist_ok=True)
        (tree / f"usr/share/f{n:02}").write_bytes(os.urandom(1000 * n))
    # A default ACL on the directory its files are in, which they did not inherit: every
    # shard carries that directory, so one shard's tar may set it while another still makes
    # files there, and the files must still come out with their own ACLs only.
    subprocess.run(["setfacl", "-d", "-m", "u:2000:rwx,g:3000:rx", str(tree / "usr/share")], check=True)
    out = tmp_path / "out"
    out.mkdir()
    made = create_cli(tree, out / "root.tar.zst", *shards)
    assert made.returncode == 0, made.stderr
    assert "socket" not in made.stderr  # a socket is runtime state: silently not packed
    dest = tmpfs("newroot", "256m")
    run = tmp_path / "run"
    run.mkdir()
    image = out / "root.tar.zst"
    pin = (out / "root.tar.zst.pin").read_text().strip()  # what the boot pins
    r = run_sh(
        ["dash"],
        f'f=$(tr_format "{image}"); echo fmt=$f; tr_unpack "{image}" "$f" "{dest}" "{pin}"; echo rc=$?',
        {"TR_RUN": str(run)},
    )
    assert f"fmt={fmt}" in r.stdout and "rc=0" in r.stdout, r.stderr
    skip = ("srv/sock/control", "etc/fstab", "dev/console")
    before = tree_metadata(tree, skip=skip)
    after = tree_metadata(dest, skip=skip)
    assert after == before
    assert (dest / "dev").is_dir() and list((dest / "dev").iterdir()) == []
    assert not (dest / "srv/sock/control").exists()
    meta = after[b"home/user/data"]
    assert "system.posix_acl_access" in meta["xattrs"] and meta["xattrs"]["user.note"] == b"kept"
    assert "system.posix_acl_default" in after[b"usr/share"]["xattrs"]
    assert not any("system.posix_acl_access" in after[b"usr/share/f%02d" % n]["xattrs"] for n in range(24))
    assert "security.capability" in after[b"bin/ping"]["xattrs"]
    assert after[b"var/lib/sparse.img"]["sparse"]
    assert after[b"home/user/data"]["hardlinks"] == [b"home/user/data", b"home/user/data.hardlink"]
    assert stat.S_ISBLK(after[b"srv/nodes/loop9"]["mode"]) and after[b"srv/nodes/loop9"]["rdev"] == os.makedev(7, 9)
    data = image.read_bytes()
    if fmt == "sharded":  # the pin is the index frame's sha256: the index lists every shard's
        frame = 8 + int.from_bytes(data[4:8], "little")
        sha = hashlib.sha256(data[:frame]).hexdigest()
        count = sum(line.startswith("part files") for line in data[8:frame].decode().splitlines())
        assert count == (9 if shards else 2)  # --shards auto: at least two
    else:
        sha = hashlib.sha256(data).hexdigest()
    assert pin == sha
    # FILE.sha256 is the whole file's, in the form sha256sum -c reads, whatever the layout.
    assert (out / "root.tar.zst.sha256").read_text() == f"{hashlib.sha256(data).hexdigest()}  root.tar.zst\n"
    checked = subprocess.run(["sha256sum", "-c", "--strict", "root.tar.zst.sha256"], cwd=out, capture_output=True)
    assert checked.returncode == 0 and checked.stdout == b"root.tar.zst: OK\n", checked
    assert made.stdout.count(" pin ") == 1 and ("the same" in made.stdout) == (fmt != "sharded"), made.stdout


def test_fstab_is_rewritten_in_the_image_only(tmp_path, tmpfs):
    tree = make_hard_tree(tmp_path / "tree")
    host_fstab = (tree / "etc/fstab").read_text()
    images = tree / "srv/images"
    images.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(images)], check=True)
    try:
        made = create_cli(tree, images / "root.tar.zst")
        assert made.returncode == 0, made.stderr
        # The default, sharded image read by standard tools: one zstd stream of tar archives.
        stream = subprocess.run(["zstd", "-dc", str(images / "root.tar.zst")], capture_output=True, check=True).stdout
        listing = subprocess.run(
            ["tar", "-t", "--ignore-zeros"], input=stream, capture_output=True, check=True
        ).stdout.decode()
        fstab = subprocess.run(
            ["tar", "-xO", "--ignore-zeros", "etc/fstab"], input=stream, capture_output=True, check=True
        ).stdout.decode()
    finally:
        subprocess.run(["umount", str(images)], check=True)
    assert (tree / "etc/fstab").read_text() == host_fstab  # the tree is never changed
    lines = fstab.splitlines()
    assert "#UUID=1111 / ext4 defaults 0 1" in lines
    assert "#UUID=2222 /srv/images ext4 ro 0 2" in lines
    assert "tmpfs /tmp tmpfs defaults 0 0" in lines
    assert sum(line.startswith("# tmpfs-root: commented out") for line in lines) == 2
    assert "./srv/images/root.tar.zst" not in listing  # the output and its folder are not packed
    assert listing.count("etc/fstab") == 1


def test_excludes_and_volatile_trees(tmp_path):
    tree = make_test_rootfs(tmp_path / "tree")
    for rel in (
        "proc/1/status",
        "sys/kernel/x",
        "run/lock/y",
        "tmp/scratch",
        "var/cache/apt/a.deb",
        "var/log/syslog.log",
        "var/lib/keep",
    ):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    swap = tree / "swapfile"
    swap.write_bytes(b"\0" * 4096)
    (tree / "etc/fstab").write_text("/swapfile none swap sw 0 0\n")
    out = tmp_path / "root.tar"
    made = create_cli(tree, out, "--format=tar", "--exclude=/var/cache/*", "--exclude=*.log")
    assert made.returncode == 0, made.stderr
    names = set(subprocess.run(["tar", "-tf", str(out)], capture_output=True, text=True).stdout.split())
    for gone in (
        "./proc/1/status",
        "./sys/kernel/x",
        "./run/lock/y",
        "./tmp/scratch",
        "./var/cache/apt/a.deb",
        "./var/log/syslog.log",
        "./swapfile",
    ):
        assert gone not in names, gone
    for kept in ("./proc/", "./sys/", "./run/", "./tmp/", "./var/lib/keep", "./etc/marker"):
        assert kept in names, kept


@pytest.mark.slow  # packs 128 MB with xz -9 to have time to kill it
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_create_leaves_nothing_at_the_output_name(tmp_path, sig):
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(8):
        (tree / f"blob{i}").write_bytes(os.urandom(16 << 20))
    out = tmp_path / "out/root.tar.xz"
    out.parent.mkdir()
    temp = tmp_path / "tmp"  # its staging directory: here, not in this machine's /tmp
    temp.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tui",
            "image",
            "create",
            f"--from={tree}",
            f"--output={out}",
            "--format=xz",
            "--level=9",
        ],
        env=dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(temp)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def partial():  # written under a name nobody can predict, beside the output
        found = list(out.parent.glob(".root.tar.xz.*.partial"))
        return found[0] if found else out.with_name(".root.tar.xz.none.partial")

    for _ in range(100):
        if partial().exists() and partial().stat().st_size > 0:
            break
        time.sleep(0.1)
    assert partial().exists(), "create never started writing"
    children = [int(c) for c in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]
    assert children, "no tar and compressor running"
    proc.send_signal(sig)
    proc.wait(timeout=60)

    def alive(pid):
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    for _ in range(100):  # tar and the compressor die with it, even after a SIGKILL
        if not any(alive(c) for c in children):
            break
        time.sleep(0.1)
    assert not any(alive(c) for c in children), "a child outlived image create"
    assert not out.exists() and not out.with_name("root.tar.xz.sha256").exists()
    if sig == signal.SIGINT:  # a catchable interruption also removes the partial file and its staging
        assert not partial().exists()
        assert list(temp.iterdir()) == []
        assert "Traceback" not in proc.stderr.read().decode()
    else:  # nothing ran to remove it: the next run does, once it is old enough to be sure
        left = partial()
        assert left.exists()
        os.utime(left, (time.time() - 3600, time.time() - 3600))
        small = tmp_path / "small"
        small.mkdir()
        (small / "f").write_text("x")
        again = create_cli(small, out, "--format=xz")
        assert again.returncode == 0, again.stderr
        assert not left.exists()
        assert f"note: removed '{left.name}' (" in again.stderr
        assert sorted(p.name for p in out.parent.iterdir()) == ["root.tar.xz", "root.tar.xz.pin", "root.tar.xz.sha256"]


def test_what_create_says_beside_the_image_is_bounded():
    """The CLI and the TUI show the same lines: the partial files removed, then tar's first
    twenty warnings and how many more there were (a live root can give thousands)."""
    from tui.image_create import Created

    made = Created("x", 1, "0" * 64, 1, [f"./f{n}: file changed as we read it" for n in range(25)], ["removed 'y'"])
    lines = made.notes()
    assert lines[0] == "note: removed 'y'"
    assert lines[1:21] == [f"warning: tar: ./f{n}: file changed as we read it" for n in range(20)]
    assert lines[21:] == ["warning: tar: 5 more warnings"]
    assert Created("x", 1, "0" * 64, 1, ["w"]).notes() == ["warning: tar: w"]
    # tar's words hold the tree's names: shown literally, a terminal's escapes written out
    hostile = Created("x", 1, "0" * 64, 1, ["./a\x1b[2Jb\nc: file changed as we read it"]).notes()
    assert hostile == ["warning: tar: ./a\\x1b[2Jb\\nc: file changed as we read it"]


def test_a_removed_partial_file_is_named_literally_once(tmp_path):
    """An output name with a backslash: the note shows it escaped once (as every message
    shows an untrusted name), not escaped again on the way out. (A control character is
    refused in --output: test_an_output_name_with_a_control_character_is_refused_in_one_line.)"""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x")
    out = tmp_path / "out/we\\ird.tar.zst"
    out.parent.mkdir()
    stale = out.parent / f".{out.name}.0123456789ab.partial"
    stale.write_bytes(b"\0" * 1024)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    made = create_cli(tree, out)
    assert made.returncode == 0, made.stderr
    assert not stale.exists()
    assert "note: removed '.we\\\\ird.tar.zst.0123456789ab.partial' (1.0K)" in made.stderr, made.stderr


def test_a_run_removes_partial_files_only_when_they_are_stale_and_its_own(tmp_path):
    """What a killed `image create` left beside the output goes at the next run; what may
    still be written (locked by a live run, or too young to tell), what is not a partial
    file of this output, and what a symbolic link points to, stay."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x")
    out = tmp_path / "out/root.tar.zst"
    out.parent.mkdir()
    old = time.time() - 3600

    def partial(name, age=old):
        path = out.parent / name
        path.write_bytes(b"\0" * 4096)
        os.utime(path, (age, age))
        return path

    stale = partial(".root.tar.zst.0123456789ab.partial")
    fifo = out.parent / ".root.tar.zst.eeeeeeeeeeee.partial"  # opened without blocking, left
    os.mkfifo(fifo)
    os.utime(fifo, (old, old))
    folder = out.parent / ".root.tar.zst.ffffffffffff.partial"
    folder.mkdir()
    (folder / "inside").write_text("kept")
    os.utime(folder, (old, old))
    young = partial(".root.tar.zst.aaaaaaaaaaaa.partial", age=time.time())
    locked = partial(".root.tar.zst.bbbbbbbbbbbb.partial")
    other = partial(".other.tar.zst.cccccccccccc.partial")
    odd = partial(".root.tar.zst.not-a-token.partial")
    target = partial("precious")
    link = out.parent / ".root.tar.zst.dddddddddddd.partial"
    link.symlink_to(target)
    os.utime(link, (old, old), follow_symlinks=False)
    holder = subprocess.Popen(  # a live run holding its lock (its own open file, not ours)
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
            "print(flush=True); sys.stdin.read()",
            str(locked),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"\n"
        made = create_cli(tree, out)
    finally:
        holder.communicate(b"")
    assert made.returncode == 0, made.stderr
    assert not stale.exists()
    assert made.stderr.count("note: removed") == 1, made.stderr
    assert f"note: removed '{stale.name}' (4.0K) beside the output, left by an interrupted image create" in made.stderr
    for kept in (young, locked, other, odd, target):
        assert kept.read_bytes() == b"\0" * 4096, kept
    assert link.is_symlink()
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and (folder / "inside").read_text() == "kept"


def test_refuses_when_the_output_filesystem_lacks_room(tmp_path, tmpfs):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "blob").write_bytes(os.urandom(8 << 20))
    small = tmpfs("small", "1m")
    made = create_cli(tree, small / "root.tar.zst")
    assert made.returncode == 2
    assert "--output" in made.stderr and "needs about" in made.stderr and "free on" in made.stderr
    assert list(small.iterdir()) == []


@pytest.mark.parametrize(
    "args,field",
    [
        (["--from=/nonexistent"], "--from"),
        (["--format=rar"], "--format"),
        (["--format=gz", "--level=12"], "--level"),
        (["--format=tar", "--level=3"], "--level"),
        (["--with-mount=/nothing-mounted-here"], "--with-mount"),
    ],
)
def test_create_bad_input(tmp_path, args, field):
    tree = make_test_rootfs(tmp_path / "tree")
    argv = [f"--from={tree}", *args] if not args[0].startswith("--from") else args
    r = run_cli("image", "create", f"--output={tmp_path}/o.tar.zst", *argv)
    assert r.returncode == 2 and field in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "o.tar.zst").exists()


def test_create_will_not_replace_without_yes(tmp_path):
    tree = make_test_rootfs(tmp_path / "tree")
    (tmp_path / "o.tar").write_text("previous")
    r = create_cli(tree, tmp_path / "o.tar", "--format=tar")
    assert r.returncode == 2 and "--yes" in r.stderr
    assert (tmp_path / "o.tar").read_text() == "previous"
    assert create_cli(tree, tmp_path / "o.tar", "--format=tar", "--yes").returncode == 0


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packed")
    root = make_test_rootfs(tmp / "root")
    tar = pack(root, tmp / "ref.tar", "tar")
    files = len(subprocess.run(["tar", "-tf", str(tar)], capture_output=True, text=True).stdout.split())
    return tmp, root, tar.stat().st_size, files


@pytest.mark.parametrize(
    "fmt,name", [("tar", "tar"), ("gz", "gzip"), ("xz", "xz"), ("zst", "zstd"), ("bz2", "bzip2"), ("lz4", "lz4")]
)
def test_inspect_each_format(packed, fmt, name):
    tmp, root, tar_size, files = packed
    archive = pack(root, tmp / f"root.{fmt}", fmt)
    r = run_cli("image", "inspect", archive, "--json", "--sha256")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["format"] == name and info["files"] == files
    assert info["uncompressed"] == tar_size and info["compressed"] == archive.stat().st_size
    assert info["sha256"] == info["pin"] == hashlib.sha256(archive.read_bytes()).hexdigest()  # one stream


def test_inspect_truncated_and_non_archives(packed, tmp_path):
    tmp, root, _, _ = packed
    archive = pack(root, tmp_path / "root.zst", "zst")
    data = archive.read_bytes()
    truncated = tmp_path / "truncated.zst"
    truncated.write_bytes(data[: len(data) // 2])
    r = run_cli("image", "inspect", truncated)
    assert r.returncode == 2 and "truncated or corrupt zstd archive" in r.stderr
    assert r.stderr.count("\n") == 1
    junk = tmp_path / "notes.tar.zst"
    junk.write_text("not an archive, whatever its name says\n")
    r = run_cli("image", "inspect", junk)
    assert r.returncode == 2 and "not an archive (by its first bytes)" in r.stderr
    r = run_cli("image", "inspect", tmp_path / "absent.tar")
    assert r.returncode == 2 and "cannot be read" in r.stderr


@pytest.mark.parametrize("usize", [1 << 20, 300 << 20, 700 << 20])
def test_recommended_size_is_what_the_module_chooses(tmp_path, usize):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1048576 kB\nMemAvailable: 900000 kB\n")
    r = run_sh(["dash"], f'tr_choose_size "" {usize}', {"TR_MEMINFO": str(meminfo)})
    assert int(r.stdout.split()[0]) == recommended_size(usize, 1 << 30)


def test_find_archives_goes_by_magic_bytes_not_names(tmp_path):
    from tui.images import find_archives

    (tmp_path / "images/old").mkdir(parents=True)
    (tmp_path / ".snapshots").mkdir()
    (tmp_path / "lost+found").mkdir()
    (tmp_path / "a/b/c/d").mkdir(parents=True)
    subprocess.run(["tar", "-C", "/etc", "-czf", tmp_path / "images/root.backup", "hostname"], check=True)
    subprocess.run(["tar", "-C", "/etc", "-cf", tmp_path / "images/old/r.tar", "hostname"], check=True)
    for hidden in (".snapshots/x.tar.gz", "lost+found/x.tar.gz", "a/b/c/d/deep.tar.gz"):
        shutil.copy(tmp_path / "images/root.backup", tmp_path / hidden)
    (tmp_path / "images/rootfs.tar.zst").write_text("not really zstd")
    found = find_archives(tmp_path)
    assert [(p, f) for p, f, _ in found] == [("images/old/r.tar", "tar"), ("images/root.backup", "gzip")]


def test_the_images_volume_is_commented_out_wherever_it_is_mounted():
    """The output's volume, mounted outside the packed tree, named in the tree's fstab by its
    UUID (or label, partuuid, device): the image's fstab does not mount it again."""
    from tui.image_create import images_volume_ids, rewrite_fstab

    out = Path("/proc/self/cwd")  # any path: its st_dev decides, here the probe is fake
    st = os.stat(out.parent)
    mountinfo = f"36 1 {os.major(st.st_dev)}:{os.minor(st.st_dev)} / /srv/images rw - ext4 /dev/sdz1 rw\n"
    probe = {"UUID": "3333-aaaa", "LABEL": "IMAGES", "PART_ENTRY_UUID": "p-9", "PART_ENTRY_NAME": "imgs"}
    ids = images_volume_ids(out, mountinfo, probe=lambda dev: probe if dev == "/dev/sdz1" else {})
    assert {
        "/dev/sdz1",
        "UUID=3333-aaaa",
        "LABEL=IMAGES",
        "PARTUUID=p-9",
        "PARTLABEL=imgs",
        "/dev/disk/by-uuid/3333-aaaa",
    } <= ids
    fstab = (
        "UUID=1111 / ext4 defaults 0 1\nUUID=3333-aaaa /data ext4 ro 0 2\nLABEL=IMAGES /mnt/i ext4 ro 0 2\n"
        "/dev/sdz2 /other ext4 defaults 0 2\n"
    )
    lines = rewrite_fstab(fstab, None, ids).splitlines()
    assert "#UUID=3333-aaaa /data ext4 ro 0 2" in lines and "#LABEL=IMAGES /mnt/i ext4 ro 0 2" in lines
    assert "/dev/sdz2 /other ext4 defaults 0 2" in lines and "#UUID=1111 / ext4 defaults 0 1" in lines


@pytest.mark.parametrize("fmt", ["zst", "gz", "lz4", "xz", "tar"])
def test_image_create_records_the_size_the_boot_reads(tmp_path, fmt):
    """The exact uncompressed size is known without reading the image: from the size image
    create records (gzip, zstd, lz4), xz's index, or a tar's own size; the boot's shell reads
    the same number, and every decompressor still reads the image."""
    from tui.image_create import create, make_plan
    from tui.images import cheap_uncompressed_size, detect_format, inspect

    tree = make_test_rootfs(tmp_path / "tree")
    (tree / "blob").write_bytes(os.urandom(200_000))
    out = tmp_path / f"root.tar.{fmt}"
    create(make_plan(str(tree), str(out), fmt))
    size = cheap_uncompressed_size(out)
    info = inspect(out)
    assert size.exact and size.uncompressed == info.uncompressed, (size, info)
    name = detect_format(out)
    r = run_sh(["dash"], f'tr_uncompressed_size "{out}" {name}')
    assert r.stdout.strip() == str(info.uncompressed), r.stderr
    if fmt in ("gz", "zst", "lz4"):  # the stand-alone decompressors, as the boot runs them
        tool = {"gz": ["gzip", "-dc"], "zst": ["zstd", "-dcq"], "lz4": ["lz4", "-dcq"]}[fmt]
        with open(out, "rb") as f:
            data = subprocess.run(tool, stdin=f, capture_output=True, check=True).stdout
        assert len(data) == info.uncompressed


@pytest.mark.parametrize(
    "name,args,says",
    [
        ("o.tar.gz", [], "accepted for --format zst: a name ending .tar.zst, .tzst, .zst"),
        ("o.tar.zst", ["--format=xz"], "accepted for --format xz: a name ending .tar.xz, .txz, .xz"),
        ("rootfs.img", ["--format=tar"], "accepted for --format tar: a name ending .tar"),
    ],
)
def test_an_output_whose_suffix_is_not_its_format_is_refused(tmp_path, name, args, says):
    tree = make_test_rootfs(tmp_path / "tree")
    r = create_cli(tree, tmp_path / name, *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--output" in r.stderr and says in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def test_an_output_in_the_tree_leaves_out_only_itself_or_is_refused(tmp_path):
    """The output's folder in the tree is packed (only the image and its sidecars are not);
    holding anything else, it is refused unless --exclude says to leave it out."""
    tree = make_test_rootfs(tmp_path / "tree")
    (tree / "images").mkdir()
    out = tree / "images/r.tar"
    first = create_cli(tree, out, "--format=tar")
    assert first.returncode == 0, first.stderr
    names = subprocess.run(["tar", "-tf", str(out)], capture_output=True, text=True, check=True).stdout.split()
    assert "./images/" in names and not [n for n in names if n.startswith("./images/r.tar")]
    (tree / "images/old.tar").write_text("an older image")
    refused = create_cli(tree, out, "--format=tar", "--yes")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "in '/images', which holds 1 other entry (e.g. 'old.tar')" in refused.stderr
    assert "--exclude '/images/*'" in refused.stderr
    again = create_cli(tree, out, "--format=tar", "--yes", "--exclude=/images/*")
    assert again.returncode == 0, again.stderr
    names = subprocess.run(["tar", "-tf", str(out)], capture_output=True, text=True, check=True).stdout.split()
    assert "./images/" in names and "./images/old.tar" not in names


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sighup_cleans_up_as_sigterm_does(tmp_path, sig):
    """A dropped ssh session (SIGHUP) stops tar and xz and removes the partial file, with the
    same exit status and line as SIGTERM."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "blob").write_bytes(os.urandom(24 << 20))
    out = tmp_path / "out/root.tar.xz"
    out.parent.mkdir()
    argv = [sys.executable, "-m", "tui", "image", "create", f"--from={tree}", f"--output={out}", "--format=xz"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(200):
        if list(out.parent.glob(".root.tar.xz.*.partial")):
            break
        time.sleep(0.05)
    children = []
    for _ in range(100):  # tar and xz started
        children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
        if len(children) >= 2:
            break
        time.sleep(0.05)
    assert len(children) >= 2, "tar and xz never ran"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    from tui.errors import EXIT_INTERRUPTED

    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "image create was cancelled; nothing was written" in err.decode() and b"Traceback" not in err
    assert list(out.parent.iterdir()) == []
    assert not any(
        os.path.exists(f"/proc/{c}") and "Z" not in open(f"/proc/{c}/stat").read().split()[2] for c in children
    )


def test_pace_falls_while_nothing_moves():
    """The rate is over the last seconds up to now: it falls and the time left grows while
    nothing moves, and the time left is unknown once all is read but not yet written."""
    from tui.image_create import Pace

    now = [0.0]
    pace = Pace(clock=lambda: now[0])
    for t in range(11):  # 10 MB/s for 10 s
        now[0] = float(t)
        pace.update(t * 10_000_000, 1_000_000_000)
    rate, left = pace.rate(), pace.left()
    assert rate == pytest.approx(10_000_000) and left == pytest.approx(90)
    now[0] = 15.0  # 5 s with nothing taken
    pace.update(100_000_000, 1_000_000_000)
    assert pace.rate() == pytest.approx(100_000_000 / 15) and pace.left() > left
    assert "the compressor has taken nothing for 5 s" in pace.text()
    now[0] = 16.0
    pace.update(1_000_000_000, 1_000_000_000)
    assert pace.left() is None and "compressing the rest" in pace.text()


def test_progress_keeps_coming_while_xz_is_stalled(tmp_path):
    """A real xz, stopped: progress is still reported every half second, so the pace shown
    falls, instead of the last rate staying on screen."""
    from tui.image_create import Pace, create, make_plan
    from tui.tar_stream import TICK

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "blob").write_bytes(os.urandom(12 << 20))
    calls: list[tuple[float, int]] = []
    pace = Pace()
    stopped: list[int] = []

    def progress(done, total, files, files_total):
        calls.append((time.monotonic(), done))
        pace.update(done, total)
        if not stopped and done >= 4 << 20:  # stop xz once it has moved (in the packing thread)
            for task in os.listdir("/proc/self/task"):
                for pid in open(f"/proc/self/task/{task}/children").read().split():
                    if open(f"/proc/{pid}/comm").read().strip() == "xz":
                        os.kill(int(pid), signal.SIGSTOP)
                        stopped.append(int(pid))

    import threading

    worker = threading.Thread(
        target=create, args=(make_plan(str(tree), str(tmp_path / "r.tar.xz"), "xz", level=0, mountinfo=""), progress)
    )
    worker.start()
    for _ in range(100):
        if stopped:
            break
        time.sleep(0.05)
    assert stopped, "xz never ran"
    time.sleep(1.5)
    rate_before, start = pace.rate(), time.monotonic()
    time.sleep(3)
    during = [c for c in calls if c[0] >= start]
    rate_after = pace.rate()
    os.kill(stopped[0], signal.SIGCONT)
    worker.join(timeout=60)
    assert len(during) >= int(3 / TICK) - 2, during
    assert len({done for _, done in during}) == 1  # nothing moved: xz held still
    assert rate_before is not None and rate_after is not None and rate_after < rate_before
    assert (tmp_path / "r.tar.xz.sha256").exists()


def test_a_partial_file_replaced_while_it_is_written_is_never_hashed_nor_kept(tmp_path):
    """In a folder others may write in, someone swaps the partial file for one of theirs while
    tar writes: the pin and FILE.sha256 must not vouch for their file. The hash is taken
    through the descriptor written, the file at the name is checked to be that one before
    and after the rename, and the run fails leaving no image and no sidecar."""
    from tui.image_create import CreateFailed, create, make_plan

    tree = make_test_rootfs(tmp_path / "tree")
    (tree / "usr/blob").write_bytes(os.urandom(1 << 20))
    out = tmp_path / "shared"
    out.mkdir(mode=0o777)
    theirs = out / "theirs"
    theirs.write_bytes(b"someone else's bytes\n")
    swapped = []

    def progress(done, total, files, ftotal):
        if not swapped:
            [partial] = [p for p in out.iterdir() if p.name.endswith(".partial")]
            os.replace(theirs, partial)  # the name now holds their file; ours is unlinked, still open
            swapped.append(partial)

    with pytest.raises(CreateFailed, match=r"was replaced by another while it was written"):
        create(make_plan(str(tree), str(out / "rootfs.tar.gz"), "gz"), progress=progress)
    assert swapped and sorted(p.name for p in out.iterdir()) == [], list(out.iterdir())


def test_an_output_reached_through_a_link_into_the_tree_is_seen_inside_it(tmp_path):
    """/images -> srv/images inside the packed tree: the output's folder is inside the tree
    although its path says otherwise. Alone there, the image leaves itself (and its partial
    file) out; beside another file, it is refused as the direct path is."""
    from tui.image_create import CreateError, create, make_plan

    tree = make_test_rootfs(tmp_path / "tree")
    (tree / "srv/images").mkdir(parents=True)
    (tree / "images").symlink_to("srv/images")
    made = create(make_plan(str(tree), str(tree / "images/root.tar.gz"), "gz"))
    members = subprocess.run(["tar", "-tzf", made.path], capture_output=True, text=True, check=True).stdout
    assert "./srv/images/" in members and "./images" in members
    assert not [m for m in members.splitlines() if m.startswith("./srv/images/") and m != "./srv/images/"], members
    (tree / "srv/images/older.tar.gz").write_bytes(b"an older image\n")
    with pytest.raises(CreateError, match=r"is inside the tree packed, in '/srv/images'"):
        make_plan(str(tree), str(tree / "images/root2.tar.gz"), "gz")


def test_an_output_name_with_a_control_character_is_refused_in_one_line(tmp_path):
    r = run_cli("image", "create", "--from", tmp_path, "--output", str(tmp_path / "a\nb.tar.gz"), "--format", "gz")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--output" in r.stderr and "accepted: a printable file name" in r.stderr
    assert list(tmp_path.iterdir()) == []
