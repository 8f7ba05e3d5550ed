#!/usr/bin/env python3
"""Build the Spense English prose corpus: fetch pinned archives, unpack, extract documents, clean,
dedupe, split by document, write data/corpus/{train,calib,eval}.txt and manifest.json.

Normally run through tools/corpus/build_corpus.sh. Standard library only.

Output format of a split file: UTF-8 (NFC) text, one paragraph per line, documents separated by one
empty line. {split}.docs.tsv lists the documents of the split in file order (source, document id,
paragraphs, bytes).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import extract  # noqa: E402
from sources import PINS, SOURCES  # noqa: E402

SPLIT_SALT = "spense-corpus-v1"
# Buckets out of 1000: [0, 900) train, [900, 950) calib, [950, 1000) eval.
SPLITS = (("train", 0, 900), ("calib", 900, 950), ("eval", 950, 1000))


def log(msg: str) -> None:
    print(f"[corpus {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------------------------


def _deb_fields(path: str) -> tuple[str, str]:
    out = subprocess.run(["dpkg-deb", "-f", path, "Package", "Version"], capture_output=True, text=True,
                         check=True).stdout
    f = dict(line.split(": ", 1) for line in out.strip().split("\n"))
    return f["Package"], f["Version"]


def _find_deb(cache: str, pkg: str, version: str | None) -> str | None:
    for path in sorted(glob.glob(os.path.join(cache, f"{pkg}_*.deb"))):
        p, v = _deb_fields(path)
        if p == pkg and (version is None or v == version):
            return path
    return None


def fetch(cache: str, strict: bool) -> dict:
    """Make sure every pinned archive is in the cache; return {package: record}."""
    os.makedirs(cache, exist_ok=True)
    got = {}
    problems = []
    for pkg, (kind, ver, sha, size) in PINS.items():
        rec = dict(package=pkg, kind=kind, version_pinned=ver, version=ver, sha256_pinned=sha)
        if kind == "deb":
            path = _find_deb(cache, pkg, ver)
            if path is None:
                r = subprocess.run(["apt-get", "download", f"{pkg}={ver}"], cwd=cache, capture_output=True,
                                   text=True)
                path = _find_deb(cache, pkg, ver) if r.returncode == 0 else None
                if path is None:
                    msg = (f"{pkg}={ver} is not downloadable (superseded in the archive?): "
                           f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'no output'}")
                    if strict:
                        problems.append(msg)
                        continue
                    log("WARNING: " + msg + "; taking the current version")
                    path = _find_deb(cache, pkg, None)
                    if path is None:
                        r = subprocess.run(["apt-get", "download", pkg], cwd=cache, capture_output=True,
                                           text=True)
                        path = _find_deb(cache, pkg, None)
                    if path is None:
                        problems.append(f"{pkg}: cannot download any version ({r.stderr.strip()[-300:]})")
                        continue
                    rec["version"] = _deb_fields(path)[1]
                    rec["status"] = "version-mismatch"
        else:  # npm tarball
            path = os.path.join(cache, f"{pkg}-{ver}.tgz")
            if not os.path.exists(path):
                r = subprocess.run(["npm", "pack", "--silent", f"{pkg}@{ver}"], cwd=cache, capture_output=True,
                                   text=True)
                if r.returncode != 0 or not os.path.exists(path):
                    problems.append(f"npm pack {pkg}@{ver} failed: {r.stderr.strip()[-300:]}")
                    continue
        digest = sha256_file(path)
        rec.update(file=os.path.basename(path), sha256=digest, bytes=os.path.getsize(path))
        if rec["version"] == ver:
            if digest != sha:
                problems.append(f"{pkg} {ver}: sha256 {digest} != pinned {sha} ({path}; delete it to download again)")
                continue
            if rec["bytes"] != size:
                problems.append(f"{pkg} {ver}: {rec['bytes']} bytes != pinned {size}")
                continue
            rec["status"] = "ok"
        rec["path"] = path
        got[pkg] = rec
    if problems:
        for p in problems:
            log("ERROR: " + p)
        raise SystemExit(1)
    n_mis = sum(1 for r in got.values() if r["status"] != "ok")
    log(f"fetched {len(got)} archives ({n_mis} not at the pinned version), "
        f"{sum(r['bytes'] for r in got.values()) / 1e6:.1f} MB")
    return got


# ---------------------------------------------------------------------------------------------
# unpack (only the files the sources read)
# ---------------------------------------------------------------------------------------------


def unpack(rec: dict, includes: list[str], dest_root: str) -> str:
    pkg = rec["package"]
    dest = os.path.join(dest_root, pkg)
    stamp = os.path.join(dest, ".stamp")
    key = rec["sha256"] + "\n" + "\n".join(includes)
    if os.path.exists(stamp) and open(stamp).read() == key:
        return dest
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    rx = [extract.glob_regex(p) for p in includes]

    def members(tf):
        for m in tf:
            name = m.name[2:] if m.name.startswith("./") else m.name
            if not m.isfile() or ".." in name.split("/") or name.startswith("/"):
                continue
            if any(r.match(name) for r in rx):
                yield name, m

    def write(tf, name, m):
        out = os.path.join(dest, name)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with tf.extractfile(m) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(out, 0o755 if m.mode & 0o111 else 0o644)

    if rec["kind"] == "deb":
        # GNU tar does the member selection (fast); its '*' matches '/' like glob_regex's.
        pats = ["./" + p.replace("**/", "*") for p in includes]
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", rec["path"]], stdout=subprocess.PIPE)
        r = subprocess.run(["tar", "-x", "-C", dest, "--wildcards", "--no-same-owner", "-f", "-", *pats],
                           stdin=proc.stdout, capture_output=True, text=True)
        proc.stdout.close()
        if proc.wait() != 0:
            raise SystemExit(f"dpkg-deb failed on {rec['path']}")
        errs = [e for e in r.stderr.splitlines()
                if "Not found in archive" not in e and "Exiting with failure status" not in e]
        if errs:
            raise SystemExit(f"tar failed on {rec['path']}: {errs[:3]}")
    else:
        with tarfile.open(rec["path"], mode="r:gz") as tf:
            for name, m in members(tf):
                write(tf, name, m)
    with open(stamp, "w") as f:
        f.write(key)
    return dest


# ---------------------------------------------------------------------------------------------
# extraction tasks (run in worker processes)
# ---------------------------------------------------------------------------------------------


def run_task(task):
    src_i, part, kind, roots, rels, params = task
    t0 = time.process_time()
    if kind == "kjv":
        docs = extract.ex_kjv(roots, params)
    else:
        (pkg, root), = roots.items()
        docs = extract.FILE_EXTRACTORS[kind](root, rels, params)
        if params.get("_prefix"):
            docs = [(f"{pkg}/{d}", p) for d, p in docs]
    return src_i, part, docs, time.process_time() - t0


def make_tasks(unpacked: dict[str, str], chunk_bytes: int = 12_000_000):
    tasks = []
    for si, src in enumerate(SOURCES):
        kind = src["extractor"]
        params = dict(src.get("params", {}))
        if kind == "kjv":
            tasks.append((si, 0, kind, {p: unpacked[p] for p in src["packages"]}, [], params))
            continue
        params["_prefix"] = len(src["packages"]) > 1
        part = 0
        for pkg in src["packages"]:
            root = unpacked[pkg]
            rels = extract.select_files(root, src["include"], src.get("exclude", []))
            if not rels:
                log(f"WARNING: {src['name']}: no files selected in {pkg}")
                continue
            if kind in extract.CHUNKABLE:
                chunk, size = [], 0
                for rel in rels:
                    chunk.append(rel)
                    size += os.path.getsize(os.path.join(root, rel))
                    if size >= chunk_bytes:
                        tasks.append((si, part, kind, {pkg: root}, chunk, params))
                        part += 1
                        chunk, size = [], 0
                if chunk:
                    tasks.append((si, part, kind, {pkg: root}, chunk, params))
                    part += 1
            else:
                tasks.append((si, part, kind, {pkg: root}, rels, params))
                part += 1
    return tasks


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


_SENT_SPLIT = re.compile(r"(?<=[.!?])[\"')\]\u201d\u2019]*\s+")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _sentence_keys(paragraph: str) -> list[bytes]:
    keys = []
    for sent in _SENT_SPLIT.split(paragraph):
        norm = _NON_ALNUM.sub(" ", sent.lower()).split()
        if len(norm) >= 8:
            keys.append(hashlib.blake2b(" ".join(norm).encode(), digest_size=10).digest())
    return keys


def split_of(source: str, doc_id: str) -> str:
    h = int(hashlib.sha256(f"{SPLIT_SALT}\0{source}\0{doc_id}".encode()).hexdigest()[:12], 16) % 1000
    for name, lo, hi in SPLITS:
        if lo <= h < hi:
            return name
    raise AssertionError


def order_key(source: str, doc_id: str) -> str:
    return hashlib.sha256(f"{SPLIT_SALT}-order\0{source}\0{doc_id}".encode()).hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data", help="data directory (default: data)")
    ap.add_argument("--strict", action="store_true", help="fail if a pinned version cannot be fetched")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--keep-unpacked", action="store_true", help="keep data/cache/unpacked afterwards")
    args = ap.parse_args(argv)

    t_start = time.time()
    cache = os.path.join(args.data, "cache")
    archives = fetch(os.path.join(cache, "archives"), args.strict)

    includes: dict[str, list[str]] = {}
    for src in SOURCES:
        for p in src["packages"]:
            includes.setdefault(p, []).extend(src["include"])
    unpacked = {}
    t0 = time.time()
    for pkg, rec in archives.items():
        unpacked[pkg] = unpack(rec, includes[pkg], os.path.join(cache, "unpacked"))
    log(f"unpacked {len(unpacked)} archives in {time.time() - t0:.0f}s")

    tasks = make_tasks(unpacked)
    # biggest first for load balance; results are reassembled in a fixed order
    sizes = [sum(os.path.getsize(os.path.join(next(iter(t[3].values())), r)) for r in t[4]) for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: -sizes[i])
    log(f"extracting: {len(tasks)} tasks, {sum(sizes) / 1e6:.0f} MB of input files, {args.jobs} workers")
    t0 = time.time()
    results: dict[int, dict[int, list]] = {}
    cpu: dict[int, float] = {}
    with mp.get_context("fork").Pool(args.jobs) as pool:
        for si, part, docs, secs in pool.imap_unordered(run_task, [tasks[i] for i in order], chunksize=1):
            results.setdefault(si, {})[part] = docs
            cpu[si] = cpu.get(si, 0.0) + secs
    log(f"extracted in {time.time() - t0:.0f}s")

    # 1. exact-paragraph dedupe (global, in source order then document-id order) and split
    seen: set[bytes] = set()
    assigned = []  # (source index, doc_id, split, paragraphs)
    src_stats = []
    for si, src in enumerate(SOURCES):
        docs = [d for part in sorted(results.get(si, {})) for d in results[si][part]]
        docs.sort(key=lambda d: d[0])
        ids = [d[0] for d in docs]
        if len(set(ids)) != len(ids):
            raise SystemExit(f"{src['name']}: duplicate document ids")
        st = dict(documents={s: 0 for s, _, _ in SPLITS}, paragraphs={s: 0 for s, _, _ in SPLITS},
                  bytes={s: 0 for s, _, _ in SPLITS}, duplicate_paragraphs_dropped=0,
                  eval_paragraphs_dropped_overlap=0, documents_extracted=len(docs),
                  extract_cpu_s=round(cpu.get(si, 0.0), 1))
        src_stats.append(st)
        for doc_id, paras in docs:
            kept = []
            for p in paras:
                h = hashlib.blake2b(p.encode(), digest_size=12).digest()
                if h in seen:
                    st["duplicate_paragraphs_dropped"] += 1
                    continue
                seen.add(h)
                kept.append(p)
            if kept:
                assigned.append((si, doc_id, split_of(src["name"], doc_id), kept))
    del seen

    # 2. near-duplicate guard for the held-out split: drop an eval paragraph that shares a sentence
    #    of >= 8 words (compared lowercased, letters and digits only) with train or calib.
    seen_sent: set[bytes] = set()
    for si, doc_id, split, paras in assigned:
        if split != "eval":
            for p in paras:
                seen_sent.update(_sentence_keys(p))
    out_docs = {name: [] for name, _, _ in SPLITS}
    for si, doc_id, split, paras in assigned:
        src = SOURCES[si]
        st = src_stats[si]
        if split == "eval":
            kept = [p for p in paras if not any(k in seen_sent for k in _sentence_keys(p))]
            st["eval_paragraphs_dropped_overlap"] += len(paras) - len(kept)
            paras = kept
            if not paras:
                continue
        text = "\n".join(paras) + "\n"
        out_docs[split].append((order_key(src["name"], doc_id), src["name"], doc_id, len(paras), text))
        st["documents"][split] += 1
        st["paragraphs"][split] += len(paras)
        st["bytes"][split] += len(text.encode())
    del seen_sent
    for src, st in zip(SOURCES, src_stats):
        log(f"{src['name']:22s} {sum(st['bytes'].values()) / 1e6:7.2f} MB  {sum(st['documents'].values()):7d} docs "
            f"(train/calib/eval {st['bytes']['train'] / 1e6:.2f}/{st['bytes']['calib'] / 1e6:.2f}/"
            f"{st['bytes']['eval'] / 1e6:.2f} MB), dropped {st['duplicate_paragraphs_dropped']} duplicate + "
            f"{st['eval_paragraphs_dropped_overlap']} eval-overlap paragraphs, {st['extract_cpu_s']:.0f}s cpu")

    outdir = os.path.join(args.data, "corpus")
    os.makedirs(outdir, exist_ok=True)
    split_info = {}
    for split, _, _ in SPLITS:
        docs = sorted(out_docs[split])
        path = os.path.join(outdir, f"{split}.txt")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f, \
                open(os.path.join(outdir, f"{split}.docs.tsv"), "w", encoding="utf-8") as idx:
            idx.write("source\tdoc_id\tparagraphs\tbytes\n")
            for i, (_, sname, doc_id, npara, text) in enumerate(docs):
                if i:
                    f.write("\n")
                f.write(text)
                idx.write(f"{sname}\t{doc_id}\t{npara}\t{len(text.encode())}\n")
        os.replace(tmp, path)
        words = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                words += len(line.split())
        split_info[split] = dict(file=f"{split}.txt", bytes=os.path.getsize(path), sha256=sha256_file(path),
                                 documents=len(docs), paragraphs=sum(d[3] for d in docs), words=words)
        log(f"wrote {path}: {split_info[split]['bytes'] / 1e6:.2f} MB, {len(docs)} documents")

    manifest = dict(
        name="spense-english-prose",
        format="UTF-8 NFC text; one paragraph per line; documents separated by one empty line",
        split_rule=(f"bucket = int(sha256('{SPLIT_SALT}\\0' + source + '\\0' + doc_id)[:12 hex], 16) % 1000; "
                    "train [0,900), calib [900,950), eval [950,1000)"),
        dedupe="exact duplicate paragraphs (after cleaning) kept only at their first occurrence, sources "
               "in manifest order, documents in id order; then an eval paragraph sharing a sentence of >= 8 "
               "words (lowercased, letters and digits) with train or calib is dropped",
        splits=split_info,
        total_bytes=sum(v["bytes"] for v in split_info.values()),
        sources=[],
    )
    for src, st in zip(SOURCES, src_stats):
        manifest["sources"].append(dict(
            name=src["name"], genre=src["genre"], licence=src["licence"], extractor=src["extractor"],
            packages=[{k: archives[p][k] for k in ("package", "kind", "version", "version_pinned", "sha256",
                                                    "bytes", "status")} for p in src["packages"]],
            **{k: v for k, v in st.items() if k != "extract_cpu_s"}))
    with open(os.path.join(outdir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")
    if not args.keep_unpacked:
        shutil.rmtree(os.path.join(cache, "unpacked"), ignore_errors=True)
    log(f"done in {time.time() - t_start:.0f}s: {manifest['total_bytes'] / 1e6:.1f} MB in {outdir}/")


if __name__ == "__main__":
    main()
