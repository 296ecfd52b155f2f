"""The package installs as one import package with the documented subpackages
and a working console script."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import weightspace as ws


def test_public_subpackages_are_reachable():
    for name in ("data", "models", "samplers", "diagnostics", "slt", "experiments",
                 "sharding"):
        assert hasattr(ws, name), name
    assert ws.models.__name__ == "weightspace.models"
    for name in ("MLP", "LeNet5", "ResNet20FRN", "CNNLSTM", "DeepLinear", "posterior",
                 "Posterior"):
        assert hasattr(ws.models, name), name


def test_no_generic_top_level_modules_are_installed():
    # The root folders must be reachable only as weightspace.<name>.
    import importlib.util

    for generic in ("models", "samplers", "diagnostics", "slt", "experiments"):
        spec = importlib.util.find_spec(generic)
        assert spec is None or "site-packages" not in str(spec.origin), generic


def test_console_script_help():
    script = Path(sysconfig.get_path("scripts")) / "weightspace"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: weightspace" in out.stdout
    out = subprocess.run([sys.executable, "-m", "weightspace.cli", "datasets"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "digits" in out.stdout, out.stderr


def test_wheel_puts_every_module_under_weightspace(tmp_path):
    # A non-editable install ships this wheel: nothing may land outside weightspace/.
    import zipfile

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                          "-w", str(tmp_path), str(root)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("weightspace-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    code = [n for n in names if n.endswith(".py")]
    assert code and all(n.startswith("weightspace/") for n in code), code
    for sub in ("models", "samplers", "diagnostics", "slt", "experiments", "data"):
        assert f"weightspace/{sub}/__init__.py" in names, sub
    assert "weightspace/models/posterior.py" in names
