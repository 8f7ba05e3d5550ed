#!/usr/bin/env bash
# The main job on a small example: prune the bundled evaluation model (models/eval-qwen3,
# a 20M-parameter Qwen3-architecture LM trained on real English, docs/results/eval-model.md)
# with SpenseGPT (2:4 + 25% dense tiles) using Brown-corpus text as calibration data, then
# compare perplexity before and after. Outputs go to example/ (git-ignored).
# Note: Brown text is part of that model's training data; held-out numbers are in docs/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
S=build/spense
M=models/eval-qwen3
mkdir -p example
# Brown corpus, part-of-speech tags stripped ("word/tag" -> "word"): genres a-e calibrate,
# genres f-r evaluate.
strip() { sed -E 's#([^ \t]+)/[^ \t]+#\1#g'; }
cat .refs/brown/c[a-e]* | strip > example/calib.txt
cat .refs/brown/c[f-r]* | strip > example/eval.txt
$S inspect $M
$S prune --model $M --calib example/calib.txt --out example/eval-qwen3-spense --force \
  --method spensegpt --dense-ratio 0.25 --axis out --nsamples 16 --seqlen 512
echo "== dense model"
$S eval --model $M --text example/eval.txt --seqlen 512 --max-windows 16
echo "== SpenseGPT: 2:4 + 25% dense tiles"
$S eval --model example/eval-qwen3-spense --text example/eval.txt --seqlen 512 --max-windows 16
