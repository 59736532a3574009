#!/usr/bin/env python3
"""Fails when crate/src has an import circle, between files or between top-level modules.

Reads every `use crate::...`, `use super::...` and inline `crate::a::b` path, resolves each to
the deepest module file it names, and looks for strongly connected components. A parent module
(mod.rs) declaring and re-exporting its children is not counted as importing them. `-v` also
prints which top-level module imports which.
"""
import os, re, sys
from collections import defaultdict

args = [a for a in sys.argv[1:] if not a.startswith("-")]
root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crate", "src")

def module_of(path):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    if rel and rel[0] == "bin":
        return None
    return tuple(rel)

files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith(".rs"):
            p = os.path.join(d, f)
            m = module_of(p)
            if m is not None:
                files[m] = p

def strip(src):
    src = re.sub(r"//[^\n]*", "", src)
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    src = re.sub(r'"(\\.|[^"\\])*"', '""', src)
    return src

def expand(prefix, body):
    """Paths of a use tree `prefix::{a, b::{c, d}}`."""
    out = []
    depth, cur = 0, ""
    parts = []
    for ch in body:
        if ch == "{": depth += 1
        if ch == "}": depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur); cur = ""
        else:
            cur += ch
    parts.append(cur)
    for p in parts:
        p = p.strip()
        if not p: continue
        m = re.match(r"^([\w:]*?)(::)?\{(.*)\}$", p, re.S)
        if m:
            out += expand(prefix + [x for x in m.group(1).split("::") if x], m.group(3))
        else:
            out.append(prefix + [x for x in p.split(" as ")[0].split("::") if x])
    return out

def resolve(cur, segs):
    if not segs: return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = cur
        # a non-mod file's `self` is itself; super goes one up
        rest = list(segs)
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super": base = base[:-1]
            rest = rest[1:]
    else:
        return None
    best = None
    for i in range(len(rest) + 1):
        m = tuple(base) + tuple(rest[:i])
        if m in files: best = m
    return best

edges = defaultdict(set)
for m, p in files.items():
    src = strip(open(p).read())
    paths = []
    for u in re.finditer(r"\buse\s+((?:crate|super|self)[^;]*);", src):
        t = u.group(1).strip()
        paths += expand([], t)
    for u in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", src):
        paths.append(u.group(1).split("::"))
    for segs in paths:
        t = resolve(m, segs)
        if t is not None and t != m:
            edges[m].add(t)

def cycles(nodes, edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)
    def sc(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                sc(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(comp)
    for v in nodes:
        if v not in index: sc(v)
    return out

def name(m): return "::".join(m) or "crate"
# a parent module file (mod.rs) declaring and re-exporting its children is not an import circle
file_edges = {m: {t for t in ts if not (len(t) > len(m) and t[:len(m)] == m)} for m, ts in edges.items()}
fc = cycles(list(files), file_edges)
top = defaultdict(set)
for m, ts in edges.items():
    if not m: continue
    for t in ts:
        if t and t[0] != m[0]: top[m[0]].add(t[0])
tc = cycles(sorted({m[0] for m in files if m}), top)
bad = False
for c in fc:
    bad = True; print("file-level circle:", " <-> ".join(sorted(name(x) for x in c)))
for c in tc:
    bad = True; print("module-level circle:", " <-> ".join(sorted(c)))
if "-v" in sys.argv:
    for a in sorted(top): print(a, "->", ", ".join(sorted(top[a])))
if not bad:
    print(f"no import circle among {len(files)} files and {len(top)} top-level modules")
sys.exit(1 if bad else 0)
