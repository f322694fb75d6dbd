"""`rnafm-hf convert`: original files -> Hub-ready folders that reproduce fm, load with and without the package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from original_checkpoints import (
    SS_HEAD_NAME,
    load_with_fm,
    put_in_hub_cache,
    write_original_checkpoint,
    write_secondary_structure_checkpoint,
)
from safetensors import safe_open
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

import rnafm_hf
from rnafm_hf import conversion
from rnafm_hf.cli import main
from rnafm_hf.model_card import render_model_card
from rnafm_hf.verification import EXAMPLE_SEQUENCES, ParityReport

REPO = Path(__file__).resolve().parents[1]
SHORT_FASTA = ">short_a\nGGGUGCGAUCAUACCAGCACUAAUGCCCUCC\n>short_b\nAUGGCCAAAGGUUUCCCGGGACUGUAA\n"


def convert(*args: str) -> int:
    return main(["convert", *map(str, args)])


def folder_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def no_partial_output(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".partial-" in p.name]


def fm_outputs(path: Path, theme: str, sequences: list[str]):
    original, alphabet = load_with_fm(path, theme)
    _, _, tokens = alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(sequences)])
    with torch.no_grad():
        # fm's own attention math (see rnafm_hf.verification): deterministic, unlike its fused-MHA path.
        return original(tokens, repr_layers=list(range(original.num_layers + 1)), need_head_weights=True)


def assert_folder_matches_fm(folder: Path, path: Path, theme: str, sequences: list[str]) -> None:
    """Independent of the converter's own check: the folder through the Auto classes against fm's loader."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    expected = fm_outputs(path, theme, sequences)
    with torch.no_grad():
        ours = model(**batch, output_hidden_states=True)
    mask = batch["attention_mask"].bool()
    for i, hidden in enumerate(ours.hidden_states):
        assert (hidden - expected["representations"][i]).abs()[mask].max() <= 1e-5, f"layer {i}"
    assert (ours.logits - expected["logits"]).abs()[mask].max() <= 1e-5


@pytest.mark.parametrize("prefix", ["sentence_encoder", "encoder_encoder"])
def test_tiny_rna_fm_round_trip(tmp_path, prefix, capsys):
    path = write_original_checkpoint(tmp_path / "RNA-FM_tiny.pth", prefix=prefix, layers=3, seed=1)
    assert convert(path, "--output", tmp_path / "out") == 0
    folder = tmp_path / "out"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} | set(
        conversion.REMOTE_CODE_FILES
    ) <= folder_files(folder)
    report = capsys.readouterr().err
    assert re.search(r"layer 3 +0\.00e\+00", report) and "PASS" in report
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["RnaFmForMaskedLM"]
    assert config["auto_map"]["AutoModel"] == "modeling_rnafm.RnaFmModel"
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["auto_map"]["AutoTokenizer"][1] == "tokenization_rnafm.RnaFmTokenizer"
    with safe_open(folder / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    assert "rnafm.embeddings.word_embeddings.weight" in keys and "lm_head.decoder.weight" not in keys
    assert_folder_matches_fm(folder, path, "rna", [s for _, s in EXAMPLE_SEQUENCES])


def test_tiny_mrna_fm_round_trip(tmp_path):
    path = write_original_checkpoint(
        tmp_path / "mRNA-FM_tiny.pth", theme="rna-3mer", emb_layer_norm_before=False, prefix="encoder_encoder"
    )
    assert convert(path, "--output", tmp_path / "mrna") == 0
    assert json.loads((tmp_path / "mrna" / "config.json").read_text())["vocab_size"] == 73
    assert type(AutoTokenizer.from_pretrained(tmp_path / "mrna")).__name__ == "RnaFmCodonTokenizer"
    assert_folder_matches_fm(tmp_path / "mrna", path, "rna-3mer", ["AUGGCCAAAUAA", "AUGUUUGGCCCGUAA"])


def test_default_folder_names_let_auto_classes_load_by_name(tmp_path, monkeypatch):
    rna = write_original_checkpoint(tmp_path / "RNA-FM_a.pth")
    codon = write_original_checkpoint(
        tmp_path / "mRNA-FM_b.pth", theme="rna-3mer", emb_layer_norm_before=False
    )
    structure = write_secondary_structure_checkpoint(tmp_path / "ss.pth")
    monkeypatch.chdir(tmp_path)
    for path in (rna, codon, structure):
        assert convert(path, "--no-verify") == 0
    assert {"rna-fm", "mrna-fm", "rna-fm-ss"} <= folder_files(tmp_path)
    model = AutoModel.from_pretrained("rna-fm")
    assert isinstance(model, rnafm_hf.RnaFmModel) and model.config.hidden_size == 32
    assert AutoModel.from_pretrained("mrna-fm").config.vocab_size == 73


def test_secondary_structure_file_converts_whole_and_is_verified_on_probabilities(tmp_path, capsys):
    path = write_secondary_structure_checkpoint(tmp_path / "RNA-FM-ResNet_PDB-All.pth")
    raw = torch.load(path, weights_only=True)
    assert convert(path, "--output", tmp_path / "ss") == 0
    err = capsys.readouterr().err
    assert "Found rna-fm-ss" in err and "PASS" in err and "left out" not in err
    # The eager path reproduces fm's head bit for bit; SDPA's backbone sums in another order.
    assert re.search(r"pair probabilities +0\.00e\+00 +\d\.\d\de-0[6-9]", err)
    model = rnafm_hf.AutoModelForContactPrediction.from_pretrained(tmp_path / "ss")
    assert isinstance(model, rnafm_hf.RnaFmForSecondaryStructure)
    assert model.config.architectures == ["RnaFmForSecondaryStructure"] and model.config.ss_head_blocks == 32
    head = f"downstream_modules.{SS_HEAD_NAME}.proj"
    assert torch.equal(model.ss_head.blocks[31].bn1.running_var, raw[f"{head}.resnet.31.bn1.running_var"])
    assert torch.equal(model.ss_head.blocks[2].conv2.weight, raw[f"{head}.resnet.2.conv2.weight"])
    assert model.ss_head.blocks[2].conv2.dilation == (4, 4)
    # The same folder gives the encoder with its MLM head, and the (untrained) contact regression.
    masked_lm = AutoModelForMaskedLM.from_pretrained(tmp_path / "ss")
    assert torch.equal(masked_lm.lm_head.dense.weight, raw["backbone.lm_head.dense.weight"])
    contact = rnafm_hf.RnaFmForContactPrediction.from_pretrained(tmp_path / "ss")
    assert torch.equal(contact.contact_head.regression.weight, raw["backbone.contact_head.regression.weight"])
    backbone = AutoModel.from_pretrained(tmp_path / "ss")
    assert torch.equal(backbone.encoder.layers[1].fc2.weight, raw["backbone.layers.1.fc2.weight"])
    card = ModelCard.load(tmp_path / "ss" / "README.md")
    assert card.data.base_model == "cuhkaih/rnafm" and card.data.pipeline_tag == "other"
    assert re.search(r"\| pair probabilities \| 0\.00e\+00 \| \d\.\d\de-0[6-9] \|", card.text)


def test_damaged_secondary_structure_head_is_refused(tmp_path, capsys):
    path = write_secondary_structure_checkpoint(tmp_path / "ss.pth")
    state = torch.load(path, weights_only=True)
    del state[f"downstream_modules.{SS_HEAD_NAME}.proj.resnet.7.conv1.weight"]
    torch.save(state, path)
    assert convert(path, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "secondary-structure head" in err and "proj.resnet.7.conv1.weight" in err
    renamed = {k.replace(SS_HEAD_NAME, "pc-resnet_2_asym_first:r-ss"): v for k, v in state.items()}
    torch.save(renamed, path)
    assert convert(path, "-o", tmp_path / "out") == 1
    assert "pc-resnet_2_asym_first:r-ss" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bare_state_dict_needs_and_takes_the_head_count(tmp_path, capsys):
    path = write_original_checkpoint(tmp_path / "bare.pth", prefix="bare", token_dropout=True)
    assert convert(path, "-o", tmp_path / "a") == 1
    assert "pass --num-attention-heads N" in capsys.readouterr().err  # the command speaks in flags
    assert convert(path, "-o", tmp_path / "b", "--num-attention-heads", "4", "--token-dropout") == 0
    assert "PASS" in capsys.readouterr().err
    assert AutoModel.from_pretrained(tmp_path / "b").config.num_attention_heads == 4


def test_kind_overrides_detection(tmp_path, capsys):
    structure = write_secondary_structure_checkpoint(tmp_path / "ss.pth")
    rna = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    assert convert(structure, "--kind", "rna-fm", "-o", tmp_path / "backbone", "--no-verify") == 0
    assert "Found rna-fm:" in capsys.readouterr().err
    assert convert(rna, "--kind", "mrna-fm", "-o", tmp_path / "wrong") == 1
    assert "kind 'mrna-fm' was requested, but the checkpoint's token embedding has 25 rows" in (
        capsys.readouterr().err
    )
    assert convert(rna, "--kind", "rna-fm-ss", "-o", tmp_path / "wrong") == 1
    assert "no secondary-structure head" in capsys.readouterr().err
    assert not (tmp_path / "wrong").exists()


def test_bfloat16_folder(tmp_path, capsys):
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    assert convert(path, "-o", tmp_path / "bf16", "--dtype", "bfloat16") == 0
    assert "bfloat16 weights; the tolerance applies to float32" in capsys.readouterr().err
    with safe_open(tmp_path / "bf16" / "model.safetensors", "pt") as weights:
        assert weights.get_tensor("rnafm.encoder.layers.0.fc1.weight").dtype == torch.bfloat16
    original = torch.load(path, weights_only=True)["model"]["encoder.sentence_encoder.layers.0.fc1.weight"]
    model = AutoModel.from_pretrained(tmp_path / "bf16")
    assert torch.equal(model.encoder.layers[0].fc1.weight, original.to(torch.bfloat16))


def test_verify_fasta_is_used_and_recorded_in_the_card(tmp_path):
    fasta = tmp_path / "short.fasta"
    fasta.write_text(SHORT_FASTA)
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    assert convert(path, "-o", tmp_path / "out", "--verify-fasta", fasta) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "`short_a` (31 nt), `short_b` (27 nt)" in card
    assert re.search(r"\| logits \| 0\.00e\+00 \| \d\.\d\de-0\d \|", card)
    assert f"rna-fm {torch.__version__}" not in card and "rna-fm 0.2.2" in card


def test_parity_failure_exits_non_zero_and_writes_nothing(tmp_path, monkeypatch, capsys):
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")

    def tampered_build(original, model_class=None):
        model = rnafm_hf.original_checkpoint.build_model(original, model_class)
        with torch.no_grad():
            bias = model.rnafm.encoder.layers[0].fc2.bias
            bias.add_(torch.linspace(-1e-3, 1e-3, bias.numel()))  # not uniform: a LayerNorm would hide that
        return model

    monkeypatch.setattr(conversion, "build_model", tampered_build)
    assert convert(path, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "FAIL" in err and "verification failed" in err and "no folder was written" in err
    assert not (tmp_path / "out").exists() and no_partial_output(tmp_path)


class _WritesMarker:
    marker: Path

    def __reduce__(self):
        return (Path.write_text, (_WritesMarker.marker, "code ran"))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, capsys):
    _WritesMarker.marker = tmp_path / "marker"
    path = tmp_path / "RNA-FM_pretrained.pth"
    torch.save({"args": _WritesMarker(), "model": {"embed_tokens.weight": torch.zeros(25, 8)}}, path)
    assert convert(path, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "Refused to load" in err and "Nothing from it was executed" in err
    assert not _WritesMarker.marker.exists()
    assert not (tmp_path / "out").exists() and no_partial_output(tmp_path)


def test_wrong_files_fail_clearly_without_output(tmp_path, capsys):
    truncated = tmp_path / "truncated.pth"
    data = write_original_checkpoint(tmp_path / "RNA-FM_ok.pth").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert convert(truncated, "-o", tmp_path / "out") == 1
    assert "may be truncated" in capsys.readouterr().err

    stranger = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(10)}, stranger)
    assert convert(stranger, "-o", tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "does not match the RNA-FM architecture" in err
    assert "Missing keys (204): ['emb_layer_norm_after.bias', 'emb_layer_norm_after.weight'," in err
    assert "'embed_tokens.weight'" in err and "and 184 more" in err
    assert "Unexpected keys (2): ['conv1.weight', 'fc.bias']" in err

    assert convert(tmp_path / "absent.pth", "-o", tmp_path / "out") == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and no_partial_output(tmp_path)


def test_existing_output_needs_overwrite_and_only_replaces_converted_folders(tmp_path, monkeypatch, capsys):
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    assert convert(path, "-o", tmp_path / "out", "--no-verify") == 0
    assert convert(path, "-o", tmp_path / "out", "--no-verify") == 1
    assert "already exists and is not empty" in capsys.readouterr().err
    (tmp_path / "out" / "notes.txt").write_text("the user's, kept")
    assert convert(path, "-o", tmp_path / "out", "--no-verify", "--overwrite") == 0
    assert (tmp_path / "out" / "notes.txt").read_text() == "the user's, kept" and no_partial_output(tmp_path)
    assert "verification skipped with --no-verify" in (tmp_path / "out" / "README.md").read_text()

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "afile").write_text("keep")
    monkeypatch.chdir(tmp_path)
    refusals = {
        "mine": "not written by rnafm-hf convert",
        "afile": "exists and is not a folder",
        ".": "is the working folder or above it",
        "..": "is the working folder or above it",
    }
    for output, message in refusals.items():
        assert convert(path, "-o", output, "--no-verify", "--overwrite") == 1
        assert message in capsys.readouterr().err
    assert convert(path, "-o", "sub", "--no-verify") == 0  # a folder convert wrote, the checkpoint put in it
    inner = write_original_checkpoint(tmp_path / "sub" / "RNA-FM_y.pth")
    assert convert(inner, "-o", "sub", "--no-verify", "--overwrite") == 1
    assert "holds the checkpoint" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").exists() and (tmp_path / "afile").exists() and inner.exists()


def test_failure_removes_the_folders_it_created(tmp_path, capsys):
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    (tmp_path / "empty.fasta").write_text("")
    assert (
        convert(path, "-o", tmp_path / "new" / "deeper" / "out", "--verify-fasta", tmp_path / "empty.fasta")
        == 1
    )
    assert "holds no records" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_without_fm_the_folder_is_written_unverified_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fm", None)  # as if the original package were not installed
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    assert convert(path, "-o", tmp_path / "out") == 0
    assert "Not verified: the original `fm` package was not installed" in capsys.readouterr().err
    assert "Not measured when this folder was written" in (tmp_path / "out" / "README.md").read_text()
    assert convert(path, "-o", tmp_path / "again", "--verify") == 1
    assert "Verification was requested but `fm` is not installed" in capsys.readouterr().err


def test_contradictory_and_pointless_options_are_refused(tmp_path, capsys):
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth", token_dropout=True)
    assert convert(path, "-o", tmp_path / "out", "--no-token-dropout") == 1
    assert "token_dropout=False (the file says True)" in capsys.readouterr().err
    (tmp_path / "v.fasta").write_text(SHORT_FASTA)
    assert convert(path, "-o", tmp_path / "out", "--no-verify", "--verify-fasta", tmp_path / "v.fasta") == 1
    assert "--no-verify skips verification" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_codon_verification_says_when_it_trims(tmp_path, capsys):
    path = write_original_checkpoint(tmp_path / "m.pth", theme="rna-3mer", emb_layer_norm_before=False)
    (tmp_path / "v.fasta").write_text(">eleven\nAUGGCCAAAUA\n")
    assert convert(path, "-o", tmp_path / "out", "--verify-fasta", tmp_path / "v.fasta") == 0
    assert "Verifying 'eleven' on its first 3 whole codons (11 nt given)." in capsys.readouterr().err


def test_odd_files_get_clear_messages(tmp_path, capsys):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    assert convert(tmp_path / "list.pth", "-o", tmp_path / "out") == 1
    assert "the file holds a list" in capsys.readouterr().err
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "stranger.pth")
    assert convert(tmp_path / "stranger.pth", "--kind", "rna-fm", "-o", tmp_path / "out") == 1
    assert "Unexpected keys (1): ['conv.weight']" in capsys.readouterr().err
    raw = torch.load(write_secondary_structure_checkpoint(tmp_path / "ss.pth"), weights_only=True)
    torch.save({k: v for k, v in raw.items() if k.startswith("backbone.")}, tmp_path / "backbone.pth")
    assert convert(tmp_path / "backbone.pth", "-o", tmp_path / "out") == 0
    assert "without a secondary-structure head (downstream_modules.*); it was read as plain RNA-FM" in (
        capsys.readouterr().err
    )


class FakeHub:
    """Stands in for `huggingface_hub.HfApi`: records what would be sent, optionally fails the upload."""

    calls: list = []
    fail_upload = False

    def __init__(self, token=None):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs | {"files": sorted(os.listdir(kwargs["folder_path"]))}))
        if self.fail_upload:
            raise ConnectionError("network unreachable")
        return type(
            "CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"}
        )()


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeHub.calls, FakeHub.fail_upload = [], False
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    return FakeHub


def test_push_to_hub_sends_the_folder_with_the_given_arguments(tmp_path, fake_hub, capsys):
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    code = convert(
        path, "-o", tmp_path / "rna-fm", "--no-verify", "--push-to-hub", "me/rna-fm", "--private",
        "--revision", "v1", "--commit-message", "RNA-FM weights",
    )  # fmt: skip
    assert code == 0
    calls = dict(fake_hub.calls)
    assert calls["create_repo"] == {
        "repo_id": "me/rna-fm",
        "repo_type": "model",
        "private": True,
        "exist_ok": True,
    }
    assert calls["create_branch"] == {
        "repo_id": "me/rna-fm",
        "branch": "v1",
        "repo_type": "model",
        "exist_ok": True,
    }
    upload = calls["upload_folder"]
    assert upload["folder_path"] == tmp_path / "rna-fm" and upload["repo_id"] == "me/rna-fm"
    assert (upload["revision"], upload["commit_message"]) == ("v1", "RNA-FM weights")
    assert upload["files"] == sorted(folder_files(tmp_path / "rna-fm"))
    assert "Published: https://huggingface.co/me/rna-fm/commit/abc" in capsys.readouterr().out
    # The card published with it names the Hub repo in its code.
    assert (
        'AutoModel.from_pretrained("me/rna-fm", trust_remote_code=True)'
        in (tmp_path / "rna-fm" / "README.md").read_text()
    )


def test_failed_upload_keeps_the_folder_and_says_how_to_retry(tmp_path, fake_hub, capsys):
    fake_hub.fail_upload = True
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    assert convert(path, "-o", tmp_path / "rna-fm", "--no-verify", "--push-to-hub", "me/rna-fm") == 1
    err = capsys.readouterr().err
    assert "ConnectionError: network unreachable" in err
    assert f"Retry with: rnafm-hf push {tmp_path / 'rna-fm'} me/rna-fm" in err
    assert AutoModel.from_pretrained(tmp_path / "rna-fm").config.num_hidden_layers == 2
    fake_hub.fail_upload = False
    assert main(["push", str(tmp_path / "rna-fm"), "me/rna-fm"]) == 0


def test_push_points_the_card_at_the_repo(tmp_path, fake_hub, capsys):
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    assert convert(path, "-o", tmp_path / "rna-fm", "--no-verify") == 0
    card = tmp_path / "rna-fm" / "README.md"
    assert 'from_pretrained("rna-fm", trust_remote_code=True)' in card.read_text()
    assert main(["push", str(tmp_path / "rna-fm"), "me/rna-fm-v2"]) == 0
    assert "now loads 'me/rna-fm-v2'" in capsys.readouterr().err
    assert 'from_pretrained("me/rna-fm-v2", trust_remote_code=True)' in card.read_text()
    assert 'from_pretrained("rna-fm"' not in card.read_text()


@pytest.mark.slow
def test_hf_path_is_resolved_from_the_offline_cache_by_the_console_command(tmp_path):
    source = write_original_checkpoint(tmp_path / "src.pth")
    put_in_hub_cache(tmp_path / "cache", "cuhkaih/rnafm", "RNA-FM_pretrained.pth", source)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    command = ["rnafm-hf", "convert", "hf://cuhkaih/rnafm/RNA-FM_pretrained.pth", "--no-verify"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Wrote rna-fm (rna-fm, float32" in done.stdout
    missing = subprocess.run(
        ["rnafm-hf", "convert", "hf://cuhkaih/rnafm/absent.pth"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert missing.returncode == 1 and "Could not get hf://cuhkaih/rnafm/absent.pth" in missing.stderr


def test_hf_path_revision_and_form(tmp_path, monkeypatch):
    import huggingface_hub

    from rnafm_hf.hub import parse_hf_path, resolve_checkpoint

    source = write_original_checkpoint(tmp_path / "src.pth")
    put_in_hub_cache(tmp_path / "cache", "cuhkaih/rnafm", "w/RNA-FM_pretrained.pth", source, revision="v1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    resolved = resolve_checkpoint("hf://cuhkaih/rnafm@v1/w/RNA-FM_pretrained.pth")
    assert resolved.read_bytes() == source.read_bytes()
    with pytest.raises(FileNotFoundError, match="at revision v2"):
        resolve_checkpoint("hf://cuhkaih/rnafm@v2/w/RNA-FM_pretrained.pth")
    for bad in ("hf://cuhkaih/rnafm", "hf://datasets/o/r/f.pth", "hf://o/r@/f.pth", "hf://o/r/dir/"):
        with pytest.raises(ValueError, match="hf://OWNER/REPO/FILE"):
            parse_hf_path(bad)


@pytest.mark.slow
def test_conversion_script_is_the_same_program(tmp_path):
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    script = REPO / "conversion" / "convert_original_to_hf.py"
    done = subprocess.run(
        [sys.executable, str(script), str(path), "--output", str(tmp_path / "out"), "--no-verify"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Wrote" in done.stdout and (tmp_path / "out" / "model.safetensors").exists()


WITHOUT_PACKAGE = """
import sys
sys.modules["rnafm_hf"] = None  # as if rnafm-hf were not installed
try:
    import rnafm_hf
except ImportError:
    pass
else:
    raise SystemExit("rnafm_hf is importable")
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

folder = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
assert type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__ == "RnaFmConfig"
assert type(AutoModel.from_pretrained(folder, trust_remote_code=True)).__name__ == "RnaFmModel"
# Fine-tuning heads come with the folder's code too, and only the new head starts from scratch.
for auto, name in (
    (AutoModelForSequenceClassification, "RnaFmForSequenceClassification"),
    (AutoModelForTokenClassification, "RnaFmForTokenClassification"),
):
    head, info = auto.from_pretrained(folder, trust_remote_code=True, num_labels=2, output_loading_info=True)
    assert type(head).__name__ == name, type(head)
    assert info["missing_keys"] and all(key.startswith("classifier.") for key in info["missing_keys"]), info
batch = tokenizer(sys.argv[2].split(","), padding=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits
expected = torch.load(sys.argv[3])
assert torch.equal(batch["input_ids"], expected["input_ids"]), (batch["input_ids"], expected["input_ids"])
print("max abs diff", (logits - expected["logits"]).abs().max().item())
assert (logits - expected["logits"]).abs().max() <= 1e-6
"""


def run_without_package(tmp_path: Path, script: str, *args: str) -> str:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("kind", ["rna-fm", "mrna-fm", "rna-fm-ss"])
@pytest.mark.slow
def test_folder_loads_without_the_package_and_its_card_code_runs(tmp_path, kind):
    if kind == "rna-fm":
        path, sequences = write_original_checkpoint(tmp_path / "x.pth"), ["ACGUAGGCU", "GGGAAAUCC<mask>C"]
    elif kind == "rna-fm-ss":
        path, sequences = write_secondary_structure_checkpoint(tmp_path / "x.pth"), ["ACGUAGGCU", "GGGAAAUC"]
    else:
        path = write_original_checkpoint(tmp_path / "x.pth", theme="rna-3mer", emb_layer_norm_before=False)
        sequences = ["AUGGCCUAA", "AUGAAA<mask>GGGUUU"]
    folder = tmp_path / kind
    assert convert(path, "-o", folder, "--no-verify") == 0
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(sequences, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = AutoModelForMaskedLM.from_pretrained(folder).eval()(**batch).logits
    torch.save({"input_ids": batch["input_ids"], "logits": logits}, tmp_path / "expected.pt")
    run_without_package(
        tmp_path, WITHOUT_PACKAGE, str(folder), ",".join(sequences), str(tmp_path / "expected.pt")
    )

    card_code = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)
    # The last block needs no rnafm-hf; the secondary-structure card first shows the pipeline, which does.
    assert len(card_code) == (2 if kind == "rna-fm-ss" else 1)
    assert f'from_pretrained("{kind}", trust_remote_code=True)' in card_code[-1]
    output = run_without_package(tmp_path, "import sys\nsys.modules['rnafm_hf'] = None\n" + card_code[-1])
    expected = {"rna-fm": "[(56, 32), (22, 32)]", "mrna-fm": "[(9, 32), (4, 32)]", "rna-fm-ss": "(56, 56)"}
    assert output.strip() == expected[kind]
    if kind == "rna-fm-ss":
        done = subprocess.run(
            [sys.executable, "-c", card_code[0]], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0 and done.stdout.strip() == "56", done.stderr


@pytest.mark.parametrize("kind", ["rna-fm", "mrna-fm", "rna-fm-ss"])
def test_model_card_templates(kind):
    report = ParityReport(
        eager={"layer 0": 0.0, "logits": 2e-6}, sdpa={"layer 0": 0.0, "logits": 8e-6}, sequences=[("a", 10)],
        dtype="float32",
    )  # fmt: skip
    text = render_model_card(kind, "me/model", report=report, source="`file.pth`")
    assert "${" not in text and 'from_pretrained("me/model", trust_remote_code=True)' in text
    card = ModelCard(text)
    assert (card.data.license, card.data.library_name, card.data.pipeline_tag) == (
        "mit",
        "transformers",
        "other" if kind == "rna-fm-ss" else "feature-extraction",
    )
    assert "rna" in card.data.tags
    for section in (
        "## Training data",
        "## Intended uses and limits",
        "## How to use",
        "## Parity",
        "## Citation",
    ):
        assert section in text
    assert "| logits | 2.00e-06 | 8.00e-06 |" in text and "@article{chen2022interpretable" in text
    assert "1022" in text and "never trained" in text
    assert (REPO / "model_cards" / f"{kind}.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("which", ["rna-fm", "mrna-fm"])
def test_full_size_round_trip(tmp_path, which, full_rna_fm_checkpoint, full_mrna_fm_checkpoint, capsys):
    path = full_rna_fm_checkpoint if which == "rna-fm" else full_mrna_fm_checkpoint
    fasta = tmp_path / "short.fasta"
    fasta.write_text(SHORT_FASTA)
    assert convert(path, "-o", tmp_path / which, "--verify-fasta", fasta) == 0
    err = capsys.readouterr().err
    print(err)
    assert "layer 12" in err and "PASS" in err
    size = sum(f.stat().st_size for f in (tmp_path / which).iterdir())
    assert size < path.stat().st_size * 1.02  # the tied embedding is stored once, nothing duplicated
    theme, sequences = (
        ("rna", ["GGGUGCGAUCAUACCAGC"]) if which == "rna-fm" else ("rna-3mer", ["AUGGCCAAAUAA"])
    )
    assert_folder_matches_fm(tmp_path / which, path, theme, sequences)


def test_readme_documents_conversion():
    readme = (REPO / "README.md").read_text()
    assert "rnafm-hf convert" in readme and "--push-to-hub" in readme
    assert "conversion/convert_original_to_hf.py" in readme


def test_to_original_checkpoint_is_read_back_by_fm(tmp_path):
    model = rnafm_hf.RnaFmForMaskedLM(rnafm_hf.RnaFmConfig(num_hidden_layers=2, hidden_size=40)).eval()
    with torch.no_grad():
        model.rnafm.embeddings.word_embeddings.weight[24].zero_()  # fm zeroes the <mask> row when it loads
    path = tmp_path / "RNA-FM_exported.pth"
    torch.save(rnafm_hf.original_checkpoint.to_original_checkpoint(model), path)
    sequences = ["GGGUGCGAUCAUACC", "ACGUN"]
    batch = rnafm_hf.RnaFmTokenizer()(sequences, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(**batch).logits
    assert (ours - fm_outputs(path, "rna", sequences)["logits"]).abs().max() <= 1e-5
