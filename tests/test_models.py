"""Model behaviour: Auto classes and round trips, attention backends, dtypes, training features, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import tiny_config
from original_checkpoints import write_original_checkpoint
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

import rnafm_hf
from rnafm_hf import (
    AutoModelForContactPrediction,
    RnaFmCodonTokenizer,
    RnaFmConfig,
    RnaFmForContactPrediction,
    RnaFmForMaskedLM,
    RnaFmModel,
    RnaFmTokenizer,
    load_original_checkpoint,
    read_original_checkpoint,
)

SEQUENCES = ["GGGUGCGAUCAUACCAGCACUAAUGCCCUCCUGGGAAGUCCUCGUGUUGCACCCCU", "acgt<mask>uu"]


@pytest.fixture(scope="module")
def tokenizer():
    return RnaFmTokenizer()


def test_config_presets():
    assert AutoConfig.for_model("rnafm").to_diff_dict() == RnaFmConfig().to_diff_dict()
    rna = RnaFmConfig()
    assert (rna.vocab_size, rna.hidden_size, rna.num_hidden_layers, rna.num_attention_heads) == (
        25,
        640,
        12,
        20,
    )
    assert (rna.intermediate_size, rna.max_position_embeddings, rna.layer_norm_eps) == (5120, 1026, 1e-5)
    assert rna.emb_layer_norm_before and rna.token_dropout and rna.tie_word_embeddings
    assert (rna.pad_token_id, rna.mask_token_id, rna.eos_token_id, rna.max_tokens) == (1, 24, 2, 1024)
    mrna = RnaFmConfig.mrna_fm()
    assert (mrna.vocab_size, mrna.hidden_size, mrna.emb_layer_norm_before, mrna.mask_token_id) == (
        73,
        1280,
        False,
        72,
    )
    assert RnaFmConfig.mrna_fm(num_hidden_layers=2).num_hidden_layers == 2
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        RnaFmConfig(hidden_size=30, num_attention_heads=4)


def test_issue_example_round_trips_through_auto_classes(saved_folder, tokenizer):
    tok = AutoTokenizer.from_pretrained(saved_folder)
    assert type(tok) is RnaFmTokenizer
    model = AutoModelForMaskedLM.from_pretrained(saved_folder).eval()
    assert type(model) is RnaFmForMaskedLM
    batch = tok(SEQUENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=True)
    reference = load_original_checkpoint(saved_folder.parent / "RNA-FM_tiny.pth")
    with torch.no_grad():
        expected = reference(**batch, output_hidden_states=True, output_attentions=True)
    assert torch.equal(out.logits, expected.logits)
    assert all(torch.equal(a, b) for a, b in zip(out.hidden_states, expected.hidden_states, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(out.attentions, expected.attentions, strict=True))


def test_tied_weight_is_stored_once(saved_folder):
    from safetensors import safe_open

    with safe_open(saved_folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "rnafm.embeddings.word_embeddings.weight" in keys and "lm_head.decoder.weight" not in keys
    model = AutoModelForMaskedLM.from_pretrained(saved_folder)
    assert model.lm_head.decoder.weight.data_ptr() == model.rnafm.embeddings.word_embeddings.weight.data_ptr()


def test_auto_model_and_contact_auto_class(saved_folder, tokenizer):
    base = AutoModel.from_pretrained(saved_folder).eval()
    assert type(base) is RnaFmModel
    contact = AutoModelForContactPrediction.from_pretrained(saved_folder).eval()
    assert type(contact) is RnaFmForContactPrediction
    batch = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        masked_lm = AutoModelForMaskedLM.from_pretrained(saved_folder).eval()
        assert torch.equal(
            base(**batch).last_hidden_state, masked_lm(**batch, output_hidden_states=True).hidden_states[-1]
        )
        assert contact(**batch).logits.shape == (2, 56, 56)


def test_loading_contact_model_warns_the_head_is_untrained(saved_folder):
    logger = logging.get_logger("rnafm_hf.modeling_rnafm")
    with CaptureLogger(logger) as captured:
        AutoModelForContactPrediction.from_pretrained(saved_folder)
    assert "never trained on contacts" in captured.out
    with CaptureLogger(logger) as captured:
        RnaFmForContactPrediction(tiny_config(contact_head_trained=True))
    assert captured.out == ""


@pytest.mark.slow
def test_tokenizer_loads_in_a_fresh_process(tmp_path):
    RnaFmCodonTokenizer().save_pretrained(tmp_path / "codon")
    RnaFmTokenizer().save_pretrained(tmp_path / "nucleotide")
    script = textwrap.dedent(
        f"""
        import rnafm_hf
        from transformers import AutoTokenizer
        for name, text in (("codon", "AUGGCCUAA"), ("nucleotide", "acgu")):
            tok = AutoTokenizer.from_pretrained({str(tmp_path)!r} + "/" + name)
            print(type(tok).__name__, tok(text)["input_ids"])
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.split("\n")[:2] == [
        "RnaFmCodonTokenizer [0, 13, 14, 66, 2]",
        "RnaFmTokenizer [0, 4, 5, 6, 7, 2]",
    ]


@pytest.mark.parametrize("model_class", [RnaFmModel, RnaFmForMaskedLM, RnaFmForContactPrediction])
def test_eager_and_sdpa_agree(model_class, tokenizer):
    torch.manual_seed(0)
    config = tiny_config(contact_head_trained=True)
    eager = model_class._from_config(config, attn_implementation="eager").eval()
    sdpa = model_class._from_config(config, attn_implementation="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    assert sdpa.config._attn_implementation == "sdpa"
    batch = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        a, b = eager(**batch, output_hidden_states=True), sdpa(**batch, output_hidden_states=True)
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        assert (x - y).abs().max() <= 1e-5
    assert (a[0] - b[0]).abs().max() <= 1e-5


def test_output_attentions_with_sdpa_falls_back_to_eager_math(tokenizer):
    model = RnaFmModel._from_config(tiny_config(), attn_implementation="sdpa").eval()
    batch = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 58, 58)
    real = batch["attention_mask"][1].bool()
    rows = out.attentions[1][1].sum(-1)  # (heads, T): 1 on real query rows, 0 on padding rows
    assert torch.allclose(rows[:, real], torch.ones_like(rows[:, real]), atol=1e-5)
    assert torch.all(rows[:, ~real] == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward(dtype, tokenizer):
    torch.manual_seed(0)
    model = RnaFmForMaskedLM(tiny_config()).eval()
    batch = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model(**batch).logits
        model.to(dtype)
        logits = model(**batch, output_attentions=True).logits
        fast = model(**batch).logits
    assert logits.dtype == dtype and torch.isfinite(logits).all()
    assert (logits.float() - reference).abs().max() < 0.1
    assert (fast.float() - reference).abs().max() < 0.1


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tokenizer):
    torch.manual_seed(0)
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    plain = RnaFmForMaskedLM(config).train()
    checkpointed = RnaFmForMaskedLM(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.activation_checkpointing_enable()
    assert checkpointed.is_activation_checkpointing
    batch = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    losses, grads = [], []
    for model in (plain, checkpointed):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(model.rnafm.encoder.layers[0].fc1.weight.grad)
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_contact_labels_give_masked_bce(tokenizer):
    torch.manual_seed(0)
    model = RnaFmForContactPrediction(tiny_config(contact_head_trained=True)).eval()
    batch = tokenizer(["GGGAAACCC", "ACGU"], padding=True, return_tensors="pt")
    labels = torch.randint(0, 2, (2, 9, 9))
    labels[0, 0, :] = -100
    with torch.no_grad():
        out = model(**batch, labels=labels)
    valid = labels != -100
    valid[1, 4:, :] = False  # beyond the 4 residues of the second sequence
    valid[1, :, 4:] = False
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits[valid], labels[valid].float())
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("token_dropout", [True, False])
def test_inputs_embeds_give_the_same_outputs_as_input_ids(tokenizer, token_dropout):
    """Without input_ids the contact head finds <cls>/<eos> by place; with them, by id. Both must agree, token
    dropout's rescaling included (no <mask> here, so none is missed by taking no embedding row as masked)."""
    torch.manual_seed(0)
    config = tiny_config(contact_head_trained=True, token_dropout=token_dropout)
    model = RnaFmForContactPrediction(config).eval()
    batch = tokenizer(["GGGAAACCC", "ACGU"], padding=True, return_tensors="pt")
    embeds = model.rnafm.get_input_embeddings()(batch["input_ids"])
    with torch.no_grad():
        by_ids = model(**batch, output_hidden_states=True)
        by_embeds = model(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"], output_hidden_states=True
        )
    assert torch.equal(by_ids.hidden_states[0], by_embeds.hidden_states[0])
    assert torch.allclose(by_ids.hidden_states[-1], by_embeds.hidden_states[-1], atol=1e-6)
    assert torch.allclose(by_ids.logits, by_embeds.logits, atol=1e-6)


def test_init_weights_are_small_and_finite():
    model = RnaFmForMaskedLM(tiny_config())
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
        assert param.abs().max() < 1.5, name
    assert torch.all(model.rnafm.embeddings.word_embeddings.weight[1] == 0)  # padding row
    assert torch.all(model.lm_head.bias == 0)


def test_too_long_input_is_refused_with_advice(tokenizer):
    model = RnaFmModel(tiny_config()).eval()
    batch = tokenizer("A" * 1100, return_tensors="pt")
    with pytest.raises(ValueError) as error:
        model(**batch)
    assert str(error.value) == (
        "The input has 1102 tokens, but RNA-FM's position table holds at most 1024 (1022 nucleotides plus <cls> and "
        "<eos>). Truncate with tokenizer(..., truncation=True), or split long sequences into windows."
    )
    with torch.no_grad():
        assert (
            model(**tokenizer("A" * 1100, truncation=True, return_tensors="pt")).last_hidden_state.shape[1]
            == 1024
        )


def test_reader_lists_unexpected_and_missing_keys(tmp_path):
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model"]["encoder.sentence_encoder.layers.0.extra.weight"] = torch.zeros(1)
    del checkpoint["model"]["encoder.sentence_encoder.layers.1.fc2.bias"]
    with pytest.raises(ValueError) as error:
        read_original_checkpoint(checkpoint)
    assert str(error.value) == (
        "The checkpoint does not match the RNA-FM architecture.\n"
        "  Missing keys (1): ['layers.1.fc2.bias']\n"
        "  Unexpected keys (1): ['layers.0.extra.weight']"
    )


def test_reader_refuses_other_files(tmp_path):
    with pytest.raises(ValueError, match="Not an original RNA-FM checkpoint"):
        read_original_checkpoint({"model_state": {"a": 1}})
    path = write_original_checkpoint(tmp_path / "RNA-FM_x.pth")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["args"].arch = "msa_transformer"
    with pytest.raises(ValueError, match="Unknown architecture 'msa_transformer'"):
        read_original_checkpoint(checkpoint)


def test_reader_zeroes_mask_row_and_reads_settings_from_the_file(tmp_path):
    path = write_original_checkpoint(
        tmp_path / "RNA-FM_x.pth", token_dropout=False, emb_layer_norm_before=False
    )
    config, state = read_original_checkpoint(path)
    assert not config.token_dropout and not config.emb_layer_norm_before
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (32, 2, 4)
    assert torch.all(state["rnafm.embeddings.word_embeddings.weight"][24] == 0)
    raw = torch.load(path, weights_only=True)["model"]["encoder.sentence_encoder.embed_tokens.weight"]
    assert raw[24].abs().sum() > 0  # the file itself is left as it was


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {_RunsCode.marker}",))


def test_reader_never_runs_pickled_code(tmp_path):
    _RunsCode.marker = tmp_path / "marker"
    path = tmp_path / "RNA-FM_evil.pth"
    torch.save({"args": _RunsCode(), "model": {}}, path)
    with pytest.raises(rnafm_hf.CheckpointError, match="Refused to load .*Nothing from it was executed"):
        read_original_checkpoint(path)
    assert not _RunsCode.marker.exists()


def test_package_exports():
    assert {"RnaFmConfig", "RnaFmTokenizer", "RnaFmCodonTokenizer", "AutoModelForContactPrediction"} <= set(
        rnafm_hf.__all__
    )
