#!/usr/bin/env python3
"""Benchmark: how fast each image format populates a fresh tmpfs (run by hand, as root).

For each format: archive size, the time `tmpfs-root image create` takes, and the time to
populate a fresh tmpfs with exactly the module's unpack code (tr_unpack from
the module's libraries, under dash). The default, sharded image also runs with its sha256
pinned, and on one core (taskset -c 0) beside all of them; the single-stream zstd image
(--shards 1) is the previous default. Beside them: the original module's `tar xpzf` on
the gzip image, the blog recipe's `xz -d | tar -x` on the xz image, and the floor (one
plain tar of the uncompressed tree from page cache; `cp -a` of the tree). All archives are
made first and synced; then each method runs RUNS times in rotation, from page cache, into
a new tmpfs each time; best and median are reported, with the peak memory of the unpack's
processes (their resident sets summed, plus what the unpack holds in its run directory, a
tmpfs of its own as the initramfs's /run is, where a pinned image's parts are verified
before they are unpacked; sampled every 10 ms: the new root itself is not in it), as a table
and as JSON, followed by the scaling estimate for more cores. `--compare-lib REV` adds the
pinned run with the module's library of git revision REV (e.g. the one before
verify-before-effect, d7d999b).

    python3 bench/unpack.py [--tree DIR] [--runs 3] [--json bench/results/unpack.json] [--compare-lib REV]

The default tree is the Debian 12 system the test suite debootstraps
(/var/cache/tmpfs-root-tests/target-bookworm-*, made by `python3 -m pytest -m qemu`).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tui import image_index  # noqa: E402
from tui.dracut import MODULE_SOURCE  # noqa: E402
from tui.image_create import create, make_plan  # noqa: E402

#: The module's libraries, in the order /sbin/tmpfs-root-fill sources them.
LIBS = [MODULE_SOURCE / f"tmpfs-root{name}-lib.sh" for name in ("", "-img", "-url", "-shards")]


def tmpfs(size: str = "4g"):
    where = Path(tempfile.mkdtemp(prefix="bench-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    return where


def drop(where: Path) -> None:
    subprocess.run(["umount", str(where)], check=True)
    where.rmdir()


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def _session_rss(session: int) -> int:
    """Resident bytes of every process of *session* (the unpack and all it started)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat: the session id
            total += int(fields[21]) * page  # field 24: rss in pages
    return total


def timed_into_tmpfs(command: list[str], runs: int, env=None) -> tuple[list[float], int]:
    """Times of *runs* runs, and the highest memory seen in any of them: the processes'
    resident sets summed, plus what the unpack holds in its run directory (a tmpfs of its
    own, as the initramfs's /run is: a pinned image's parts are verified there before they
    are unpacked)."""
    times, peak = [], 0
    for _ in range(runs):
        dest = tmpfs()
        run = tmpfs("2g")
        argv = [a.replace("@DEST@", str(dest)).replace("@RUN@", str(run)) for a in command]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TR_RUN": str(run), **(env or {})},
            start_new_session=True,
        )
        while proc.poll() is None:
            peak = max(peak, _session_rss(proc.pid) + shutil.disk_usage(run).used)
            time.sleep(0.01)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{argv} failed with {proc.returncode}")
        drop(dest)
        drop(run)
    return times, peak


def module_unpack(
    archive: Path, fmt: str, sha: str = "", cores: str | None = None, libs: list[Path] | None = None
) -> list[str]:
    sources = "".join(f'. "{lib}"; ' for lib in libs or LIBS)
    script = f'{sources}tr_unpack "{archive}" {fmt} @DEST@ "{sha}" || exit 1'
    return (["taskset", "-c", cores] if cores else []) + ["dash", "-c", script]


def old_lib(rev: str, work: Path) -> list[Path]:
    """The module's libraries as they were at git revision *rev* (one file before they were
    split), written into *work*."""
    paths = []
    for lib in LIBS:
        rel = lib.relative_to(REPO)
        r = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{rel}"], capture_output=True)
        if r.returncode != 0:
            continue
        paths.append(work / f"{lib.stem}-{rev}.sh")
        paths[-1].write_bytes(r.stdout)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", help="the root filesystem to pack (default: the test suite's Debian target)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", default=str(REPO / "bench/results/unpack.json"))
    ap.add_argument("--work", default="/var/tmp", help="where the archives are written")
    ap.add_argument("--skip-xz", action="store_true", help="leave out xz (4 minutes to pack)")
    ap.add_argument(
        "--compare-lib",
        metavar="REV",
        help="also run the pinned sharded unpack with the module's library as it was at git revision REV",
    )
    args = ap.parse_args()
    tree = Path(args.tree or sorted(glob.glob("/var/cache/tmpfs-root-tests/target-bookworm-*"))[-1])
    files = sum(len(d) + len(f) for _, d, f in os.walk(tree))
    size = int(subprocess.run(["du", "-sb", str(tree)], capture_output=True, text=True).stdout.split()[0])
    print(f"tree: {tree} ({size / 1e6:.0f} MB, {files} entries), {args.runs} runs each, cores: {os.cpu_count()}")
    work = Path(tempfile.mkdtemp(prefix="tmpfs-root-bench-", dir=args.work))
    # name -> (format, --shards)
    kinds = {"sharded": ("zst", "auto"), "zst": ("zst", 1), "gz": ("gz", 1), "xz": ("xz", 1)}
    kinds |= {"lz4": ("lz4", 1), "tar": ("tar", 1)}
    if args.skip_xz:
        del kinds["xz"]
    archives, pack_s, shas = {}, {}, {}
    for name, (fmt, shards) in kinds.items():  # every archive first, then sync: no writeback during timings
        out = work / f"root-{name}.tar.{fmt}".replace(".tar.tar", ".tar")
        t0 = time.perf_counter()
        made = create(make_plan(str(tree), str(out), fmt, shards=shards))
        pack_s[name] = time.perf_counter() - t0
        archives[name], shas[name] = out, made.pin or made.sha256  # the boot's pin
        print(f"created {out.name}: {out.stat().st_size / 1e6:.0f} MB in {pack_s[name]:.1f} s", flush=True)
    subprocess.run(["sync"], check=True)
    with open(archives["sharded"], "rb") as f:
        shards = len(image_index.read(f.fileno()).shards)
    fmt_of = {"sharded": "sharded", "zst": "zstd", "gz": "gzip", "xz": "xz", "lz4": "lz4", "tar": "tar"}
    methods = [
        (
            f"module, sharded zst (default, {shards} shards, 2 cores)",
            "sharded",
            pack_s["sharded"],
            module_unpack(archives["sharded"], "sharded"),
        ),
        (
            "module, sharded zst, sha256 pinned",
            "sharded",
            None,
            module_unpack(archives["sharded"], "sharded", shas["sharded"]),
        ),
        ("module, sharded zst, 1 core", "sharded", None, module_unpack(archives["sharded"], "sharded", cores="0")),
        *(
            [
                (
                    f"module at {args.compare_lib}, sharded zst, sha256 pinned",
                    "sharded",
                    None,
                    module_unpack(
                        archives["sharded"], "sharded", shas["sharded"], libs=old_lib(args.compare_lib, work)
                    ),
                )
            ]
            if args.compare_lib
            else []
        ),
        ("module, zst one stream (--shards 1)", "zst", pack_s["zst"], module_unpack(archives["zst"], "zstd")),
        ("module, zst one stream, 1 core", "zst", None, module_unpack(archives["zst"], "zstd", cores="0")),
    ]
    methods += [
        (f"module, {name}", name, pack_s[name], module_unpack(archives[name], fmt_of[name]))
        for name in ("gz", "xz", "lz4", "tar")
        if name in archives
    ]
    methods += [
        ("original module: tar xpzf", "gz", None, ["tar", "xpzf", str(archives["gz"]), "-C", "@DEST@"]),
        (
            "floor: plain tar from page cache",
            "tar",
            None,
            ["tar", "-xf", str(archives["tar"]), "-C", "@DEST@"],
        ),
        ("floor: cp -a of the tree", None, None, ["cp", "-a", f"{tree}/.", "@DEST@"]),
    ]
    if "xz" in archives:
        methods.insert(
            -2, ("blog: xz -d | tar -x", "xz", None, ["sh", "-c", f'xz -d < "{archives["xz"]}" | tar -x -C @DEST@'])
        )
    for archive in archives.values():
        warm(archive)
    times: dict[str, list[float]] = {m[0]: [] for m in methods}
    peaks: dict[str, int] = {m[0]: 0 for m in methods}
    for _ in range(args.runs):  # round robin, so drift on the machine spreads over all methods
        for name, kind, _, command in methods:
            if kind:
                warm(archives[kind])
            took, peak = timed_into_tmpfs(command, 1)
            times[name] += took
            peaks[name] = max(peaks[name], peak)
    rows = [
        {
            "method": name,
            "size_mb": archives[kind].stat().st_size / 1e6 if kind else None,
            "pack_s": packed,
            "times": times[name],
            "peak_rss_mb": peaks[name] / 1e6,
        }
        for name, kind, packed, _ in methods
    ]
    for r in rows:
        r["best_s"], r["median_s"] = min(r["times"]), statistics.median(r["times"])

    def best(prefix: str) -> float:
        return next(r for r in rows if r["method"].startswith(prefix))["best_s"]

    floor, gzip_path = best("floor: plain"), best("original")
    xz_path = best("blog") if "xz" in archives else None
    print(
        "\n| method | archive MB | create s | unpack best s | median s | peak MB | vs floor "
        "| vs tar xzf | vs xz\\|tar |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        size_mb = f"{r['size_mb']:.0f}" if r["size_mb"] else "–"
        pack_s_ = f"{r['pack_s']:.1f}" if r["pack_s"] else "–"
        vs_xz = f"{xz_path / r['best_s']:.1f}× faster" if xz_path else "–"
        print(
            f"| {r['method'].replace('|', chr(92) + '|')} | {size_mb} | {pack_s_} | "
            f"{r['best_s']:.2f} | {r['median_s']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{r['best_s'] / floor:.2f}× | {gzip_path / r['best_s']:.1f}× faster | {vs_xz} |"
        )
    # Scaling: T(n) = serial + work / n, from the 1-core and 2-core runs of the sharded image.
    t1, t2 = best("module, sharded zst, 1 core"), best("module, sharded zst (default")
    work_s, serial = 2 * (t1 - t2), max(0.0, 2 * t2 - t1)
    estimate = {n: serial + work_s / n for n in (16, 64)}
    print(
        f"\nscaling: 1 core {t1:.2f} s, 2 cores {t2:.2f} s ({t1 / t2:.2f}×); parallel work {work_s:.2f} core-s, "
        f"serial {serial:.2f} s; per core {size / 1e6 / work_s:.0f} MB/s of tree"
    )
    for n, t in estimate.items():
        print(f"  estimate for {n} cores (shards permitting, memory bandwidth aside): {t:.2f} s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {
                "tree": str(tree),
                "tree_bytes": size,
                "entries": files,
                "runs": args.runs,
                "cores": os.cpu_count(),
                "shards": shards,
                "rows": rows,
                "scaling": {"t1": t1, "t2": t2, "work_core_s": work_s, "serial_s": serial, "estimate": estimate},
            },
            indent=2,
        )
    )
    print(f"\nJSON: {args.json}")
    subprocess.run(["rm", "-rf", str(work)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
