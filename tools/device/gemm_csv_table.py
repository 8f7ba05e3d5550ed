#!/usr/bin/env python3
"""Prints a bench-gemm CSV as a compact table: layer, dtype, format, M, us, speedup over dense and the
small-M kernel's plan (path, block shape, K slices). Usage: gemm_csv_table.py FILE.csv"""
import csv
import re
import sys

for r in csv.DictReader(open(sys.argv[1])):
    plan = r["plan"]
    m = re.search(r"block shape (\d+), K in (\S+) slice", plan)
    st = re.search(r"block shape (\d+) \(streamed", plan)
    short = f"tc shape {m.group(1)} x{m.group(2)}" if m else f"tc shape {st.group(1)} streamed" if st else plan.split(":")[0][:28]
    if "E4M3 tokens" in plan:
        short += " E4M3 tokens"
    print(f"{r['layer']:8} {r['dtype']:5} {r['format']:16} M={r['m']:>3} {float(r['us']):9.2f} us "
          f"{float(r['speedup_vs_dense']):5.2f}x  {short}")
