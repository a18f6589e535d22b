#!/usr/bin/env python3
"""Plots benchmark tables (bench/results/*.md) as an SVG line chart, with nothing but the
standard library: one line per series, the x axis a row's column (log scale), the y axis a
latency or throughput column.

Usage: bench/plot.py OUT.svg TITLE X-COLUMN Y-COLUMN[,Y-COLUMN...] SERIES...
  SERIES is LABEL=FILE:REGEX: the rows of FILE matching REGEX, a row read as its cells
  joined by " | " (operation | ready tasks | durability | workers | ...).
Example (claim cost against store size, both backends):
  bench/plot.py docs/scale.svg "claim p99 against ready tasks" "ready tasks" "p99 ms" \\
    "embedded=bench/results/scale-embedded-X.md:^claim→complete \\| \\d+ \\| full \\| 16 " \\
    "PostgreSQL=bench/results/scale-postgres-X.md:^claim→complete \\| \\d+ \\| full \\| 16 "
"""
import math
import re
import sys

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def number(cell):
    """The number in a cell ("1,234/s", "0.35", "10000"), or None."""
    m = re.search(r"-?[\d,]*\.?\d+", cell)
    return float(m.group(0).replace(",", "")) if m else None


def rows(path):
    """Each table row of a results file as {column: cell}, under the header above it."""
    header = None
    for line in open(path, encoding="utf-8"):
        if not line.startswith("|"):
            header = None if not line.strip() else header
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "operation":
            header = cells
        elif header and not cells[0].startswith("---"):
            yield dict(zip(header, cells))


def series(spec, x_col, y_cols):
    """(label, [(x, y)]) per y column for one LABEL=FILE:REGEX."""
    label, rest = spec.split("=", 1)
    path, pattern = rest.split(":", 1)
    found = {y: [] for y in y_cols}
    for row in rows(path):
        if not re.search(pattern, " | ".join(row.values())):
            continue
        x = number(row.get(x_col, ""))
        for y in y_cols:
            v = number(row.get(y, ""))
            if x and v is not None:
                found[y].append((x, v))
    for y, points in found.items():
        name = label if len(y_cols) == 1 else f"{label}, {y}"
        yield name, sorted(points)


def svg(title, x_label, y_label, lines):
    w, h, left, right, top, bottom = 720, 420, 70, 190, 40, 50
    xs = [x for _, pts in lines for x, _ in pts]
    ys = [y for _, pts in lines for _, y in pts]
    if not xs:
        sys.exit("no rows matched")
    lx0, lx1 = math.log10(min(xs)), math.log10(max(xs))
    if lx1 - lx0 < 1e-9:
        lx0, lx1 = lx0 - 0.5, lx1 + 0.5
    y1 = max(ys) * 1.1 or 1.0
    px = lambda x: left + (math.log10(x) - lx0) / (lx1 - lx0) * (w - left - right)
    py = lambda y: h - bottom - y / y1 * (h - top - bottom)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
        f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">{x_label} (log scale)</text>',
        f'<text x="16" y="{(top + h - bottom) / 2}" text-anchor="middle" transform="rotate(-90 16 {(top + h - bottom) / 2})">{y_label}</text>',
    ]
    for e in range(math.floor(lx0), math.ceil(lx1) + 1):
        x = 10**e
        if lx0 - 1e-9 <= e <= lx1 + 1e-9:
            out.append(f'<line x1="{px(x)}" y1="{h - bottom}" x2="{px(x)}" y2="{h - bottom + 5}" stroke="black"/>')
            out.append(f'<text x="{px(x)}" y="{h - bottom + 18}" text-anchor="middle">{x:,.0f}</text>')
    for i in range(6):
        y = y1 * i / 5
        out.append(f'<line x1="{left - 5}" y1="{py(y)}" x2="{w - right}" y2="{py(y)}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{py(y) + 4}" text-anchor="end">{y:.3g}</text>')
    for i, (name, pts) in enumerate(lines):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        ly = top + 10 + 18 * i
        out.append(f'<line x1="{w - right + 10}" y1="{ly}" x2="{w - right + 30}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{w - right + 35}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    out, title, x_col, y_cols = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
    lines = [s for spec in sys.argv[5:] for s in series(spec, x_col, y_cols)]
    with open(out, "w", encoding="utf-8") as f:
        f.write(svg(title, x_col, ", ".join(y_cols), lines))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
