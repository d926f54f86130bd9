#!/usr/bin/env python3
"""Directories include only downward (docs/architecture.md §1.1).

    check_layering.py [--root DIR]    check DIR (default: this repository); exit 1 on a violation
    check_layering.py --self-test     prove the checker rejects each kind of violation

Every C++ file under filters/ and proxy/ belongs to one module: its directory below filters/ or
proxy/ (filters/gossip, proxy/datapath), or for a file directly in filters/ or proxy/ its name
without the extension (proxy/server, proxy/runtime_state, proxy/main). LAYERS lists the modules
from the bottom up. A file may include headers of its own module and of modules in lower layers
only; an include of a module in the same layer (sideways) or a higher one (upward) is an error,
and so is a file in a module LAYERS does not place.

Second rule: the command-line code (proxy/cli/, proxy/main.cc) must not compile against libuv.
The project includes of each of those files are followed transitively; reaching <uv.h> is an
error, except for the files in UV_ALLOWED (`run` starts the server, which is the event loop).
"""
import argparse
import os
import re
import sys
import tempfile

# Bottom first. Modules in one layer must not include one another.
LAYERS = [
    ["filters/common"],
    ["filters/keyring", "filters/filter"],
    ["filters/gossip", "filters/rpc_tls", "filters/passthrough", "filters/stream_driver"],
    ["proxy/version", "proxy/net"],
    ["proxy/config"],
    ["proxy/observe", "proxy/keyring", "proxy/intercept", "proxy/decode", "proxy/tlswatch"],
    ["proxy/runtime_state"],
    ["proxy/datapath"],
    ["proxy/admin"],
    ["proxy/server"],
    ["proxy/cli"],
    ["proxy/main"],
]
CLI_PREFIXES = ("proxy/cli/", "proxy/main.cc")
UV_ALLOWED = {"proxy/cli/run_cmd.cc"}
TOP_DIRS = ("filters", "proxy")
SOURCE_EXT = (".h", ".hh", ".hpp", ".cc", ".cpp")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def module_of(rel):
    parts = rel.split("/")
    if len(parts) == 2:
        return parts[0] + "/" + os.path.splitext(parts[1])[0]
    return parts[0] + "/" + parts[1]


def source_files(root):
    out = []
    for top in TOP_DIRS:
        for d, dirs, names in os.walk(os.path.join(root, top)):
            dirs.sort()
            for n in sorted(names):
                if n.endswith(SOURCE_EXT):
                    out.append(os.path.relpath(os.path.join(d, n), root).replace(os.sep, "/"))
    return out


def includes(root, rel, cache):
    """[(line number, '<' or '"', target)] of one file."""
    if rel not in cache:
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            text = f.read()
        found = []
        for m in INCLUDE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append((line, m.group(1), m.group(2)))
        cache[rel] = found
    return cache[rel]


def check(root):
    """Returns (number of files, list of error strings)."""
    rank = {}
    for i, layer in enumerate(LAYERS):
        for mod in layer:
            rank[mod] = i
    files = source_files(root)
    known = set(files)
    cache = {}
    errors = []
    for rel in files:
        mod = module_of(rel)
        if mod not in rank:
            errors.append(f"{rel}: module {mod} has no layer; place it in LAYERS in "
                          f"tests/tools/check_layering.py and in docs/architecture.md §1.1")
            continue
        for line, kind, target in includes(root, rel, cache):
            if kind != '"' or not target.startswith(tuple(t + "/" for t in TOP_DIRS)):
                continue
            tmod = module_of(target)
            if tmod == mod:
                continue
            if tmod not in rank:
                errors.append(f"{rel}:{line}: includes {target} of module {tmod}, which has no "
                              f"layer")
            elif rank[tmod] == rank[mod]:
                errors.append(f"{rel}:{line}: sideways include of {target}: {mod} and {tmod} "
                              f"share a layer")
            elif rank[tmod] > rank[mod]:
                errors.append(f"{rel}:{line}: upward include of {target}: {tmod} is above {mod}")
    # The command line must not compile against libuv (except `run`).
    for rel in files:
        if not rel.startswith(CLI_PREFIXES) or rel in UV_ALLOWED:
            continue
        path = uv_path(root, rel, known, cache)
        if path:
            errors.append(f"{rel}: reaches <uv.h> through " + " -> ".join(path[1:]))
    return len(files), errors


def uv_path(root, start, known, cache):
    """The include chain from `start` to <uv.h>, or None."""
    parent = {start: None}
    queue = [start]
    while queue:
        rel = queue.pop(0)
        for _, kind, target in includes(root, rel, cache):
            if kind == "<" and (target == "uv.h" or target.startswith("uv/")):
                chain = ["<uv.h>", rel]
                while parent[chain[-1]] is not None:
                    chain.append(parent[chain[-1]])
                return chain[::-1]
            if kind == '"' and target in known and target not in parent:
                parent[target] = rel
                queue.append(target)
    return None


def self_test():
    cases = {
        "clean": ({}, 0),
        "upward": ({"proxy/config/config.h": '#include "proxy/datapath/datapath.h"\n'},
                   "upward include"),
        "sideways": ({"proxy/keyring/keyring_file.h": '#include "proxy/decode/capture_reader.h"\n'},
                     "sideways include"),
        "filters_to_proxy": ({"filters/gossip/codec.h": '#include "proxy/net/address.h"\n'},
                             "upward include"),
        "unknown_module": ({"proxy/newdir/thing.h": "#pragma once\n"}, "has no layer"),
        "uv_in_cli": ({"proxy/intercept/instance_lock.h": "#include <uv.h>\n"},
                      "proxy/cli/status_cmd.cc: reaches <uv.h> through proxy/cli/commands.h -> "
                      "proxy/intercept/instance_lock.h"),
    }
    base = {
        "filters/common/buffer.h": "#pragma once\n",
        "filters/gossip/codec.h": '#include "filters/common/buffer.h"\n',
        "proxy/net/address.h": "#include <sys/socket.h>\n",
        "proxy/config/config.h": '#include "proxy/net/address.h"\n',
        "proxy/keyring/keyring_file.h": '#include "filters/common/buffer.h"\n',
        "proxy/decode/capture_reader.h": "#pragma once\n",
        "proxy/intercept/instance_lock.h": "struct uv_loop_s;\n",
        "proxy/datapath/datapath.h": '#include <uv.h>\n#include "proxy/config/config.h"\n',
        "proxy/server.h": '#include "proxy/datapath/datapath.h"\n',
        "proxy/cli/commands.h": '#include "proxy/intercept/instance_lock.h"\n',
        "proxy/cli/status_cmd.cc": '#include "proxy/cli/commands.h"\n',
        "proxy/cli/run_cmd.cc": '#include "proxy/cli/commands.h"\n#include "proxy/server.h"\n',
        "proxy/main.cc": '#include "proxy/cli/commands.h"\n',
    }
    failed = 0
    for name, (overlay, expect) in cases.items():
        with tempfile.TemporaryDirectory() as root:
            for rel, text in {**base, **overlay}.items():
                os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
                with open(os.path.join(root, rel), "w", encoding="utf-8") as f:
                    f.write(text)
            _, errors = check(root)
        if expect == 0:
            ok = not errors
        else:
            ok = any(expect in e for e in errors)
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {errors if errors else 'no errors'}")
        failed += not ok
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    count, errors = check(os.path.abspath(args.root))
    for e in errors:
        print(e)
    print(f"{count} files, {len(errors)} layering errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
