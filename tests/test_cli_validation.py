"""Bad input through the real CLI: exit 2, one line per problem naming the field,
no traceback, and nothing changed under --root."""

import pytest

from tests.infra import FAKE_KVER, GRUB_TOOLS, cli_inproc, make_fake_target, run_cli, tree_digest

GOOD = ["--source", "LABEL=IMGVOL", "--image", "images/rootfs.tar.zst", "--size", "2G"]


def with_(**over):
    """GOOD with some options replaced (value None drops the option)."""
    args = dict(zip(GOOD[::2], GOOD[1::2], strict=True))
    for key, value in over.items():
        opt = "--" + key.replace("_", "-")
        if value is None:
            args.pop(opt, None)
        else:
            args[opt] = value
    out = []
    for k, v in args.items():
        out += [f"{k}={v}"]  # '=' form, so values starting with '-' stay values
    return out


BAD = [
    ("no-source", with_(source=None), "--source"),
    ("source-unknown-form", with_(source="imgvol"), "--source"),
    ("source-empty-label", with_(source="LABEL="), "--source"),
    ("source-space", with_(source="LABEL=my vol"), "--source"),
    ("source-shell", with_(source="UUID=$(reboot)"), "--source"),
    ("nfs-no-path", with_(source="nfs:server"), "--source"),
    ("nfs-relative-path", with_(source="nfs:server:export"), "--source"),
    ("nfs4-no-server", with_(source="nfs4:/export"), "--source"),
    ("no-image", with_(image=None), "--image"),
    ("image-absolute", with_(image="/images/rootfs.tar"), "--image"),
    ("image-dotdot", with_(image="../rootfs.tar"), "--image"),
    ("image-inner-dotdot", with_(image="a/../b.tar"), "--image"),
    ("image-space", with_(image="my image.tar"), "--image"),
    ("image-semicolon", with_(image="x;reboot.tar"), "--image"),
    ("image-dollar", with_(image="x$y.tar"), "--image"),
    ("image-quote", with_(image='x"y.tar'), "--image"),
    ("image-single-quote", with_(image="x'y.tar"), "--image"),
    ("image-backslash", with_(image="x\\y.tar"), "--image"),
    ("image-control", with_(image="x\x01y.tar"), "--image"),
    ("size-unit", with_(size="3Q"), "--size"),
    ("size-zero", with_(size="0"), "--size"),
    ("size-percent", with_(size="150%"), "--size"),
    ("size-negative", with_(size="-1G"), "--size"),
    ("size-fraction", with_(size="1.5G"), "--size"),
    ("size-GB", with_(size="2GB"), "--size"),
    ("kernel-absent", with_(kernel="9.9.9-none"), "--kernel"),
    ("kernel-path", with_(kernel="../../etc"), "--kernel"),
    ("boot-mode", with_(boot="sometimes"), "--boot"),
    ("title-empty", with_(title=""), "--title"),
    ("title-newline", with_(title="a\nb"), "--title"),
    ("append-root", with_(append="root=/dev/sda1"), "--append"),
    ("append-rd-tmpfs", with_(append="quiet rd.tmpfs.size=1G"), "--append"),
    ("append-shell", with_(append="quiet;reboot"), "--append"),
    ("sha256-short", with_(sha256="abc"), "--sha256"),
    ("sha256-not-hex", with_(sha256="g" * 64), "--sha256"),
    ("tmpfs-opts-size", with_(tmpfs_opts="size=1G"), "--tmpfs-opts"),
    ("tmpfs-opts-mpol", with_(tmpfs_opts="mpol=everywhere"), "--tmpfs-opts"),
    ("tmpfs-opts-huge-always", with_(tmpfs_opts="huge=always"), "--tmpfs-opts"),
    ("ip-without-nfs", with_(ip="dhcp"), "--ip"),
    ("ip-garbage", with_(source="nfs:10.0.0.1:/srv", ip="bad-ip"), "--ip"),
    ("unknown-option", with_() + ["--colour=red"], "--colour"),
]


@pytest.mark.parametrize("command", [["plan"], ["apply", "--yes"]], ids=["plan", "apply"])
@pytest.mark.parametrize("args,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_naming_the_field(fake_target, args, field, command):
    before = tree_digest(fake_target)
    result = cli_inproc(command[0], f"--root={fake_target}", *command[1:], *args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors, result.stderr
    assert any(field in line for line in errors), result.stderr
    assert all(line.startswith("tmpfs-root") for line in result.stderr.splitlines())
    assert tree_digest(fake_target) == before


def test_good_input_passes_the_same_way(fake_target):
    """The baseline the bad inputs vary: it is valid, so each failure above is the one change."""
    result = run_cli("plan", f"--root={fake_target}", *with_())
    assert result.returncode == 0, result.stderr
    assert "root=tmpfs:LABEL=IMGVOL" in result.stdout


def test_all_problems_at_once(fake_target):
    result = run_cli("plan", f"--root={fake_target}", *with_(image="/abs", size="3Q", boot="x"))
    assert result.returncode == 2
    for opt in ("--image", "--size", "--boot"):
        assert any(opt in line for line in result.stderr.splitlines())


def test_root_not_a_directory(tmp_path):
    result = run_cli("plan", f"--root={tmp_path}/absent", *GOOD)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--root" in result.stderr


def test_target_without_dracut(tmp_path):
    target = make_fake_target(tmp_path / "t", dracut=False)
    before = tree_digest(target)
    result = run_cli("plan", f"--root={target}", *GOOD)
    assert result.returncode == 2
    assert "dracut" in result.stderr and "not installed" in result.stderr
    assert tree_digest(target) == before


def test_target_without_kernels(tmp_path):
    target = make_fake_target(tmp_path / "t", kvers=())
    result = run_cli("plan", f"--root={target}", *GOOD)
    assert result.returncode == 2
    assert "--kernel" in result.stderr and "no kernel with modules" in result.stderr


def test_kernel_without_vmlinuz(fake_target):
    (fake_target / f"boot/vmlinuz-{FAKE_KVER}").unlink()
    result = run_cli("plan", f"--root={fake_target}", *GOOD, f"--kernel={FAKE_KVER}")
    assert result.returncode == 2
    assert f"no /boot/vmlinuz-{FAKE_KVER}" in result.stderr


def test_not_root_on_the_live_system():
    result = run_cli("plan", *GOOD, user="nobody")
    assert result.returncode == 2
    assert "error: user" in result.stderr and "not root" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content,message",
    [
        ("source = [", "not valid TOML"),
        ("source = 'LABEL=X'\ncolour = 'red'\n", "unknown key 'colour'"),
        ("kernels = 'x'\n", "'kernels' must be a list of strings"),
    ],
)
def test_bad_plan_file(fake_target, tmp_path, content, message):
    plan = tmp_path / "plan.toml"
    plan.write_text(content)
    before = tree_digest(fake_target)
    result = run_cli("plan", f"--root={fake_target}", f"--plan={plan}")
    assert result.returncode == 2
    assert "--plan" in result.stderr and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert tree_digest(fake_target) == before


def test_missing_plan_file(fake_target, tmp_path):
    result = run_cli("plan", f"--root={fake_target}", f"--plan={tmp_path}/none.toml")
    assert result.returncode == 2 and "cannot be read" in result.stderr


def test_save_refused_when_invalid(fake_target, tmp_path):
    result = run_cli("plan", f"--root={fake_target}", *with_(size="3Q"), f"--save={tmp_path}/p.toml")
    assert result.returncode == 2
    assert not (tmp_path / "p.toml").exists()


def test_size_above_ram_is_an_error_for_this_system():
    """On the live system (--root /, read-only here: plan writes nothing) RAM is known."""
    result = run_cli("plan", "--root=/", *with_(size="999999G"))
    assert result.returncode == 2
    assert any(
        line.startswith("tmpfs-root: error: --size '999999G': is above this machine's RAM")
        for line in result.stderr.splitlines()
    ), result.stderr


def test_size_above_ram_only_warns_for_another_system(fake_target):
    """A --root target may be a disk for a bigger machine: the RAM here is only a hint."""
    result = run_cli("plan", f"--root={fake_target}", *with_(size="999999G"))
    assert result.returncode == 0, result.stderr
    assert "warning: --size '999999G': is above this machine's RAM" in result.stderr


def test_apply_without_a_terminal_asks_for_yes_and_writes_nothing(fake_target):
    before = tree_digest(fake_target)
    result = run_cli("apply", f"--root={fake_target}", *with_(), "--size=1G")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "tmpfs-root: error: apply: no terminal to ask for confirmation on; pass --yes"
    )
    assert tree_digest(fake_target) == before


def test_apply_dry_run_shows_the_steps_and_writes_nothing(fake_target):
    before = tree_digest(fake_target)
    result = run_cli("apply", f"--root={fake_target}", *with_(), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "/etc/grub.d/42_tmpfs-root" in result.stdout and "grub-reboot tmpfs-root-" in result.stdout
    assert "dry run: nothing was written" in result.stdout
    assert tree_digest(fake_target) == before


def test_status_and_remove_on_a_target_without_tmpfs_root(fake_target):
    before = tree_digest(fake_target)
    st = run_cli("status", f"--root={fake_target}")
    assert st.returncode == 0 and "not installed" in st.stdout
    rm = run_cli("remove", f"--root={fake_target}", "--yes")
    assert rm.returncode == 0 and "nothing to remove" in rm.stdout
    assert tree_digest(fake_target) == before


def test_target_without_grub_is_refused(fake_target):
    import shutil

    shutil.rmtree(fake_target / "boot/grub")
    for tool in GRUB_TOOLS:
        (fake_target / "usr/bin" / tool).unlink()
    result = run_cli("apply", f"--root={fake_target}", *with_(), "--yes")
    assert result.returncode == 2
    assert "error: bootloader" in result.stderr and "no GRUB found" in result.stderr


def test_boot_default_refused_where_grub_reads_no_dropins(fake_target):
    """The fake target's GRUB has no grub-mkconfig that reads /etc/default/grub.d, and its
    /etc/default/grub does not say GRUB_DEFAULT=saved."""
    result = run_cli("apply", f"--root={fake_target}", *with_(boot="default"), "--yes")
    assert result.returncode == 2
    assert "error: --boot 'default': GRUB_DEFAULT is not 'saved'" in result.stderr
    (fake_target / "etc/default").mkdir(parents=True, exist_ok=True)
    (fake_target / "etc/default/grub").write_text("GRUB_DEFAULT=saved\n")
    assert run_cli("plan", f"--root={fake_target}", *with_(boot="default")).returncode == 0


def test_a_second_apply_on_the_same_target_waits_its_turn(fake_target):
    from tui.host import Host
    from tui.transaction import locked

    before = tree_digest(fake_target)
    with locked(Host(fake_target)):  # as if another tmpfs-root were applying
        result = run_cli("apply", f"--root={fake_target}", *with_(), "--yes")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"tmpfs-root: error: another tmpfs-root is changing {fake_target}; wait for it to finish"
    )
    assert tree_digest(fake_target) == before


@pytest.mark.parametrize("args", [[], ["--dry-run"], ["--root", "/"]], ids=["bare", "dry-run", "root"])
def test_without_a_terminal_the_screen_is_not_started(args):
    """cron, a pipe, ssh without -t: no escape codes and no wait for keys, but one line saying
    what to run instead, exit 2 (stdin and stdout are pipes here)."""
    r = run_cli(*args, timeout=30)
    assert r.returncode == 2, r
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "the screen needs a terminal" in lines[0] and "tmpfs-root plan" in lines[0], lines
    assert r.stdout == "" and "\x1b" not in r.stderr


def test_debian_target_without_dracut_is_told_to_install_dracut_core(tmp_path):
    """dracut-core installs beside initramfs-tools; Debian's dracut package would replace it."""
    target = make_fake_target(tmp_path / "t", dracut=False)
    result = cli_inproc("plan", f"--root={target}", *GOOD)
    line = [x for x in result.stderr.splitlines() if "error: dracut" in x]
    assert result.returncode == 2 and len(line) == 1
    assert "apt install --no-install-recommends dracut-core" in line[0]


def _drop(target, path):
    (target / path.lstrip("/")).unlink()


# (what the target lacks, the plan's --boot, what the one line names, what it says to install)
MISSING_TOOLS = [
    ("/bin/sh", "once", "'/bin/sh'", "install dash"),
    ("/usr/bin/grub-mkconfig", "menu", "'grub-mkconfig'", "grub2-common"),
    ("/usr/bin/grub-script-check", "menu", "'grub-script-check'", "grub-common"),
    ("/usr/bin/grub-reboot", "once", "'grub-reboot'", "grub2-common"),
    ("/usr/bin/grub-set-default", "default", "'grub-set-default'", "grub2-common"),
]


@pytest.mark.parametrize("missing,boot,names,install", MISSING_TOOLS, ids=[m[0] for m in MISSING_TOOLS])
def test_plan_names_each_tool_apply_would_run_that_the_target_lacks(fake_target, missing, boot, names, install):
    (fake_target / "etc/default").mkdir(parents=True, exist_ok=True)
    (fake_target / "etc/default/grub").write_text("GRUB_DEFAULT=saved\n")  # --boot default needs it
    assert cli_inproc("plan", f"--root={fake_target}", *with_(boot=boot)).returncode == 0
    _drop(fake_target, missing)
    before = tree_digest(fake_target)
    result = cli_inproc("plan", f"--root={fake_target}", *with_(boot=boot))
    lines = [x for x in result.stderr.splitlines() if "error: tool" in x]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"tmpfs-root: error: tool {names}: ") and install in lines[0]
    applied = cli_inproc("apply", f"--root={fake_target}", *with_(boot=boot), "--yes")
    assert applied.returncode == 2 and tree_digest(fake_target) == before  # refused, nothing written


def test_plan_checks_dracuts_interpreter_in_the_target(fake_target):
    """dracut is a bash script: the bash it names must be in the target (or found by env)."""
    dracut = fake_target / "usr/bin/dracut"
    dracut.write_text("#!/bin/bash --norc\nexit 0\n")
    result = cli_inproc("plan", f"--root={fake_target}", *GOOD)
    lines = [x for x in result.stderr.splitlines() if "error: tool" in x]
    assert result.returncode == 2 and len(lines) == 1
    assert "tool '/bin/bash': is not in the target, and /usr/bin/dracut" in lines[0] and "install bash" in lines[0]
    dracut.write_text("#!/usr/bin/env bash\nexit 0\n")
    (fake_target / "usr/bin/env").write_text("#!/bin/sh\n")
    (fake_target / "usr/bin/env").chmod(0o755)
    result = cli_inproc("plan", f"--root={fake_target}", *GOOD)
    assert result.returncode == 2 and "tool 'bash': is not in the target" in result.stderr
    (fake_target / "bin/bash").write_text("")
    (fake_target / "bin/bash").chmod(0o755)
    assert cli_inproc("plan", f"--root={fake_target}", *GOOD).returncode == 0


def test_grub_editenv_is_checked_where_grubenv_is_on_the_esp(fake_target):
    """RHEL's EFI layout: the boot mode is set with grub-editenv on the ESP's grubenv."""
    esp = fake_target / "boot/efi/EFI/redhat"
    esp.mkdir(parents=True)
    (esp / "grub.cfg").write_text("# the real one\n")
    _drop(fake_target, "/usr/bin/grub-editenv")
    result = cli_inproc("plan", f"--root={fake_target}", *GOOD)
    assert result.returncode == 2
    assert "error: tool 'grub-editenv': is not in the target's PATH (sets --boot once in /boot/efi" in result.stderr
