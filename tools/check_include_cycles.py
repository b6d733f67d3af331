#!/usr/bin/env python3
"""Fails when the engine's modules include each other in a cycle.

A module is a header and the sources that implement it, matched by name: X.h with X.c,
X_*.c and the private X_internal.h (model.h: model.c, model_gmm.c; network.h:
nn/network_model.c, nn/network_file.c, nn/network_internal.h), the header either beside
the sources or in include/scoresde/. A source with no such
header is a module of its own. Module A depends on module B when a file of A has
`#include "..."` of a file of B. Any cycle in that graph (model.c calling into nn/ while
nn/ includes model.h, say) is printed and the exit status is 1. The umbrella
scoresde/scoresde.h counts as a leaf: it gathers the public headers for users.

Usage: tools/check_include_cycles.py [ENGINE_DIR]   (default: engine/ of this checkout)
"""
import os
import re
import sys

UMBRELLA = "scoresde.h"
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def engine_files(engine):
    for top in ("src", "include"):
        for root, _, names in os.walk(os.path.join(engine, top)):
            for name in names:
                if name.endswith((".c", ".h", ".cu", ".cuh")):
                    yield os.path.normpath(os.path.join(root, name))


def module_of(path, headers_by_stem):
    """The header module a file belongs to: its own header, or X.h for X_*.c."""
    base, ext = os.path.splitext(os.path.basename(path))
    if ext in (".h", ".cuh"):
        if not base.endswith("_internal"):
            return path
        base = base[: -len("_internal")]  # X_internal.h: X's private half
    stems = [base] + [base[:i] for i in range(len(base) - 1, 0, -1) if base[i] == "_"]
    for stem in stems:
        for header in headers_by_stem.get(stem, []):
            # beside the source, or the public header of the same name
            if os.path.dirname(header) == os.path.dirname(path) or "include" in header.split(os.sep):
                return header
    return path


def resolve(include, from_file, engine):
    for base in (os.path.dirname(from_file), os.path.join(engine, "include"), os.path.join(engine, "src")):
        candidate = os.path.normpath(os.path.join(base, include))
        if os.path.isfile(candidate):
            return candidate
    return None  # a system or generated header


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    engine = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "engine")
    engine = os.path.normpath(engine)
    files = sorted(engine_files(engine))
    headers_by_stem = {}
    for f in files:
        if f.endswith((".h", ".cuh")):
            headers_by_stem.setdefault(os.path.splitext(os.path.basename(f))[0], []).append(f)
    module = {f: module_of(f, headers_by_stem) for f in files}

    edges = {}  # module -> {module: the include that makes the edge}
    for f in files:
        with open(f, encoding="utf-8") as fh:
            text = fh.read()
        for inc in INCLUDE_RE.findall(text):
            target = resolve(inc, f, engine)
            if target is None or target not in module:
                continue
            a, b = module[f], module[target]
            if os.path.basename(f) == UMBRELLA:
                continue
            if a != b:
                edges.setdefault(a, {}).setdefault(b, "%s includes %s" % (os.path.relpath(f, engine), inc))

    # Tarjan's strongly connected components; any with more than one module is a cycle
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(set(module.values())):
        if v not in index:
            visit(v)

    for component in cycles:
        names = [os.path.relpath(m, engine) for m in component]
        print("include cycle between modules: " + ", ".join(names))
        for a in component:
            for b, why in sorted(edges.get(a, {}).items()):
                if b in component:
                    print("  " + why)
    if cycles:
        return 1
    print("no include cycles among %d engine modules" % len(set(module.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
