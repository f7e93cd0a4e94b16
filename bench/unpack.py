#!/usr/bin/env python3
"""Benchmark: how fast each image format populates a fresh tmpfs (run by hand, as root).

For each format: archive size, the time `tmpfs-root image create` takes, and the time to
populate a fresh tmpfs with exactly the module's unpack code (tr_unpack from
tmpfs-root-lib.sh, under dash). Beside them: the original module's `tar xpzf` on the gzip
image, the blog recipe's `xz -d | tar -x` on the xz image, and the floor (an uncompressed
tar from page cache; `cp -a` of the tree). All archives are made first and synced; then
each method runs RUNS times in rotation, from page cache, into a new tmpfs each time;
best and median are reported, as a table and as JSON.

    python3 bench/unpack.py [--tree DIR] [--runs 3] [--json bench/results/unpack.json]

The default tree is the Debian 12 system the test suite debootstraps
(/var/cache/tmpfs-root-tests/target-bookworm-*, made by `python3 -m pytest -m qemu`).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tui.dracut import MODULE_SOURCE  # noqa: E402
from tui.image_create import COMPRESSORS, create, make_plan  # noqa: E402

LIB = MODULE_SOURCE / "tmpfs-root-lib.sh"
FORMAT_NAMES = {"zst": "zstd", "gz": "gzip", "xz": "xz", "lz4": "lz4", "tar": "tar"}


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


def timed_into_tmpfs(command: list[str], runs: int, env=None) -> list[float]:
    times = []
    for _ in range(runs):
        dest = tmpfs()
        run = Path(tempfile.mkdtemp(prefix="bench-run-"))
        argv = [a.replace("@DEST@", str(dest)).replace("@RUN@", str(run)) for a in command]
        t0 = time.perf_counter()
        subprocess.run(
            argv,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TR_RUN": str(run), **(env or {})},
        )
        times.append(time.perf_counter() - t0)
        drop(dest)
        subprocess.run(["rm", "-rf", str(run)], check=True)
    return times


def module_unpack(archive: Path, fmt: str) -> list[str]:
    script = f'. "{LIB}"; tr_unpack "{archive}" {fmt} @DEST@ "" || exit 1'
    return ["dash", "-c", script]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", help="the root filesystem to pack (default: the test suite's Debian target)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", default=str(REPO / "bench/results/unpack.json"))
    ap.add_argument("--work", default="/var/tmp", help="where the archives are written")
    args = ap.parse_args()
    tree = Path(args.tree or sorted(glob.glob("/var/cache/tmpfs-root-tests/target-bookworm-*"))[-1])
    files = sum(len(d) + len(f) for _, d, f in os.walk(tree))
    size = int(subprocess.run(["du", "-sb", str(tree)], capture_output=True, text=True).stdout.split()[0])
    print(f"tree: {tree} ({size / 1e6:.0f} MB, {files} entries), {args.runs} runs each, cores: {os.cpu_count()}")
    work = Path(tempfile.mkdtemp(prefix="tmpfs-root-bench-", dir=args.work))
    archives, pack_s = {}, {}
    for fmt in COMPRESSORS:  # every archive first, then sync: no writeback during the timings
        out = work / f"root.tar.{fmt}".replace(".tar.tar", ".tar")
        t0 = time.perf_counter()
        create(make_plan(str(tree), str(out), fmt))
        pack_s[fmt] = time.perf_counter() - t0
        archives[fmt] = out
        print(f"created {out.name}: {out.stat().st_size / 1e6:.0f} MB in {pack_s[fmt]:.1f} s", flush=True)
    subprocess.run(["sync"], check=True)
    methods = [
        (
            f"module, {fmt}" + (" (default)" if fmt == "zst" else ""),
            archives[fmt],
            pack_s[fmt],
            module_unpack(archives[fmt], FORMAT_NAMES[fmt]),
        )
        for fmt in COMPRESSORS
    ]
    methods += [
        ("original module: tar xpzf", archives["gz"], None, ["tar", "xpzf", str(archives["gz"]), "-C", "@DEST@"]),
        ("blog: xz -d | tar -x", archives["xz"], None, ["sh", "-c", f'xz -d < "{archives["xz"]}" | tar -x -C @DEST@']),
        (
            "floor: plain tar from page cache",
            archives["tar"],
            None,
            ["tar", "-xf", str(archives["tar"]), "-C", "@DEST@"],
        ),
        ("floor: cp -a of the tree", None, None, ["cp", "-a", f"{tree}/.", "@DEST@"]),
    ]
    for archive in archives.values():
        warm(archive)
    times: dict[str, list[float]] = {m[0]: [] for m in methods}
    for _ in range(args.runs):  # round robin, so drift on the machine spreads over all methods
        for name, archive, _, command in methods:
            if archive:
                warm(archive)
            times[name] += timed_into_tmpfs(command, 1)
    rows = [
        {
            "method": name,
            "size_mb": archive.stat().st_size / 1e6 if archive else None,
            "pack_s": packed,
            "times": times[name],
        }
        for name, archive, packed, _ in methods
    ]
    for r in rows:
        r["best_s"], r["median_s"] = min(r["times"]), statistics.median(r["times"])
    floor = next(r for r in rows if r["method"].startswith("floor: plain"))["best_s"]
    gzip_path = next(r for r in rows if r["method"].startswith("original"))["best_s"]
    xz_path = next(r for r in rows if r["method"].startswith("blog"))["best_s"]
    print("\n| method | archive MB | create s | unpack best s | median s | vs floor | vs tar xzf | vs xz\\|tar |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        size_mb = f"{r['size_mb']:.0f}" if r["size_mb"] else "–"
        pack_s = f"{r['pack_s']:.1f}" if r["pack_s"] else "–"
        print(
            f"| {r['method'].replace('|', chr(92) + '|')} | {size_mb} | {pack_s} | "
            f"{r['best_s']:.2f} | {r['median_s']:.2f} | "
            f"{r['best_s'] / floor:.2f}× | {gzip_path / r['best_s']:.1f}× faster | "
            f"{xz_path / r['best_s']:.1f}× faster |"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps({"tree": str(tree), "tree_bytes": size, "entries": files, "runs": args.runs, "rows": rows}, indent=2)
    )
    print(f"\nJSON: {args.json}")
    subprocess.run(["rm", "-rf", str(work)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
