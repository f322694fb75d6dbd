"""Silent defects of the model classes (issue 19): packed (padding-free) batches reach the backbone through every
head or are refused, no head returns NaN for an empty sequence, and returned attention maps are the tensors the
layers used, gradient included."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_STRUCTURE, tiny_config
from transformers import DataCollatorWithFlattening

from rnafm_hf import (
    RnaFmForContactPrediction,
    RnaFmForMaskedLM,
    RnaFmForSecondaryStructure,
    RnaFmForSequenceClassification,
    RnaFmForTokenClassification,
    RnaFmModel,
    RnaFmTokenizer,
)

SEQUENCES = ["GGGUGCGAUCAUACCAGCAC", "AC<mask>U", "UUAGC<mask><mask>GAUA", "G"]
# What DataCollatorWithFlattening can send: its default (0-based position ids only), sequence bounds with and
# without those position ids, position ids counted as RNA-FM counts them, and sequence indices.
FLATTENINGS = {
    "default": {},
    "bounds and position ids": {"return_flash_attn_kwargs": True},
    "bounds only": {"return_flash_attn_kwargs": True, "return_position_ids": False},
    "position ids from 2": {"position_ids_start": 2},
    "sequence indices only": {"return_seq_idx": True, "return_position_ids": False},
}
HEADS = {
    "masked LM": (RnaFmForMaskedLM, {}),
    "token classification": (RnaFmForTokenClassification, {"num_labels": 2}),
    "sequence classification": (RnaFmForSequenceClassification, {"num_labels": 3}),
    "contact prediction": (RnaFmForContactPrediction, {"contact_head_trained": True}),
    "secondary structure": (RnaFmForSecondaryStructure, TINY_STRUCTURE),
}


@pytest.fixture(scope="module")
def tokenizer() -> RnaFmTokenizer:
    return RnaFmTokenizer()


def tiny_head(name: str):
    model_class, overrides = HEADS[name]
    torch.manual_seed(0)
    return model_class(tiny_config(**overrides)).eval()


def token_labels(tokenizer, sequence: str) -> list[int]:
    return [-100 if i is None else i % 2 for i in tokenizer(sequence).word_ids()]


def features(tokenizer, head: str) -> list[dict]:
    """Tokenized sequences as a dataset holds them; token classification carries its labels."""
    rows = [dict(tokenizer(sequence)) for sequence in SEQUENCES]
    if head == "token classification":
        for row, sequence in zip(rows, SEQUENCES, strict=True):
            row["labels"] = token_labels(tokenizer, sequence)
    return rows


def padded_labels(rows: list[list[int]]) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [-100] * (width - len(row)) for row in rows])


@pytest.mark.parametrize("flattening", FLATTENINGS)
@pytest.mark.parametrize("head", ["masked LM", "token classification"])
def test_per_token_heads_give_per_sequence_results_on_flattened_batches(tokenizer, head, flattening):
    model = tiny_head(head)
    batch = DataCollatorWithFlattening(**FLATTENINGS[flattening])(features(tokenizer, head))
    # The collator's labels (-100 on each sequence's first token, then the token ids for masked LM), padded.
    lengths = [len(row["input_ids"]) for row in features(tokenizer, head)]
    labels = [row.tolist() for row in batch["labels"][0].split(lengths)]
    padded = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        packed = model(**batch)
        alone = [model(**tokenizer([s], return_tensors="pt")).logits[0] for s in SEQUENCES]
        expected_loss = model(**padded, labels=padded_labels(labels)).loss
    torch.testing.assert_close(packed.logits[0], torch.cat(alone), atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.loss, expected_loss, atol=1e-5, rtol=0)


def test_token_labels_of_packed_embeddings_skip_the_specials_of_each_sequence(tokenizer):
    """Without input_ids, <cls> and <eos> are found by place: in each packed sequence, not only at the row's ends."""
    torch.manual_seed(0)
    model = RnaFmForTokenClassification(tiny_config(num_labels=2, token_dropout=False)).eval()
    batch = DataCollatorWithFlattening(return_flash_attn_kwargs=True)(
        features(tokenizer, "token classification")
    )
    batch["labels"] = batch["labels"].masked_fill(
        batch["labels"] == -100, 1
    )  # labels on the specials: ignored
    input_ids = batch.pop("input_ids")
    with torch.no_grad():
        expected = model(**batch, input_ids=input_ids).loss
        found = model(**batch, inputs_embeds=model.get_input_embeddings()(input_ids)).loss
    torch.testing.assert_close(found, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("flattening", ["default", "bounds and position ids", "sequence indices only"])
@pytest.mark.parametrize("head", ["sequence classification", "contact prediction", "secondary structure"])
def test_pooling_and_pair_heads_refuse_flattened_batches(tokenizer, head, flattening):
    model = tiny_head(head)
    batch = DataCollatorWithFlattening(**FLATTENINGS[flattening])(features(tokenizer, head))
    batch.pop("labels")  # the collator cannot flatten per-sequence or per-pair labels anyway
    with pytest.raises(ValueError, match=f"{type(model).__name__} takes padded batches.*DataCollatorWith"):
        model(**batch)


@pytest.mark.parametrize("head", HEADS)
def test_a_flattened_batch_of_one_sequence_is_that_sequence(tokenizer, head):
    """Trainer's last batch may hold one sequence: 0-based position ids in one row, with no restart to see."""
    model = tiny_head(head)
    batch = DataCollatorWithFlattening()([dict(tokenizer(SEQUENCES[0]))])
    batch.pop("labels")
    with torch.no_grad():
        found = model(**batch).logits
        expected = model(**tokenizer(SEQUENCES[:1], return_tensors="pt")).logits
    torch.testing.assert_close(found, expected, atol=1e-6, rtol=0)


def test_position_ids_outside_rna_fms_numbering_are_refused(tokenizer):
    """RNA-FM counts positions from padding_idx + 1 (the original's numbers); 0-based ones would shift them all."""
    torch.manual_seed(0)
    model = RnaFmModel(tiny_config()).eval()
    padded = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    width = padded["input_ids"].shape[1]
    with pytest.raises(ValueError, match="position_ids start at 0.*padding_idx \\+ 1 = 2"):
        model(**padded, position_ids=torch.arange(width).expand(len(SEQUENCES), -1))
    ids = torch.ones(1, 6, dtype=torch.long) * 4
    with pytest.raises(ValueError, match="restart"):
        model(input_ids=ids, position_ids=torch.tensor([[0, 1, 2, 0, 1, 5]]))
    with pytest.raises(ValueError, match="cu_seq_lens_q"):
        model(
            input_ids=ids,
            position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]]),
            cu_seq_lens_q=torch.tensor([0, 2, 6]),
        )
    with torch.no_grad():  # RNA-FM's own numbers given explicitly are taken as they are
        own = model(**padded).last_hidden_state
        given = model(
            **padded, position_ids=2 + torch.arange(width).expand(len(SEQUENCES), -1)
        ).last_hidden_state
    mask = padded["attention_mask"].bool()
    torch.testing.assert_close(given[mask], own[mask], atol=0, rtol=0)


@pytest.mark.parametrize("sequences", [["", "GGGAAACCC"], [""]], ids=["with others", "alone"])
@pytest.mark.parametrize("head", HEADS)
def test_no_head_returns_nan_for_an_empty_sequence(tokenizer, head, sequences):
    model = tiny_head(head).train()
    with pytest.warns(UserWarning, match="empty"):
        batch = tokenizer(sequences, padding=True, return_tensors="pt")
    logits = model(**batch).logits
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), name


def test_empty_sequence_leaves_the_other_contact_maps_unchanged(tokenizer):
    model = tiny_head("contact prediction")
    with pytest.warns(UserWarning, match="empty"):
        batch = tokenizer(["", "GGGAAACCC"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        alone = model(**tokenizer(["GGGAAACCC"], return_tensors="pt")).logits
    assert torch.equal(logits[0], torch.zeros_like(logits[0]) + model.contact_head.regression.bias)
    torch.testing.assert_close(logits[1], alone[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_returned_attention_maps_carry_the_gradient_of_the_layers(tokenizer, attn_implementation):
    """Attribution methods differentiate the returned maps: they must be the tensors the layers used. (Their plain
    sum is a constant, one per real query row, so a weighted sum is differentiated.)"""
    torch.manual_seed(0)
    model = RnaFmModel(tiny_config(attn_implementation=attn_implementation)).eval()
    batch = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model(**batch, output_attentions=True).attentions
    out = model(**batch, output_attentions=True, output_hidden_states=True)
    assert all(torch.equal(a, b) for a, b in zip(out.attentions, reference, strict=True))
    assert all(maps.requires_grad for maps in out.attentions)
    weights = torch.randn(out.attentions[-1].shape, generator=torch.Generator().manual_seed(1))
    attention = model.encoder.layers[-1].self_attn
    projections = [attention.q_proj.weight, attention.k_proj.weight]
    found = torch.autograd.grad((out.attentions[-1] * weights).sum(), projections)

    # The same maps recomputed from the last layer's input, by hand.
    hidden = model.encoder.layers[-1].self_attn_layer_norm(out.hidden_states[-2].detach())
    shape = (*hidden.shape[:2], attention.num_heads, attention.head_dim)
    query = (attention.q_proj(hidden) * attention.scaling).view(shape).transpose(1, 2)
    key = attention.k_proj(hidden).view(shape).transpose(1, 2)
    real = batch["attention_mask"].bool()
    scores = (query @ key.transpose(2, 3)).masked_fill(~real[:, None, None, :], float("-inf"))
    maps = scores.softmax(-1) * (real[:, None, :, None] & real[:, None, None, :])
    expected = torch.autograd.grad((maps * weights).sum(), projections)
    for ours, theirs in zip(found, expected, strict=True):
        assert ours.abs().max() > 1e-3
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
