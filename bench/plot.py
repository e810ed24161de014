#!/usr/bin/env python3
"""Plot fan-out latency (max = last client, and p99) against client count, catalytic vs the floor.

Reads the JSON lines that `catalytic-bench` prints (or writes with --json-out) and draws the
median over rounds with min-max bars. Needs matplotlib (`python3 -m pip install matplotlib`).

    python3 bench/plot.py docs/bench-results.jsonl -o docs/fanout.png
"""

import argparse
import json
import sys


def load(paths):
    """Latest fan-out points per server: {server: {clients: point}}."""
    series = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue  # the human tables share stdout
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("scenario") != "fanout" or "points" not in rec:
                    continue
                pts = series.setdefault(rec["server"], {})
                for p in rec["points"]:
                    if p.get("ready", 0) > 0 and p.get("max_ms", {}).get("median") is not None:
                        pts[p["clients"]] = p  # a later run replaces an earlier one
    return series


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="files with catalytic-bench JSON lines")
    ap.add_argument("-o", "--output", default="docs/fanout.png")
    args = ap.parse_args()

    series = load(args.inputs)
    if not series:
        sys.exit("no fan-out results found in " + ", ".join(args.inputs))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), dpi=120, sharey=True)
    colors = {"catalytic": "tab:blue", "floor": "tab:gray"}
    offsets = {"catalytic": (6, 6), "floor": (6, -14)}
    panels = (("max_ms", "max = last client"), ("p99_ms", "p99"))
    for ax, (key, title) in zip(axes, panels):
        for server in sorted(series):
            pts = [series[server][n] for n in sorted(series[server])]
            xs = [p["clients"] for p in pts]
            med = [p[key]["median"] for p in pts]
            lo = [max(p[key]["median"] - p[key]["min"], 0) for p in pts]
            hi = [max(p[key]["max"] - p[key]["median"], 0) for p in pts]
            color = colors.get(server)
            ax.errorbar(xs, med, yerr=[lo, hi], fmt="-o", color=color, capsize=3, label=server)
            for x, y in zip(xs, med):
                ax.annotate(f"{y:.3g} ms", (x, y), textcoords="offset points", xytext=offsets.get(server, (6, 0)),
                            fontsize=8, color=color)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.margins(x=0.15, y=0.15)
        ax.set_xlabel("admin clients connected")
        ax.set_title(f"fan-out latency, {title}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("POST /api/users written → user_added received (ms)")
    fig.suptitle("median over rounds, bars: min–max (server on CPU 0, generator on CPU 1)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
