"""The tmpfs-root dracut module: installing it into a target and building initramfs images.

The module itself is real shell, shipped as package data under
``tui/dracut/90tmpfs-root/``.  Builds run the *target's* dracut (inside the
target with chroot when it is not ``/``), one image per kernel, into a file of
our own (never the distro's initramfs), written under a temporary name and
renamed only when dracut succeeded.
"""

from __future__ import annotations

from pathlib import Path

from tui.devices import BlockDevice
from tui.host import Host, LineCallback
from tui.owned import MODULE_DIRNAME, MODULES_DIRS
from tui.plan import Plan, source_device, source_lvm

MODULE_NAME = "tmpfs-root"
MODULE_SOURCE = Path(__file__).parent / "dracut" / MODULE_DIRNAME


def module_files() -> list[tuple[str, bytes, int]]:
    """(file name, content, mode) of every file of the module, sorted by name."""
    files = []
    for path in sorted(MODULE_SOURCE.iterdir()):
        if path.is_file() and path.suffix == ".sh":
            files.append((path.name, path.read_bytes(), 0o755))
    return files


def modules_dir(host: Host) -> str:
    """The target's dracut modules directory (/usr/lib, or /lib on old layouts)."""
    for candidate in MODULES_DIRS:
        if host.is_dir(candidate):
            return candidate
    return "/usr/lib/dracut/modules.d"


def module_path(host: Host) -> str:
    return f"{modules_dir(host)}/{MODULE_DIRNAME}"


def install_module(host: Host) -> bool:
    """Write the module into the target; returns whether anything changed."""
    target = module_path(host)
    changed = False
    for name, data, mode in module_files():
        changed |= host.write_file(f"{target}/{name}", data, mode)
    return changed


def remove_module(host: Host) -> None:
    host.remove_tree(module_path(host))


def extra_modules(plan: Plan, devices: list[BlockDevice] | None) -> list[str]:
    """dracut modules the source needs besides ours (nfs, url-lib, lvm, mdraid)."""
    source, device = source_device(plan, devices)
    if source is None:
        return []
    if source.is_nfs:
        return ["nfs"]
    if source.is_http:
        return ["url-lib"]  # curl, the CA bundle, and (its dependency) the network
    mods = []
    if source_lvm(source, device):
        mods.append("lvm")
    if device is not None and device.md_uuid:
        mods.append("mdraid")
    return mods


def dracut_options(plan: Plan, devices: list[BlockDevice] | None = None, now: bool = False) -> list[str]:
    """dracut's options for the plan, without the kernel version and output (the kernel hook
    reuses them for new kernels: the source device by its stable name).

    *now*: for a build on this machine, whose /dev may lack that name (no udevd made the
    link: a rescue system, a container): a name udev did not give the device here becomes
    its present path, which dracut can follow to its drivers."""
    options = ["--add", " ".join([MODULE_NAME, *extra_modules(plan, devices)])]
    if plan.hostonly:
        # Host-only keeps the image small, but must not bake the host's own root=
        # into it, and must carry the drivers of the source device.
        options += ["--hostonly", "--no-hostonly-cmdline"]
        _, device = source_device(plan, devices)
        if device is not None:
            name = device.stable_name()
            if now and name not in device.links:
                name = device.path
            options += ["--add-device", name]
    else:
        options += ["--no-hostonly"]
    return options


def dracut_argv(plan: Plan, kver: str, output: str, devices: list[BlockDevice] | None = None) -> list[str]:
    """The dracut command line that builds the image for *kver* into *output*."""
    return ["dracut", "--force", "--kver", kver, *dracut_options(plan, devices, now=True), output]


def build_initramfs(
    host: Host,
    plan: Plan,
    kver: str,
    output: str,
    devices: list[BlockDevice] | None = None,
    on_line: LineCallback | None = None,
    extra_args: list[str] | None = None,
) -> None:
    """Build the image for *kver*; the previous *output* stays untouched unless dracut succeeds."""
    tmp = f"{output}.new"
    argv = dracut_argv(plan, kver, tmp, devices)
    if extra_args:
        argv[1:1] = extra_args
    host.preserve(tmp)  # a killed build leaves it behind: the journal knows to remove it
    try:
        host.run(argv, on_line=on_line)
    except BaseException:
        host.discard(tmp)
        raise
    host.rename(tmp, output)
