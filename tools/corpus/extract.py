"""Extractors: unpacked package files -> documents (id, [clean prose paragraphs]).

Each extractor reads only files selected by the source's include/exclude globs (see sources.py) and
returns documents with deterministic ids. Cleaning (NFC, whitespace, control characters) and the
prose filter (textlib.is_prose) are applied here, inside the worker processes.
"""
from __future__ import annotations

import base64
import gzip
import os
import re
import subprocess

from textlib import (brown_paragraphs, clean_paragraph, html_paragraphs, is_prose, man_paragraphs,
                     pod_paragraphs, SKIP)

# ---------------------------------------------------------------------------------------------
# file selection
# ---------------------------------------------------------------------------------------------


def glob_regex(pat: str) -> re.Pattern:
    """tar-like glob: '*' also matches '/', '**/' matches zero or more directories."""
    out = []
    i = 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pat[i] == "*":
            out.append(".*")
            i += 1
        elif pat[i] == "?":
            out.append("[^/]")
            i += 1
        elif pat[i] == "[":
            j = pat.index("]", i)
            out.append(pat[i:j + 1])
            i = j + 1
        else:
            out.append(re.escape(pat[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def select_files(root: str, include: list[str], exclude: list[str]) -> list[str]:
    inc = [glob_regex(p) for p in include]
    exc = [glob_regex(p if p.startswith("*") else "*" + p) for p in exclude]
    found = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(d, f)
            if os.path.islink(full):  # symlinks duplicate other files
                continue
            rel = os.path.relpath(full, root)
            if any(r.match(rel) for r in inc) and not any(r.match(rel) for r in exc):
                found.append(rel)
    return found


def read_text(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


# Generated page furniture that passes the prose filter.
BOILERPLATE = re.compile(
    r"^(?:The node you are looking for is at|Redirecting to|This page is for LilyPond|"
    r"We welcome your aid|There is a new edition of the book|You are viewing|Copyright \u00a9|"
    r"If you came here via a link or web search)")


def finish(paras, min_words: int = 6) -> list[str]:
    out = []
    for p in paras:
        p = clean_paragraph(p)
        if "\ufffd" in p or BOILERPLATE.match(p):
            continue
        if p[:1] in "\u2019\u201d),.;:!?]}":  # starts mid-sentence (inline code was dropped)
            continue
        if is_prose(p, min_words=min_words):
            out.append(p)
    return out


# ---------------------------------------------------------------------------------------------
# extractors over a list of files (parallelisable in chunks)
# ---------------------------------------------------------------------------------------------

MALLARD_SKIP = SKIP | {"code", "info", "media", "synopsis", "screen", "cmd", "output", "input"}


def ex_html(root, rels, params):
    docs = []
    for rel in rels:
        paras = finish(html_paragraphs(read_text(os.path.join(root, rel))))
        if paras:
            docs.append((rel, paras))
    return docs


def ex_mallard(root, rels, params):
    docs = []
    for rel in rels:
        paras = finish(html_paragraphs(read_text(os.path.join(root, rel)), skip_tags=MALLARD_SKIP))
        if paras:
            docs.append((rel, paras))
    return docs


def ex_pod(root, rels, params):
    docs = []
    for rel in rels:
        paras = finish(pod_paragraphs(read_text(os.path.join(root, rel))))
        if paras:
            docs.append((rel, paras))
    return docs


def ex_man(root, rels, params):
    docs = []
    for rel in rels:
        text = read_text(os.path.join(root, rel))
        if text.lstrip().startswith(".so "):  # alias page
            continue
        paras = finish(man_paragraphs(text))
        if paras:
            docs.append((rel, paras))
    return docs


def ex_brown(root, rels, params):
    docs = []
    for rel in rels:
        blocks = []
        for block in re.split(r"\n[ \t]*\n", read_text(os.path.join(root, rel))):
            lines = []
            for line in block.split("\n"):
                toks = line.split()
                if not toks:
                    continue
                # headlines: every tag ends in -hl
                if all(t.rpartition("/")[2].endswith("-hl") for t in toks):
                    continue
                lines.append(line)
            if lines:
                blocks.extend(brown_paragraphs(" ".join(lines)))
        paras = finish(blocks, min_words=4)
        if paras:
            docs.append((rel, paras))
    return docs


def ex_fortune(root, rels, params):
    docs = []
    for rel in rels:
        text = read_text(os.path.join(root, rel))
        for i, cookie in enumerate(re.split(r"\n%\n", "\n" + text + "\n")):
            lines = []
            for line in cookie.split("\n"):
                s = line.strip()
                if not s or s.startswith("--") or s.startswith("\u2014"):  # attributions
                    continue
                lines.append(s)
            paras = finish([" ".join(lines)], min_words=6)
            if paras:
                docs.append((f"{rel}#{i}", paras))
    return docs


# ---------------------------------------------------------------------------------------------
# dictd databases (GCIDE, FOLDOC, Jargon File, Devil's Dictionary)
# ---------------------------------------------------------------------------------------------

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64num(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


_GCIDE_SRC = re.compile(r"\[(?:1913 Webster|PJC|WordNet[^\]]*|Webster 1913 Suppl\.|Century Dict\.|"
                        r"Chambers[^\]]*|Sept\. 1913 Suppl\.|Hitchcock[^\]]*|Locke[^\]]*|RN|MW\d*|"
                        r"NRC[^\]]*|JS|JW|Ruskin|F\. Tiemann|info[^\]]*|Cent\. Dict\.|Zool\.[^\]]*)\]")
_GCIDE_LABEL = re.compile(r"\[(?:R|Obs|Colloq|Archaic|Poetic|Prov\.? Eng|Local|Scot|U\. ?S|Eng|Slang|"
                          r"Rare|Humorous|Vulgar|Cant|Law|Fr|L|Gr|Obsoles|Low|Dial|Collog)\.?(?:[^\]]{0,20})\]")
_GCIDE_ENT = {"[ae]": "\u00e6", "[AE]": "\u00c6", "[oe]": "\u0153", "[OE]": "\u0152", "[deg]": "\u00b0",
              "[frac12]": "\u00bd", "[frac14]": "\u00bc", "[frac34]": "\u00be", "[sect]": "\u00a7",
              "[pound]": "\u00a3", "[times]": "\u00d7", "[divide]": "\u00f7", "[dag]": "\u2020",
              "[para]": "\u00b6", "[cced]": "\u00e7", "[eacute]": "\u00e9", "[ntil]": "\u00f1"}
_GCIDE_ENT_RX = re.compile("|".join(re.escape(k) for k in _GCIDE_ENT))
_GCIDE_ACCENT = re.compile(r"\[[=.\"'`^~,]?[A-Za-z]{1,2}[=.\"'`^~,]?\]")
_POS_ONLY = re.compile(r"^\s*(?:(?:n|v|a|adv|prep|conj|interj|pron|pl|sing|p\.\s*p|imp|p\.\s*pr|vb\.\s*n|"
                       r"v\.\s*[ti]|superl|compar|obs|fem|masc)\.?[,;&\s]*)+$")


def _gcide_entry(text: str):
    """One GCIDE entry -> (headword, [paragraphs])."""
    lines = text.split("\n")
    head = lines[0]
    headword = head.split("\\")[0].strip()
    # header: first line plus continuation lines while brackets/parentheses are open or the line
    # is only part-of-speech abbreviations
    i = 1
    depth = head.count("[") - head.count("]") + head.count("(") - head.count(")")
    while i < len(lines) and lines[i].strip() and (depth > 0 or _POS_ONLY.match(lines[i])):
        depth += lines[i].count("[") - lines[i].count("]") + lines[i].count("(") - lines[i].count(")")
        i += 1
    body = "\n".join(lines[i:])
    senses, notes = [], []
    for block in re.split(r"\n[ \t]*\n", body):
        out = []
        for line in block.split("\n"):
            line = re.sub(r"--(?=[A-Z])[^\"\n]*$", "", line)  # quotation attribution: --Shak.
            out.append(line.strip())
        b = " ".join(x for x in out if x and not _GCIDE_SRC.fullmatch(x))
        first = block.lstrip("\n")
        if len(first) - len(first.lstrip(" ")) >= 8 and b and '"' not in b:  # an indented quotation
            b = '"' + b.strip() + '"'
        b = _GCIDE_SRC.sub("", b)
        b = _GCIDE_LABEL.sub("", b)
        b = _GCIDE_ENT_RX.sub(lambda m: _GCIDE_ENT[m.group(0)], b)
        b = _GCIDE_ACCENT.sub(lambda m: re.sub(r"[^A-Za-z]", "", m.group(0)), b)
        b = b.replace("{", "").replace("}", "").replace("\\", "")
        b = re.sub(r"^(?:\d+\.\s*|\([a-z]\)\s*)+", "", b.strip())
        b = re.sub(r"^\((?:[A-Z][a-z]*\.?\s?(?:&\s)?)+\)\s*", "", b)  # domain label: (Naut.)
        b = re.sub(r"\s+", " ", b).strip()
        if not b or b.startswith(("Syn:", "Syn.", "Usage:")):
            continue
        if b.startswith("Note:"):
            notes.append(b[5:].strip())
        elif len(b.split()) >= 2:
            senses.append(b)
    paras = []
    if senses:
        paras.append(headword + ": " + " ".join(senses))
    paras.extend(notes)
    return headword, paras


def _plain_entry(text: str, style: str):
    lines = text.split("\n")
    headword = lines[0].strip()
    blocks = re.split(r"\n[ \t]*\n", text)
    paras = []
    for bi, block in enumerate(blocks):
        b = " ".join(line.strip() for line in block.split("\n"))
        if style == "foldoc":
            b = re.sub(r"<[a-z][a-z ,/-]*>\s*", "", b)  # <programming> category labels
            b = re.sub(r"\(\d{4}-\d\d-\d\d\)", "", b)  # (1994-11-08) dates
            b = re.sub(r"\{\(?(?:https?|ftp)://[^}]*\}", "", b)
        b = b.replace("{", "").replace("}", "")
        b = re.sub(r"^\d+\.\s+", "", b.strip())
        if bi == 0 and b.strip() == headword:
            continue
        paras.append(b)
    return headword, paras


def ex_dictd(root, rels, params):
    style = params.get("style", "plain")
    idx = [r for r in rels if r.endswith(".index")][0]
    dz = [r for r in rels if r.endswith(".dict.dz")][0]
    data = gzip.decompress(open(os.path.join(root, dz), "rb").read())
    seen = set()
    entries = []
    with open(os.path.join(root, idx), encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0].startswith("00database") or parts[0].startswith("00-database"):
                continue
            off, ln = _b64num(parts[1]), _b64num(parts[2])
            if off in seen:
                continue
            seen.add(off)
            entries.append((off, ln))
    entries.sort()
    docs = []
    for off, ln in entries:
        text = data[off:off + ln].decode("utf-8", errors="replace")
        if style == "gcide":
            headword, paras = _gcide_entry(text)
        else:
            headword, paras = _plain_entry(text, style)
        paras = finish(paras)
        if paras:
            docs.append((f"{off:09d}:" + re.sub(r"\s+", " ", headword)[:40], paras))
    return docs


# ---------------------------------------------------------------------------------------------
# King James Bible, decoded with the package's own program
# ---------------------------------------------------------------------------------------------


def ex_kjv(roots, params):
    data_root = roots["bible-kjv-text"]
    prog = os.path.join(roots["bible-kjv"], "usr/bin/bible")
    out = subprocess.run([prog, "-f", "-p", os.path.join(data_root, "usr/lib"), "gen1:1-rev22:21"],
                         stdin=subprocess.DEVNULL, capture_output=True, check=True).stdout
    chapters: dict[str, list[str]] = {}
    order = []
    for line in out.decode("utf-8", errors="replace").split("\n"):
        m = re.match(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$", line)
        if not m:
            continue
        ch = m.group(1) + m.group(2)
        if ch not in chapters:
            chapters[ch] = []
            order.append(ch)
        chapters[ch].append(m.group(4).strip())
    if len(order) < 1000:
        raise RuntimeError(f"kjv: decoded only {len(order)} chapters")
    docs = []
    for n, ch in enumerate(order):
        verses = chapters[ch]
        # paragraphs of up to 5 verses keep lines readable
        paras = [" ".join(verses[i:i + 5]) for i in range(0, len(verses), 5)]
        paras = finish(paras, min_words=4)
        if paras:
            docs.append((f"{n:04d}:{ch}", paras))
    return docs


FILE_EXTRACTORS = {
    "html": ex_html, "mallard": ex_mallard, "pod": ex_pod, "man": ex_man, "brown": ex_brown,
    "fortune": ex_fortune, "dictd": ex_dictd,
}
CHUNKABLE = {"html", "mallard", "pod", "man"}
