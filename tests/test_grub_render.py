"""Exactly what was asked reaches GRUB: random titles, kernel names and kernel arguments,
written by the engine and rendered by the target's own grub-mkconfig with our
/etc/grub.d/42_tmpfs-root, pass grub-script-check and give exactly one menuentry per kernel
whose title and linux arguments, read back with GRUB's quoting rules, equal the input.

Runs on a real Debian 12 system on a loop device (grub-probe needs a real block device
under /boot); the distro's own grub.d scripts other than 00_header are switched off in
the test copy, so each example takes one grub-mkconfig run of a second or so."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.infra import system_disk_copy
from tui import bootloader
from tui.host import Host
from tui.plan import Plan
from tui.validation import ARG_CHARS, Problem, _check_title

pytestmark = [pytest.mark.chroot]


def grub_words(line: str) -> list[str]:
    """The words GRUB's script parser makes of *line* (quotes, escapes); an unquoted '$',
    which GRUB would expand, is an error: nothing of ours may be interpreted."""
    words, word, i, started = [], "", 0, False
    while i < len(line):
        c = line[i]
        if c in " \t":
            if started:
                words.append(word)
            word, started = "", False
        elif c == "'":
            end = line.index("'", i + 1)
            word += line[i + 1 : end]
            i, started = end, True
        elif c == '"':
            i += 1
            while line[i] != '"':
                if line[i] == "\\" and line[i + 1] in '\\"$\n':
                    i += 1
                elif line[i] == "$":
                    raise ValueError(f"GRUB would expand {line[i : i + 10]!r}")
                word += line[i]
                i += 1
            started = True
        elif c == "\\":
            word += line[i + 1]
            i, started = i + 1, True
        elif c == "$":
            raise ValueError(f"GRUB would expand {line[i : i + 10]!r}")
        elif c in ";|&<>":
            raise ValueError(f"GRUB would interpret {c!r} in {line!r}")
        else:
            word += c
            started = True
        i += 1
    if started:
        words.append(word)
    return words


def our_entries(cfg: str) -> dict[str, dict]:
    """id -> {"title", "linux"} of every menuentry whose id is ours, parsed word by word."""
    found, current = {}, None
    ours = cfg.split("### BEGIN /etc/grub.d/42_tmpfs-root ###\n", 1)[1].split("### END /etc/grub.d/42_tmpfs-root ###")[
        0
    ]
    for line in ours.splitlines():
        words = grub_words(line.strip()) if line.strip() and not line.strip().startswith("#") else []
        if words[:1] == ["menuentry"]:
            ident = words[words.index("--id") + 1] if "--id" in words else ""
            current = {"title": words[1], "linux": None, "count": 0}
            if ident.startswith(bootloader.ENTRY_PREFIX):
                assert ident not in found, f"two entries with the id {ident}"
                found[ident] = current
            else:
                current = None
        elif current is not None and words[:1] == ["linux"]:
            current["linux"] = words[2:]
            current["count"] += 1
        elif words[:1] == ["}"]:
            current = None
    return found


def test_the_parser_reads_grub_quoting():
    assert grub_words("""menuentry 'a'\\''b' --id "x\\"y" {""") == ["menuentry", "a'b", "--id", 'x"y', "{"]
    with pytest.raises(ValueError):
        grub_words("linux /vmlinuz a=$x")


PRINTABLE_SPECIALS = "'\"\\$;{}[]`#|&<>*?!%~^()=,.: -_/@+ \u00e9\u4e2d\U0001f600"
#: What dash's echo, GRUB's parser or a shell would interpret, if anything interpreted the title.
FRAGMENTS = [
    "\\c",
    "\\n",
    "\\0047",
    "\\047",
    "\\t",
    "\\\\",
    "'",
    "$(reboot)",
    "${x}",
    "' {",
    "}",
    "\\x27",
    "--unrestricted",
    ";",
    "`id`",
]
titles = st.one_of(
    st.lists(
        st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet=string.ascii_letters + " ", max_size=5)),
        min_size=1,
        max_size=12,
    ).map("".join),
    st.text(alphabet=PRINTABLE_SPECIALS + string.ascii_letters, min_size=1, max_size=60),
    st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")), min_size=1, max_size=200),
).filter(lambda t: _title_ok(t))
kvers = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,30}", fullmatch=True)
args = st.lists(st.text(alphabet="".join(sorted(ARG_CHARS)), min_size=1, max_size=30), max_size=8)


def _title_ok(title: str) -> bool:
    problems: list[Problem] = []
    _check_title(Plan(title=title), problems)
    return not problems


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    with system_disk_copy(tmp_path_factory.mktemp("render")) as copy:
        mnt = copy.mnt
        for script in (mnt / "etc/grub.d").iterdir():
            if script.name not in ("00_header",) and script.is_file():
                script.chmod(0o644)  # grub-mkconfig runs only the executable ones
        (mnt / "etc/grub.d/42_tmpfs-root").write_bytes(bootloader.GRUB_SCRIPT_SOURCE.read_bytes())
        (mnt / "etc/grub.d/42_tmpfs-root").chmod(0o755)
        (mnt / "etc/tmpfs-root").mkdir()
        yield mnt


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=titles, kernels=st.lists(kvers, min_size=1, max_size=3, unique=True), cmdline=args)
def test_every_title_kernel_and_argument_reaches_grub_cfg_exactly(disk, title, kernels, cmdline):
    made = []
    for k in kernels:
        for name, data in ((f"initrd-tmpfs-root-{k}.img", b"initrd"), (f"vmlinuz-{k}", b"kernel")):
            if not (disk / "boot" / name).exists():
                (disk / "boot" / name).write_bytes(data)
                made.append(disk / "boot" / name)
    (disk / "etc/tmpfs-root/grub.env").write_text(bootloader.grub_env(title, cmdline))
    host = Host(disk)
    try:
        host.run(["grub-mkconfig", "-o", "/tmp/render.cfg"])
        host.run(["grub-script-check", "/tmp/render.cfg"])
        cfg = (disk / "tmp/render.cfg").read_text()
    finally:
        for path in made:
            path.unlink()
    entries = our_entries(cfg)
    assert sorted(entries) == sorted(f"tmpfs-root-{k}" for k in kernels)
    assert cfg.count("\nmenuentry ") == len(kernels)  # 00_header and ours only: nothing added
    assert "menuentry" not in cfg.split("### END /etc/grub.d/42_tmpfs-root ###")[1]
    for k in kernels:
        entry = entries[f"tmpfs-root-{k}"]
        assert entry["title"] == f"{title} ({k})"
        assert entry["count"] == 1
        assert entry["linux"] == bootloader.inherited_args(host) + cmdline  # the admin's, then ours
