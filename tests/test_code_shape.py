"""Structural rules from the style guide, enforced from the first commit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [ROOT / "gateway", ROOT / "routing_policies"]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in pkg.rglob("*.py"))


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for path in _sources():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []


def test_no_mutable_module_state_and_no_swallowed_exceptions() -> None:
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} global")
            if isinstance(node, ast.ExceptHandler) and len(node.body) == 1 and isinstance(node.body[0], ast.Pass):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} except: pass")
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                continue
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.List | ast.Dict | ast.Set):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} mutable module-level container")
    assert found == []


def test_litellm_is_not_imported_on_start_up_or_the_openai_path() -> None:
    # (nor aiohttp, which only the Batch API's upstream calls use: ~70 modules the collector would walk)
    code = "import sys, gateway.app, gateway.cli.main; print('litellm' in sys.modules, 'aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "False False", out.stderr


# The layers of gateway/, lowest first: a module may import its own layer and the ones below it.
LAYERS = ["gateway", "errors", "runtime", "redaction", "money", "tokens", "formats", "config", "observability",
          "providers", "database", "ledger", "access", "cache", "conversations", "routing", "pipeline", "backends",
          "batches", "state", "api", "app", "fake_upstream", "demo", "cli", "__main__"]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "gateway":
        return None
    return parts[1] if len(parts) > 1 else "gateway"


def test_imports_flow_down_the_layers() -> None:
    upward = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").parts
        own = "gateway" if rel[1:] == ("__init__",) else rel[1]
        assert own in LAYERS, f"{own}: a new subsystem needs its place in LAYERS"
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for name in names:
                target = _layer(name)
                if target is not None and LAYERS.index(target) > LAYERS.index(own):
                    upward.append(f"{'/'.join(rel)}.py:{node.lineno} imports {name}")
    for path in sorted((ROOT / "routing_policies").rglob("*.py")):  # the plugin API sees only the pricing core
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and _layer(node.module) not in (None, "money"):
                upward.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}")
    assert upward == []
