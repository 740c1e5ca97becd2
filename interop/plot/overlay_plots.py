#!/usr/bin/env python3
"""Draws docs/overlay-hops.svg and docs/overlay-churn.svg from real runs of
`chordphone sim --json` (no third-party Python packages needed).

    python3 interop/plot/overlay_plots.py [--nodes 1000] [--quick]

1. Hop distribution of lookups in a 1,000-peer ring without churn.
2. Lookup success rate against churn (median session length), one
   simulated hour each, with the same seed.
"""
import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "chordphone")


def sim(args):
    cmd = [BIN, "sim", "--json", "--crypto", "fast"] + [str(a) for a in args]
    print("running:", " ".join(cmd[1:]), file=sys.stderr)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def svg_bars(path, title, xlabel, ylabel, labels, values, note):
    w, h, left, bottom, top = 640, 360, 60, 50, 40
    pw, ph = w - left - 20, h - top - bottom
    vmax = max(values) or 1
    bw = pw / max(len(values), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<text x="{w/2}" y="20" text-anchor="middle" font-size="15">{title}</text>']
    for i, (lab, v) in enumerate(zip(labels, values)):
        bh = ph * v / vmax
        x = left + i * bw
        parts.append(f'<rect x="{x+2:.1f}" y="{top+ph-bh:.1f}" width="{bw-4:.1f}" height="{bh:.1f}" fill="#4477aa"/>')
        parts.append(f'<text x="{x+bw/2:.1f}" y="{top+ph+15}" text-anchor="middle">{lab}</text>')
        parts.append(f'<text x="{x+bw/2:.1f}" y="{top+ph-bh-3:.1f}" text-anchor="middle" font-size="10">{v:.3g}</text>')
    parts += axes(left, top, pw, ph, xlabel, ylabel, w, h, note)
    write(path, parts)


def svg_line(path, title, xlabel, ylabel, labels, values, lo, hi, note):
    w, h, left, bottom, top = 640, 360, 70, 50, 40
    pw, ph = w - left - 30, h - top - bottom
    n = len(values)
    pts = []
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<text x="{w/2}" y="20" text-anchor="middle" font-size="15">{title}</text>']
    for i, (lab, v) in enumerate(zip(labels, values)):
        x = left + (i + 0.5) * pw / n
        y = top + ph * (1 - (v - lo) / (hi - lo))
        pts.append(f"{x:.1f},{y:.1f}")
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#aa3377"/>')
        parts.append(f'<text x="{x:.1f}" y="{y-8:.1f}" text-anchor="middle" font-size="10">{100*v:.2f}%</text>')
        parts.append(f'<text x="{x:.1f}" y="{top+ph+15}" text-anchor="middle">{lab}</text>')
    parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="#aa3377" stroke-width="2"/>')
    for frac in (0, 0.5, 1):
        y = top + ph * (1 - frac)
        parts.append(f'<text x="{left-5}" y="{y+4:.1f}" text-anchor="end">{100*(lo+frac*(hi-lo)):.1f}%</text>')
    parts += axes(left, top, pw, ph, xlabel, ylabel, w, h, note)
    write(path, parts)


def axes(left, top, pw, ph, xlabel, ylabel, w, h, note):
    return [f'<line x1="{left}" y1="{top+ph}" x2="{left+pw}" y2="{top+ph}" stroke="black"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top+ph}" stroke="black"/>',
            f'<text x="{left+pw/2}" y="{h-18}" text-anchor="middle">{xlabel}</text>',
            f'<text x="14" y="{top+ph/2}" text-anchor="middle" transform="rotate(-90 14 {top+ph/2})">{ylabel}</text>',
            f'<text x="{w-5}" y="{h-4}" text-anchor="end" font-size="9" fill="#666">{note}</text>', '</svg>']


def write(path, parts):
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
    print("wrote", os.path.relpath(path, ROOT), file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="shorter runs (for a smoke test)")
    a = ap.parse_args()
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    hour = 600 if a.quick else 3600
    base = ["--nodes", a.nodes, "--seed", 1, "--stores", 100, "--lookups-per-s", 20]
    r = sim(base + ["--duration", 300 if a.quick else 1200])
    hist = r["hops_histogram"]
    svg_bars(os.path.join(ROOT, "docs", "overlay-hops.svg"),
             f"Lookup hops, {a.nodes} peers, no churn (mean {r['hops_mean']:.2f}, p99 {r['hops_p99']})",
             "hops", "lookups", list(range(len(hist))), hist,
             f"chordphone sim --nodes {a.nodes} --seed 1 (fast crypto)")
    medians = [None, 7200, 3600, 1800, 900, 300]
    rates, labels = [], []
    for m in medians:
        extra = [] if m is None else ["--session-median", m]
        r = sim(base + ["--duration", hour] + extra)
        rates.append(r["lookup_success_rate"])
        labels.append("none" if m is None else f"{m//60} min")
        print(f"session median {labels[-1]}: lookup success {rates[-1]:.4f}", file=sys.stderr)
    lo = min(0.99, math.floor(min(rates) * 200) / 200)
    svg_line(os.path.join(ROOT, "docs", "overlay-churn.svg"),
             f"Lookup success vs churn, {a.nodes} peers, {hour//60} simulated min",
             "median session length", "lookup success", labels, rates, lo, 1.0,
             "interop/plot/overlay_plots.py (chordphone sim --session-median M)")


if __name__ == "__main__":
    main()
