"""Every code block of README.md runs, in order, in a fresh folder (shell blocks through bash), or is what CI runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA
from original_checkpoints import (
    put_in_hub_cache,
    write_original_checkpoint,
    write_secondary_structure_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(bash|python)\n(.*?)```", README, re.DOTALL)
SHELL_BLOCKS = [code for language, code in BLOCKS if language == "bash"]
INSTALL_OR_TEST = ("pip install", "python -m pytest", "HF_HUB_OFFLINE=1 python -m pytest")
SERVE = "rnafm-hf serve"
# The one-command main job with the released model: its download is mocked in tests/test_first_hour.py.
RELEASED_MODEL_JOB = "rnafm-hf embed my.fasta --output embeddings"
CPU_INSTALL = "pip install . --extra-index-url https://download.pytorch.org/whl/cpu"


def run_shell_block(code: str, cwd: Path) -> None:
    for folder in ("conversion", "examples"):
        if not (cwd / folder).exists():
            os.symlink(ROOT / folder, cwd / folder)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cwd / "hub-cache")}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"README shell block failed:\n{code}\n{done.stdout}\n{done.stderr}"


def is_walkthrough(language: str, code: str) -> bool:
    """The blocks a reader runs one after another; install/test commands, the hf:// example and the web app (which
    runs until stopped) are tested apart."""
    return not (
        language == "bash"
        and (
            code.startswith(INSTALL_OR_TEST)
            or "hf://" in code
            or SERVE in code
            or code.strip() == RELEASED_MODEL_JOB
        )
    )


def needs_shared_data(code: str) -> bool:
    """The example scripts read the tutorial data in ../shared/data."""
    return "examples/" in code


def run_python_block(code: str, cwd: Path, index: int) -> str:
    """A Python block in a process of its own, as a reader pastes it into a fresh interpreter: it must import
    what it uses. Returns what it printed."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cwd / "hub-cache")}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"README Python block {index} failed:\n{code}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_readme_blocks_run_in_order(tmp_path):
    """Quickstart (embed, then fold) and the later examples, shell and Python alike, in one fresh folder, each
    block in a fresh process. The example scripts' blocks run where the shared data folder exists
    (tests/test_examples.py skips alike)."""
    printed = []
    for index, (language, code) in enumerate(BLOCKS):
        if not is_walkthrough(language, code) or (needs_shared_data(code) and not DATA.exists()):
            continue
        if language == "bash":
            run_shell_block(code, tmp_path)
        else:
            printed.append(run_python_block(code, tmp_path, index))
    out = "".join(printed)
    assert "torch.Size([56, 640])" in out and "56 True" in out and "1.0 0.75 0.857" in out
    assert (tmp_path / "structures" / "hairpin.bpseq").is_file()
    assert "(640,)" in out and "(56, 640) 56" in out and "58 torch.Size([56, 640])" in out
    assert (tmp_path / "embeddings" / "hairpin.npy").is_file()
    assert (
        "long\tshard-000-00001.safetensors\t3000\t3000\t5"
        in (tmp_path / "long-embeddings/index.tsv").read_text()
    )
    assert "long\tlong.npy\t3000\t3000\t5" in (tmp_path / "long-2p/index.tsv").read_text()
    assert "RnaFmForSequenceClassification 2" in out
    assert "56\n['G2A', 'U4C:A11G']" in out  # scores
    assert (
        (tmp_path / "mutation-scores.tsv")
        .read_text()
        .startswith("id\tmutation\tmasked_marginal\twt_marginal")
    )
    assert (tmp_path / "evaluation.tsv").read_text().startswith("id\tlength\tprecision")
    assert (tmp_path / "long-structures" / "long_rna.npy").is_file()  # folded by windows
    assert (tmp_path / "rna-fm-classifier/final/modeling_rnafm.py").is_file()
    assert "trainable params" in out  # LoRA
    if DATA.exists():
        assert (tmp_path / "family_clustering.png").is_file()
        assert json.loads((tmp_path / "rna-type/metrics.json").read_text())["processes"] == 1
        assert json.loads((tmp_path / "rna-type-2p/metrics.json").read_text())["processes"] == 2


@pytest.mark.slow
def test_conversion_commands_run(tmp_path):
    """With stand-ins for the released files (random weights) and a pre-filled Hub cache for the hf:// line."""
    block = next(code for code in SHELL_BLOCKS if "hf://" in code)
    rna = write_original_checkpoint(tmp_path / "RNA-FM_pretrained.pth")
    write_original_checkpoint(
        tmp_path / "file_mRNA-FM_pretrained.pth", theme="rna-3mer", emb_layer_norm_before=False
    )
    put_in_hub_cache(tmp_path / "hub-cache", "cuhkaih/rnafm", "RNA-FM_pretrained.pth", rna)
    write_secondary_structure_checkpoint(
        tmp_path / "RNA-FM-ResNet_PDB-All.pth", embed_dim=32, heads=4, backbone_path=rna
    )
    files = ("RNA-FM_pretrained.pth", "file_mRNA-FM_pretrained.pth", "RNA-FM-ResNet_PDB-All.pth")
    # The hf:// line writes ./rna-fm again, after the first line did: run the lines each in a fresh folder.
    for index, line in enumerate(block.strip().splitlines()):
        folder = tmp_path / f"line{index}"
        folder.mkdir()
        for name in files:
            os.link(tmp_path / name, folder / name)
        (folder / "hub-cache").symlink_to(tmp_path / "hub-cache")
        run_shell_block(line, folder)
        assert any(
            (folder / name / "model.safetensors").exists()
            for name in ("rna-fm", "mrna-fm", "rna-fm-copy", "rna-fm-ss")
        )


@pytest.mark.parametrize("block", [b for b in SHELL_BLOCKS if b.startswith(INSTALL_OR_TEST)])
def test_install_and_test_blocks_are_what_ci_runs(block):
    ci = (ROOT / ".ci" / "run").read_text()
    for line in block.strip().splitlines():
        if line == CPU_INSTALL:  # CI installs its torch pin first, from the machine's own registry
            assert 'name = "rnafm-hf"' in (ROOT / "pyproject.toml").read_text()
        elif line.startswith("pip install"):
            assert line.replace("pip install", "python -m pip install --quiet") in ci
        else:
            assert line in ci.splitlines()


def test_install_command_installs_this_distribution():
    assert SHELL_BLOCKS[0].strip() == CPU_INSTALL


@pytest.mark.slow
def test_web_app_command_serves_the_quickstart_folders(tmp_path):
    """The README's `rnafm-hf serve` line, as written, in a folder with `rna-fm` and `rna-fm-ss` (random weights);
    driven with Gradio's client, then stopped."""
    pytest.importorskip("gradio", reason="the web app needs the serve extra")
    from gradio_client import Client
    from original_checkpoints import write_secondary_structure_checkpoint
    from test_server import HAIRPIN, free_port, wait_for_url

    from rnafm_hf.conversion import convert_checkpoint

    block = next(code for code in SHELL_BLOCKS if SERVE in code)
    convert_checkpoint(write_original_checkpoint(tmp_path / "RNA-FM.pth"), tmp_path / "rna-fm", verify=False)
    ss = write_secondary_structure_checkpoint(tmp_path / "RNA-FM-ResNet.pth")
    convert_checkpoint(ss, tmp_path / "rna-fm-ss", verify=False)
    environment = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "GRADIO_SERVER_PORT": str(free_port()),
    }
    server = subprocess.Popen(
        ["bash", "-c", f"exec {block.strip()}"],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        client = Client(wait_for_url(server), verbose=False)
        dot_brackets = client.predict(f">hairpin\n{HAIRPIN}", None, False, 0.5, False, api_name="/fold")[0]
        assert dot_brackets.startswith(f">hairpin\n{HAIRPIN}\n")
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_blocks_outside_the_walkthrough_are_the_ones_tested_apart():
    """Install/test commands are checked against CI, the one hf:// block runs in test_conversion_commands_run, the
    one web app block in test_web_app_command_serves_the_quickstart_folders, the released-model job in
    tests/test_first_hour.py (its download mocked)."""
    apart = [code for language, code in BLOCKS if not is_walkthrough(language, code)]
    assert sum("hf://" in code for code in apart) == 1 and sum(SERVE in code for code in apart) == 1
    assert sum(code.strip() == RELEASED_MODEL_JOB for code in apart) == 1
    assert all(
        code.startswith(INSTALL_OR_TEST)
        or "hf://" in code
        or SERVE in code
        or code.strip() == RELEASED_MODEL_JOB
        for code in apart
    )
    assert any(language == "python" for language, _ in BLOCKS) and len(apart) < len(BLOCKS)
