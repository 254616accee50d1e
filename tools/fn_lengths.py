#!/usr/bin/env python3
"""Lists the Rust functions in src/ longer than a limit (lines from `fn` to its closing brace).

Usage: tools/fn_lengths.py [--max N] [--check] [--all] [--exclude PATH ...] [PATH ...]

A function may stay long when a comment beside it says why: a line `// long-fn: <reason>`
among the comments and attributes directly above its `fn` line. Without --check the script
prints every function over the limit (longest first) and the reason of those that have one;
with --check it also exits 1 when one has no reason. --all prints every function.
"""

import argparse
import os
import re
import sys

MARKER = re.compile(r"//\s*long-fn:\s*(.*)")


def blank_literals(src):
    """`src` with comments, strings and char literals replaced by spaces (newlines kept), so
    that braces inside them do not count."""
    out = []
    i, n = 0, len(src)
    while i < n:
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
            continue
        if src.startswith("/*", i):
            depth, j = 0, i
            while j < n:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                    if depth == 0:
                        break
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
            continue
        prev = src[i - 1] if i > 0 else " "
        raw = re.match(r'b?r(#*)"', src[i : i + 40])
        if raw and not (prev.isalnum() or prev == "_"):
            end = '"' + raw.group(1)
            j = src.find(end, i + raw.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
            continue
        if src[i] == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
            continue
        if src[i] == "'":
            # A char literal ('a', '\n', '\u{1F600}'); a lifetime ('a) is left alone.
            ch = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", src[i : i + 12])
            if ch:
                out.append(" " * ch.end())
                i += ch.end()
                continue
        out.append(src[i])
        i += 1
    return "".join(out)


def functions(path):
    """(lines, first line, name, reason) of every function with a body in `path`."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    lines = src.split("\n")
    code = blank_literals(src)
    for m in re.finditer(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)", code):
        j, depth = m.end(), 0
        while j < len(code):
            c = code[j]
            if c in "([":
                depth += 1
            elif c in ")]":
                depth -= 1
            elif c == ";" and depth == 0:
                j = -1  # a declaration without a body (trait method, extern)
                break
            elif c == "{" and depth == 0:
                break
            j += 1
        if j < 0 or j >= len(code):
            continue
        k, depth = j, 0
        while k < len(code):
            if code[k] == "{":
                depth += 1
            elif code[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        first = code.count("\n", 0, m.start()) + 1
        last = code.count("\n", 0, k) + 1
        # The reason, if any, is among the comments and attributes right above `fn`.
        reason = None
        row = first - 2  # index of the line above, 0-based
        while row >= 0:
            text = lines[row].strip()
            if not (text.startswith("//") or text.startswith("#[") or text.startswith("#!")):
                break
            hit = MARKER.search(text)
            if hit:
                reason = hit.group(1).strip()
            row -= 1
        yield last - first + 1, first, m.group(1), reason


def rust_files(paths):
    for p in paths:
        if os.path.isfile(p):
            yield p
            continue
        for root, _, names in os.walk(p):
            for name in sorted(names):
                if name.endswith(".rs"):
                    yield os.path.join(root, name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="*", default=["src"])
    ap.add_argument("--max", type=int, default=120, help="longest allowed function (lines)")
    ap.add_argument("--check", action="store_true", help="exit 1 on a long function without a reason")
    ap.add_argument("--all", action="store_true", help="print every function")
    ap.add_argument("--exclude", action="append", default=[], help="a file or folder to skip")
    args = ap.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    excluded = [os.path.normpath(e) for e in args.exclude]
    rows = []
    for path in rust_files(args.paths):
        norm = os.path.normpath(path)
        if any(norm == e or norm.startswith(e + os.sep) for e in excluded):
            continue
        for length, line, name, reason in functions(path):
            if args.all or length > args.max:
                rows.append((length, f"{norm}:{line}", name, reason))
    rows.sort(key=lambda r: (-r[0], r[1]))
    unexplained = 0
    for length, place, name, reason in rows:
        note = ""
        if length > args.max:
            if reason:
                note = f"  (long-fn: {reason})"
            else:
                note = "  (over the limit, no reason given)"
                unexplained += 1
        print(f"{length:5}  {place}  {name}{note}")
    if args.check and unexplained:
        print(
            f"fn_lengths: {unexplained} function(s) over {args.max} lines without a "
            "`// long-fn: <reason>` comment",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
