"""Damaged or mismatched model folders, impossible config values and NaN outputs: refused with one clear message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoModel, pipeline

import rnafm_hf
from rnafm_hf import (
    AutoModelForContactPrediction,
    RnaFmConfig,
    RnaFmForMaskedLM,
    RnaFmForSecondaryStructure,
    RnaFmTokenizer,
)
from rnafm_hf.cli import main
from rnafm_hf.configuration_rnafm import RnaFmConfigError
from rnafm_hf.folding import fold_fasta
from rnafm_hf.model_loading import ModelFolderError, NonFiniteOutputError, load_model
from rnafm_hf.server import RnaFmServer

RECORDS = {"plain": "ACAUCAUAC", "with-g": "GGGAAACCCUU"}
HUGE = 3e38  # finite, but a LayerNorm over a row of them overflows


def save(model: torch.nn.Module, folder: Path) -> Path:
    model.save_pretrained(folder)
    RnaFmTokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory) -> Path:
    """A folder as `save_pretrained` writes it for the MLM model: encoder and MLM head, no contact regression."""
    torch.manual_seed(0)
    return save(RnaFmForMaskedLM(tiny_config()).eval(), tmp_path_factory.mktemp("rna-fm"))


@pytest.fixture(scope="module")
def structure_folder(tmp_path_factory) -> Path:
    """A secondary-structure folder: encoder and `ss_head` only (no MLM head, no contact regression)."""
    torch.manual_seed(0)
    config = tiny_config(ss_head_reduction=8, ss_head_channels=8, ss_head_blocks=2)
    return save(RnaFmForSecondaryStructure(config).eval(), tmp_path_factory.mktemp("rna-fm-ss"))


@pytest.fixture
def fasta(tmp_path) -> Path:
    path = tmp_path / "input.fasta"
    path.write_text("".join(f">{name}\n{sequence}\n" for name, sequence in RECORDS.items()))
    return path


def damaged(source: Path, target: Path, drop: str | None = None, config=None, weights=None) -> Path:
    """A copy of `source` with the tensors whose names contain `drop` removed, `config` merged into config.json
    and `weights` (name -> edit) applied to the tensors."""
    shutil.copytree(source, target)
    tensors = load_file(target / "model.safetensors")
    tensors = {name: tensor for name, tensor in tensors.items() if drop is None or drop not in name}
    for name, edit in (weights or {}).items():
        edit(tensors[name])
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    if config:
        values = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps({**values, **config}))
    return target


def nan_(tensor: torch.Tensor) -> None:
    tensor.view(-1)[::7] = float("nan")


def huge_g_row_(tensor: torch.Tensor) -> None:
    """Token embedding of G (id 5) overflows the embedding LayerNorm: NaN for sequences with a G only."""
    tensor[RnaFmTokenizer().convert_tokens_to_ids("G")] = HUGE


def refused(capfd, command: str, argv: list[str]) -> str:
    """Run the CLI, check it failed with one line of error and no traceback, and return that line."""
    assert main(argv) != 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "LOAD REPORT" not in err and "MISSING" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"rnafm-hf {command}: error: "), err
    return line


def arrays_in(folder: Path) -> list[Path]:
    return [
        path
        for suffix in ("npy", "safetensors", "ct", "dbn", "bpseq")
        for path in folder.rglob(f"*.{suffix}")
    ]


# Weights that do not match config.json ---------------------------------------------------------------------------

MISMATCHES = {
    "layer dropped from the weights": (
        {"drop": "rnafm.encoder.layers.1."},
        r"16 tensor\(s\) the model needs are missing \(encoder\.layers\.1\.",
    ),
    "config says more layers": (
        {"config": {"num_hidden_layers": 3}},
        r"16 tensor\(s\) the model needs are missing \(encoder\.layers\.2\.",
    ),
    "config says fewer layers": (
        {"config": {"num_hidden_layers": 1}},
        r"16 tensor\(s\) have no place in the model \(rnafm\.encoder\.layers\.1\.",
    ),
    "config says another width": (
        {"config": {"hidden_size": 48}},
        r"tensor\(s\) have another shape \(embeddings\.layer_norm\.bias is \(32,\) in the file, \(48,\) per config",
    ),
}


@pytest.mark.parametrize("damage", MISMATCHES, ids=list(MISMATCHES))
def test_embed_refuses_weights_that_do_not_match_config(damage, encoder_folder, fasta, tmp_path, capfd):
    changes, expected = MISMATCHES[damage]
    folder = damaged(encoder_folder, tmp_path / "model", **changes)
    out = tmp_path / "out"
    line = refused(capfd, "embed", ["embed", str(fasta), "--model", str(folder), "-o", str(out)])
    assert "is damaged, or its config.json does not match its weights" in line
    assert "rnafm-hf convert" in line
    assert not arrays_in(out)
    with pytest.raises(ModelFolderError, match=expected):
        dict(rnafm_hf.embed(RECORDS, folder, progress=False, log=None))


@pytest.mark.parametrize("drop", ["ss_head.output.", "rnafm.encoder.layers.0.fc1."])
def test_fold_refuses_a_structure_folder_with_missing_tensors(drop, structure_folder, fasta, tmp_path, capfd):
    folder = damaged(structure_folder, tmp_path / "model", drop=drop)
    out = tmp_path / "structures"
    line = refused(capfd, "fold", ["fold", str(fasta), "--model", str(folder), "--output", str(out)])
    assert f"2 tensor(s) the model needs are missing ({drop}bias, {drop}weight)" in line
    assert not out.exists()
    with pytest.raises(ModelFolderError, match="is damaged"):
        fold_fasta(fasta, folder, out, progress=False)
    # transformers' pipeline() reports each class it tried; ours is among them, with its message.
    with pytest.raises(ValueError, match="is damaged, or its config.json does not match"):
        pipeline("rna-secondary-structure", model=str(folder))


def test_serve_refuses_damaged_folders(encoder_folder, structure_folder, tmp_path, capfd):
    broken_encoder = damaged(encoder_folder, tmp_path / "encoder", drop="rnafm.embeddings.word_embeddings")
    broken_structure = damaged(structure_folder, tmp_path / "structure", drop="ss_head.blocks.1.")
    with pytest.raises(ModelFolderError, match="missing"):
        RnaFmServer(broken_encoder)
    with pytest.raises(ModelFolderError, match=r"ss_head\.blocks\.1\.bn1\.bias"):
        RnaFmServer(encoder_folder, ss_model=broken_structure)
    line = refused(
        capfd, "serve", ["serve", "--model", str(encoder_folder), "--ss-model", str(broken_structure)]
    )
    assert "is damaged" in line


def test_a_cut_short_weights_file_is_refused(encoder_folder, tmp_path):
    folder = damaged(encoder_folder, tmp_path / "model")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFolderError, match="the weights file cannot be read"):
        load_model(folder, AutoModel)


def test_heads_that_may_be_absent_still_load(encoder_folder, structure_folder):
    """The contact regression (absent when the original file had none) may be missing; nothing else."""
    contact = load_model(encoder_folder, AutoModelForContactPrediction)
    assert type(contact).__name__ == "RnaFmForContactPrediction"
    with pytest.raises(ModelFolderError, match=r"contact_head\.regression\.bias"):
        load_model(encoder_folder, AutoModelForContactPrediction, allow_missing=())
    # Heads of other classes in the folder are left out, as transformers does: no error for the MLM head here.
    assert type(load_model(encoder_folder, AutoModel)).__name__ == "RnaFmModel"
    assert type(load_model(structure_folder, AutoModel)).__name__ == "RnaFmModel"
    with pytest.raises(
        ModelFolderError, match=r"the model needs are missing \(ss_head\."
    ):  # no structure head
        load_model(encoder_folder, RnaFmForSecondaryStructure)


# Impossible config values ------------------------------------------------------------------------------------------

BAD_VALUES = {
    "num_hidden_layers": 0,
    "hidden_size": -32,
    "num_attention_heads": 0,
    "intermediate_size": 2.5,
    "vocab_size": "25",
    "max_position_embeddings": 4,
    "hidden_dropout_prob": 1.5,
    "attention_probs_dropout_prob": -0.1,
    "layer_norm_eps": 0,
    "ss_threshold": 2.0,
    "k_mer": 2,
    "mask_token_id": 99,
    "token_dropout": "no",
}


@pytest.mark.parametrize("field", BAD_VALUES)
def test_impossible_config_values_name_the_field(field):
    value = BAD_VALUES[field]
    with pytest.raises(RnaFmConfigError, match=rf"{field} must be .*; got {value!r}"):
        tiny_config(**{field: value})


def test_config_keeps_accepting_the_settings_in_use():
    RnaFmConfig()
    RnaFmConfig.mrna_fm()
    tiny_config(classifier_dropout=None, hidden_dropout_prob=0, ss_threshold=1, chunk_size_feed_forward=0)
    tiny_config(max_position_embeddings=5)  # room for one residue


@pytest.mark.parametrize(("field", "value"), [("num_hidden_layers", 0), ("hidden_dropout_prob", 1.5)])
def test_cli_reports_an_impossible_config_json(field, value, encoder_folder, fasta, tmp_path, capfd):
    folder = damaged(encoder_folder, tmp_path / "model", config={field: value})
    out = tmp_path / "out"
    line = refused(capfd, "embed", ["embed", str(fasta), "--model", str(folder), "-o", str(out)])
    assert f"config.json is not valid: RnaFmConfig {field} must be" in line and f"got {value!r}" in line
    assert not arrays_in(out)


# NaN and Inf -------------------------------------------------------------------------------------------------------


def test_weights_with_nan_are_refused_by_name(encoder_folder, structure_folder, fasta, tmp_path, capfd):
    name = "rnafm.encoder.layers.0.fc1.weight"
    folder = damaged(encoder_folder, tmp_path / "model", weights={name: nan_})
    line = refused(capfd, "embed", ["embed", str(fasta), "--model", str(folder), "-o", str(tmp_path / "out")])
    assert "the weights hold NaN or Inf in 1 tensor(s) (encoder.layers.0.fc1.weight)" in line
    ss = damaged(structure_folder, tmp_path / "ss", weights={"ss_head.output.weight": nan_})
    line = refused(capfd, "fold", ["fold", str(fasta), "--model", str(ss), "--output", str(tmp_path / "st")])
    assert "(ss_head.output.weight)" in line
    assert not arrays_in(tmp_path / "out") and not arrays_in(tmp_path / "st")


def test_embed_refuses_non_finite_output_naming_record_and_layer(encoder_folder, fasta, tmp_path, capfd):
    """Finite weights that overflow for sequences with a G: the batch check fails, and the record is found."""
    folder = damaged(
        encoder_folder, tmp_path / "model", weights={"rnafm.embeddings.word_embeddings.weight": huge_g_row_}
    )
    out = tmp_path / "out"
    line = refused(capfd, "embed", ["embed", str(fasta), "--model", str(folder), "-o", str(out)])
    assert "The model's output for record 2 ('with-g'), layer 2 is not finite (NaN or Inf)" in line
    assert not arrays_in(out)
    with pytest.raises(
        NonFiniteOutputError, match=r"record 2 \('with-g'\), layers 0, 2 is not finite"
    ) as error:
        dict(rnafm_hf.embed(RECORDS, folder, layers=[0, -1], progress=False, log=None))
    assert error.value.sequence == RECORDS["with-g"]
    # A sequence without G is unaffected: that is how the culprit is told from its batch.
    vectors = dict(rnafm_hf.embed({"plain": RECORDS["plain"]}, folder, progress=False, log=None))
    assert np.isfinite(vectors["plain"]).all()


def test_embed_of_a_loaded_model_with_nan_weights_raises(tmp_path):
    model = rnafm_hf.RnaFmModel(tiny_config()).eval()
    with torch.no_grad():
        model.encoder.layers[1].fc2.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteOutputError, match=r"record 1 \('plain'\), layer 2 .*rnafm-hf convert"):
        dict(rnafm_hf.embed(RECORDS, model, tokenizer=RnaFmTokenizer(), progress=False, log=None))
    with pytest.raises(NonFiniteOutputError, match="record 1"):
        rnafm_hf.embed_to_folder(RECORDS, tmp_path / "out", model, tokenizer=RnaFmTokenizer(), progress=False)
    assert not arrays_in(tmp_path / "out")


def test_fold_refuses_non_finite_output_naming_the_record(structure_folder, fasta, tmp_path, capfd):
    folder = damaged(
        structure_folder, tmp_path / "model", weights={"rnafm.embeddings.word_embeddings.weight": huge_g_row_}
    )
    out = tmp_path / "structures"
    line = refused(capfd, "fold", ["fold", str(fasta), "--model", str(folder), "--output", str(out)])
    assert "The model's output for record 'with-g' is not finite (NaN or Inf); nothing was written" in line
    assert not (out / "with-g.npy").exists() and not (out / "summary.tsv").exists()
    fold = pipeline("rna-secondary-structure", model=str(folder))
    with pytest.raises(NonFiniteOutputError, match=r"the sequence 'GGGAAACCCUU' \(11 nt\)"):
        fold([RECORDS["plain"], RECORDS["with-g"]], batch_size=2)
    assert fold(RECORDS["plain"])["dot_bracket"]  # sequences without G still fold
