#!/usr/bin/env python3
"""Training and validation curves of one or several runs, from their log.jsonl, as an SVG.

    python3 dev/plot.py out/default                       # -> out/default/curves.svg
    python3 dev/plot.py out/gla out/deltanet -o cmp.svg   # several runs on one plot

Each argument is a run's checkpoint directory (its log.jsonl) or the log file itself. train_gla and
train_gla_cu write one JSON object per line: training steps {"step", "loss", "lr", "grad_norm",
"tokens_per_s", "elapsed_s"} and evaluations {"step", "val_loss", "bits_per_byte" | "recall"}; a
step logged twice (a resumed run retrains the steps after its last checkpoint) counts by its last
line. Left panel: training loss (thin: every step; thick: a moving average) and validation loss
(dots) against the step; right panel: recall where the runs report it, else bits per byte.
Python's standard library only.
"""
import argparse
import json
import math
import os
import sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def read_log(path):
    """{step: record} for training steps and for evaluations, each step's last line winning."""
    if os.path.isdir(path):
        path = os.path.join(path, "log.jsonl")
    train, evals = {}, {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"error: {path}:{n}: not a JSON object ({e})")
            if "step" not in rec:
                sys.exit(f"error: {path}:{n}: no \"step\"")
            (evals if "val_loss" in rec else train)[rec["step"]] = rec
    if not train and not evals:
        sys.exit(f"error: {path} holds no step")
    return path, train, evals


def moving_average(values, window):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def nice_ticks(lo, hi, n=5):
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def panel(out, x0, y0, w, h, title, ylabel, series, xmax):
    """series: [(color, points, width, dots)]; axes from the data."""
    ys = [y for _, pts, _, _ in series for _, y in pts]
    if not ys:
        out.append(f'<text x="{x0 + w / 2}" y="{y0 + h / 2}" text-anchor="middle" fill="#888">no data</text>')
        return
    lo, hi = min(ys), max(ys)
    pad = 0.05 * (hi - lo or 1)
    lo, hi = lo - pad, hi + pad
    left, bottom = x0 + 55, y0 + h - 35

    def px(x):
        return left + x / (xmax or 1) * (w - 70)

    def py(y):
        return bottom - (y - lo) / (hi - lo) * (h - 65)

    out.append(f'<text x="{x0 + w / 2}" y="{y0 + 18}" text-anchor="middle" font-weight="bold">{title}</text>')
    out.append(f'<line x1="{left}" y1="{bottom}" x2="{left + w - 70}" y2="{bottom}" stroke="#000"/>')
    out.append(f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="{py(hi)}" stroke="#000"/>')
    for t in nice_ticks(lo, hi):
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + w - 70}" y2="{py(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 5}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in nice_ticks(0, xmax):
        out.append(f'<text x="{px(t):.1f}" y="{bottom + 16}" text-anchor="middle">{t:g}</text>')
    out.append(f'<text x="{left + (w - 70) / 2}" y="{bottom + 32}" text-anchor="middle">step</text>')
    out.append(f'<text x="{x0 + 12}" y="{y0 + h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 {x0 + 12} {y0 + h / 2})">{ylabel}</text>')
    for color, pts, width, dots in series:
        if dots:
            for x, y in pts:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}"/>')
        elif pts:
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="{width}" '
                       f'stroke-opacity="{1 if width > 1 else 0.3}"/>')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="checkpoint directories or log.jsonl files")
    ap.add_argument("-o", "--out", help="the SVG (default: curves.svg beside the first log)")
    ap.add_argument("--smooth", type=int, default=20, help="moving-average window of the training loss")
    args = ap.parse_args()

    runs = [read_log(r) for r in args.runs]
    out_path = args.out or os.path.join(os.path.dirname(runs[0][0]), "curves.svg")
    xmax = max(max(list(t) + list(e)) for _, t, e in runs)
    use_recall = any("recall" in rec for _, _, e in runs for rec in e.values())
    metric = "recall" if use_recall else "bits_per_byte"
    left, right, legend = [], [], []
    for i, (path, train, evals) in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        steps = sorted(train)
        losses = [train[s]["loss"] for s in steps]
        left.append((color, list(zip(steps, losses)), 1, False))
        left.append((color, list(zip(steps, moving_average(losses, args.smooth))), 2.5, False))
        ev = sorted(evals)
        left.append((color, [(s, evals[s]["val_loss"]) for s in ev], 0, True))
        right.append((color, [(s, evals[s][metric]) for s in ev if metric in evals[s]], 2, False))
        right.append((color, [(s, evals[s][metric]) for s in ev if metric in evals[s]], 0, True))
        name = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
        last = f", val {evals[ev[-1]]['val_loss']:.4f} at step {ev[-1]}" if ev else ""
        legend.append((color, f"{name} ({len(steps)} steps{last})"))

    W, H = 1000, 420 + 18 * len(legend)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="12"><rect width="{W}" height="{H}" fill="#fff"/>']
    panel(svg, 0, 0, W / 2, 400, "loss (nats/token): training, validation ●", "loss", left, xmax)
    panel(svg, W / 2, 0, W / 2, 400, "recall" if use_recall else "validation bits per byte", metric, right, xmax)
    for i, (color, text) in enumerate(legend):
        y = 420 + 18 * i
        svg.append(f'<rect x="60" y="{y - 9}" width="14" height="10" fill="{color}"/>')
        svg.append(f'<text x="80" y="{y}">{text}</text>')
    svg.append("</svg>")
    with open(out_path, "w") as f:
        f.write("\n".join(svg) + "\n")
    print(f"{out_path}: {len(runs)} run(s), steps up to {xmax}")


if __name__ == "__main__":
    main()
