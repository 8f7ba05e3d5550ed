"""Text helpers for the corpus builder: markup to paragraphs, cleaning, the prose filter.

Standard library only. Every function is deterministic (no dict-order or hash-seed dependence).
"""
from __future__ import annotations

import re
import unicodedata
import html

# ---------------------------------------------------------------------------------------------
# Cleaning and the prose filter
# ---------------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")
# C0/C1 controls (tab and newline are handled as whitespace first), zero-width characters, BOM,
# soft hyphen.
_JUNK = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile("[\u00a0\u2000-\u200a\u202f\u205f\u3000]")
_PILCROW = re.compile("[\u00b6\u00a7]\s*$")  # permalink anchors that HTML generators append

# A small closed-class English word list: prose has a high share of these, code, tables, word
# lists and other languages a low one.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had
has have having he her here hers him his how i if in into is it its itself just may me might more
most must my no nor not now of off on once only or other our ours out over own same shall she
should so some such than that the their theirs them then there these they this those through to
too under until up upon very was we were what when where which while who whom why will with would
you your yours thou thee thy unto hath
""".split())

_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")
_CODEISH = set("{}<>=;_\\|@#$^~`*[]")


def clean_paragraph(s: str) -> str:
    """NFC, no control characters, single spaces."""
    s = unicodedata.normalize("NFC", s)
    s = _JUNK.sub("", s)
    s = _SPACES.sub(" ", s)
    s = _WS.sub(" ", s).strip()
    s = _PILCROW.sub("", s).strip()
    return s


def is_prose(s: str, min_words: int = 6) -> bool:
    """Heuristic: is this paragraph English running text (not code, a table row, a list of names,
    a heading, a command line or another language)?"""
    if len(s) < 30:
        return False
    nonspace = [c for c in s if not c.isspace()]
    n = len(nonspace)
    letters = sum(1 for c in nonspace if c.isalpha())
    if letters < 0.75 * n:  # mostly non-letters: numbers, symbols, code
        return False
    if sum(1 for c in nonspace if c in _CODEISH) > 0.02 * n + 1:
        return False
    if sum(1 for c in nonspace if ord(c) > 0x24F and c.isalpha()) > 0.02 * n:  # non-Latin script
        return False
    words = _WORD.findall(s)
    if len(words) < min_words:
        return False
    lower = [w.lower() for w in words]
    stop = sum(1 for w in lower if w in STOPWORDS)
    if stop < 0.18 * len(words):  # English running text is ~35-50 % function words
        return False
    avg = sum(len(w) for w in words) / len(words)
    if not 2.5 <= avg <= 9.0:
        return False
    # Identifiers such as foo_bar, fooBar, Foo::bar, a.b.c(): a few are fine, many are code.
    ident = len(re.findall(r"\w+(?:_\w+|::\w+|\(\))|\b[a-z]+[A-Z]\w*|\b\w+\.\w+\.\w+", s))
    if ident > 0.1 * len(words) + 1:
        return False
    # Must contain a sentence: some end punctuation.
    if not re.search(r"[.!?]([\"'\u201d\u2019)\]]*)(\s|$)", s):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# HTML / XML to paragraphs
# ---------------------------------------------------------------------------------------------

BLOCK = frozenset("""
p div li dd dt ul ol dl blockquote section article main aside h1 h2 h3 h4 h5 h6 title table tr td
th thead tbody tfoot caption figure figcaption br hr body html header footer nav form fieldset
legend center address details summary
page note item terms list steps tr td synopsis quote example links info credit desc comment
""".split())
# Elements whose whole subtree is dropped (code, navigation, headings, page furniture).
SKIP = frozenset("""
script style pre head nav header footer noscript svg math textarea select button
h1 h2 h3 h4 h5 h6 title kbd samp var screen programlisting
""".split())
SKIP_CLASS = re.compile(
    r"(highlight\w*|sphinxsidebar\w*|related|footer|header|navigation|nav\w*|breadcrumbs?|"
    r"toc\w*|menu\w*|sidebar\w*|rustdoc-toggle|example-wrap|literal-block|"
    r"programlisting|screen|synopsis|funcsynopsis|cmdsynopsis|example|admonition-title|"
    r"headerlink|footnote\w*|citation|search\w*|copyright|legalnotice|version\w*|"
    r"sourceCode|signature|sig|sig-object|chapter-nav\w*|rst-versions|"
    r"prev|next|nav-chapters|mobile-nav-chapters|relbar\w*)")
_NEVER_SKIP = frozenset("html body main article section".split())
VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())


_TOKEN = re.compile(
    r"<(/?)([A-Za-z][\w:.-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>|<!--.*?-->|<!\[CDATA\[.*?\]\]>|<[!?][^>]*>",
    re.S)
_ATTR_CLASS = re.compile(r"""\bclass\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)
_ATTR_ROLE = re.compile(r"""\brole\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)
_RAW = frozenset(("script", "style", "textarea"))
_SKIP_ROLES = frozenset(("navigation", "search", "banner", "contentinfo"))


def _attr(rx, s):
    m = rx.search(s)
    if not m:
        return ""
    return m.group(1) if m.group(1) is not None else (m.group(2) if m.group(2) is not None else m.group(3))


def html_paragraphs(text: str, skip_tags=SKIP, block_tags=BLOCK) -> list[str]:
    """Split an HTML (or XML) page into the text of its block elements, dropping the subtrees of
    code, navigation and headings. A regular-expression tokenizer (much faster than
    html.parser): tolerant of unclosed tags, entities decoded with html.unescape."""
    paras: list[str] = []
    buf: list[str] = []
    skip_tag = None
    skip_level = 0
    pos = 0
    n = len(text)

    def flush():
        if buf:
            t = html.unescape("".join(buf)).strip()
            if t:
                paras.append(t)
            buf.clear()

    while pos < n:
        m = _TOKEN.search(text, pos)
        if m is None:
            if skip_tag is None:
                buf.append(text[pos:])
            break
        if skip_tag is None and m.start() > pos:
            buf.append(text[pos:m.start()])
        pos = m.end()
        tag = m.group(2)
        if tag is None:  # comment, doctype, processing instruction
            continue
        tag = tag.lower()
        closing = m.group(1) == "/"
        attrs = m.group(3) or ""
        selfclosing = attrs.endswith("/")
        if not closing and tag in _RAW and not selfclosing:  # raw text element: jump past its end
            e = _find_close(text, tag, pos)
            pos = n if e < 0 else e
            continue
        if skip_tag is not None:
            if tag == skip_tag and not selfclosing:
                skip_level += -1 if closing else 1
                if skip_level == 0:
                    skip_tag = None
            continue
        if closing:
            if tag in block_tags:
                flush()
            continue
        if tag in VOID or selfclosing:
            if tag in ("br", "hr"):
                buf.append(" ")
            elif tag in block_tags:
                flush()
            continue
        skip = tag in skip_tags
        if not skip and attrs:
            if tag not in _NEVER_SKIP:
                cls = _attr(_ATTR_CLASS, attrs)
                if cls and any(SKIP_CLASS.fullmatch(c) for c in cls.split()):
                    skip = True
            if not skip and _attr(_ATTR_ROLE, attrs) in _SKIP_ROLES:
                skip = True
        if skip:
            flush()
            skip_tag = tag
            skip_level = 1
            continue
        if tag in block_tags:
            flush()
    flush()
    return paras


def _find_close(text, tag, pos):
    m = re.compile(r"</" + tag + r"\s*>", re.I).search(text, pos)
    return m.start() if m else -1


# ---------------------------------------------------------------------------------------------
# POD (Perl documentation) to paragraphs
# ---------------------------------------------------------------------------------------------

_POD_CODE = re.compile(r"([BICLFSXZE])<(?:<+\s)?")


def _pod_inline(s: str) -> str:
    # Remove formatting codes X<...>, C<< ... >>, L<text|target>, E<gt> etc.; nesting-aware.
    out = []
    i = 0
    stack = []  # (code, closing string, start index in out)
    while i < len(s):
        m = _POD_CODE.match(s, i) if s[i] in "BICLFSXZE" and i + 1 < len(s) and s[i + 1] == "<" else None
        if m:
            opener = m.group(0)
            n = opener.count("<")
            close = ">" * n if n == 1 else " " + ">" * n
            stack.append((m.group(1), close, len(out)))
            i = m.end()
            continue
        if stack and s.startswith(stack[-1][1], i) and (stack[-1][1] != ">" or True):
            code, close, start = stack.pop()
            inner = "".join(out[start:])
            del out[start:]
            if code == "E":
                inner = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&",
                         "apos": "'"}.get(inner, "")
            elif code == "L":
                if "|" in inner:
                    inner = inner.split("|", 1)[0]
                elif "/" in inner:
                    inner = inner.replace("/", " ").strip().strip('"')
            elif code in ("X", "Z"):
                inner = ""
            out.append(inner)
            i += len(close)
            continue
        out.append(s[i])
        i += 1
    return "".join(out)


def pod_paragraphs(text: str) -> list[str]:
    paras = []
    in_pod = True
    in_begin = False
    for block in re.split(r"\n[ \t]*\n", text):
        if not block.strip():
            continue
        if block.startswith("="):
            cmd = block.split(None, 1)[0]
            if cmd == "=cut":
                in_pod = False
            else:
                in_pod = True
            if cmd == "=begin":
                in_begin = True
            elif cmd == "=end":
                in_begin = False
            if cmd == "=item":
                rest = block.split(None, 1)[1] if len(block.split(None, 1)) > 1 else ""
                rest = re.sub(r"^[*\d.]+\s*", "", rest.strip())
                if len(rest.split()) >= 8:  # an item that is a sentence
                    paras.append(_pod_inline(rest))
            continue
        if not in_pod or in_begin:
            continue
        if block[0] in " \t":  # verbatim (code)
            continue
        paras.append(_pod_inline(block.replace("\n", " ")))
    return paras


# ---------------------------------------------------------------------------------------------
# roff (man pages) to paragraphs
# ---------------------------------------------------------------------------------------------

_ROFF_ESC = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),
    (re.compile(r"\\s[+-]?\d"), ""),
    (re.compile(r"\\\(em|\\\[em\]"), "\u2014"),
    (re.compile(r"\\\(en|\\\[en\]"), "\u2013"),
    (re.compile(r"\\\((aq|cq)|\\\[(aq|cq)\]"), "'"),
    (re.compile(r"\\\((lq|rq|dq)|\\\[(lq|rq|dq)\]"), '"'),
    (re.compile(r"\\\(oq|\\\[oq\]"), "'"),
    (re.compile(r"\\\(bu|\\\[bu\]"), ""),
    (re.compile(r"\\\(co|\\\[co\]"), "\u00a9"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),
    (re.compile(r"\\\*(\(..|\[[^\]]*\]|.)"), ""),
    (re.compile(r"\\[&|^:%)]"), ""),
    (re.compile(r"\\[e\\]"), "\\"),
    (re.compile(r"\\-"), "-"),
    (re.compile(r"\\ "), " "),
    (re.compile(r"\\[cdu]"), ""),
    (re.compile(r"\\[hvwlLoxkzbXYZN]'[^']*'"), ""),
    (re.compile(r"\\n(\(..|\[[^\]]*\]|.)"), ""),
    (re.compile(r"\\\"(.*)$"), ""),  # comment
    (re.compile(r"\\."), ""),
]
_ROFF_FONT_MACROS = {"B", "I", "BR", "BI", "IB", "IR", "RB", "RI", "SM", "SB", "UR", "MT", "CW"}


def _roff_text(s: str) -> str:
    for pat, rep in _ROFF_ESC:
        s = pat.sub(lambda m, r=rep: r, s)
    return s


def _roff_args(s: str) -> list[str]:
    args = []
    for m in re.finditer(r'"((?:[^"]|"")*)"|(\S+)', s):
        args.append(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2))
    return args


def man_paragraphs(text: str) -> list[str]:
    paras: list[str] = []
    buf: list[str] = []
    nofill = False
    section = ""

    tag_pending = False

    def flush():
        if buf:
            paras.append(" ".join(buf))
            buf.clear()

    def add(text):
        nonlocal tag_pending
        buf.append(text)
        if tag_pending:  # the tag line of .TP is a label: its own paragraph (dropped by the filter)
            tag_pending = False
            flush()

    for line in text.split("\n"):
        if line.startswith((".", "'")):
            parts = line[1:].strip().split(None, 1)
            if not parts:
                continue
            mac = parts[0]
            arg = parts[1] if len(parts) > 1 else ""
            if mac in ("nf", "EX"):
                flush()
                nofill = True
            elif mac in ("fi", "EE"):
                nofill = False
            elif mac in ("SH", "SS"):
                flush()
                section = _roff_text(" ".join(_roff_args(arg))).upper()
            elif mac in ("PP", "LP", "P", "IP", "TP", "HP", "RS", "RE", "sp", "br", "TQ", "in",
                         "ti", "TS", "TE", "bp", "ne"):
                flush()
                tag_pending = mac in ("TP", "TQ")
            elif mac in _ROFF_FONT_MACROS and not nofill:
                joiner = "" if len(mac) == 2 and mac not in ("SM", "SB", "UR", "MT", "CW") else " "
                words = _roff_args(arg)
                add(_roff_text(joiner.join(words)))
            # every other request (de, ds, TH, so, if, ie, ...) carries no prose
            continue
        if nofill or section in ("SYNOPSIS", "NAME", "EXAMPLES", "EXAMPLE", "SEE ALSO", "AUTHOR",
                                 "AUTHORS", "COLOPHON", "FILES"):
            continue
        if not line.strip():
            flush()
            continue
        add(_roff_text(line))
    flush()
    return paras


# ---------------------------------------------------------------------------------------------
# Brown corpus (word/tag tokens) to text
# ---------------------------------------------------------------------------------------------

_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}", "''", "'", "'s", "n't", "%"}
_NO_SPACE_AFTER = {"(", "[", "{", "``", "`", "$"}


def detokenize(tokens: list[str]) -> str:
    out: list[str] = []
    no_space = True
    for t in tokens:
        if t == "``":
            piece = '"'
        elif t == "''":
            piece = '"'
        elif t == "`":
            piece = "'"
        else:
            piece = t
        if out and t in (".", ",") and out[-1].endswith((".", ",")) and out[-1].strip() not in (".", "..."):
            continue  # "etc. ." and "N.Y. , ," in the tokenisation
        if not out or no_space or t in _NO_SPACE_BEFORE:
            out.append(piece)
        else:
            out.append(" " + piece)
        no_space = t in _NO_SPACE_AFTER
    s = "".join(out)
    s = re.sub(r"\s+(--)\s+", r" \1 ", s)
    s = s.replace(";;", ";").replace("??", "?")
    return s


def brown_paragraphs(text: str) -> list[str]:
    paras = []
    for block in re.split(r"\n\s*\n", text):
        toks = []
        for tt in block.split():
            w, sep, _tag = tt.rpartition("/")
            toks.append(w if sep else tt)
        if toks:
            paras.append(detokenize(toks))
    return paras
