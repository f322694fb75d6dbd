"""Every code block of README.md runs (Python blocks) or is what CI runs (shell blocks)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
SHELL_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_blocks_run(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(PYTHON_BLOCKS[index], f"README.md python block {index}", "exec"), {})
    assert "torch.Size([56, 640])" in capsys.readouterr().out


def test_ci_runs_the_readme_test_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    test_block = next(block for block in SHELL_BLOCKS if "pytest" in block)
    install, test = test_block.strip().splitlines()
    assert install.replace("pip install", "python -m pip install --quiet") in ci
    assert test in ci.splitlines()


def test_install_command_installs_this_distribution():
    assert SHELL_BLOCKS[0].strip() == "pip install ."
    assert 'name = "rnafm-hf"' in (ROOT / "pyproject.toml").read_text()
