"""The sharded image format: how `image create` splits a tree, and how the boot's unpack
(tr_unpack in tmpfs-root-img-lib.sh, under dash and busybox sh) and `image inspect` read it —
the same damage refused the same way by both, with one line naming the part at fault."""

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.infra import run_cli
from tests.test_module_shell import SHELLS, SOURCE_LIBS, run_sh
from tui import image_index
from tui.image_create import Entry, create, make_plan
from tui.image_shards import auto_shards, partition
from tui.images import ImageError, inspect


def small_tree(root: Path, files: int = 40) -> Path:
    """Files of growing sizes in a few directories, a hard-link pair far apart in walk
    order, a symbolic link to a directory, an empty directory."""
    for n in range(files):
        f = root / f"d{n % 4}/sub/f{n:02}"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(os.urandom(2000 * (n + 1)))
    os.link(root / "d0/sub/f00", root / "d3/sub/zz-link")
    os.symlink("../d1", root / "d2/to-d1")
    (root / "empty").mkdir()
    (root / "d1").chmod(0o750)
    os.utime(root / "d1", (1_000_000_000, 1_000_000_000))
    return root


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("shards")
    tree = small_tree(tmp / "tree")
    out = tmp / "root.tar.zst"
    create(make_plan(str(tree), str(out), "zst", shards=5))
    return out


def index_of(path: Path) -> image_index.Index:
    fd = os.open(path, os.O_RDONLY)
    try:
        return image_index.read(fd)
    finally:
        os.close(fd)


def unpack(shell, image: Path, dest: Path, run: Path, sha: str = "", env: dict | None = None):
    run.mkdir(exist_ok=True)
    dest.mkdir(exist_ok=True)
    return run_sh(
        shell,
        f'f=$(tr_format "{image}"); tr_unpack "{image}" "$f" "{dest}" "{sha}"; echo "rc=$?"; cat "{run}/why"',
        {"TR_RUN": str(run), "TR_PROGRESS_EVERY": "0.05", **(env or {})},
    )


def path_without_openssl(where: Path) -> dict:
    """A PATH with every command of this machine but openssl, as an initramfs without it has:
    the pinned sha256 is then sha256sum's."""
    where.mkdir()
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        for tool in Path(d).iterdir():
            if tool.name != "openssl" and not (where / tool.name).exists():
                (where / tool.name).symlink_to(tool)
    return {"PATH": str(where)}


#: The hasher each tool writes its line with: openssl where it is, else sha256sum.
HASHERS = {"openssl": ("*stdin", None), "sha256sum": ("  -", path_without_openssl)}


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            key = str(p.relative_to(root))
            out[key] = (st.st_mode, st.st_uid, st.st_nlink, st.st_size, int(st.st_mtime) if p.is_dir() else None)
            if p.is_file() and not p.is_symlink():
                out[key] += (hashlib.sha256(p.read_bytes()).hexdigest(),)
    return out


def unpacked(shell, root: Path) -> dict:
    """snapshot() of *root* as far as *shell*'s tar restores it: busybox's own tar (in
    busybox sh) sets no directory times."""
    got = snapshot(root)
    return {k: v[:4] for k, v in got.items()} if shell[0] == "busybox" else got


# ------------------------------------------------------------------ splitting
def test_partition_balances_bytes_and_keeps_hard_links_together():
    entries = [Entry(f"./f{n}", False, 1000 + n) for n in range(100)]
    entries[3] = Entry("./f3", False, 1003, link=(1, 7))
    entries[97] = Entry("./f97", False, 1097, link=(1, 7))
    entries.insert(0, Entry(".", True, 512))
    shards, dirs = partition(entries, 4)
    assert [e.name for e in dirs] == ["."]
    assert len(shards) == 4
    weights = [sum(e.weight for e in s) for s in shards]
    assert max(weights) / min(weights) < 1.1
    holder = [i for i, s in enumerate(shards) if any(e.name == "./f3" for e in s)]
    assert holder and any(e.name == "./f97" for e in shards[holder[0]])
    assert sorted(e.name for s in shards for e in s) == sorted(e.name for e in entries if not e.is_dir)


def part_members(image: Path, part: image_index.Part) -> list[tarfile.TarInfo]:
    """The members of one part of *image*, in the order its tar holds them."""
    with open(image, "rb") as f:
        f.seek(part.offset)
        data = f.read(part.length)
    tar = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return t.getmembers()


def test_each_shard_makes_the_directories_its_files_are_in(tmp_path):
    """Shards unpack side by side, and GNU tar, finding a member's parent missing, makes it
    and tries again only if it made a directory itself: when another shard's tar made it
    in between, the member was lost and the boot failed at random. So each shard holds the
    directories on its members' paths, parents first, before them (a hard link far from its
    group's first name, and the image's rewritten fstab, included); counts name each member
    once."""
    tree = small_tree(tmp_path / "tree")
    (tree / "etc").mkdir()
    (tree / "etc/fstab").write_text("/dev/vda1 / ext4 defaults 0 1\n")  # rewritten into shard 1
    out = tmp_path / "root.tar.zst"
    made = create(make_plan(str(tree), str(out), "zst", shards=5))
    index = index_of(out)
    held = []
    for n, part in enumerate(index.shards, 1):
        made_dirs: set[str] = set()
        for m in part_members(out, part):
            path = m.name.removeprefix("./").split("/")
            missing = [a for a in ("/".join(path[:i]) for i in range(1, len(path))) if a not in made_dirs]
            assert not missing, f"shard {n}: {m.name} comes before its parent {missing[0]}"
            assert not m.issym(), f"shard {n}: {m.name}"
            if m.isdir():
                made_dirs.add("/".join(path))
            else:
                held.append("/".join(path))
        assert made_dirs, f"shard {n} holds no directory"
    assert "d3/sub/zz-link" in held and "etc/fstab" in held
    members = sum(len(files) + len(dirs) for _, dirs, files in os.walk(tree)) + 1  # and "." itself
    assert made.files == members
    assert inspect(out).files == members


def test_auto_shards_follows_the_tree_size():
    assert auto_shards(1 << 20) == 2
    assert auto_shards(800 << 20) == 25
    assert auto_shards(1 << 40) == 64


def test_the_index_records_every_part_and_standard_tools_read_the_file(image, tmp_path):
    index = index_of(image)
    assert len(index.shards) == 5 and index.parts[-1].kind == "dirs"
    data = image.read_bytes()
    assert index.digest == hashlib.sha256(data[: index.frame]).hexdigest()
    # The boot's pin is the index's, in FILE.pin; FILE.sha256 is the whole file's, where
    # sha256sum -c reads it (the index's there would make it fail).
    assert (image.parent / "root.tar.zst.pin").read_text() == index.digest + "\n"
    assert (image.parent / "root.tar.zst.sha256").read_text().split()[0] == hashlib.sha256(data).hexdigest()
    checked = subprocess.run(["sha256sum", "-c", "--strict", "root.tar.zst.sha256"], cwd=image.parent)
    assert checked.returncode == 0
    for part in index.parts:
        assert hashlib.sha256(data[part.offset : part.offset + part.length]).hexdigest() == part.sha256
    dest = tmp_path / "std"
    dest.mkdir()
    subprocess.run(f'zstd -dc "{image}" | tar -x --ignore-zeros -C "{dest}"', shell=True, check=True)
    assert snapshot(dest) == snapshot(image.parent / "tree")


# ------------------------------------------------------------------ the boot's unpack
@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize("pinned", [False, True], ids=["unpinned", "pinned"])
def test_unpack_in_parallel_gives_the_tree(image, tmp_path, shell, pinned):
    index = index_of(image)
    r = unpack(shell, image, tmp_path / "dest", tmp_path / "run", index.digest if pinned else "")
    assert "rc=0" in r.stdout, r.stdout + r.stderr
    assert "sharded: 5 shards" in r.stderr
    assert ("sha256 verified" in r.stderr) == pinned
    assert unpacked(shell, tmp_path / "dest") == unpacked(shell, image.parent / "tree")
    # pinned, every part went through a buffer of its own, verified, then removed
    assert not list((tmp_path / "run/shard").glob("*.buf"))
    assert len(list((tmp_path / "run/shard").glob("[0-9]*.dd"))) == (6 if pinned else 1 if shell[0] == "dash" else 6)
    per_part = {p.name for p in (tmp_path / "run/shard").glob("[0-9]*.decomp")}
    if shell[0] == "busybox":  # its tar stops at the first end of archive: shard by shard
        assert len(per_part) == 6
    else:  # pinned or not, one zstd and one tar per worker; the directory part on its own
        assert list((tmp_path / "run/shard").glob("run.*.decomp")) and per_part == {"6.decomp"}


def extra_records(run: Path) -> set[int]:
    """What each GNU tar of the last unpack read beyond its bytes of tar (--totals less the
    index's sizes): one record, of the size it read in."""
    parts = [line.split() for line in (run / "parts").read_text().splitlines()]
    shards = sum(1 for f in parts if f[0] == "files")
    firsts = sorted(int(err.name.split(".")[1]) for err in run.glob("shard/run.*.tar.err"))
    extra = set()
    for first, end in zip(firsts, firsts[1:] + [shards + 1], strict=True):  # runs of consecutive shards
        said = (run / f"shard/run.{first}.tar.err").read_text().splitlines()
        read = int(next(line for line in said if line.startswith("Total bytes read")).split()[3])
        extra.add(read - sum(int(f[3]) for f in parts[first - 1 : end - 1]))
    return extra


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize("record", [32768, 10240], ids=["made-now", "made-before"])
def test_parts_are_read_in_32k_records_and_older_images_still_unpack(tmp_path, monkeypatch, shell, record):
    """image create makes every shard of whole 160 KiB records: GNU tar at boot reads them 32 KiB
    at a time (a third of the reads from the pipe), and modules made before, which read 10 KiB,
    count them exactly too. Images made before (shards of 10 KiB records) still unpack, read
    10 KiB at a time; busybox's tar (no records) reads both."""
    from tui import image_shards

    if record == 10240:  # as image create made them before
        monkeypatch.setattr(image_shards, "SHARD_RECORD", 10240)
    tree = small_tree(tmp_path / "tree")
    image = tmp_path / "root.tar.zst"
    create(make_plan(str(tree), str(image), "zst", shards=5))
    sizes = [p.uncompressed for p in index_of(image).parts if p.kind == "files"]
    if record == 32768:
        assert all(size % 163840 == 0 for size in sizes), sizes
    else:
        assert any(size % 32768 for size in sizes), sizes
    run = tmp_path / "run"
    r = unpack(shell, image, tmp_path / "dest", run)
    assert "rc=0" in r.stdout, r.stdout + r.stderr
    assert unpacked(shell, tmp_path / "dest") == unpacked(shell, tree)
    if shell[0] != "busybox":
        assert extra_records(run) == {record}


def test_progress_adds_up_the_shards(tmp_path):
    tree = small_tree(tmp_path / "tree", files=200)
    image = tmp_path / "root.tar.zst"
    create(make_plan(str(tree), str(image), "zst", shards=3))
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "dest").mkdir()
    r = run_sh(
        ["dash"],
        # A slow tar, so that the progress loop reports mid-way.
        f'tar() {{ sleep 0.3; command tar "$@"; }}; tr_unpack "{image}" sharded "{tmp_path}/dest" ""; echo rc=$?',
        {"TR_RUN": str(run), "TR_PROGRESS_EVERY": "0.1", "TR_JOBS": "1"},
    )
    assert "rc=0" in r.stdout, r.stderr
    lines = [line for line in r.stderr.splitlines() if "unpacking:" in line]
    assert lines and "of 3 shards in" in lines[-1], r.stderr
    assert "sharded: 3 shards, 1 workers" in r.stderr


@pytest.mark.parametrize(
    "cores,jobs,expect",
    [("0,1", "", "2 workers"), ("0", "", "1 workers"), ("0,1", "1", "1 workers"), ("0", "64", "5 workers")],
)
def test_workers_follow_the_cores_and_the_shards(image, tmp_path, cores, jobs, expect):
    """One worker per core the boot may use (taskset limits it as a cgroup or affinity
    would), at most one per shard; TR_JOBS overrides."""
    env = {"TR_RUN": str(tmp_path / "run")}
    if jobs:
        env["TR_JOBS"] = jobs
    (tmp_path / "run").mkdir()
    (tmp_path / "dest").mkdir()
    prefix = ["taskset", "-c", cores]
    r = subprocess.run(
        [*prefix, "dash", "-c", f'{SOURCE_LIBS}tr_unpack "{image}" sharded "{tmp_path}/dest" ""'],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert expect in r.stderr


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize("shards", [5, 1], ids=["sharded", "one-stream"])
def test_a_member_tar_cannot_write_is_named(tmp_path_factory, tmp_path, shards, shell):
    """When tar fails on a member, the boot's line is what tar said about that member (not
    its closing "Exiting with failure status due to previous errors")."""
    image = tmp_path_factory.getbasetemp() / f"cannot-write-{shards}.tar.zst"
    if not image.exists():
        create(make_plan(str(small_tree(tmp_path / "tree")), str(image), "zst", shards=shards))
    (tmp_path / "dest/d0/sub/f00/in-the-way").mkdir(parents=True)  # a full directory where a file goes
    r = unpack(shell, image, tmp_path / "dest", tmp_path / "run")
    why = r.stdout.splitlines()[-1]
    assert "rc=1" in r.stdout and "tar failed: " in why, r.stdout + r.stderr
    assert "d0/sub/f00" in why and "Exiting with failure" not in why, why


# ------------------------------------------------------------------ damage
def rewrite_index(src: Path, dst: Path, change) -> None:
    """Copy *src* to *dst* with its index rewritten by change(index) -> (size, parts)."""
    index = index_of(src)
    data = bytearray(src.read_bytes())
    size, parts = change(index)
    data[: index.frame] = image_index.render(index.frame, size, list(parts))
    dst.write_bytes(bytes(data))


def _shift(index):  # the second shard starts inside the first
    p = list(index.parts)
    p[1] = dataclasses.replace(p[1], offset=p[1].offset - 100, length=p[1].length + 100)
    return index.size, p


def _past_end(index):
    p = list(index.parts)
    p[-1] = dataclasses.replace(p[-1], length=p[-1].length + 4096)
    return index.size, p


def _lies(index):
    """Shard 2 claims 10 KiB more, the directory part 10 KiB less: the total still adds up.
    (The boot checks what each worker's run of shards holds, inspect each shard: sizes that
    cancel out within one run pass at boot, and the total that sizes the tmpfs is right.)"""
    p = list(index.parts)
    p[1] = dataclasses.replace(p[1], uncompressed=p[1].uncompressed + 10240)
    p[-1] = dataclasses.replace(p[-1], uncompressed=p[-1].uncompressed - 10240)
    return index.size, p


def _lies_by_a_record(index):
    """Shard 2 claims one 32 KiB record more (and the total with it): a size that is still
    whole records, read 32 KiB at a time."""
    p = list(index.parts)
    p[1] = dataclasses.replace(p[1], uncompressed=p[1].uncompressed + 32768)
    return index.size, p


DAMAGE = {
    # name: (how to damage the copy, what the boot and inspect say)
    "truncated": (lambda src, dst: dst.write_bytes(src.read_bytes()[:-5000]), "truncated or extended"),
    "index-garbage": (
        lambda src, dst: dst.write_bytes(src.read_bytes().replace(b"\ntotal ", b"\ntotai ", 1)),
        "damaged index (line",
    ),
    "index-length": (
        lambda src, dst: dst.write_bytes(src.read_bytes()[:4] + b"\xff\xff\xff\x7f" + src.read_bytes()[8:]),
        "damaged index (it claims",
    ),
    "overlap": (lambda src, dst: rewrite_index(src, dst, _shift), "shard 2 of 5 starts at"),
    "past-end": (lambda src, dst: rewrite_index(src, dst, _past_end), "the directory part points past the end"),
    "lying-sizes": (lambda src, dst: rewrite_index(src, dst, _lies), "(a damaged index)"),
    "lying-by-a-record": (lambda src, dst: rewrite_index(src, dst, _lies_by_a_record), "(a damaged index)"),
}


#: busybox's own tar (in busybox sh) counts nothing (no --totals): lying sizes are found by
#: the GNU tar the initramfs carries, and by inspect; every other case runs in both shells.
DAMAGE_CASES = [
    pytest.param(case, shell, id=f"{ids}-{case}")
    for case in DAMAGE
    for shell, ids in zip(SHELLS, ["dash", "busybox"], strict=True)
    if not (case.startswith("lying") and ids == "busybox")
]


@pytest.mark.parametrize("case,shell", DAMAGE_CASES)
def test_damaged_images_fail_with_one_line(image, tmp_path, case, shell):
    damage, says = DAMAGE[case]
    bad = tmp_path / "bad.tar.zst"
    damage(image, bad)
    r = unpack(shell, bad, tmp_path / "dest", tmp_path / "run")
    assert "rc=0" not in r.stdout and "rc=" in r.stdout, r.stdout + r.stderr
    why = r.stdout.split("rc=", 1)[1].splitlines()[1:]
    assert len(why) == 1 and says in why[0], r.stdout
    if not case.startswith("lying"):  # refused before anything was written
        assert list((tmp_path / "dest").iterdir()) == []
    with pytest.raises(ImageError) as refused:
        inspect(bad)
    assert says in str(refused.value) and "\n" not in str(refused.value)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """64 GiB of zero blocks in about 2 MB of zstd (one 1 GiB frame, repeated): 90 s of
    reading for a tar --ignore-zeros here, hours on a bigger image."""
    frame = subprocess.run("head -c 1G /dev/zero | zstd -1 -q", shell=True, capture_output=True, check=True).stdout
    return frame * 64


def with_bomb(src: Path, dst: Path, part_no: int, bomb: bytes) -> str:
    """Copy *src* to *dst* with *bomb* behind the tar of part *part_no* (1-based, in the same
    zstd stream) and the index made consistent again but for the uncompressed sizes: what a
    hostile image holds. Returns the sha256 that pins it."""
    index = index_of(src)
    data = src.read_bytes()
    body = bytearray()
    parts = []
    for n, p in enumerate(index.parts, 1):
        chunk = data[p.offset : p.offset + p.length] + (bomb if n == part_no else b"")
        digest = hashlib.sha256(chunk).hexdigest()
        parts.append(dataclasses.replace(p, offset=index.frame + len(body), length=len(chunk), sha256=digest))
        body += chunk
    head = image_index.render(index.frame, index.frame + len(body), parts)
    dst.write_bytes(head + body)
    return hashlib.sha256(head).hexdigest()


@pytest.mark.parametrize(
    "shell,part,pinned,says",
    [
        (SHELLS[0], 2, False, "bytes of tar the index says (a damaged index, or changed shards)"),
        (SHELLS[0], 2, True, "bytes of tar the index says (a damaged index, or changed shards)"),
        (SHELLS[0], 6, False, "the directory part: more than the"),
        (SHELLS[1], 2, False, "shard 2 of 5: more than the"),
        (SHELLS[1], 6, True, "the directory part: more than the"),
    ],
    ids=["dash-shard", "dash-shard-pinned", "dash-dirs", "busybox-shard", "busybox-dirs-pinned"],
)
def test_a_part_holding_more_than_its_index_says_is_stopped_there(image, bomb, tmp_path, shell, part, pinned, says):
    """A part whose zstd holds more than the index says (here 64 GiB of zero blocks behind
    its tar) is stopped once past that size, with one line, in seconds; pinned or not, as
    the pin covers only what its maker wrote. inspect stops there too."""
    bad = tmp_path / "bomb.tar.zst"
    sha = with_bomb(image, bad, part, bomb)
    r = unpack(shell, bad, tmp_path / "dest", tmp_path / "run", sha if pinned else "")
    assert "rc=1" in r.stdout, r.stdout + r.stderr
    why = r.stdout.split("rc=", 1)[1].splitlines()[1:]
    assert len(why) == 1 and says in why[0], r.stdout
    refused = run_cli("image", "inspect", str(bad), timeout=60)
    assert refused.returncode != 0 and "more than the" in refused.stderr and "(a damaged index" in refused.stderr


def test_a_single_stream_that_goes_on_past_its_tar_is_stopped(tmp_path, bomb):
    """The single-stream unpack reads at most 1 MiB past the tar's end: an archive that goes
    on (64 GiB of zeros behind it) fails in seconds, at boot and in inspect."""
    good = tmp_path / "one.tar.zst"
    create(make_plan(str(small_tree(tmp_path / "tree")), str(good), "zst", shards=1))
    bad = tmp_path / "bomb.tar.zst"
    bad.write_bytes(good.read_bytes() + bomb)
    r = unpack(SHELLS[0], bad, tmp_path / "dest", tmp_path / "run")
    assert "rc=1" in r.stdout and "bomb.tar.zst is not a valid zstd archive" in r.stdout, r.stdout + r.stderr
    refused = run_cli("image", "inspect", str(bad), timeout=60)
    assert refused.returncode != 0 and "more than 1 MiB after the end of the tar archive" in refused.stderr


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
def test_a_single_stream_holding_more_tar_than_it_records_is_stopped_there(tmp_path, shell):
    """A single stream whose tar goes on past the size it records (its trailer), here with
    one directory header again and again for 64 GiB (never an end-of-archive block), is
    stopped there in seconds, at boot and in inspect."""
    from tui.image_create import size_trailer

    member = tarfile.TarInfo("./d")
    member.type = tarfile.DIRTYPE
    header = member.tobuf(tarfile.GNU_FORMAT)
    frame = subprocess.run(["zstd", "-1", "-q"], input=header * (1 << 19), capture_output=True, check=True).stdout
    head = io.BytesIO()
    with tarfile.open(fileobj=head, mode="w", format=tarfile.GNU_FORMAT) as t:
        info = tarfile.TarInfo("./d/f")
        info.size = 5000
        t.addfile(info, io.BytesIO(os.urandom(5000)))
    legit = head.getvalue().rstrip(b"\0")  # its members, without the end-of-archive blocks
    legit += b"\0" * (-len(legit) % 512)
    recorded = len(legit) + 10240
    eof = subprocess.run(["zstd", "-q"], input=b"\0" * 10240, capture_output=True, check=True).stdout
    start = subprocess.run(["zstd", "-q"], input=legit, capture_output=True, check=True).stdout
    bad = tmp_path / "bomb.tar.zst"
    bad.write_bytes(start + frame * 256 + eof + size_trailer("zst", recorded))
    r = unpack(shell, bad, tmp_path / "dest", tmp_path / "run")
    assert "rc=1" in r.stdout, r.stdout + r.stderr
    why = r.stdout.split("rc=", 1)[1].splitlines()[1:]
    says = f"bomb.tar.zst holds more than the {recorded} bytes of tar it records (a damaged or changed archive)"
    assert why == [says]
    refused = run_cli("image", "inspect", str(bad), timeout=60)
    assert refused.returncode != 0 and f"holds more than the {recorded} bytes of tar it records" in refused.stderr


@pytest.mark.parametrize(
    "pinned,hasher", [(True, "openssl"), (True, "sha256sum"), (False, None)], ids=["openssl", "sha256sum", "unpinned"]
)
def test_one_changed_byte_in_a_shard_names_the_shard(image, tmp_path, pinned, hasher):
    index = index_of(image)
    third = index.parts[2]
    data = bytearray(image.read_bytes())
    data[third.offset + third.length // 2] ^= 0x01
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(bytes(data))
    suffix, env = HASHERS[hasher] if hasher else ("", None)
    run = tmp_path / "run"
    r = unpack(["dash"], bad, tmp_path / "dest", run, index.digest if pinned else "", env and env(tmp_path / "bin"))
    assert "rc=3" in r.stdout if pinned else "rc=1" in r.stdout, r.stdout + r.stderr
    why = r.stdout.split("rc=", 1)[1].splitlines()[1]
    if pinned:
        assert why == (
            "shard 3 of 5: its sha256 is not the one in the image's index (the image was changed); "
            "nothing of it was unpacked"
        )
        hashed = (run / "shard/3.sha").read_text()
        assert hashed.rstrip("\n").endswith(suffix), hashed  # the hasher asked for
        # verified before any of it went in: no file of shard 3 (nor of the directory part) is there
        mine = [m.name for m in part_members(image, third) if not m.isdir()]
        assert mine and not [m for m in mine if (tmp_path / "dest" / m).exists()]
        assert not (tmp_path / "dest/d2/to-d1").is_symlink()
    else:  # zstd's own checksum
        assert why == "shard 3 of 5 of bad.tar.zst is damaged (zstd failed)"
    with pytest.raises(ImageError, match="shard 3 of 5: its sha256 is not the one in the index"):
        inspect(bad)


def test_a_pinned_sha256_covers_the_index(image, tmp_path):
    r = unpack(["dash"], image, tmp_path / "dest", tmp_path / "run", "ab" * 32)
    assert "rc=3" in r.stdout
    assert f"sha256 of the image (its index) is {index_of(image).digest}, not the expected one" in r.stdout
    assert list((tmp_path / "dest").iterdir()) == []


def test_the_boot_reads_the_size_from_the_index(image, tmp_path):
    index = index_of(image)
    r = run_sh(["dash"], f'tr_uncompressed_size "{image}" sharded', {"TR_RUN": str(tmp_path)})
    assert r.stdout.strip() == str(index.total)
    assert inspect(image).uncompressed == index.total


def test_create_refuses_bad_shard_counts(tmp_path):
    tree = small_tree(tmp_path / "tree", files=4)
    for args, says in [
        (["--shards=0"], "--shards '0': accepted: auto, or 1 (one stream) to 1023"),
        (["--shards=many"], "--shards 'many': accepted: auto"),
        (["--shards=4", "--format=gz"], "--shards 4: accepted only with --format zst"),
    ]:
        r = run_cli("image", "create", f"--from={tree}", f"--output={tmp_path}/o.tar.zst", *args)
        assert r.returncode == 2 and says in r.stderr, r.stderr
        assert not (tmp_path / "o.tar.zst").exists()
    r = run_cli("image", "create", f"--from={tree}", f"--output={tmp_path}/o.tar.zst", "--shards=7", "--dry-run")
    assert r.returncode == 0 and "(zst, sharded: 7 shards)" in r.stdout, r.stdout + r.stderr


def test_inspect_shows_the_shards(image):
    r = run_cli("image", "inspect", str(image), "--sha256")
    assert r.returncode == 0, r.stderr
    assert "sharded archive" in r.stdout and "shards        5, the biggest" in r.stdout
    assert r.stdout.count("    shard ") == 5 and "    dirs " in r.stdout
    whole = hashlib.sha256(image.read_bytes()).hexdigest()
    assert f"sha256        {whole} (of the whole file" in r.stdout
    assert f"pin           {index_of(image).digest} (of the index" in r.stdout  # what the boot pins
    info = json.loads(run_cli("image", "inspect", str(image), "--sha256", "--json").stdout)
    assert (info["sha256"], info["pin"]) == (whole, index_of(image).digest)


def test_inspect_refuses_a_link_in_a_shard(tmp_path):
    """Shards are unpacked side by side: a link made by one could lead another tar out of
    the new root. image create puts links in the last part; a hand-made image that puts one
    in a shard is refused (and at boot, where the image is the system to be run anyway, the
    pinned sha256 is what vouches for it)."""
    import io
    import tarfile

    def tar_of(*members) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for m in members:
                t.addfile(m)
        return subprocess.run(["zstd", "-q", "-c"], input=buf.getvalue(), capture_output=True, check=True).stdout

    link = tarfile.TarInfo("./etc")
    link.type, link.linkname = tarfile.SYMTYPE, "/tmp"
    root = tarfile.TarInfo(".")
    root.type = tarfile.DIRTYPE
    parts_data = [tar_of(link), tar_of(root)]
    frame = image_index.reserved_frame(1)
    at, parts = frame, []
    for kind, data in zip(("files", "dirs"), parts_data, strict=True):
        parts.append(image_index.Part(kind, at, len(data), 10240, 1, hashlib.sha256(data).hexdigest()))
        at += len(data)
    image = tmp_path / "hostile.tar.zst"
    image.write_bytes(image_index.render(frame, at, parts) + b"".join(parts_data))
    with pytest.raises(ImageError, match="a symbolic link in a shard"):
        inspect(image)


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize("pinned", [False, True], ids=["runs", "shard-by-shard"])
@pytest.mark.parametrize(
    "opts,says",
    [
        ("size=256k", "the tmpfs is full: the image does not fit in 256.0K"),
        # 40 files in 11 directories: bytes to spare, not inodes (more size would not help)
        ("size=64m,nr_inodes=16", "the tmpfs ran out of inodes: the image holds more files than the 16 it allows"),
    ],
    ids=["bytes", "inodes"],
)
def test_a_full_tmpfs_is_said_as_such(image, tmp_path, pinned, shell, opts, says):
    """tar runs out of room in the tmpfs: the line names what ran out, not a damaged shard."""
    dest = tmp_path / "small"
    dest.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(dest)], check=True)
    try:
        r = unpack(shell, image, dest, tmp_path / "run", index_of(image).digest if pinned else "")
    finally:
        subprocess.run(["umount", "-l", str(dest)], check=False)
    assert "rc=1" in r.stdout, r.stdout + r.stderr
    assert says in r.stdout, r.stdout


@pytest.mark.parametrize("spare,says", [(3, "rc=0"), (1, "rc=1")], ids=["one-worker", "none"])
def test_pinned_parts_are_verified_in_the_ram_there_is(image, tmp_path, spare, says):
    """Pinned, a worker holds two parts at once (one verified and unpacked, the next one
    fetched): the workers are cut to what RAM holds beside the tree, and when not even one
    fits the boot refuses in one line, before anything is written."""
    index = index_of(image)
    big = max(p.length for p in index.parts)
    available = index.total + (32 << 20) + spare * big  # 3: room for one worker's two parts, 1: for none
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: {64 << 20} kB\nMemAvailable: {-(-available // 1024)} kB\n")
    r = unpack(["dash"], image, tmp_path / "dest", tmp_path / "run", index.digest, {"TR_MEMINFO": str(meminfo)})
    assert says in r.stdout, r.stdout + r.stderr
    if says == "rc=0":
        assert "5 shards, 1 workers" in r.stderr
    else:
        assert "is verified in RAM before it is unpacked" in r.stdout and "make the image with more shards" in r.stdout
        assert not list((tmp_path / "dest").iterdir())


def test_plan_refuses_the_whole_files_sha256_as_a_sharded_images_pin(image):
    """sha256sum's hash of a sharded image is not what the boot checks: plan says so, with
    the pin it takes, when the image is on a mounted source; the pin itself passes."""
    from types import SimpleNamespace

    from tui.plan import Plan
    from tui.validation import _check_image_on_source

    device = SimpleNamespace(mountpoints=[str(image.parent)])
    whole = hashlib.sha256(image.read_bytes()).hexdigest()
    pin = (image.parent / "root.tar.zst.pin").read_text().strip()
    problems: list = []
    _check_image_on_source(Plan(source="LABEL=IMG", image="root.tar.zst", sha256=whole), device, problems)
    assert [p.field for p in problems] == ["sha256"]
    assert f"accepted: {pin} (its FILE.pin" in problems[0].line() and "not the whole file's" in problems[0].line()
    problems = []
    _check_image_on_source(Plan(source="LABEL=IMG", image="root.tar.zst", sha256=pin.upper()), device, problems)
    assert problems == []
