"""The scripts in examples/ run end to end on the shared data with a tiny random RNA-FM, for a few steps, in one
process and under `accelerate launch` with two CPU processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA, tiny_config
from transformers import AutoModelForSequenceClassification

from rnafm_hf import RnaFmForMaskedLM, RnaFmTokenizer, add_remote_code

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RNA_TYPES = DATA / "format_rnacentral_active.100.sample-Max50.fasta"
needs_data = pytest.mark.skipif(
    not (DATA / "RF00001.fasta").exists() or not RNA_TYPES.exists(),
    reason=f"the shared data folder ({DATA}) is needed for the examples",
)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A small randomly initialised RNA-FM saved as a converted folder is (with the remote code)."""
    folder = tmp_path_factory.mktemp("tiny-rna-fm")
    torch.manual_seed(0)
    RnaFmForMaskedLM(tiny_config()).save_pretrained(folder)
    RnaFmTokenizer().save_pretrained(folder)
    add_remote_code(folder)
    return folder


def run(command: list[str], cwd: Path) -> str:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@needs_data
def test_family_clustering_reports_separation_and_draws_the_plot(tiny_folder, tmp_path):
    out = run(
        [
            sys.executable,
            str(EXAMPLES / "family_clustering.py"),
            "--model",
            str(tiny_folder),
            "--per-family",
            "20",
            "--output",
            "plots/families.png",
        ],
        tmp_path,
    )
    assert "sequences: 60 in 3 families" in out
    silhouette = float(re.search(r"silhouette score \(cosine, embedding space\): (-?[\d.]+)", out)[1])
    accuracy = float(re.search(r"5-NN family accuracy \(5-fold\): ([\d.]+)", out)[1])
    assert -1 <= silhouette <= 1 and 0 <= accuracy <= 1
    png = tmp_path / "plots" / "families.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_classification_run(folder: Path, processes: int) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["processes"] == processes
    assert metrics["types"] == 28 and metrics["sizes"] == {"train": 196, "validation": 42, "test": 42}
    # Sequences over 200 nt were cut and counted, not dropped.
    assert metrics["truncated"] > 0
    for name in ("model", "majority_class_baseline"):
        assert set(metrics[name]) == {"accuracy", "macro_f1"}
    assert (folder / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = AutoModelForSequenceClassification.from_pretrained(folder / "model")
    assert model.config.num_labels == 28 and model.config.id2label[0] == "RNase_MRP_RNA"


CLASSIFY = [
    str(EXAMPLES / "rna_type_classification.py"),
    "--per-type",
    "10",
    "--max-steps",
    "4",
    "--max-length",
    "200",
    "--learning-rate",
    "1e-3",
]


@needs_data
def test_rna_type_classification_trains_evaluates_and_saves(tiny_folder, tmp_path):
    out = run([sys.executable, *CLASSIFY, "--model", str(tiny_folder), "--output-dir", "run"], tmp_path)
    assert "28 RNA types; train 196, validation 42, test 42; trained in 1 process(es)" in out
    assert re.search(r"fine-tuned\s+[\d.]+\s+[\d.]+\nmajority class\s+[\d.]+\s+[\d.]+", out)
    assert re.search(r"\d+ sequences were longer than 200 nt and were truncated to it", out)
    check_classification_run(tmp_path / "run", processes=1)
    # The saved model is Hub-ready: it loads with transformers alone.
    script = (
        "import sys; sys.modules['rnafm_hf'] = None\n"
        "from transformers import AutoModelForSequenceClassification\n"
        f"model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / 'run' / 'model')!r}, "
        "trust_remote_code=True)\n"
        "assert type(model).__module__.startswith('transformers_modules'), type(model).__module__\n"
    )
    run([sys.executable, "-c", script], tmp_path)


@needs_data
def test_rna_type_classification_under_accelerate_with_two_cpu_processes(tiny_folder, tmp_path):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    out = run(
        [*launch, *CLASSIFY, "--model", str(tiny_folder), "--output-dir", "run", "--device", "cpu"], tmp_path
    )
    assert "trained in 2 process(es)" in out
    assert out.count("28 RNA types") == 1  # the report comes from the first process only
    check_classification_run(tmp_path / "run", processes=2)


def test_examples_refuse_bad_options_before_any_work(tiny_folder, tmp_path):
    cases = [
        ("family_clustering.py", ["--per-family", "3"], "--per-family must be at least 5"),
        (
            "family_clustering.py",
            ["--per-family", "5", "--neighbours", "20"],
            "--neighbours must be at most 12",
        ),
        ("rna_type_classification.py", ["--max-length", "0"], "--max-length must be at least 1"),
    ]
    for script, options, message in cases:
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / script), "--model", str(tiny_folder), *options],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_add_remote_code_refuses_a_foreign_tokenizer_and_warns_without_one(tmp_path):
    torch.manual_seed(0)
    RnaFmForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="has no tokenizer"):
        add_remote_code(tmp_path)
    assert (tmp_path / "modeling_rnafm.py").is_file()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    with pytest.raises(ValueError, match="names the tokenizer 'BertTokenizer'"):
        add_remote_code(tmp_path)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        add_remote_code(tmp_path / "nothing")


def test_examples_explain_a_missing_data_folder(tiny_folder, tmp_path):
    for script, option in (("family_clustering.py", "--data"), ("rna_type_classification.py", "--data")):
        done = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / script),
                "--model",
                str(tiny_folder),
                option,
                str(tmp_path / "none"),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode != 0 and "not found; pass --data" in done.stderr
