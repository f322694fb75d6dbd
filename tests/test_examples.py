"""The scripts in examples/ run end to end on the shared data with a tiny random RNA-FM, for a few steps, in one
process and under `accelerate launch` with two CPU processes."""

from __future__ import annotations

import importlib.util
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
@pytest.mark.slow
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
@pytest.mark.slow
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
@pytest.mark.slow
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


@needs_data
def test_tutorial_probe_features_are_the_tutorials_computed_with_fm(tmp_path):
    """The tutorial's features computed the tutorial's way with fm itself (its loader and batch converter, chunks
    of 50 in file order, rows written into a zero 1024 x 640 array and averaged) equal the example's."""
    import argparse

    import fm
    import numpy as np
    from original_checkpoints import write_original_checkpoint

    from rnafm_hf.conversion import convert_checkpoint

    spec = importlib.util.spec_from_file_location(
        "rna_type_classification", EXAMPLES / "rna_type_classification.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    checkpoint = write_original_checkpoint(tmp_path / "RNA-FM.pth")
    convert_checkpoint(checkpoint, tmp_path / "rna-fm", verify=False)
    sequences, _ = example.read_typed_sequences(RNA_TYPES, per_type=3)
    ours = example.tutorial_features(str(tmp_path / "rna-fm"), sequences)

    torch.serialization.add_safe_globals([argparse.Namespace])
    model, alphabet = fm.pretrained.load_model_and_alphabet_local(str(checkpoint), theme="rna")
    converter = alphabet.get_batch_converter()
    theirs = np.zeros((len(sequences), 1024, model.args.embed_dim))
    for first in range(0, len(sequences), 50):
        _, _, tokens = converter([(str(i), s) for i, s in enumerate(sequences[first : first + 50])])
        with torch.no_grad():
            states = model.eval()(tokens, repr_layers=[2])["representations"][2].numpy()
        theirs[first : first + 50, : states.shape[1]] = states
    assert np.abs(ours - theirs.mean(axis=1)).max() < 1e-5


@needs_data
@pytest.mark.slow
def test_tutorial_probe_trains_and_reports_its_test_accuracy(tiny_folder, tmp_path):
    command = [str(EXAMPLES / "rna_type_classification.py"), "--protocol", "tutorial-probe", "--epochs", "3"]
    out = run([sys.executable, *command, "--model", str(tiny_folder), "--output-dir", "probe"], tmp_path)
    assert "tutorial linear probe: train 896, validation 224, test 280; test accuracy" in out
    results = json.loads((tmp_path / "probe" / "tutorial_probe.json").read_text())
    assert results["epochs"] == 3 and 0 <= results["test_accuracy"] <= 1
