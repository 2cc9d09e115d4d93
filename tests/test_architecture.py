# SPDX-License-Identifier: Apache-2.0
"""Layers import downwards only: every import statement of the package (function-level ones included) is parsed and
checked against the layer rules of the README's Architecture section."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "detr_deploy"
BASE = {"errors", "_optional", "labels", "files", "progress"}
# layer -> the layers it may import (itself included)
ALLOWED = {
    "base": {"base"},
    "artifact": {"base", "artifact"},
    "models": {"base", "models"},
    "weights": {"base", "models", "weights"},
    "factory": {"base", "models", "weights", "factory"},
    "runtime": {"base", "artifact", "runtime"},
    "compare": {"base", "artifact", "runtime", "compare"},
    "evaluation": {"base", "runtime", "evaluation"},
    "export": {"base", "artifact", "models", "runtime", "compare", "export"},
    "zoo": {"base", "zoo"},
    "train": {"base", "artifact", "models", "runtime", "evaluation", "train"},
    "parity": {"base", "artifact", "runtime", "compare", "evaluation", "parity"},
    "serving": {"base", "artifact", "runtime", "serving"},
    "cli": set(),  # the top: anything
    "root": {"base", "models", "factory"},
}
HEAVY = {"torch", "timm", "transformers", "torchvision"}
# third-party packages a layer must never import
FORBIDDEN_THIRD_PARTY = {"base": HEAVY | {"numpy", "onnx", "onnxruntime"}, "artifact": HEAVY | {"numpy", "onnx"},
                         "runtime": HEAVY, "compare": HEAVY, "serving": HEAVY, "zoo": HEAVY, "models": {"onnx",
                                                                                                       "onnxruntime"}}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    top = parts[1]
    return "base" if top in BASE else top


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                # "from . import x": x may be a submodule, or a name defined in the package
                found += [(node.lineno, f"{target}.{alias.name}" if not node.module and _is_module(
                    f"{target}.{alias.name}") else target) for alias in node.names]
            else:
                found.append((node.lineno, node.module or ""))
    return found


def violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":  # entry points, like cli/
            continue
        name = module_name(path)
        layer = layer_of(name)
        allowed = ALLOWED[layer]
        for line, target in imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if target == "detr_deploy" or target.startswith("detr_deploy."):
                if target == "detr_deploy":
                    target_layer = "root"
                else:
                    target_layer = layer_of(target)
                if allowed and target_layer not in allowed and target_layer != "root":
                    problems.append(f"{where}: {layer} imports {target} ({target_layer}); {layer} may import "
                                    f"only {sorted(allowed)}")
                if target_layer == "cli" and layer != "cli":
                    problems.append(f"{where}: library module imports the CLI ({target})")
            elif target.split(".")[0] in FORBIDDEN_THIRD_PARTY.get(layer, set()):
                problems.append(f"{where}: {layer} imports {target}, which that layer must never need")
    return problems


def test_layers_import_downwards_only():
    problems = violations()
    assert not problems, "layer rule violations:\n" + "\n".join(problems)


def test_the_rule_checker_catches_a_violation(tmp_path, monkeypatch):
    """The checker itself can fail: a models module importing the runtime is reported with file and line."""
    fake = tmp_path / "detr_deploy"
    (fake / "models").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "models" / "__init__.py").write_text("")
    (fake / "models" / "bad.py").write_text("import os\n\ndef f():\n    from ..runtime import detector\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    problems = violations()
    assert len(problems) == 1 and "models/bad.py:4" in problems[0] and "detr_deploy.runtime" in problems[0]
