#!/usr/bin/env python3
"""Plot `spense bench-decode` results: tokens/s speedup over the fastest dense path of the same
dtype against batch size, one panel per dtype, one line per (backend, format).
Usage: python3 tools/plot_decode.py bench/results/decode_h200.csv bench/results/decode_h200.png"""
import csv
import sys
from collections import defaultdict

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

src, dst = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(src)))
dtypes = sorted({r["dtype"] for r in rows})
fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.2), squeeze=False)
for ax, dt in zip(axes[0], dtypes):
    lines = defaultdict(list)
    for r in rows:
        if r["dtype"] == dt:
            lines[(r["backend"], r["format"])].append((int(r["batch"]), float(r["speedup_vs_best_dense"])))
    for (be, fmt), pts in sorted(lines.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{fmt} ({be})")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.axhline(1.2, color="green", lw=0.8, ls="--", label="target 1.2x")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch (decode rows per step)")
    ax.set_ylabel("tokens/s over fastest dense")
    ax.set_title(f"{rows[0]['model']} ({rows[0]['layers']} layers), {dt}, ctx {rows[0]['ctx']}, {rows[0]['device']}")
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(dst, dpi=120)
print("wrote", dst)
