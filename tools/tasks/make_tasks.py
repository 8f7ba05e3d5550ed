#!/usr/bin/env python3
"""Generate zero-shot evaluation tasks from the held-out eval split of the Spense corpus.

Reads only data/corpus/eval.txt (and eval.docs.tsv for the source of each document); writes
  data/tasks/lastword.jsonl   LAMBADA-style last-word prediction (greedy exact match)
  data/tasks/nextsent.jsonl   4-way next-sentence choice
  data/tasks/tasks.json       counts, seed, per-source counts and sha256 of inputs and outputs
Deterministic: the same eval.txt and --seed give byte-identical files. Standard library only.

Line format (one JSON object per line, keys in this order):
  {"task": "lastword", "context": "...", "choices": [" word"], "label": 0, "greedy": true}
  {"task": "nextsent", "context": "...", "choices": [" ...", " ...", " ...", " ..."], "label": k}
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had
has have having he her here hers him his how i if in into is it its itself just may me might more
most must my no nor not now of off on once only or other our ours out over own same shall she
should so some such than that the their theirs them then there these they this those through to
too under until up upon very was we were what when where which while who whom why will with would
you your yours thou thee thy unto hath one two also yes none etc
""".split())

ABBREV = frozenset("""
mr mrs ms dr prof st jr sr vs etc e.g i.e cf fig figs no nos vol vols pp p al inc ltd co corp jan feb
mar apr jun jul aug sep sept oct nov dec u.s a.m p.m approx resp viz ca sec ch ed eds rev gen gov sen
rep lt col capt sgt mt ft op eq ref refs n v adj adv prep conj pl sing obs esp lit var e.g. i.e.
""".split())

_BOUNDARY = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
_LASTWORD = re.compile(r"(?<=\s)([A-Za-z]+)([.!?][\"'\u201d\u2019)]*)$")
_SENT_END = re.compile(r"[.!?][\"'\u201d\u2019)]*$")


def split_sentences(par: str) -> list[str]:
    out = []
    start = 0
    for m in _BOUNDARY.finditer(par):
        end = m.start() + 1
        prev = re.search(r"(\S+)$", par[start:end])
        word = prev.group(1).rstrip(".!?").lstrip("(\"'\u201c\u2018").lower() if prev else ""
        if par[m.start()] == "." and (word in ABBREV or re.fullmatch(r"[a-z]", word)
                                      or re.fullmatch(r"(?:[a-z]\.)+[a-z]", word)):
            continue  # abbreviation or initial, not a sentence end
        s = par[start:m.end()].strip()
        if s:
            out.append(s)
        start = m.end()
    s = par[start:].strip()
    if s:
        out.append(s)
    return out


def read_eval(corpus: str):
    path = os.path.join(corpus, "eval.txt")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    docs = [d.split("\n") for d in text.strip("\n").split("\n\n")]
    sources = ["?"] * len(docs)
    ids = [str(i) for i in range(len(docs))]
    idx = os.path.join(corpus, "eval.docs.tsv")
    if os.path.exists(idx):
        rows = [line.rstrip("\n").split("\t") for line in open(idx, encoding="utf-8")][1:]
        if len(rows) != len(docs):
            raise SystemExit(f"{idx}: {len(rows)} rows but {len(docs)} documents in {path}")
        sources = [r[0] for r in rows]
        ids = [r[1] for r in rows]
    return path, docs, sources, ids


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def pick(cands, n, cap, per_doc, rng):
    """cands: list of (priority, doc, source, item). Lower priority first; random order within a
    priority; at most per_doc items per document and `cap` per source (relaxed if short)."""
    keyed = sorted(((c[0], rng.random(), i) for i, c in enumerate(cands)))
    chosen, n_doc, n_src, used = [], {}, {}, set()
    for relax in (False, True):
        for _, _, i in keyed:
            if len(chosen) >= n:
                break
            if i in used:
                continue
            _, doc, src, item = cands[i]
            if n_doc.get(doc, 0) >= per_doc or (not relax and n_src.get(src, 0) >= cap):
                continue
            used.add(i)
            chosen.append(cands[i])
            n_doc[doc] = n_doc.get(doc, 0) + 1
            n_src[src] = n_src.get(src, 0) + 1
    return chosen


# ---------------------------------------------------------------------------------------------
# lastword
# ---------------------------------------------------------------------------------------------


def lastword_candidates(docs, sources, exclude=()):
    cands = []
    for di, doc in enumerate(docs):
        if sources[di] in exclude:
            continue
        # passages may span the paragraphs of one document, as LAMBADA's do
        sents = [s for par in doc for s in split_sentences(par)]
        if len(sents) >= 3:
            last_end = -1
            for e in range(2, len(sents)):
                m = _LASTWORD.search(sents[e])
                if not m:
                    continue
                target = m.group(1)
                if len(target) < 3 or target.lower() in STOPWORDS:
                    continue
                # the shortest window of 3..8 sentences ending at e with >= 50 words
                for L in range(3, 9):
                    if e - L + 1 < 0:
                        break
                    if e - L + 1 <= last_end:  # no overlap with the previous candidate
                        break
                    passage = " ".join(sents[e - L + 1:e + 1])
                    if len(passage.split()) < 50:
                        continue
                    cut = len(passage) - len(sents[e]) + m.start(1)
                    context = passage[:cut].rstrip()
                    if not context or len(context.split()) > 400:
                        break
                    in_ctx = re.search(r"(?<![A-Za-z])" + re.escape(target) + r"(?![A-Za-z])", context) is not None
                    cands.append((0 if in_ctx else 1, di, sources[di],
                                  {"task": "lastword", "context": context, "choices": [" " + target],
                                   "label": 0, "greedy": True}))
                    last_end = e
                    break
    return cands


# ---------------------------------------------------------------------------------------------
# nextsent
# ---------------------------------------------------------------------------------------------


def good_sentence(s: str) -> bool:
    w = len(s.split())
    return 5 <= w <= 60 and bool(_SENT_END.search(s)) and bool(re.match(r"[\"'\u201c\u2018(]?[A-Z]", s))


def nextsent_items(docs, sources, rng):
    doc_sents = []
    for doc in docs:
        ss = []
        for par in doc:
            ss.extend(split_sentences(par))
        doc_sents.append(ss)
    # distractor pool: good sentences by source and length
    by_src_len: dict[str, dict[int, list]] = {}
    all_len: dict[int, list] = {}
    for di, ss in enumerate(doc_sents):
        for s in ss:
            if good_sentence(s):
                n = len(s.split())
                by_src_len.setdefault(sources[di], {}).setdefault(n, []).append((di, s))
                all_len.setdefault(n, []).append((di, s))

    def distractors(di, true, context, k=3):
        n = len(true.split())
        tol = max(2, round(0.2 * n))
        for pool in (by_src_len.get(sources[di], {}), all_len):
            cand = [x for m in range(n - tol, n + tol + 1) for x in pool.get(m, ()) if x[0] != di
                    and x[1] != true and x[1] not in context]
            # dedupe texts, keep order
            seen, uniq = set(), []
            for x in cand:
                if x[1] not in seen:
                    seen.add(x[1])
                    uniq.append(x[1])
            if len(uniq) >= k:
                return rng.sample(uniq, k)
        return None

    cands = []
    for di, ss in enumerate(doc_sents):
        i = 2
        while i < len(ss):
            k = rng.choice((2, 3, 4))
            if i - k < 0:
                k = i
            ctx = ss[i - k:i]
            true = ss[i]
            if good_sentence(true) and sum(len(s.split()) for s in ctx) >= 15 and all(
                    _SENT_END.search(s) for s in ctx):
                context = " ".join(ctx)
                ds = distractors(di, true, context)
                if ds:
                    choices = [" " + true] + [" " + d for d in ds]
                    order = list(range(4))
                    rng.shuffle(order)
                    item = {"task": "nextsent", "context": context,
                            "choices": [choices[j] for j in order], "label": order.index(0)}
                    cands.append((0, di, sources[di], item))
                    i += k + 2  # no overlap between items of one document
                    continue
            i += 1
    return cands


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus", help="directory with eval.txt (default data/corpus)")
    ap.add_argument("--out", default="data/tasks", help="output directory (default data/tasks)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--n-lastword", type=int, default=2000)
    ap.add_argument("--n-nextsent", type=int, default=2000)
    ap.add_argument("--min-items", type=int, default=1000, help="fail if a task gets fewer items")
    ap.add_argument("--source-cap", type=float, default=0.15,
                    help="at most this fraction of a task's items from one source (relaxed if short)")
    ap.add_argument("--lastword-exclude", default="gcide",
                    help="comma-separated sources not used for lastword (default: gcide, whose entries "
                         "are lists of unrelated senses, so their last word is not predictable)")
    ap.add_argument("--per-doc", type=int, default=3, help="at most this many items per document")
    args = ap.parse_args(argv)

    path, docs, sources, _ids = read_eval(args.corpus)
    os.makedirs(args.out, exist_ok=True)
    summary = {"eval_file": os.path.relpath(path), "eval_sha256": sha256_file(path), "seed": args.seed,
               "tasks": {}}
    for name, n in (("lastword", args.n_lastword), ("nextsent", args.n_nextsent)):
        rng = random.Random(f"{args.seed}:{name}")
        if name == "lastword":
            cands = lastword_candidates(docs, sources, set(args.lastword_exclude.split(",")))
        else:
            cands = nextsent_items(docs, sources, rng)
        cap = max(25, int(args.source_cap * n))
        chosen = pick(cands, n, cap, per_doc=args.per_doc, rng=rng)
        rng.shuffle(chosen)
        if len(chosen) < args.min_items:
            raise SystemExit(f"{name}: only {len(chosen)} items (< {args.min_items})")
        out = os.path.join(args.out, f"{name}.jsonl")
        with open(out, "w", encoding="utf-8", newline="\n") as f:
            for _, _, _, item in chosen:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
        per_src = {}
        for _, _, src, _ in chosen:
            per_src[src] = per_src.get(src, 0) + 1
        info = {"file": os.path.basename(out), "items": len(chosen), "candidates": len(cands),
                "sha256": sha256_file(out), "per_source": dict(sorted(per_src.items(), key=lambda x: -x[1]))}
        if name == "lastword":
            info["target_in_context"] = sum(1 for c in chosen if c[0] == 0)
        summary["tasks"][name] = info
        print(f"make_tasks: {out}: {len(chosen)} items from {len(cands)} candidates", file=sys.stderr)
    with open(os.path.join(args.out, "tasks.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
