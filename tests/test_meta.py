"""The code's own promises: no import cycles, every rule documented and complete, engines that
know no op by name, one executor per (dtype, device), the README's code table in sync."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import networkx as nx
import pytest
import torch

from conftest import MODELS, ROOT
from lipgraph.diagnostics import CODES, table_markdown
from lipgraph.registry import REGISTRY, load_builtin_rules, missing_hooks

load_builtin_rules()
PACKAGE = ROOT / "lipgraph"
#: IR work may name ops: loading and folding (Constant, control flow) — design §8.
OP_NAMES_ALLOWED = {"load.py", "graph.py", "inputs.py", "controlflow.py"}
#: ... and fusion: its pattern table and matcher name the ops of the subgraphs they rewrite.
OP_NAMES_ALLOWED_DIRS = ("lipgraph/ir/fuse/",)
SECTIONS = ("Bound:", "Exactness:", "Assumptions:", "References:")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] == "rules":
        parts = ["lipgraph", "rules", *parts[1:]]
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every lipgraph module ``path`` imports, at any depth (lazy imports count)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("lipgraph"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("lipgraph"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)
    return out


def test_no_import_cycles():
    files = list(PACKAGE.rglob("*.py")) + list((ROOT / "rules").rglob("*.py"))
    names = {_module_name(p): p for p in files}
    graph = nx.DiGraph()
    for name, path in names.items():
        graph.add_node(name)
        for target in _imports(path, name):
            if target in names and target != name:
                graph.add_edge(name, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, cycles[:5]


def _rules():
    seen = {}
    for _, r in REGISTRY.rules():
        seen.setdefault(id(r), r)
    return list(seen.values())


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r.op_type)
def test_rule_is_documented_and_complete(rule):
    doc = inspect.cleandoc(type(rule).__doc__ or "")
    assert doc and doc.splitlines()[0].strip(), f"{rule.op_type}: no one-line summary"
    for section in SECTIONS:
        assert section in doc, f"{rule.op_type}: docstring lacks '{section}'"
    assert not missing_hooks(type(rule), rule.kind)


def test_every_rule_has_a_test():
    """Each rule's op is exercised by name in a rule test module (conformance cases, sampled
    soundness or the semantic sweep)."""
    text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if "rules" in p.name or "sweep" in p.name)
    missing = sorted({r.op_type for r in _rules() if f'"{r.op_type}"' not in text})
    assert not missing, missing


def test_engines_do_not_compare_op_types_to_literals():
    pattern = re.compile(r"""op_type\s*(==|!=)\s*["']|op_type\s+(not\s+)?in\s*[\(\[\{]\s*["']""")
    offenders = [f"{p.relative_to(ROOT)}:{k + 1}" for p in PACKAGE.rglob("*.py")
                 if p.name not in OP_NAMES_ALLOWED and not str(p.relative_to(ROOT)).startswith(OP_NAMES_ALLOWED_DIRS)
                 for k, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert not offenders, offenders


def test_one_executor_per_dtype_and_device(monkeypatch):
    from lipgraph.ir import execute
    from lipgraph.options import LowerOptions, Options
    from lipgraph.pipeline import analyze

    made = []
    init = execute.Executor.__init__

    def counting(self, graph, dtype=torch.float64, device="cpu", **kw):
        made.append((dtype, str(torch.device(device))))
        init(self, graph, dtype, device, **kw)

    monkeypatch.setattr(execute.Executor, "__init__", counting)
    analyze(MODELS / "mlp.onnx", Options(verbose=True, lower=LowerOptions(restarts=1)))
    assert made.count((torch.float64, "cpu")) == 1, made
    assert all(made.count(key) == 1 for key in made), made


def test_readme_lists_every_diagnostic_code():
    readme = (ROOT / "README.md").read_text()
    assert table_markdown() in readme, "README's diagnostic table differs from lipgraph.diagnostics.CODES"
    assert len(CODES) >= 10
