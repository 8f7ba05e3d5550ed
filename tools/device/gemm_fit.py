#!/usr/bin/env python3
"""Fits time = intercept + weight bytes / rate per (format, M) over the layers of bench-gemm
CSVs (least squares over the model's layers: qkv, o, gate_up, down), so that a launch's fixed
cost and its streaming rate can be told apart (docs/perf.md, "Where the streamed shapes lose").
Usage: gemm_fit.py FILE.csv [FILE.csv ...]   (one line per file, format and M)"""
import csv
import sys
from collections import defaultdict


def fit(points):
    """Least-squares line through (MB, us) points: (intercept us, rate TB/s, largest residual us)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if n < 2 or sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in points) / sxx  # us per MB
    a = my - b * mx
    return a, 1.0 / b, max(abs(a + b * x - y) for x, y in points)


for path in sys.argv[1:]:
    groups = defaultdict(list)
    for r in csv.DictReader(open(path)):
        groups[(r["dtype"], r["format"], int(r["m"]))].append((float(r["weight_bytes"]) / 1e6, float(r["us"])))
    for (dtype, fmt, m), pts in sorted(groups.items()):
        f = fit(pts)
        name = path.rsplit("/", 1)[-1]
        if f is None:
            print(f"{name} {dtype} {fmt} M={m}: fewer than two layer sizes")
            continue
        a, rate, res = f
        print(f"{name} {dtype} {fmt} M={m}: intercept {a:.1f} us, rate {rate:.2f} TB/s "
              f"(largest residual {res:.1f} us, {len(pts)} layers)")
