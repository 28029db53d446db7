#!/usr/bin/env python3
"""Fails if the files (modules) of any workspace crate import each other in a cycle.

A module is a file under crates/<crate>/src. An edge a -> b means a's code (not its
comments or strings) names `crate::b` (or `super::b` from a child). `lib.rs` declares the
modules and may re-export them; a module that names an item re-exported at the crate root
(`crate::Item`) depends on lib.rs. Edges from lib.rs's own `mod`/`pub use` lines are the
crate's table of contents and are not counted, so only real uses form cycles.
"""
import os, re, sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates")

TOKEN = re.compile(
    r'//[^\n]*'                      # line comment
    r'|/\*.*?\*/'                    # block comment
    r'|\bb?r(#*)".*?"\1'              # raw string
    r'|b?"(?:\\.|[^"\\])*"'          # string
    r"|'(?:\\.|[^'\\])'",             # char literal
    re.S,
)

def strip(src):
    """The code without comments, strings and char literals (so lifetimes survive)."""
    return TOKEN.sub(" ", src)

def modules(src_dir):
    mods = {}
    for dirpath, _, files in os.walk(src_dir):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src_dir)[:-3].replace(os.sep, "::")
            if rel.endswith("::mod"):
                rel = rel[:-5]
            if rel == "main" or rel.startswith("bin::"):
                continue
            mods[rel] = path
    return mods

def cycles(crate):
    src_dir = os.path.join(ROOT, crate, "src")
    mods = modules(src_dir)
    names = set(mods)
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        code = strip(open(path).read())
        if m == "lib":
            continue
        for top in re.findall(r"\bcrate::(\w+)", code):
            # use crate::{a, b}
            pass
        for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
            for t in re.findall(r"\b(\w+)\b", group):
                graph[m].add(t if t in names else "lib")
        for t in re.findall(r"\bcrate::(\w+)", code):
            graph[m].add(t if t in names else "lib")
        parent = m.rsplit("::", 1)[0] if "::" in m else None
        for t in re.findall(r"\bsuper::(\w+)", code):
            if parent:
                child = parent + "::" + t
                graph[m].add(child if child in names else parent)
            else:
                graph[m].add(t if t in names else "lib")
        graph[m].discard(m)
    # Tarjan's strongly connected components.
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out, graph

def main():
    bad = 0
    for crate in sorted(os.listdir(ROOT)):
        if not os.path.isdir(os.path.join(ROOT, crate, "src")):
            continue
        comps, graph = cycles(crate)
        for c in comps:
            bad += 1
            print(f"crates/{crate}: import cycle between {', '.join(c)}")
            for m in c:
                print(f"    {m} -> {', '.join(sorted(graph[m] & set(c)))}")
    if bad:
        sys.exit(1)
    print("no import cycles between the files of any crate")

main()
