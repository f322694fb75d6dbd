"""Secondary-structure files read as the original reads them: on top of the RNA-FM backbone they were trained on.

Structure files here are written as the original training wrote them (fm.downstream's `Baseline` built from
`RNA-FM_pretrained.pth` in torch hub's cache, `torch.save(model.state_dict())`), and every comparison is against
fm's own loading path (`fm.downstream.build_rnafm_resnet`), never against our own reading of the files.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import DATA, read_fasta
from huggingface_hub import ModelCard
from original_checkpoints import (
    SS_HEAD_NAME,
    original_structure_model,
    put_in_hub_cache,
    torch_hub_folder,
    write_original_checkpoint,
    write_secondary_structure_checkpoint,
)
from transformers import AutoConfig, AutoTokenizer, pipeline

import rnafm_hf
from rnafm_hf.cli import main
from rnafm_hf.original_checkpoint import CheckpointError, read_original
from rnafm_hf.structure_backbone import HEAD_THRESHOLDS

BACKBONE = "RNA-FM_pretrained.pth"
SEQUENCES = [
    ("hairpin", "GGGGAAACCCCAUGCAUGCAUGGGAAACCC"),
    ("1p6v_B", "GAUUCGACGGGGACUUCGGUCCUCGGACGCGGGUUCGAUUCCCGC"),
]


def convert(*args) -> int:
    return main(["convert", *map(str, args)])


def fm_probabilities(original, alphabet, sequences, *, own_forward: bool = False) -> list[torch.Tensor]:
    """fm's pairing probabilities, one sequence at a time. `own_forward` runs `Baseline.forward` itself (it reads
    layer 12, so only for 12-layer backbones); otherwise the backbone and the head as that forward calls them."""
    converter = alphabet.get_batch_converter()
    maps = []
    with torch.no_grad():
        for record in sequences:
            _, _, ids = converter([record])
            if own_forward:
                logits = original({"token": ids})["r-ss"]
            else:
                layer = original.backbone.num_layers
                embedding = original.backbone(ids, repr_layers=[layer], need_head_weights=True)
                head = original.downstream_modules[SS_HEAD_NAME]
                logits = head(ids, {"embedding": embedding["representations"][layer]})
            maps.append(torch.sigmoid(logits.float())[0])
    return maps


def our_probabilities(folder, sequences) -> list[torch.Tensor]:
    model = rnafm_hf.AutoModelForContactPrediction.from_pretrained(folder, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return [torch.sigmoid(model(**tokenizer(s, return_tensors="pt")).logits[0]) for _, s in sequences]


def max_difference(ours, theirs) -> float:
    return max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True))


@pytest.fixture
def structure_file(tmp_path):
    """A tiny structure file whose backbone says token_dropout=True (fm's default is off), its backbone kept in a
    folder of its own."""
    path = write_secondary_structure_checkpoint(tmp_path / "RNA-FM-ResNet_PDB-All.pth", token_dropout=True)
    return path, path.parent / f"{path.stem}-backbone" / BACKBONE


@pytest.mark.slow
def test_backbone_settings_decide_the_numbers(structure_file, tmp_path, capsys):
    path, backbone = structure_file
    original, alphabet = original_structure_model(path, backbone)
    expected = fm_probabilities(original, alphabet, SEQUENCES)

    assert convert(path, "-o", tmp_path / "given", "--backbone", backbone) == 0
    err = capsys.readouterr().err
    assert "token_dropout=True, num_attention_heads=20 from the training arguments of the backbone" in err
    assert "PASS" in err and "WARNING" not in err
    assert max_difference(our_probabilities(tmp_path / "given", SEQUENCES), expected) <= 1e-5

    # Without the backbone the file cannot tell, so fm's default is used, loudly, and written into the card.
    assert convert(path, "-o", tmp_path / "guessed") == 0
    err = capsys.readouterr().err
    assert (
        "WARNING: token_dropout=False assumed, not read" in err and "--backbone RNA-FM_pretrained.pth" in err
    )
    # The head count is in the file after all: its contact regression has one weight per layer and head.
    assert (
        "num_attention_heads=20 from the width of the contact regression in the file (40 attention maps"
        in err
    )
    card = (tmp_path / "guessed" / "README.md").read_text()
    assert "**Assumed, not read from any file:** `token_dropout`. Numbers" in card
    assert "the converter assumed" in card  # the parity note says what the check could not cover
    # The guess is wrong for this file, and every map shows it.
    assert max_difference(our_probabilities(tmp_path / "guessed", SEQUENCES), expected) > 1e-3

    # Found next to the file, as fm's users keep it.
    shutil.copy(backbone, path.parent / BACKBONE)
    assert convert(path, "-o", tmp_path / "found") == 0
    assert "(found next to the file, sha256 " in capsys.readouterr().err
    assert max_difference(our_probabilities(tmp_path / "found", SEQUENCES), expected) <= 1e-5
    card = ModelCard.load(tmp_path / "found" / "README.md").text
    assert re.search(r"\| `token_dropout` \| `True` \| the training arguments of the backbone file", card)
    assert "Assumed, not read" not in card


def test_backbone_in_torch_hub_cache_folder_or_hub_is_used(structure_file, tmp_path, capsys, monkeypatch):
    path, backbone = structure_file
    hub = tmp_path / "torch-hub"
    (hub / "checkpoints").mkdir(parents=True)
    shutil.copy(backbone, hub / "checkpoints" / BACKBONE)
    with torch_hub_folder(hub):
        original = read_original(path)
    assert original.config.token_dropout is True
    assert "found in torch hub's cache" in original.sources["token_dropout"]

    # A converted rna-fm folder as the backbone.
    assert convert(backbone, "-o", tmp_path / "rna-fm", "--no-verify") == 0
    assert convert(path, "-o", tmp_path / "from-folder", "--backbone", tmp_path / "rna-fm") == 0
    err = capsys.readouterr().err
    assert "as recorded by the backbone folder rna-fm (given)" in err and "PASS" in err
    assert AutoConfig.from_pretrained(tmp_path / "from-folder").token_dropout is True
    # A half-precision backbone folder: compared in its own precision.
    assert convert(backbone, "-o", tmp_path / "rna-fm-16", "--no-verify", "--dtype", "float16") == 0
    assert convert(path, "-o", tmp_path / "from-16", "--backbone", tmp_path / "rna-fm-16", "--no-verify") == 0

    # hf:// paths, through huggingface_hub's cache (offline here).
    import huggingface_hub

    put_in_hub_cache(tmp_path / "hf-cache", "cuhkaih/rnafm", BACKBONE, backbone)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    original = read_original(path, backbone=f"hf://cuhkaih/rnafm/{BACKBONE}")
    assert original.config.token_dropout is True


def test_verification_builds_fm_from_the_backbone_not_from_the_converter(
    structure_file, tmp_path, monkeypatch
):
    """A converter that got the setting wrong is caught: fm reads the backbone file itself."""
    path, backbone = structure_file
    from rnafm_hf import original_checkpoint

    real = original_checkpoint.backbone_settings

    def misread(*args):
        settings = real(*args)
        settings.values["token_dropout"] = not settings.values["token_dropout"]
        return settings

    monkeypatch.setattr(original_checkpoint, "backbone_settings", misread)
    assert convert(path, "-o", tmp_path / "out", "--backbone", backbone) == 1
    assert not (tmp_path / "out").exists()


def test_a_backbone_that_is_not_the_trained_one_is_refused(structure_file, tmp_path, capsys):
    path, _ = structure_file
    other = write_original_checkpoint(tmp_path / "other" / BACKBONE, embed_dim=40, heads=20, seed=5)
    assert convert(path, "-o", tmp_path / "out", "--backbone", other) == 1
    err = capsys.readouterr().err
    assert "is not the one this structure head was trained on" in err and "tensors differ" in err
    codon = write_original_checkpoint(tmp_path / "codon.pth", theme="rna-3mer", emb_layer_norm_before=False)
    assert convert(path, "-o", tmp_path / "out", "--backbone", codon) == 1
    bare = write_original_checkpoint(tmp_path / "bare" / BACKBONE, prefix="bare", embed_dim=40, heads=20)
    assert convert(path, "-o", tmp_path / "out", "--backbone", bare) == 1
    assert "without training arguments" in capsys.readouterr().err
    # A setting that contradicts the backbone, and a backbone for a file that is not a structure file.
    _, backbone = structure_file
    assert convert(path, "-o", tmp_path / "out", "--backbone", backbone, "--no-token-dropout") == 1
    assert "but the backbone says True" in capsys.readouterr().err
    assert convert(backbone, "-o", tmp_path / "out", "--backbone", backbone) == 1
    assert "secondary-structure files only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "threshold"),
    [
        ("RNA-FM-ResNet_PDB-All.pth", 0.33993712),
        ("RNA-FM-ResNet_bpRNA.pth", 0.47729617),
        ("RNA-FM-ResNet_PDB-TR1.pth", 0.07595872),
        ("my-structure-head.pth", 0.5),
    ],
)
def test_each_head_gets_its_threshold(tmp_path, name, threshold, capsys):
    path = write_secondary_structure_checkpoint(tmp_path / name)
    assert convert(path, "-o", tmp_path / "out", "--no-verify") == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["ss_threshold"] == threshold
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"| `ss_threshold` | `{threshold}` |" in card
    if threshold == 0.5:
        assert "Assumed, not read" in card and "names none of the released heads" in capsys.readouterr().err
    else:
        assert next(head for head in HEAD_THRESHOLDS if head in name) in card
    assert convert(path, "-o", tmp_path / "given", "--no-verify", "--threshold", "0.2") == 0
    assert AutoConfig.from_pretrained(tmp_path / "given").ss_threshold == 0.2


def test_threshold_is_used_by_fold_and_refused_elsewhere(tmp_path):
    path = write_secondary_structure_checkpoint(tmp_path / "RNA-FM-ResNet_PDB-TR1.pth")
    assert convert(path, "-o", tmp_path / "ss", "--no-verify") == 0
    fold = pipeline("rna-secondary-structure", model=str(tmp_path / "ss"))
    sequence = SEQUENCES[1][1]
    low = fold(sequence)
    high = fold(sequence, threshold=0.99)
    assert len(low["pairs"]) + len(low["multiplets"]) >= len(high["pairs"]) + len(high["multiplets"])
    assert fold.model.config.ss_threshold == 0.07595872
    lm = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    assert convert(lm, "-o", tmp_path / "lm", "--threshold", "0.3") == 1
    assert convert(path, "-o", tmp_path / "bad", "--threshold", "1.5") == 1


@pytest.mark.slow
def test_full_size_structure_file_folds_like_fm(tmp_path, capsys):
    """A full-size structure file (RNA-FM 12 x 640 with token_dropout off, the 32-block ResNet head) written as the
    original training wrote it; converted with --backbone and with the backbone found next to it; folded by
    `rnafm-hf fold`; the probability maps against fm's Baseline (its own forward)."""
    if not (DATA / "example.fasta").exists():
        pytest.skip(f"{DATA} is absent: the shared data folder (../shared/data) is needed for this test")
    records = read_fasta(DATA / "example.fasta")
    path = write_secondary_structure_checkpoint(
        tmp_path / "RNA-FM-ResNet_PDB-All.pth",
        layers=12,
        embed_dim=640,
        ffn_embed_dim=5120,
        heads=20,
        token_dropout=False,
        seed=21,
        output_bias=-1.3,
    )
    backbone = path.parent / f"{path.stem}-backbone" / BACKBONE
    assert convert(path, "-o", tmp_path / "given", "--backbone", backbone) == 0
    shutil.move(backbone, path.parent / BACKBONE)
    assert convert(path, "-o", tmp_path / "found") == 0
    err = capsys.readouterr().err
    assert err.count("PASS") == 2 and "(found next to the file, sha256 " in err and "WARNING" not in err

    original, alphabet = original_structure_model(path, path.parent / BACKBONE)
    expected = fm_probabilities(original, alphabet, records, own_forward=True)
    fasta = tmp_path / "example.fasta"
    shutil.copy(DATA / "example.fasta", fasta)
    worst = 0.0
    for folder in ("given", "found"):
        output = tmp_path / f"fold-{folder}"
        assert main(["fold", str(fasta), "--model", str(tmp_path / folder), "-o", str(output)]) == 0
        for (name, _), reference in zip(records, expected, strict=True):
            worst = max(worst, float(np.abs(np.load(output / f"{name}.npy") - reference.numpy()).max()))
    print(f"full-size fold vs fm's Baseline: max abs diff {worst:.2e}")
    assert worst <= 1e-5
    assert 0.001 < float((expected[0] > 0.34).float().mean()) < 0.2  # a sparse map, like a trained head's


def test_structure_file_refuses_a_missing_backbone_tensor(structure_file, tmp_path):
    path, backbone = structure_file
    state = torch.load(path, weights_only=True)
    del state["backbone.layers.1.fc1.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="layers.1.fc1.weight"):
        read_original(path, backbone=backbone)


@pytest.mark.slow
def test_a_folder_whose_settings_were_assumed_passes_the_assumption_on(structure_file, tmp_path, capsys):
    """A folder converted without its backbone must not turn the guess into a fact when used as a backbone."""
    path, _ = structure_file
    assert convert(path, "-o", tmp_path / "guessed") == 0
    assert convert(path, "-o", tmp_path / "again", "--backbone", tmp_path / "guessed") == 0
    err = capsys.readouterr().err
    assert (
        "WARNING: token_dropout=False assumed" in err
        and "was itself converted with this setting assumed" in err
    )
    assert "Assumed, not read" in (tmp_path / "again" / "README.md").read_text()


def test_head_count_is_read_from_the_structure_files_contact_regression(tmp_path, capsys):
    path = write_secondary_structure_checkpoint(tmp_path / "RNA-FM-ResNet_PDB-All.pth", heads=8)
    backbone = path.parent / f"{path.stem}-backbone" / BACKBONE
    assert convert(path, "-o", tmp_path / "out", "--no-token-dropout") == 0
    assert "num_attention_heads=8 from the width of the contact regression" in capsys.readouterr().err
    assert AutoConfig.from_pretrained(tmp_path / "out").num_attention_heads == 8
    # --kind rna-fm on a structure file reads its backbone on the backbone file too.
    original = read_original(path, kind="rna-fm", backbone=backbone)
    assert original.config.token_dropout is True and original.kind == "rna-fm"


def test_a_backbone_with_another_head_count_is_named_as_the_mismatch(structure_file, tmp_path, capsys):
    path, _ = structure_file
    other = write_original_checkpoint(tmp_path / "b10" / BACKBONE, embed_dim=40, heads=10)
    assert convert(path, "-o", tmp_path / "out", "--backbone", other) == 1
    err = capsys.readouterr().err
    assert "gives 10 attention heads, but the structure file's contact regression holds 40 weights" in err
    assert "damaged" not in err
