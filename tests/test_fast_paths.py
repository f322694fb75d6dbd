"""Every speed-up of the inference path gives the numbers of the plain one: packed (padding-free) batches, the
per-sequence and padded attention over packed sequences, feed-forward chunks and torch's GELU kernel, and, end to
end, `rnafm_hf.embed` against a padded batch through the eager model with the original's GELU formula."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import DATA, read_fasta, tiny_config
from transformers import DataCollatorWithFlattening

import rnafm_hf
from rnafm_hf import (
    RnaFmCodonTokenizer,
    RnaFmConfig,
    RnaFmModel,
    RnaFmTokenizer,
    load_original_checkpoint,
    modeling_rnafm,
    packing_rnafm,
)
from rnafm_hf.packing_rnafm import padded_packed_attention

SEQUENCES = [
    "GGGUGCGAUCAUACCAGCACUAAUGCCCUCCUGGGAAGUCCUCGUGUUGCACCCCU",
    "AC<mask>U",
    "UUAGC<mask><mask>GAUA",
    "G",
]


def tiny_model(**overrides) -> RnaFmModel:
    torch.manual_seed(0)
    return RnaFmModel(tiny_config(**overrides)).eval()


def packed_inputs(tokenizer, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = tokenizer(sequences)["input_ids"]
    bounds = np.cumsum([0] + [len(row) for row in ids])
    return torch.tensor([[token for row in ids for token in row]]), torch.tensor(bounds)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("token_dropout", [True, False])
def test_packed_sequences_get_what_they_get_in_a_padded_batch(attn_implementation, token_dropout):
    model = tiny_model(token_dropout=token_dropout)
    model.set_attn_implementation(attn_implementation)
    tokenizer = RnaFmTokenizer()
    padded = tokenizer(SEQUENCES, padding=True, return_tensors="pt")
    input_ids, bounds = packed_inputs(tokenizer, SEQUENCES)
    with torch.no_grad():
        expected = model(**padded, output_hidden_states=True)
        packed = model(input_ids=input_ids, cu_seq_lens_q=bounds, output_hidden_states=True)
    assert packed.last_hidden_state.shape == (1, int(bounds[-1]), 32)
    for row, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        for ours, theirs in zip(packed.hidden_states, expected.hidden_states, strict=True):
            torch.testing.assert_close(ours[0, start:end], theirs[row, : end - start], atol=1e-5, rtol=0)


def test_codon_sequences_pack_too():
    model = tiny_model(vocab_size=73, mask_token_id=72, k_mer=3, emb_layer_norm_before=False)
    tokenizer = RnaFmCodonTokenizer()
    sequences = ["AUGGCCAAAUAA", "AUG<mask>GCCUUUCCCGGGUAA"]
    input_ids, bounds = packed_inputs(tokenizer, sequences)
    with torch.no_grad():
        expected = model(**tokenizer(sequences, padding=True, return_tensors="pt")).last_hidden_state
        packed = model(input_ids=input_ids, cu_seq_lens_q=bounds).last_hidden_state
    torch.testing.assert_close(packed[0, :6], expected[0, :6], atol=1e-5, rtol=0)
    torch.testing.assert_close(packed[0, 6:], expected[1], atol=1e-5, rtol=0)


def test_transformers_flattening_collator_feeds_the_model():
    """`DataCollatorWithFlattening` (without position ids, which RNA-FM derives itself) gives packed batches."""
    model, tokenizer = tiny_model(), RnaFmTokenizer()
    collator = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_position_ids=False)
    batch = collator([dict(tokenizer(sequence)) for sequence in SEQUENCES])
    batch.pop("labels")
    with torch.no_grad():
        packed = model(**batch).last_hidden_state
        alone = [model(**tokenizer([s], return_tensors="pt")).last_hidden_state[0] for s in SEQUENCES]
    torch.testing.assert_close(packed[0], torch.cat(alone), atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_one_padded_attention_call_equals_one_call_per_sequence(attn_implementation):
    """Accelerators run packed attention as one padded call; CPUs one call per sequence. Both give the same."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from rnafm_hf.modeling_rnafm import eager_attention_forward

    interface = ALL_ATTENTION_FUNCTIONS.get_interface(
        attn_implementation, eager_attention_forward
    )  # unwrapped
    module = tiny_model().encoder.layers[0].self_attn
    bounds = torch.tensor([0, 5, 6, 19, 27])
    query, key, value = torch.randn(3, 1, 4, 27, 8).unbind(0)
    per_sequence, weights = modeling_rnafm.ALL_ATTENTION_FUNCTIONS[attn_implementation](
        module, query, key, value, None, cu_seq_lens_q=bounds, max_length_q=13, dropout=0.0, scaling=1.0
    )
    one_call = padded_packed_attention(
        interface, module, query, key, value, bounds, 13, dropout=0.0, scaling=1.0
    )
    assert weights is None and per_sequence.shape == one_call.shape == (1, 27, 4, 8)
    torch.testing.assert_close(one_call, per_sequence, atol=1e-6, rtol=0)


class FakeCudaTensor:
    """Stands in for a CUDA query: `within_packed_sequences` chooses its kernel by device, dtype and dropout."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor, self.device, self.dtype = tensor, torch.device("cuda"), torch.bfloat16


@pytest.mark.parametrize(
    ("dtype", "dropout", "kernel"),
    [(torch.bfloat16, 0.0, "varlen"), (torch.float32, 0.0, "padded"), (torch.bfloat16, 0.1, "padded")],
)
def test_packed_attention_on_an_accelerator_picks_its_kernel(monkeypatch, dtype, dropout, kernel):
    """No GPU here: the dispatch is checked with the kernels recorded instead of run (bench_gpu.py runs them)."""
    calls = []
    monkeypatch.setattr(packing_rnafm, "varlen_packed_attention", lambda *a: calls.append("varlen") or "out")
    monkeypatch.setattr(
        packing_rnafm, "padded_packed_attention", lambda *a, **k: calls.append("padded") or "out"
    )
    query = FakeCudaTensor(torch.zeros(1))
    query.dtype = dtype
    attention = packing_rnafm.within_packed_sequences(lambda *a, **k: pytest.fail("called unpacked"))
    output, weights = attention(
        None, query, None, None, None, cu_seq_lens_q=torch.tensor([0, 3]), max_length_q=3, dropout=dropout
    )
    assert (output, weights, calls) == ("out", None, [kernel])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_ids": torch.ones(2, 6, dtype=torch.long)}, "batch of 2 rows"),
        ({"attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0]])}, "padding in attention_mask"),
        ({"position_ids": torch.arange(6)[None]}, "return_position_ids=False"),
        ({"output_attentions": True}, "attention maps of packed sequences"),
        ({"cu_seq_lens_q": torch.tensor([0, 3, 5])}, "over the 6 packed tokens"),
        ({"cu_seq_lens_q": torch.tensor([0, 3, 3, 6])}, "increase strictly"),
        ({"cu_seq_lens_k": torch.tensor([0, 2, 6])}, "cu_seq_lens_k different"),
    ],
)
def test_bad_packed_input_is_refused_with_the_reason(change, message):
    inputs = {
        "input_ids": torch.ones(1, 6, dtype=torch.long),
        "cu_seq_lens_q": torch.tensor([0, 3, 6]),
        **change,
    }
    with pytest.raises(ValueError, match=message):
        tiny_model()(**inputs)


def test_a_packed_sequence_longer_than_the_position_table_is_refused():
    model = tiny_model(max_position_embeddings=12)  # 10 tokens per sequence
    with pytest.raises(ValueError, match="Packed sequence 1 has 11 tokens"):
        model(input_ids=torch.full((1, 16), 4), cu_seq_lens_q=torch.tensor([0, 5, 16]))
    assert model(input_ids=torch.full((1, 20), 4), cu_seq_lens_q=torch.tensor([0, 10, 20])) is not None


def test_feed_forward_chunks_change_numbers_by_rounding_only():
    whole, chunked = tiny_model(chunk_size_feed_forward=0), tiny_model(chunk_size_feed_forward=7)
    batch = RnaFmTokenizer()(SEQUENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected, found = whole(**batch).last_hidden_state, chunked(**batch).last_hidden_state
    torch.testing.assert_close(found, expected, atol=1e-6, rtol=0)


def test_torch_gelu_kernel_is_within_rounding_of_the_original_formula():
    formula, kernel = tiny_model(), tiny_model(hidden_act="gelu")
    assert RnaFmConfig().hidden_act == "gelu_python"  # the default stays bit-identical to fm
    batch = RnaFmTokenizer()(SEQUENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        difference = (formula(**batch).last_hidden_state - kernel(**batch).last_hidden_state).abs().max()
    assert 0 < difference < 1e-6


@pytest.mark.slow
def test_embed_matches_the_unoptimised_path_at_full_size(full_rna_fm_checkpoint):
    """The whole fast path (packed batches, per-sequence SDPA, GELU kernel, feed-forward chunks) against padded
    batches through the eager model with the original's GELU formula and no chunks, on full-size RNA-FM."""
    fasta = DATA / "format_rnacentral_active.100.sample-Max50.fasta"
    if fasta.exists():
        records = random.Random(0).sample(read_fasta(fasta), 12)
    else:
        generator = random.Random(0)
        records = [
            (f"r{n}", "".join(generator.choices("ACGU", k=generator.randint(20, 300)))) for n in range(12)
        ]
    tokenizer = RnaFmTokenizer()
    fast = load_original_checkpoint(full_rna_fm_checkpoint, model_class=RnaFmModel, hidden_act="gelu")
    plain = load_original_checkpoint(
        full_rna_fm_checkpoint, model_class=RnaFmModel, chunk_size_feed_forward=0
    )
    plain.set_attn_implementation("eager")
    embedded = dict(
        rnafm_hf.embed(records, fast, tokenizer=tokenizer, batch_tokens=1024, progress=False, log=None)
    )
    worst = 0.0
    for first in range(0, len(records), 4):
        part = records[first : first + 4]
        batch = tokenizer([sequence for _, sequence in part], padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = plain(**batch).last_hidden_state
        for row, (name, sequence) in enumerate(part):
            worst = max(
                worst, float(np.abs(embedded[name] - hidden[row, 1 : 1 + len(sequence)].numpy()).max())
            )
    assert worst <= 1e-5, worst
