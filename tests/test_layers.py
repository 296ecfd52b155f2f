"""The layering of DESIGN.md holds: the import-linter contracts of pyproject.toml
are kept by the package, and an import that crosses a layer (the command line
imported by a sampler; models imported by diagnostics) breaks the contract it
crosses, named in the linter's report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONTRACTS = {c["type"]: c["name"] for c in PYPROJECT["tool"]["importlinter"]["contracts"]}
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy_package(dest: Path) -> Path:
    """The package as installed, a plain weightspace/ tree under dest/src laid out by
    pyproject's package-dir, with pyproject.toml in dest. The editable install maps
    the root folders (models/, samplers/, ...) into weightspace, but the linter finds
    subpackages by walking weightspace/ on disk, so it lints this tree instead."""
    python_only = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):  # weightspace before its subpackages
        shutil.copytree(ROOT / folder, dest.joinpath("src", *package.split(".")),
                        ignore=python_only, dirs_exist_ok=True)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(tree: Path) -> tuple[int, str]:
    """(exit status, report with whitespace collapsed) of lint-imports on a copy."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    # The linter locates the package the way Python imports it: make sure that is the copy.
    found = subprocess.run(
        [sys.executable, "-c", "import importlib.util; "
                               "print(importlib.util.find_spec('weightspace').origin)"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=60)
    assert Path(found.stdout.strip()) == tree / "src" / "weightspace" / "__init__.py", found
    out = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config",
                          str(tree / "pyproject.toml")],
                         cwd=tree, env=env, capture_output=True, text=True, timeout=120)
    return out.returncode, " ".join((out.stdout + out.stderr).split())


def test_the_package_keeps_every_layering_contract(tmp_path):
    tree = _copy_package(tmp_path)
    assert (tree / "src" / "weightspace" / "samplers" / "hmc.py").is_file()
    code, report = _lint(tree)
    assert code == 0, report
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in report, report


@pytest.mark.parametrize("module, line, broken, chain", [
    # A sampler importing the command line: a lower layer imports the top one.
    ("samplers/trace.py", "import weightspace.cli", "layers",
     "weightspace.samplers.trace -> weightspace.cli"),
    # Diagnostics importing models: allowed by the layers, refused by the
    # forbidden contract.
    ("diagnostics/ess.py", "import weightspace.models", "forbidden",
     "weightspace.diagnostics.ess -> weightspace.models"),
])
def test_a_wrong_import_breaks_the_contract_it_crosses(tmp_path, module, line, broken,
                                                       chain):
    tree = _copy_package(tmp_path)
    path = tree / "src" / "weightspace" / module
    path.write_text(path.read_text() + f"\n{line}  # deliberately wrong\n")
    code, report = _lint(tree)
    assert code == 1, report
    assert f"{CONTRACTS[broken]} BROKEN" in report, report
    assert chain in report, report
    if broken == "forbidden":
        assert f"{CONTRACTS['layers']} KEPT" in report, report
