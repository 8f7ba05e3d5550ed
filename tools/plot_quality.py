#!/usr/bin/env python3
"""Plot perplexity against effective density from tools/quality_study.sh's results.jsonl.
Usage: python3 tools/plot_quality.py docs/results/quality.jsonl docs/results/quality.png"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fig, ax = plt.subplots(figsize=(7, 4.5))
for r in rows:
    d, p, name = r["density"], r["eval"]["perplexity"]["ppl"], r["name"]
    marker = "o" if name.startswith("spensegpt") else ("*" if name == "dense" else "s")
    ax.scatter(d, p, marker=marker, s=60)
    ax.annotate(name.replace("spensegpt ", "spense "), (d, p), fontsize=7, xytext=(4, 3), textcoords="offset points")
ax.set_xlabel("effective density (fraction of weights kept)")
ax.set_ylabel("held-out perplexity (seqlen 512, lower is better)")
ax.set_title("models/eval-qwen3: pruning methods")
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
