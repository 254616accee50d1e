"""The type stubs (m3/__init__.pyi) describe what the module has: every public name, every
method of Index and IndexWriter, and the keyword arguments of the calls."""

import ast
import inspect
from pathlib import Path

import m3


def stub_tree():
    return ast.parse((Path(m3.__file__).parent / "__init__.pyi").read_text())


def test_stub_names_match_module():
    tree = stub_tree()
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom)
              for a in n.names if n.module == "ann"}
    assert set(m3.__all__) <= names, set(m3.__all__) - names
    for cls in ("Index", "IndexWriter"):
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
        methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
        public = {m for m in dir(getattr(m3, cls)) if not m.startswith("__")} | {"__len__"}
        assert public <= methods | {"__init__"}, (cls, public - methods)


def test_search_keywords_match():
    tree = stub_tree()
    index = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Index")
    search = next(f for f in index.body if isinstance(f, ast.FunctionDef) and f.name == "search")
    stub_kw = [a.arg for a in search.args.kwonlyargs]
    sig = inspect.signature(m3.Index.search)
    real_kw = [p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert stub_kw == real_kw
    build = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "build")
    assert [a.arg for a in build.args.kwonlyargs] == [
        p.name for p in inspect.signature(m3.build).parameters.values()
        if p.kind is p.KEYWORD_ONLY]
