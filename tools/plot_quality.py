#!/usr/bin/env python3
"""Plot perplexity against effective density from tools/quality_study.sh's results.jsonl.
SpenseGPT variants of the same axis / strategy / budget at several dense ratios d are joined by a
line (legend); the baselines are labelled points.
Usage: python3 tools/plot_quality.py docs/results/quality.jsonl docs/results/quality.png"""
import json, re, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fig, ax = plt.subplots(figsize=(7, 4.5))
families = {}
for r in rows:
    d, p, name = r["density"], r["eval"]["perplexity"]["ppl"], r["name"]
    if name.startswith("spensegpt"):
        fam = re.sub(r"\s*d=[0-9.]+", "", name).replace("spensegpt", "SpenseGPT").strip()
        families.setdefault(fam, []).append((d, p))
    else:
        ax.scatter(d, p, marker="*" if name == "dense" else "s", s=60, color="black")
        ax.annotate(name, (d, p), fontsize=8, xytext=(4, 3), textcoords="offset points")
for fam, pts in sorted(families.items()):
    pts.sort()
    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", markersize=4, label=fam)
ax.set_xlabel("effective density (fraction of weights kept)")
ax.set_ylabel("held-out perplexity (seqlen 512, lower is better)")
ax.set_title("models/eval-qwen3: pruning methods")
ax.grid(alpha=0.3)
if families:
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
