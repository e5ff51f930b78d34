#!/usr/bin/env python3
"""dev/ablate.py — the hybrid-ratio ablations of "A Systematic Analysis of Hybrid Linear Attention"
(arXiv 2507.06457) at laptop scale: every linear family x every linear-to-attention ratio, plus the
pure-attention Transformer, trained on MQAR recall and on Tiny Shakespeare language modelling.

  /usr/bin/python3 dev/ablate.py --grid quick             # train the quick grid (< 30 min, 2 cores)
  /usr/bin/python3 dev/ablate.py --grid full --estimate   # time a few steps, print the expected run time
  /usr/bin/python3 dev/ablate.py --grid full              # the paper's five ratios at depth 26
  /usr/bin/python3 dev/ablate.py --grid quick --report    # table and plots from the CSV alone
  --task NAME                                              # only one task of the grid

Every point of a grid (task, layer pattern, learning rate) is one ./train_gla run with the grid's
width, depth, batch, steps (so token budget) and learning-rate sweep, whatever the mixer. Finished
points are rows of the CSV and are not retrained: stop it any time and run it again to continue.
Data comes from ./data/mqar and ./data/prepare (run from the repository root after `make`).

Writes, for grid G:  dev/ablations/G/results.csv   one row per trained model
                     dev/ablations/G/results.md    best learning rate of each point, one table per task
                     dev/ablations/G/*.svg         recall vs ratio, LM loss vs ratio, recall vs state size
                     out/ablate/G/                 the runs' logs and final checkpoints (not committed)
Standard library only (no torch needed).
"""
import argparse
import concurrent.futures
import csv
import math
import os
import re
import subprocess
import sys
import time

FAMILIES = ["hgrn", "retnet", "gla", "hgrn2", "deltanet", "gated_deltanet"]
FAMILY_LABEL = {"hgrn": "HGRN", "retnet": "RetNet", "gla": "GLA", "hgrn2": "HGRN2", "deltanet": "DeltaNet",
                "gated_deltanet": "Gated DeltaNet", "attn": "Transformer"}
COLORS = {"hgrn": "#8c564b", "retnet": "#9467bd", "gla": "#1f77b4", "hgrn2": "#2ca02c", "deltanet": "#ff7f0e",
          "gated_deltanet": "#d62728", "attn": "#000000"}

# A task is MQAR (sequence length T, K pairs, vocabulary V, training examples) or language modelling
# on Tiny Shakespeare (bytes) at length T. Every grid point of a task sees the same tokens.
GRIDS = {
    # Laptop depth L = 4 realises 3:1 (one attention layer in four); the paper's sparser ratios
    # 24:1..6:1 need L >= r + 1 and are in the full grid. ~730k tokens per point.
    "quick": dict(
        d=64, L=4, ratios=["pure", "3"], mlp=128, B=32, lrs=[1e-3],
        tasks=[dict(name="mqar_T32_K4", kind="mqar", T=32, K=4, V=64, train=40000, val=256, steps=700),
               dict(name="mqar_T64_K8", kind="mqar", T=64, K=8, V=128, train=20000, val=256, steps=350),
               dict(name="lm_shakespeare", kind="lm", T=128, steps=175)],
    ),
    # a few steps of everything, to check the pipeline in a minute
    "smoke": dict(
        d=32, L=2, ratios=["pure", "1"], mlp=64, B=4, lrs=[1e-3, 3e-3],
        tasks=[dict(name="mqar_T32_K4", kind="mqar", T=32, K=4, V=64, train=500, val=16, steps=5),
               dict(name="lm_shakespeare", kind="lm", T=32, steps=5)],
    ),
    # The paper's ratios over 26 layers: 24:1 -> 1 attention layer, 12:1 -> 2, 6:1 -> 3, 3:1 -> 6;
    # Zoology's MQAR settings with its vocabulary of 8192.
    "full": dict(
        d=64, L=26, ratios=["pure", "24", "12", "6", "3"], mlp=128, B=16, lrs=[1e-3, 3e-3],
        tasks=[dict(name="mqar_T256_K16", kind="mqar", T=256, K=16, V=8192, train=100000, val=512, steps=1000),
               dict(name="mqar_T512_K64", kind="mqar", T=512, K=64, V=8192, train=50000, val=256, steps=1000),
               dict(name="lm_shakespeare", kind="lm", T=256, steps=1000)],
    ),
}

CSV_FIELDS = ["task", "mixer", "ratio", "pattern", "layers", "attn_layers", "width", "params", "state_floats",
              "tokens", "lr", "train_loss", "val_loss", "bits_per_byte", "recall", "wall_s", "status"]


def ratio_label(r):
    return "pure" if r == "pure" else f"{r}:1"


def mixer_flags(d):
    """Head counts that keep fla's proportions at width d (train_gla's defaults are for d = 128)."""
    return ["--gla-heads", "2", "--attn-heads", str(max(1, d // 32)), "--retnet-heads", str(max(1, d // 32)),
            "--hgrn2-heads", "1", "--deltanet-heads", "2", "--gdn-heads", "3", "--gdn-head-dim", str(d // 4)]


def attn_layers(grid, mixer, ratio):
    """Attention layers of a point: all for the Transformer, none for pure, L // (r + 1) at r:1."""
    if mixer == "attn":
        return grid["L"]
    return 0 if ratio == "pure" else grid["L"] // (int(ratio) + 1)


def points(grid):
    """(task, mixer, ratio, pattern, lr) for every run of the grid, in training order."""
    for task in grid["tasks"]:
        if grid.get("only_task") and task["name"] != grid["only_task"]:
            continue
        for lr in grid["lrs"]:
            yield task, "attn", "attn", "attn", lr
            for fam in FAMILIES:
                for r in grid["ratios"]:
                    yield task, fam, r, f"{fam}:{r}", lr


def task_data(task, root):
    """Makes the task's data if missing; returns (train glob, val glob, tokenizer)."""
    if task["kind"] == "lm":
        d = "data/tinyshakespeare"
        if not os.path.exists(f"{d}/tiny_shakespeare_train.bin") and subprocess.run(["./data/prepare"]).returncode:
            sys.exit("error: ./data/prepare failed (set TINYSHAKESPEARE=/path/to/input.txt)")
        return f"{d}/tiny_shakespeare_train.bin", f"{d}/tiny_shakespeare_val.bin", "data/tokenizer_bytes.bin"
    d = os.path.join(root, "data", task["name"])
    if not os.path.exists(os.path.join(d, "tokenizer.bin")):
        subprocess.run(["./data/mqar", "-V", str(task["V"]), "-T", str(task["T"]), "-K", str(task["K"]),
                        "--train", str(task["train"]), "--val", str(task["val"]), "-o", d],
                       check=True, stdout=subprocess.DEVNULL)
    return f"{d}/mqar_train.bin", f"{d}/mqar_val.bin", f"{d}/tokenizer.bin"


def command(grid, task, pattern, lr, data, out, steps=None):
    train, val, tok = data
    steps = steps or task["steps"]
    d = grid["d"]
    val_batches = max(1, task["val"] // grid["B"]) if task["kind"] == "mqar" else 20  # MQAR: every val example
    return (["./train_gla", "-i", train, "-j", val, "-z", tok, "-o", out, "-d", str(d), "-L", str(grid["L"]),
             "-p", pattern, "--mlp-hidden", str(grid["mlp"]), "-b", str(grid["B"]), "-T", str(task["T"]),
             "-n", str(steps), "-u", str(max(1, steps // 10)), "-l", f"{lr:g}", "-v", "0", "-s", "0", "-G", "0",
             "-m", str(val_batches), "-k", "0", "--keep", "1", "--overwrite", "1"] + mixer_flags(d))


def parse_log(text, T):
    """What the CSV needs from a train_gla log."""
    r = {}
    m = re.search(r"^parameters: (\d+)", text, re.M)
    r["params"] = int(m.group(1)) if m else ""
    m = re.search(r"^state: (\d+) floats of recurrent state \+ a KV cache of (\d+) floats per token", text, re.M)
    r["state_floats"] = int(m.group(1)) + int(m.group(2)) * T if m else ""
    losses = [float(x) for x in re.findall(r"^step +\d+/\d+ \| loss ([-\d.naif]+)", text, re.M)]
    tail = losses[-20:]  # the mean of the last 20 steps: one batch's loss is noisy
    r["train_loss"] = f"{sum(tail) / len(tail):.4f}" if tail else ""
    vals = re.findall(r"^step +\d+ \| val loss ([-\d.naif]+) nats/token \| (?:recall ([\d.]+)|([\d.]+) bits/byte)",
                      text, re.M)
    r["val_loss"], r["recall"], r["bits_per_byte"] = (vals[-1][0], vals[-1][1], vals[-1][2]) if vals else ("", "", "")
    return r


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train_point(grid, point, root, threads):
    """Runs one point with `threads` OpenMP threads; returns its CSV row."""
    task, mixer, ratio, pattern, lr = point
    data = task_data(task, root)
    out = os.path.join(root, "runs", task["name"], f"{pattern.replace(':', '_')}_lr{lr:g}")
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    proc = subprocess.run(command(grid, task, pattern, lr, data, out), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    wall = time.time() - t0
    with open(os.path.join(out, "train.log"), "w") as f:
        f.write(proc.stdout)
    n_attn = attn_layers(grid, mixer, ratio)
    return dict(task=task["name"], mixer=mixer, ratio=ratio_label(ratio) if mixer != "attn" else "attn",
                pattern=pattern, layers=grid["L"], attn_layers=n_attn, width=grid["d"],
                tokens=task["steps"] * grid["B"] * task["T"], lr=f"{lr:g}", wall_s=f"{wall:.1f}",
                status="ok" if proc.returncode == 0 else f"exit {proc.returncode}", **parse_log(proc.stdout, task["T"]))


def run_grid(name, grid, root, results, jobs, threads):
    """Trains the points not yet in the CSV, `jobs` at a time, appending a row as each finishes."""
    rows = read_rows(results)
    done = {(r["task"], r["pattern"], float(r["lr"])) for r in rows}
    pending = [p for p in points(grid) if (p[0]["name"], p[3], p[4]) not in done]
    total = len(list(points(grid)))
    print(f"grid '{name}': {total} points, {total - len(pending)} done, {len(pending)} to train "
          f"({jobs} at a time, {threads} thread(s) each)", flush=True)
    for task in {p[0]["name"]: p[0] for p in pending}.values():
        task_data(task, root)  # make the data once, before the jobs race for it
    t_grid = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        running = {pool.submit(train_point, grid, p, root, threads): p for p in pending}
        for i, fut in enumerate(concurrent.futures.as_completed(running)):
            task, row = running[fut][0], fut.result()
            new_file = not os.path.exists(results)
            with open(results, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
                if new_file:
                    w.writeheader()
                w.writerow(row)
            elapsed = time.time() - t_grid
            left = elapsed / (i + 1) * (len(pending) - i - 1)
            metric = f"recall {row['recall']}" if task["kind"] == "mqar" else f"val loss {row['val_loss']}"
            print(f"[{total - len(pending) + i + 1}/{total}] {task['name']:15s} {row['pattern']:22s} lr {row['lr']}: "
                  f"{metric}, {row['status']}, {row['wall_s']} s (elapsed {elapsed / 60:.1f} min, about "
                  f"{left / 60:.1f} min left)", flush=True)
    print(f"trained {len(pending)} points in {(time.time() - t_grid) / 60:.1f} min", flush=True)


def estimate(name, grid, root, jobs, threads):
    """Times a few steps of each pure family and of attention per task, with `threads` threads as the
    grid's points get them; a hybrid costs the mix of its layers; `jobs` points run at once."""
    total = 0.0
    for task in grid["tasks"]:
        if grid["only_task"] and task["name"] != grid["only_task"]:
            continue
        data = task_data(task, root)
        per_step = {}
        for mixer in ["attn"] + FAMILIES:
            pattern = "attn" if mixer == "attn" else f"{mixer}:pure"
            out = os.path.join(root, "estimate")
            proc = subprocess.run(command(grid, task, pattern, grid["lrs"][0], data, out, steps=6),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
            ms = [float(x) for x in re.findall(r"\| ([\d.]+) ms \|", proc.stdout)][2:]  # skip warm-up steps
            per_step[mixer] = sum(ms) / len(ms) / 1e3 if ms else float("nan")
            print(f"  {task['name']:15s} {pattern:22s} {per_step[mixer] * 1e3:8.1f} ms/step", flush=True)
        t_task = 0.0
        for _, mixer, ratio, _, _ in (p for p in points(grid) if p[0] is task):
            n_attn = attn_layers(grid, mixer, ratio)
            lin = per_step.get(mixer, 0.0)
            t_task += task["steps"] * (lin * (grid["L"] - n_attn) + per_step["attn"] * n_attn) / grid["L"]
        print(f"{task['name']}: about {t_task / 3600:.1f} h of training steps, one point at a time", flush=True)
        total += t_task
    print(f"grid '{name}': about {total / jobs / 3600:.1f} h on this machine ({jobs} points at a time, "
          f"{threads} thread(s) each; training steps only)")


# ---- report: markdown table and SVG plots

def best_rows(rows):
    """The best learning rate of each (task, pattern): highest recall on MQAR, lowest val loss on LM."""
    best = {}
    for r in rows:
        if r["status"] != "ok":
            continue
        key = (r["task"], r["pattern"])
        score = float(r["recall"]) if r["recall"] else -float(r["val_loss"])
        if key not in best or score > best[key][0]:
            best[key] = (score, r)
    return {k: v[1] for k, v in best.items()}


def column_labels(grid):
    return [ratio_label(r) for r in grid["ratios"]]


def write_markdown(name, grid, rows, path):
    best = best_rows(rows)
    lines = [f"<!-- written by dev/ablate.py --grid {name} from results.csv -->"]
    for task in grid["tasks"]:
        mqar = task["kind"] == "mqar"
        what = (f"MQAR T={task['T']} K={task['K']} V={task['V']}: recall accuracy (%)" if mqar
                else f"Tiny Shakespeare (bytes, T={task['T']}): validation loss (nats/byte)")
        lines += ["", f"**{what}**, d={grid['d']} L={grid['L']}, {task['steps']} steps of "
                      f"{grid['B']}x{task['T']} tokens, best of lr {{{', '.join(f'{x:g}' for x in grid['lrs'])}}}", ""]
        lines.append("| family | " + " | ".join(column_labels(grid)) + " |")
        lines.append("|---|" + "---:|" * len(grid["ratios"]))

        def cell(pattern):
            r = best.get((task["name"], pattern))
            if not r:
                return "–"
            return f"{100 * float(r['recall']):.1f}" if mqar else f"{float(r['val_loss']):.3f}"
        for fam in FAMILIES:
            lines.append(f"| {FAMILY_LABEL[fam]} | " + " | ".join(cell(f"{fam}:{r}") for r in grid["ratios"]) + " |")
        lines.append(f"| Transformer (all attention) | {cell('attn')} |" + " |" * (len(grid["ratios"]) - 1))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def svg_panel(out, x0, y0, w, h, title, xticks, ylim, ylabel, series, xlabel="", log_x=False):
    """One chart: series = [(color, dashed, [(x, y), ...], marker)] with x in tick units (or log10)."""
    lo, hi = ylim
    xs = [x for _, _, pts, _ in series for x, _ in pts] + [t for t, _ in xticks]
    xmin, xmax = (min(xs), max(xs)) if xs else (0, 1)
    if xmax == xmin:
        xmax = xmin + 1
    pad = 0.06 * (xmax - xmin)

    def px(x):
        return x0 + 50 + (x - xmin + pad) / (xmax - xmin + 2 * pad) * (w - 60)

    def py(y):
        return y0 + h - 35 - (y - lo) / (hi - lo) * (h - 60)
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + 14}" text-anchor="middle" font-weight="bold">{title}</text>')
    out.append(f'<rect x="{x0 + 50}" y="{py(hi)}" width="{w - 60}" height="{py(lo) - py(hi)}" fill="none" stroke="#888"/>')
    for i in range(6):
        y = lo + (hi - lo) * i / 5
        out.append(f'<line x1="{x0 + 50}" x2="{x0 + w - 10}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 + 46}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
    for t, label in xticks:
        out.append(f'<text x="{px(t):.1f}" y="{y0 + h - 20}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{x0 + 12}" y="{y0 + h / 2}" transform="rotate(-90 {x0 + 12} {y0 + h / 2})" '
               f'text-anchor="middle">{ylabel}</text>')
    if xlabel:
        out.append(f'<text x="{x0 + w / 2 + 20}" y="{y0 + h - 4}" text-anchor="middle">{xlabel}</text>')
    for color, dashed, pts, marker in series:
        if len(pts) > 1 and not marker == "only":
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            dash = ' stroke-dasharray="5,4"' if dashed else ""
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{color}"/>')


def svg_legend(out, x, y, names, width):
    """Colour keys in rows of as many as fit in width (130 px each)."""
    per_row = max(1, (width - x) // 130)
    for i, n in enumerate(names):
        cx, cy = x + 130 * (i % per_row), y + 18 * (i // per_row)
        out.append(f'<rect x="{cx}" y="{cy - 9}" width="12" height="12" fill="{COLORS[n]}"/>')
        out.append(f'<text x="{cx + 16}" y="{cy + 1}">{FAMILY_LABEL[n]}</text>')


def write_svg(path, width, height, body):
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                f'font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n')
        f.write("\n".join(body) + "\n</svg>\n")


def plot_vs_ratio(grid, rows, tasks, metric, ylabel, path, title):
    """One panel per task: the metric of each family along the ratios; the Transformer dashed."""
    best = best_rows(rows)
    cols = column_labels(grid) + ["attn"]
    xticks = list(enumerate(cols))
    body, pw, ph = [], 420, 300
    for k, task in enumerate(tasks):
        vals = [float(r[metric]) for (t, _), r in best.items() if t == task["name"] and r[metric]]
        if metric == "recall":
            ylim = (0.0, 1.0)
        else:
            lo, hi = (min(vals), max(vals)) if vals else (0, 1)
            span = max(hi - lo, 0.02)
            ylim = (lo - 0.1 * span, hi + 0.1 * span)
        series = []
        for fam in FAMILIES + ["attn"]:
            pts = []
            for i, r in enumerate(grid["ratios"] + ["attn"]):
                row = best.get((task["name"], "attn" if r == "attn" else f"{fam}:{r}"))
                if row and row[metric] and (fam != "attn" or r == "attn"):
                    pts.append((i, float(row[metric])))
            if fam == "attn" and pts:
                pts = [(0, pts[0][1]), (len(cols) - 1, pts[0][1])]  # the baseline as a dashed line
            series.append((COLORS[fam], fam == "attn", pts, ""))
        subtitle = f"MQAR T={task['T']} K={task['K']}" if task["kind"] == "mqar" else "Tiny Shakespeare"
        svg_panel(body, k * pw, 30, pw, ph, subtitle, xticks, ylim, ylabel, series, "linear : attention")
    body.insert(0, f'<text x="10" y="18" font-size="14" font-weight="bold">{title}</text>')
    width = max(pw * len(tasks), 560)
    svg_legend(body, 10, ph + 48, FAMILIES + ["attn"], width)
    write_svg(path, width, ph + 110, body)


def plot_recall_vs_state(grid, rows, tasks, path):
    best = best_rows(rows)
    body, pw, ph = [], 420, 300
    for k, task in enumerate(tasks):
        series = []
        all_x = []
        for fam in FAMILIES + ["attn"]:
            pts = [(math.log10(float(r["state_floats"])), float(r["recall"])) for (t, p), r in best.items()
                   if t == task["name"] and r["mixer"] == fam and r["recall"] and r["state_floats"]]
            all_x += [x for x, _ in pts]
            series.append((COLORS[fam], False, sorted(pts), "only"))
        lo, hi = (math.floor(min(all_x)), math.ceil(max(all_x))) if all_x else (3, 6)
        xticks = [(e, f"1e{e}") for e in range(lo, hi + 1)]
        svg_panel(body, k * pw, 30, pw, ph, f"MQAR T={task['T']} K={task['K']}", xticks, (0.0, 1.0), "recall",
                  series, "state floats per sequence at length T (log)")
    body.insert(0, '<text x="10" y="18" font-size="14" font-weight="bold">Recall vs state size</text>')
    width = max(pw * len(tasks), 560)
    svg_legend(body, 10, ph + 48, FAMILIES + ["attn"], width)
    write_svg(path, width, ph + 110, body)


def report(name, grid, out_dir):
    rows = read_rows(os.path.join(out_dir, "results.csv"))
    write_markdown(name, grid, rows, os.path.join(out_dir, "results.md"))
    mqar = [t for t in grid["tasks"] if t["kind"] == "mqar"]
    lm = [t for t in grid["tasks"] if t["kind"] == "lm"]
    if mqar:
        plot_vs_ratio(grid, rows, mqar, "recall", "recall accuracy", os.path.join(out_dir, "recall_vs_ratio.svg"),
                      f"MQAR recall vs linear:attention ratio (grid '{name}', d={grid['d']}, L={grid['L']})")
        plot_recall_vs_state(grid, rows, mqar, os.path.join(out_dir, "recall_vs_state.svg"))
    if lm:
        plot_vs_ratio(grid, rows, lm, "val_loss", "val loss (nats/byte)", os.path.join(out_dir, "lm_vs_ratio.svg"),
                      f"Language modelling vs ratio (grid '{name}')")
    print(f"wrote {out_dir}/results.md and the plots ({len(rows)} rows)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", choices=sorted(GRIDS), default="quick")
    ap.add_argument("--report", action="store_true", help="only write the table and plots from the CSV")
    ap.add_argument("--estimate", action="store_true", help="time a few steps per mixer; print the expected run time")
    ap.add_argument("--task", default="", help="train (or estimate) only this task of the grid, e.g. mqar_T256_K16")
    ap.add_argument("--jobs", type=int, default=2, help="points trained at once (default 2)")
    ap.add_argument("--threads", type=int, default=0, help="OpenMP threads per point (default: cores / jobs)")
    args = ap.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if not os.path.exists("./train_gla") or not os.path.exists("./data/mqar"):
        sys.exit("error: build first: make train_gla data/mqar data/prepare")
    grid = dict(GRIDS[args.grid], only_task=args.task)
    if args.task and args.task not in [t["name"] for t in grid["tasks"]]:
        sys.exit(f"error: grid '{args.grid}' has no task '{args.task}' ({', '.join(t['name'] for t in grid['tasks'])})")
    out_dir = os.path.join("dev", "ablations", args.grid)
    root = os.path.join("out", "ablate", args.grid)
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(root, exist_ok=True)
    jobs = max(1, args.jobs)
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    if args.estimate:
        estimate(args.grid, grid, root, jobs, threads)
        return
    if not args.report:
        run_grid(args.grid, grid, root, os.path.join(out_dir, "results.csv"), jobs, threads)
    report(args.grid, grid, out_dir)


if __name__ == "__main__":
    main()
