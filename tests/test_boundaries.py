"""The one-way dependency rules of docs/style.md, checked on the source itself."""
import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    # package -> top-level modules it must never import (the layers: mmgeolm_core <- data_recipes <-
    # mmclip_plugin <- llava_patches <- mmgeolm; only llava_patches imports llava)
    "mmgeolm_core": {"torch", "open_clip", "transformers", "llava", "deepspeed", "numpy", "matplotlib", "PIL",
                     "data_recipes", "mmclip_plugin", "llava_patches", "mmgeolm"},
    "data_recipes": {"torch", "open_clip", "transformers", "llava", "mmclip_plugin", "llava_patches", "deepspeed",
                     "mmgeolm"},
    "mmclip_plugin": {"llava", "llava_patches", "mmgeolm"},
    "llava_patches": {"mmgeolm"},
    "mmgeolm": {"llava"},
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


def test_scripts_are_thin_launchers_of_our_entry_points():
    """scripts/ holds shell launchers only: no Python, no loops or functions, each runs a module of ours."""
    scripts = sorted((ROOT / "scripts").iterdir())
    assert scripts, "scripts/ is empty"
    for script in scripts:
        text = script.read_text()
        assert script.suffix == ".sh" and text.startswith("#!/usr/bin/env bash"), f"{script.name}: not a bash launcher"
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0, f"{script.name}: syntax"
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert not re.search(r"\b(for|while|until|function|case)\b|\(\)\s*\{", code), f"{script.name}: logic belongs in a package"
        entries = re.findall(r"ENTRY:-([\w.]+)", code)
        assert entries, f"{script.name}: names no entry point"
        for entry in entries:
            assert importlib.util.find_spec(entry) is not None, f"{script.name}: {entry} is not a module"


def test_the_command_lines_and_config_modules_load_without_torch():
    # issue 12: mmclip_plugin.config imported .model and .losses, so `mmclip-train --help` loaded torch,
    # open_clip and transformers (about 10 s) before it could say anything
    code = ("import sys, mmclip_plugin.cli, mmclip_plugin.config, data_recipes.cli, mmgeolm.cli, mmgeolm.bench.cli; "
            "heavy = sorted(m for m in ('torch', 'open_clip', 'transformers', 'llava') if m in sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
