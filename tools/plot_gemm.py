#!/usr/bin/env python3
"""Plot speedup over dense vs M from a bench-gemm CSV (bench/results/gemm_h100.csv).

One panel per (model, layer), rows by dtype; one line per format (Spense formats at the
variant dense ratio, default 0.25, plus spense-out at every d measured).
Usage: python3 tools/plot_gemm.py [CSV] [PNG] [--d 0.25]
Needs matplotlib (present on the GPU machine's image).
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    d_var = 0.25
    if "--d" in sys.argv:
        d_var = float(sys.argv[sys.argv.index("--d") + 1])
        args = [a for a in args if a != sys.argv[sys.argv.index("--d") + 1]]
    src = args[0] if args else "bench/results/gemm_h100.csv"
    dst = args[1] if len(args) > 1 else "bench/results/gemm_h100.png"
    rows = list(csv.DictReader(open(src)))
    models = list(dict.fromkeys(r["model"] for r in rows))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    series = defaultdict(list)  # (model, layer, dtype, label) -> [(m, speedup)]
    for r in rows:
        if r["format"] == "dense":
            continue
        d = float(r["d"])
        if r["format"] == "2:4":
            label = "2:4"
        elif r["format"] == "spense-out":
            label = f"spense-out d={d:g}"
        elif abs(d - d_var) < 1e-6:
            label = f"{r['format']} d={d:g}"
        else:
            continue
        series[(r["model"], r["layer"], r["dtype"], label)].append((int(r["m"]), float(r["speedup_vs_dense"])))
    nrow, ncol = len(models) * len(dtypes), len(layers)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), sharex=True, squeeze=False)
    gpu = rows[0]["gpu"] if rows else ""
    for i, (mo, dt) in enumerate((mo, dt) for mo in models for dt in dtypes):
        for j, la in enumerate(layers):
            ax = axes[i][j]
            for (m2, l2, d2, label), pts in sorted(series.items()):
                if (m2, l2, d2) != (mo, la, dt):
                    continue
                pts.sort()
                style = "-" if label.startswith("spense-out d") or label == "2:4" else "--"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=".", label=label)
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{mo} {la} {dt}", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("speedup over dense")
            if i == nrow - 1:
                ax.set_xlabel("M (tokens)")
    handles, labels = [], []
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.suptitle(f"Spense GEMM speedup over cuBLASLt dense of the same dtype ({gpu})")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
