"""Every Python example in README.md runs, and the set-up commands are the
documented two."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files (figures) to relative paths
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    namespace = {}
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    finally:  # the "Adding a sampler" example registers one; keep the registries as they were
        import weightspace as ws

        ws.samplers.SAMPLERS.pop("mala", None)
        ws.experiments.methods.unregister("mala")


def test_readme_opens_with_the_two_setup_commands():
    bash = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert len(bash) >= 2
    main_job, tests = bash[0].strip(), bash[1].strip()
    assert main_job.startswith("python3 -m venv .venv") and "pip install" in main_job
    assert tests.endswith(".venv/bin/pytest")
