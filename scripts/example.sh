#!/usr/bin/env bash
# The main job on a small example: a random-weight Qwen3-architecture model with the real
# Qwen3 tokenizer, inspected and scored on real English text (the Brown corpus).
# Outputs go to example/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
S=build/spense
mkdir -p example
# Brown corpus, part-of-speech tags stripped ("word/tag" -> "word").
cat .refs/brown/c[a-e]* | sed -E 's#([^ \t]+)/[^ \t]+#\1#g' > example/brown.txt
rm -rf example/tiny-qwen3
$S synth --arch qwen3 --preset tiny --tokenizer .refs/qwen3/tokenizer.json --seed 0 --out example/tiny-qwen3
$S inspect example/tiny-qwen3
$S ppl --model example/tiny-qwen3 --text example/brown.txt --seqlen 256 --max-windows 16
