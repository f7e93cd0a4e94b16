#!/usr/bin/env python3
"""Render the benchmark tables of docs/benchmarks.md from the result files the benchmarks
write (bench/results/unpack.json from bench/unpack.py, bench/results/startup.json from
`bench/startup.py --json bench/results/startup.json`).

    python3 bench/report.py                          # print the tables of the results present
    python3 bench/report.py --write docs/benchmarks.md   # replace the doc's generated blocks

Each table goes between `<!-- bench/report.py: NAME -->` and `<!-- end NAME -->` in the doc;
a block whose result file is missing (bench/results is not in git) is left as it is, so the
doc keeps the last numbers measured, with their date. The date is the result file's
modification time (UTC), the day the benchmark wrote it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _date(path: Path) -> str:
    return datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC).date().isoformat()


def unpack_table(path: Path) -> str:
    """The table bench/unpack.py prints, from its JSON, under a line saying when and on what."""
    data = json.loads(path.read_text())
    rows = data["rows"]

    def best(prefix: str) -> float | None:
        return next((r["best_s"] for r in rows if r["method"].startswith(prefix)), None)

    floor, gzip_path, xz_path = best("floor: plain"), best("original"), best("blog")
    lines = [
        f"Measured {_date(path)} on a {data.get('cores', '?')}-core machine, tree `{data.get('tree', '?')}` "
        f"({data['tree_bytes'] / 1e6:.0f} MB, {data['entries']:,} entries), best of {data['runs']} "
        f"(`{path.name}`):",
        "",
        "| method | archive MB | create s | unpack best s | median s | peak MB | vs floor | vs tar xzf | vs xz\\|tar |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        size_mb = f"{r['size_mb']:.0f}" if r.get("size_mb") else "–"
        pack_s = f"{r['pack_s']:.1f}" if r.get("pack_s") else "–"
        vs_floor = f"{r['best_s'] / floor:.2f}×" if floor else "–"
        vs_gzip = f"{gzip_path / r['best_s']:.1f}× faster" if gzip_path else "–"
        vs_xz = f"{xz_path / r['best_s']:.1f}× faster" if xz_path else "–"
        lines.append(
            f"| {r['method'].replace('|', chr(92) + '|')} | {size_mb} | {pack_s} | {r['best_s']:.2f} | "
            f"{r['median_s']:.2f} | {r['peak_rss_mb']:.0f} | {vs_floor} | {vs_gzip} | {vs_xz} |"
        )
    return "\n".join(lines)


def startup_table(path: Path) -> str:
    """The table bench/startup.py prints, from its JSON."""
    data = json.loads(path.read_text())
    rows = data["results"]
    lines = [
        f"Measured {_date(path)}, Python {data.get('python', '?')}, {rows[0]['runs']} runs each (`{path.name}`):",
        "",
        "| program | until on screen | best s | median s | × bare |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['program']} | {r['until']} | {r['best_s']:.3f} | {r['median_s']:.3f} | {r.get('vs_bare', 0):.2f}× |"
        )
    return "\n".join(lines)


TABLES = {"unpack": unpack_table, "startup": startup_table}


def render(results: Path) -> dict[str, str]:
    """Each table whose result file is present: its name → its markdown."""
    return {
        name: make(results / f"{name}.json") for name, make in TABLES.items() if (results / f"{name}.json").exists()
    }


def replace_blocks(doc: str, tables: dict[str, str]) -> str:
    for name, table in tables.items():
        pattern = re.compile(rf"(<!-- bench/report.py: {name} -->\n).*?(\n<!-- end {name} -->)", re.S)
        if not pattern.search(doc):
            raise SystemExit(f"bench/report.py: no block for {name} in the doc")
        doc = pattern.sub(lambda m, table=table: m.group(1) + table + m.group(2), doc)
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "bench/results", help="where the JSON files are")
    ap.add_argument("--write", type=Path, help="the markdown file whose generated blocks to replace")
    args = ap.parse_args()
    tables = render(args.results)
    if not tables:
        print(f"bench/report.py: no result files in {args.results}; nothing to render", file=sys.stderr)
        return 0
    if args.write:
        args.write.write_text(replace_blocks(args.write.read_text(), tables))
        print(f"bench/report.py: {', '.join(tables)} written into {args.write}", file=sys.stderr)
    else:
        print("\n\n".join(tables.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
