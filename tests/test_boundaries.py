"""The one-way dependency rules of docs/style.md, checked on the source itself."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    # package -> top-level modules it must never import
    "data_recipes": {"torch", "open_clip", "transformers", "llava", "mmclip_plugin", "llava_patches", "deepspeed"},
    "mmclip_plugin": {"llava", "llava_patches"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_forbidden_modules(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no source files under {package}/"
    offenders = {
        str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package]) for f in files if _imports(f) & FORBIDDEN[package]
    }
    assert not offenders, f"{package} must not import {sorted(FORBIDDEN[package])}: {offenders}"


def test_only_llava_patches_imports_llava():
    offenders = [
        str(f.relative_to(ROOT))
        for f in ROOT.rglob("*.py")
        if ".venv" not in f.parts and "llava_patches" not in f.parts and "tests" not in f.parts and "llava" in _imports(f)
    ]
    assert not offenders, f"only llava_patches may import llava: {offenders}"


def test_scripts_hold_no_python_logic():
    scripts = ROOT / "scripts"
    long_py = [str(p) for p in scripts.rglob("*.py") if len(p.read_text().splitlines()) > 30]
    assert not long_py, f"scripts/ are thin launchers; move logic into a package: {long_py}"
