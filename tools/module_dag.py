#!/usr/bin/env python3
"""Draw the library's top-level module graph and check it against the declared layer order.

An edge `a -> b` is a `crate::b` path (in a `use`, an expression, a type or a macro call,
`$crate::b` in a macro body, a `super::` chain that climbs to the crate root) written in a
file of module `a` under `src/`; comments, doc comments and string literals do not count, test
code does. `src/bin/` is a separate crate on top of everything and `src/lib.rs` is the root;
neither is part of the graph.

The check fails when an edge goes from a layer to the same or a higher layer (which also
rules out every cycle), when a `crate::` path names something that is not a top-level module
or an exported macro, or when a module is missing from `LAYERS`.

Usage: tools/module_dag.py            check; print the graph and exit 1 on a violation
       tools/module_dag.py --dot      print the graph as Graphviz dot
       tools/module_dag.py --markdown print the layer table used in docs/ARCHITECTURE.md
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

# The layer order, lowest first: a module may use only modules of lower layers (so two modules
# of one layer never use each other). It follows the data path: vectors and the result type,
# then distances and statistics, matrix products and block reads, exact answers and clusters,
# the per-vector structures, the on-disk format and generated data, routing (which clusters a
# query goes to: the build trains it, the query engine follows it), building and searching,
# and on top what measures or serves an index. This list and docs/ARCHITECTURE.md ("Layers")
# are the one place it is written down.
LAYERS = [
    ["simd", "data", "neighbor"],
    ["distance", "stats", "testing"],
    ["linalg", "io"],
    ["exact", "kmeans"],
    ["graph", "pq", "multivec"],
    ["format", "synth"],
    ["route"],
    ["build", "search"],
    ["update"],
    ["eval", "serve"],
]

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def strip_comments_and_strings(text: str) -> str:
    """The code of a Rust file with comments removed and string/char literals emptied."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif (m := re.match(r'b?r(#*)"', text[i:])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find('"' + m.group(1), i + m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # a char literal ('x', '\n', '\u{1F600}') or a lifetime ('a)
            m = re.match(r"'(\\(u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def top_module(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0].removesuffix(".rs")


def file_module_path(path: Path) -> list:
    """The module path of a file: src/a/b.rs -> [a, b]; src/a/mod.rs -> [a]."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return parts


def exported_macros(files) -> dict:
    """`#[macro_export]` macros (which live at the crate root) -> the module defining them."""
    macros = {}
    for path in files:
        code = strip_comments_and_strings(path.read_text())
        for m in re.finditer(r"#\[macro_export\](?:\s*#\[[^\]]*\])*\s*macro_rules!\s*(\w+)", code):
            macros[m.group(1)] = top_module(path)
    return macros


def brace_group(code: str, start: int) -> str:
    """The text inside the balanced braces opening at `code[start]`."""
    depth = 0
    for j in range(start, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return code[start + 1 : j]
    return code[start + 1 :]


def group_heads(group: str) -> list:
    """The first segment of each top-level item of a `use` brace group."""
    heads, depth, item = [], 0, ""
    for ch in group + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            m = re.match(r"\s*(\w+)", item)
            if m:
                heads.append(m.group(1))
            item = ""
        else:
            item += ch
    return heads


def inline_mod_depth(code: str, pos: int) -> int:
    """How many inline `mod name { … }` blocks enclose position `pos`."""
    depth, stack = 0, []
    for m in re.finditer(r"\bmod\s+\w+\s*\{|[{}]", code[:pos]):
        tok = m.group(0)
        if tok.startswith("mod"):
            depth += 1
            stack.append(True)
        elif tok == "{":
            stack.append(False)
        elif stack and stack.pop():
            depth -= 1
    return depth


def references(path: Path, macros: dict, modules: set):
    """(target top-level module, line) for every crate-level path in one file."""
    code = strip_comments_and_strings(path.read_text())
    line_of = lambda pos: code.count("\n", 0, pos) + 1  # noqa: E731
    found = []
    for m in re.finditer(r"(?<![\w:])\$?crate::(\w+!?|\{)", code):
        heads = group_heads(brace_group(code, m.end() - 1)) if m.group(1) == "{" else [m.group(1)]
        found += [(h, line_of(m.start())) for h in heads]
    # `super::` chains that reach the crate root
    mod_path = file_module_path(path)
    for m in re.finditer(r"(?<![\w:])((?:super::)+)(\w+!?|\{)", code):
        climbs = m.group(1).count("super::")
        level = len(mod_path) + inline_mod_depth(code, m.start())
        if climbs >= level:
            heads = group_heads(brace_group(code, m.end() - 1)) if m.group(2) == "{" else [m.group(2)]
            found += [(h, line_of(m.start())) for h in heads]
    out = []
    for head, line in found:
        if head.endswith("!"):
            target = macros.get(head[:-1])
        elif head in modules:
            target = head
        else:
            target = None
        out.append((target, head, line))
    return out


def main() -> int:
    files = sorted(p for p in SRC.rglob("*.rs") if p.parts[len(SRC.parts)] != "bin" and p != SRC / "lib.rs")
    modules = {top_module(p) for p in files}
    macros = exported_macros(files)
    layer_of = {m: i for i, layer in enumerate(LAYERS) for m in layer}

    edges = defaultdict(list)
    errors = []
    for path in files:
        src_mod = top_module(path)
        for target, head, line in references(path, macros, modules):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target is None:
                errors.append(f"{where}: crate::{head} is not a top-level module or an exported macro")
            elif target != src_mod:
                edges[(src_mod, target)].append(where)

    for m in sorted(modules - layer_of.keys()):
        errors.append(f"module `{m}` is not in LAYERS (tools/module_dag.py)")
    for m in sorted(layer_of.keys() - modules):
        errors.append(f"LAYERS names `{m}`, which is not a module of src/")
    for (a, b), wheres in sorted(edges.items()):
        if a in layer_of and b in layer_of and layer_of[b] >= layer_of[a]:
            rel = "same layer as" if layer_of[b] == layer_of[a] else "higher layer than"
            errors.append(f"{a} -> {b}: `{b}` is on a {rel} `{a}`; used at " + ", ".join(wheres))

    if "--dot" in sys.argv:
        print("digraph modules {\n  rankdir=BT;")
        for i, layer in enumerate(LAYERS):
            print(f"  {{ rank=same; {'; '.join(layer)}; }}  // layer {i}")
        for a, b in sorted(edges):
            print(f"  {a} -> {b};")
        print("}")
    elif "--markdown" in sys.argv:
        print("| layer | module | uses |\n|---|---|---|")
        for i, layer in reversed(list(enumerate(LAYERS))):
            for m in layer:
                uses = ", ".join(f"`{b}`" for (a, b) in sorted(edges) if a == m) or "—"
                print(f"| {i} | `{m}` | {uses} |")
    else:
        for i, layer in reversed(list(enumerate(LAYERS))):
            for m in layer:
                uses = sorted(b for (a, b) in edges if a == m)
                print(f"  {i}  {m:<9} -> {', '.join(uses) if uses else '(nothing)'}")
    if errors:
        print("\nmodule_dag: the module graph breaks the layer order:", file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)
        return 1
    print("module_dag: the module graph follows the layer order", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
