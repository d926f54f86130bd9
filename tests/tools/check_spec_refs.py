#!/usr/bin/env python3
"""Every section reference (the section sign followed by an id such as 3.3, C.2 or 9) in the
tracked files must name a Markdown file in the repository and resolve to a heading in it.

    check_spec_refs.py [--root DIR]    scan DIR (default: this repository); exit 1 on a bad one
    check_spec_refs.py --self-test     prove the scanner rejects broken references

How a reference is attributed to a document (the rules are strict on purpose):
  1. the nearest `path/to/file.md` earlier on the same line (so "docs/spec/x.md S3.3, S3.6"
     attributes both to x.md); or
  2. else the last `file.md` on the one or two lines just before it (a sentence wrapped by the
     formatter; a blank line ends the search); or
  3. inside a Markdown file under docs/spec/, the file itself.
Anything else cannot be attributed and is an error. A reference resolves when the named file is
in the repository and has a heading (outside code fences) whose first word is the id, with or
without a trailing dot: "## 3. Packets" for 3, "### 3.3 Encryption" for 3.3, "### C.2 ..." for
C.2. Files under tests/vectors/ are data and are not scanned.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

SECTION = "\u00a7"
REF = re.compile(SECTION + r"([A-Z0-9]+(?:\.[0-9]+)*)?")
DOC = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w.-]+\.md)(?![\w-])")
HEADING = re.compile(r"#{1,6}\s+([A-Z0-9]+(?:\.[0-9]+)*)\.?(?:\s|$)")
SKIP_PREFIXES = ("tests/vectors/",)


def tracked_files(root):
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z"], check=True,
                             capture_output=True).stdout
        return [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if not x.startswith((".", "build"))]
            files += [os.path.relpath(os.path.join(d, n), root) for n in names]
        return files


def headings(path, cache):
    if path not in cache:
        ids = set()
        fence = False
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.lstrip().startswith("```"):
                    fence = not fence
                    continue
                m = None if fence else HEADING.match(line)
                if m:
                    ids.add(m.group(1))
        cache[path] = ids
    return cache[path]


def check(root):
    """Returns (number of references, list of error strings)."""
    files = tracked_files(root)
    known = set(files)
    cache = {}
    count = 0
    errors = []
    for rel in sorted(files):
        if rel.startswith(SKIP_PREFIXES) or os.path.basename(rel) == "check_spec_refs.py":
            continue
        path = os.path.join(root, rel)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        if SECTION not in text:
            continue
        own = rel if rel.startswith("docs/spec/") and rel.endswith(".md") else None
        lines = text.split("\n")
        for lineno, line in enumerate(lines, 1):
            recent = None
            for back in lines[max(0, lineno - 3):lineno - 1][::-1]:
                if not back.strip():
                    break
                found = DOC.findall(back)
                if found:
                    recent = found[-1]
                    break
            for m in REF.finditer(line):
                count += 1
                where = "%s:%d" % (rel, lineno)
                sec = m.group(1)
                if sec is None:
                    errors.append("%s: a section sign without a section id" % where)
                    continue
                before = line[:m.start()]
                docs = DOC.findall(before)
                if docs:
                    doc = docs[-1]
                elif recent:
                    doc = recent
                elif own:
                    doc = own
                else:
                    errors.append("%s: %s%s names no document (write e.g. docs/spec/gossip-wire.md "
                                  "%s%s)" % (where, SECTION, sec, SECTION, sec))
                    continue
                if doc not in known or not os.path.isfile(os.path.join(root, doc)):
                    errors.append("%s: %s%s: %s is not a file in the repository"
                                  % (where, SECTION, sec, doc))
                    continue
                if sec not in headings(os.path.join(root, doc), cache):
                    errors.append("%s: %s has no heading for %s%s" % (where, doc, SECTION, sec))
    return count, errors


def self_test():
    """The scanner must accept good references and reject each kind of bad one."""
    good = {
        "docs/spec/a.md": "# A\n\n## 3. Top\n\n### 3.3 Sub\n\n### C.2 Letter\n\nSee " + SECTION
                          + "3.3.\n```\n## 9. not a heading (fenced)\n```\n",
        "src/ok.cc": "// (docs/spec/a.md " + SECTION + "3.3, " + SECTION + "3) and docs/spec/a.md\n"
                     "// " + SECTION + "C.2 wrapped\n",
    }
    bad = {
        "src/bare.cc": "// no document named (" + SECTION + "3.3)\n",
        "src/far.cc": "// docs/spec/a.md\n//\n\n// too far (" + SECTION + "3.3)\n",
        "src/missing_section.cc": "// docs/spec/a.md " + SECTION + "4.1\n",
        "src/missing_doc.cc": "// docs/spec/b.md " + SECTION + "3\n",
        "src/fenced.cc": "// docs/spec/a.md " + SECTION + "9\n",
        "src/no_id.cc": "// docs/spec/a.md " + SECTION + " 3\n",
    }
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, body in good.items():
            os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write(body)
        count, errors = check(tmp)
        if errors or count != 4:
            failures.append("good tree: %d refs, errors %s" % (count, errors))
        for name, body in bad.items():
            path = os.path.join(tmp, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(body)
            _, errors = check(tmp)
            if not any(e.startswith(name + ":") for e in errors):
                failures.append("%s was accepted: %r" % (name, body))
            os.remove(path)
    for f in failures:
        print("self-test FAILED:", f)
    if not failures:
        print("self-test: the good tree passes, all %d broken references are rejected" % len(bad))
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    count, errors = check(args.root)
    for e in errors:
        print(e)
    print("%d section references checked, %d unresolved" % (count, len(errors)))
    return 1 if errors or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
