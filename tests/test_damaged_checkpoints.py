"""Damaged original files: each is refused with exit status 1 and one paragraph naming what is wrong; nothing
is written and no traceback is shown."""

from __future__ import annotations

import math

import pytest
import torch
from original_checkpoints import write_original_checkpoint, write_secondary_structure_checkpoint

from rnafm_hf.cli import main
from rnafm_hf.verification import ParityReport

LAYER = "encoder.sentence_encoder.layers.1"


def damaged(tmp_path, change) -> str:
    path = write_original_checkpoint(tmp_path / "RNA-FM_damaged.pth")
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)
    return str(path)


def set_tensor(key, value):
    def change(checkpoint):
        checkpoint["model"][key] = value(checkpoint["model"][key])

    return change


def set_arg(name, value):
    def change(checkpoint):
        setattr(checkpoint["args"], name, value)

    return change


def nan_at(tensor):
    tensor = tensor.clone()
    tensor.view(-1)[3] = math.nan
    return tensor


def inf_at(tensor):
    tensor = tensor.clone()
    tensor.view(-1)[0] = -math.inf
    return tensor


CASES = {
    "nan weight": (
        set_tensor(f"{LAYER}.fc1.weight", nan_at),
        "layers.1.fc1.weight holds 1 NaN or infinite value",
    ),
    "inf bias": (set_tensor(f"{LAYER}.fc2.bias", inf_at), "layers.1.fc2.bias holds 1 NaN or infinite value"),
    "transposed": (
        set_tensor(f"{LAYER}.fc1.weight", lambda t: t.T.contiguous()),
        "layers.1.fc1.weight has shape",
    ),
    "integer tensor": (
        set_tensor(f"{LAYER}.self_attn.k_proj.bias", lambda t: t.long()),
        "layers.1.self_attn.k_proj.bias holds torch.int64 numbers",
    ),
    "zero heads": (set_arg("encoder_attention_heads", 0), "encoder_attention_heads=0"),
    "fractional heads": (set_arg("encoder_attention_heads", 2.5), "encoder_attention_heads=2.5"),
    "heads as text": (set_arg("encoder_attention_heads", "4"), "encoder_attention_heads='4'"),
    "heads that do not divide": (
        set_arg("encoder_attention_heads", 5),
        "cannot be split into 5 attention heads",
    ),
    "absurd depth": (set_arg("encoder_layers", -3), "num_hidden_layers: args say -3, weights say 2"),
    "no arch": (lambda checkpoint: delattr(checkpoint["args"], "arch"), "training arguments lack arch"),
    "no max_positions": (
        lambda checkpoint: delattr(checkpoint["args"], "max_positions"),
        "training arguments lack max_positions",
    ),
    "args as a dict": (
        lambda checkpoint: checkpoint.update(args=vars(checkpoint["args"])),
        "training arguments are a dict, not the argparse.Namespace",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_damaged_file_is_refused_in_one_paragraph(tmp_path, capsys, case):
    change, message = CASES[case]
    path = damaged(tmp_path, change)
    assert main(["convert", path, "-o", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert message in captured.err, captured.err
    error = captured.err.split("rnafm-hf convert: error: ", 1)[1]
    assert "Traceback" not in captured.err and "\n\n" not in error.strip()
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_structure_head_with_nan_is_named_by_its_name_in_the_file(tmp_path, capsys):
    path = write_secondary_structure_checkpoint(tmp_path / "RNA-FM-ResNet_PDB-All.pth")
    state = torch.load(path, weights_only=True)
    key = "downstream_modules.pc-resnet_1_sym_first:r-ss.proj.resnet.4.conv1.weight"
    state[key] = nan_at(state[key])
    torch.save(state, path)
    assert main(["convert", str(path), "-o", str(tmp_path / "out"), "--no-verify"]) == 1
    assert f"{key} holds 1 NaN" in capsys.readouterr().err


def test_verification_treats_a_non_finite_difference_as_a_failure():
    """Python's max() keeps or drops a NaN depending on where it stands; the report must not."""
    for eager in ({"layer 0": math.nan, "logits": 0.0}, {"layer 0": 0.0, "logits": math.nan}):
        report = ParityReport(eager=eager, sdpa=eager, sequences=[("a", 3)], dtype="float32")
        assert math.isnan(report.worst) and not report.passed
        assert "FAIL" in report.to_text() and "PASS" not in report.to_text()
        assert "NaN or infinite" in report.to_markdown()
    reduced = ParityReport(eager={"logits": math.inf}, sdpa={"logits": 0.0}, sequences=[], dtype="bfloat16")
    assert not reduced.passed


def test_verification_fails_when_fm_side_is_not_finite(tmp_path, monkeypatch, capsys):
    """A run whose outputs go non-finite fails the check (the old running maximum dropped NaN: PASS 0.00e+00)."""
    from rnafm_hf import verification

    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    real = verification._max_diffs

    def with_nan(*args):
        diffs = real(*args)
        return {**diffs, "logits": math.nan}

    monkeypatch.setattr(verification, "_max_diffs", with_nan)
    assert main(["convert", str(path), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "FAIL: some outputs are NaN or infinite" in err and not (tmp_path / "out").exists()


def test_untied_lm_head_is_read_as_fm_computes_with_it(tmp_path, capsys):
    """fm's one tied parameter receives lm_head.weight last; a file whose two copies differ is read that way."""
    from original_checkpoints import load_with_fm
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    path = write_original_checkpoint(tmp_path / "RNA-FM_untied.pth")
    checkpoint = torch.load(path, weights_only=True)
    head = "encoder.lm_head.weight"
    checkpoint["model"][head] = checkpoint["model"][head] + 0.1 * torch.randn_like(checkpoint["model"][head])
    torch.save(checkpoint, path)
    assert main(["convert", str(path), "-o", str(tmp_path / "out")]) == 0
    assert "PASS" in capsys.readouterr().err
    original, alphabet = load_with_fm(path)
    _, _, ids = alphabet.get_batch_converter()([("a", "GGGAAACCCU"), ("b", "ACGUACGU")])
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    batch = AutoTokenizer.from_pretrained(tmp_path / "out")(
        ["GGGAAACCCU", "ACGUACGU"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = original(ids)["logits"]
        found = model(**batch).logits
    mask = batch["attention_mask"].bool()
    assert (found - expected).abs()[mask].max() <= 1e-5
