"""The apply and remove transactions, and the status of an applied target.

``apply`` is a list of :class:`Step` objects bound to a :class:`~tui.host.Host`.
The same steps run against a recording (dry-run) host to show what ``plan``
and ``apply --dry-run`` would do, and against a real one for ``apply``.  Every
step is idempotent: it compares what it would write with what is there, so
applying the same plan twice changes nothing and a changed plan updates the
setup in place.

Order matters for a machine that must always boot: the initramfs images are
built (under a temporary name, renamed when complete) before any entry points at
them, and grub.cfg is replaced in one rename, after ``grub-script-check``
passed on the new one.  Any failure (or SIGINT/SIGTERM) rolls every step back
from the host's backups; after a SIGKILL the on-disk journal lets the next run
roll back first, then apply again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from tui import bootloader, dracut, kernel_hooks, owned
from tui.bootloader import Bootloader
from tui.cancel import CancelToken
from tui.devices import BlockDevice
from tui.errors import Cancelled, Failure, escape, shown
from tui.hints import command, target_file
from tui.host import DamagedJournal, Host, HostError, LineCallback, UnsafePath
from tui.owned import INITRD_TEMPLATE, KERNEL_TEMPLATE, KVER_RE, PLAN_FILE, STATE_DIR, STATE_FILE
from tui.plan import BOOT_MODES, Plan, Resolved, resolve, version_key
from tui.safefile import SMALL_LIMIT, FileRefused, open_private_dir

STATE_VERSION = 1
#: Where the per-target locks live: root's alone (0700), on this machine, not in the target
#: (TMPFS_ROOT_LOCK_DIR moves it, for tests).
LOCK_DIR = "/run/tmpfs-root"

#: Called as on_step(index, total, step name, event, note): event is start, done or failed.
StepCallback = Callable[[int, int, str, str, str], None]


@dataclass
class Step:
    name: str
    action: Callable[[], object]  # returns a note ("unchanged", …), or anything else for none


class TransactionError(HostError):
    """A step failed and everything done before it was rolled back."""

    def __init__(self, step: str, cause: BaseException, restored: list[str]):
        self.step = step
        self.cause = cause
        self.restored = restored
        self.tail = getattr(cause, "tail", [])
        super().__init__(
            f"step '{step}' failed: {cause}; rolled back, {len(restored)} "
            "change(s) undone: the target is as it was before"
        )


@dataclass
class Outcome:
    resolved: Resolved | None
    changed: bool
    recovered: list[str] = field(default_factory=list)  # undone from an interrupted earlier run
    notes: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ digests
def shipped_digest() -> str:
    """sha256 over everything the tool installs into a target (module, hook, GRUB script)."""
    h = hashlib.sha256()
    for name, data, _ in dracut.module_files():
        h.update(name.encode() + b"\0" + data)
    h.update(kernel_hooks.HOOK_SOURCE.read_bytes())
    h.update(bootloader.GRUB_SCRIPT_SOURCE.read_bytes())
    return h.hexdigest()


def older_than_kernel(host: Host, kver: str) -> bool:
    """The kernel was (re)installed after its tmpfs-root initramfs was built."""
    try:
        return (
            host.stat(INITRD_TEMPLATE.format(kver=kver)).st_mtime
            < host.stat(KERNEL_TEMPLATE.format(kver=kver)).st_mtime
        )
    except OSError:
        return False


# -------------------------------------------------------------------- state
class DamagedState(Failure):
    """tmpfs-root's state file in the target cannot be trusted; one line saying how to recover."""

    def __init__(self, why: str, root: str | os.PathLike = "/"):
        self.why = why
        state = target_file(root, STATE_FILE)
        move = " ".join(shlex.quote(escape(p)) for p in ("mv", state, f"{state}.damaged"))
        super().__init__(
            f"{STATE_FILE} is damaged ({why}); move it aside (`{move}`), then run "
            f"`{command(root, 'remove')}` to remove the rest of tmpfs-root, or "
            f"`{command(root, 'apply')}` to set it up anew"
        )


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _state_problem(state: object) -> str | None:
    """What is wrong with a state read from the target, or None when it has the right shape."""
    if not isinstance(state, dict):
        return "not a JSON object"
    if state.get("version") != STATE_VERSION:
        return f"version {shown(state.get('version'))}, this tmpfs-root reads version {STATE_VERSION}"

    def text(v, limit=4096) -> bool:
        return isinstance(v, str) and len(v) <= limit and v.isprintable()

    def kver(v) -> bool:
        return isinstance(v, str) and KVER_RE.fullmatch(v) is not None

    checks = [
        ("boot", state.get("boot") in BOOT_MODES),
        ("entry", isinstance(state.get("entry"), str) and kver(state["entry"].removeprefix(bootloader.ENTRY_PREFIX))),
        ("kernels", isinstance(state.get("kernels"), list) and all(kver(k) for k in state["kernels"])),
        ("cmdline", isinstance(state.get("cmdline"), list) and all(text(a) for a in state["cmdline"])),
        (
            "initrds",
            isinstance(state.get("initrds"), dict)
            and all(
                kver(k)
                and isinstance(v, dict)
                and isinstance(v.get("options"), list)
                and all(text(o) for o in v["options"])
                and text(v.get("shipped"), 64)
                for k, v in state["initrds"].items()
            ),
        ),
        ("default_before", state.get("default_before") is None or text(state["default_before"], 256)),
        (
            "files",
            isinstance(state.get("files"), dict)
            and all(
                owned.owns(p) and (d is None or (isinstance(d, str) and _HEX64.fullmatch(d)))
                for p, d in state["files"].items()
            ),
        ),
        ("bootloader", isinstance(state.get("bootloader"), dict)),
        (
            "made_dirs",  # absent in the state of an older tmpfs-root
            state.get("made_dirs") is None
            or (isinstance(state["made_dirs"], list) and all(owned.may_make_dir(d) for d in state["made_dirs"])),
        ),
    ]
    bad = [key for key, ok in checks if not ok]
    return f"'{bad[0]}' is not what apply writes" if bad else None


def read_state(host: Host) -> dict | None:
    """The state apply recorded, None when there is none; raises DamagedState."""
    try:
        text = host.read_utf8(STATE_FILE, SMALL_LIMIT)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DamagedState(e.strerror or str(e), host.root) from None
    except UnsafePath as e:  # a link in tmpfs-root's own directory
        raise DamagedState(e.why, host.root) from None
    try:
        state = json.loads(text)
    except ValueError as e:
        raise DamagedState(f"not JSON: {shown(str(e), 60)}", host.root) from None
    problem = _state_problem(state)
    if problem:
        raise DamagedState(problem, host.root)
    return state


def our_initrds(host: Host) -> dict[str, str]:
    """kver -> path of every tmpfs-root initramfs in the target's /boot (names tmpfs-root
    would give; anything else there is not ours)."""
    found = {}
    for name in host.listdir("/boot"):
        if name.startswith("initrd-tmpfs-root-") and name.endswith(".img"):
            kver = name[len("initrd-tmpfs-root-") : -len(".img")]
            if KVER_RE.fullmatch(kver):
                found[kver] = f"/boot/{name}"
    return found


def _installed(host: Host, kver: str) -> bool:
    return host.exists(KERNEL_TEMPLATE.format(kver=kver))


def owned_files(host: Host) -> list[str]:
    """Every file of ours present in the target (state.json itself aside)."""
    candidates = [f"{dracut.module_path(host)}/{name}" for name, _, _ in dracut.module_files()]
    candidates += kernel_hooks.ALL_HOOKS + [
        kernel_hooks.HOOK_ENV,
        bootloader.GRUB_SCRIPT,
        bootloader.GRUB_ENV,
        bootloader.DEFAULT_DROPIN,
        PLAN_FILE,
    ]
    candidates += bootloader.our_bls_entries(host) + sorted(our_initrds(host).values())
    return [p for p in candidates if host.exists(p)]


# -------------------------------------------------------------------- apply
class _Apply:
    """The apply steps of one plan on one host; each step compares before it writes."""

    def __init__(
        self,
        plan: Plan,
        host: Host,
        devices: list[BlockDevice] | None,
        on_line: LineCallback | None,
        bl: Bootloader | None = None,
    ):
        self.plan, self.host, self.devices, self.on_line = plan, host, devices, on_line
        self.bl = bl or bootloader.detect(host)
        self.resolved = resolve(plan, host, devices)
        self.state = read_state(host) or {}
        self.options = dracut.dracut_options(plan, devices)
        self.digest = shipped_digest()
        existing = [k for k in our_initrds(host) if _installed(host, k)]
        self.kernels = sorted(set(self.resolved.kernels) | set(existing), key=version_key)
        self.stale = [k for k in our_initrds(host) if not _installed(host, k)]
        self.entry_kver = max(self.resolved.kernels, key=version_key)
        self.built = False  # an initramfs was (re)built
        self.entries_changed = False

    def steps(self) -> list[Step]:
        steps = [Step("install the dracut module", self.install_module)]
        for kver in self.kernels:
            steps.append(Step(f"build the initramfs for {kver}", partial(self.build, kver)))
        steps.append(Step("install the kernel hooks", self.install_hooks))
        steps.append(Step("write the boot entries", self.write_entries))
        if self.bl.style == "grub":
            steps.append(Step("regenerate the GRUB configuration", self.regenerate))
        if self.stale:
            steps.append(Step("remove initramfs images of removed kernels", self.remove_stale))
        steps.append(Step(f"set the boot mode ({self.plan.boot})", self.boot_mode))
        steps.append(Step("record the state", self.record))
        return steps

    def install_module(self):
        return None if dracut.install_module(self.host) else "unchanged"

    def build(self, kver: str):
        initrd = INITRD_TEMPLATE.format(kver=kver)
        built = self.state.get("initrds", {}).get(kver, {})
        current = (
            built.get("options") == self.options
            and built.get("shipped") == self.digest
            and self.host.exists(initrd)
            and self.state.get("files", {}).get(initrd) == self.host.sha256(initrd)
            and not older_than_kernel(self.host, kver)
        )
        if current:
            return "unchanged"
        dracut.build_initramfs(self.host, self.plan, kver, initrd, self.devices, self.on_line)
        self.built = True
        self.state.setdefault("initrds", {})[kver] = {"options": self.options, "shipped": self.digest}
        return None

    def install_hooks(self):
        changed = kernel_hooks.install_hooks(
            self.host, self.bl, self.options, self.resolved.title, self.resolved.entry_cmdline
        )
        return None if changed else "unchanged"

    def write_entries(self):
        self.entries_changed = bootloader.write_entries(self.host, self.bl, self.resolved, self.kernels, self.plan.boot)
        return None if self.entries_changed else "unchanged"

    def regenerate(self):
        entries_ok = all(bootloader.config_has_entry(self.host, self.bl, k) for k in self.kernels)
        if entries_ok and not self.built and not self.entries_changed:
            return "unchanged"
        bootloader.regenerate(self.host, self.bl, self.on_line, expect=self.kernels)
        return None

    def remove_stale(self):
        for kver in self.stale:
            self.host.remove(INITRD_TEMPLATE.format(kver=kver))
            self.host.remove(bootloader.bls_path(kver))
        return None

    def boot_mode(self):
        env = bootloader.grubenv(self.host, self.bl)
        wanted = bootloader.entry_id(self.entry_kver)
        if self.plan.boot in ("once", "default"):  # never arm an entry GRUB does not have
            bootloader.check_entries(self.host, self.bl, [self.entry_kver])
        if self.plan.boot == "once":
            if env.get("next_entry") == wanted:
                return "unchanged"
            bootloader.set_boot_once(self.host, self.bl, self.entry_kver, self.on_line)
        elif self.plan.boot == "default":
            if env.get("saved_entry") == wanted:
                return "unchanged"
            before = env.get("saved_entry")
            if before is None or (
                not before.startswith(bootloader.ENTRY_PREFIX) and before.isprintable() and len(before) <= 256
            ):
                self.state["default_before"] = before
            bootloader.set_default(self.host, self.bl, self.entry_kver, self.on_line)
        else:
            ours = [
                v
                for k, v in env.items()
                if k in ("next_entry", "saved_entry") and v.startswith(bootloader.ENTRY_PREFIX)
            ]
            if not ours:
                return "unchanged"
            bootloader.clear_boot_modes(self.host, self.bl, self.state.get("default_before"), self.on_line)
        return None

    def record(self):
        changed = self.host.write_file(PLAN_FILE, self.plan.to_toml())
        files = {p: self.host.sha256(p) for p in owned_files(self.host)}
        # The directories apply made (this time or before) that are still there: remove takes
        # them away again when they are empty, and never one the system had before apply.
        made = set(self.state.get("made_dirs", [])) | set(self.host.made_dirs())
        made_dirs = sorted(d for d in made if owned.may_make_dir(d) and not _in_backup_area(d) and self.host.is_dir(d))
        state = {
            "version": STATE_VERSION,
            "bootloader": self.bl.to_json(),
            "boot": self.plan.boot,
            "entry": bootloader.entry_id(self.entry_kver),
            "kernels": self.kernels,
            "cmdline": self.resolved.cmdline,
            "initrds": {k: v for k, v in self.state.get("initrds", {}).items() if k in self.kernels},
            "default_before": self.state.get("default_before"),
            "files": files,
            "made_dirs": made_dirs,
        }
        changed |= self.host.write_file(STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")
        return None if changed else "unchanged"


def apply_steps(
    plan: Plan, host: Host, devices: list[BlockDevice] | None = None, on_line: LineCallback | None = None
) -> tuple[Resolved, list[Step]]:
    """The steps of ``apply``, in order, bound to *host*."""
    a = _Apply(plan, host, devices, on_line)
    return a.resolved, a.steps()


def record(plan: Plan, host: Host, devices: list[BlockDevice] | None = None) -> Resolved:
    """Run every step on a dry-run *host*; its actions are then what apply would do."""
    assert host.dry_run
    resolved, steps = apply_steps(plan, host, devices)
    for step in steps:
        step.action()
    return resolved


# ------------------------------------------------------------ running steps
@contextmanager
def locked(host: Host) -> Iterator[None]:
    """One transaction at a time per target (the lock lives on this machine, not in the target).

    The lock file is removed when the transaction ends, while it is still held; whoever
    opened it meanwhile finds, once it holds the lock, that it no longer is the file at that
    name, and starts over (so two runs never both think they hold it)."""
    if host.dry_run:
        yield
        return
    name = hashlib.sha256(str(host.root).encode()).hexdigest()[:16] + ".lock"
    dir_fd = _lock_dir()
    try:
        while True:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise HostError(f"another tmpfs-root is changing {host.root}; wait for it to finish") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # removed by the run that just ended: take the new one
        try:
            yield
        finally:
            os.unlink(name, dir_fd=dir_fd)
            os.close(fd)
    finally:
        os.close(dir_fd)


def _lock_dir() -> int:
    """An fd of LOCK_DIR, made if needed: a directory of root's alone, reached through no
    symbolic link (nobody else can plant a link in it, or hold a lock that blocks every
    apply)."""
    lock_dir = os.environ.get("TMPFS_ROOT_LOCK_DIR", LOCK_DIR)
    try:
        return open_private_dir(lock_dir)
    except FileRefused as e:
        raise Failure(
            f"the lock directory {shown(lock_dir)} is not private to root: {e.strerror}; accepted: a "
            "directory of root's alone (0700) reached through no symbolic link (a missing one is made)"
        ) from None
    except OSError as e:
        raise Failure(f"cannot open or make the lock directory {shown(lock_dir)}: {e.strerror} (run as root)") from None


def recover(host: Host) -> list[str]:
    """Roll back what an interrupted (killed) earlier run left; returns the paths restored."""
    if host.dry_run:
        return []
    journal = host.pending_journal()
    return host.rollback(journal) if journal else []


def run_steps(
    host: Host, steps: list[Step], on_step: StepCallback | None = None, cancel: CancelToken | None = None
) -> dict[str, str]:
    """Run *steps* in order; on any failure, interrupt or cancel roll all of them back and raise
    (TransactionError, or Cancelled when *cancel* was asked)."""
    notes: dict[str, str] = {}
    total = len(steps)
    i, step = 0, steps[0]
    if cancel:
        cancel.on_cancel(host.terminate)
    try:
        for i, step in enumerate(steps):
            if cancel:
                cancel.check(f"'{step.name}'")
            if on_step:
                on_step(i, total, step.name, "start", "")
            result = step.action()
            note = result if isinstance(result, str) else ""  # a step may return whether it changed
            notes[step.name] = note
            if on_step:
                on_step(i, total, step.name, "done", note)
    except BaseException as e:
        if on_step:
            on_step(i, total, step.name, "failed", str(e))
        restored = host.rollback()
        if cancel and cancel.cancelled:
            stopped = Cancelled(
                f"step '{step.name}' failed: cancelled by the user; rolled back, "
                f"{len(restored)} change(s) undone: the target is as it was before"
            )
            stopped.step, stopped.restored = step.name, restored  # type: ignore[attr-defined]
            raise stopped from e
        if isinstance(e, Exception):
            raise TransactionError(step.name, e, restored) from e
        raise
    host.commit()
    return notes


def apply(
    plan: Plan,
    host: Host,
    devices: list[BlockDevice] | None = None,
    *,
    on_line: LineCallback | None = None,
    on_step: StepCallback | None = None,
    cancel: CancelToken | None = None,
) -> Outcome:
    """Convert the target: validated *plan* in, every step done or none."""
    with locked(host):
        recovered = recover(host)
        resolved, steps = apply_steps(plan, host, devices, on_line)
        notes = run_steps(host, steps, on_step, cancel)
    changed = any(note != "unchanged" for note in notes.values())
    return Outcome(resolved, changed, recovered, notes)


# ------------------------------------------------------------------- remove
def _in_backup_area(path: str) -> bool:
    """Below the backup area, which clearing it removes."""
    return path.startswith(owned.BACKUP_DIR + "/")


def _holds_backups(path: str) -> bool:
    """The backup area or a directory above it: in use by the journal until the removal is done."""
    return path == owned.BACKUP_DIR or owned.BACKUP_DIR.startswith(path + "/")


def _made_dirs(state: dict) -> list[str]:
    """The directories apply made, as its state records them, deepest first."""
    return sorted(state.get("made_dirs") or [], key=lambda d: (-d.count("/"), d))


def remove_made_dirs(host: Host, dirs: list[str]) -> str | None:
    """Remove those of *dirs* (deepest first) that are empty; a note when none was."""
    removed = [d for d in dirs if host.remove_empty_dir(d)]
    return None if removed else "none empty"


def remove_steps(host: Host, on_line: LineCallback | None = None) -> list[Step]:
    bl = bootloader.detect(host)
    state = read_state(host) or {}
    made = [d for d in _made_dirs(state) if not _holds_backups(d)]

    def clear_modes():
        bootloader.clear_boot_modes(host, bl, state.get("default_before"), on_line)

    def initrds():
        for path in our_initrds(host).values():
            host.remove(path)
            host.remove(f"{path}.new")

    steps = [
        Step("clear the boot-once and default entry", clear_modes),
        Step("remove the boot entries", lambda: bootloader.remove_entries(host)),
        Step("remove the kernel hooks", lambda: kernel_hooks.remove_hooks(host)),
        Step("remove the initramfs images", initrds),
        Step("remove the dracut module", lambda: dracut.remove_module(host)),
    ]
    if bl.style == "grub":
        steps.append(Step("regenerate the GRUB configuration", lambda: bootloader.regenerate(host, bl, on_line)))
    steps.append(Step("remove the state", lambda: host.remove_tree(STATE_DIR)))
    if made:
        steps.append(Step("remove the directories apply made", lambda: remove_made_dirs(host, made)))
    return steps


def is_installed(host: Host) -> bool:
    return host.exists(STATE_FILE) or bool(owned_files(host))


def remove(
    host: Host,
    *,
    on_line: LineCallback | None = None,
    on_step: StepCallback | None = None,
    cancel: CancelToken | None = None,
) -> Outcome:
    """Undo apply: everything the tool did not create is as it was before."""
    with locked(host):
        recovered = recover(host)
        if not is_installed(host):
            return Outcome(None, False, recovered)
        area = [d for d in _made_dirs(read_state(host) or {}) if _holds_backups(d)]
        notes = run_steps(host, remove_steps(host, on_line), on_step, cancel)
        host.drop_backups()  # the removal is complete: nothing left to restore
        remove_made_dirs(host, area)  # /var/lib and /var, when apply made them for the backups
    return Outcome(None, True, recovered, notes)


# ------------------------------------------------------------------- status
def status(host: Host) -> dict:
    """What is installed and whether it still matches what apply wrote; a damaged state file
    or journal is reported (in "damaged" and "problems"), never raised."""
    bl = bootloader.detect(host)
    report: dict = {
        "installed": False,
        "bootloader": bl.to_json(),
        "problems": [],
        "files": [],
        "kernels": [],
        "interrupted": False,
        "damaged": [],
    }
    problems = report["problems"]
    try:
        report["interrupted"] = bool(host.pending_journal())
        if report["interrupted"]:
            problems.append("an apply or remove was interrupted: the next run rolls it back first")
    except DamagedJournal as e:
        report["interrupted"] = True
        report["damaged"].append(owned.JOURNAL)
        problems.append(str(e))
    try:
        state = read_state(host)
    except DamagedState as e:
        report["installed"] = True
        report["damaged"].append(STATE_FILE)
        problems.append(str(e))
        return report
    report["installed"] = state is not None
    if state is None:
        if owned_files(host):
            problems.append(f"files of tmpfs-root are present but no state: run `{command(host.root, 'remove')}`")
        return report
    report.update(boot=state.get("boot"), entry=state.get("entry"), cmdline=" ".join(state.get("cmdline", [])))
    for path, digest in sorted(state.get("files", {}).items()):
        now = host.sha256(path)
        mark = "ok" if now == digest else ("missing" if now is None else "modified")
        report["files"].append({"path": path, "state": mark})
        if mark != "ok":
            problems.append(f"{path} is {mark} since apply")
    shipped = shipped_digest()
    initrds = our_initrds(host)
    reapply = f"run `{command(host.root, 'apply', '--plan', target_file(host.root, PLAN_FILE))}`"
    for kver in sorted(set(state.get("kernels", [])) | set(initrds), key=version_key):
        initrd = INITRD_TEMPLATE.format(kver=kver)
        built = state.get("initrds", {}).get(kver, {})
        k = {
            "kver": kver,
            "initrd": initrd if kver in initrds else None,
            "entry": bootloader.config_has_entry(host, bl, kver),
            "older_than_kernel": kver in initrds and older_than_kernel(host, kver),
            "module_changed": built.get("shipped") not in (None, shipped),
        }
        report["kernels"].append(k)
        if k["initrd"] is None:
            problems.append(f"{initrd} is missing: {reapply}")
        if not k["entry"]:
            problems.append(f"no boot entry for {kver} in {bl.config}: {reapply}")
        if k["older_than_kernel"]:
            problems.append(f"{initrd} is older than its kernel: {reapply}")
        if k["module_changed"]:
            problems.append(f"{initrd} was built with another version of the module: {reapply}")
    env = bootloader.grubenv(host, bl)
    report["boot_once_pending"] = env.get("next_entry", "").startswith(bootloader.ENTRY_PREFIX)
    report["default_is_ours"] = env.get("saved_entry", "").startswith(bootloader.ENTRY_PREFIX)
    if state.get("boot") == "default" and not report["default_is_ours"]:
        problems.append("the default entry is no longer tmpfs-root's (changed since apply)")
    return report
